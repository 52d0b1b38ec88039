//! Side channels of masked sessions: a trigger or function can put masked
//! values into an error or notice *message* and into a ParameterStatus;
//! pg_stats shows column values. Everything the client receives is scanned
//! for the clear values.

mod support;

use support::raw::{message as raw_message, RawClient};
use support::{Backend, Pgward, DB, MASKED_ROLE, PASSWORD, USER};

const SSN: &str = "321-54-9876";

/// A masked customers table, and an unmasked `notes` table whose triggers
/// read the masked column and leak it through every channel.
fn setup(backend: &Backend, t: &str) {
    backend.admin_sql(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, ssn text); \
         INSERT INTO {t} VALUES (1, '{SSN}'); \
         CREATE TABLE {t}_notes (id int, body text); \
         CREATE FUNCTION {t}_raise() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN \
           IF NEW.body = 'notice' THEN \
             RAISE NOTICE 'value %', (SELECT ssn FROM {t} LIMIT 1); \
           ELSIF NEW.body = 'setting' THEN \
             PERFORM set_config('application_name', (SELECT ssn FROM {t} LIMIT 1), false); \
             PERFORM set_config('pgward.leak', (SELECT ssn FROM {t} LIMIT 1), false); \
           ELSE \
             RAISE EXCEPTION 'value %', (SELECT ssn FROM {t} LIMIT 1) USING ERRCODE = '22023'; \
           END IF; \
           RETURN NEW; \
         END $$; \
         CREATE TRIGGER {t}_leak BEFORE INSERT ON {t}_notes FOR EACH ROW EXECUTE FUNCTION {t}_raise(); \
         GRANT SELECT ON {t} TO {MASKED_ROLE}; GRANT INSERT ON {t}_notes TO {MASKED_ROLE}; \
         ANALYZE {t}"
    ));
}

async fn start(t: &str) -> Pgward {
    let backend = Backend::shared();
    setup(backend, t);
    let config = format!(
        "{}\n[masking]\nrefresh = \"1h\"\n[[masking.rules]]\nname = \"ssn\"\ncolumns = [\"{t}.ssn\"]\n\
         strategy = \"partial\"\nkeep_last = 2\n",
        backend.masked_config("", "")
    );
    Pgward::start_in(&config, backend.cluster.dir()).await
}

fn table() -> String {
    format!("side_{:08x}", rand::random::<u32>())
}

/// Every byte the client got, checked for the clear value (and its
/// distinctive middle, in case of a partial copy).
fn assert_clean(what: &str, msgs: &[support::raw::Msg]) {
    for m in msgs {
        let text = String::from_utf8_lossy(&m.body);
        assert!(
            !text.contains(SSN) && !text.contains("54-98"),
            "{what}: {} carries the value: {text:?}",
            char::from(m.tag)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_messages_and_settings_never_carry_masked_values() {
    let t = table();
    let pw = start(&t).await;
    let (mut c, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    for body in ["error", "notice", "setting"] {
        let sql = format!("INSERT INTO {t}_notes VALUES (1, '{body}')");
        let got = c.simple(&sql).await;
        assert_clean(body, &got);
        match body {
            "error" => {
                let e = support::raw::error_of(&got).expect("the trigger's error");
                // The SQLSTATE stays; the message says what happened.
                assert_eq!(e.sqlstate(), "22023");
                assert!(e
                    .field(b'M')
                    .unwrap_or_default()
                    .contains("withheld by pgward"));
            }
            "notice" => {
                let n = got.iter().find(|m| m.tag == b'N').expect("the notice");
                assert!(n
                    .field(b'M')
                    .unwrap_or_default()
                    .contains("withheld by pgward"));
            }
            _ => {
                // The insert ran; application_name and the custom setting
                // changed on the server, and no ParameterStatus said so.
                assert!(got.iter().all(|m| m.tag != b'S'), "{got:?}");
            }
        }
    }
    // The extended protocol, pipelined behind a clean statement whose own
    // error keeps its message.
    let mut batch = Vec::new();
    batch.extend(parse_bind_execute("SELECT 1 / 0"));
    batch.extend(raw_message(b'S', b""));
    batch.extend(parse_bind_execute(&format!(
        "INSERT INTO {t}_notes VALUES (2, 'error')"
    )));
    batch.extend(raw_message(b'S', b""));
    c.send(&batch).await;
    let mut got = c.until_ready().await;
    let first = support::raw::error_of(&got).expect("division").field(b'M');
    assert_eq!(first.as_deref(), Some("division by zero"));
    got.extend(c.until_ready().await);
    assert_clean("extended", &got);
    let errors: Vec<_> = got.iter().filter(|m| m.tag == b'E').collect();
    assert_eq!(errors.len(), 2);
    assert!(errors[1]
        .field(b'M')
        .unwrap_or_default()
        .contains("withheld by pgward"));
}

fn parse_bind_execute(sql: &str) -> Vec<u8> {
    let mut parse = vec![0];
    parse.extend_from_slice(sql.as_bytes());
    parse.extend_from_slice(&[0, 0, 0]);
    let mut out = raw_message(b'P', &parse);
    out.extend(raw_message(b'B', &[0, 0, 0, 0, 0, 0, 0, 0]));
    out.extend(raw_message(b'E', &[0, 0, 0, 0, 0]));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_statements_keep_their_messages() {
    let t = table();
    let pw = start(&t).await;
    let (mut c, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    let got = c
        .simple(&format!("SELECT id FROM {t}_notes WHERE id = 'x'"))
        .await;
    let e = support::raw::error_of(&got).expect("error");
    assert_eq!(e.sqlstate(), "22P02");
    assert!(
        e.field(b'M')
            .unwrap_or_default()
            .contains("invalid input syntax"),
        "{:?}",
        e.field(b'M')
    );
    // A client's own SET application_name is a setting pgward withholds
    // from masked sessions too (it cannot tell it from a trigger's).
    let got = c.simple("SET application_name = 'mine'").await;
    assert!(got.iter().all(|m| m.tag != b'S'));
    // Settings clients need still arrive.
    let got = c.simple("SET TimeZone = 'UTC'").await;
    assert!(got
        .iter()
        .any(|m| m.tag == b'S' && m.body.starts_with(b"TimeZone\0")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_views_are_refused() {
    let t = table();
    let pw = start(&t).await;
    let (mut c, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    for sql in [
        format!("SELECT most_common_vals FROM pg_stats WHERE tablename = '{t}'"),
        format!("SELECT histogram_bounds FROM pg_catalog.pg_stats WHERE tablename = '{t}'"),
        format!("SELECT * FROM U&\"pg\\005fstats\" WHERE tablename = '{t}'"),
        "SELECT * FROM pg_stats_ext".to_owned(),
        "SELECT * FROM pg_stats_ext_exprs".to_owned(),
        "SELECT * FROM pg_statistic".to_owned(),
        "SELECT * FROM pg_mcv_list_items(NULL)".to_owned(),
    ] {
        let got = c.simple(&sql).await;
        assert_clean(&sql, &got);
        let e = support::raw::error_of(&got).unwrap_or_else(|| panic!("{sql}: {got:?}"));
        assert_eq!(e.sqlstate(), "42501", "{sql}");
        assert!(
            e.field(b'M')
                .unwrap_or_default()
                .contains("holds column values"),
            "{sql}: {:?}",
            e.field(b'M')
        );
    }
    let got = c.simple("SELECT 1").await;
    assert!(support::raw::error_of(&got).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_impostor_functions_are_refused_until_known() {
    let backend = Backend::shared();
    let t = table();
    setup(backend, &t);
    let config = format!(
        "{}\n[masking]\nrefresh = \"1h\"\nallowed_functions = [\"{t}_version\"]\n\
         [[masking.rules]]\nname = \"ssn\"\ncolumns = [\"{t}.ssn\"]\nstrategy = \"partial\"\nkeep_last = 2\n",
        backend.masked_config("", "")
    );
    let pw = Pgward::start_in(&config, backend.cluster.dir()).await;
    let (mut c, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    // Created behind pgward's back, after the map was read: one reads the
    // masked table, one is harmless and allowlisted.
    backend.admin_sql(&format!(
        "CREATE FUNCTION {t}_peek() RETURNS text LANGUAGE sql AS 'SELECT ssn FROM {t} LIMIT 1'; \
         CREATE FUNCTION {t}_version() RETURNS text LANGUAGE sql AS 'SELECT ''1.0'''; \
         CREATE FUNCTION pg_catalog.{t}_impostor() RETURNS text LANGUAGE sql \
           AS 'SELECT ssn FROM public.{t} LIMIT 1'; \
         GRANT EXECUTE ON FUNCTION {t}_peek(), {t}_version(), pg_catalog.{t}_impostor() TO {MASKED_ROLE}"
    ));
    let got = c.simple(&format!("SELECT {t}_peek()")).await;
    assert_clean("unknown", &got);
    let e = support::raw::error_of(&got).expect("refused");
    assert_eq!(e.sqlstate(), "42501");
    assert!(e
        .field(b'M')
        .unwrap_or_default()
        .contains("not known to pgward"));
    // The refusal made pgward read the map again: poll until the
    // allowlisted function passes, then the others are refused for what
    // they are.
    loop {
        let got = c.simple(&format!("SELECT {t}_version()")).await;
        if support::raw::error_of(&got).is_none() {
            break;
        }
        tokio::task::yield_now().await;
    }
    for sql in [
        format!("SELECT {t}_peek()"),
        format!("SELECT pg_catalog.{t}_impostor()"),
        format!("SELECT {t}_impostor()"),
    ] {
        let got = c.simple(&sql).await;
        assert_clean(&sql, &got);
        let e = support::raw::error_of(&got).unwrap_or_else(|| panic!("{sql} ran"));
        assert_eq!(e.sqlstate(), "42501", "{sql}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_after_the_sessions_own_ddl_is_judged_under_a_fresh_map() {
    let t = table();
    let pw = start(&t).await;
    let (mut c, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    // DDL a least-privilege role may run (its own default privileges).
    let got = c
        .simple("ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC")
        .await;
    assert!(support::raw::error_of(&got).is_none(), "{got:?}");
    // Held until the map is read again, then judged: masked, not refused.
    let got = c.simple(&format!("SELECT id, ssn FROM {t}")).await;
    assert_clean("after ddl", &got);
    let row = got.iter().find(|m| m.tag == b'D').expect("a row");
    assert!(
        String::from_utf8_lossy(&row.body).contains("*76"),
        "{row:?}"
    );
    // And a refusal still refuses after the wait.
    let got = c
        .simple("ALTER DEFAULT PRIVILEGES GRANT EXECUTE ON FUNCTIONS TO PUBLIC")
        .await;
    assert!(support::raw::error_of(&got).is_none(), "{got:?}");
    let got = c.simple(&format!("SELECT upper(ssn) FROM {t}")).await;
    assert_eq!(
        support::raw::error_of(&got).expect("refused").sqlstate(),
        "42501"
    );
    assert_clean("refused after ddl", &got);
}

/// Masking does not lean on the statement rules: with the built-in rules
/// off (or a rule allowing DO for the group), a DO block, whose body reads
/// the masked table where the guard cannot see it, is still refused for a
/// masked identity; so is CREATE FUNCTION with a body given as text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_given_as_text_is_refused_whatever_the_rules() {
    let backend = Backend::shared();
    let t = table();
    setup(backend, &t);
    let config = format!(
        "{}\n[policy]\nbuiltin_rules = false\n[masking]\nrefresh = \"1h\"\n\
         [[masking.rules]]\nname = \"ssn\"\ncolumns = [\"{t}.ssn\"]\nstrategy = \"partial\"\nkeep_last = 2\n",
        backend.masked_config("", "")
    );
    let pw = Pgward::start_in(&config, backend.cluster.dir()).await;
    let (mut c, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    for sql in [
        format!(
            "DO $$ BEGIN PERFORM set_config('pgward.copy', (SELECT ssn FROM {t} LIMIT 1), false); END $$"
        ),
        format!(
            "DO LANGUAGE plpgsql 'BEGIN PERFORM set_config(''pgward.copy'', (SELECT ssn FROM {t} LIMIT 1), false); END'"
        ),
        format!(
            "CREATE FUNCTION pg_temp.{t}_f() RETURNS text LANGUAGE sql AS 'SELECT ssn FROM {t} LIMIT 1'"
        ),
    ] {
        let got = c.simple(&sql).await;
        assert_clean(&sql, &got);
        let e = support::raw::error_of(&got).unwrap_or_else(|| panic!("{sql} ran: {got:?}"));
        assert_eq!(e.sqlstate(), "42501", "{sql}: {:?}", e.field(b'M'));
    }
    let got = c
        .simple("SELECT current_setting('pgward.copy', true)")
        .await;
    assert_clean("the copy", &got);
}

/// A trigger copied the masked value into application_name and a custom
/// setting; ParameterStatus withholds them, and reading them back through
/// SQL is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_code_may_have_written_are_not_read_back() {
    let t = table();
    let pw = start(&t).await;
    let (mut c, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    let got = c
        .simple(&format!("INSERT INTO {t}_notes VALUES (1, 'setting')"))
        .await;
    assert!(support::raw::error_of(&got).is_none(), "{got:?}");
    for sql in [
        "SHOW pgward.leak",
        "SHOW application_name",
        "SHOW ALL",
        "SELECT current_setting('pgward.leak')",
        "SELECT pg_catalog.current_setting('application_name', true)",
        "SELECT current_setting('pgward.' || 'leak')",
        "SELECT setting FROM pg_settings WHERE name = 'application_name'",
        "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()",
        "SELECT * FROM pg_show_all_settings()",
    ] {
        let got = c.simple(sql).await;
        assert_clean(sql, &got);
        let e = support::raw::error_of(&got).unwrap_or_else(|| panic!("{sql} ran: {got:?}"));
        assert_eq!(e.sqlstate(), "42501", "{sql}");
    }
    // Settings that cannot carry text still read.
    for sql in [
        "SHOW TimeZone",
        "SELECT current_setting('server_version_num')",
    ] {
        let got = c.simple(sql).await;
        assert!(got.iter().any(|m| m.tag == b'D'), "{sql}: {got:?}");
    }
    // A pass read from a literal is not remembered for the text's shape.
    let got = c.simple("SELECT current_setting('pgward.leak')").await;
    assert_clean("after a pass of the same shape", &got);
    assert!(support::raw::error_of(&got).is_some(), "{got:?}");
}
