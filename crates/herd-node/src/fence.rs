//! Fencing: a node that has lost the cluster stops, by itself, the containers the cluster may
//! start elsewhere, so that a container never runs on two nodes at once.
//!
//! The agent renews its lease by a round trip to the broker every eighth of the lease. Once
//! the lease has run out (no round trip for that long), every running container whose spec is
//! `fenced` (its record asks for `restore` or `restart` on node failure) is frozen and its
//! network locked: it sends nothing and answers nothing. The Control node declares a node
//! failed only after its node timeout, longer than the lease (`herd up` and the defaults: a
//! 2 s lease, a 3 s timeout), so by then the copy is frozen. When the broker answers again,
//! each fenced container is checked against its record: the same node and generation, and it
//! is thawed and unlocked; otherwise it was rescheduled meanwhile, and it is killed while
//! still locked, without its status being published (the other node's status stands).
//!
//! The same check runs once a lease on every running fenceable container, fenced or not: a
//! node whose heartbeats stopped reaching the Control node while its own round trips still
//! succeeded (a starved agent) is declared failed without ever fencing itself, and must still
//! find out that its copies moved on.
//!
//! While the lease has lapsed, and until that check is done, the agent takes no new work on
//! containers ([`LeaseHealth`]): an agent stopped (SIGSTOP) while a ticker checkpoint request
//! waited for it found, once it ran again, that request and the removal of the copy that had
//! moved on racing for the container, and the removal waited for the checkpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use herd_broker::{Broker, Bucket};
use herd_proto::state::{ContainerRecord, ContainerState};

use crate::netlock;
use crate::runtime::{Container, Runtime};

/// The subject of lease round trips: nobody answers it, the broker says so at once.
const LEASE_SUBJECT: &str = "herd.lease.ping";

/// Whether the broker answered a round trip within `timeout`.
async fn broker_answers(broker: &Broker, timeout: Duration) -> bool {
    let request = broker.client.request(LEASE_SUBJECT.to_string(), bytes::Bytes::new());
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => e.kind() == async_nats::RequestErrorKind::NoResponders,
        Err(_) => false,
    }
}

/// Whether the node's lease holds, shared by the lease loop and the agent's request handler.
#[derive(Debug, Clone)]
pub struct LeaseHealth {
    inner: Arc<HealthInner>,
}

#[derive(Debug)]
struct HealthInner {
    lease: Duration,
    origin: Instant,
    /// Milliseconds from `origin` to the last round trip to the broker.
    last_contact_ms: AtomicU64,
    /// The lease lapsed and the containers have not been checked against the cluster since.
    rechecking: AtomicBool,
}

impl LeaseHealth {
    pub fn new(lease: Duration) -> LeaseHealth {
        let inner = HealthInner {
            lease,
            origin: Instant::now(),
            last_contact_ms: AtomicU64::new(0),
            rechecking: AtomicBool::new(false),
        };
        LeaseHealth { inner: Arc::new(inner) }
    }

    fn contact_at(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.inner.origin).as_millis() as u64;
        self.inner.last_contact_ms.fetch_max(ms, Ordering::SeqCst);
    }

    /// How long before `now` the last round trip to the broker was.
    fn since_contact(&self, now: Instant) -> Duration {
        let last = self.inner.origin + Duration::from_millis(self.inner.last_contact_ms.load(Ordering::SeqCst));
        now.saturating_duration_since(last)
    }

    fn lapsed_at(&self, now: Instant) -> bool {
        self.since_contact(now) > self.inner.lease
    }

    /// Whether the node may take new work on containers at `now`: its lease holds, and
    /// after a lapse its containers were checked against the cluster.
    pub fn holds_at(&self, now: Instant) -> bool {
        !self.inner.rechecking.load(Ordering::SeqCst) && !self.lapsed_at(now)
    }

    /// Why a request is refused while the lease does not hold.
    pub fn refusal(&self) -> String {
        format!(
            "this node's lease lapsed (no round trip to the broker for over {:.1}s; the cluster may have moved its \
             containers): it takes no new work until it has checked them against the cluster",
            self.inner.lease.as_secs_f64()
        )
    }
}

/// Keeps the node's lease and fences or unfences its containers; runs for the agent's life.
pub async fn run(broker: Broker, runtime: Arc<Runtime>, records: Bucket<ContainerRecord>, health: LeaseHealth) {
    let lease = health.inner.lease;
    let every = (lease / 8).max(Duration::from_millis(50));
    health.contact_at(Instant::now());
    let mut fenced = false;
    let mut last_check = Instant::now();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Seen before the round trip renews it: requests that waited while this agent could
        // not run (stopped, starved) are refused until the check below is done.
        let lapsed = health.lapsed_at(Instant::now());
        if lapsed {
            health.inner.rechecking.store(true, Ordering::SeqCst);
        }
        if broker_answers(&broker, (lease / 4).max(Duration::from_millis(100))).await {
            health.contact_at(Instant::now());
            if !fenced && (lapsed || last_check.elapsed() >= lease) {
                last_check = Instant::now();
                runtime.drop_stale(&records, runtime.fenceable()).await;
            }
            if fenced {
                fenced = false;
                tracing::warn!("the broker answers again: checking the fenced containers against the cluster");
                runtime.unfence(&records).await;
            }
            health.inner.rechecking.store(false, Ordering::SeqCst);
        } else if !fenced && health.lapsed_at(Instant::now()) {
            fenced = true;
            tracing::error!(
                "no answer from the broker for {:.1}s (lease {:.1}s): fencing the containers the cluster may restart elsewhere",
                health.since_contact(Instant::now()).as_secs_f64(),
                lease.as_secs_f64()
            );
            runtime.fence().await;
        }
    }
}

impl Runtime {
    fn fenceable(&self) -> Vec<Arc<Container>> {
        let all: Vec<Arc<Container>> = self.containers.lock().unwrap().values().cloned().collect();
        all.into_iter()
            .filter(|c| {
                let l = c.live.lock().unwrap();
                l.fence_policy && l.state == Some(ContainerState::Running)
            })
            .collect()
    }

    /// `SetFenced`: whether container `id` is fenced from now on, kept in its spec file so
    /// that a restarted agent knows too.
    pub fn set_fenced(&self, id: &str, fenced: bool) -> crate::runtime::OpResult<herd_proto::node::NodeReply> {
        let c = self.get(id)?;
        c.live.lock().unwrap().fence_policy = fenced;
        let spec = herd_proto::node::ContainerSpec { fenced, ..c.spec.clone() };
        let json = serde_json::to_vec_pretty(&spec).map_err(|e| e.to_string())?;
        let path = c.paths.spec();
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(herd_proto::node::NodeReply::Done)
    }

    /// Freezes every fenced running container and locks its network.
    pub async fn fence(&self) {
        for c in self.fenceable() {
            self.fence_one(&c).await;
        }
    }

    /// Freezes container `c` and locks its network.
    async fn fence_one(&self, c: &Container) {
        {
            let started = Instant::now();
            if let Err(e) = self.cfg.runc.pause(&c.spec.id).await {
                tracing::error!("could not freeze {} to fence it: {e}", c.spec.name);
            }
            match self.netns_of(&c.spec) {
                Ok(netns) => {
                    if let Err(e) = netlock::lock(&netns) {
                        tracing::error!("could not lock the network of {} to fence it: {e:#}", c.spec.name);
                    }
                }
                Err(e) => tracing::error!("no network namespace to lock for {}: {e:#}", c.spec.name),
            }
            c.live.lock().unwrap().fenced = true;
            tracing::warn!("fenced {} in {:?}", c.spec.name, started.elapsed());
        }
    }

    /// Thaws the fenced containers the cluster still places here (same generation), and
    /// kills the others, still locked.
    pub async fn unfence(self: &Arc<Self>, records: &Bucket<ContainerRecord>) {
        let fenced: Vec<Arc<Container>> = {
            let all: Vec<Arc<Container>> = self.containers.lock().unwrap().values().cloned().collect();
            all.into_iter().filter(|c| c.live.lock().unwrap().fenced).collect()
        };
        self.drop_stale(records, fenced).await;
    }

    /// Checks `containers` against their records: those the cluster still places here (same
    /// node and generation) are thawed and unlocked if fenced; the others are stale copies,
    /// killed and removed.
    async fn drop_stale(self: &Arc<Self>, records: &Bucket<ContainerRecord>, containers: Vec<Arc<Container>>) {
        for c in containers {
            let record = match records.get(&c.spec.name).await {
                Ok(r) => r.map(|r| r.value),
                Err(e) => {
                    tracing::error!("cannot read the record of {}; it stays fenced: {e:#}", c.spec.name);
                    continue;
                }
            };
            let ours = record
                .as_ref()
                .is_some_and(|r| r.id == c.spec.id && r.node == self.cfg.node && r.generation == c.spec.generation);
            if ours {
                if !c.live.lock().unwrap().fenced {
                    continue;
                }
                if let Err(e) = self.cfg.runc.resume(&c.spec.id).await {
                    tracing::error!("could not thaw {} after fencing: {e}", c.spec.name);
                }
                if let Ok(netns) = self.netns_of(&c.spec)
                    && let Err(e) = netlock::unlock(&netns)
                {
                    tracing::error!("could not unlock the network of {} after fencing: {e:#}", c.spec.name);
                }
                c.live.lock().unwrap().fenced = false;
                tracing::warn!("{} is still this node's: thawed", c.spec.name);
                continue;
            }
            let elsewhere = record.map(|r| format!("on {} (generation {})", r.node, r.generation));
            tracing::warn!(
                "{} moved on while this node was cut off ({}): removing the stale copy",
                c.spec.name,
                elsewhere.as_deref().unwrap_or("removed")
            );
            {
                let mut l = c.live.lock().unwrap();
                l.stale = true;
            }
            // Locked and frozen first (a copy found stale without a fence is running); SIGKILL
            // then: a frozen process dies as it thaws, before it runs again.
            if !c.live.lock().unwrap().fenced {
                self.fence_one(&c).await;
            }
            if let Err(e) = self.cfg.runc.kill(&c.spec.id, libc::SIGKILL, true).await {
                tracing::warn!("killing the stale copy of {}: {e}", c.spec.name);
            }
            let _ = self.cfg.runc.resume(&c.spec.id).await;
            if let Err(e) = self.remove_keeping(&c.spec.id, true, false).await {
                tracing::error!("could not remove the stale copy of {}: {e}", c.spec.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_holds_until_it_lapses_and_again_once_checked() {
        let health = LeaseHealth::new(Duration::from_secs(2));
        let start = health.inner.origin;
        health.contact_at(start);
        assert!(health.holds_at(start + Duration::from_millis(1900)));
        // Stopped for 5 s: a request handled first on waking is refused...
        let woke = start + Duration::from_secs(5);
        assert!(!health.holds_at(woke));
        // ... and still once the round trip renewed the lease, until the check is done.
        health.inner.rechecking.store(true, Ordering::SeqCst);
        health.contact_at(woke);
        assert!(!health.holds_at(woke));
        health.inner.rechecking.store(false, Ordering::SeqCst);
        assert!(health.holds_at(woke + Duration::from_millis(10)));
        // An older contact never moves the last one back.
        health.contact_at(start);
        assert!(health.holds_at(woke + Duration::from_millis(10)));
        assert!(health.refusal().contains("lease lapsed"));
    }
}
