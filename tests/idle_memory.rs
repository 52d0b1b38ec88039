//! Heap memory an idle session holds: a logged-in session that ran one
//! query and now waits keeps its protocol state and sockets, not its
//! buffers (issue 14, item 8: at most 8 KiB of resident memory per idle
//! client/backend pair, which the load harness measures).
//!
//! Alone in its own test binary: a counting allocator sees every heap
//! allocation of the process, pgward's (in-process) and the test's. The
//! test's clients keep only bare sockets, so what the count grows by while
//! sessions are opened is what pgward holds for them.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use support::raw::RawClient;
use support::{Backend, Pgward, DB, PASSWORD, USER};

/// Bytes currently allocated on the heap by the whole process.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: every call is passed to `System` unchanged; the counter only adds
// and subtracts the sizes of what `System` handed out and got back.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Heap bytes an idle session relayed on tokio's runtime may hold, at most.
/// What it holds (the session task, the relay, the phases, the registry
/// entry, tokio's per-socket state) is listed in docs/performance.md: about
/// 4.5 KiB in a debug build (whose futures are larger than an optimised
/// build's; the relay's own future is a box beside the session task). A
/// buffer kept while idle (the 1 KiB a read buffer starts at, say) exceeds
/// it.
const BUDGET: isize = 5 * 1024;
/// The same on a relay loop: its task beside the session's tokio task (the
/// task's cell and output channel, its slot) and the loop's socket states
/// cost about 0.8 KiB more than tokio's per-socket state (5.3 KiB in a debug
/// build), and a 1 KiB buffer kept while idle still exceeds this.
const LOOP_BUDGET: isize = 5 * 1024 + 640;

/// Logs in, runs one query, and keeps only the socket.
async fn idle_session(pw: &Pgward) -> std::net::TcpStream {
    let (mut client, _) = RawClient::login(pw.addr, USER, PASSWORD, DB).await;
    let reply = client.simple("SELECT 1").await;
    assert!(reply.iter().any(|m| m.tag == b'D'), "{reply:?}");
    client.into_std()
}

/// Heap bytes per idle session on a server with these `[server]` lines.
async fn heap_per_idle_session(server: &str) -> isize {
    let backend = Backend::shared();
    // The built-in rules on (the default): every query is judged.
    let pw = Pgward::start_in(&backend.config(server, ""), backend.cluster.dir()).await;
    // Warm-up: what the first sessions build once (the salted password,
    // the rules' caches, the runtime's own tables) is not per session.
    const WARM: usize = 20;
    const MEASURED: usize = 150;
    let mut held = Vec::with_capacity(WARM + MEASURED);
    for _ in 0..WARM {
        held.push(idle_session(&pw).await);
    }
    let before = LIVE.load(Ordering::Relaxed);
    for _ in 0..MEASURED {
        held.push(idle_session(&pw).await);
    }
    // Every session has answered its query and waits.
    let after = LIVE.load(Ordering::Relaxed);
    assert_eq!(pw.gateway.registry.list().len(), WARM + MEASURED);
    drop(held);
    pw.shutdown().await;
    (after - before) / MEASURED as isize
}

/// Both relays, one after the other (the count is the whole process's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_holds_no_buffers() {
    let mut measured = Vec::new();
    for (relay, server, budget) in [
        ("the relay loop", "", LOOP_BUDGET),
        ("the runtime", "relay = \"runtime\"", BUDGET),
    ] {
        let per_session = heap_per_idle_session(server).await;
        eprintln!("heap per idle session relayed on {relay}: {per_session} bytes");
        measured.push((relay, per_session, budget));
    }
    for (relay, per_session, budget) in measured {
        assert!(
            per_session <= budget,
            "an idle session relayed on {relay} holds {per_session} heap bytes (budget {budget})"
        );
    }
}
