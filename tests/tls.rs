//! TLS on both legs: clients verify pgward's certificate (verify-full) and
//! bind SCRAM to the channel; pgward verifies PostgreSQL's certificate.

mod support;

use pgward::cluster::ClusterOptions;
use std::time::Duration;
use support::certs::TestPki;
use support::{connect_with, sqlstate, Backend, Pgward, PASSWORD, USER};
use tokio_postgres::config::{ChannelBinding, SslMode};
use tokio_postgres_rustls::MakeRustlsConnect;

fn tls_server_lines(pki: &TestPki, required: bool) -> String {
    format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\nrequire_client_tls = {required}",
        pki.cert_file.display(),
        pki.key_file.display()
    )
}

/// Upstream lines for verify-full against `localhost` with this CA.
fn verify_full_upstream(pki: &TestPki) -> String {
    format!(
        "sslmode = \"verify-full\"\nca_file = \"{}\"\nhost = \"localhost\"",
        pki.ca_file.display()
    )
}

async fn connect_tls(
    config: &tokio_postgres::Config,
    pki: &TestPki,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = config
        .connect(MakeRustlsConnect::new(pki.client_config()))
        .await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tls_verify_full_with_scram_plus() {
    let backend = Backend::shared();
    let pki = TestPki::new(backend.cluster.dir(), "client-leg");
    let config = backend.config(&tls_server_lines(&pki, true), "");
    let pw = Pgward::start_in(&config, backend.cluster.dir()).await;
    let mut config = pw.client_config(USER, PASSWORD);
    config
        .host("localhost")
        .ssl_mode(SslMode::Require)
        // Require SCRAM-SHA-256-PLUS: fails unless pgward binds the channel.
        .channel_binding(ChannelBinding::Require);
    let client = connect_tls(&config, &pki).await.expect("TLS + SCRAM-PLUS");
    let row = client.query_one("SELECT 6 * 7", &[]).await.expect("query");
    assert_eq!(row.get::<_, i32>(0), 42);
    // Wrong password over TLS is still 28P01.
    let mut bad = config.clone();
    bad.password("nope");
    let e = connect_tls(&bad, &pki).await.expect_err("wrong password");
    assert_eq!(sqlstate(&e), "28P01");
    // A client trusting another CA refuses pgward's certificate.
    let other = TestPki::new(backend.cluster.dir(), "other");
    assert!(connect_tls(&config, &other).await.is_err());
    // require_client_tls: a clear-text client is turned away with 28000.
    let e = connect_with(&pw.client_config(USER, PASSWORD))
        .await
        .expect_err("plain refused");
    assert_eq!(sqlstate(&e), "28000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_connects_with_sslmode_verify_full() {
    let backend = Backend::shared();
    let pki = TestPki::new(backend.cluster.dir(), "psql-leg");
    let config = backend.config(&tls_server_lines(&pki, false), "");
    let pw = Pgward::start_in(&config, backend.cluster.dir()).await;
    let dsn = format!(
        "host=localhost port={} user={USER} dbname={} sslmode=verify-full sslrootcert={} channel_binding=require",
        pw.addr.port(),
        support::DB,
        pki.ca_file.display()
    );
    let psql = backend.cluster.program("psql");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(psql)
            .env("PGPASSWORD", PASSWORD)
            .args(["-X", "-A", "-t", "-c", "SELECT 'over tls'"])
            .arg(&dsn)
            .output()
            .expect("psql")
    })
    .await
    .expect("task");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "over tls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_per_sslmode() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = TestPki::new(dir.path(), "backend-leg");
    let backend = Backend::start(&ClusterOptions {
        tls: Some((pki.cert_pem.clone(), pki.key_pem.clone())),
        extra_conf: vec![],
    });
    backend.cluster.psql("postgres", "SELECT 1").expect("up");
    let ssl_of_session = "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    for (upstream, expect_ssl) in [
        (verify_full_upstream(&pki), "true"),
        ("sslmode = \"require\"".to_owned(), "true"),
        ("sslmode = \"prefer\"".to_owned(), "true"),
        ("sslmode = \"disable\"".to_owned(), "false"),
    ] {
        let config = backend.config("", &upstream);
        let pw = Pgward::start_in(&config, backend.cluster.dir()).await;
        let client = pw.connect().await;
        let row = client.query_one(ssl_of_session, &[]).await.expect("query");
        assert_eq!(row.get::<_, String>(0), expect_ssl, "{upstream}");
    }
    // verify-full against a CA that did not sign the server: refused, and
    // the client learns only that the upstream is unavailable.
    let other = TestPki::new(dir.path(), "impostor");
    let config = backend.config("", &verify_full_upstream(&other));
    let pw = Pgward::start_in(&config, backend.cluster.dir()).await;
    let e = tokio::time::timeout(
        Duration::from_secs(20),
        connect_with(&pw.client_config(USER, PASSWORD)),
    )
    .await
    .expect("answer in time")
    .expect_err("untrusted backend");
    assert_eq!(sqlstate(&e), "08001");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_channel_binding_with_a_sha384_certificate() {
    // tls-server-end-point hashes with the certificate's own hash: a wrong
    // choice makes PostgreSQL reject the SCRAM-SHA-256-PLUS login.
    let dir = tempfile::tempdir().expect("dir");
    let pki = TestPki::with_algorithm(dir.path(), "p384", &rcgen::PKCS_ECDSA_P384_SHA384);
    let backend = Backend::start(&ClusterOptions {
        tls: Some((pki.cert_pem.clone(), pki.key_pem.clone())),
        extra_conf: vec![],
    });
    let config = backend.config("", &verify_full_upstream(&pki));
    let pw = Pgward::start_in(&config, backend.cluster.dir()).await;
    let client = pw.connect().await;
    let row = client
        .query_one(
            "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("query");
    assert_eq!(row.get::<_, String>(0), "true");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_inside_tls_is_closed_with_close_notify() {
    // libpq 17's cancel API and psycopg's cancel_safe() send the
    // CancelRequest inside TLS and read until the connection closes: a
    // close without close_notify is "SSL error: unexpected eof".
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = Backend::shared();
    let pki = TestPki::new(backend.cluster.dir(), "cancel-leg");
    let config = backend.config(&tls_server_lines(&pki, false), "");
    let pw = Pgward::start_in(&config, backend.cluster.dir()).await;
    // The session itself in clear text; only the cancel goes over TLS.
    let (mut raw, hello) =
        support::raw::RawClient::login(pw.addr, USER, PASSWORD, support::DB).await;
    let k = hello.iter().find(|m| m.tag == b'K').expect("key");
    let key = (
        i32::from_be_bytes([k.body[0], k.body[1], k.body[2], k.body[3]]),
        i32::from_be_bytes([k.body[4], k.body[5], k.body[6], k.body[7]]),
    );
    raw.send(&support::raw::message(b'Q', b"SELECT pg_sleep(30)\0"))
        .await;
    for _ in 0..500 {
        let active = backend.admin_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'",
        );
        if active.trim() != "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let tcp = tokio::net::TcpStream::connect(pw.addr).await.unwrap();
    let mut tcp = tcp;
    tcp.write_all(&[0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f])
        .await
        .unwrap();
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"S");
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(pki.client_config()));
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let mut packet = Vec::new();
    packet.extend_from_slice(&16i32.to_be_bytes());
    packet.extend_from_slice(&80_877_102i32.to_be_bytes());
    packet.extend_from_slice(&key.0.to_be_bytes());
    packet.extend_from_slice(&key.1.to_be_bytes());
    tls.write_all(&packet).await.unwrap();
    tls.flush().await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut rest))
        .await
        .expect("pgward closes the cancel connection");
    assert!(closed.is_ok(), "closed without close_notify: {closed:?}");
    let reply = raw.until_ready().await;
    let err = support::raw::error_of(&reply).expect("cancelled");
    assert_eq!(err.sqlstate(), "57014");
}
