//! Container operations: run, stop, remove and logs (checkpoint and restore are in
//! [`crate::checkpoints`]).
//!
//! Each one validates first, then changes the cluster state and the node together, undoing
//! its own changes when the node fails, so a failed command leaves nothing behind.

use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use herd_proto::api::{ContainerInfo, ContainerSummary, LogLine, RunRequest};
use herd_proto::names::{normalize_image, parse_pair, validate_container_name};
use herd_proto::node::{ContainerSpec, LogChunk, NodeReply, NodeRequest};
use herd_proto::process::{UserSpec, clean_workdir};
use herd_proto::state::{ContainerRecord, ContainerState, Desired, ImageRecord, Limits, PlacementRules};
use herd_proto::{now_millis, units};
use herd_sched::{Request, Strategy};
use rand::Rng;

use crate::control::Control;
use crate::error::{Error, Result};

/// The smallest memory limit accepted: a container's runtime needs a few MiB to start.
pub const MIN_MEMORY: u64 = 6 << 20;
/// The largest CPU limit, in thousandths of a CPU (what `--cpus` parses: a million CPUs).
const MAX_CPUS_MILLI: u64 = 1_000_000_000;
/// Time a node gets to fetch layers and start a container.
pub(crate) const CREATE_TIMEOUT: Duration = Duration::from_secs(180);
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn new_id() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    hex::encode(bytes)
}

/// Checks the limits of a run request.
pub fn validate_limits(limits: &Limits) -> Result<()> {
    if let Some(m) = limits.memory_bytes
        && m < MIN_MEMORY
    {
        return Err(Error::bad_request(format!(
            "memory limit {} is below the minimum of {}: use --memory 6m or more",
            units::Bytes(m),
            units::Bytes(MIN_MEMORY)
        )));
    }
    if limits.cpus_milli == Some(0) {
        return Err(Error::bad_request("--cpus must be more than 0"));
    }
    if let Some(m) = limits.memory_bytes
        && m > i64::MAX as u64
    {
        // runc and the kernel take an i64: larger would wrap to "no limit" while herd showed a number.
        return Err(Error::bad_request(format!(
            "memory limit {m} is beyond what a cgroup takes: leave --memory out for no limit"
        )));
    }
    if limits.cpus_milli.is_some_and(|c| c > MAX_CPUS_MILLI) {
        return Err(Error::bad_request("--cpus must be at most 1000000"));
    }
    if limits.pids == Some(0) {
        return Err(Error::bad_request("the pids limit must be at least 1 (leave it out for no limit)"));
    }
    if let Some(p) = limits.pids
        && p > units::MAX_PIDS
    {
        // A cgroup's pids.max refuses it, and runc turns u64::MAX (as -1) into "max": what herd
        // showed would not be what the container has.
        return Err(Error::bad_request(format!(
            "the pids limit {p} is above {}, the most processes Linux allows (PID_MAX_LIMIT): \
             give at most {} or leave --pids-limit out (or give -1) for no limit",
            units::MAX_PIDS,
            units::MAX_PIDS
        )));
    }
    limits.log.validate().map_err(|e| Error::bad_request(e.0))
}

/// Room kept beside a container's record in one broker message: the record goes to the
/// `herd-containers` bucket, and the node's create request carries as much again plus its
/// layers, so a record that only just fits would still fail on the way to the node.
const RECORD_ROOM: usize = 64 << 10;

/// Refuses (HTTP 413) a container whose record the broker would not carry in one message: its
/// command, environment and labels are too large. Checked before anything is reserved.
pub fn fits_the_broker(record: &ContainerRecord, max_payload: usize) -> Result<()> {
    let size = serde_json::to_vec(record).map(|v| v.len()).unwrap_or(usize::MAX);
    if size.saturating_add(RECORD_ROOM) <= max_payload {
        return Ok(());
    }
    Err(Error::too_large(format!(
        "the request is too large: container {}'s record (its command, environment and labels) is {}; the limit is {} \
         (the broker's max_payload, the most it carries in one message) less {} kept for what travels with it: \
         make them smaller, or put large data in a volume or in the image",
        record.name,
        units::Bytes(size as u64),
        units::Bytes(max_payload as u64),
        units::Bytes(RECORD_ROOM as u64)
    )))
}

/// How a container's process starts: what [`resolve_process`] makes of an image's
/// configuration and `herd run`'s overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    /// `USER[:GROUP]`, checked but not resolved (its node does that); empty for root.
    pub user: String,
}

/// The process of a container made from `image` as `req` asks, as Docker merges them: an
/// `--entrypoint` replaces the image's `Entrypoint` and drops its `Cmd` (only the command given
/// follows it; `""` clears it), a command replaces `Cmd`, `--env` adds to the image's `Env`,
/// `--workdir` and `--user` replace `WorkingDir` and `User`.
pub fn resolve_process(image: &ImageRecord, req: &RunRequest) -> Result<Process> {
    let mut args: Vec<String> = match &req.entrypoint {
        // Docker's `--entrypoint ""` arrives as one empty string: no entrypoint.
        Some(e) => e.iter().filter(|a| !(e.len() == 1 && a.is_empty())).cloned().collect(),
        None => image.config.entrypoint.clone(),
    };
    if req.command.is_empty() && req.entrypoint.is_none() {
        args.extend(image.config.cmd.iter().cloned());
    } else {
        args.extend(req.command.iter().cloned());
    }
    if args.is_empty() {
        return Err(Error::bad_request(if req.entrypoint.is_some() {
            format!(
                "no command: --entrypoint replaces the entrypoint and the command of image {}: give the command after --, for example: herd run --entrypoint /bin/sh {} -- -c 'echo hi'",
                image.name, image.name
            )
        } else {
            format!(
                "image {} has no command: give one after --, for example: herd run {} -- sleep 3600",
                image.name, image.name
            )
        }));
    }
    let mut merged: Vec<(String, String)> = Vec::new();
    let mut set = |k: String, v: String| match merged.iter_mut().find(|(ek, _)| *ek == k) {
        Some(e) => e.1 = v,
        None => merged.push((k, v)),
    };
    let (pk, pv) = DEFAULT_PATH.split_once('=').unwrap();
    set(pk.to_string(), pv.to_string());
    for e in &image.config.env {
        if let Some((k, v)) = e.split_once('=') {
            set(k.to_string(), v.to_string());
        }
    }
    for e in &req.env {
        let (k, v) = parse_pair(e, "--env").map_err(|e| Error::bad_request(e.0))?;
        set(k, v);
    }
    let working_dir = match req.workdir.as_deref().filter(|w| !w.is_empty()) {
        Some(w) => clean_workdir(w).map_err(|e| Error::bad_request(e.0))?,
        None if image.config.working_dir.is_empty() => "/".into(),
        None => clean_workdir(&image.config.working_dir).map_err(|e| {
            Error::bad_request(format!("image {}'s WorkingDir: {}; give one with --workdir", image.name, e.0))
        })?,
    };
    let user = match req.user.as_deref().filter(|u| !u.is_empty()) {
        Some(u) => {
            UserSpec::parse(u).map_err(|e| Error::bad_request(e.0))?;
            u.to_string()
        }
        None if image.config.user.is_empty() => String::new(),
        None => {
            UserSpec::parse(&image.config.user).map_err(|e| {
                Error::bad_request(format!("image {}'s User: {}; give one with --user", image.name, e.0))
            })?;
            image.config.user.clone()
        }
    };
    Ok(Process { args, env: merged.into_iter().map(|(k, v)| format!("{k}={v}")).collect(), working_dir, user })
}

/// What [`check_run`] made of a run request.
#[derive(Debug)]
pub struct CheckedRun {
    /// The image, normalised (`busybox` is `busybox:latest`).
    pub image_name: String,
    pub strategy: Strategy,
    /// The placement request: resources, node, constraints and affinities.
    pub placement: Request,
    /// Ports, network and volumes.
    pub requested: crate::hostconfig::Requested,
}

/// The checks of a run request that need no cluster state: image name, limits, strategy
/// (`default_strategy` when it names none), placement expressions, ports, network, volumes and
/// labels. Placement input is checked before anything is created, so bad input leaves nothing
/// behind.
pub fn check_run(req: &RunRequest, default_strategy: &str) -> Result<CheckedRun> {
    let image_name = normalize_image(&req.image).map_err(|e| Error::bad_request(e.0))?;
    validate_limits(&req.limits)?;
    let strategy_name = req.strategy.as_deref().unwrap_or(default_strategy);
    let strategy = Strategy::parse(strategy_name, rand::rng().random()).map_err(|e| Error::bad_request(e.0))?;
    let placement = Request {
        cpus_milli: req.limits.cpus_milli.unwrap_or(0),
        memory_bytes: req.limits.memory_bytes.unwrap_or(0),
        node: req.node.clone(),
        ..Default::default()
    }
    .with_expressions(&req.constraints, &req.affinities)
    .map_err(|e| Error::bad_request(e.0))?;
    let requested = crate::hostconfig::parse(req)?;
    crate::ha::check_policy(&req.ha, req)?;
    for k in req.labels.keys() {
        if k.is_empty() {
            return Err(Error::bad_request("label keys must not be empty"));
        }
    }
    Ok(CheckedRun { image_name, strategy, placement, requested })
}

/// The containers a listing shows (running ones unless `all`), newest first.
fn listed(view: &crate::view::View, all: bool) -> Vec<&ContainerRecord> {
    let mut out: Vec<&ContainerRecord> =
        view.containers.values().filter(|c| all || view.state_of(c) == ContainerState::Running).collect();
    out.sort_unstable_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| a.name.cmp(&b.name)));
    out
}

/// `request` with the constraints and affinities `record` was run with: a container that
/// moves keeps its placement rules.
pub(crate) fn with_placement_rules(request: Request, record: &ContainerRecord) -> Result<Request> {
    request.with_expressions(&record.placement.constraints, &record.placement.affinities).map_err(|e| {
        Error::conflict(format!("the stored placement rules of container {} do not parse: {}", record.name, e.0))
    })
}

impl Control {
    pub(crate) fn spec_of(&self, c: &ContainerRecord, image: &ImageRecord) -> ContainerSpec {
        ContainerSpec {
            id: c.id.clone(),
            name: c.name.clone(),
            image: c.image.clone(),
            layers: image.layers.clone(),
            args: c.args.clone(),
            env: c.env.clone(),
            working_dir: c.working_dir.clone(),
            user: c.user.clone(),
            ip: c.ip,
            limits: c.limits,
            labels: c.labels.clone(),
            host: c.host.clone(),
            generation: c.generation,
            fenced: c.ha.on_node_failure.fenced(),
        }
    }

    pub fn list_containers(&self, all: bool) -> Vec<ContainerInfo> {
        let view = self.view.read().unwrap();
        listed(&view, all).into_iter().map(|c| view.container_info(c)).collect()
    }

    /// `herd ps`: the same list as [`Control::list_containers`], in summary, as JSON. It is
    /// written while the view is read, from the records themselves: copying each container's
    /// strings first was most of the time of listing 100,000 containers.
    pub fn list_summaries_json(&self, all: bool) -> Vec<u8> {
        let view = self.view.read().unwrap();
        let list: Vec<ContainerSummary> = listed(&view, all).into_iter().map(|c| view.container_summary(c)).collect();
        // About 230 bytes a container: sized once rather than grown by doubling.
        let mut out = Vec::with_capacity(256 * list.len() + 2);
        serde_json::to_writer(&mut out, &list).expect("a summary serialises");
        out
    }

    pub fn container(&self, name: &str) -> Result<ContainerInfo> {
        let view = self.view.read().unwrap();
        view.containers.get(name).map(|c| view.container_info(c)).ok_or_else(|| no_such_container(name))
    }

    pub(crate) fn record_of(&self, name: &str) -> Result<(ContainerRecord, ContainerState)> {
        let view = self.view.read().unwrap();
        let c = view.containers.get(name).ok_or_else(|| no_such_container(name))?;
        Ok((c.clone(), view.state_of(c)))
    }

    fn generate_name(&self, image: &str) -> String {
        let base: String = image
            .split(':')
            .next()
            .unwrap_or("c")
            .rsplit('/')
            .next()
            .unwrap_or("c")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .take(40)
            .collect();
        let base = if base.is_empty() { "c".to_string() } else { base };
        let view = self.view.read().unwrap();
        loop {
            let suffix: u16 = rand::rng().random();
            let name = format!("{base}-{suffix:04x}");
            if !view.containers.contains_key(&name) {
                return name;
            }
        }
    }

    /// `herd run`.
    pub async fn run(&self, req: RunRequest) -> Result<ContainerInfo> {
        let CheckedRun { image_name, strategy, placement, requested } = check_run(&req, &self.cfg.strategy)?;
        let image = self.view.read().unwrap().images.get(&image_name).cloned().ok_or_else(|| {
            Error::not_found(format!(
                "no such image: {image_name}: import it first with herd image import {} PATH",
                image_name.trim_end_matches(":latest")
            ))
        })?;
        let process = resolve_process(&image, &req)?;
        let name = match req.name {
            Some(n) => {
                validate_container_name(&n).map_err(|e| Error::bad_request(e.0))?;
                n
            }
            None => self.generate_name(&image_name),
        };
        let _guard = self.lock(&name).await;

        // Placement, the address and the record enter the view under one lock, so the next
        // placement already counts this container's memory, CPU, slot and ports: two runs
        // at once can never both take a node's last free memory or the same host port.
        let (record, joined) = {
            let mut view = self.view.write().unwrap();
            if let Some(existing) = view.containers.get(&name) {
                return Err(name_in_use(&name, &existing.id));
            }
            let (host_config, shared) = crate::hostconfig::resolve(&view, &requested)?;
            self.ensure_volumes_stay(&view, &host_config)?;
            let placement = crate::hostconfig::placement(placement, &host_config);
            let node = view.place(&placement, strategy).map_err(|e| {
                if req.node.is_some() && e.exclusions.iter().any(|x| x.reason == "no such node") {
                    Error::not_found(format!("no such node: {}", req.node.as_deref().unwrap_or("")))
                } else {
                    Error::conflict(e.to_string())
                }
            })?;
            // A container that joins another's network namespace has that one's address.
            let ip = match &shared {
                Some(s) => s.ip,
                None => self.ipam.lock().unwrap().allocate().ok_or_else(|| {
                    Error::conflict(format!("no free address left in the container range {}", self.cfg.container_cidr))
                })?,
            };
            let record = ContainerRecord {
                id: new_id(),
                name: name.clone(),
                image: image.name.clone(),
                image_id: image.id.clone(),
                node,
                ip,
                limits: req.limits,
                args: process.args,
                env: process.env,
                working_dir: process.working_dir,
                user: process.user,
                exposed_ports: image.config.exposed_ports.clone(),
                labels: req.labels.clone(),
                created_at: now_millis(),
                desired: Desired::Running,
                checkpoints: Vec::new(),
                migrations: Vec::new(),
                host: host_config,
                placement: PlacementRules { constraints: req.constraints.clone(), affinities: req.affinities.clone() },
                ha: req.ha,
                versions: Vec::new(),
                generation: 0,
                rescheduled_from: None,
            };
            fits_the_broker(&record, self.broker.max_payload())?;
            view.insert_container(record.clone());
            (record, shared.is_some())
        };
        let node = record.node.clone();
        let created = self.containers.create(&name, &record).await;
        if !matches!(created, Ok(Ok(_))) {
            // Take the reservation back (unless the watch already replaced it with another
            // Control node's record of that name) and free the address.
            let mut view = self.view.write().unwrap();
            if view.containers.get(&name).is_some_and(|c| c.id == record.id) {
                view.remove_container(&name);
            }
            drop(view);
            if !joined {
                self.ipam.lock().unwrap().release(record.ip);
            }
            return match created {
                Err(e) => Err(e.into()),
                _ => Err(name_in_use(&name, "(another Control node)")),
            };
        }

        let spec = self.spec_of(&record, &image);
        match self.node_call(&node, &NodeRequest::Create { spec }, CREATE_TIMEOUT).await {
            Ok(_) => {}
            Err(e) => {
                // Undo: the node cleans up its own partial work; make sure, then forget the record.
                let _ = self
                    .node_call(
                        &node,
                        &NodeRequest::Remove { id: record.id.clone(), force: true, keep_checkpoints: false },
                        Duration::from_secs(30),
                    )
                    .await;
                self.forget(&record).await;
                return Err(Error::new(e.kind, format!("could not start container {name}: {}", e.message)));
            }
        }
        self.refresh_status(&record).await?;
        self.events
            .emit(
                "container",
                "create",
                &name,
                Some(&node),
                format!("container {name} created on {node} with address {}", record.ip),
            )
            .await;
        self.container(&name)
    }

    /// Deletes a container's records and releases its address.
    async fn forget(&self, record: &ContainerRecord) {
        self.delete_versions(&record.id, &record.versions).await;
        if let Err(e) = self.containers.delete(&record.name).await {
            tracing::warn!("could not delete the record of {}: {e:#}", record.name);
        }
        // Every node's status of it: its own node's, and a former one's that did not forget it.
        let mut nodes = self.view.write().unwrap().forget_statuses(&record.id);
        if !nodes.contains(&record.node) {
            nodes.push(record.node.clone());
        }
        for node in nodes {
            if let Err(e) = self.statuses.delete(&herd_proto::subjects::status_key(&node, &record.id)).await {
                tracing::warn!("could not delete the status of {} on {node}: {e:#}", record.name);
            }
        }
        let mut view = self.view.write().unwrap();
        view.remove_container(&record.name);
        // Containers sharing a network namespace share its address: the last one frees it.
        let still_used = view.containers.values().any(|c| c.ip == record.ip);
        drop(view);
        if !still_used {
            self.ipam.lock().unwrap().release(record.ip);
        }
    }

    pub(crate) async fn set_desired(&self, mut record: ContainerRecord, desired: Desired) -> Result<ContainerRecord> {
        record.desired = desired;
        self.containers.put(&record.name, &record).await?;
        self.view.write().unwrap().insert_container(record.clone());
        Ok(record)
    }

    /// `herd stop`.
    pub async fn stop(&self, name: &str, timeout_secs: u64) -> Result<ContainerInfo> {
        self.ensure_not_migrating(name)?;
        let _guard = self.lock(name).await;
        let (record, state) = self.record_of(name)?;
        if state == ContainerState::Running {
            let req = NodeRequest::Stop { id: record.id.clone(), timeout_secs };
            self.node_call(&record.node, &req, Duration::from_secs(timeout_secs + 30)).await?;
            self.refresh_status(&record).await?;
            self.events.emit("container", "stop", name, Some(&record.node), format!("container {name} stopped")).await;
        }
        if record.desired != Desired::Stopped {
            self.set_desired(record, Desired::Stopped).await?;
        }
        self.container(name)
    }

    /// `herd rm`.
    pub async fn remove(&self, name: &str, force: bool) -> Result<()> {
        self.ensure_not_migrating(name)?;
        let _guard = self.lock(name).await;
        let (record, state) = self.record_of(name)?;
        if state == ContainerState::Running && !force {
            return Err(Error::conflict(format!(
                "container {name} is running: stop it first (herd stop {name}) or force it (herd rm -f {name})"
            )));
        }
        let sharers = crate::hostconfig::sharers(&self.view.read().unwrap(), name);
        if !sharers.is_empty() && !force {
            return Err(Error::conflict(format!(
                "containers {} share the network namespace of {name}: remove them first, or force it (herd rm -f {name}) and leave them without a network",
                sharers.join(", ")
            )));
        }
        let req = NodeRequest::Remove { id: record.id.clone(), force, keep_checkpoints: false };
        match self.node_call(&record.node, &req, Duration::from_secs(60)).await {
            Ok(_) => {}
            Err(e) if force && e.kind == crate::error::Kind::Unavailable => {
                tracing::warn!("removing {name} while {}: the node deletes it when it returns", e.message);
            }
            Err(e) if e.kind == crate::error::Kind::Unavailable => {
                return Err(Error::unavailable(format!(
                    "{}: herd rm -f {name} removes it anyway (the node deletes it when it comes back)",
                    e.message
                )));
            }
            Err(e) => return Err(e),
        }
        self.forget(&record).await;
        // Checkpoints taken before a migration stay on the node it left: they go too.
        let mut elsewhere: Vec<&str> =
            record.checkpoints.iter().map(|c| c.node.as_str()).filter(|n| *n != record.node).collect();
        elsewhere.sort();
        elsewhere.dedup();
        for node in elsewhere {
            let req = NodeRequest::Remove { id: record.id.clone(), force: false, keep_checkpoints: false };
            if let Err(e) = self.node_call(node, &req, Duration::from_secs(60)).await {
                tracing::warn!("the checkpoints of {name} on {node} stay there: {}", e.message);
            }
        }
        self.events.emit("container", "remove", name, Some(&record.node), format!("container {name} removed")).await;
        Ok(())
    }

    /// One chunk of a container's log from `offset`, or with `tail`, from where its last
    /// `tail` entries start.
    pub async fn logs_chunk(&self, name: &str, offset: u64, tail: Option<u64>) -> Result<LogChunk> {
        let (record, _) = self.record_of(name)?;
        let req = NodeRequest::Logs { id: record.id.clone(), offset, max_bytes: 256 << 10, tail };
        match self.node_call(&record.node, &req, Duration::from_secs(15)).await? {
            NodeReply::Logs(chunk) => Ok(chunk),
            other => Err(unexpected(&record.node, &other)),
        }
    }

    /// `herd logs [-f] [--tail N] [--since TIME]`: newline-delimited JSON log entries (and,
    /// where the node no longer has what came before, how many bytes were rotated away); with
    /// `follow`, until the container stops or the client goes away. With `tail`, from the last
    /// `tail` entries on; with `since`, only the entries written at or after it (as Docker: the
    /// tail is taken first, then filtered).
    pub fn logs_stream(self: std::sync::Arc<Self>, name: String, query: LogQuery) -> impl Stream<Item = Result<Bytes>> {
        futures::stream::unfold(Some((0u64, query.tail)), move |state| {
            let this = self.clone();
            let name = name.clone();
            async move {
                let (mut offset, mut tail) = state?;
                loop {
                    let chunk = match this.logs_chunk(&name, offset, tail.take()).await {
                        Ok(c) => c,
                        Err(e) => return Some((Err(e), None)),
                    };
                    let advanced = chunk.next_offset != offset;
                    offset = chunk.next_offset;
                    let entries: Vec<LogLine> = chunk
                        .entries
                        .into_iter()
                        .filter(|e| query.since.is_none_or(|since| e.time >= since))
                        .map(LogLine::Entry)
                        .collect();
                    if !entries.is_empty() || chunk.dropped > 0 {
                        let mut buf = Vec::new();
                        let rotated = (chunk.dropped > 0).then_some(LogLine::Rotated { rotated: chunk.dropped });
                        for line in rotated.into_iter().chain(entries) {
                            serde_json::to_writer(&mut buf, &line).expect("log lines serialize");
                            buf.push(b'\n');
                        }
                        return Some((Ok(Bytes::from(buf)), Some((offset, None))));
                    }
                    if advanced {
                        continue;
                    }
                    if !query.follow || chunk.finished {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        })
    }
}

/// What `herd logs` asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogQuery {
    pub follow: bool,
    /// Only the last this many entries (all when `None`).
    pub tail: Option<u64>,
    /// Only entries written at or after this time.
    pub since: Option<herd_proto::UnixMillis>,
}

pub(crate) fn no_such_container(name: &str) -> Error {
    Error::not_found(format!("no such container: {name}"))
}

fn name_in_use(name: &str, id: &str) -> Error {
    Error::conflict(format!(
        "the name {name} is already in use by container {id}: choose another with --name, or remove it with herd rm {name}"
    ))
}

pub(crate) fn unexpected(node: &str, reply: &NodeReply) -> Error {
    Error::new(crate::error::Kind::Internal, format!("node {node} gave an unexpected answer: {reply:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_proto::state::ImageConfig;

    fn image(entrypoint: &[&str], cmd: &[&str], env: &[&str]) -> ImageRecord {
        ImageRecord {
            name: "app:latest".into(),
            id: "sha256:00".into(),
            layers: vec![],
            config: ImageConfig {
                entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                env: env.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
            source: "oci-layout".into(),
            created_at: 0,
            registry: None,
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn req(command: &[&str], env: &[&str]) -> RunRequest {
        RunRequest { image: "app".into(), command: strings(command), env: strings(env), ..Default::default() }
    }

    #[test]
    fn command_replaces_cmd_and_keeps_entrypoint() {
        let img = image(&["/init"], &["serve"], &[]);
        let p = resolve_process(&img, &req(&["debug", "-v"], &[])).unwrap();
        assert_eq!(p.args, strings(&["/init", "debug", "-v"]));
        let p = resolve_process(&img, &req(&[], &[])).unwrap();
        assert_eq!(p.args, strings(&["/init", "serve"]));
        assert_eq!((p.working_dir.as_str(), p.user.as_str()), ("/", ""));
    }

    #[test]
    fn entrypoint_replaces_entrypoint_and_cmd() {
        let img = image(&["/init"], &["serve"], &[]);
        let with = |entrypoint: &[&str], command: &[&str]| {
            resolve_process(&img, &RunRequest { entrypoint: Some(strings(entrypoint)), ..req(command, &[]) })
        };
        // The image's Cmd does not follow another entrypoint; the command given does.
        assert_eq!(with(&["/bin/sh"], &[]).unwrap().args, strings(&["/bin/sh"]));
        assert_eq!(with(&["/bin/sh"], &["-c", "id"]).unwrap().args, strings(&["/bin/sh", "-c", "id"]));
        // `--entrypoint ""` clears it: the command alone runs, and one is needed.
        assert_eq!(with(&[""], &["sleep", "1"]).unwrap().args, strings(&["sleep", "1"]));
        assert_eq!(with(&[], &["sleep", "1"]).unwrap().args, strings(&["sleep", "1"]));
        let err = with(&[""], &[]).unwrap_err();
        assert!(err.message.contains("--entrypoint replaces the entrypoint and the command"), "{}", err.message);
    }

    #[test]
    fn workdir_and_user_come_from_the_image_unless_given() {
        let mut img = image(&[], &["sh"], &[]);
        img.config.working_dir = "/srv/app/".into();
        img.config.user = "app:staff".into();
        let p = resolve_process(&img, &req(&[], &[])).unwrap();
        assert_eq!((p.working_dir.as_str(), p.user.as_str()), ("/srv/app", "app:staff"));
        let given = RunRequest { workdir: Some("/tmp//x/..".into()), user: Some("1000".into()), ..req(&[], &[]) };
        let p = resolve_process(&img, &given).unwrap();
        assert_eq!((p.working_dir.as_str(), p.user.as_str()), ("/tmp", "1000"));
        // Empty means "not given", as in Docker.
        let empty = RunRequest { workdir: Some(String::new()), user: Some(String::new()), ..req(&[], &[]) };
        assert_eq!(resolve_process(&img, &empty).unwrap().user, "app:staff");

        let bad = |r: RunRequest| resolve_process(&img, &r).unwrap_err().message;
        assert!(bad(RunRequest { workdir: Some("srv".into()), ..req(&[], &[]) }).contains("absolute path"));
        assert!(bad(RunRequest { user: Some("a:b:c".into()), ..req(&[], &[]) }).contains("invalid user"));
        img.config.user = "bad user".into();
        let err = resolve_process(&img, &req(&[], &[])).unwrap_err().message;
        assert!(err.contains("image app:latest's User") && err.contains("--user"), "{err}");
        img.config.working_dir = "relative".into();
        let err = resolve_process(&img, &RunRequest { user: Some("0".into()), ..req(&[], &[]) }).unwrap_err().message;
        assert!(err.contains("image app:latest's WorkingDir") && err.contains("--workdir"), "{err}");
    }

    #[test]
    fn env_overrides_image_env_and_path_defaults() {
        let img = image(&[], &["sh"], &["A=1", "PATH=/opt/bin"]);
        let p = resolve_process(&img, &req(&[], &["A=2", "B=3"])).unwrap();
        assert_eq!(p.env, strings(&["PATH=/opt/bin", "A=2", "B=3"]));
    }

    #[test]
    fn missing_command_and_bad_env_are_explained() {
        let img = image(&[], &[], &[]);
        let err = resolve_process(&img, &req(&[], &[])).unwrap_err();
        assert!(err.message.contains("has no command"), "{}", err.message);
        let img = image(&[], &["sh"], &[]);
        let err = resolve_process(&img, &req(&[], &["NOVALUE"])).unwrap_err();
        assert!(err.message.contains("expected KEY=VALUE"), "{}", err.message);
    }

    #[test]
    fn limits_below_the_minimum_are_refused() {
        let err = validate_limits(&Limits { memory_bytes: Some(1 << 20), ..Default::default() }).unwrap_err();
        assert_eq!(err.message, "memory limit 1MiB is below the minimum of 6MiB: use --memory 6m or more");
        validate_limits(&Limits { memory_bytes: Some(MIN_MEMORY), cpus_milli: Some(500), ..Default::default() })
            .unwrap();
    }
}
