//! The client against local listeners that answer in pieces, too much,
//! or never.

use super::*;
use tokio::net::TcpListener;

/// A listener that reads one request and answers with `parts`, flushed one
/// at a time; returns its URL and the request it read.
async fn server(parts: Vec<&'static [u8]>) -> (Url, tokio::task::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        for p in parts {
            s.write_all(p).await.expect("write");
            s.flush().await.expect("flush");
            tokio::task::yield_now().await;
        }
        // Keep the connection open: a complete response must not need the
        // close to be recognised.
        let _ = s.read(&mut buf).await;
        request
    });
    let url = Url::parse(&format!("http://127.0.0.1:{port}/hook?x=1")).expect("url");
    (url, task)
}

fn client() -> Client {
    Client::new(None, Duration::from_secs(10), 4096).expect("client")
}

#[tokio::test]
async fn posts_json_and_reads_a_chunked_answer_in_pieces() {
    let (url, task) = server(vec![
        b"HTTP/1.1 200 OK\r\nTransfer-",
        b"Encoding: chunked\r\n\r\n2\r\nok\r",
        b"\n0\r\n\r\n",
    ])
    .await;
    let response = client()
        .send(&Request {
            method: "POST",
            url: &url,
            headers: &[("Authorization", "Bearer abc")],
            json: Some(b"{\"a\":1}"),
        })
        .await
        .expect("response");
    assert_eq!(
        (response.status, response.body.as_slice()),
        (200, &b"ok"[..])
    );
    let request = String::from_utf8(task.await.expect("server")).expect("utf8");
    assert!(
        request.starts_with("POST /hook?x=1 HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(
        request.contains("\r\nAuthorization: Bearer abc\r\n"),
        "{request}"
    );
    assert!(request.contains("\r\nContent-Length: 7\r\n"), "{request}");
}

#[tokio::test]
async fn a_response_over_the_limit_is_refused() {
    static BIG: [u8; 8192] = [b'a'; 8192];
    let (url, _task) = server(vec![
        b"HTTP/1.1 200 OK\r\nContent-Length: 8192\r\n\r\n",
        &BIG,
    ])
    .await;
    let err = client().get(&url).await.expect_err("too large");
    assert!(matches!(err, HttpError::TooLarge(4096)), "{err}");
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let (url, _task) = server(vec![b"HTTP/1.1 200 OK\r\n"]).await;
    let c = Client::new(None, Duration::from_millis(200), 4096).expect("client");
    let err = c.get(&url).await.expect_err("timeout");
    assert!(matches!(err, HttpError::Timeout(_)), "{err}");
}

#[tokio::test]
async fn a_non_2xx_get_is_an_error_and_send_returns_it() {
    let (url, _task) = server(vec![b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy"]).await;
    let err = client().get(&url).await.expect_err("503");
    assert!(err.to_string().contains("503"), "{err}");
}

#[test]
fn headers_that_would_smuggle_lines_are_refused() {
    let url = Url::parse("http://127.0.0.1/").expect("url");
    for headers in [
        &[("X", "a\r\nInjected: 1")][..],
        &[("X\r\nY", "a")],
        &[("X:Y", "a")],
        &[("", "a")],
    ] {
        let req = Request {
            method: "GET",
            url: &url,
            headers,
            json: None,
        };
        assert!(request_head(&req).is_err(), "{headers:?}");
    }
    let req = Request {
        method: "get x",
        url: &url,
        headers: &[],
        json: None,
    };
    assert!(request_head(&req).is_err());
}
