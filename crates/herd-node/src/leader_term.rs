//! Refuses requests from a Control replica that no longer leads.
//!
//! A leading replica's requests carry its term (`herd_broker::TERM_HEADER`). The agent keeps
//! the newest term it knows, from those requests and from the lease itself (it watches the
//! lease key), and refuses a request of an older term: a replica that was paused, or cut
//! off, and was replaced while it was, cannot stop, remove or move a container once the node
//! knows of its successor. A request without a term (a Control node that runs alone, `herd
//! down`'s shutdown) is taken as it always was.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use herd_broker::{Broker, Change};
use herd_proto::control::LeaderLease;
use herd_proto::subjects;

/// The newest Control term this agent knows.
#[derive(Clone, Default)]
pub struct LeaderTerm(Arc<AtomicU64>);

impl LeaderTerm {
    pub fn newest(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Learns of `term` (a newer one replaces the one known; an older one changes nothing).
    pub fn learn(&self, term: u64) {
        self.0.fetch_max(term, Ordering::AcqRel);
    }

    /// Whether a request that carries `term` (raw header value; `None`: no term) is taken.
    pub fn admit(&self, term: Option<&str>) -> Result<(), String> {
        let Some(raw) = term else { return Ok(()) };
        let term: u64 = raw.trim().parse().map_err(|_| format!("malformed request: term {raw:?}"))?;
        let newest = self.newest();
        if term < newest {
            return Err(format!(
                "refused: the request comes from a Control replica of term {term}, which no longer leads (the \
                 leader's term is {newest})"
            ));
        }
        self.learn(term);
        Ok(())
    }

    /// Follows the lease in the broker, learning each new term as it is taken.
    pub async fn follow(self, broker: Broker) {
        let bucket = match broker.bucket::<LeaderLease>(subjects::CONTROL_BUCKET).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("cannot follow the Control lease: {e:#}");
                return;
            }
        };
        let (now, changes) = match bucket.snapshot().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot follow the Control lease: {e:#}");
                return;
            }
        };
        if let Some(lease) = now.get(subjects::LEASE_KEY) {
            self.learn(lease.value.term);
        }
        let mut changes = std::pin::pin!(changes);
        while let Some(change) = changes.next().await {
            if let Change::Put { key, value, .. } = change
                && key == subjects::LEASE_KEY
            {
                self.learn(value.term);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_term_is_refused_a_newer_one_is_learnt_and_none_is_taken() {
        let t = LeaderTerm::default();
        t.admit(Some("3")).unwrap();
        assert_eq!(t.newest(), 3);
        t.admit(Some("3")).unwrap();
        let err = t.admit(Some("2")).unwrap_err();
        assert!(err.contains("term 2") && err.contains("term is 3"), "{err}");
        t.learn(5);
        assert!(t.admit(Some("4")).is_err());
        t.admit(None).unwrap();
        assert!(t.admit(Some("x")).unwrap_err().contains("malformed"));
    }
}
