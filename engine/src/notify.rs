//! [`Notify`]: a single-threaded wake-up flag, the only synchronisation a core needs between its
//! own tasks (connection writers, mesh pumps). Plain `std`, so the logic that uses it stays
//! testable without an executor.

use std::cell::{Cell, RefCell};
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

/// Any number of waiting tasks, all woken by [`WaitList::wake_all`]. A task waiting registers
/// its waker once per poll; the list is emptied at every wake-up.
#[derive(Default)]
pub struct WaitList {
    generation: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl WaitList {
    /// Wakes every task waiting now.
    pub fn wake_all(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        for w in self.wakers.take() {
            w.wake();
        }
    }

    /// Completes at the next [`WaitList::wake_all`] after the call.
    pub async fn wait(&self) {
        let start = self.generation.get();
        poll_fn(|cx| {
            if self.generation.get() != start {
                Poll::Ready(())
            } else {
                self.wakers.borrow_mut().push(cx.waker().clone());
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

    #[test]
    fn a_wait_list_wakes_every_waiter_once() {
        let list = WaitList::default();
        let mut cx = Context::from_waker(Waker::noop());
        let mut a = pin!(list.wait());
        let mut b = pin!(list.wait());
        assert!(a.as_mut().poll(&mut cx).is_pending());
        assert!(b.as_mut().poll(&mut cx).is_pending());
        list.wake_all();
        assert!(a.as_mut().poll(&mut cx).is_ready());
        assert!(b.as_mut().poll(&mut cx).is_ready());
        let mut c = pin!(list.wait());
        assert!(
            c.as_mut().poll(&mut cx).is_pending(),
            "an earlier wake-up does not count"
        );
    }
}
