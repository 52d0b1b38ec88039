//! Verdicts that depend on parameters are judged at Bind with the values
//! (psycopg binds everything server-side: `SELECT set_config($1, $2,
//! false)` is how it sets a parameter), against the statement the server
//! will bind from.

mod support;

use support::raw::{error_of, message, query, Msg, RawClient};
use support::{Backend, Pgward, DB, PASSWORD, USER};

fn cstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(s);
    out.push(0);
}

/// Parse of statement `name`, no parameter types.
fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, name.as_bytes());
    cstr(&mut body, sql.as_bytes());
    body.extend_from_slice(&0u16.to_be_bytes());
    message(b'P', &body)
}

/// Bind of the unnamed portal from `statement`, text parameters, then
/// Execute + Sync.
fn bind_execute(statement: &str, params: &[Option<&str>]) -> Vec<u8> {
    let mut out = bind_run(statement, params);
    out.extend(sync());
    out
}

/// Bind of the unnamed portal from `statement`, text parameters, then
/// Execute (no Sync).
fn bind_run(statement: &str, params: &[Option<&str>]) -> Vec<u8> {
    let mut out = bind_only(statement, params);
    out.extend(execute_unnamed());
    out
}

/// Bind of the unnamed portal from `statement`, text parameters.
fn bind_only(statement: &str, params: &[Option<&str>]) -> Vec<u8> {
    let mut bind = Vec::new();
    cstr(&mut bind, b"");
    cstr(&mut bind, statement.as_bytes());
    bind.extend_from_slice(&0u16.to_be_bytes()); // all text
    bind.extend_from_slice(&u16::try_from(params.len()).unwrap().to_be_bytes());
    for p in params {
        match p {
            Some(v) => {
                bind.extend_from_slice(&i32::try_from(v.len()).unwrap().to_be_bytes());
                bind.extend_from_slice(v.as_bytes());
            }
            None => bind.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    bind.extend_from_slice(&0u16.to_be_bytes());
    message(b'B', &bind)
}

/// Execute of the unnamed portal, all rows.
fn execute_unnamed() -> Vec<u8> {
    let mut execute = Vec::new();
    cstr(&mut execute, b"");
    execute.extend_from_slice(&0i32.to_be_bytes());
    message(b'E', &execute)
}

fn sync() -> Vec<u8> {
    message(b'S', b"")
}

fn describe_statement(name: &str) -> Vec<u8> {
    let mut body = vec![b'S'];
    cstr(&mut body, name.as_bytes());
    message(b'D', &body)
}

fn close_statement(name: &str) -> Vec<u8> {
    let mut body = vec![b'S'];
    cstr(&mut body, name.as_bytes());
    message(b'C', &body)
}

/// Parse (unnamed) + Bind with text parameters + Execute + Sync.
fn extended(sql: &str, params: &[Option<&str>]) -> Vec<u8> {
    let mut out = parse("", sql);
    out.extend(bind_execute("", params));
    out
}

/// The role-switching statement whose verdict depends on its values.
const SET_CONFIG: &str = "SELECT set_config($1, $2, false)";

/// Asserts the session still runs as the login role.
async fn still_app(c: &mut RawClient) {
    let who = c.simple("SELECT current_user").await;
    assert!(
        who.iter()
            .any(|m| m.tag == b'D' && m.body.ends_with(b"app")),
        "{who:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_config_with_bound_values_is_judged_at_bind() {
    let pw = Pgward::start(Backend::shared()).await;
    let (mut c, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    let sql = SET_CONFIG;
    // A harmless setting passes (it used to be refused as a role switch).
    c.send(&extended(sql, &[Some("application_name"), Some("bound")]))
        .await;
    let reply = c.until_ready().await;
    assert!(error_of(&reply).is_none(), "{reply:?}");
    assert!(reply
        .iter()
        .any(|m| m.tag == b'D' && m.body.ends_with(b"bound")));
    // The same statement switching the role is refused at its Bind.
    c.send(&extended(sql, &[Some("role"), Some("postgres")]))
        .await;
    let reply = c.until_ready().await;
    let err = error_of(&reply).expect("refused");
    assert_eq!(err.sqlstate(), "42501", "{err:?}");
    // Case and quoting do not hide it; a NULL name is the server's error.
    c.send(&extended(sql, &[Some("ROLE"), Some("postgres")]))
        .await;
    assert!(error_of(&c.until_ready().await).is_some());
    still_app(&mut c).await;
}

/// A Bind is judged by the statement the server will bind from. A request
/// that changes the name may fail, or be skipped after an error in its
/// batch, and the name then keeps its old statement: a Bind sent in a later
/// batch before the answers arrive is refused, not judged by the new text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bind_behind_a_parse_that_may_fail_is_not_judged_by_its_text() {
    let pw = Pgward::start(Backend::shared()).await;
    let (mut c, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    let harmless = "SELECT $1::text, $2::text";
    let role = [Some("role"), Some("postgres")];

    // A named statement parsed again: the server fails the second Parse
    // (42P05) and keeps the first.
    let mut first = parse("s", SET_CONFIG);
    first.extend(sync());
    c.send(&first).await;
    assert!(error_of(&c.until_ready().await).is_none());
    let mut attack = parse("s", harmless);
    attack.extend(sync());
    attack.extend(bind_execute("s", &role));
    c.send(&attack).await;
    let reply = c.until_ready().await;
    assert_eq!(error_of(&reply).expect("42P05").sqlstate(), "42P05");
    let reply = c.until_ready().await;
    let err = error_of(&reply).expect("the Bind refused");
    assert_eq!(err.sqlstate(), "55000", "{err:?}");
    still_app(&mut c).await;

    // The unnamed statement, its new Parse skipped after an error.
    c.send(&extended(
        SET_CONFIG,
        &[Some("application_name"), Some("x")],
    ))
    .await;
    assert!(error_of(&c.until_ready().await).is_none());
    let mut attack = parse("x", "SELECT * FROM no_such_table_at_all");
    attack.extend(parse("", harmless));
    attack.extend(sync());
    attack.extend(bind_execute("", &role));
    c.send(&attack).await;
    assert!(
        error_of(&c.until_ready().await).is_some(),
        "the first Parse fails"
    );
    let reply = c.until_ready().await;
    let err = error_of(&reply).expect("the Bind refused");
    assert_eq!(err.sqlstate(), "55000", "{err:?}");
    still_app(&mut c).await;

    // A SQL PREPARE over an existing name fails the same way: the EXECUTE
    // behind it is judged by the statement the name holds now, under the
    // rules of now.
    let t = format!("uncertain_{:08x}", rand::random::<u32>());
    let reply = c
        .simple(&format!(
            "CREATE TABLE {t} (id int); PREPARE peek AS SELECT count(*) FROM {t}"
        ))
        .await;
    assert!(error_of(&reply).is_none(), "{reply:?}");
    pw.reload_with(&format!(
        "[policy]\n[[policy.rules]]\nname = \"hide\"\naction = \"deny\"\nrelations = [\"{t}\"]\n"
    ))
    .expect("reload");
    let reply = c.simple("EXECUTE peek").await;
    assert_eq!(error_of(&reply).expect("denied").sqlstate(), "42501");
    let mut attack = query("PREPARE peek AS SELECT 1");
    attack.extend(query("EXECUTE peek"));
    c.send(&attack).await;
    let reply = c.until_ready().await;
    assert_eq!(error_of(&reply).expect("42P05").sqlstate(), "42P05");
    let reply = c.until_ready().await;
    let err = error_of(&reply).expect("the EXECUTE refused");
    assert_eq!(err.sqlstate(), "42501", "{err:?}");
    assert!(!reply.iter().any(|m| m.tag == b'D'), "{reply:?}");
}

/// What drivers send stays allowed: Close and Parse of a name with its use
/// in one batch, a new name used in a later batch, a name parsed again
/// with the same text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_created_with_their_use_or_fresh_stay_usable_pipelined() {
    let pw = Pgward::start(Backend::shared()).await;
    let (mut c, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    let mut first = parse("s", "SELECT $1::text AS a");
    first.extend(sync());
    c.send(&first).await;
    assert!(error_of(&c.until_ready().await).is_none());
    // Close and Parse in the batch of the Bind.
    let mut batch = close_statement("s");
    batch.extend(parse("s", "SELECT $1::text || '!' AS a"));
    batch.extend(bind_execute("s", &[Some("replaced")]));
    // A fresh name, used in the next batch before any answer is read.
    batch.extend(parse("t", "SELECT $1::int + 1"));
    batch.extend(sync());
    batch.extend(bind_execute("t", &[Some("41")]));
    // The same text parsed again under the same name.
    batch.extend(close_statement("t"));
    batch.extend(parse("t", "SELECT $1::int + 1"));
    batch.extend(sync());
    batch.extend(bind_execute("t", &[Some("1")]));
    c.send(&batch).await;
    let reply = c.until_ready().await;
    assert!(error_of(&reply).is_none(), "{reply:?}");
    assert!(reply
        .iter()
        .any(|m| m.tag == b'D' && m.body.ends_with(b"replaced!")));
    assert!(error_of(&c.until_ready().await).is_none());
    let reply = c.until_ready().await;
    assert!(error_of(&reply).is_none(), "{reply:?}");
    assert!(reply
        .iter()
        .any(|m| m.tag == b'D' && m.body.ends_with(b"42")));
    assert!(error_of(&c.until_ready().await).is_none());
    let reply = c.until_ready().await;
    assert!(error_of(&reply).is_none(), "{reply:?}");
    assert!(reply
        .iter()
        .any(|m| m.tag == b'D' && m.body.ends_with(b"2")));
}

/// Random pipelined batches over names that hold a statement the current
/// rules deny: whatever fails or is skipped, no Bind, Execute or EXECUTE
/// pgward lets through runs it (its rows never reach the client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_changes_to_a_name_never_run_the_statement_it_held() {
    use rand::{Rng, SeedableRng};
    let pw = Pgward::start(Backend::shared()).await;
    let (mut c, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    let t = format!("secret_{:08x}", rand::random::<u32>());
    let reply = c
        .simple(&format!(
            "CREATE TABLE {t} (v text); INSERT INTO {t} VALUES ('SECRET')"
        ))
        .await;
    assert!(error_of(&reply).is_none(), "{reply:?}");
    let secret = format!("SELECT v FROM {t}");
    let deny = format!(
        "[policy]\n[[policy.rules]]\nname = \"hide\"\naction = \"deny\"\nrelations = [\"{t}\"]\n"
    );
    let harmless = "SELECT 'harmless'";
    // One unit: the messages up to a Sync, or one Query.
    let ops = [
        parse("s", harmless),
        parse("", harmless),
        close_statement("s"),
        close_statement(""),
        parse("x", "SELECT * FROM no_such_table_at_all"),
        parse("y", harmless),
        bind_run("s", &[]),
        bind_run("", &[]),
        parse("s", &secret),
        describe_statement("s"),
    ];
    let queries = [
        query("PREPARE q AS SELECT 'harmless'"),
        query("DEALLOCATE q"),
        query("EXECUTE q"),
        query("SELECT 1"),
        query("SELECT 1/0"),
    ];
    let (mut harmless_rows, mut uncertain) = (0, 0);
    for seed in 0..40u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        // Under the old rules: s, the unnamed statement and q hold the
        // statement the new rules deny.
        pw.reload_with("[policy]\n").expect("reload");
        let mut setup = query(&format!("DEALLOCATE ALL; PREPARE q AS {secret}"));
        setup.extend(parse("s", &secret));
        setup.extend(parse("", &secret));
        setup.extend(sync());
        c.send(&setup).await;
        for _ in 0..2 {
            let reply = c.until_ready().await;
            assert!(error_of(&reply).is_none(), "seed {seed}: {reply:?}");
        }
        pw.reload_with(&deny).expect("reload");
        let mut sent = Vec::new();
        let units = rng.gen_range(2..=5);
        for _ in 0..units {
            if rng.gen_bool(0.25) {
                sent.extend(&queries[rng.gen_range(0..queries.len())]);
            } else {
                for _ in 0..rng.gen_range(1..=5) {
                    sent.extend(&ops[rng.gen_range(0..ops.len())]);
                }
                sent.extend(sync());
            }
        }
        c.send(&sent).await;
        for _ in 0..units {
            let reply = c.until_ready().await;
            assert!(
                !reply
                    .iter()
                    .any(|m| m.tag == b'D' && m.body.windows(6).any(|w| w == b"SECRET")),
                "seed {seed}: the denied statement ran: {reply:?}"
            );
            harmless_rows += reply
                .iter()
                .filter(|m| m.tag == b'D' && m.body.ends_with(b"harmless"))
                .count();
            uncertain += reply
                .iter()
                .filter(|m| m.tag == b'E' && m.body.windows(6).any(|w| w == b"C55000"))
                .count();
        }
    }
    // Not vacuous: harmless statements ran, and uncertain names were met.
    assert!(
        harmless_rows > 0 && uncertain > 0,
        "{harmless_rows} {uncertain}"
    );
}

/// A statement is judged again at its Bind when what its names resolve to
/// may have changed: the server resolves them again when it runs it. Here
/// a TRUNCATE allowed on the session's own temporary table would, once
/// that table is dropped, truncate the permanent table of the same name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bind_is_judged_under_the_names_of_now() {
    let pw = Pgward::start(Backend::shared()).await;
    let (mut c, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    let t = format!("shadowed_{:08x}", rand::random::<u32>());
    let reply = c
        .simple(&format!(
            "CREATE TABLE public.{t} (id int); INSERT INTO public.{t} VALUES (1)"
        ))
        .await;
    assert!(error_of(&reply).is_none(), "{reply:?}");
    let reply = c.simple(&format!("TRUNCATE public.{t}")).await;
    assert_eq!(error_of(&reply).expect("denied").sqlstate(), "42501");
    let reply = c.simple(&format!("CREATE TEMP TABLE {t} (id int)")).await;
    assert!(error_of(&reply).is_none(), "{reply:?}");
    // Allowed while the bare name is the session's own temporary table.
    let mut prepare = parse("wipe", &format!("TRUNCATE {t}"));
    prepare.extend(sync());
    c.send(&prepare).await;
    let reply = c.until_ready().await;
    assert!(error_of(&reply).is_none(), "{reply:?}");
    c.send(&bind_execute("wipe", &[])).await;
    let reply = c.until_ready().await;
    assert!(error_of(&reply).is_none(), "{reply:?}");
    // The temporary table gone, the same statement would truncate the
    // permanent one: refused at its Bind.
    let reply = c.simple(&format!("DROP TABLE {t}")).await;
    assert!(error_of(&reply).is_none(), "{reply:?}");
    c.send(&bind_execute("wipe", &[])).await;
    let reply = c.until_ready().await;
    let err = error_of(&reply).expect("refused");
    assert_eq!(err.sqlstate(), "42501", "{err:?}");
    let reply = c.simple(&format!("SELECT count(*) FROM public.{t}")).await;
    assert!(
        reply
            .iter()
            .any(|m| m.tag == b'D' && m.body.ends_with(b"1")),
        "{reply:?}"
    );
}

/// A temporary table counts as the session's own only once a statement
/// that creates it has run: a Parse alone creates nothing, and a DROP of
/// the bare name would then drop the permanent table of that name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parsed_create_temp_that_never_ran_makes_no_table_its_own() {
    let pw = Pgward::start(Backend::shared()).await;
    let (mut c, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    let t = format!("unmade_{:08x}", rand::random::<u32>());
    let reply = c.simple(&format!("CREATE TABLE public.{t} (id int)")).await;
    assert!(error_of(&reply).is_none(), "{reply:?}");
    let mut only_parsed = parse("mk", &format!("CREATE TEMP TABLE {t} (id int)"));
    only_parsed.extend(sync());
    c.send(&only_parsed).await;
    let reply = c.until_ready().await;
    assert!(error_of(&reply).is_none(), "{reply:?}");
    for sql in [format!("DROP TABLE {t}"), format!("TRUNCATE {t}")] {
        let reply = c.simple(&sql).await;
        let err = error_of(&reply).expect("refused");
        assert_eq!(err.sqlstate(), "42501", "{sql}: {err:?}");
    }
    // Once it ran, the table is the session's own.
    c.send(&bind_execute("mk", &[])).await;
    let reply = c.until_ready().await;
    assert!(error_of(&reply).is_none(), "{reply:?}");
    let reply = c.simple(&format!("DROP TABLE {t}")).await;
    assert!(error_of(&reply).is_none(), "{reply:?}");
    let reply = c.simple(&format!("SELECT count(*) FROM public.{t}")).await;
    assert!(
        error_of(&reply).is_none(),
        "the permanent table stays: {reply:?}"
    );
}

/// Binds the unnamed portal from `sql` (parsed as `s`) inside the open
/// transaction block, where the portal outlives its Sync.
async fn bind_in_transaction(c: &mut RawClient, sql: &str, params: &[Option<&str>]) {
    let mut bound = parse("s", sql);
    bound.extend(bind_only("s", params));
    bound.extend(sync());
    c.send(&bound).await;
    let reply = c.until_ready().await;
    assert!(error_of(&reply).is_none(), "{reply:?}");
}

/// Executes the unnamed portal: refused (42501), no row sent; the error.
async fn execute_refused(c: &mut RawClient) -> Msg {
    let mut run = execute_unnamed();
    run.extend(sync());
    c.send(&run).await;
    let reply = c.until_ready().await;
    let err = error_of(&reply).expect("refused").clone();
    assert_eq!(err.sqlstate(), "42501", "{err:?}");
    assert!(!reply.iter().any(|m| m.tag == b'D'), "{reply:?}");
    err
}

/// A portal bound under the old rules and executed after a reload that
/// denies its statement is refused at the Execute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execute_is_judged_under_the_rules_of_now() {
    let pw = Pgward::start(Backend::shared()).await;
    let (mut c, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    let t = format!("later_{:08x}", rand::random::<u32>());
    let reply = c
        .simple(&format!(
            "CREATE TABLE {t} (v text); INSERT INTO {t} VALUES ('SECRET'); BEGIN"
        ))
        .await;
    assert!(error_of(&reply).is_none(), "{reply:?}");
    bind_in_transaction(&mut c, &format!("SELECT v FROM {t}"), &[]).await;
    pw.reload_with(&format!(
        "[policy]\n[[policy.rules]]\nname = \"hide\"\naction = \"deny\"\nrelations = [\"{t}\"]\n"
    ))
    .expect("reload");
    execute_refused(&mut c).await;
}

/// A portal of a statement the rules judge by its parameter values, bound
/// before a reload: its values were judged under the old rules only, so
/// its Execute after the reload is refused; bound again, it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_judged_by_its_values_is_bound_again_after_a_reload() {
    let pw = Pgward::start(Backend::shared()).await;
    let (mut c, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    let reply = c.simple("BEGIN").await;
    assert!(error_of(&reply).is_none(), "{reply:?}");
    let values = [Some("application_name"), Some("before")];
    bind_in_transaction(&mut c, SET_CONFIG, &values).await;
    pw.reload_with("[policy]\n").expect("reload");
    let err = execute_refused(&mut c).await;
    assert!(
        err.field(b'M')
            .unwrap_or_default()
            .contains("reloaded since this portal was bound"),
        "{err:?}"
    );
    let reply = c.simple("ROLLBACK").await;
    assert!(error_of(&reply).is_none(), "{reply:?}");
    // Bound and run after the reload (one batch), it runs.
    c.send(&extended(
        SET_CONFIG,
        &[Some("application_name"), Some("after")],
    ))
    .await;
    let reply = c.until_ready().await;
    assert!(error_of(&reply).is_none(), "{reply:?}");
    assert!(reply
        .iter()
        .any(|m| m.tag == b'D' && m.body.ends_with(b"after")));
    // Outside a transaction block, mid-batch: bound and flushed (no Sync
    // yet, so the portal lives on), then the reload, then the Execute.
    let mut bound = parse("s2", SET_CONFIG);
    bound.extend(bind_only(
        "s2",
        &[Some("application_name"), Some("flushed")],
    ));
    bound.extend(message(b'H', b""));
    c.send(&bound).await;
    loop {
        let m = c.recv().await.expect("BindComplete");
        assert_ne!(m.tag, b'E', "{m:?}");
        if m.tag == b'2' {
            break;
        }
    }
    pw.reload_with("[policy]\n\n").expect("reload");
    execute_refused(&mut c).await;
    still_app(&mut c).await;
}
