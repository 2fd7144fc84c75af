//! A fence: what keeps a Control replica that may no longer lead from writing.
//!
//! A replica that leads holds a lease for a term (see `herd_control`'s `lease` module); each
//! renewal the broker confirms moves the fence's deadline on. Every write through a
//! [`crate::Broker`] that carries the fence (bucket writes, object writes, requests to nodes)
//! checks it first, so a replica that was paused or cut off past its deadline refuses to
//! write the moment it runs again, before any other task of it can. Requests to nodes also
//! carry the term ([`TERM_HEADER`]), and a node refuses a term older than the newest it knows.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The header of a node request that names the term of the replica that sent it.
pub const TERM_HEADER: &str = "Herd-Term";

/// The term a replica leads in and until when it may act (see the module's doc).
#[derive(Clone)]
pub struct Fence {
    inner: Arc<Inner>,
}

struct Inner {
    term: u64,
    base: Instant,
    /// Milliseconds after `base` until which the lease holds; 0: deposed for good.
    valid_until_ms: AtomicU64,
}

impl Fence {
    /// A fence for `term` valid until `until`.
    pub fn new(term: u64, until: Instant) -> Fence {
        let base = Instant::now();
        let fence = Fence { inner: Arc::new(Inner { term, base, valid_until_ms: AtomicU64::new(1) }) };
        fence.extend_until(until);
        fence
    }

    pub fn term(&self) -> u64 {
        self.inner.term
    }

    /// Moves the deadline to `until` (never back, and never after [`Fence::depose`]).
    pub fn extend_until(&self, until: Instant) {
        let ms = until.saturating_duration_since(self.inner.base).as_millis() as u64 + 1;
        let _ = self
            .inner
            .valid_until_ms
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| (now != 0 && ms > now).then_some(ms));
    }

    /// Ends the term: every check fails from now on.
    pub fn depose(&self) {
        self.inner.valid_until_ms.store(0, Ordering::Release);
    }

    /// How long the lease still holds (`None`: it does not).
    pub fn remaining(&self) -> Option<Duration> {
        let until = self.inner.valid_until_ms.load(Ordering::Acquire);
        let now = self.inner.base.elapsed().as_millis() as u64;
        (until > now).then(|| Duration::from_millis(until - now))
    }

    /// Ok while the lease holds; the error says why a write is refused.
    pub fn check(&self) -> anyhow::Result<()> {
        match self.remaining() {
            Some(_) => Ok(()),
            None => anyhow::bail!(
                "this Control replica no longer leads (its lease for term {} ran out): the write is refused",
                self.inner.term
            ),
        }
    }
}

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fence").field("term", &self.inner.term).field("remaining", &self.remaining()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_holds_until_its_deadline_moves_only_forward_and_ends_when_deposed() {
        let fence = Fence::new(7, Instant::now() + Duration::from_secs(60));
        assert_eq!(fence.term(), 7);
        fence.check().unwrap();
        fence.extend_until(Instant::now()); // earlier: ignored
        assert!(fence.remaining().unwrap() > Duration::from_secs(50));
        fence.depose();
        let err = fence.check().unwrap_err().to_string();
        assert!(err.contains("term 7") && err.contains("refused"), "{err}");
        fence.extend_until(Instant::now() + Duration::from_secs(60)); // deposed for good
        assert!(fence.check().is_err());
    }

    #[test]
    fn a_fence_past_its_deadline_refuses() {
        let fence = Fence::new(1, Instant::now());
        std::thread::sleep(Duration::from_millis(5));
        assert!(fence.check().is_err());
    }
}
