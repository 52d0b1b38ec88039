//! Client encodings end to end: pgward judges the text the server lexes.
//! Its single-byte tables equal the server's own conversions; a LATIN9
//! session is judged as transcoded; switching to an encoding pgward cannot
//! judge is refused; and a session the server reports in such an encoding
//! (a role's default) gets only ASCII text through until it switches back.

mod support;

use pgward::policy::encoding::ClientEncoding;
use support::raw::{error_of, message, Msg, RawClient};
use support::{Backend, Pgward, DB, PASSWORD, USER};

/// A simple Query whose text is `bytes` as they are (any encoding).
fn query(bytes: &[u8]) -> Vec<u8> {
    let mut body = bytes.to_vec();
    body.push(0);
    message(b'Q', &body)
}

async fn run(c: &mut RawClient, bytes: &[u8]) -> Vec<Msg> {
    c.send(&query(bytes)).await;
    c.until_ready().await
}

fn rule_of(msgs: &[Msg]) -> Option<String> {
    error_of(msgs).map(|e| format!("{} {}", e.sqlstate(), e.field(b'M').unwrap_or_default()))
}

fn first_value(msgs: &[Msg]) -> Option<Vec<u8>> {
    let row = msgs.iter().find(|m| m.tag == b'D')?;
    let body = &row.body;
    let len = i32::from_be_bytes([body[2], body[3], body[4], body[5]]);
    usize::try_from(len)
        .ok()
        .map(|len| body[6..6 + len].to_vec())
}

#[test]
fn the_single_byte_tables_are_the_servers_conversions() {
    let backend = Backend::shared();
    for name in [
        "LATIN1",
        "LATIN2",
        "LATIN3",
        "LATIN4",
        "LATIN5",
        "LATIN6",
        "LATIN7",
        "LATIN8",
        "LATIN9",
        "LATIN10",
        "ISO_8859_5",
        "ISO_8859_6",
        "ISO_8859_7",
        "ISO_8859_8",
        "WIN1250",
        "WIN1251",
        "WIN1252",
        "WIN1253",
        "WIN1254",
        "WIN1255",
        "WIN1256",
        "WIN1257",
        "WIN1258",
        "WIN866",
        "WIN874",
        "KOI8R",
        "KOI8U",
    ] {
        let server = backend.admin_sql(&format!(
            "CREATE OR REPLACE FUNCTION pg_temp.m(b int) RETURNS int LANGUAGE plpgsql AS $$ \
             BEGIN RETURN ascii(convert_from(decode(lpad(to_hex(b), 2, '0'), 'hex'), '{name}')); \
             EXCEPTION WHEN others THEN RETURN 0; END $$; \
             SELECT string_agg(pg_temp.m(b)::text, ',' ORDER BY b) FROM generate_series(128, 255) b"
        ));
        let encoding = ClientEncoding::named(name);
        let ours: Vec<String> = (128u8..=255)
            .map(|b| {
                encoding
                    .to_utf8(&[b])
                    .map_or(0, |s| s.chars().next().map_or(0, u32::from))
                    .to_string()
            })
            .collect();
        let server_line = server.lines().last().unwrap_or_default().trim().to_owned();
        assert_eq!(ours.join(","), server_line, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latin9_session_is_judged_as_the_server_reads_it() {
    let pw = Pgward::start(Backend::shared()).await;
    let (mut c, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    let t = format!("enc_{}", std::process::id());
    let done = run(
        &mut c,
        format!("CREATE TABLE {t} (v text); INSERT INTO {t} VALUES ('x')").as_bytes(),
    )
    .await;
    assert!(error_of(&done).is_none(), "{:?}", rule_of(&done));
    let done = run(&mut c, b"SET client_encoding = 'LATIN9'").await;
    assert!(error_of(&done).is_none(), "{:?}", rule_of(&done));
    // 0xA4 is the euro sign in LATIN9 (not valid UTF-8 at all).
    let rows = run(&mut c, b"SELECT '\xa4' AS euro, length('\xa4\xe9')").await;
    assert!(error_of(&rows).is_none(), "{:?}", rule_of(&rows));
    assert_eq!(first_value(&rows).as_deref(), Some(&b"\xa4"[..]));
    // Judged as transcoded: the DROP after a LATIN9 string is seen.
    let mut attack = b"SELECT '\xe9'; DROP TABLE ".to_vec();
    attack.extend_from_slice(t.as_bytes());
    let refused = run(&mut c, &attack).await;
    assert!(
        rule_of(&refused).is_some_and(|r| r.contains("no-drop")),
        "{:?}",
        rule_of(&refused)
    );
    // A byte LATIN9 lacks an equivalent for does not exist there; WIN1252's
    // 0x81 is refused as the server refuses it.
    let done = run(&mut c, b"SET client_encoding = 'WIN1252'").await;
    assert!(error_of(&done).is_none());
    let refused = run(&mut c, b"SELECT '\x81'").await;
    assert_eq!(
        error_of(&refused).map(Msg::sqlstate).as_deref(),
        Some("22P05")
    );
    let done = run(&mut c, b"RESET client_encoding").await;
    assert!(error_of(&done).is_none());
    let rows = run(&mut c, format!("SELECT count(*) FROM {t}").as_bytes()).await;
    assert_eq!(first_value(&rows).as_deref(), Some(&b"1"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_to_an_unjudgeable_encoding_is_refused() {
    let pw = Pgward::start(Backend::shared()).await;
    let client = pw.connect().await;
    for sql in [
        "SET client_encoding = 'SJIS'",
        "SET NAMES 'BIG5'",
        "SET client_encoding TO 'GBK'",
        "SELECT set_config('client_encoding', 'GB18030', false)",
        "SELECT pg_catalog.set_config(('client_encoding'), ('UHC'), true)",
        "ALTER ROLE CURRENT_USER SET client_encoding = 'SJIS'",
        "ALTER DATABASE appdb SET client_encoding TO 'JOHAB'",
    ] {
        for e in [
            client.simple_query(sql).await.map(|_| ()).expect_err(sql),
            client.execute(sql, &[]).await.map(|_| ()).expect_err(sql),
        ] {
            assert_eq!(support::sqlstate(&e), "42501", "{sql}: {e:?}");
            assert!(
                support::message(&e).contains("no-unjudgeable-client-encoding"),
                "{sql}: {e:?}"
            );
        }
    }
    let row = client
        .query_one("SELECT current_setting('client_encoding')", &[])
        .await
        .expect("still UTF8");
    assert_eq!(row.get::<_, String>(0), "UTF8");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_the_server_reports_in_sjis_gets_only_ascii_through() {
    let backend = Backend::shared();
    // A role whose default client_encoding is SJIS: the server reports it
    // at login although no client asked pgward for it.
    let password = format!("sjis-{:016x}", rand::random::<u64>());
    backend.admin_sql(&format!(
        "CREATE ROLE pgward_sjis LOGIN PASSWORD '{password}'; \
         GRANT CONNECT ON DATABASE {DB} TO pgward_sjis; \
         ALTER ROLE pgward_sjis SET client_encoding = 'SJIS'"
    ));
    let file = backend.cluster.dir().join("sjis.password");
    std::fs::write(&file, format!("{password}\n")).expect("password file");
    let config = backend
        .config(
            "",
            "role_map = [{ users = [\"*\"], role = \"pgward_sjis\" }]",
        )
        .replace(
            &format!("user = \"{}\"", support::APP_ROLE),
            "user = \"pgward_sjis\"",
        )
        .replace(
            &format!("password_file = \"{}\"", backend.password_file.display()),
            &format!("password_file = \"{}\"", file.display()),
        );
    let pw = Pgward::start_in(&config, backend.cluster.dir()).await;
    let (mut c, hello) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    let reported = hello
        .iter()
        .filter(|m| m.tag == b'S')
        .any(|m| m.body.starts_with(b"client_encoding\0SJIS"));
    assert!(reported, "the server reports SJIS");
    // The bytes: valid UTF-8 whose backslash SJIS swallows.
    let attack = "SELECT E'ぁ\\'; DROP TABLE pg_class; --'";
    let refused = run(&mut c, attack.as_bytes()).await;
    assert_eq!(
        error_of(&refused).map(Msg::sqlstate).as_deref(),
        Some("22021")
    );
    let rows = run(&mut c, b"SELECT 'ascii is read alike'").await;
    assert!(error_of(&rows).is_none(), "{:?}", rule_of(&rows));
    // Back to UTF8 (an ASCII statement): judged as before.
    let done = run(&mut c, b"SET client_encoding = 'UTF8'").await;
    assert!(error_of(&done).is_none(), "{:?}", rule_of(&done));
    let rows = run(&mut c, "SELECT 'ぁ'".as_bytes()).await;
    assert!(error_of(&rows).is_none(), "{:?}", rule_of(&rows));
}

/// The clear value of the masked columns below (upper-cased by the
/// attacks, so both spellings are looked for).
const SECRET: &str = "secret-4821";

/// Every message body, checked for the clear value in either case.
fn assert_no_secret(what: &str, msgs: &[Msg]) {
    for m in msgs {
        let text = String::from_utf8_lossy(&m.body).to_lowercase();
        assert!(
            !text.contains(SECRET),
            "{what}: {} carries the masked value: {text:?}",
            char::from(m.tag)
        );
    }
}

/// The masking guard judges the text the server lexes, converted from the
/// session's client_encoding, whatever the statement rules (here none: the
/// built-in rules off, so SJIS may be chosen). In LATIN1 the UTF-8 bytes of
/// `"ssné"` are the server's `"ssnÃ©"`, a masked column; in SJIS the
/// backslash of `E'ぁ\'` is the second byte of a character, and the rest
/// of the "string" runs as SQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_masking_guard_reads_text_in_the_sessions_encoding() {
    let backend = Backend::shared();
    let t = format!("encmask_{:08x}", rand::random::<u32>());
    backend.admin_sql(&format!(
        "CREATE TABLE {t} (id int, \"ssnÃ©\" text, ssn text); \
         INSERT INTO {t} VALUES (1, '{SECRET}', '{SECRET}'); \
         GRANT SELECT ON {t} TO {}",
        support::MASKED_ROLE
    ));
    let config = format!(
        "{}\n[policy]\nbuiltin_rules = false\n[masking]\nrefresh = \"1h\"\n\
         [[masking.rules]]\nname = \"ssn\"\ncolumns = [\"{t}.ssnÃ©\", \"{t}.ssn\"]\n\
         strategy = \"redact\"\n",
        backend.masked_config("", "")
    );
    let pw = Pgward::start_in(&config, backend.cluster.dir()).await;
    let (mut c, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    // Bare, both columns come back masked.
    let rows = run(&mut c, format!("SELECT \"ssnÃ©\", ssn FROM {t}").as_bytes()).await;
    assert!(error_of(&rows).is_none(), "{:?}", rule_of(&rows));
    assert_no_secret("bare", &rows);
    // Pipelined behind the switch, the text is read in LATIN1 before
    // pgward is told: not ASCII, it is refused.
    let latin1 = format!("SELECT upper(\"ssné\") FROM {t}");
    let mut both = query(b"SET client_encoding = 'LATIN1'");
    both.extend_from_slice(&query(latin1.as_bytes()));
    c.send(&both).await;
    let done = c.until_ready().await;
    assert!(error_of(&done).is_none(), "{:?}", rule_of(&done));
    let got = c.until_ready().await;
    assert_no_secret("pipelined", &got);
    assert_eq!(
        error_of(&got).map(Msg::sqlstate).as_deref(),
        Some("55000"),
        "{:?}",
        rule_of(&got)
    );
    let done = run(&mut c, b"RESET client_encoding").await;
    assert!(error_of(&done).is_none(), "{:?}", rule_of(&done));

    let done = run(&mut c, b"SET client_encoding = 'LATIN1'").await;
    assert!(error_of(&done).is_none(), "{:?}", rule_of(&done));
    // LATIN1 bytes of "ssnÃ©", which are also valid UTF-8 ("ssné").
    let got = run(&mut c, latin1.as_bytes()).await;
    assert_no_secret(&latin1, &got);
    assert_eq!(
        error_of(&got).map(Msg::sqlstate).as_deref(),
        Some("42501"),
        "{latin1}: {:?}",
        rule_of(&got)
    );
    // The same text in LATIN1's own bytes for ssnÃ© reads alike.
    let mut own = b"SELECT upper(\"ssn\xc3\xa9\") FROM ".to_vec();
    own.extend_from_slice(t.as_bytes());
    let got = run(&mut c, &own).await;
    assert_no_secret("latin1 bytes", &got);
    assert!(error_of(&got).is_some(), "{:?}", rule_of(&got));
    // A name in LATIN1 that is not UTF-8 at all is judged too (bare: passes).
    let mut bare = b"SELECT id AS \"na\xefve\" FROM ".to_vec();
    bare.extend_from_slice(t.as_bytes());
    let got = run(&mut c, &bare).await;
    assert!(error_of(&got).is_none(), "{:?}", rule_of(&got));

    let done = run(&mut c, b"SET client_encoding = 'SJIS'").await;
    assert!(error_of(&done).is_none(), "{:?}", rule_of(&done));
    let sjis = format!("SELECT E'ぁ\\' , upper(ssn) FROM {t} --'");
    let got = run(&mut c, sjis.as_bytes()).await;
    assert_no_secret(&sjis, &got);
    assert!(error_of(&got).is_some(), "{sjis} ran: {got:?}");
    // ASCII reads alike in every encoding.
    let rows = run(&mut c, format!("SELECT id FROM {t}").as_bytes()).await;
    assert!(error_of(&rows).is_none(), "{:?}", rule_of(&rows));
}
