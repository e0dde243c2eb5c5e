//! The in-flight byte budget: the request bodies being read or judged, on every connection and
//! HTTP/2 stream, share one budget of bytes, so their memory is bounded however many clients
//! send at once.
//!
//! A request holds a [`Reservation`] from before its body is read until its answer is built,
//! given back when dropped (also when the request fails, panics or is cancelled). It reserves
//! the declared `Content-Length` up front, or grows as chunks arrive when there is none (HTTP/2
//! without `content-length`, chunked HTTP/1.1). Nothing waits: a reservation that does not fit
//! fails at once, and the caller answers 503.
//!
//! Small requests keep a share of their own: a body above [`SMALL_BODY_BYTES`] may use only
//! the budget minus [`SMALL_SHARE`] of it, so large reviews filling the budget never lock out
//! the small ones every ordinary update sends. Two semaphores (tokio's) hold the accounting:
//! every byte is taken from `all`, and a large body's bytes also from `large`.
//!
//! Touches nothing but its own permits.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A body up to this size is small: it may use the whole budget, including the share large
/// bodies leave free. A PyTorchJob UPDATE review is a few KiB; 64 KiB leaves room for long
/// commands and environments.
pub const SMALL_BODY_BYTES: usize = 64 * 1024;

/// The part of the budget only small bodies may use, as a fraction (1/8): at the default
/// budget, room for dozens of small reviews at once while large ones hold the rest.
pub const SMALL_SHARE: usize = 8;

/// The shared budget. Cheap to clone: clones share the permits.
#[derive(Clone, Debug)]
pub(crate) struct Budget {
    total: usize,
    all: Arc<Semaphore>,
    large: Arc<Semaphore>,
}

/// Why a reservation did not fit: the bytes it asked for in all, and the budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Refused {
    /// The bytes the request would have held.
    pub(crate) wanted: usize,
    /// The whole budget.
    pub(crate) budget: usize,
}

impl Budget {
    /// A budget of `total` bytes (at most tokio's `Semaphore::MAX_PERMITS`).
    pub(crate) fn new(total: usize) -> Self {
        let total = total.min(Semaphore::MAX_PERMITS);
        Self {
            total,
            all: Arc::new(Semaphore::new(total)),
            large: Arc::new(Semaphore::new(total - total / SMALL_SHARE)),
        }
    }

    /// An empty reservation, to grow with [`Reservation::grow_to`].
    pub(crate) fn reservation(&self) -> Reservation {
        Reservation {
            budget: self.clone(),
            bytes: 0,
            all: None,
            large: None,
        }
    }

    /// Bytes not reserved by anyone right now.
    #[cfg(test)]
    fn available(&self) -> usize {
        self.all.available_permits()
    }
}

/// Bytes of the budget held by one request, given back when dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Budget,
    bytes: usize,
    all: Option<OwnedSemaphorePermit>,
    large: Option<OwnedSemaphorePermit>,
}

impl Reservation {
    /// Hold at least `bytes` (never fewer than already held), or fail without waiting and
    /// without taking anything more.
    pub(crate) fn grow_to(&mut self, bytes: usize) -> Result<(), Refused> {
        if bytes <= self.bytes {
            return Ok(());
        }
        let refused = Refused {
            wanted: bytes,
            budget: self.budget.total,
        };
        let more = bytes - self.bytes;
        let held_large = self.large.as_ref().map_or(0, |p| p.num_permits());
        let more_large = if bytes > SMALL_BODY_BYTES {
            bytes - held_large
        } else {
            0
        };
        let take = |semaphore: &Arc<Semaphore>, n: usize| {
            let n = u32::try_from(n).map_err(|_| refused)?;
            semaphore
                .clone()
                .try_acquire_many_owned(n)
                .map_err(|_| refused)
        };
        // Large first: when the rest does not fit, the large share taken is given back here.
        let large = (more_large > 0)
            .then(|| take(&self.budget.large, more_large))
            .transpose()?;
        let all = take(&self.budget.all, more)?;
        merge(&mut self.all, all);
        if let Some(large) = large {
            merge(&mut self.large, large);
        }
        self.bytes = bytes;
        Ok(())
    }
}

fn merge(held: &mut Option<OwnedSemaphorePermit>, more: OwnedSemaphorePermit) {
    match held {
        Some(held) => held.merge(more),
        None => *held = Some(more),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn reservations_share_the_budget_and_give_it_back_when_dropped() {
        let budget = Budget::new(8 * MIB);
        let mut first = budget.reservation();
        first.grow_to(3 * MIB).unwrap();
        let mut second = budget.reservation();
        second.grow_to(3 * MIB).unwrap();
        assert_eq!(budget.available(), 2 * MIB);
        drop(first);
        assert_eq!(budget.available(), 5 * MIB);
        drop(second);
        assert_eq!(budget.available(), 8 * MIB);
    }

    #[test]
    fn a_reservation_that_does_not_fit_fails_and_takes_nothing() {
        let budget = Budget::new(8 * MIB);
        let mut held = budget.reservation();
        held.grow_to(5 * MIB).unwrap();
        let mut refused = budget.reservation();
        assert_eq!(
            refused.grow_to(4 * MIB),
            Err(Refused {
                wanted: 4 * MIB,
                budget: 8 * MIB
            })
        );
        assert_eq!(budget.available(), 3 * MIB);
        assert_eq!(budget.large.available_permits(), 7 * MIB - 5 * MIB);
    }

    #[test]
    fn a_growing_reservation_holds_what_it_reached_and_shrinks_never() {
        let budget = Budget::new(8 * MIB);
        let mut growing = budget.reservation();
        for size in (0..=4 * MIB).step_by(16 * 1024) {
            growing.grow_to(size).unwrap();
            assert_eq!(budget.available(), 8 * MIB - size);
        }
        growing.grow_to(MIB).unwrap();
        assert_eq!(budget.available(), 4 * MIB);
        // Past the small size, its whole size counts against the large share.
        assert_eq!(budget.large.available_permits(), 7 * MIB - 4 * MIB);
    }

    #[test]
    fn large_bodies_leave_the_small_share_free() {
        let budget = Budget::new(8 * MIB);
        let mut large = Vec::new();
        loop {
            let mut reservation = budget.reservation();
            if reservation.grow_to(MIB).is_err() {
                break;
            }
            large.push(reservation);
        }
        assert_eq!(large.len(), 7, "the large share is 7/8 of the budget");
        let mut small = Vec::new();
        for _ in 0..MIB / SMALL_BODY_BYTES {
            let mut reservation = budget.reservation();
            reservation.grow_to(SMALL_BODY_BYTES).unwrap();
            small.push(reservation);
        }
        assert_eq!(budget.available(), 0);
        assert!(budget.reservation().grow_to(1).is_err());
    }

    #[test]
    fn a_reservation_beyond_what_a_permit_count_holds_is_refused() {
        let budget = Budget::new(usize::MAX);
        let mut huge = budget.reservation();
        assert!(
            huge.grow_to(usize::try_from(u64::from(u32::MAX) + 1).unwrap())
                .is_err()
        );
        assert!(huge.grow_to(MIB).is_ok());
    }
}
