//! A socket half's waker, kept across wake-ups.
//!
//! An `AtomicWaker` hands its waker over on every wake, so the task that
//! polls the half next registers it again: a compare-exchange, a clone (a
//! reference count up) and another compare-exchange, and on the waking
//! side a swap and a reference count down. A relay wakes twice a
//! transaction, for the same task every time. This slot keeps the waker
//! instead and wakes it by reference; a poller stores a waker only when it
//! is not the one kept (`will_wake`), which it checks against its own copy
//! without touching the slot.
//!
//! Why it never loses a wake-up: the waking side sets its readiness flag
//! before it locks the slot; a poller stores its waker under the same lock
//! and reads the flag after. Either the waking side finds the new waker, or
//! it unlocked before the store, and then the poller's read of the flag
//! sees it set. A kept waker may wake its task for an edge it is not
//! waiting on (a side the relay does not read for backpressure): at most
//! one poll per edge the kernel reports, which finds nothing to do.

use parking_lot::Mutex;
use std::task::{Context, Waker};

/// The slot, shared by a half and the loop that wakes it.
#[derive(Default)]
pub(super) struct KeptWaker {
    waker: Mutex<Option<Waker>>,
}

impl KeptWaker {
    /// Wakes the waker kept, if any; it stays.
    pub(super) fn wake(&self) {
        // parking_lot's lock: no poisoning, whose checks of the thread's
        // panic count on each lock and unlock cost more than the lock.
        let kept = self.waker.lock();
        if let Some(w) = kept.as_ref() {
            w.wake_by_ref();
        }
    }

    fn store(&self, waker: &Waker) {
        *self.waker.lock() = Some(waker.clone());
    }
}

/// The poller's copy of what its slot keeps.
#[derive(Default)]
pub(super) struct Registered {
    waker: Option<Waker>,
}

impl Registered {
    /// Makes sure `slot` keeps `cx`'s waker; call it after reading the
    /// flag clear, and read the flag again after it.
    #[inline(always)]
    pub(super) fn register(&mut self, slot: &KeptWaker, cx: &Context<'_>) {
        if self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return;
        }
        self.register_again(slot, cx);
    }

    #[inline(never)]
    fn register_again(&mut self, slot: &KeptWaker, cx: &Context<'_>) {
        if cx.waker().will_wake(Waker::noop()) {
            // A poll that will not wait (a write tried before the wait):
            // the waker kept stays, for the poll that will.
            return;
        }
        slot.store(cx.waker());
        self.waker = Some(cx.waker().clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn count(c: &Count) -> usize {
        c.0.load(Ordering::SeqCst)
    }

    #[test]
    fn a_kept_waker_wakes_every_time_without_registering_again() {
        let c = Arc::new(Count::default());
        let waker = Waker::from(Arc::clone(&c));
        let cx = Context::from_waker(&waker);
        let slot = KeptWaker::default();
        let mut mine = Registered::default();
        slot.wake();
        assert_eq!(count(&c), 0, "nothing kept yet");
        mine.register(&slot, &cx);
        slot.wake();
        slot.wake();
        assert_eq!(count(&c), 2);
        // The same waker: the slot is not touched (its strong count shows
        // no new clone).
        let before = Arc::strong_count(&c);
        mine.register(&slot, &cx);
        assert_eq!(Arc::strong_count(&c), before);
        slot.wake();
        assert_eq!(count(&c), 3);
    }

    #[test]
    fn another_waker_replaces_the_kept_one() {
        let (a, b) = (Arc::new(Count::default()), Arc::new(Count::default()));
        let (wa, wb) = (Waker::from(Arc::clone(&a)), Waker::from(Arc::clone(&b)));
        let slot = KeptWaker::default();
        let mut mine = Registered::default();
        mine.register(&slot, &Context::from_waker(&wa));
        mine.register(&slot, &Context::from_waker(&wb));
        slot.wake();
        assert_eq!((count(&a), count(&b)), (0, 1));
    }

    #[test]
    fn a_poll_that_will_not_wait_leaves_the_kept_waker() {
        let c = Arc::new(Count::default());
        let waker = Waker::from(Arc::clone(&c));
        let slot = KeptWaker::default();
        let mut mine = Registered::default();
        mine.register(&slot, &Context::from_waker(&waker));
        mine.register(&slot, &Context::from_waker(Waker::noop()));
        slot.wake();
        assert_eq!(count(&c), 1);
    }

    #[test]
    fn a_wake_racing_a_registration_is_never_lost() {
        use std::sync::atomic::AtomicBool;
        // The poller's protocol against the waker's, many times over: the
        // flag set before the wake, read again after the registration.
        for _ in 0..2000 {
            let c = Arc::new(Count::default());
            let slot = Arc::new(KeptWaker::default());
            let flag = Arc::new(AtomicBool::new(false));
            let (s2, f2) = (Arc::clone(&slot), Arc::clone(&flag));
            let waking = std::thread::spawn(move || {
                f2.store(true, Ordering::Release);
                s2.wake();
            });
            let waker = Waker::from(Arc::clone(&c));
            let mut mine = Registered::default();
            let saw_flag = flag.load(Ordering::Acquire) || {
                mine.register(&slot, &Context::from_waker(&waker));
                flag.load(Ordering::Acquire)
            };
            waking.join().expect("waking thread");
            assert!(saw_flag || count(&c) == 1, "the wake-up was lost");
        }
    }
}
