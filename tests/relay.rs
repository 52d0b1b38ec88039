//! What applications do through pgward, with tokio-postgres against a real
//! PostgreSQL 15: simple and extended queries, binary formats, COPY,
//! LISTEN / NOTIFY, notices, transactions, errors and cancellation.

mod support;

use futures::{SinkExt, TryStreamExt};
use support::{sqlstate, Backend, Pgward};
use tokio_postgres::types::Type;
use tokio_postgres::{AsyncMessage, SimpleQueryMessage};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_query_with_several_statements() {
    let pw = Pgward::start(Backend::shared()).await;
    let client = pw.connect().await;
    let msgs = client
        .simple_query("SELECT 1 AS a; SELECT 'two' AS b, NULL AS c; SET application_name = 'x'")
        .await
        .expect("multi-statement string");
    let rows: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get(0), Some("1"));
    assert_eq!(rows[1].get("b"), Some("two"));
    assert_eq!(rows[1].get("c"), None);
    let completes = msgs
        .iter()
        .filter(|m| matches!(m, SimpleQueryMessage::CommandComplete(_)))
        .count();
    assert_eq!(completes, 3);
    // The empty query and a comment-only string answer EmptyQueryResponse.
    client.simple_query("").await.expect("empty query");
    client
        .simple_query("-- nothing")
        .await
        .expect("comment only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_binary_parameters_and_results() {
    let pw = Pgward::start(Backend::shared()).await;
    let client = pw.connect().await;
    let stmt = client
        .prepare_typed(
            "SELECT $1::int8 * 2, $2::text || '!', $3::bytea, $4::float8, $5::bool, $6::int4[]",
            &[
                Type::INT8,
                Type::TEXT,
                Type::BYTEA,
                Type::FLOAT8,
                Type::BOOL,
            ],
        )
        .await
        .expect("prepare");
    let bytes: Vec<u8> = (0..=255u8).collect();
    let array = vec![1i32, -2, 3];
    let row = client
        .query_one(&stmt, &[&21i64, &"hi", &bytes, &2.5f64, &true, &array])
        .await
        .expect("execute");
    assert_eq!(row.get::<_, i64>(0), 42);
    assert_eq!(row.get::<_, String>(1), "hi!");
    assert_eq!(row.get::<_, Vec<u8>>(2), bytes);
    assert_eq!(row.get::<_, f64>(3), 2.5);
    assert!(row.get::<_, bool>(4));
    assert_eq!(row.get::<_, Vec<i32>>(5), array);
    // The same prepared statement, many times (Bind / Execute reuse).
    for i in 0..50i64 {
        let row = client
            .query_one(&stmt, &[&i, &"x", &bytes, &0.0f64, &false, &array])
            .await
            .expect("re-execute");
        assert_eq!(row.get::<_, i64>(0), i * 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_extended_queries_come_back_in_order() {
    let pw = Pgward::start(Backend::shared()).await;
    let client = pw.connect().await;
    let stmt = client
        .prepare("SELECT $1::int4 + 1")
        .await
        .expect("prepare");
    // tokio-postgres pipelines concurrent requests on one connection: many
    // Bind/Execute/Sync groups are in flight before the first answer.
    let futures = (0..200i32).map(|i| {
        let client = &client;
        let stmt = &stmt;
        async move {
            client
                .query_one(stmt, &[&i])
                .await
                .map(|r| r.get::<_, i32>(0))
        }
    });
    let results = futures::future::try_join_all(futures)
        .await
        .expect("pipeline");
    assert_eq!(results, (1..=200).collect::<Vec<i32>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_leave_the_session_usable_and_transactions_behave() {
    let backend = Backend::shared();
    let pw = Pgward::start(backend).await;
    let mut client = pw.connect().await;
    let e = client
        .simple_query("SELEC 1")
        .await
        .expect_err("syntax error");
    assert_eq!(sqlstate(&e), "42601");
    let e = client.query("SELECT 1/0", &[]).await.expect_err("division");
    assert_eq!(sqlstate(&e), "22012");
    client
        .batch_execute("CREATE TEMP TABLE t (id int PRIMARY KEY)")
        .await
        .expect("create");
    // An error inside a transaction aborts it until ROLLBACK.
    client
        .batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .expect("begin");
    let e = client
        .batch_execute("INSERT INTO t VALUES (1)")
        .await
        .expect_err("dup");
    assert_eq!(sqlstate(&e), "23505");
    let e = client.batch_execute("SELECT 1").await.expect_err("aborted");
    assert_eq!(sqlstate(&e), "25P02");
    client.batch_execute("ROLLBACK").await.expect("rollback");
    let n: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0);
    // A committed transaction through the typed API.
    let tx = client.transaction().await.expect("tx");
    tx.execute("INSERT INTO t VALUES (7)", &[])
        .await
        .expect("insert");
    tx.commit().await.expect("commit");
    let n: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out() {
    let pw = Pgward::start(Backend::shared()).await;
    let client = pw.connect().await;
    client
        .batch_execute("CREATE TEMP TABLE c (id int, name text)")
        .await
        .expect("create");
    let sink = client.copy_in("COPY c FROM STDIN").await.expect("copy in");
    futures::pin_mut!(sink);
    let mut data = String::new();
    for i in 0..20_000 {
        data.push_str(&format!("{i}\tname {i}\n"));
    }
    for chunk in data.as_bytes().chunks(7_000) {
        sink.send(bytes::Bytes::copy_from_slice(chunk))
            .await
            .expect("send");
    }
    let n = sink.finish().await.expect("finish");
    assert_eq!(n, 20_000);
    let stream = client
        .copy_out("COPY (SELECT * FROM c ORDER BY id) TO STDOUT")
        .await
        .expect("copy out");
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.expect("read copy");
    let out: Vec<u8> = chunks.concat();
    assert_eq!(String::from_utf8(out).expect("utf8"), data);
    // A failing COPY FROM STDIN (bad data) keeps the session usable.
    let sink = client.copy_in("COPY c FROM STDIN").await.expect("copy in");
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"not-a-number\tx\n"))
        .await
        .expect("send");
    let e = sink.finish().await.expect_err("bad row");
    assert_eq!(sqlstate(&e), "22P02");
    client.simple_query("SELECT 1").await.expect("still usable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_and_notices_reach_the_client() {
    let pw = Pgward::start(Backend::shared()).await;
    let (client, mut rx) =
        support::connect_with_messages(&pw.client_config(support::USER, support::PASSWORD)).await;
    client.batch_execute("LISTEN ch").await.expect("listen");
    let other = pw.connect().await;
    other
        .batch_execute("NOTIFY ch, 'hello'")
        .await
        .expect("notify");
    client
        .batch_execute(
            "CREATE FUNCTION pg_temp.noisy() RETURNS void LANGUAGE plpgsql \
             AS $$ BEGIN RAISE NOTICE 'careful: %', 42; END $$; SELECT pg_temp.noisy()",
        )
        .await
        .expect("notice");
    let mut got_notify = false;
    let mut got_notice = false;
    while !(got_notify && got_notice) {
        let m = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
            .await
            .expect("async message in time")
            .expect("channel open");
        match m {
            AsyncMessage::Notification(n) => {
                assert_eq!((n.channel(), n.payload()), ("ch", "hello"));
                got_notify = true;
            }
            AsyncMessage::Notice(n) => {
                assert_eq!(n.message(), "careful: 42");
                got_notice = true;
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_token_reaches_the_right_backend() {
    let pw = Pgward::start(Backend::shared()).await;
    let client = pw.connect().await;
    let bystander = pw.connect().await;
    let token = client.cancel_token();
    let slow = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("send cancel");
    let result = tokio::time::timeout(std::time::Duration::from_secs(10), slow)
        .await
        .expect("cancel took effect")
        .expect("task");
    let e = result.expect_err("query cancelled");
    assert_eq!(sqlstate(&e), "57014");
    // Only the targeted session was cancelled.
    bystander
        .simple_query("SELECT 1")
        .await
        .expect("bystander fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_never_sees_the_backend_key_or_password() {
    let backend = Backend::shared();
    let pw = Pgward::start(backend).await;
    let (mut raw, hello) =
        support::raw::RawClient::login(pw.addr, support::USER, support::PASSWORD, support::DB)
            .await;
    let key = hello
        .iter()
        .find(|m| m.tag == b'K')
        .expect("BackendKeyData");
    let pid = i32::from_be_bytes([key.body[0], key.body[1], key.body[2], key.body[3]]);
    let reply = raw.simple("SELECT pg_backend_pid()").await;
    let row = reply.iter().find(|m| m.tag == b'D').expect("row");
    let real_pid: i32 = String::from_utf8_lossy(&row.body[6..])
        .parse()
        .expect("pid");
    // The server's real process id (pg_backend_pid, NOTIFY pids and the key
    // agree), with a secret of pgward's own.
    assert_eq!(pid, real_pid, "the client sees the backend's process id");
    let secret = &key.body[4..8];
    let needle = backend.app_password.as_bytes();
    let _ = secret;
    let all: Vec<u8> = hello.iter().flat_map(|m| m.body.to_vec()).collect();
    assert!(!all.windows(needle.len()).any(|w| w == needle));
    // The client logs in as alice; the backend session is the held role.
    let reply = raw.simple("SELECT current_user").await;
    let row = reply.iter().find(|m| m.tag == b'D').expect("row");
    assert!(row.body.ends_with(b"app"));
}
