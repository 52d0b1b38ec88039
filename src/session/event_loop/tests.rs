use super::*;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A connected pair: the loop's end (a tokio stream, to attach) and the
/// peer's.
async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = TcpStream::connect(listener.local_addr().unwrap());
    let (ours, peer) = tokio::join!(listener.accept(), peer);
    (ours.unwrap().0, peer.unwrap())
}

fn start() -> EventLoop {
    EventLoop::start("test-relay".into(), tokio::runtime::Handle::current()).unwrap()
}

fn handle(l: &EventLoop) -> LoopRef {
    LoopRef(Arc::clone(&l.shared))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_on_the_loop_moves_bytes_both_ways_and_closes_its_socket() {
    let relay_loop = start();
    let (ours, mut peer) = pair().await;
    let (mut r, mut w) = handle(&relay_loop).attach(ours).unwrap();
    // Echoes until end of stream, in small reads so writes outnumber them.
    let echo = handle(&relay_loop).spawn(async move {
        let mut total = 0;
        let mut buf = [0u8; 3000];
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                return total;
            }
            w.write_all(&buf[..n]).await.unwrap();
            total += n;
        }
    });
    // More than the socket buffers hold: writes must wait for room.
    let sent: Vec<u8> = (0..8 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let (mut peer_r, mut peer_w) = peer.split();
    let write = async {
        peer_w.write_all(&sent).await.unwrap();
        peer_w.shutdown().await.unwrap();
    };
    let mut back = Vec::new();
    let read = peer_r.read_to_end(&mut back);
    let ((), got) = tokio::join!(write, read);
    // The task ended at end of stream, and dropping its halves closed the
    // socket (the peer saw end of stream after the echo).
    assert_eq!(got.unwrap(), sent.len());
    assert!(back == sent, "the echo differs from what was sent");
    assert_eq!(echo.await.unwrap(), sent.len());
}

/// On a current-thread runtime, as on a session thread: the loop's timers
/// are that runtime's, which must wake from its park for them.
#[tokio::test]
async fn wakes_from_other_threads_and_timers_reach_a_task() {
    let relay_loop = start();
    let (tx, rx) = oneshot::channel::<u32>();
    let task = handle(&relay_loop).spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        rx.await.unwrap() + 1
    });
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(40));
        tx.send(41).unwrap();
    });
    assert_eq!(task.await.unwrap(), 42);
}

/// Counts its drops.
struct Dropped(Arc<AtomicUsize>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

async fn until(what: impl Fn() -> bool) {
    for _ in 0..2000 {
        if what() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the loop never got there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_joined_drops_the_task_and_closes_its_socket() {
    let relay_loop = start();
    let drops = Arc::new(AtomicUsize::new(0));
    let (ours, mut peer) = pair().await;
    let (mut r, w) = handle(&relay_loop).attach(ours).unwrap();
    let guard = Dropped(Arc::clone(&drops));
    let task = handle(&relay_loop).spawn(async move {
        let _guard = (guard, w);
        let mut b = [0u8; 1];
        let _ = r.read(&mut b).await;
    });
    tokio::task::yield_now().await;
    drop(task);
    until(|| drops.load(Ordering::SeqCst) == 1).await;
    // Its socket was closed with it: the peer reads end of stream.
    let mut b = [0u8; 1];
    assert_eq!(peer.read(&mut b).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_task_ends_alone() {
    let relay_loop = start();
    let bad = handle(&relay_loop).spawn(async {
        if std::hint::black_box(true) {
            panic!("a session's bug");
        }
    });
    assert!(bad.await.is_err());
    let good = handle(&relay_loop).spawn(async { 7 });
    assert_eq!(good.await.unwrap(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_loop_drops_its_tasks_and_refuses_new_ones() {
    let relay_loop = start();
    let on_it = handle(&relay_loop);
    let (_tx, rx) = oneshot::channel::<()>();
    let waiting = on_it.spawn(async move {
        let _ = rx.await;
    });
    tokio::task::spawn_blocking(move || drop(relay_loop))
        .await
        .unwrap();
    assert!(waiting.await.is_err(), "a task outlived its loop");
    assert!(on_it.spawn(async { 1 }).await.is_err());
}

/// Counts the polls of the future it wraps.
struct Counted<F> {
    future: Pin<Box<F>>,
    polls: Arc<AtomicUsize>,
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        self.future.as_mut().poll(cx)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sessions_each_wake_only_their_own_task() {
    let relay_loop = start();
    let mut peers = Vec::new();
    let mut tasks = Vec::new();
    let mut polls = Vec::new();
    for _ in 0..20 {
        let (ours, peer) = pair().await;
        let (mut r, mut w) = handle(&relay_loop).attach(ours).unwrap();
        peers.push(peer);
        let count = Arc::new(AtomicUsize::new(0));
        polls.push(Arc::clone(&count));
        let echo = async move {
            let mut b = [0u8; 64];
            let mut rounds = 0;
            loop {
                let n = r.read(&mut b).await.unwrap();
                if n == 0 {
                    return rounds;
                }
                w.write_all(&b[..n]).await.unwrap();
                rounds += 1;
            }
        };
        tasks.push(handle(&relay_loop).spawn(Counted {
            future: Box::pin(echo),
            polls: count,
        }));
    }
    until(|| polls.iter().all(|p| p.load(Ordering::SeqCst) >= 1)).await;
    // One peer talks: only its task is polled, once per message.
    let before: Vec<usize> = polls.iter().map(|p| p.load(Ordering::SeqCst)).collect();
    for i in 0..50u8 {
        peers[3].write_all(&[i]).await.unwrap();
        let mut b = [0u8; 1];
        peers[3].read_exact(&mut b).await.unwrap();
        assert_eq!(b[0], i);
    }
    for (i, (p, before)) in polls.iter().zip(before).enumerate() {
        let polled = p.load(Ordering::SeqCst) - before;
        if i == 3 {
            // Once per message (an event may rarely report bytes that a
            // read already took as it came).
            assert!(
                (50..=60).contains(&polled),
                "the talking session's task: {polled}"
            );
        } else {
            assert_eq!(polled, 0, "session {i} was polled without an event");
        }
    }
    drop(peers);
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap(), if i == 3 { 50 } else { 0 });
    }
}

/// The peer's last bytes and its end of stream come in one event, handled
/// while the task waits on something else: the short read that takes the
/// bytes must not hide the end that follows them (no edge comes again).
#[tokio::test]
async fn an_end_of_stream_after_a_short_read_is_seen() {
    let relay_loop = start();
    let (ours, mut peer) = pair().await;
    let (mut r, w) = handle(&relay_loop).attach(ours).unwrap();
    let (go, wait) = oneshot::channel::<()>();
    let task = handle(&relay_loop).spawn(async move {
        let _w = w;
        wait.await.unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 4096];
        loop {
            match r.read(&mut b).await.unwrap() {
                0 => return got,
                n => got.extend_from_slice(&b[..n]),
            }
        }
    });
    peer.write_all(b"last words").await.unwrap();
    peer.shutdown().await.unwrap();
    // Let the loop take the event before the task reads.
    tokio::time::sleep(Duration::from_millis(50)).await;
    go.send(()).unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the end of stream was never seen")
        .unwrap();
    assert_eq!(got, b"last words");
}
