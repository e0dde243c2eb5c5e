//! The connection limit and eviction: at most `max` connections are open at once, each holds a
//! [`Lease`] for its lifetime, and when every lease is taken a new client makes the oldest idle
//! connection (no request in flight; a handshake in progress counts as idle) close.
//!
//! A lease knows the requests in flight on its connection ([`Busy`]) and since when it has had
//! none, so it can tell when the connection idled out ([`Lease::idle_expired`]) or was asked to
//! make room ([`Lease::evicted`]). Time is `tokio::time`, so paused test time drives it.
//!
//! Touches nothing but its own bookkeeping: it never closes a socket itself, it asks the task that
//! owns the connection to.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// One open connection: the requests in flight on it, since when it has been idle, and a way to
/// ask it to close.
#[derive(Debug)]
struct Slot {
    opened: Instant,
    /// Requests being handled on this connection.
    requests: AtomicUsize,
    /// Milliseconds after `opened` when the connection last became idle.
    idle_since_ms: AtomicU64,
    evicted: AtomicBool,
    evict: Notify,
}

impl Slot {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            requests: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn mark_idle(&self) {
        self.idle_since_ms.store(self.now_ms(), Ordering::SeqCst);
    }

    fn idle_for(&self) -> Duration {
        let since = self.idle_since_ms.load(Ordering::SeqCst);
        Duration::from_millis(self.now_ms().saturating_sub(since))
    }

    fn is_busy(&self) -> bool {
        self.requests.load(Ordering::SeqCst) > 0
    }
}

/// The open connections, oldest first.
#[derive(Debug, Default)]
struct Slots {
    next_id: AtomicU64,
    open: Mutex<BTreeMap<u64, Arc<Slot>>>,
}

impl Slots {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<Slot>>> {
        match self.open.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Ask the oldest connection without a request in flight to close; false when every
    /// connection is busy or already asked.
    fn evict_oldest_idle(&self) -> bool {
        let open = self.lock();
        let victim = open
            .values()
            .find(|slot| !slot.is_busy() && !slot.evicted.swap(true, Ordering::SeqCst));
        match victim {
            Some(slot) => {
                slot.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// The connection limit: a semaphore of `max` permits and the open connections behind them.
#[derive(Clone, Debug)]
pub(super) struct Connections {
    max: usize,
    permits: Arc<Semaphore>,
    slots: Arc<Slots>,
}

impl Connections {
    /// A limit of `max` open connections (at least 1).
    pub(super) fn new(max: usize) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            max,
            permits: Arc::new(Semaphore::new(max)),
            slots: Arc::new(Slots::default()),
        }
    }

    /// A lease for one more connection. When the limit is reached, `on_full` runs once and the
    /// oldest idle connection is asked to close; then this waits for a lease to be given back,
    /// asking again every `retry` (a busy connection may have gone idle since). `None` only if
    /// the limit was closed, which nothing does while a server runs.
    pub(super) async fn acquire(&self, retry: Duration, on_full: impl FnOnce()) -> Option<Lease> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                on_full();
                self.slots.evict_oldest_idle();
                let mut again = tokio::time::interval_at(Instant::now() + retry, retry);
                again.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let permit = self.permits.clone().acquire_owned();
                tokio::pin!(permit);
                loop {
                    tokio::select! {
                        permit = &mut permit => break permit.ok()?,
                        _ = again.tick() => {
                            self.slots.evict_oldest_idle();
                        }
                    }
                }
            }
        };
        Some(self.open(permit))
    }

    fn open(&self, permit: OwnedSemaphorePermit) -> Lease {
        let id = self.slots.next_id.fetch_add(1, Ordering::SeqCst);
        let slot = Arc::new(Slot::new());
        self.slots.lock().insert(id, slot.clone());
        Lease {
            slots: self.slots.clone(),
            id,
            slot,
            _permit: permit,
        }
    }

    /// Completes once every lease has been given back: every connection is closed.
    pub(super) async fn drained(&self) {
        let all = u32::try_from(self.max).unwrap_or(u32::MAX);
        let _ = self.permits.acquire_many(all).await;
    }
}

/// A connection's place within the limit, given back when dropped.
#[derive(Debug)]
pub(super) struct Lease {
    slots: Arc<Slots>,
    id: u64,
    slot: Arc<Slot>,
    // Dropped last: the slot leaves `slots` before its permit lets a new connection in.
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    /// From now on the connection is idle (its handshake completed).
    pub(super) fn mark_idle(&self) {
        self.slot.mark_idle();
    }

    /// A handle that counts requests on this connection, for the connection's service.
    pub(super) fn requests(&self) -> Requests {
        Requests(self.slot.clone())
    }

    /// Completes once the limit asked this connection to make room.
    pub(super) async fn evicted(&self) {
        self.slot.evict.notified().await;
    }

    /// Completes once the connection has had no request in flight for `limit`.
    pub(super) async fn idle_expired(&self, limit: Duration) {
        loop {
            let wait = if self.slot.is_busy() {
                limit
            } else {
                match limit.checked_sub(self.slot.idle_for()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return,
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.slots.lock().remove(&self.id);
    }
}

/// Starts [`Busy`] guards on one connection; cheap to clone into each request's future.
#[derive(Clone, Debug)]
pub(super) struct Requests(Arc<Slot>);

impl Requests {
    /// Count one request in flight until the guard is dropped.
    pub(super) fn start(&self) -> Busy {
        Busy::start(&self.0)
    }
}

/// A request in flight on its connection, until dropped; the connection is idle from then on.
#[derive(Debug)]
pub(super) struct Busy(Arc<Slot>);

impl Busy {
    fn start(slot: &Arc<Slot>) -> Self {
        slot.requests.fetch_add(1, Ordering::SeqCst);
        Self(slot.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.mark_idle();
        self.0.requests.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(30);
    const RETRY: Duration = Duration::from_secs(1);

    /// Whether `future` completes without time moving on.
    async fn completes_now(future: impl Future) -> bool {
        tokio::time::timeout(Duration::ZERO, future).await.is_ok()
    }

    async fn lease(connections: &Connections) -> Lease {
        let lease = connections
            .acquire(RETRY, || panic!("the limit is not full"))
            .await;
        lease.expect("the limit is never closed")
    }

    /// A lease on a connection that became idle now (its handshake completed).
    async fn idle_since_now() -> Lease {
        let lease = lease(&Connections::new(4)).await;
        lease.mark_idle();
        lease
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_expires_after_the_idle_timeout() {
        let lease = idle_since_now().await;
        let started = Instant::now();
        lease.idle_expired(IDLE).await;
        assert_eq!(started.elapsed(), IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_finished_request_restarts_the_idle_clock() {
        let lease = idle_since_now().await;
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(20)).await;
        drop(lease.requests().start());
        lease.idle_expired(IDLE).await;
        assert_eq!(started.elapsed(), Duration::from_secs(20) + IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_never_idles_out() {
        let lease = idle_since_now().await;
        let busy = lease.requests().start();
        assert!(
            tokio::time::timeout(100 * IDLE, lease.idle_expired(IDLE))
                .await
                .is_err(),
            "expired with a request in flight"
        );
        // Idle from the moment its request ends.
        let ended = Instant::now();
        drop(busy);
        lease.idle_expired(IDLE).await;
        assert_eq!(ended.elapsed(), IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn eviction_picks_the_oldest_idle_connection_never_a_busy_one() {
        let connections = Connections::new(4);
        let oldest = lease(&connections).await;
        let middle = lease(&connections).await;
        let newest = lease(&connections).await;
        let _busy = oldest.requests().start();

        assert!(connections.slots.evict_oldest_idle());
        assert!(completes_now(middle.evicted()).await, "the oldest idle one");
        assert!(!completes_now(newest.evicted()).await);

        assert!(connections.slots.evict_oldest_idle());
        assert!(completes_now(newest.evicted()).await);

        // Only the busy one is left: nobody is asked.
        assert!(!connections.slots.evict_oldest_idle());
        assert!(!completes_now(oldest.evicted()).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_connection_is_not_evicted() {
        let connections = Connections::new(4);
        let closed = lease(&connections).await;
        let open = lease(&connections).await;
        drop(closed);
        assert!(connections.slots.evict_oldest_idle());
        assert!(completes_now(open.evicted()).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_limit_waits_until_a_lease_is_given_back() {
        let connections = Connections::new(1);
        let held = lease(&connections).await;
        let busy = held.requests().start();
        let full = Arc::new(AtomicUsize::new(0));
        let waiting = tokio::spawn({
            let (connections, full) = (connections.clone(), full.clone());
            async move {
                let lease = connections
                    .acquire(RETRY, || {
                        full.fetch_add(1, Ordering::SeqCst);
                    })
                    .await;
                (Instant::now(), lease.is_some())
            }
        });
        tokio::time::sleep(100 * RETRY).await;
        assert!(!waiting.is_finished(), "a lease beyond the limit");
        assert_eq!(full.load(Ordering::SeqCst), 1, "on_full runs once");
        assert!(
            !completes_now(held.evicted()).await,
            "a busy one is not asked"
        );

        let given_back = Instant::now();
        drop(busy);
        drop(held);
        let (acquired, leased) = waiting.await.expect("the waiter does not panic");
        assert!(leased);
        assert_eq!(acquired, given_back);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_limit_evicts_an_idle_connection_to_make_room() {
        let connections = Connections::new(1);
        let idle = lease(&connections).await;
        idle.mark_idle();
        let closing = tokio::spawn(async move {
            idle.evicted().await;
            Instant::now()
        });
        let started = Instant::now();
        let lease = connections.acquire(RETRY, || {}).await;
        assert!(lease.is_some());
        let evicted = closing.await.expect("the idle connection closes");
        assert_eq!(evicted, started, "asked at once, not after a retry");
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_goes_idle_while_the_limit_is_full_is_evicted_at_the_next_retry() {
        let connections = Connections::new(1);
        let held = lease(&connections).await;
        let busy = held.requests().start();
        let started = Instant::now();
        let waiting = tokio::spawn({
            let connections = connections.clone();
            async move { connections.acquire(RETRY, || {}).await.is_some() }
        });
        tokio::time::sleep(Duration::from_millis(2500)).await;
        drop(busy);
        held.evicted().await;
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(3),
            "asked at the first retry after it went idle"
        );
        drop(held);
        assert!(waiting.await.expect("the waiter does not panic"));
    }

    #[tokio::test(start_paused = true)]
    async fn drained_waits_for_every_lease() {
        let connections = Connections::new(3);
        let first = lease(&connections).await;
        let second = lease(&connections).await;
        assert!(!completes_now(connections.drained()).await);
        drop(first);
        assert!(!completes_now(connections.drained()).await);
        drop(second);
        assert!(completes_now(connections.drained()).await);
    }
}
