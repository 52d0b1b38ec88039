//! Headless Chromium driven over the Chrome DevTools protocol: the browser
//! is started with a fresh profile and `--remote-debugging-port=0`, its
//! port read from `DevToolsActivePort`, and CDP spoken over a small
//! WebSocket client (RFC 6455: masked text frames out; text, continuation,
//! ping and close in).

use base64::Engine;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where Chromium is: `PGWARD_CHROMIUM`, or the first of the usual names
/// on `PATH`.
pub fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PGWARD_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser", "google-chrome", "chrome"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// A running headless browser; killed when dropped.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    ws: WebSocket,
    next_id: u64,
    /// The page's flattened CDP session.
    session: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Starts `chromium` and opens one blank page.
    pub async fn start(chromium: &std::path::Path) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let child = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        // Chromium writes the port it chose, then the browser's path.
        let file = profile.path().join("DevToolsActivePort");
        let started = Instant::now();
        let text = loop {
            if let Ok(t) = std::fs::read_to_string(&file) {
                if t.lines().count() >= 2 {
                    break t;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "chromium did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let mut lines = text.lines();
        let port: u16 = lines.next().expect("port").trim().parse().expect("port");
        let path = lines.next().expect("path").trim().to_owned();
        let ws = WebSocket::connect(port, &path).await;
        let mut browser = Browser {
            child,
            _profile: profile,
            ws,
            next_id: 0,
            session: String::new(),
        };
        let target = browser
            .call(None, "Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let target_id = target["targetId"].as_str().expect("targetId").to_owned();
        let attached = browser
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .await;
        browser.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_owned();
        browser
    }

    /// Sends `method` (to the page unless `session` is `None` and no page
    /// is attached yet) and returns its result; events are skipped.
    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            message["sessionId"] = json!(s);
        }
        self.ws.send_text(&message.to_string()).await;
        loop {
            let text = self.ws.read_text().await;
            let v: Value = serde_json::from_str(&text).expect("CDP JSON");
            if v["id"] == json!(id) {
                if let Some(e) = v.get("error") {
                    panic!("{method}: {e}");
                }
                return v["result"].clone();
            }
        }
    }

    /// A page command.
    pub async fn page(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.call(Some(&session), method, params).await
    }

    /// Sends `Authorization: Basic` with every request of the page.
    pub async fn login(&mut self, user: &str, password: &str) {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.page("Network.enable", json!({})).await;
        self.page(
            "Network.setExtraHTTPHeaders",
            json!({ "headers": { "Authorization": format!("Basic {auth}") } }),
        )
        .await;
    }

    /// Loads `url`.
    pub async fn navigate(&mut self, url: &str) {
        self.page("Page.enable", json!({})).await;
        let r = self.page("Page.navigate", json!({ "url": url })).await;
        assert!(r.get("errorText").is_none(), "navigate: {r}");
    }

    /// Evaluates `expression` in the page; its value.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .page(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expression}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Polls until `expression` is true (the page loads and updates
    /// asynchronously: until then it may also throw).
    pub async fn wait_for(&mut self, expression: &str, what: &str) {
        let started = Instant::now();
        let check = format!(
            "(() => {{ try {{ return Boolean({expression}); }} catch (e) {{ return false; }} }})()"
        );
        while self.eval(&check).await != json!(true) {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the page never showed {what}; it shows:\n{}",
                self.eval("document.body ? document.body.innerText : ''")
                    .await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clicks the element `selector` with the mouse, as a person would.
    pub async fn click(&mut self, selector: &str) {
        let rect = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({sel}); e.scrollIntoView(); \
                 const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
                sel = json!(selector)
            ))
            .await;
        let (x, y) = (rect[0].as_f64().expect("x"), rect[1].as_f64().expect("y"));
        for kind in ["mousePressed", "mouseReleased"] {
            self.page(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            )
            .await;
        }
    }

    /// Types `text` into the focused element.
    pub async fn type_text(&mut self, text: &str) {
        self.page("Input.insertText", json!({ "text": text })).await;
    }
}

/// A client WebSocket over plain TCP (the DevTools endpoint is local).
struct WebSocket {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl WebSocket {
    async fn connect(port: u16, path: &str) -> WebSocket {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to DevTools");
        let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .expect("handshake");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            let n = stream.read(&mut chunk).await.expect("handshake answer");
            assert!(n > 0, "DevTools closed the handshake");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        WebSocket {
            stream,
            buf: buf[end..].to_vec(),
        }
    }

    async fn send_text(&mut self, text: &str) {
        let payload = text.as_bytes();
        let mut frame = vec![0x81u8];
        match payload.len() {
            n @ 0..=125 => frame.push(0x80 | n as u8),
            n @ 126..=65535 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask: [u8; 4] = rand::random();
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).await.expect("send frame");
    }

    async fn fill(&mut self, n: usize) {
        let mut chunk = [0u8; 16384];
        while self.buf.len() < n {
            let got = self.stream.read(&mut chunk).await.expect("read frame");
            assert!(got > 0, "DevTools closed the connection");
            self.buf.extend_from_slice(&chunk[..got]);
        }
    }

    /// The next whole text message (fragments joined; pings answered).
    async fn read_text(&mut self) -> String {
        let mut message = Vec::new();
        loop {
            self.fill(2).await;
            let (b0, b1) = (self.buf[0], self.buf[1]);
            let (mut at, mut len) = (2usize, (b1 & 0x7f) as usize);
            if len == 126 {
                self.fill(4).await;
                len = u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize;
                at = 4;
            } else if len == 127 {
                self.fill(10).await;
                len = u64::from_be_bytes(self.buf[2..10].try_into().expect("8 bytes")) as usize;
                at = 10;
            }
            assert_eq!(b1 & 0x80, 0, "a server frame must not be masked");
            self.fill(at + len).await;
            let payload: Vec<u8> = self.buf[at..at + len].to_vec();
            self.buf.drain(..at + len);
            match b0 & 0x0f {
                0x1 | 0x0 => {
                    message.extend_from_slice(&payload);
                    if b0 & 0x80 != 0 {
                        return String::from_utf8(message).expect("UTF-8 text");
                    }
                }
                0x9 => {
                    // Ping: answer with a pong carrying the same payload.
                    let mask: [u8; 4] = rand::random();
                    let mut pong = vec![0x8a, 0x80 | payload.len() as u8];
                    pong.extend_from_slice(&mask);
                    pong.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
                    self.stream.write_all(&pong).await.expect("pong");
                }
                0x8 => panic!("DevTools closed the WebSocket"),
                _ => {}
            }
        }
    }
}
