//! Verdicts that depend on parameters are judged at Bind with the values
//! (psycopg binds everything server-side: `SELECT set_config($1, $2,
//! false)` is how it sets a parameter).

mod support;

use support::raw::{error_of, message, RawClient};
use support::{Backend, Pgward, DB, PASSWORD, USER};

fn cstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(s);
    out.push(0);
}

/// Parse (unnamed) + Bind with text parameters + Execute + Sync.
fn extended(sql: &str, params: &[Option<&str>]) -> Vec<u8> {
    let mut parse = Vec::new();
    cstr(&mut parse, b"");
    cstr(&mut parse, sql.as_bytes());
    parse.extend_from_slice(&0u16.to_be_bytes());
    let mut bind = Vec::new();
    cstr(&mut bind, b"");
    cstr(&mut bind, b"");
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
    let mut out = message(b'P', &parse);
    out.extend(message(b'B', &bind));
    out.extend(message(b'E', &execute));
    out.extend(message(b'S', b""));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_config_with_bound_values_is_judged_at_bind() {
    let pw = Pgward::start(Backend::shared()).await;
    let (mut c, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    let sql = "SELECT set_config($1, $2, false)";
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
    let who = c.simple("SELECT current_user").await;
    assert!(who
        .iter()
        .any(|m| m.tag == b'D' && m.body.ends_with(b"app")));
}
