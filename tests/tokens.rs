//! Tokens minted by pgward: they log in through psql and tokio-postgres
//! over TLS, never in clear text; every kind of bad token is refused with
//! its own reason; tokens of identity-provider size work; the groups a
//! token carries drive rules and masking like a configured user's.

mod support;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use std::time::Duration;
use support::tokens::{hand_made, TestKey, TokenGateway};
use support::{connect_with, message, sqlstate, Backend, PASSWORD, USER};
use tokio_postgres::SimpleQueryMessage;

const BIN: &str = env!("CARGO_BIN_EXE_pgward");

fn first_value(rows: &[SimpleQueryMessage]) -> String {
    rows.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .expect("a row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_token_logs_in_with_psql_and_tokio_postgres_over_tls_only() {
    let tg = TokenGateway::start("", "").await;
    // Minted by the CLI, as an operator or CI job would.
    let out = std::process::Command::new(BIN)
        .args(["token", "mint", "--config"])
        .arg(&tg.config_file)
        .args([
            "--user",
            "ci-deploy",
            "--groups",
            "deploy,dev",
            "--database",
        ])
        .arg(support::DB)
        .args(["--ttl", "5m", "--reason", "release 1.2"])
        .output()
        .expect("mint");
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_owned();
    assert!(String::from_utf8_lossy(&out.stderr).contains("kid k1"));

    let client = tg
        .connect_tls("ci-deploy", &token)
        .await
        .expect("token login");
    let rows = client
        .simple_query("SELECT current_user")
        .await
        .expect("query");
    assert_eq!(first_value(&rows), support::APP_ROLE);
    // The registry shows the token identity and its groups.
    let s = tg.pw.gateway.registry.list();
    let me = s
        .iter()
        .find(|s| s.user == "ci-deploy")
        .expect("registered");
    assert_eq!(me.groups, ["deploy", "dev"]);

    let dsn = format!(
        "host=localhost port={} user=ci-deploy dbname={} sslmode=verify-full sslrootcert={}",
        tg.pw.addr.port(),
        support::DB,
        tg.pki.ca_file.display()
    );
    let out = psql(&dsn, &token, "SELECT 'token ok'").await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "token ok");

    // The same token in clear text: refused before it is asked for.
    let e = connect_with(&tg.pw.client_config("ci-deploy", &token))
        .await
        .expect_err("clear text");
    assert_eq!(sqlstate(&e), "28000");
    assert!(message(&e).contains("only over TLS"), "{}", message(&e));
    let clear = dsn.replace("sslmode=verify-full", "sslmode=disable");
    let out = psql(&clear, &token, "SELECT 1").await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only over TLS"));

    // SCRAM users are unchanged, in clear text and over TLS.
    let scram = tg.pw.connect().await;
    scram.simple_query("SELECT 1").await.expect("scram plain");
    tg.connect_tls(USER, PASSWORD).await.expect("scram tls");
}

/// Runs `sql` with psql against `dsn`, the token as its password.
async fn psql(dsn: &str, token: &str, sql: &str) -> std::process::Output {
    let psql = Backend::shared().cluster.program("psql");
    let (dsn, token, sql) = (dsn.to_owned(), token.to_owned(), sql.to_owned());
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(psql)
            .env("PGPASSWORD", &token)
            .args(["-X", "-A", "-t", "-c", &sql])
            .arg(&dsn)
            .output()
            .expect("psql")
    })
    .await
    .expect("task")
}

async fn refusal(tg: &TokenGateway, user: &str, token: &str) -> String {
    let e = tg.connect_tls(user, token).await.expect_err("refused");
    assert_eq!(sqlstate(&e), "28P01", "{}", message(&e));
    message(&e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_each_refused_with_their_reason() {
    let tg = TokenGateway::start("", "").await;
    let dir = Backend::shared().cluster.dir();
    let user = "ci-bad";
    let now = pgward::auth::token::unix_now();
    let with = |changes: Value| tg.claims_with(user, changes);
    let k1 = &tg.key;
    let stranger = TestKey::new(dir, "k1");
    let good = k1.sign(with(json!({})));
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    // Tampered: the payload now says another user, the signature is old.
    parts[1] = base64_url(with(json!({"groups": ["dba"]})).to_string().as_bytes());
    let tampered = parts.join(".");
    let header = |alg: &str| json!({"alg": alg, "kid": "k1", "typ": "JWT"});
    let none = hand_made(header("none"), &with(json!({})), |_| Vec::new());
    // HS256 keyed with the public key, the classic algorithm confusion.
    let public = base64_decode(&k1.public);
    let hs256 = hand_made(header("HS256"), &with(json!({})), |input| {
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&public).expect("hmac");
        mac.update(input);
        mac.finalize().into_bytes().to_vec()
    });
    // Signed with a key named like the retired one: refused before its
    // signature is even looked at.
    let retired = TestKey::new(dir, "old");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            k1.sign(with(json!({"exp": now - 5}))),
            "the token expired at",
        ),
        (
            "not yet valid",
            k1.sign(with(json!({"nbf": now + 600}))),
            "is not valid before",
        ),
        (
            "wrong audience",
            k1.sign(with(json!({"aud": "another-pgward"}))),
            "audience does not include pgward-test",
        ),
        (
            "wrong issuer",
            k1.sign(with(json!({"iss": "someone-else"}))),
            "tokens of issuer \"someone-else\" are not accepted",
        ),
        (
            "unknown kid",
            TestKey::new(dir, "k9").sign(with(json!({}))),
            "unknown signing key \"k9\"",
        ),
        ("tampered", tampered, "invalid token signature"),
        (
            "signed by another key",
            stranger.sign(with(json!({}))),
            "invalid token signature",
        ),
        ("alg none", none, "alg \"none\") are never accepted"),
        (
            "HS256 with the public key",
            hs256,
            "HMAC-signed tokens (alg \"HS256\")",
        ),
        (
            "retired key",
            retired.sign(with(json!({}))),
            "signing key \"old\" is retired",
        ),
        (
            "another user's token",
            k1.sign(with(json!({"sub": "ci-other"}))),
            "the token is for user \"ci-other\", not \"ci-bad\"",
        ),
        (
            "no jti",
            k1.sign(with(json!({"jti": null}))),
            "malformed token",
        ),
        ("garbage", "not.a.token".into(), "malformed token"),
    ];
    for (name, token, expected) in cases {
        let got = refusal(&tg, user, &token).await;
        assert!(
            got.contains(expected)
                && got.contains("token authentication failed for user \"ci-bad\""),
            "{name}: {got}"
        );
    }
    // The untampered token does log in.
    tg.connect_tls(user, &good).await.expect("good token");
    // A token for a database it does not name.
    let other_db = k1.sign(with(json!({"databases": ["otherdb"]})));
    let e = tg.connect_tls(user, &other_db).await.expect_err("db");
    assert_eq!(sqlstate(&e), "42501");
}

/// pgward mints tokens for at most `tokens.max_ttl` (1h here), and key
/// rotation counts on it ("after max_ttl, retire the old key"): a token of
/// its own issuer that claims a longer life, or none that can be measured
/// (no `iat`), is refused, whoever signed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_pgward_lives_no_longer_than_max_ttl() {
    let tg = TokenGateway::start("max_ttl = \"1h\"", "").await;
    let user = "ci-long";
    let now = pgward::auth::token::unix_now();
    let with = |changes: Value| tg.claims_with(user, changes);
    let cases = [
        (
            "thirty days",
            json!({"exp": now + 30 * 86_400}),
            "longer than tokens.max_ttl (3600s)",
        ),
        (
            "issued long ago",
            json!({"iat": now - 7_200, "exp": now + 60}),
            "the token is valid for 7260s",
        ),
        ("no iat", json!({"iat": null}), "the token has no iat claim"),
    ];
    for (name, changes, expected) in cases {
        let mut claims = with(changes);
        if let Some(m) = claims.as_object_mut() {
            m.retain(|_, v| !v.is_null());
        }
        let got = refusal(&tg, user, &tg.key.sign(claims)).await;
        assert!(
            got.contains("token authentication failed for user \"ci-long\"")
                && got.contains(expected),
            "{name}: {got}"
        );
    }
    // Exactly max_ttl is what `pgward token mint --ttl 1h` makes.
    let minted = tg.mint(user, &[], Duration::from_secs(3600));
    tg.connect_tls(user, &minted.token).await.expect("max_ttl");
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .expect("base64url")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_identity_provider_size_work() {
    let tg = TokenGateway::start("", "").await;
    for (reason_len, at_least) in [(1_400, 2_048), (11_500, 15_500)] {
        let minted = tg.mint_with(
            "ci-big",
            &["dev"],
            Duration::from_secs(60),
            Some("r".repeat(reason_len)),
        );
        assert!(minted.token.len() >= at_least, "{}", minted.token.len());
        assert!(minted.token.len() <= 16 * 1024);
        let client = tg
            .connect_tls("ci-big", &minted.token)
            .await
            .expect("big token");
        client.simple_query("SELECT 1").await.expect("query");
    }
    // Beyond 16 KiB the password message is refused before it is read.
    let huge = "x".repeat(20_000);
    let e = tg.connect_tls("ci-big", &huge).await.expect_err("huge");
    assert_eq!(sqlstate(&e), "08P01", "{}", message(&e));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_groups_drive_rules_and_masking() {
    let backend = Backend::shared();
    let table = format!("tok_people_{:08x}", rand::random::<u32>());
    backend.admin_sql(&format!(
        "CREATE TABLE {table} (id int, ssn text); INSERT INTO {table} VALUES (1, '123-45-6789');\
         ALTER TABLE {table} OWNER TO {}; GRANT SELECT, DELETE ON {table} TO {};",
        support::APP_ROLE,
        support::MASKED_ROLE
    ));
    let extra = format!(
        r#"[policy]
[[policy.rules]]
name = "auditors-read-only"
action = "deny"
groups = ["auditor"]
kinds = ["delete", "update", "insert"]

[masking]
refresh = "1h"
[[masking.rules]]
name = "ssn"
columns = ["{table}.ssn"]
strategy = "partial"
keep_last = 4
groups = ["auditor"]
"#
    );
    let tg = TokenGateway::start("", &extra).await;
    let auditor = tg.mint("ci-auditor", &["auditor"], Duration::from_secs(120));
    let ops = tg.mint("ci-ops", &["ops"], Duration::from_secs(120));
    let a = tg
        .connect_tls("ci-auditor", &auditor.token)
        .await
        .expect("auditor");
    let o = tg.connect_tls("ci-ops", &ops.token).await.expect("ops");
    // A token's groups map it to a role exactly as a configured user's do.
    for (client, role) in [(&a, support::MASKED_ROLE), (&o, support::APP_ROLE)] {
        let who = client
            .simple_query("SELECT current_user")
            .await
            .expect("who");
        assert_eq!(first_value(&who), role);
    }
    let select = format!("SELECT ssn FROM {table}");
    assert_eq!(
        first_value(&a.simple_query(&select).await.expect("q")),
        "*******6789"
    );
    assert_eq!(
        first_value(&o.simple_query(&select).await.expect("q")),
        "123-45-6789"
    );
    let delete = format!("DELETE FROM {table} WHERE id = 2");
    let e = a.simple_query(&delete).await.expect_err("denied");
    assert_eq!(sqlstate(&e), "42501");
    assert!(
        message(&e).contains("auditors-read-only"),
        "{}",
        message(&e)
    );
    o.simple_query(&delete).await.expect("ops may delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_by_reload_and_a_retired_key_is_refused() {
    let tg = TokenGateway::start("", "").await;
    let dir = Backend::shared().cluster.dir();
    let k2 = TestKey::new(dir, "k2");
    let old_token = tg.mint("ci-rot", &[], Duration::from_secs(300)).token;
    let live = tg
        .connect_tls("ci-rot", &old_token)
        .await
        .expect("k1 token");
    let k1_signing = tg.key.entry("signing");
    let mint_with = |text: &str| {
        let config = pgward::config::Config::parse(text, &dir.join("pgward.toml")).expect("config");
        let request = pgward::auth::token::mint::MintRequest {
            user: "ci-rot".into(),
            groups: vec![],
            databases: vec![support::DB.into()],
            ttl: Duration::from_secs(300),
            reason: None,
        };
        pgward::auth::token::mint::mint(&config, &request, std::time::SystemTime::now())
            .expect("mint")
    };
    // Step 1: k2 signs, k1 still verifies.
    let rotated = tg.pw.config_text.replace(
        &k1_signing,
        &format!("{}\n{}", tg.key.entry("verify"), k2.entry("signing")),
    );
    tg.pw.reload_text(&rotated).expect("reload");
    let new_token = mint_with(&rotated);
    assert_eq!(new_token.kid, "k2");
    tg.connect_tls("ci-rot", &new_token.token)
        .await
        .expect("k2 token");
    tg.connect_tls("ci-rot", &old_token)
        .await
        .expect("k1 token still");
    // Step 2: k1 retired: its tokens no longer log in; k2's do.
    let retired = rotated.replace(&tg.key.entry("verify"), &tg.key.entry("retired"));
    tg.pw.reload_text(&retired).expect("reload");
    tg.refused("ci-rot", &old_token, "signing key \"k1\" is retired")
        .await;
    tg.connect_tls("ci-rot", &new_token.token)
        .await
        .expect("k2 token");
    // A session opened before keeps its token's lifetime.
    live.simple_query("SELECT 1").await.expect("live session");
    // An invalid [tokens] is refused whole, and k2 keeps working.
    let broken = retired.replace("state = \"signing\"", "state = \"sometimes\"");
    assert!(tg.pw.reload_text(&broken).is_err());
    tg.connect_tls("ci-rot", &new_token.token)
        .await
        .expect("k2 token");
}

/// A phase that only notes the credential each session was opened with.
struct Witness;

impl pgward::session::phases::Phase for Witness {
    fn name(&self) -> &'static str {
        "witness"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phases_see_the_token_issuer_subject_and_jti() {
    use pgward::auth::identity::Credential;
    let tg = TokenGateway::start("", "").await;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = std::sync::Arc::clone(&seen);
    tg.pw.gateway.add_phase(std::sync::Arc::new(move |info| {
        record
            .lock()
            .expect("lock")
            .push((info.identity.user.clone(), info.credential.clone()));
        Box::new(Witness)
    }));
    let minted = tg.mint("ci-audited", &["dev"], Duration::from_secs(60));
    tg.connect_tls("ci-audited", &minted.token)
        .await
        .expect("token login");
    tg.pw.connect().await;
    let seen = seen.lock().expect("lock").clone();
    let token = seen
        .iter()
        .find_map(|(user, c)| match c {
            Credential::Token(t) if user == "ci-audited" => Some(t.clone()),
            _ => None,
        })
        .expect("the token session's credential");
    assert_eq!(token.issuer, support::tokens::ISSUER);
    assert_eq!(token.subject.as_deref(), Some("ci-audited"));
    assert_eq!(token.jti.as_deref(), Some(minted.jti.as_str()));
    assert_eq!(token.expires, minted.expires);
    assert!(seen
        .iter()
        .any(|(user, c)| user == USER && *c == Credential::Password));
}
