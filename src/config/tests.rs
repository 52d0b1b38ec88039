use super::*;

fn verifier() -> String {
    ScramVerifier::generate("pw")
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/pgward/pgward.toml"))
}

fn minimal(extra: &str) -> String {
    format!(
        "[upstreams.main]\nuser = \"app\"\n{extra}\n[users.alice]\nscram_verifier = \"{}\"\n",
        verifier()
    )
}

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(&minimal("")).unwrap();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:6432");
    assert_eq!(c.server.max_message_size, 64 << 20);
    assert_eq!(c.server.idle_timeout, None);
    let main = &c.upstreams["main"];
    assert_eq!((main.port, main.dbname.as_str()), (5432, "main"));
    assert_eq!(main.sslmode, SslMode::Prefer);
    assert_eq!(main.scram_max_iterations, 100_000);
    assert_eq!(main.login_max_bytes, 64 << 10);
    assert_eq!(main.auth, crate::auth::require::AuthPolicy::default());
    let strict = parse(&minimal("sslmode = \"verify-full\"")).unwrap();
    assert!(strict.upstreams["main"].auth.channel_binding);
    assert_eq!(c.masking.catalog_timeout, Duration::from_secs(10));
    assert_eq!(
        c.policy.called_code,
        Some(crate::policy::called::Freshness {
            refresh: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
        })
    );
    let off = parse(&format!("{}[policy]\ncalled_code = false\n", minimal(""))).unwrap();
    assert_eq!(off.policy.called_code, None);
    assert_eq!(c.databases["main"], "main");
}

#[test]
fn errors_name_the_field() {
    let cases = [
        (minimal("sslmode = \"maybe\""), "upstreams.main.sslmode"),
        (
            minimal("require_auth = [\"kerberos\"]"),
            "upstreams.main.require_auth",
        ),
        (minimal("require_auth = []"), "upstreams.main.require_auth"),
        (
            minimal("sslmode = \"disable\"\nchannel_binding = \"require\""),
            "upstreams.main.channel_binding",
        ),
        (
            minimal("scram_max_iterations = 100"),
            "upstreams.main.scram_max_iterations",
        ),
        (
            minimal("login_max_bytes = \"1GiB\""),
            "upstreams.main.login_max_bytes",
        ),
        (
            format!("{}[masking]\ncatalog_timeout = \"0s\"\n", minimal("")),
            "masking.catalog_timeout",
        ),
        (
            format!("{}[policy]\ncatalog_timeout = \"0s\"\n", minimal("")),
            "policy.catalog_timeout",
        ),
        (
            format!("{}[policy]\ncatalog_refresh = \"soon\"\n", minimal("")),
            "policy.catalog_refresh",
        ),
        (
            format!(
                "{}[tokens]\nrevocation_file = \"r.log\"\nrevocation_store = \"approvals\"\n",
                minimal("")
            ),
            "tokens.revocation_store",
        ),
        (
            format!("{}[tokens]\nrevocation_store = \"redis\"\n", minimal("")),
            "tokens.revocation_store",
        ),
        (
            minimal("connect_timeout = \"5\""),
            "upstreams.main.connect_timeout",
        ),
        (
            minimal("password_env = \"PGWARD_TEST_SURELY_UNSET_VAR\""),
            "upstreams.main.password_env",
        ),
        (
            format!("[server]\nlisten = \"nowhere\"\n{}", minimal("")),
            "server.listen",
        ),
        (
            format!("[server]\ntls_cert = \"a.pem\"\n{}", minimal("")),
            "server.tls_key",
        ),
        (
            format!("[databases]\napp = \"other\"\n{}", minimal("")),
            "databases.app",
        ),
        (
            "[upstreams.main]\nuser = \"a\"\n[users.bob]\nscram_verifier = \"x\"\n".into(),
            "users.bob.scram_verifier",
        ),
    ];
    for (text, field) in cases {
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.starts_with(field), "{field}: got {err}");
    }
}

#[test]
fn unknown_fields_are_refused() {
    let err = parse(&minimal("sslmod = \"require\""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("sslmod"), "{err}");
}

#[test]
fn passwords_never_print() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "hunter2\n").unwrap();
    let text = minimal(&format!("password_file = {:?}", file.display().to_string()));
    let c = parse(&text).unwrap();
    let main = &c.upstreams["main"];
    assert_eq!(main.password.as_ref().unwrap().expose(), "hunter2");
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn role_mappings_need_credentials_and_a_target() {
    std::env::set_var("PGWARD_TEST_ROLE_PW", "pw");
    let good = parse(&minimal(
        "[upstreams.main.roles.support]\npassword_env = \"PGWARD_TEST_ROLE_PW\"\n\
         [[upstreams.main.role_map]]\ngroups = [\"support\"]\nrole = \"support\"\n\
         [[upstreams.main.role_map]]\nusers = [\"*\"]\nrole = \"app\"\n",
    ))
    .unwrap();
    let roles = &good.upstreams["main"].roles;
    assert_eq!(roles.mappings.len(), 2);
    assert_eq!(
        roles.credentials["support"]
            .password
            .as_ref()
            .map(Secret::expose),
        Some("pw")
    );
    let unknown = parse(&minimal(
        "[[upstreams.main.role_map]]\ngroups = [\"support\"]\nrole = \"nobody\"\n",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        unknown.starts_with("upstreams.main.role_map[0].role: role \"nobody\" has no credential"),
        "{unknown}"
    );
    let empty = parse(&minimal("[[upstreams.main.role_map]]\nrole = \"app\"\n"))
        .unwrap_err()
        .to_string();
    assert!(
        empty.contains("role_map[0].users: names no identity"),
        "{empty}"
    );
    let mode = parse(&minimal("least_privilege = \"loose\""))
        .unwrap_err()
        .to_string();
    assert!(
        mode.contains("least_privilege: \"loose\" is not one of masked, masked_only, strict"),
        "{mode}"
    );
}

#[test]
fn a_users_explicit_role_names_a_known_upstream_and_role() {
    let text = |roles: &str| {
        format!(
            "[upstreams.main]\nuser = \"app\"\n[users.alice]\nscram_verifier = \"{}\"\nroles = {roles}\n",
            verifier()
        )
    };
    assert!(parse(&text("{ main = \"app\" }")).is_ok());
    let e = parse(&text("{ other = \"app\" }")).unwrap_err().to_string();
    assert!(
        e.contains("users.alice.roles.other: \"other\" is not an upstream"),
        "{e}"
    );
    let e = parse(&text("{ main = \"x\" }")).unwrap_err().to_string();
    assert!(
        e.contains("users.alice.roles.main: role \"x\" has no credential"),
        "{e}"
    );
}

#[test]
fn the_catch_all_database_routes_other_names() {
    let c = parse(&minimal("[databases]\nshop = \"main\"\n\"*\" = \"main\"\n")).unwrap();
    let shop = c.route("shop").unwrap();
    assert_eq!(
        (shop.upstream, shop.dbname, shop.catch_all),
        ("main", "main", false)
    );
    let other = c.route("postgres").unwrap();
    assert_eq!(
        (other.upstream, other.dbname, other.catch_all),
        ("main", "postgres", true)
    );
    let none = parse(&minimal("[databases]\nshop = \"main\"\n")).unwrap();
    assert!(none.route("postgres").is_none());
    assert!(none.route("*").is_none());
}

#[test]
fn extra_startup_parameters_are_setting_names() {
    let c = parse(&format!(
        "[server]\nstartup_parameters = [\"Work_Mem\"]\n{}",
        minimal("")
    ))
    .unwrap();
    assert_eq!(c.server.startup_parameters, vec!["work_mem".to_owned()]);
    for bad in ["role", "options", "_pq_.x", "a b", ""] {
        let e = parse(&format!(
            "[server]\nstartup_parameters = [\"{bad}\"]\n{}",
            minimal("")
        ))
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("server.startup_parameters:"), "{bad}: {e}");
    }
}

#[test]
fn approval_settings_belong_to_require_approval_rules() {
    let rule = |body: &str| {
        minimal(&format!(
            "[approvals]\napprovers = [\"ops\"]\nbreak_glass = [\"oncall\"]\n[policy]\n[[policy.rules]]\nname = \"r\"\n{body}"
        ))
    };
    // Defaults come from [approvals]; the rule's own settings win.
    let c = parse(&rule("action = \"require_approval\"\n")).expect("valid");
    let a = c.policy.rules[0].approval.as_ref().expect("settings");
    assert_eq!(a.approvers, ["ops"]);
    assert_eq!(a.break_glass, ["oncall"]);
    assert_eq!(a.threshold, 1);
    let c = parse(&rule(
        "action = \"require_approval\"\napprovers = [\"dba\"]\napprovals_required = 2\napproval_mode = \"ticket\"\n",
    ))
    .expect("valid");
    let a = c.policy.rules[0].approval.as_ref().expect("settings");
    assert_eq!(
        (a.approvers.as_slice(), a.threshold),
        (&["dba".to_owned()][..], 2)
    );
    assert_eq!(a.mode, crate::approvals::model::ApprovalMode::Ticket);
    for (body, field) in [
        (
            "action = \"deny\"\napprovers = [\"ops\"]\n",
            "policy.rules[0].approvers",
        ),
        (
            "action = \"allow\"\napproval_mode = \"hold\"\n",
            "policy.rules[0].approval_mode",
        ),
        (
            "action = \"log\"\nhold_timeout = \"1s\"\n",
            "policy.rules[0].hold_timeout",
        ),
        (
            "action = \"require_approval\"\napprovals_required = 0\n",
            "policy.rules[0].approvals_required",
        ),
    ] {
        let e = parse(&rule(body)).expect_err(body).to_string();
        assert!(e.contains(field), "{body} => {e}");
    }
    // No approvers anywhere: a require_approval rule, or the default
    // action, has nobody to ask.
    let none = minimal("[policy]\n[[policy.rules]]\nname = \"r\"\naction = \"require_approval\"\n");
    assert!(parse(&none)
        .expect_err("no approvers")
        .to_string()
        .contains("policy.rules[0].approvers"));
    let default = minimal("[policy]\ndefault_action = \"require_approval\"\n");
    assert!(parse(&default)
        .expect_err("no approvers")
        .to_string()
        .contains("policy.default_action"));
    let c = parse(&minimal(
        "[approvals]\napprovers = [\"ops\"]\n[policy]\ndefault_action = \"require_approval\"\n",
    ))
    .expect("valid");
    assert_eq!(
        c.policy
            .default_approval
            .as_ref()
            .map(|a| a.approvers.clone()),
        Some(vec!["ops".to_owned()])
    );
}

#[test]
fn the_postgres_approval_store_names_a_defined_upstream_and_a_usable_schema() {
    let store = |lines: &str| {
        parse(&minimal(&format!(
            "[approvals]\nstore = \"postgres\"\n{lines}"
        )))
    };
    let c = store("postgres_upstream = \"main\"").expect("valid");
    assert_eq!(
        c.approvals.store,
        crate::config::approvals::ApprovalStoreConfig::Postgres {
            upstream: "main".into(),
            schema: "pgward_approvals".into()
        }
    );
    for (lines, field) in [
        ("", "approvals.postgres_upstream"),
        (
            "postgres_upstream = \"nope\"",
            "approvals.postgres_upstream",
        ),
        (
            "postgres_upstream = \"main\"\npostgres_schema = \"pg_x\"",
            "approvals.postgres_schema",
        ),
        (
            "postgres_upstream = \"main\"\npostgres_schema = \"A-b\"",
            "approvals.postgres_schema",
        ),
        (
            "postgres_upstream = \"main\"\npath = \"x\"",
            "approvals.path",
        ),
    ] {
        let e = store(lines).expect_err(lines).to_string();
        assert!(e.starts_with(field), "{lines}: {e}");
    }
}

#[test]
fn server_runtime_and_threads() {
    let c = parse(&minimal("")).unwrap();
    assert_eq!(
        (c.server.runtime, c.server.threads),
        (RuntimeMode::PerCore, None)
    );
    let c = parse(&format!(
        "[server]\nruntime = \"shared\"\nthreads = 3\n{}",
        minimal("")
    ))
    .unwrap();
    assert_eq!(c.server.runtime, RuntimeMode::Shared);
    assert_eq!(c.server.threads.map(std::num::NonZeroUsize::get), Some(3));
    // The relay: an event loop by default per core, the runtime with shared.
    assert_eq!(c.server.relay, RelayMode::Runtime);
    assert_eq!(
        parse(&minimal("")).unwrap().server.relay,
        RelayMode::EventLoop
    );
    let c = parse(&format!("[server]\nrelay = \"runtime\"\n{}", minimal(""))).unwrap();
    assert_eq!(c.server.relay, RelayMode::Runtime);
    for (server, field) in [
        ("runtime = \"per-thread\"", "server.runtime"),
        ("runtime = \"\"", "server.runtime"),
        ("threads = 5000", "server.threads"),
        ("relay = \"epoll\"", "server.relay"),
        (
            "runtime = \"shared\"\nrelay = \"event-loop\"",
            "server.relay",
        ),
    ] {
        match parse(&format!("[server]\n{server}\n{}", minimal(""))) {
            Err(ConfigError::Field { field: f, .. }) => assert_eq!(f, field, "{server}"),
            other => panic!("{server}: {other:?}"),
        }
    }
}
