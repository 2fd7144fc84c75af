//! Container high availability in the Control node: checkpoint tickers (the seeds' Algorithm
//! 1) and the rescheduling of a failed node's containers (Algorithm 2). See docs/design/ha.md.
//!
//! A ticker asks the container's node for a new version (`SaveVersion`) when it is due:
//! staggered per container, one dump at a time per node. The node stores the version in the
//! version store (a JetStream object store, so a node's failure does not take the versions
//! with it); the record lists it, and retention deletes what the newest versions do not need.
//!
//! When a node is declared failed (no heartbeat for the node timeout, longer than the nodes'
//! lease, so its fenced containers are frozen by then), each of its containers that asks for
//! `restore` is restored on a node the scheduler picks under its placement rules, from its
//! newest version, then older ones, and started fresh from its image when none restores;
//! `restart` starts it fresh at once. The record moves to the new node with its generation
//! bumped before anything starts there, so a copy left on the failed node is known stale.
//! A Control node that starts finds the work left by its predecessor in the records (a
//! container placed on a down node, wanting to run) and does it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use herd_proto::api::{ContainerInfo, NodeState, RunRequest, UpdateRequest};
use herd_proto::ha::{self, HaPolicy, OnNodeFailure, VersionInfo};
use herd_proto::node::{NodeReply, NodeRequest};
use herd_proto::now_millis;
use herd_proto::state::{ContainerRecord, ContainerState, Desired};
use herd_proto::units;
use herd_sched::{Request, Strategy};

use crate::containers::unexpected;
use crate::control::Control;
use crate::error::{Error, Result};

/// Time a node gets to checkpoint a container and store the version.
const SAVE_TIMEOUT: Duration = Duration::from_secs(300);
/// Time a node gets to fetch a version and restore it, or to start a container.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the tickers look for due containers.
const TICK: Duration = Duration::from_millis(200);
/// How often reschedulings left undone are looked for.
const SWEEP: Duration = Duration::from_secs(15);
/// Containers of a failed node rescheduled at once.
const RESCHEDULE_PARALLEL: usize = 8;

/// Checks the availability settings of `herd run`.
pub fn check_policy(ha: &HaPolicy, req: &RunRequest) -> Result<()> {
    check_settings(ha, !req.volumes.is_empty(), req.network.is_some())
}

/// Checks availability settings for a container that has named volumes or shares
/// another's network namespace, or not.
fn check_settings(ha: &HaPolicy, volumes: bool, shares_netns: bool) -> Result<()> {
    if let Some(every) = ha.checkpoint_every_ms
        && every < ha::MIN_CHECKPOINT_EVERY_MS
    {
        return Err(Error::bad_request(format!(
            "--checkpoint-every {every}ms is too short: at least {}ms",
            ha::MIN_CHECKPOINT_EVERY_MS
        )));
    }
    if !(1..=100).contains(&ha.versions) {
        return Err(Error::bad_request(format!("--checkpoint-versions {} is out of range 1-100", ha.versions)));
    }
    if ha.on_node_failure == OnNodeFailure::Restore && ha.checkpoint_every_ms.is_none() {
        return Err(Error::bad_request(
            "--on-node-failure restore needs versions to restore from: add --checkpoint-every",
        ));
    }
    let wants_ha = ha.checkpoint_every_ms.is_some() || ha.on_node_failure != OnNodeFailure::None;
    if wants_ha && volumes {
        return Err(Error::bad_request(
            "a container with named volumes cannot have a ticker or be rescheduled: its volumes live on its node",
        ));
    }
    if wants_ha && shares_netns {
        return Err(Error::bad_request(
            "a container sharing another's network namespace cannot have a ticker or be rescheduled on its own",
        ));
    }
    Ok(())
}

/// When the ticker of each container last tried, so that a failed save waits for the next
/// interval rather than retrying at once.
#[derive(Default)]
struct TickerState {
    attempted: HashMap<String, u64>,
    busy_nodes: std::collections::HashSet<String>,
}

impl Control {
    /// `herd update`: changes a container's ticker and node-failure policy. Its node learns
    /// whether to fence it before the record says it may be restarted elsewhere.
    pub async fn update(&self, name: &str, req: &UpdateRequest) -> Result<ContainerInfo> {
        let _guard = self.lock(name).await;
        let (mut record, state) = self.record_of(name)?;
        let ha = record.ha.updated(req.checkpoint_every_ms, req.checkpoint_versions, req.on_node_failure);
        if let Some(every) = req.checkpoint_every_ms
            && every > 0
            && every < ha::MIN_CHECKPOINT_EVERY_MS
        {
            return Err(Error::bad_request(format!(
                "--checkpoint-every {every}ms is too short: at least {}ms",
                ha::MIN_CHECKPOINT_EVERY_MS
            )));
        }
        check_settings(&ha, !record.host.volumes.is_empty(), record.host.network.is_some())?;
        let fenced = ha.on_node_failure.fenced();
        if fenced != record.ha.on_node_failure.fenced() && state == ContainerState::Running {
            let req = NodeRequest::SetFenced { id: record.id.clone(), fenced };
            self.node_call(&record.node, &req, Duration::from_secs(30)).await?;
        }
        record.ha = ha;
        self.put_record(&record).await?;
        let every = ha
            .checkpoint_every_ms
            .map_or("no ticker".to_string(), |ms| format!("a ticker every {:.1}s", ms as f64 / 1000.0));
        let msg = format!(
            "container {name} updated: {every}, {} versions kept, on node failure: {}",
            ha.versions,
            ha.on_node_failure.as_str()
        );
        self.events.emit("container", "update", name, Some(&record.node), msg).await;
        self.container(name)
    }

    /// `herd restore NAME --version N [--node NODE]`: restores a container that does not run
    /// from one of its ticker versions, on its node or another one; its node need not be up
    /// (the versions are not there).
    pub async fn restore_version(&self, name: &str, version: u64, node: Option<&str>) -> Result<ContainerInfo> {
        let _guard = self.lock(name).await;
        let (record, state) = self.record_of(name)?;
        if state == ContainerState::Running {
            return Err(Error::conflict(format!(
                "container {name} is running: stop it (herd stop {name}) before restoring a version into it"
            )));
        }
        let Some(v) = record.versions.iter().find(|v| v.version == version).cloned() else {
            let known: Vec<String> = record.versions.iter().map(|v| v.version.to_string()).collect();
            return Err(Error::not_found(format!(
                "container {name} has no version {version} (it has: {})",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            )));
        };
        let ready = |n: &str| self.view.read().unwrap().nodes.get(n).is_some_and(|e| e.state == NodeState::Ready);
        let old = record.node.clone();
        let target = match node {
            Some(n) => n.to_string(),
            None if ready(&old) => old.clone(),
            None => self.place_elsewhere(&record, std::slice::from_ref(&old))?,
        };
        {
            let view = self.view.read().unwrap();
            let Some(t) = view.nodes.get(&target) else {
                return Err(Error::not_found(format!("no such node: {target}")));
            };
            if t.state != NodeState::Ready {
                return Err(Error::unavailable(format!("node {target} is down: it cannot restore {name}")));
            }
            if t.record.facts.criu_version.is_none() {
                return Err(Error::conflict(format!(
                    "node {target} cannot restore: CRIU (>= 4.2) is not installed there"
                )));
            }
        }
        let image =
            self.view.read().unwrap().images.get(&record.image).cloned().ok_or_else(|| {
                Error::not_found(format!("image {} of container {name} no longer exists", record.image))
            })?;
        // One generation on when it moves, so that a copy left on its old node is known to be
        // stale (on the same node, the node's copy is the one restored: it keeps its generation).
        let mut moved = record.clone();
        if target != old {
            moved.node = target.clone();
            moved.generation += 1;
        }
        moved.desired = Desired::Running;
        self.put_record(&moved).await?;
        let req = NodeRequest::RestoreVersion { spec: self.spec_of(&moved, &image), version };
        if let Err(e) = self.node_call(&target, &req, RESTORE_TIMEOUT).await {
            if target != old {
                self.clear_on(&target, &record.id).await;
            }
            self.put_record(&record).await?;
            return Err(Error::new(
                e.kind,
                format!("could not restore version {version} of {name} on {target}: {}", e.message),
            ));
        }
        self.refresh_status(&moved).await?;
        if target != old && ready(&old) {
            self.clear_on(&old, &record.id).await;
        }
        let from = if target != old { format!(", moved from {old}") } else { String::new() };
        let msg = format!(
            "container {name} restored from version {version} ({}) on {target}{from}",
            units::Bytes(v.full_bytes)
        );
        self.events.emit("container", "restore", name, Some(&target), msg).await;
        self.container(name)
    }

    /// Runs the checkpoint tickers for the Control node's life.
    pub(crate) async fn run_tickers(self: Arc<Self>) {
        let state = Arc::new(std::sync::Mutex::new(TickerState::default()));
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for (name, node) in self.due_tickers(&state) {
                let control = self.clone();
                let state = state.clone();
                tokio::spawn(async move {
                    if let Err(e) = control.tick(&name).await {
                        tracing::warn!("ticker checkpoint of {name} failed: {}", e.message);
                        let msg = format!("ticker checkpoint of {name} failed: {}", e.message);
                        control.events.emit("container", "ticker-failed", &name, Some(&node), msg).await;
                    }
                    state.lock().unwrap().busy_nodes.remove(&node);
                });
            }
        }
    }

    /// The containers whose ticker is due now, on nodes not busy with another dump, the most
    /// overdue first (one slow container must not starve the others of its node); their
    /// nodes are marked busy.
    fn due_tickers(&self, state: &std::sync::Mutex<TickerState>) -> Vec<(String, String)> {
        let now = now_millis();
        let mut state = state.lock().unwrap();
        let migrating: std::collections::HashSet<String> = self.migrating.lock().unwrap().keys().cloned().collect();
        let view = self.view.read().unwrap();
        let mut overdue = Vec::new();
        for c in view.containers.values() {
            let Some(every) = c.ha.checkpoint_every_ms else { continue };
            if c.desired != Desired::Running
                || view.state_of(c) != ContainerState::Running
                || migrating.contains(&c.name)
                || state.busy_nodes.contains(&c.node)
                || view.nodes.get(&c.node).is_none_or(|n| n.state != NodeState::Ready)
            {
                continue;
            }
            let last = c.versions.last().map(|v| v.created_at).max(state.attempted.get(&c.name).copied());
            let at = ha::next_due(&c.name, c.created_at, every, last);
            if now >= at {
                overdue.push((at, c.name.clone(), c.node.clone()));
            }
        }
        overdue.sort();
        let mut due = Vec::new();
        for (_, name, node) in overdue {
            if state.busy_nodes.insert(node.clone()) {
                state.attempted.insert(name.clone(), now);
                due.push((name, node));
            }
        }
        state.attempted.retain(|name, _| view.containers.contains_key(name));
        due
    }

    /// One ticker checkpoint of `name`: a new version, recorded, and retention applied.
    async fn tick(&self, name: &str) -> Result<()> {
        let _guard = self.lock(name).await;
        if self.migrating.lock().unwrap().contains_key(name) {
            return Ok(());
        }
        let (mut record, state) = self.record_of(name)?;
        if state != ContainerState::Running || record.ha.checkpoint_every_ms.is_none() {
            return Ok(());
        }
        let version = record.versions.last().map_or(1, |v| v.version + 1);
        let builds_on = ha::builds_on(&record.versions, record.ha.versions).unwrap_or_default();
        let req = NodeRequest::SaveVersion { id: record.id.clone(), version, builds_on };
        let info = match self.node_call(&record.node, &req, SAVE_TIMEOUT).await? {
            NodeReply::VersionSaved(info) => info,
            other => return Err(unexpected(&record.node, &other)),
        };
        // The record may have changed while the node worked (it holds the lock, but the
        // status watch and migration reports write records too): read it again.
        if let Ok((fresh, _)) = self.record_of(name) {
            record = fresh;
        }
        record.versions.push(info.clone());
        let keep = ha::retained(&record.versions, record.ha.versions);
        let dropped: Vec<VersionInfo> =
            record.versions.iter().filter(|v| !keep.contains(&v.version)).cloned().collect();
        record.versions.retain(|v| keep.contains(&v.version));
        self.put_record(&record).await?;
        self.delete_versions(&record.id, &dropped).await;
        let kind = if info.base == info.version { "base".to_string() } else { format!("delta on v{}", info.base) };
        let msg = format!(
            "ticker checkpoint of {name}: version {} ({kind}), paused {} ms, {} stored of {}",
            info.version,
            info.pause_ms,
            units::Bytes(info.stored_bytes),
            units::Bytes(info.full_bytes)
        );
        self.events.emit("container", "ticker", name, Some(&record.node), msg).await;
        Ok(())
    }

    /// Deletes versions from the version store: the manifest first, so that a version is
    /// never listed without its pack.
    pub(crate) async fn delete_versions(&self, id: &str, versions: &[VersionInfo]) {
        for v in versions {
            for object in [ha::manifest_object(id, v.version), ha::pack_object(id, v.version)] {
                if let Err(e) = self.version_store.delete(&object).await {
                    tracing::debug!("version object {object} not deleted: {e}");
                }
            }
        }
    }

    /// Reschedules, now and then, the containers of down nodes that want to run and those
    /// whose rescheduling did not finish: after a Control node start, the work its
    /// predecessor left; later, reschedulings that failed (no node could take a container,
    /// the node picked failed too).
    pub(crate) async fn reschedule_down_nodes(self: Arc<Self>) {
        // Nodes are down until their first heartbeat reaches this Control node.
        tokio::time::sleep(self.cfg.node_timeout * 2).await;
        loop {
            self.clone().reschedule_leftovers().await;
            tokio::time::sleep(SWEEP).await;
        }
    }

    async fn reschedule_leftovers(self: Arc<Self>) {
        let mut down: Vec<String> = {
            let view = self.view.read().unwrap();
            let failed = view.nodes.values().filter(|n| n.state == NodeState::Down).map(|n| n.record.name.clone());
            // Reschedulings a crash cut short, whatever the state of their failed node now.
            let unfinished = view.containers.values().filter_map(|c| c.rescheduled_from.clone());
            failed.chain(unfinished).collect()
        };
        down.sort();
        down.dedup();
        for node in down {
            self.clone().reschedule_node(&node).await;
        }
    }

    /// Reschedules the containers of failed node `node` by their policies.
    pub(crate) async fn reschedule_node(self: Arc<Self>, node: &str) {
        let hosted: Vec<String> = {
            let view = self.view.read().unwrap();
            let mut names: Vec<&ContainerRecord> = view
                .containers
                .values()
                .filter(|c| {
                    (c.node == node || c.rescheduled_from.as_deref() == Some(node))
                        && c.desired == Desired::Running
                        && c.ha.on_node_failure != OnNodeFailure::None
                })
                .collect();
            names.sort_by_key(|c| c.created_at);
            names.into_iter().map(|c| c.name.clone()).collect()
        };
        if hosted.is_empty() {
            return;
        }
        tracing::info!("rescheduling {} containers of failed node {node}", hosted.len());
        futures::stream::iter(hosted)
            .for_each_concurrent(RESCHEDULE_PARALLEL, |name| {
                let control = self.clone();
                async move {
                    if let Err(e) = control.reschedule(&name, node).await {
                        let msg =
                            format!("container {name} of failed node {node} could not be rescheduled: {}", e.message);
                        control.events.emit("container", "reschedule-failed", &name, Some(node), msg).await;
                    }
                }
            })
            .await;
    }

    /// Picks a node for `record` other than `failed` (and those in `avoid`), under its
    /// placement rules.
    fn place_elsewhere(&self, record: &ContainerRecord, avoid: &[String]) -> Result<String> {
        let mut request = crate::containers::with_placement_rules(
            Request {
                cpus_milli: record.limits.cpus_milli.unwrap_or(0),
                memory_bytes: record.limits.memory_bytes.unwrap_or(0),
                ports: record.host.ports.clone(),
                ..Default::default()
            },
            record,
        )?;
        for n in avoid {
            let not_there = herd_sched::Constraint::parse(&format!("node.name!={n}"))
                .map_err(|e| Error::bad_request(format!("node name {n}: {}", e.0)))?;
            request.constraints.push(not_there);
        }
        let strategy = Strategy::parse(&self.cfg.strategy, rand::random()).map_err(|e| Error::bad_request(e.0))?;
        let view = self.view.read().unwrap();
        herd_sched::place(&view.candidates(&request), &request, strategy).map_err(|e| Error::conflict(e.to_string()))
    }

    /// Reschedules one container of failed node `failed`.
    async fn reschedule(&self, name: &str, failed: &str) -> Result<()> {
        let started = Instant::now();
        let _guard = self.lock(name).await;
        let (mut record, state) = self.record_of(name)?;
        if record.desired != Desired::Running {
            return Ok(()); // Stopped meanwhile.
        }
        if record.rescheduled_from.as_deref() == Some(failed) && record.node != failed {
            // A Control node stopped half-way through: done if the container runs where its
            // record points, else that node's partial restore goes and it starts over.
            if state == ContainerState::Running {
                record.rescheduled_from = None;
                return self.put_record(&record).await;
            }
            self.clear_on(&record.node.clone(), &record.id).await;
        } else if record.node != failed {
            return Ok(()); // Moved meanwhile.
        } else if self.view.read().unwrap().nodes.get(failed).is_some_and(|n| n.state == NodeState::Ready) {
            return Ok(()); // It came back.
        }
        let image =
            self.view.read().unwrap().images.get(&record.image).cloned().ok_or_else(|| {
                Error::not_found(format!("image {} of container {name} no longer exists", record.image))
            })?;
        let mut avoid = vec![failed.to_string()];
        let versions: Vec<VersionInfo> = match record.ha.on_node_failure {
            OnNodeFailure::Restore => record.versions.iter().rev().cloned().collect(),
            _ => Vec::new(),
        };
        let mut why_fresh = if versions.is_empty() && record.ha.on_node_failure == OnNodeFailure::Restore {
            "it has no version".to_string()
        } else {
            "its policy is restart".to_string()
        };
        // Each version once, and once more after an error that says nothing about the version
        // (a timeout of a broker or node under load).
        let mut attempts: Vec<&VersionInfo> = versions.iter().collect();
        let mut retried: HashMap<u64, u32> = HashMap::new();
        while !attempts.is_empty() {
            let v = attempts.remove(0);
            let target = self.place_elsewhere(&record, &avoid)?;
            record = self.move_record(record, &target).await?;
            let req = NodeRequest::RestoreVersion { spec: self.spec_of(&record, &image), version: v.version };
            match self.node_call(&target, &req, RESTORE_TIMEOUT).await {
                Ok(_) => {
                    record.rescheduled_from = None;
                    self.put_record(&record).await?;
                    self.refresh_status(&record).await?;
                    let age = record.versions.last().map_or(0, |newest| newest.created_at.saturating_sub(v.created_at));
                    let msg = format!(
                        "container {name} of failed node {failed} restored on {target} from version {} (taken {:.1}s before the newest; {}) in {:.2}s",
                        v.version,
                        age as f64 / 1000.0,
                        units::Bytes(v.full_bytes),
                        started.elapsed().as_secs_f64()
                    );
                    self.events.emit("container", "reschedule", name, Some(&target), msg).await;
                    return Ok(());
                }
                Err(e) => {
                    let transient = ["timed out", "no data from the broker", "did not answer", "not connected"]
                        .iter()
                        .any(|t| e.message.contains(t));
                    let tries = retried.entry(v.version).or_insert(0);
                    *tries += 1;
                    let again = transient && *tries <= 3;
                    if again {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    let msg = format!(
                        "version {} of {name} did not restore on {target}: {}; {}",
                        v.version,
                        e.message,
                        if again { "trying it again" } else { "falling back" }
                    );
                    if again {
                        attempts.insert(0, v);
                    }
                    self.events.emit("container", "reschedule-fallback", name, Some(&target), msg).await;
                    why_fresh = format!("no version restored (the last error: {})", e.message);
                    self.clear_on(&target, &record.id).await;
                    if self.view.read().unwrap().nodes.get(&target).is_none_or(|n| n.state != NodeState::Ready) {
                        avoid.push(target);
                    }
                }
            }
        }
        let target = self.place_elsewhere(&record, &avoid)?;
        record = self.move_record(record, &target).await?;
        let req = NodeRequest::Create { spec: self.spec_of(&record, &image) };
        self.node_call(&target, &req, RESTORE_TIMEOUT)
            .await
            .map_err(|e| Error::new(e.kind, format!("starting {name} fresh on {target} failed too: {}", e.message)))?;
        record.rescheduled_from = None;
        self.put_record(&record).await?;
        self.refresh_status(&record).await?;
        let msg = format!(
            "container {name} of failed node {failed} started fresh from its image on {target} in {:.2}s: {why_fresh}",
            started.elapsed().as_secs_f64()
        );
        self.events.emit("container", "reschedule-fresh", name, Some(&target), msg).await;
        Ok(())
    }

    /// Points the record at `target`, one generation on: from here, a copy anywhere else is
    /// stale.
    async fn move_record(&self, mut record: ContainerRecord, target: &str) -> Result<ContainerRecord> {
        if record.rescheduled_from.is_none() {
            record.rescheduled_from = Some(record.node.clone());
        }
        record.node = target.to_string();
        record.generation += 1;
        self.put_record(&record).await?;
        Ok(record)
    }

    /// Removes what a failed restore left on `node`.
    async fn clear_on(&self, node: &str, id: &str) {
        let req = NodeRequest::Remove { id: id.to_string(), force: true, keep_checkpoints: false };
        if let Err(e) = self.node_call(node, &req, Duration::from_secs(60)).await {
            tracing::warn!("could not clean up after a failed restore on {node}: {}", e.message);
        }
    }
}
