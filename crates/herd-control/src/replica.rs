//! Control node replicas: several `herd control --replica NAME` processes, one of which leads.
//!
//! The leader is the replica named in the lease (`herd_proto::control`); the timing rules are
//! in [`crate::lease`]. A replica that does not lead keeps its connection to the broker and
//! the monitoring samples warm, answers `GET /v1/control/status`, and answers every other
//! request with 503 and a `Herd-Leader` header naming the leader's API, so that the CLI moves
//! to it. When the lease is left to stand still for its time to live (the leader died,
//! stopped, or lost the broker), a follower takes it over with a write guarded by the
//! revision it read, loads the cluster state from the buckets like any starting Control node
//! (which resolves the migrations in flight from their journal and restarts the tickers),
//! and serves.
//!
//! A leader that cannot renew its lease in time stops: every write it would make is refused
//! by its [`Fence`] from the moment the lease's hold runs out, and a watchdog ends the process
//! (the supervisor, `herd up` or systemd, starts it again as a follower). Crash-only: the
//! state of a replica that stopped leading is never trusted again.

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use herd_broker::{Broker, Bucket, Fence, WriteConflict};
use herd_proto::api::ApiError;
use herd_proto::control::{ControlStatus, LEADER_HEADER, LeaderLease, ReplicaReport, Role, StreamPeer};
use herd_proto::subjects;
use tower::ServiceExt;

use crate::control::{Control, ControlConfig};
use crate::lease::{Decision, LeaseTiming, Observer, valid_until};
use crate::monitoring::Monitoring;

/// How often a follower reads the lease.
const POLL: Duration = Duration::from_millis(100);

/// How often a replica writes its report.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// The exit status of a replica that lost its lease.
const DEPOSED_EXIT: i32 = 75;

/// Each node's latest heartbeat: when it came, the node's time and its usage (as
/// `View::early_heartbeats` takes them).
type Heartbeats = crate::view::Map<String, (Instant, u64, herd_proto::node::NodeUsage)>;

/// What a follower keeps warm for the day it leads.
pub(crate) struct Warm {
    /// The nodes' monitoring samples (it goes on gathering them when it leads).
    pub monitoring: Arc<Mutex<Monitoring>>,
    /// Each node's latest heartbeat: when it came, its time and usage.
    pub heartbeats: Arc<Mutex<Heartbeats>>,
    /// Since when the heartbeats have been gathered.
    pub since: Instant,
}

impl Warm {
    /// The heartbeats a new leader starts from, for the registered `nodes`. A replica that has
    /// followed for less than `node_timeout` may have heard nothing yet from a node that is
    /// alive (a busy one): such a node is presumed alive since the replica began to listen,
    /// and is down only if it stays silent a whole timeout from then.
    pub(crate) fn heartbeats_of<'a>(
        &self,
        nodes: impl Iterator<Item = &'a String>,
        node_timeout: Duration,
    ) -> Heartbeats {
        let mut heard = self.heartbeats.lock().unwrap().clone();
        if self.since.elapsed() < node_timeout {
            let at = herd_proto::now_millis().saturating_sub(self.since.elapsed().as_millis() as u64);
            for name in nodes {
                heard.entry(name.clone()).or_insert((self.since, at, Default::default()));
            }
        }
        heard
    }
}

/// Records the nodes' heartbeats as they come.
async fn gather_heartbeats(warm: Arc<Warm>, mut sub: async_nats::Subscriber) {
    use futures::StreamExt;
    while let Some(msg) = sub.next().await {
        if let Ok(hb) = serde_json::from_slice::<herd_proto::node::Heartbeat>(&msg.payload) {
            warm.heartbeats.lock().unwrap().insert(hb.node, (Instant::now(), hb.time, hb.usage));
        }
    }
}

/// A replica's name and how the others reach it.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// Unique among the replicas, e.g. `control2`.
    pub name: String,
    /// The URL of its API that the CLI and the other replicas are given.
    pub advertise: String,
    pub timing: LeaseTiming,
}

/// What a replica knows of the lease.
#[derive(Default)]
struct Seen {
    lease: Option<LeaderLease>,
    /// When the lease last changed, as seen here.
    changed: Option<Instant>,
    /// Set while this replica leads.
    fence: Option<Fence>,
    /// The revision of the lease this replica wrote last.
    revision: u64,
}

/// One replica: its connection to the broker (without a fence: the leader's Control node gets
/// a fenced copy), the lease and reports buckets, and what it knows and keeps warm.
struct Replica {
    cfg: ReplicaConfig,
    /// The API token, for the routes a follower answers itself.
    token: String,
    broker: Broker,
    leases: Bucket<LeaderLease>,
    reports: Bucket<ReplicaReport>,
    /// When this process started (Unix milliseconds).
    started: u64,
    warm: Arc<Warm>,
    /// The Control node's API, once this replica leads and has loaded the state.
    serving: OnceLock<Router>,
    seen: Mutex<Seen>,
}

/// A replica's API from the moment it listens: until it has connected to the broker, it
/// answers every request with 503 and says what it waits for, so that the CLI keeps looking
/// for the leader rather than finding nobody at the address.
struct Shell {
    name: String,
    token: String,
    /// What the replica is doing while it starts.
    starting: Mutex<String>,
    /// The replica's own router, once it has started.
    inner: OnceLock<Router>,
}

async fn shell_dispatch(State(shell): State<Arc<Shell>>, req: Request) -> Response {
    if let Some(inner) = shell.inner.get() {
        return inner.clone().oneshot(req).await.into_response();
    }
    if !crate::api::authorized(req.headers(), &shell.token) {
        return crate::api::unauthorized();
    }
    let error = format!("Control replica {} is starting: {}", shell.name, shell.starting.lock().unwrap());
    let mut resp = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(ApiError { error })).into_response();
    resp.headers_mut().insert(LEADER_HEADER, HeaderValue::from_static(""));
    resp
}

/// Tries `open` until it succeeds, saying on the shell and in the log why it waits: a broker
/// that starts under load may take a while to elect its leaders.
async fn until_open<T, F, Fut>(shell: &Shell, what: &str, mut open: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    *shell.starting.lock().unwrap() = what.to_string();
    loop {
        match open().await {
            Ok(v) => return v,
            Err(e) => {
                tracing::warn!("replica {}: {what}: {e:#}; trying again", shell.name);
                *shell.starting.lock().unwrap() = format!("{what} ({e:#})");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Runs a Control replica until `shutdown` completes; a leader lets its lease go then, so
/// that another takes over at once.
pub async fn run_replica(
    cfg: ControlConfig,
    replica: ReplicaConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    herd_proto::names::validate_node_name(&replica.name)
        .map_err(|e| anyhow::anyhow!("invalid replica name {:?}: {}", replica.name, e.0))?;
    let listen = cfg.api_listen;
    let tls = cfg.tls.as_ref().map(crate::https::server_config).transpose()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen for the API on {listen}"))?;
    let shell = Arc::new(Shell {
        name: replica.name.clone(),
        token: cfg.api_token.clone(),
        starting: Mutex::new(String::new()),
        inner: OnceLock::new(),
    });
    let app = Router::new().fallback(shell_dispatch).with_state(shell.clone());
    let server = tokio::spawn(crate::https::serve(listener, tls, app, shutdown));
    tracing::info!("replica {}: API listening on {listen}", replica.name);

    let start = async {
        let broker = until_open(&shell, "connecting to the broker", || Broker::connect(&cfg.broker)).await;
        let leases = until_open(&shell, "opening the lease bucket", || broker.bucket(subjects::CONTROL_BUCKET)).await;
        let reports =
            until_open(&shell, "opening the reports bucket", || broker.bucket(subjects::REPLICAS_BUCKET)).await;
        let warm = Arc::new(Warm { monitoring: Arc::default(), heartbeats: Arc::default(), since: Instant::now() });
        let metrics = broker.client.subscribe(subjects::METRICS_ALL).await?;
        tokio::spawn(crate::monitoring::gather(warm.monitoring.clone(), metrics));
        let heartbeats = broker.client.subscribe(subjects::HEARTBEAT_ALL).await?;
        tokio::spawn(gather_heartbeats(warm.clone(), heartbeats));
        anyhow::Ok(Arc::new(Replica {
            cfg: replica,
            token: cfg.api_token.clone(),
            broker,
            leases,
            reports,
            started: herd_proto::now_millis(),
            warm,
            serving: OnceLock::new(),
            seen: Mutex::new(Seen::default()),
        }))
    };
    let mut server = server;
    let me = tokio::select! {
        me = start => me?,
        // Stopped while it started: there is nothing to let go.
        done = &mut server => return done.context("API server")?,
    };
    let _ = shell.inner.set(router(me.clone()));
    tracing::info!("replica {}: following until it leads", me.cfg.name);
    tokio::spawn(me.clone().report());
    tokio::spawn(me.clone().campaign(cfg));
    server.await.context("API server")??;
    me.release().await;
    Ok(())
}

fn router(replica: Arc<Replica>) -> Router {
    Router::new()
        .route("/v1/control/status", get(status))
        .route("/v1/control/lease", get(lease))
        .fallback(dispatch)
        .with_state(replica)
}

/// The lease as this replica saw it last (within 0.1 s): what a client asks to learn that the
/// replica it waits on no longer leads.
async fn lease(State(r): State<Arc<Replica>>, headers: axum::http::HeaderMap) -> Response {
    if !crate::api::authorized(&headers, &r.token) {
        return crate::api::unauthorized();
    }
    let lease = r.seen.lock().unwrap().lease.clone();
    axum::Json(lease).into_response()
}

/// A request the leader serves; a follower answers 503 and names the leader.
async fn dispatch(State(r): State<Arc<Replica>>, req: Request) -> Response {
    let holds = r.seen.lock().unwrap().fence.as_ref().is_some_and(|f| f.remaining().is_some());
    if let Some(api) = r.serving.get().filter(|_| holds) {
        return api.clone().oneshot(req).await.into_response();
    }
    let lease = r.seen.lock().unwrap().lease.clone();
    let leader = lease.as_ref().filter(|l| !l.released && l.replica != r.cfg.name);
    // A browser asking for the dashboard goes to the leader's.
    if let (Some(l), true) = (leader, !req.uri().path().starts_with("/v1/") && req.method() == axum::http::Method::GET)
    {
        let to = format!("{}{}", l.api.trim_end_matches('/'), req.uri().path_and_query().map_or("", |p| p.as_str()));
        if let Ok(location) = HeaderValue::from_str(&to) {
            return (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, location)]).into_response();
        }
    }
    if !crate::api::authorized(req.headers(), &r.token) {
        return crate::api::unauthorized();
    }
    let error = match leader {
        Some(l) => {
            format!("Control replica {} does not lead: {} does (term {}), at {}", r.cfg.name, l.replica, l.term, l.api)
        }
        None => format!("no Control replica leads yet (replica {} is waiting for the election): try again", r.cfg.name),
    };
    let hint = leader.map_or(String::new(), |l| l.api.clone());
    let mut resp = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(ApiError { error })).into_response();
    if let Ok(v) = HeaderValue::from_str(&hint) {
        resp.headers_mut().insert(LEADER_HEADER, v);
    }
    resp
}

async fn status(State(r): State<Arc<Replica>>, headers: axum::http::HeaderMap) -> Response {
    if !crate::api::authorized(&headers, &r.token) {
        return crate::api::unauthorized();
    }
    let lease = match r.leases.get(subjects::LEASE_KEY).await {
        Ok(l) => l.map(|v| v.value),
        Err(e) => {
            tracing::warn!("reading the lease: {e:#}");
            r.seen.lock().unwrap().lease.clone()
        }
    };
    let mut replicas: Vec<ReplicaReport> = match r.reports.snapshot().await {
        Ok((map, _)) => map.into_values().map(|v| v.value).collect(),
        Err(e) => {
            tracing::warn!("reading the replicas' reports: {e:#}");
            Vec::new()
        }
    };
    replicas.sort_by(|a, b| a.name.cmp(&b.name));
    axum::Json(ControlStatus {
        answered_by: r.cfg.name.clone(),
        lease,
        replicas,
        broker_server: r.broker.client.server_info().server_name,
        state_peers: state_peers(&r.broker).await,
    })
    .into_response()
}

/// The servers holding the container records' stream, its leader first (none: one server,
/// or the broker did not say).
pub(crate) async fn state_peers(broker: &Broker) -> Vec<StreamPeer> {
    let info = async {
        let mut stream = broker.js.get_stream(format!("KV_{}", subjects::CONTAINERS_BUCKET)).await?;
        anyhow::Ok(stream.info().await?.cluster.clone())
    };
    let cluster = match tokio::time::timeout(Duration::from_secs(2), info).await {
        Ok(Ok(Some(c))) => c,
        Ok(Ok(None)) => return Vec::new(),
        Ok(Err(e)) => {
            tracing::warn!("reading the state stream's cluster: {e:#}");
            return Vec::new();
        }
        Err(_) => return Vec::new(),
    };
    let mut peers: Vec<StreamPeer> = cluster
        .leader
        .iter()
        .map(|l| StreamPeer { name: l.clone(), leader: true, current: true, lag: 0, offline: false })
        .collect();
    peers.extend(cluster.replicas.iter().map(|p| StreamPeer {
        name: p.name.clone(),
        leader: false,
        current: p.current,
        lag: p.lag.unwrap_or(0),
        offline: p.offline,
    }));
    peers
}

impl Replica {
    /// Follows the lease until it can take it, then leads.
    async fn campaign(self: Arc<Self>, cfg: ControlConfig) {
        let mut observer = Observer::default();
        let mut failed_reads = 0u32;
        loop {
            match self.leases.get(subjects::LEASE_KEY).await {
                Ok(entry) => {
                    failed_reads = 0;
                    let now = Instant::now();
                    let decision =
                        observer.observe(now, entry.as_ref().map(|v| (v.revision, &v.value)), self.cfg.timing);
                    {
                        let mut seen = self.seen.lock().unwrap();
                        seen.lease = entry.map(|v| v.value);
                        seen.changed = observer.seen_ago(now).map(|ago| now - ago);
                    }
                    if let Decision::TakeOver { revision, term } = decision
                        && let Some((lease, revision, sent)) = self.take_over(revision, term).await
                    {
                        return self.lead(cfg, lease, revision, sent).await;
                    }
                }
                Err(e) => {
                    // A broker that starts, or fails over, answers nothing for a while: said
                    // once, then every few seconds.
                    if failed_reads.is_multiple_of(30) {
                        tracing::warn!("reading the lease: {e:#}");
                    }
                    failed_reads += 1;
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Writes the lease for `term`, guarded by `revision`; the lease, its new revision and
    /// when the write was sent when it landed.
    async fn take_over(&self, revision: Option<u64>, term: u64) -> Option<(LeaderLease, u64, Instant)> {
        let lease = LeaderLease {
            replica: self.cfg.name.clone(),
            api: self.cfg.advertise.clone(),
            term,
            since: herd_proto::now_millis(),
            released: false,
        };
        let sent = Instant::now();
        let write = async {
            match revision {
                None => self.leases.create(subjects::LEASE_KEY, &lease).await,
                Some(r) => self.leases.update(subjects::LEASE_KEY, &lease, r).await,
            }
        };
        match tokio::time::timeout(self.cfg.timing.hold, write).await {
            Ok(Ok(Ok(new))) => Some((lease, new, sent)),
            Ok(Ok(Err(WriteConflict::Conflict))) => {
                tracing::info!("another replica took the lease for term {term} first");
                None
            }
            Ok(Err(e)) => {
                tracing::warn!("taking the lease: {e:#}");
                None
            }
            Err(_) => {
                tracing::warn!("taking the lease: no answer within {:?}", self.cfg.timing.hold);
                None
            }
        }
    }

    /// Leads from the lease written at `revision`: keeps renewing it, loads the state and
    /// serves the API.
    async fn lead(self: Arc<Self>, cfg: ControlConfig, lease: LeaderLease, revision: u64, sent: Instant) {
        let term = lease.term;
        let fence = Fence::new(term, valid_until(sent, self.cfg.timing));
        {
            let mut seen = self.seen.lock().unwrap();
            seen.fence = Some(fence.clone());
            seen.revision = revision;
            seen.lease = Some(lease.clone());
        }
        tokio::spawn(watchdog(fence.clone()));
        tokio::spawn(self.clone().renew(lease, revision, fence.clone()));
        let took = sent.elapsed();
        tracing::info!("replica {} leads in term {term}; loading the cluster state", self.cfg.name);
        let loading = Instant::now();
        match Control::start_with(cfg, self.broker.with_fence(fence.clone()), Some(&self.warm)).await {
            Ok(control) => {
                let _ = self.serving.set(crate::api::router(control.clone()));
                let message = format!(
                    "Control replica {} leads (term {term}); it loaded the state in {} ms",
                    self.cfg.name,
                    loading.elapsed().as_millis()
                );
                tracing::info!("{message} (lease taken in {} ms)", took.as_millis());
                control.events.emit("control", "leader", &self.cfg.name, None, message).await;
            }
            Err(e) => {
                tracing::error!("replica {} could not load the cluster state: {e:#}; it stops", self.cfg.name);
                fence.depose();
            }
        }
    }

    /// Renews the lease until it is lost: taken by another replica (the write meets a
    /// newer revision), or not renewed within the hold (the watchdog ends the process).
    async fn renew(self: Arc<Self>, lease: LeaderLease, mut revision: u64, fence: Fence) {
        let timing = self.cfg.timing;
        loop {
            tokio::time::sleep(timing.renew_every).await;
            if fence.remaining().is_none() {
                return;
            }
            let sent = Instant::now();
            let write = self.leases.update(subjects::LEASE_KEY, &lease, revision);
            match tokio::time::timeout(timing.hold, write).await {
                Ok(Ok(Ok(new))) => {
                    revision = new;
                    fence.extend_until(valid_until(sent, timing));
                    let mut seen = self.seen.lock().unwrap();
                    seen.revision = new;
                    seen.changed = Some(sent);
                }
                Ok(Ok(Err(WriteConflict::Conflict))) => {
                    tracing::error!("replica {}: another replica took the lease (term {})", self.cfg.name, lease.term);
                    fence.depose();
                    return;
                }
                Ok(Err(e)) => tracing::warn!("renewing the lease: {e:#}"),
                Err(_) => tracing::warn!("renewing the lease: no answer within {:?}", timing.hold),
            }
        }
    }

    /// Lets the lease go if this replica leads and still holds it, so another takes over
    /// at once rather than after the lease's time to live.
    async fn release(&self) {
        let (fence, revision, lease) = {
            let seen = self.seen.lock().unwrap();
            (seen.fence.clone(), seen.revision, seen.lease.clone())
        };
        let (Some(fence), Some(lease)) = (fence, lease) else { return };
        if fence.check().is_err() {
            return;
        }
        fence.depose();
        let released = LeaderLease { released: true, ..lease };
        match self.leases.update(subjects::LEASE_KEY, &released, revision).await {
            Ok(Ok(_)) => tracing::info!("replica {} let its lease go", self.cfg.name),
            Ok(Err(_)) => {}
            Err(e) => tracing::warn!("letting the lease go: {e:#}"),
        }
        let _ = self.reports.delete(&subjects::replica_key(&self.cfg.name)).await;
    }

    /// Writes this replica's report every second.
    async fn report(self: Arc<Self>) {
        loop {
            let report = {
                let seen = self.seen.lock().unwrap();
                let leads = seen.fence.as_ref().is_some_and(|f| f.remaining().is_some());
                ReplicaReport {
                    name: self.cfg.name.clone(),
                    api: self.cfg.advertise.clone(),
                    role: if leads { Role::Leader } else { Role::Follower },
                    term: seen.lease.as_ref().map_or(0, |l| l.term),
                    started: self.started,
                    at: herd_proto::now_millis(),
                    lease_seen_ms_ago: if leads {
                        0
                    } else {
                        seen.changed.map_or(0, |at| at.elapsed().as_millis() as u64)
                    },
                    rss_bytes: rss_bytes(),
                }
            };
            if let Err(e) = self.reports.put(&subjects::replica_key(&self.cfg.name), &report).await {
                tracing::debug!("writing the replica's report: {e:#}");
            }
            tokio::time::sleep(REPORT_EVERY).await;
        }
    }
}

/// Ends the process once `fence` no longer holds: a replica that may have been replaced does
/// not go on (what it was doing, another leader resolves from the journal).
async fn watchdog(fence: Fence) {
    loop {
        match fence.remaining() {
            Some(left) => tokio::time::sleep(left.min(Duration::from_millis(50))).await,
            None => {
                tracing::error!(
                    "this Control replica lost its lease for term {} (not renewed in time, or taken over): it stops, \
                     and starts again as a follower",
                    fence.term()
                );
                std::process::exit(DEPOSED_EXIT);
            }
        }
    }
}

/// This process's resident memory, from `/proc/self/status` (0 if unreadable).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_young_follower_presumes_silent_nodes_alive_and_an_old_one_does_not() {
        let heard = herd_proto::node::NodeUsage::default();
        let warm = |age: Duration| Warm {
            monitoring: Arc::default(),
            heartbeats: Arc::new(Mutex::new(
                [("n1".to_string(), (Instant::now(), 7, heard))].into_iter().collect::<Heartbeats>(),
            )),
            since: Instant::now() - age,
        };
        let nodes = ["n1".to_string(), "n2".to_string()];
        let young = warm(Duration::from_secs(1)).heartbeats_of(nodes.iter(), Duration::from_secs(3));
        assert_eq!(young["n1"].1, 7, "a heartbeat heard is kept");
        assert!(young.contains_key("n2"), "a silent node is presumed alive by a young follower");
        let old = warm(Duration::from_secs(10)).heartbeats_of(nodes.iter(), Duration::from_secs(3));
        assert!(old.contains_key("n1") && !old.contains_key("n2"), "an old follower has heard every live node");
    }
}
