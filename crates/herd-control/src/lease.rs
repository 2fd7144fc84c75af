//! The timing rules of the leader lease (see `herd_proto::control`), apart from any I/O so
//! they are tested fast.
//!
//! Every replica measures time on its own monotonic clock; no clock is compared with
//! another machine's. The leader's lease holds for [`LeaseTiming::hold`] after it *sent* the
//! renewal the broker confirmed last; a follower takes the lease over only once the revision
//! it *saw* has stood still for [`LeaseTiming::ttl`]. Since the follower saw the revision
//! after the leader sent it, and `hold` is shorter than `ttl`, the leader has stopped acting
//! `ttl - hold` before anyone can take over, as long as the two clocks run at about the same
//! rate.

use std::time::{Duration, Instant};

use herd_proto::control::LeaderLease;

/// How long a lease lasts and how often it is renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a follower waits on a revision that stands still before it takes over.
    pub ttl: Duration,
    /// How long a leader keeps acting after the send of its last confirmed renewal.
    pub hold: Duration,
    /// How often the leader renews, and how often a follower reads the lease.
    pub renew_every: Duration,
}

impl LeaseTiming {
    /// The timing for a lease of `ttl`: renewed every `ttl / 6`, held for `2 ttl / 3`.
    pub fn new(ttl: Duration) -> LeaseTiming {
        LeaseTiming { ttl, hold: ttl * 2 / 3, renew_every: ttl / 6 }
    }
}

impl Default for LeaseTiming {
    /// 1.5 s: a failover within 2 s, and a leader that keeps its lease through a broker's
    /// write that takes up to a second.
    fn default() -> Self {
        LeaseTiming::new(Duration::from_millis(1500))
    }
}

/// What a follower does after reading the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The leader is alive (or the follower has not watched it long enough to know).
    Wait,
    /// Write the lease for `term`, guarded by `revision` (`None`: no lease exists yet, so
    /// create it).
    TakeOver { revision: Option<u64>, term: u64 },
}

/// A follower's watch over the lease.
#[derive(Debug, Default)]
pub struct Observer {
    /// The revision seen last and when it was first seen.
    seen: Option<(u64, Instant)>,
}

impl Observer {
    /// Takes in a read of the lease at `now` (`None`: there is none) and says what to do.
    pub fn observe(&mut self, now: Instant, lease: Option<(u64, &LeaderLease)>, timing: LeaseTiming) -> Decision {
        let Some((revision, lease)) = lease else {
            self.seen = None;
            return Decision::TakeOver { revision: None, term: 1 };
        };
        if lease.released {
            return Decision::TakeOver { revision: Some(revision), term: lease.term + 1 };
        }
        match self.seen {
            Some((seen, since)) if seen == revision => {
                if now.saturating_duration_since(since) >= timing.ttl {
                    Decision::TakeOver { revision: Some(revision), term: lease.term + 1 }
                } else {
                    Decision::Wait
                }
            }
            _ => {
                self.seen = Some((revision, now));
                Decision::Wait
            }
        }
    }

    /// How long ago the lease was last seen to change.
    pub fn seen_ago(&self, now: Instant) -> Option<Duration> {
        self.seen.map(|(_, since)| now.saturating_duration_since(since))
    }
}

/// Until when a leader may act after the broker confirmed a renewal it sent at `sent_at`.
pub fn valid_until(sent_at: Instant, timing: LeaseTiming) -> Instant {
    sent_at + timing.hold
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(term: u64) -> LeaderLease {
        LeaderLease { replica: "control".into(), api: "http://127.0.0.1:7700".into(), term, since: 0, released: false }
    }

    #[test]
    fn a_follower_takes_over_only_after_the_revision_stood_still_for_the_ttl() {
        let t = LeaseTiming::default();
        let start = Instant::now();
        let mut o = Observer::default();
        let l = lease(4);
        assert_eq!(o.observe(start, Some((10, &l)), t), Decision::Wait);
        assert_eq!(o.observe(start + t.ttl - Duration::from_millis(1), Some((10, &l)), t), Decision::Wait);
        // Renewed: the clock starts again from when the new revision was seen.
        assert_eq!(o.observe(start + t.ttl, Some((11, &l)), t), Decision::Wait);
        assert_eq!(o.observe(start + t.ttl * 2 - Duration::from_millis(1), Some((11, &l)), t), Decision::Wait);
        assert_eq!(o.observe(start + t.ttl * 2, Some((11, &l)), t), Decision::TakeOver { revision: Some(11), term: 5 });
    }

    #[test]
    fn a_follower_that_starts_late_waits_a_whole_ttl_before_taking_an_old_lease() {
        let t = LeaseTiming::default();
        let start = Instant::now();
        let mut o = Observer::default();
        let l = lease(1);
        assert_eq!(o.observe(start, Some((3, &l)), t), Decision::Wait);
        assert_eq!(o.observe(start + t.ttl, Some((3, &l)), t), Decision::TakeOver { revision: Some(3), term: 2 });
    }

    #[test]
    fn no_lease_or_a_released_one_is_taken_at_once_and_the_term_goes_on() {
        let t = LeaseTiming::default();
        let now = Instant::now();
        let mut o = Observer::default();
        assert_eq!(o.observe(now, None, t), Decision::TakeOver { revision: None, term: 1 });
        let released = LeaderLease { released: true, ..lease(7) };
        assert_eq!(o.observe(now, Some((20, &released)), t), Decision::TakeOver { revision: Some(20), term: 8 });
    }

    #[test]
    fn the_leader_stops_acting_before_a_follower_may_take_over() {
        let t = LeaseTiming::default();
        let sent = Instant::now();
        // The follower sees the renewal no earlier than it was sent.
        let follower_takes_over_at = sent + t.ttl;
        assert!(valid_until(sent, t) + Duration::from_millis(400) <= follower_takes_over_at);
        assert!(t.renew_every * 3 < t.hold, "several renewals fit in one hold");
    }
}
