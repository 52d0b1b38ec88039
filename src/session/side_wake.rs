//! Which side woke the session: each socket's read is polled with a waker
//! of its own, so a wake-up polls again only the read that can progress.
//!
//! The relay waits on both reads at once. With the task's own waker, every
//! wake-up (a client request, the server's answer) would poll both reads,
//! and each poll of a read that has nothing costs a trip through the
//! reactor's readiness (about 300 instructions): seven read polls per
//! transaction where four suffice (one that reads and one that finds
//! nothing, per side). `futures`' `FuturesUnordered` does the same for its
//! futures.
//!
//! The rule that keeps this sound: a read is skipped only while it is
//! *armed*, that is, its last poll returned `Pending` with the side's waker,
//! which the reader (a socket, or TLS over one) keeps and wakes once it can
//! progress (the `AsyncRead` contract); the wake marks the side woken and
//! wakes the task. Nothing else polls the read half, so no other waker
//! replaces the side's.

use futures::task::AtomicWaker;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// The waker a side's read is polled with.
#[derive(Default)]
struct Signal {
    /// The session task, woken in turn.
    task: AtomicWaker,
    /// Woken since the read last returned `Pending`.
    woken: AtomicBool,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// One side's read, polled only when it may progress.
pub(crate) struct SideWake {
    signal: Arc<Signal>,
    waker: Waker,
    /// The last poll returned `Pending`: the reader holds `waker`.
    armed: bool,
}

impl Default for SideWake {
    fn default() -> Self {
        let signal = Arc::new(Signal::default());
        Self {
            waker: Waker::from(Arc::clone(&signal)),
            signal,
            armed: false,
        }
    }
}

impl SideWake {
    /// Polls `read` with this side's waker, unless it is armed and was not
    /// woken since (then it could only return `Pending` again). Inlined:
    /// called twice per wake-up, and a call costs as much as its body.
    #[inline(always)]
    pub(crate) fn poll<T>(
        &mut self,
        cx: &mut Context<'_>,
        read: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        // First, so a wake from here on reaches the task that polls now.
        self.signal.task.register(cx.waker());
        // Cleared before the read: a wake during or after it is kept.
        if !self.signal.woken.swap(false, Ordering::AcqRel) && self.armed {
            return Poll::Pending;
        }
        let polled = read(&mut Context::from_waker(&self.waker));
        self.armed = polled.is_pending();
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its wakes.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn an_armed_read_is_polled_again_only_once_woken() {
        let count = Arc::new(Count::default());
        let task = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&task);
        let mut side = SideWake::default();
        let stored: std::cell::RefCell<Option<Waker>> = Default::default();
        let polls = std::cell::Cell::new(0);
        let pending = |cx: &mut Context<'_>| {
            polls.set(polls.get() + 1);
            *stored.borrow_mut() = Some(cx.waker().clone());
            Poll::<()>::Pending
        };
        assert!(side.poll(&mut cx, pending).is_pending());
        assert!(side.poll(&mut cx, pending).is_pending());
        assert_eq!(polls.get(), 1, "armed and not woken: not polled");
        // The reader wakes the side's waker: the task is woken and the
        // next poll reaches the read.
        let kept = stored.borrow_mut().take();
        kept.expect("waker kept").wake();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(side.poll(&mut cx, pending).is_pending());
        assert_eq!(polls.get(), 2);
    }

    #[test]
    fn a_ready_read_is_polled_again_at_once() {
        let task = Waker::from(Arc::new(Count::default()));
        let mut cx = Context::from_waker(&task);
        let mut side = SideWake::default();
        let mut polls = 0;
        for _ in 0..3 {
            assert!(side
                .poll(&mut cx, |_| {
                    polls += 1;
                    Poll::Ready(())
                })
                .is_ready());
        }
        assert_eq!(polls, 3);
    }
}
