//! A waker registration that is not repeated while it still stands.
//!
//! A relay polls everything it waits on at every wake-up of its task, and
//! each source that is not ready registers the task's waker in its
//! `AtomicWaker`. Registering again a waker that is already in place costs
//! an `AtomicWaker` round trip (two compare-exchanges and a `will_wake`)
//! for nothing, several times a transaction.
//!
//! The rule that makes skipping it sound: the source's side that wakes
//! first sets a flag (its readiness, its pending requests), then takes the
//! waker out of the slot. So while the poller still reads the flag clear,
//! a waker it registered since it last saw the flag set is still in the
//! slot; once it sees the flag set, it [`Armed::disarm`]s and the next
//! registration is made again. Nothing else may take the slot's waker.

use futures::task::AtomicWaker;
use std::task::{Context, Waker};

/// The poller's memory of one slot.
#[derive(Default)]
pub(crate) struct Armed {
    /// A clone of the waker registered last.
    waker: Option<Waker>,
    /// Registered since the flag was last seen set.
    armed: bool,
}

impl Armed {
    /// Makes sure `slot` holds `cx`'s waker; call it only after reading the
    /// flag clear, and read the flag again after it.
    /// (The check inlined, the registration out of line: most polls find
    /// the waker in place.)
    #[inline(always)]
    pub(crate) fn register(&mut self, slot: &AtomicWaker, cx: &Context<'_>) {
        if self.armed && self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return;
        }
        self.register_again(slot, cx);
    }

    #[inline(never)]
    fn register_again(&mut self, slot: &AtomicWaker, cx: &Context<'_>) {
        slot.register(cx.waker());
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.waker = Some(cx.waker().clone());
        }
        self.armed = true;
    }

    /// The flag was seen set: the waker may have been taken.
    #[inline]
    pub(crate) fn disarm(&mut self) {
        self.armed = false;
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

    #[test]
    fn a_standing_registration_still_wakes_and_a_disarmed_one_is_renewed() {
        let count = Arc::new(Count::default());
        let waker = Waker::from(Arc::clone(&count));
        let cx = Context::from_waker(&waker);
        let slot = AtomicWaker::new();
        let mut armed = Armed::default();
        armed.register(&slot, &cx);
        // Skipped: the first registration stands, and wakes.
        armed.register(&slot, &cx);
        slot.wake();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        // The wake took the waker; without `disarm` nothing would wake
        // again, which is why a poller that saw the flag set disarms.
        armed.disarm();
        armed.register(&slot, &cx);
        slot.wake();
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn another_waker_is_registered_at_once() {
        let (a, b) = (Arc::new(Count::default()), Arc::new(Count::default()));
        let (wa, wb) = (Waker::from(Arc::clone(&a)), Waker::from(Arc::clone(&b)));
        let slot = AtomicWaker::new();
        let mut armed = Armed::default();
        armed.register(&slot, &Context::from_waker(&wa));
        armed.register(&slot, &Context::from_waker(&wb));
        slot.wake();
        assert_eq!(a.0.load(Ordering::SeqCst), 0);
        assert_eq!(b.0.load(Ordering::SeqCst), 1);
    }
}
