//! [`Notify`]: a single-threaded wake-up flag, the only synchronisation a core needs between its
//! own tasks (connection writers, mesh pumps). Plain `std`, so the logic that uses it stays
//! testable without an executor.

use std::cell::Cell;
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// A flag with one waiting task. `notify` before `notified` is not lost.
#[derive(Default)]
pub struct Notify {
    flag: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Notify {
    /// Sets the flag and wakes the waiting task, if any.
    pub fn notify(&self) {
        self.flag.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Completes once the flag is set, and clears it. One waiter at a time.
    pub async fn notified(&self) {
        poll_fn(|cx| {
            if self.flag.replace(false) {
                Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::Context;

    #[test]
    fn a_notify_before_the_wait_is_kept() {
        let n = Notify::default();
        n.notify();
        let mut fut = pin!(n.notified());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(fut.as_mut().poll(&mut cx).is_ready());
        let mut again = pin!(n.notified());
        assert!(again.as_mut().poll(&mut cx).is_pending());
        n.notify();
        assert!(again.as_mut().poll(&mut cx).is_ready());
    }
}
