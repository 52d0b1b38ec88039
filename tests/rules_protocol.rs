//! Protocol-level differentials between what pgward judges and what the
//! server runs: settings that change lexing while pgward's model of them
//! lags (a SET already run, its ParameterStatus not yet sent), and Bind
//! values the server reads through a type that changes them.

mod support;

use support::raw::{error_of, message, Msg, RawClient};
use support::{Backend, Pgward, DB, PASSWORD, USER};

fn cstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(s);
    out.push(0);
}

/// Parse of statement `name` with these parameter type OIDs.
fn parse_typed(name: &str, sql: &[u8], types: &[u32]) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, name.as_bytes());
    cstr(&mut body, sql);
    body.extend_from_slice(&u16::try_from(types.len()).unwrap().to_be_bytes());
    for t in types {
        body.extend_from_slice(&t.to_be_bytes());
    }
    message(b'P', &body)
}

/// Bind of the unnamed portal from `statement`, text parameters.
fn bind(statement: &str, params: &[Option<&[u8]>]) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, b"");
    cstr(&mut body, statement.as_bytes());
    body.extend_from_slice(&0u16.to_be_bytes()); // all text
    body.extend_from_slice(&u16::try_from(params.len()).unwrap().to_be_bytes());
    for p in params {
        match p {
            Some(v) => {
                body.extend_from_slice(&i32::try_from(v.len()).unwrap().to_be_bytes());
                body.extend_from_slice(v);
            }
            None => body.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    body.extend_from_slice(&0u16.to_be_bytes());
    message(b'B', &body)
}

/// Execute of the unnamed portal, all rows.
fn execute() -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, b"");
    body.extend_from_slice(&0i32.to_be_bytes());
    message(b'E', &body)
}

/// Parse (unnamed) + Bind + Execute of `sql`, text parameters, no Sync.
fn run(sql: &[u8], types: &[u32], params: &[Option<&[u8]>]) -> Vec<u8> {
    let mut out = parse_typed("", sql, types);
    out.extend(bind("", params));
    out.extend(execute());
    out
}

fn sync() -> Vec<u8> {
    message(b'S', b"")
}

fn flush() -> Vec<u8> {
    message(b'H', b"")
}

/// A table only the superuser made, readable by the app role, holding
/// `SECRET`; and pgward with `[policy]` lines `policy` that deny it.
async fn guarded(policy: &str) -> (Pgward, String) {
    let backend = Backend::shared();
    let t = format!("guarded_{:08x}", rand::random::<u32>());
    backend.admin_sql(&format!(
        "CREATE TABLE public.{t} (v text); INSERT INTO public.{t} VALUES ('SECRET'); \
         GRANT SELECT ON public.{t} TO app"
    ));
    let config = format!(
        "{}\n[policy]\n{policy}\n[[policy.rules]]\nname = \"hide\"\naction = \"deny\"\n\
         relations = [\"{t}\"]\n",
        backend.config("", "")
    );
    (Pgward::start_in(&config, backend.cluster.dir()).await, t)
}

fn leaked(reply: &[Msg]) -> bool {
    reply
        .iter()
        .any(|m| m.tag == b'D' && m.body.windows(6).any(|w| w == b"SECRET"))
}

/// Reads up to (and including) the first message with tag `tag`, or an
/// error.
async fn until(c: &mut RawClient, tag: u8) -> Vec<Msg> {
    let mut got = Vec::new();
    loop {
        let m = c.recv().await.expect("a message");
        let done = m.tag == tag || m.tag == b'E';
        got.push(m);
        if done {
            return got;
        }
    }
}

/// The server reports a changed setting (ParameterStatus) only before its
/// next ReadyForQuery: a SET run by an Execute and flushed, answered but
/// not synced, has changed how the server lexes the next Parse while the
/// report is still to come. pgward must judge that Parse under both
/// readings, not under the one last reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_run_before_a_flush_changes_lexing_before_it_is_reported() {
    // The setting may be turned off here (builtin rules off); the table
    // stays denied.
    let (pw, t) = guarded("builtin_rules = false").await;
    let (mut c, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    let mut set = run(b"SET standard_conforming_strings = off", &[], &[]);
    set.extend(flush());
    c.send(&set).await;
    let answered = until(&mut c, b'C').await;
    assert!(error_of(&answered).is_none(), "{answered:?}");
    // With the setting on, one string; with it off, a string and the
    // guarded table. Each message waits for the answer to the one before,
    // so none is sent while the server is still working.
    let attack = format!("SELECT 'x\\'' , v FROM {t} --'");
    let mut parse = parse_typed("", attack.as_bytes(), &[]);
    parse.extend(flush());
    let mut bound = bind("", &[]);
    bound.extend(flush());
    let mut executed = execute();
    executed.extend(sync());
    let mut reply = Vec::new();
    for (step, answer) in [(parse, b'1'), (bound, b'2'), (executed, b'Z')] {
        c.send(&step).await;
        let got = until(&mut c, answer).await;
        let failed = error_of(&got).is_some();
        reply.extend(got);
        if failed {
            break;
        }
    }
    if reply.last().is_some_and(|m| m.tag != b'Z') {
        c.send(&sync()).await;
        reply.extend(c.until_ready().await);
    }
    assert!(!leaked(&reply), "the denied table was read: {reply:?}");
    let err = error_of(&reply).expect("refused");
    assert_eq!(err.sqlstate(), "42501", "{err:?}");
}

/// Asserts the session has not switched roles.
async fn no_role_set(c: &mut RawClient) {
    let reply = c.simple("SHOW role").await;
    assert!(
        reply
            .iter()
            .any(|m| m.tag == b'D' && m.body.ends_with(b"none")),
        "the role was switched: {reply:?}"
    );
}

/// A Bind value is read by the server through its parameter's type: a
/// `character` (bpchar) value loses its trailing spaces when it is passed
/// as text, so `'role   '` names the setting `role`. The type comes from
/// the Parse, or from the first use of the parameter the server analyses
/// (here a cast in FROM, read before the select list).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_value_is_judged_as_its_type_reads_it() {
    let pw = Pgward::start(Backend::shared()).await;
    let (mut c, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    const BPCHAR: u32 = 1042;
    let cases: [(&[u8], &[u32]); 3] = [
        (b"SELECT set_config($1, $2, false)", &[BPCHAR, 0]),
        (
            b"SELECT set_config($1, $2, false) FROM (SELECT $1::char(10)) s",
            &[],
        ),
        (
            b"SELECT set_config($1, $2, false) FROM (SELECT 1) s JOIN (SELECT 'x'::char(3) AS c) u \
              ON u.c = $1",
            &[],
        ),
    ];
    for (sql, types) in cases {
        let mut attack = run(sql, types, &[Some(b"role   "), Some(b"app")]);
        attack.extend(sync());
        c.send(&attack).await;
        let reply = c.until_ready().await;
        let err = error_of(&reply)
            .unwrap_or_else(|| panic!("{}: not refused: {reply:?}", String::from_utf8_lossy(sql)));
        assert_eq!(err.sqlstate(), "42501", "{err:?}");
        no_role_set(&mut c).await;
    }
    // Where the server takes the value as text, it is judged by its value.
    const TEXT: u32 = 25;
    for types in [&[TEXT, 0][..], &[]] {
        let mut harmless = run(
            b"SELECT set_config($1, $2, false)",
            types,
            &[Some(b"application_name"), Some(b"typed")],
        );
        harmless.extend(sync());
        c.send(&harmless).await;
        let reply = c.until_ready().await;
        assert!(error_of(&reply).is_none(), "{reply:?}");
    }
}

/// A simple Query of `bytes` as they are (any encoding).
fn query_bytes(bytes: &[u8]) -> Vec<u8> {
    let mut body = bytes.to_vec();
    body.push(0);
    message(b'Q', &body)
}

/// The server converts each message from the client_encoding in force when
/// it reads it, and reports a change only before its ReadyForQuery: a
/// Query pipelined behind a change of client_encoding is read in the new
/// encoding while pgward has only the old one. Non-ASCII text is then
/// read differently by pgward: a name (here a LATIN1 session switching to
/// UTF8: `gardé` read as `gardÃ©`), or with an encoding whose characters
/// can end in a backslash, where a string ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_behind_a_change_of_client_encoding_is_not_read_in_the_old_one() {
    let backend = Backend::shared();
    let t = format!("gardé_{:08x}", rand::random::<u32>());
    backend.admin_sql(&format!(
        "CREATE TABLE public.\"{t}\" (v text); INSERT INTO public.\"{t}\" VALUES ('SECRET'); \
         GRANT SELECT ON public.\"{t}\" TO app"
    ));
    let config = format!(
        "{}\n[policy]\n[[policy.rules]]\nname = \"hide\"\naction = \"deny\"\n\
         relations = [\"{t}\"]\n",
        backend.config("", "")
    );
    let pw = Pgward::start_in(&config, backend.cluster.dir()).await;
    let (mut c, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    let latin1 = c.simple("SET client_encoding = 'LATIN1'").await;
    assert!(error_of(&latin1).is_none(), "{latin1:?}");
    // Read in LATIN1 (the name as LATIN1 bytes), the table is denied.
    let mut in_latin1 = b"SELECT v FROM \"garde".to_vec();
    in_latin1[19] = 0xE9;
    in_latin1.extend_from_slice(&t.as_bytes()["gardé".len()..]);
    in_latin1.push(b'"');
    let reply = {
        c.send(&query_bytes(&in_latin1)).await;
        c.until_ready().await
    };
    assert_eq!(error_of(&reply).expect("denied").sqlstate(), "42501");
    // Behind a switch to UTF8, in UTF-8.
    let mut batch = query_bytes(b"SET client_encoding = 'UTF8'");
    batch.extend(query_bytes(format!("SELECT v FROM \"{t}\"").as_bytes()));
    c.send(&batch).await;
    let set = c.until_ready().await;
    assert!(error_of(&set).is_none(), "{set:?}");
    let reply = c.until_ready().await;
    assert!(!leaked(&reply), "the denied table was read: {reply:?}");
    let err = error_of(&reply).expect("refused");
    assert_eq!(err.sqlstate(), "55000", "{err:?}");
    // A COMMIT ends the SET LOCAL made in its transaction.
    let local = c
        .simple("BEGIN; SET LOCAL client_encoding = 'LATIN1'")
        .await;
    assert!(error_of(&local).is_none(), "{local:?}");
    let mut batch = query_bytes(b"COMMIT");
    batch.extend(query_bytes(format!("SELECT v FROM \"{t}\"").as_bytes()));
    c.send(&batch).await;
    assert!(error_of(&c.until_ready().await).is_none());
    let reply = c.until_ready().await;
    assert!(!leaked(&reply), "the denied table was read: {reply:?}");
    assert_eq!(error_of(&reply).expect("refused").sqlstate(), "55000");
    // Once reported, and behind requests that change no encoding,
    // non-ASCII text is judged as ever.
    let mut batch = query_bytes(b"SELECT 1");
    batch.extend(query_bytes("SELECT 'é'".as_bytes()));
    c.send(&batch).await;
    for _ in 0..2 {
        let reply = c.until_ready().await;
        assert!(error_of(&reply).is_none(), "{reply:?}");
    }
}

/// As above, to an encoding pgward cannot judge that the rules allow
/// (builtin rules off): valid UTF-8 `E'ぁ\'` loses its backslash in SJIS,
/// so the string ends early and the rest runs as SQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_behind_a_switch_to_sjis_is_not_read_as_utf8() {
    let (pw, t) = guarded("builtin_rules = false").await;
    let (mut c, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    let mut batch = query_bytes(b"SET client_encoding = 'SJIS'");
    batch.extend(query_bytes(
        format!("SELECT E'ぁ\\' , v FROM {t} --'").as_bytes(),
    ));
    batch.extend(query_bytes(b"RESET client_encoding"));
    c.send(&batch).await;
    let set = c.until_ready().await;
    assert!(error_of(&set).is_none(), "{set:?}");
    let reply = c.until_ready().await;
    assert!(!leaked(&reply), "the denied table was read: {reply:?}");
    assert!(error_of(&reply).is_some(), "{reply:?}");
    let reset = c.until_ready().await;
    assert!(error_of(&reset).is_none(), "{reset:?}");
}
