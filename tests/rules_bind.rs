//! Verdicts that depend on parameters are judged at Bind with the values
//! (psycopg binds everything server-side: `SELECT set_config($1, $2,
//! false)` is how it sets a parameter), against the statement the server
//! will bind from.

mod support;

use support::raw::{error_of, message, query, RawClient};
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
    let mut execute = Vec::new();
    cstr(&mut execute, b"");
    execute.extend_from_slice(&0i32.to_be_bytes());
    let mut out = message(b'B', &bind);
    out.extend(message(b'E', &execute));
    out.extend(sync());
    out
}

fn sync() -> Vec<u8> {
    message(b'S', b"")
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
