//! loom models of the cross-core queue: every interleaving of a sender thread and a receiver
//! thread. Run with `RUSTFLAGS="--cfg loom" cargo test -p ringmq-ring --test loom --release`.
#![cfg(loom)]

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize as StdAtomicUsize, Ordering as StdOrdering};
use std::sync::Arc as StdArc;
use std::task::{Context, Poll, Wake, Waker};

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use ringmq_ring::{channel, AtomicWaker};

/// A waker that counts its wakes and sets a loom-visible flag.
struct Flag {
    woken: AtomicBool,
    count: StdAtomicUsize,
}

impl Wake for Flag {
    fn wake(self: StdArc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &StdArc<Self>) {
        self.count.fetch_add(1, StdOrdering::Relaxed);
        self.woken.store(true, Ordering::Release);
    }
}

fn flag() -> (StdArc<Flag>, Waker) {
    let f = StdArc::new(Flag {
        woken: AtomicBool::new(false),
        count: StdAtomicUsize::new(0),
    });
    (f.clone(), Waker::from(f))
}

/// A registration racing a wake: either the registered waker is woken, or the registering side
/// woke itself. The wake is never lost.
#[test]
fn atomic_waker_never_loses_a_wake() {
    model(|| {
        let slot = Arc::new(AtomicWaker::new());
        let data = Arc::new(AtomicBool::new(false));
        let (f, waker) = flag();
        let (s, d) = (slot.clone(), data.clone());
        let waker_thread = thread::spawn(move || {
            d.store(true, Ordering::Release);
            s.wake();
        });
        slot.register(&waker);
        if !data.load(Ordering::Acquire) {
            // We will sleep: a wake must come.
            waker_thread.join().unwrap();
            assert!(f.woken.load(Ordering::Acquire), "lost wake-up");
        } else {
            waker_thread.join().unwrap();
        }
    });
}

/// Wakes a loom thread: sets its flag, then unparks it.
struct Unpark {
    woken: AtomicBool,
    thread: loom::thread::Thread,
}

impl Wake for Unpark {
    fn wake(self: StdArc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &StdArc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// Polls `fut` until it completes. After a wake the thread yields (so that a side which woke
/// itself lets the other side finish, as a real scheduler would); without one it parks. A lost
/// wake-up leaves it parked forever, which loom reports as a deadlock.
fn drive<F: Future>(fut: F) -> F::Output {
    let unpark = StdArc::new(Unpark {
        woken: AtomicBool::new(false),
        thread: thread::current(),
    });
    let waker = Waker::from(unpark.clone());
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        if unpark.woken.swap(false, Ordering::AcqRel) {
            thread::yield_now();
        } else {
            thread::park();
        }
    }
}

/// Model-checks `f` with a bounded number of preemptions (as tokio's models do): a waiting side
/// that wakes itself while the other side is mid-wake would otherwise let loom explore an
/// unbounded spin.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

/// A receiver waiting on an empty queue is woken by the sender, and sees the items in order.
#[test]
fn receiver_sleeping_on_empty_queue_gets_every_item() {
    model(|| {
        let (tx, rx) = channel::<u32>(1);
        thread::spawn(move || {
            for i in 0..2 {
                assert_eq!(drive(tx.send(i)), Ok(()));
            }
        });
        assert_eq!(drive(rx.recv()), Some(0));
        assert_eq!(drive(rx.recv()), Some(1));
        // The sender finishes and drops its end: the receiver is woken and sees the close.
        assert_eq!(drive(rx.recv()), None, "sender gone, queue empty");
    });
}

/// A sender waiting on a full queue is woken by the receiver's pop.
#[test]
fn sender_sleeping_on_full_queue_is_woken_by_a_pop() {
    model(|| {
        let (tx, rx) = channel::<u32>(1);
        assert_eq!(tx.try_send(0), Ok(()));
        thread::spawn(move || {
            assert_eq!(drive(rx.recv()), Some(0));
            assert_eq!(drive(rx.recv()), Some(1));
        });
        assert_eq!(drive(tx.send(1)), Ok(()));
    });
}
