//! [`AtomicWaker`]: one task's waker, registered by that task and taken by another thread to wake
//! it. The algorithm is the one tokio and futures use (three states, no lock): a wake that races
//! with a registration is never lost, because the registering side sees the WAKING bit and wakes
//! itself.

use std::task::Waker;

use crate::sync::{AtomicUsize, Ordering, UnsafeCell};

const WAITING: usize = 0;
const REGISTERING: usize = 0b01;
const WAKING: usize = 0b10;

/// A waker slot shared by one registering task and any number of wakers.
#[derive(Debug)]
pub struct AtomicWaker {
    state: AtomicUsize,
    waker: UnsafeCell<Option<Waker>>,
}

// SAFETY: the waker cell is only touched by the side that won the state transition
// (REGISTERING by `register`, WAKING by `take`), so accesses never overlap.
unsafe impl Send for AtomicWaker {}
// SAFETY: as above.
unsafe impl Sync for AtomicWaker {}

impl Default for AtomicWaker {
    fn default() -> Self {
        Self::new()
    }
}

impl AtomicWaker {
    /// An empty slot.
    pub fn new() -> Self {
        Self {
            state: AtomicUsize::new(WAITING),
            waker: UnsafeCell::new(None),
        }
    }

    /// Stores `waker` to be woken by the next [`AtomicWaker::wake`]. Only one task registers.
    pub fn register(&self, waker: &Waker) {
        match self
            .state
            .compare_exchange(WAITING, REGISTERING, Ordering::Acquire, Ordering::Acquire)
            .unwrap_or_else(|actual| actual)
        {
            WAITING => {
                // SAFETY: in REGISTERING state only this side touches the cell.
                unsafe {
                    self.waker.with_mut(|slot| match &*slot {
                        Some(old) if old.will_wake(waker) => {}
                        _ => *slot = Some(waker.clone()),
                    });
                }
                if let Err(actual) = self.state.compare_exchange(
                    REGISTERING,
                    WAITING,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    // A wake arrived while registering: take the waker back and wake now.
                    debug_assert_eq!(actual, REGISTERING | WAKING);
                    // SAFETY: the waking side saw REGISTERING and did not touch the cell.
                    let waker = unsafe { self.waker.with_mut(|slot| (*slot).take()) };
                    self.state.swap(WAITING, Ordering::AcqRel);
                    if let Some(w) = waker {
                        w.wake();
                    }
                }
            }
            WAKING => {
                // A wake is in progress and may have missed the previous waker: wake ourselves.
                waker.wake_by_ref();
            }
            state => {
                // Another registration in progress: impossible with one registering task.
                debug_assert!(state == REGISTERING || state == REGISTERING | WAKING);
            }
        }
    }

    /// Takes the registered waker, if any, for waking.
    pub fn take(&self) -> Option<Waker> {
        match self.state.fetch_or(WAKING, Ordering::AcqRel) {
            WAITING => {
                // SAFETY: in WAKING state only this side touches the cell.
                let waker = unsafe { self.waker.with_mut(|slot| (*slot).take()) };
                self.state.fetch_and(!WAKING, Ordering::Release);
                waker
            }
            _ => None, // the registering side will see WAKING and wake itself
        }
    }

    /// Wakes the registered task, if any.
    pub fn wake(&self) {
        if let Some(w) = self.take() {
            w.wake();
        }
    }
}
