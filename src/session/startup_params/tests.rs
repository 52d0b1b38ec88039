use super::*;
use std::sync::Arc;

fn startup(params: &[(&str, &str)]) -> StartupMessage {
    StartupMessage {
        major: 3,
        minor: 0,
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn builtin() -> Policy {
    let raw: crate::config::raw::RawPolicy = toml::from_str("").expect("default policy");
    Policy::new(Arc::new(
        crate::config::policy::compile(&raw).expect("builtin rules"),
    ))
}

fn judge(params: &[(&str, &str)]) -> Result<Vec<(String, String)>, String> {
    let who = Identity::new("alice", ["dev"]);
    read_startup(&startup(params), &[])
        .and_then(|settings| judge_startup(settings, &builtin(), &who))
        .map(|s| s.forwarded)
        .map_err(|e| format!("{} {e}", e.sqlstate()))
}

#[test]
fn options_split_like_pg_split_opts() {
    assert_eq!(
        split_options("  -c a=b\t--c-d=e\\ f  -c\\\\x=y "),
        vec!["-c", "a=b", "--c-d=e f", "-c\\x=y"]
    );
    assert_eq!(
        options_settings("-c search_path=app,public -cstatement_timeout=5s --Lock-Timeout=1s")
            .expect("settings"),
        vec![
            ("search_path".into(), "app,public".into()),
            ("statement_timeout".into(), "5s".into()),
            ("lock_timeout".into(), "1s".into()),
        ]
    );
    // A value may hold '=' and escaped spaces.
    assert_eq!(
        options_settings("-c application_name=a\\ b=c").expect("settings"),
        vec![("application_name".into(), "a b=c".into())]
    );
}

#[test]
fn other_switches_and_loose_words_are_refused() {
    for options in [
        "-d 5",
        "-D /tmp",
        "-E",
        "-Ec a=b",
        "-c",
        "-c name",
        "--name",
        "--",
        "-",
        "regression",
        "-c a=b stray",
        "-P",
    ] {
        let e = options_settings(options).expect_err(options);
        assert_eq!(e.sqlstate(), "0A000", "{options}");
        assert!(e.to_string().contains("\"options\""), "{options}: {e}");
    }
}

#[test]
fn settings_pass_as_the_same_set_would() {
    let ok = judge(&[
        ("user", "alice"),
        ("database", "appdb"),
        (
            "options",
            "-c search_path=app,public -c statement_timeout=5s",
        ),
        ("application_name", "psql"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("_pq_.compression", "on"),
    ])
    .expect("allowed");
    assert_eq!(
        ok,
        vec![
            ("search_path".to_owned(), "app,public".to_owned()),
            ("statement_timeout".to_owned(), "5s".to_owned()),
            ("application_name".to_owned(), "psql".to_owned()),
            ("client_encoding".to_owned(), "UTF8".to_owned()),
            ("datestyle".to_owned(), "ISO, MDY".to_owned()),
        ]
    );
    // A quote in a value stays inside the judged literal.
    assert!(judge(&[("application_name", "x'; DROP TABLE t; --")]).is_ok());
}

#[test]
fn identity_switches_are_refused_however_written() {
    for params in [
        [("options", "-c role=postgres")],
        [("options", "-c ROLE=postgres")],
        [("options", "--role=postgres")],
        [("options", "-c session-authorization=postgres")],
        [("options", "-c Session_Authorization=postgres")],
        [("role", "postgres")],
        [("Role", "postgres")],
        [("session_authorization", "postgres")],
        [("options", "-c replication=true")],
    ] {
        let e = judge(&params).expect_err(&format!("{params:?}"));
        assert!(e.starts_with("42501 startup parameter"), "{params:?}: {e}");
    }
}

#[test]
fn settings_the_rules_refuse_are_refused_naming_the_parameter() {
    let e = judge(&[("options", "-c standard_conforming_strings=off")]).expect_err("scs");
    assert!(
        e.contains("\"options -c standard_conforming_strings\""),
        "{e}"
    );
    let e = judge(&[("options", "-c session_replication_role=replica")]).expect_err("srr");
    assert!(e.contains("session_replication_role"), "{e}");
    for encoding in ["LATIN1", "SJIS", "win1252"] {
        let e = judge(&[("client_encoding", encoding)]).expect_err(encoding);
        assert!(e.contains("\"client_encoding\" must be UTF8"), "{e}");
        let e =
            judge(&[("options", &format!("-c client_encoding={encoding}"))]).expect_err(encoding);
        assert!(e.contains("must be UTF8"), "{e}");
    }
    assert!(judge(&[("client_encoding", "utf-8")]).is_ok());
}

#[test]
fn replication_is_not_supported() {
    let e = judge(&[("replication", "database")]).expect_err("replication");
    assert!(e.starts_with("0A000"), "{e}");
}

#[test]
fn unknown_keys_are_refused_unless_listed() {
    let e = judge(&[("work_mem", "1GB")]).expect_err("unlisted");
    assert!(e.starts_with("0A000"), "{e}");
    let who = Identity::new("alice", ["dev"]);
    let read = read_startup(&startup(&[("work_mem", "64MB")]), &["work_mem".to_owned()]);
    let listed = judge_startup(read.expect("listed"), &builtin(), &who).expect("allowed");
    assert_eq!(listed.forwarded, vec![("work_mem".into(), "64MB".into())]);
    // A name that is not a plain setting name is never judged as one.
    let e = judge(&[("options", "-c \"role\"=x")]).expect_err("quoted");
    assert!(e.starts_with("42601"), "{e}");
}

#[test]
fn a_rule_on_a_setting_applies_at_login() {
    let raw: crate::config::raw::RawPolicy = toml::from_str(
        "[[rules]]\nname = \"ro\"\naction = \"deny\"\nsettings = [\"default_transaction_read_only\"]\n",
    )
    .expect("policy");
    let policy = Policy::new(Arc::new(
        crate::config::policy::compile(&raw).expect("rules"),
    ));
    let who = Identity::new("alice", ["dev"]);
    let read = read_startup(
        &startup(&[("options", "-c default_transaction_read_only=off")]),
        &[],
    );
    let e = judge_startup(read.expect("read"), &policy, &who).expect_err("rule");
    assert!(
        e.to_string().contains("default_transaction_read_only"),
        "{e}"
    );
}
