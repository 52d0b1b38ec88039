//! An event loop of pgward's own that relays plain-TCP sessions.
//!
//! Each session thread (one current-thread tokio runtime per core) starts
//! one loop thread beside it. Logins, TLS sessions and everything else stay
//! on tokio; a session whose two legs are plain TCP moves its relay here
//! once it is logged in: its sockets leave tokio's reactor for this loop's
//! epoll, and its relay future (the same `Relay::run`) is polled by this
//! loop instead of tokio's scheduler.
//!
//! Why: per transaction the relay makes four socket calls, and on tokio
//! each costs a trip through the reactor's readiness (a tick, a lock around
//! the waiters, a waker kept per poll), a task wake-up through the
//! scheduler and a park that consults the timer wheel: more instructions
//! than PgBouncer spends on its whole transaction. Here a wake-up is one
//! `epoll_wait` for many sessions, a readiness flag per socket, and a poll
//! of exactly the sessions that can progress (`docs/performance.md`).
//!
//! What the relay waits on besides its sockets (the session registry's
//! controls, a held statement's decision, its timers) keeps working: those
//! wake the task through its waker from any thread (a queue and an eventfd),
//! and the loop thread enters the session thread's tokio runtime, so timers
//! and spawned tasks run there.
//!
//! Safety of the epoll tokens: a socket's token is a strong reference to
//! its state, released only at the top of a turn (before the next wait),
//! after the socket was taken out of the epoll; so no event the loop
//! handles can name freed state.

mod kept_waker;
mod socket;
mod sys;

pub(crate) use socket::{LoopRead, LoopWrite};

use socket::SocketState;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use tokio::sync::oneshot;

/// The wake-up eventfd's token (a socket's is a non-null pointer).
const WAKE_TOKEN: u64 = 0;
/// Events taken per wait.
const EVENTS: usize = 256;
/// Task polls per turn before the loop looks at its sockets again.
const POLLS_PER_TURN: usize = 1024;
/// A task's key before the loop has taken it.
const UNKEYED: u64 = u64::MAX;

type BoxedTask = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What a loop shares with the threads that hand it work.
pub(crate) struct Shared {
    epoll: sys::Epoll,
    wake: sys::WakeFd,
    remote: Mutex<Remote>,
    /// An eventfd write is on its way: later wakes need not write.
    notified: AtomicBool,
}

/// Work handed to the loop from other threads.
#[derive(Default)]
struct Remote {
    woken: Vec<u64>,
    spawned: Vec<(BoxedTask, Arc<TaskCell>)>,
    retired: Vec<Arc<SocketState>>,
    stop: bool,
    /// The loop thread has ended: nothing handles events any more.
    exited: bool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Remote> {
        self.remote.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the loop (from another thread).
    fn notify(&self) {
        if !self.notified.swap(true, Ordering::AcqRel) {
            self.wake.wake();
        }
    }

    /// Whether this thread is this loop's.
    fn is_current(&self) -> bool {
        LOCAL.with(|l| std::ptr::eq(l.shared.get(), self))
    }

    fn schedule(&self, key: u64) {
        // One look at the thread's state: whether it is this loop's, and
        // then its queue (a wake on the loop's own thread is the rule).
        let queued = LOCAL.with(|l| {
            let here = std::ptr::eq(l.shared.get(), self);
            if here {
                l.queue.borrow_mut().push_back(key);
            }
            here
        });
        if !queued {
            self.lock().woken.push(key);
            self.notify();
        }
    }

    /// A socket left the epoll: its token's reference is released at the
    /// top of the loop's next turn.
    fn retire(&self, state: Arc<SocketState>) {
        if self.is_current() {
            LOCAL.with(|l| l.retired.borrow_mut().push(state));
            return;
        }
        let mut remote = self.lock();
        if remote.exited {
            drop(remote);
            release_retired(vec![state]);
        } else {
            remote.retired.push(state);
        }
    }
}

/// The loop thread's own state, reachable from wakers and socket drops.
struct Local {
    shared: Cell<*const Shared>,
    queue: RefCell<VecDeque<u64>>,
    retired: RefCell<Vec<Arc<SocketState>>>,
}

thread_local! {
    static LOCAL: Local = const {
        Local {
            shared: Cell::new(std::ptr::null()),
            queue: RefCell::new(VecDeque::new()),
            retired: RefCell::new(Vec::new()),
        }
    };
    /// The loop that sessions accepted on this (session) thread relay on.
    static CURRENT: RefCell<Option<LoopRef>> = const { RefCell::new(None) };
}

/// A task's handle for its wakers and its `Joined`.
struct TaskCell {
    key: AtomicU64,
    queued: AtomicBool,
    cancelled: AtomicBool,
    shared: Arc<Shared>,
}

impl Wake for TaskCell {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let key = self.key.load(Ordering::Acquire);
        if key == UNKEYED {
            // Not taken by the loop yet, which polls it once it is.
            self.queued.store(false, Ordering::Release);
            return;
        }
        self.shared.schedule(key);
    }
}

/// A running loop thread; stops it and waits for it when dropped.
pub(crate) struct EventLoop {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A handle sessions use to move their relay onto a loop.
#[derive(Clone)]
pub(crate) struct LoopRef(Arc<Shared>);

impl EventLoop {
    /// Starts a loop thread named `name` that enters `runtime` (its timers
    /// and spawned tasks run there).
    pub(crate) fn start(name: String, runtime: tokio::runtime::Handle) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            epoll: sys::Epoll::new()?,
            wake: sys::WakeFd::new()?,
            remote: Mutex::default(),
            notified: AtomicBool::new(false),
        });
        shared.epoll.add_readable(shared.wake.fd(), WAKE_TOKEN)?;
        let theirs = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || run(&theirs, &runtime))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Makes this loop the one sessions started on this thread move to.
    pub(crate) fn install(&self) {
        CURRENT.with(|c| *c.borrow_mut() = Some(LoopRef(Arc::clone(&self.shared))));
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().take());
        self.shared.lock().stop = true;
        self.shared.notify();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The loop of this thread's sessions, if it has one.
pub(crate) fn current() -> Option<LoopRef> {
    CURRENT.with(|c| c.borrow().clone())
}

impl LoopRef {
    /// Takes `stream` out of tokio's reactor and into this loop's epoll.
    pub(crate) fn attach(
        &self,
        stream: tokio::net::TcpStream,
    ) -> io::Result<(LoopRead, LoopWrite)> {
        socket::attach(&self.0, stream.into_std()?)
    }

    /// Runs `task` on the loop; its output, or `Gone` if the loop dropped
    /// it (it panicked, or the loop stopped). Dropping the `Joined` drops
    /// the task, on the loop's thread.
    pub(crate) fn spawn<F>(&self, task: F) -> Joined<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let cell = Arc::new(TaskCell {
            key: AtomicU64::new(UNKEYED),
            queued: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
            shared: Arc::clone(&self.0),
        });
        let boxed: BoxedTask = Box::pin(Sending {
            task: Box::pin(task),
            output: Some(tx),
        });
        let mut remote = self.0.lock();
        if remote.stop {
            // Dropped here: its output never comes, so the `Joined` is
            // `Gone` at once.
            drop(remote);
            drop(boxed);
        } else {
            remote.spawned.push((boxed, Arc::clone(&cell)));
            drop(remote);
            self.0.notify();
        }
        Joined { rx, cell }
    }
}

/// A spawned task that sends its output to its `Joined`. A struct rather
/// than an `async` block: it is polled at every wake-up of a relay, and the
/// block's own state machine cost more than the rest of this poll.
struct Sending<F: Future> {
    task: Pin<Box<F>>,
    output: Option<oneshot::Sender<F::Output>>,
}

impl<F: Future> Future for Sending<F> {
    type Output = ();

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let out = std::task::ready!(self.task.as_mut().poll(cx));
        if let Some(tx) = self.output.take() {
            // The `Joined` may be gone: then nobody wants it.
            let _ = tx.send(out);
        }
        Poll::Ready(())
    }
}

/// The loop dropped the task before it ended.
#[derive(Debug)]
pub(crate) struct Gone;

/// A task running on a loop.
pub(crate) struct Joined<T> {
    rx: oneshot::Receiver<T>,
    cell: Arc<TaskCell>,
}

impl<T> Future for Joined<T> {
    type Output = Result<T, Gone>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|r| r.map_err(|_| Gone))
    }
}

impl<T> Drop for Joined<T> {
    fn drop(&mut self) {
        // Ended or not, the task is not wanted any more (a finished one
        // ignores this).
        self.cell.cancelled.store(true, Ordering::Release);
        Wake::wake_by_ref(&self.cell);
    }
}

/// The loop's tasks, by key (slot index, and its generation above).
#[derive(Default)]
struct Tasks {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

#[derive(Default)]
struct Slot {
    generation: u32,
    task: Option<Task>,
}

struct Task {
    future: BoxedTask,
    cell: Arc<TaskCell>,
    waker: Waker,
}

impl Tasks {
    fn insert(&mut self, future: BoxedTask, cell: Arc<TaskCell>) -> u64 {
        let index = match self.free.pop() {
            Some(i) => i as usize,
            None => {
                self.slots.push(Slot::default());
                self.slots.len() - 1
            }
        };
        let slot = &mut self.slots[index];
        let key = (u64::from(slot.generation) << 32) | index as u64;
        cell.key.store(key, Ordering::Release);
        slot.task = Some(Task {
            future,
            waker: Waker::from(Arc::clone(&cell)),
            cell,
        });
        key
    }

    fn poll(&mut self, key: u64) {
        let index = (key & u64::from(u32::MAX)) as usize;
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        if u64::from(slot.generation) != key >> 32 {
            return;
        }
        let Some(task) = slot.task.as_mut() else {
            return;
        };
        // Before the poll: a wake during it queues the task again.
        task.cell.queued.store(false, Ordering::Release);
        let done = task.cell.cancelled.load(Ordering::Acquire) || {
            let mut cx = Context::from_waker(&task.waker);
            // A panicking session ends alone, as a tokio task would.
            std::panic::catch_unwind(AssertUnwindSafe(|| task.future.as_mut().poll(&mut cx)))
                .map_or(true, |p| p.is_ready())
        };
        if done {
            let ended = slot.task.take();
            slot.generation = slot.generation.wrapping_add(1);
            self.free.push(index as u32);
            // Dropped last: its drop may wake other tasks.
            drop(ended);
        }
    }
}

/// Releases the epoll references of sockets that left it.
fn release_retired(retired: Vec<Arc<SocketState>>) {
    for state in retired {
        // SAFETY: each retired state was attached once, with a reference
        // leaked into its epoll token by `Arc::into_raw`, and is retired
        // once (by its last half's drop), after leaving the epoll; this
        // is the top of a turn, so no event naming it is being handled.
        drop(unsafe { Arc::from_raw(Arc::as_ptr(&state)) });
    }
}

fn take_retired(shared: &Shared) -> Vec<Arc<SocketState>> {
    let mut retired = LOCAL.with(|l| std::mem::take(&mut *l.retired.borrow_mut()));
    let mut remote = shared.lock();
    if !remote.retired.is_empty() {
        retired.append(&mut remote.retired);
    }
    retired
}

fn pop_local() -> Option<u64> {
    LOCAL.with(|l| l.queue.borrow_mut().pop_front())
}

/// The loop thread: runs queued tasks, then waits for events.
fn run(shared: &Arc<Shared>, runtime: &tokio::runtime::Handle) {
    let _runtime = runtime.enter();
    LOCAL.with(|l| l.shared.set(Arc::as_ptr(shared)));
    let mut tasks = Tasks::default();
    let mut events = sys::Events::with_room(EVENTS);
    let mut stopping = false;
    loop {
        let mut polls = 0;
        while polls < POLLS_PER_TURN {
            let Some(key) = pop_local() else { break };
            tasks.poll(key);
            polls += 1;
        }
        let retired = take_retired(shared);
        if !retired.is_empty() {
            release_retired(retired);
        }
        if stopping {
            break;
        }
        let more = LOCAL.with(|l| !l.queue.borrow().is_empty());
        let ready = match shared.epoll.wait(&mut events, if more { 0 } else { -1 }) {
            Ok(ready) => ready,
            Err(e) => {
                // Nothing can wake the loop any more: its sessions end.
                tracing::error!(error = %e, "the relay loop cannot wait for events");
                break;
            }
        };
        for event in ready {
            if event.token == WAKE_TOKEN {
                shared.wake.clear();
                shared.notified.store(false, Ordering::Release);
                let mut remote = shared.lock();
                let woken = std::mem::take(&mut remote.woken);
                let spawned = std::mem::take(&mut remote.spawned);
                stopping |= remote.stop;
                drop(remote);
                LOCAL.with(|l| l.queue.borrow_mut().extend(woken));
                for (future, cell) in spawned {
                    let key = tasks.insert(future, cell);
                    LOCAL.with(|l| l.queue.borrow_mut().push_back(key));
                }
            } else {
                // SAFETY: a socket's token is a reference to its state that
                // is released only at the top of a turn after it left the
                // epoll (module comment): it is alive here.
                let state = unsafe { &*(event.token as *const SocketState) };
                state.ready(&event);
            }
        }
    }
    // Stopped: what is left is dropped here, on this thread, and from now
    // on sockets dropped elsewhere are released at once.
    drop(tasks);
    let spawned = std::mem::take(&mut shared.lock().spawned);
    drop(spawned);
    LOCAL.with(|l| l.queue.borrow_mut().clear());
    let mut retired = take_retired(shared);
    let mut remote = shared.lock();
    remote.stop = true;
    remote.exited = true;
    retired.append(&mut remote.retired);
    drop(remote);
    release_retired(retired);
    LOCAL.with(|l| l.shared.set(std::ptr::null()));
}

#[cfg(test)]
mod tests;
