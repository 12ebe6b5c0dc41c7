//! The cross-core queue of ringmq: a bounded single-producer single-consumer channel between two
//! executors (threads). Lock-free on the normal path: crossbeam's `ArrayQueue` holds the items and
//! two [`AtomicWaker`]s carry the wake-ups (the receiver's when an item arrives, the sender's when
//! room appears). A glommio task's waker may be woken from another thread (the executor queues
//! it and rings its eventfd), which is all the cross-core wake-up needs.
//!
//! The protocol, checked by the loom models in `tests/loom.rs`: a side that finds the queue empty
//! (or full) registers its waker and looks again before sleeping, and the other side wakes after
//! every push (or pop). So no wake-up is lost, and a sleeping receiver always sees an item that
//! was pushed before it slept.
#![warn(missing_docs)]

mod sync;
pub mod waker;

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;

use sync::{AtomicBool, Ordering, Queue};
pub use waker::AtomicWaker;

struct Shared<T> {
    queue: Queue<T>,
    receiver: AtomicWaker,
    sender: AtomicWaker,
    closed: AtomicBool,
}

/// The sending end (one per channel).
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

/// The receiving end (one per channel).
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

/// A bounded channel of `capacity` items (at least 1).
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        queue: Queue::new(capacity.max(1)),
        receiver: AtomicWaker::new(),
        sender: AtomicWaker::new(),
        closed: AtomicBool::new(false),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

/// Why a send failed.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The queue is full; the item is given back.
    Full(T),
    /// The receiver is gone; the item is given back.
    Closed(T),
}

impl<T> Sender<T> {
    /// Pushes without waiting.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(TrySendError::Closed(item));
        }
        match self.shared.queue.push(item) {
            Ok(()) => {
                self.shared.receiver.wake();
                Ok(())
            }
            Err(item) => Err(TrySendError::Full(item)),
        }
    }

    /// Pushes, waiting for room. Fails (giving the item back) if the receiver is gone.
    pub async fn send(&self, item: T) -> Result<(), T> {
        let mut item = Some(item);
        poll_fn(|cx| {
            let Some(value) = item.take() else {
                return Poll::Ready(Ok(()));
            };
            match self.try_send(value) {
                Ok(()) => Poll::Ready(Ok(())),
                Err(TrySendError::Closed(v)) => Poll::Ready(Err(v)),
                Err(TrySendError::Full(v)) => {
                    self.shared.sender.register(cx.waker());
                    // Look again: a pop may have happened before the registration.
                    match self.try_send(v) {
                        Ok(()) => Poll::Ready(Ok(())),
                        Err(TrySendError::Closed(v)) => Poll::Ready(Err(v)),
                        Err(TrySendError::Full(v)) => {
                            item = Some(v);
                            Poll::Pending
                        }
                    }
                }
            }
        })
        .await
    }
}

impl<T> Receiver<T> {
    /// Pops without waiting.
    pub fn try_recv(&self) -> Option<T> {
        let item = self.shared.queue.pop();
        if item.is_some() {
            self.shared.sender.wake();
        }
        item
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.shared.queue.len()
    }

    /// Whether no item is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next item, waiting for one; `None` once the sender is gone and the queue is empty.
    pub async fn recv(&self) -> Option<T> {
        poll_fn(|cx| {
            if let Some(item) = self.try_recv() {
                return Poll::Ready(Some(item));
            }
            self.shared.receiver.register(cx.waker());
            // Look again: a push may have happened before the registration.
            if let Some(item) = self.try_recv() {
                return Poll::Ready(Some(item));
            }
            if self.shared.closed.load(Ordering::Acquire) {
                return Poll::Ready(self.try_recv());
            }
            Poll::Pending
        })
        .await
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.receiver.wake();
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.sender.wake();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn bounded_fifo_and_close() {
        let (tx, rx) = channel(2);
        assert_eq!(tx.try_send(1), Ok(()));
        assert_eq!(tx.try_send(2), Ok(()));
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        assert_eq!(rx.try_recv(), Some(1));
        assert_eq!(tx.try_send(3), Ok(()));
        assert_eq!(rx.len(), 2);
        drop(tx);
        assert_eq!(futures_lite::future::block_on(rx.recv()), Some(2));
        assert_eq!(futures_lite::future::block_on(rx.recv()), Some(3));
        assert_eq!(futures_lite::future::block_on(rx.recv()), None);
    }

    #[test]
    fn threads_exchange_every_item_in_order_under_back_pressure() {
        let (tx, rx) = channel::<u32>(4);
        let producer = std::thread::spawn(move || {
            futures_lite::future::block_on(async {
                for i in 0..100_000 {
                    tx.send(i).await.unwrap();
                }
            })
        });
        let got = futures_lite::future::block_on(async {
            let mut expected = 0;
            while let Some(i) = rx.recv().await {
                assert_eq!(i, expected);
                expected += 1;
            }
            expected
        });
        producer.join().unwrap();
        assert_eq!(got, 100_000);
    }

    #[test]
    fn send_fails_once_the_receiver_is_gone() {
        let (tx, rx) = channel(1);
        drop(rx);
        assert_eq!(tx.try_send(7), Err(TrySendError::Closed(7)));
        assert_eq!(futures_lite::future::block_on(tx.send(8)), Err(8));
    }

    fn _assert_send<T: Send>() {}
    const _: fn() = || {
        _assert_send::<Sender<u64>>();
        _assert_send::<Receiver<u64>>();
    };
}
