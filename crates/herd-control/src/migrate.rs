//! `herd migrate`: plans a live migration, drives the two nodes through it, records every
//! phase durably, and resolves migrations that a failure (of a node, the network or this
//! Control node) left half-way, so the container ends up running on exactly one node.

use std::sync::Arc;
use std::time::{Duration, Instant};

use herd_proto::api::{MigrateRequest, MigrateUpdate};
use herd_proto::migration::{
    DestinationState, MigrationMode, MigrationPhase, MigrationRecord, MigrationReport, ModeRequest, Outcome, PhaseTime,
    Progress, SourceOutcome, TransferReport,
};
use herd_proto::node::{MigrationTicket, NodeReply, NodeRequest};
use herd_proto::state::{ContainerRecord, ContainerState, MIGRATION_HISTORY};
use herd_proto::{now_millis, subjects, units};
use herd_sched::{Request, Strategy};
use rand::Rng;
use tokio::sync::mpsc;

use crate::control::Control;
use crate::error::{Error, Kind, Result};
use crate::view::Reservation;

const PREPARE_TIMEOUT: Duration = Duration::from_secs(300);
const SEND_TIMEOUT: Duration = Duration::from_secs(900);
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(60);
/// A destination answers "how far did you get" from a file: a slow answer means it is gone.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill(&mut b[..]);
    hex::encode(b)
}

/// A migration in flight, as the status watch needs to know it.
#[derive(Debug, Clone)]
pub struct Active {
    pub id: String,
    pub container: String,
    pub container_id: String,
    pub destination: String,
}

impl Control {
    /// Refuses a new container that mounts a named volume while a migration takes that
    /// volume to another node.
    pub(crate) fn ensure_volumes_stay(
        &self,
        view: &crate::view::View,
        host: &herd_proto::hostconfig::HostConfig,
    ) -> Result<()> {
        for v in &host.volumes {
            let moving = view.moving_volume(&v.name).map(|c| c.name.clone()).or_else(|| {
                let migrating = self.migrating.lock().unwrap();
                migrating
                    .keys()
                    .find(|name| {
                        view.containers.get(*name).is_some_and(|c| c.host.volumes.iter().any(|w| w.name == v.name))
                    })
                    .cloned()
            });
            if let Some(owner) = moving {
                return Err(Error::conflict(format!(
                    "volume {} is moving to another node with container {owner}: try again when the migration is over",
                    v.name
                )));
            }
        }
        Ok(())
    }

    /// Refuses operations on a container that is migrating.
    pub(crate) fn ensure_not_migrating(&self, name: &str) -> Result<()> {
        match self.migrating.lock().unwrap().get(name) {
            Some(a) => Err(Error::conflict(format!(
                "container {name} is migrating to {} (migration {}): wait until it has moved",
                a.destination, a.id
            ))),
            None => Ok(()),
        }
    }

    /// `herd migrate`. Sends what happens to `updates`; the migration carries on if the
    /// caller goes away.
    pub async fn migrate(
        self: Arc<Self>,
        name: String,
        req: MigrateRequest,
        updates: mpsc::Sender<MigrateUpdate>,
    ) -> Result<MigrationReport> {
        self.ensure_not_migrating(&name)?;
        let _guard = self.lock(&name).await;
        self.ensure_not_migrating(&name)?;
        self.ensure_no_exec(&name, "migrate it")?;
        let started = Instant::now();
        let started_at = now_millis();
        let (mut record, mut state) = self.record_of(&name)?;
        if state != ContainerState::Running {
            // The view follows the status bucket through a watch, which a failover of a
            // clustered broker can hold back for seconds: the bucket itself decides.
            self.refresh_status(&record).await?;
            (record, state) = self.record_of(&name)?;
        }
        if state != ContainerState::Running {
            return Err(Error::conflict(format!(
                "container {name} is {}: only a running container can migrate",
                state.as_str()
            )));
        }
        let source = record.node.clone();
        let bandwidth = req.bandwidth;
        let (destination, mode, reason) = self.plan(&record, req)?;
        let _reserved = Reservation { view: &self.view, container: &name };
        let image =
            self.view.read().unwrap().images.get(&record.image).cloned().ok_or_else(|| {
                Error::not_found(format!("image {} of container {name} no longer exists", record.image))
            })?;
        let id = format!("m{}", random_hex(6));
        let ticket = MigrationTicket {
            migration: id.clone(),
            mode,
            token: random_hex(32),
            bandwidth,
            source: source.clone(),
            destination: destination.clone(),
            started_at: self.view.read().unwrap().status_of(&record).and_then(|s| s.started_at),
        };
        let mut mig = MigrationRecord {
            id: id.clone(),
            container: name.clone(),
            container_id: record.id.clone(),
            source: source.clone(),
            destination: destination.clone(),
            mode,
            mode_reason: reason.clone(),
            phase: MigrationPhase::Preparing,
            started_at,
            updated_at: started_at,
            error: None,
        };
        self.save_migration(&mig).await?;
        self.migrating.lock().unwrap().insert(
            name.clone(),
            Active {
                id: id.clone(),
                container: name.clone(),
                container_id: record.id.clone(),
                destination: destination.clone(),
            },
        );
        let _ = updates
            .send(MigrateUpdate::Planned {
                id: id.clone(),
                source: source.clone(),
                destination: destination.clone(),
                mode,
                reason: reason.clone(),
            })
            .await;
        self.events
            .emit(
                "migration",
                "start",
                &name,
                Some(&source),
                format!("migration {id} of {name} from {source} to {destination} ({}): {reason}", mode.as_str()),
            )
            .await;
        let forward = self.forward_progress(&id, updates.clone()).await;

        let result = self.run_migration(&record, &image, &ticket, &mut mig, started).await;
        if let Some(f) = forward {
            f.abort();
        }
        self.migrating.lock().unwrap().remove(&name);
        let report = match result {
            Ok(transfer) => self.report(&mig, transfer, started, Outcome::Migrated),
            Err(e) => {
                let reason = e.message.clone();
                let report =
                    self.report(&mig, TransferReport::default(), started, Outcome::Aborted { reason: reason.clone() });
                self.keep_report(&name, &report).await;
                self.events
                    .emit(
                        "migration",
                        "abort",
                        &name,
                        Some(&source),
                        format!("migration {id} of {name} failed: {reason}"),
                    )
                    .await;
                return Err(e);
            }
        };
        self.keep_report(&name, &report).await;
        self.events
            .emit(
                "migration",
                "done",
                &name,
                Some(&destination),
                match &report.unmeasured {
                    Some(why) => format!(
                        "migration {id} of {name} from {source} to {destination} ({}): it runs on {destination}, \
                         total {} ms; no other figures: {why}",
                        mode.as_str(),
                        report.total_ms,
                    ),
                    None => format!(
                        "migration {id} of {name} from {source} to {destination} ({}): downtime {} ms, total {} ms, {} memory, {} files{}",
                        mode.as_str(),
                        report.downtime_ms,
                        report.total_ms,
                        units::Bytes(report.memory_bytes),
                        units::Bytes(report.fs_bytes),
                        if report.volume_bytes > 0 {
                            format!(", volumes of {} ({} moved)", units::Bytes(report.volume_size), units::Bytes(report.volume_bytes))
                        } else {
                            String::new()
                        }
                    ),
                },
            )
            .await;
        Ok(report)
    }

    /// Where and how: the destination (given or chosen), checked for resources and
    /// compatibility, and the mode. The destination counts the container from here on (see
    /// [`crate::view::View::reserve_incoming`]): the caller holds a [`Reservation`] that ends it.
    fn plan(&self, record: &ContainerRecord, req: MigrateRequest) -> Result<(String, MigrationMode, String)> {
        let mut view = self.view.write().unwrap();
        crate::hostconfig::ensure_movable(&view, record)?;
        let source = &record.node;
        let request = crate::containers::with_placement_rules(
            Request {
                cpus_milli: record.limits.cpus_milli.unwrap_or(0),
                memory_bytes: record.limits.memory_bytes.unwrap_or(0),
                node: req.to.clone(),
                // Its published ports must be free at the destination.
                ports: record.host.ports.clone(),
                // Its volumes move with it: no other volume of theirs names may be in use there.
                moving_volumes: record.host.volumes.iter().map(|v| v.name.clone()).collect(),
                ..Default::default()
            },
            record,
        )?;
        let candidates: Vec<herd_sched::Candidate> =
            view.candidates(&request).into_iter().filter(|c| &c.name != source).collect();
        if let Some(to) = &req.to {
            if to == source {
                return Err(Error::bad_request(format!(
                    "container {} already runs on {to}: choose another node",
                    record.name
                )));
            }
            if !view.nodes.contains_key(to) {
                return Err(Error::not_found(format!("no such node: {to}")));
            }
        }
        let destination = herd_sched::place(&candidates, &request, Strategy::Spread).map_err(|e| {
            if e.exclusions.is_empty() {
                Error::conflict(format!("no other node can take {}: the cluster has no other node", record.name))
            } else {
                Error::conflict(format!(
                    "no other node can take {}: {}",
                    record.name,
                    e.to_string().trim_start_matches("no node can run this container: ")
                ))
            }
        })?;
        let src = &view.nodes.get(source).ok_or_else(|| Error::not_found(format!("no such node: {source}")))?.record;
        let dst = &view.nodes[&destination].record;
        herd_sched::migration::check_compatible(source, &src.facts, &destination, &dst.facts)
            .map_err(Error::conflict)?;
        if req.safe && req.mode == ModeRequest::Postcopy {
            return Err(Error::bad_request(
                "--safe forbids post-copy (the container would run on the destination while part of its memory is \
                 still on the source): use --mode precopy, cold or auto",
            ));
        }
        let safe = req.safe || self.cfg.safe_migrations;
        let (mode, reason) =
            herd_sched::migration::choose_mode(req.mode, safe, source, &src.facts, &destination, &dst.facts)
                .map_err(Error::bad_request)?;
        view.reserve_incoming(ContainerRecord { node: destination.clone(), ..record.clone() });
        Ok((destination, mode, reason))
    }

    async fn run_migration(
        &self,
        record: &ContainerRecord,
        image: &herd_proto::state::ImageRecord,
        ticket: &MigrationTicket,
        mig: &mut MigrationRecord,
        started: Instant,
    ) -> Result<TransferReport> {
        let (source, destination) = (mig.source.clone(), mig.destination.clone());
        let spec = self.spec_of(record, image);
        let prepare_started = Instant::now();
        let prepared = self
            .node_call(&destination, &NodeRequest::MigratePrepare { spec, ticket: ticket.clone() }, PREPARE_TIMEOUT)
            .await;
        let address = match prepared {
            Ok(NodeReply::MigrationPrepared { address }) => address,
            Ok(other) => return Err(Error::new(Kind::Internal, format!("node {destination} answered {other:?}"))),
            Err(e) => {
                // The destination undoes its own work; make sure, then nothing else happened.
                self.resolve_destination(mig, false).await;
                self.finish(mig, MigrationPhase::Aborted, Some(e.message.clone())).await;
                return Err(Error::new(
                    e.kind,
                    format!("node {destination} cannot take {}: {}", mig.container, e.message),
                ));
            }
        };
        let prepare_ms = prepare_started.elapsed().as_millis() as u64;
        mig.phase = MigrationPhase::Transferring;
        self.save_migration(mig).await?;
        crate::faults::fault_point(&self.cfg.data_dir, "control-before-send");
        let sent = self
            .node_call(
                &source,
                &NodeRequest::MigrateSend { id: record.id.clone(), ticket: ticket.clone(), destination: address },
                SEND_TIMEOUT,
            )
            .await;
        match sent {
            Ok(NodeReply::MigrationSent(SourceOutcome::Committed(mut transfer))) => {
                transfer.phases.insert(0, PhaseTime { phase: "prepare".into(), ms: prepare_ms, bytes: None });
                self.commit(mig).await?;
                let _ = started;
                Ok(transfer)
            }
            Ok(NodeReply::MigrationSent(SourceOutcome::Resumed { reason })) => {
                self.abort(mig, &reason, false).await;
                Err(Error::new(Kind::NodeFailed, format!("{reason}; {} keeps running on {source}", mig.container)))
            }
            Ok(NodeReply::MigrationSent(SourceOutcome::InDoubt { reason })) => {
                self.resolve_in_doubt(mig, &reason).await
            }
            Ok(other) => self.resolve_in_doubt(mig, &format!("node {source} answered {other:?}")).await,
            Err(e) => self.resolve_in_doubt(mig, &e.message).await,
        }
    }

    /// The source could not tell how the migration ended: ask the destination, which is the
    /// commit point, and finish accordingly.
    async fn resolve_in_doubt(&self, mig: &mut MigrationRecord, reason: &str) -> Result<TransferReport> {
        tracing::warn!("migration {} in doubt ({reason}): asking {}", mig.id, mig.destination);
        match self.destination_state(mig).await {
            Some(DestinationState::Running) => {
                self.commit(mig).await?;
                let unmeasured = format!("{} did not report them ({reason})", mig.source);
                Ok(TransferReport { unmeasured: Some(unmeasured), ..TransferReport::default() })
            }
            Some(DestinationState::Unknown | DestinationState::Aborted) => {
                self.abort(mig, reason, true).await;
                Err(Error::new(
                    Kind::NodeFailed,
                    format!(
                        "{reason}; {} was not restored on {} and runs on {} again",
                        mig.container, mig.destination, mig.source
                    ),
                ))
            }
            // The destination is still at it, or nobody can say yet: the recovery loop asks
            // until it can tell.
            Some(DestinationState::Prepared | DestinationState::Restoring | DestinationState::Sending) | None => {
                self.spawn_recovery(mig.clone());
                Err(Error::unavailable(format!(
                    "{reason}; node {} does not answer, so it is not known yet whether {} runs there: \
                     the Control node finishes the migration when it does (herd events shows how it ends)",
                    mig.destination, mig.container
                )))
            }
        }
    }

    /// Whether the source of `mig` knows nothing of it while its destination still waits
    /// (the destination is asked again after the source answered, so that a migration that
    /// ran its whole course in between is not taken for one that never started).
    async fn source_never_sent(&self, mig: &MigrationRecord) -> bool {
        let req = NodeRequest::MigrationStatus { id: mig.container_id.clone(), migration: mig.id.clone() };
        let source = self.node_call(&mig.source, &req, STATUS_TIMEOUT).await;
        if !matches!(source, Ok(NodeReply::MigrationState(DestinationState::Unknown))) {
            return false;
        }
        let never = self.destination_state(mig).await == Some(DestinationState::Prepared);
        if never {
            tracing::warn!(
                "migration {} of {}: {} never got the request to send it; rolling it back",
                mig.id,
                mig.container,
                mig.source
            );
        }
        never
    }

    async fn destination_state(&self, mig: &MigrationRecord) -> Option<DestinationState> {
        let req = NodeRequest::MigrationStatus { id: mig.container_id.clone(), migration: mig.id.clone() };
        for attempt in 0..5 {
            if let Ok(NodeReply::MigrationState(s)) = self.node_call(&mig.destination, &req, STATUS_TIMEOUT).await {
                return Some(s);
            }
            tokio::time::sleep(Duration::from_millis(500 * (attempt + 1))).await;
        }
        None
    }

    /// The destination runs the container: point the cluster at it and let the source go.
    async fn commit(&self, mig: &mut MigrationRecord) -> Result<()> {
        mig.phase = MigrationPhase::Switching;
        self.save_migration(mig).await?;
        self.switch_node(&mig.container, &mig.container_id, &mig.destination).await?;
        let resolve = |node: String| {
            let req =
                NodeRequest::MigrateResolve { id: mig.container_id.clone(), migration: mig.id.clone(), commit: true };
            async move { self.node_call(&node, &req, RESOLVE_TIMEOUT).await }
        };
        // The source has normally let go already; this makes sure (and is a no-op otherwise).
        // Until it has, the migration is not over: the recovery loop keeps at it.
        if let Err(e) = resolve(mig.source.clone()).await {
            tracing::warn!("migration {}: the source could not be told to let go yet: {}", mig.id, e.message);
            self.spawn_recovery(mig.clone());
            return Ok(());
        }
        if let Err(e) = resolve(mig.destination.clone()).await {
            tracing::warn!("migration {}: {}", mig.id, e.message);
        }
        self.finish(mig, MigrationPhase::Done, None).await;
        Ok(())
    }

    /// The container does not run on the destination: make sure it never will, and resume it
    /// on the source (unless the source resumed it already).
    async fn abort(&self, mig: &mut MigrationRecord, reason: &str, resume_source: bool) {
        mig.phase = MigrationPhase::Aborting;
        mig.error = Some(reason.to_string());
        let _ = self.save_migration(mig).await;
        self.resolve_destination(mig, false).await;
        if resume_source {
            let req =
                NodeRequest::MigrateResolve { id: mig.container_id.clone(), migration: mig.id.clone(), commit: false };
            if let Err(e) = self.node_call(&mig.source, &req, RESOLVE_TIMEOUT).await {
                tracing::warn!("migration {}: the source could not resume the container yet: {}", mig.id, e.message);
                self.spawn_recovery(mig.clone());
                return;
            }
        }
        self.finish(mig, MigrationPhase::Aborted, Some(reason.to_string())).await;
    }

    async fn resolve_destination(&self, mig: &MigrationRecord, commit: bool) {
        let req = NodeRequest::MigrateResolve { id: mig.container_id.clone(), migration: mig.id.clone(), commit };
        if let Err(e) = self.node_call(&mig.destination, &req, RESOLVE_TIMEOUT).await {
            tracing::warn!("migration {}: could not tell {} to drop its copy: {}", mig.id, mig.destination, e.message);
        }
    }

    /// Moves a container's record to `node` (idempotent). Route sync follows the record.
    pub(crate) async fn switch_node(&self, name: &str, id: &str, node: &str) -> Result<()> {
        let _w = self.record_writes.lock().await;
        let Some(mut record) = self.view.read().unwrap().containers.get(name).cloned() else { return Ok(()) };
        if record.id != id || record.node == node {
            return Ok(());
        }
        record.node = node.to_string();
        self.containers.put(name, &record).await?;
        self.view.write().unwrap().insert_container(record);
        Ok(())
    }

    /// Called for every status write: a container that starts running on the destination of
    /// its migration switches there at once, so traffic follows without waiting for the source.
    pub(crate) async fn follow_migration(&self, id: &str, node: &str, state: ContainerState) {
        if state != ContainerState::Running {
            return;
        }
        let active =
            self.migrating.lock().unwrap().values().find(|a| a.container_id == id && a.destination == node).cloned();
        if let Some(a) = active
            && let Err(e) = self.switch_node(&a.container, id, node).await
        {
            tracing::warn!("migration {}: switching {} to {node}: {}", a.id, a.container, e.message);
        }
    }

    async fn keep_report(&self, name: &str, report: &MigrationReport) {
        let _w = self.record_writes.lock().await;
        let Some(mut record) = self.view.read().unwrap().containers.get(name).cloned() else { return };
        record.migrations.push(report.clone());
        let excess = record.migrations.len().saturating_sub(MIGRATION_HISTORY);
        record.migrations.drain(..excess);
        if let Err(e) = self.containers.put(name, &record).await {
            tracing::warn!("could not keep the migration report of {name}: {e:#}");
            return;
        }
        self.view.write().unwrap().insert_container(record);
    }

    fn report(&self, mig: &MigrationRecord, t: TransferReport, started: Instant, outcome: Outcome) -> MigrationReport {
        let mut phases = t.phases.clone();
        phases.retain(|p| p.phase != "total");
        MigrationReport {
            id: mig.id.clone(),
            container: mig.container.clone(),
            mode: mig.mode,
            mode_reason: mig.mode_reason.clone(),
            source: mig.source.clone(),
            destination: mig.destination.clone(),
            started_at: mig.started_at,
            finished_at: now_millis(),
            downtime_ms: t.running_at.saturating_sub(t.frozen_at),
            total_ms: started.elapsed().as_millis() as u64,
            memory_bytes: t.memory_bytes,
            fs_bytes: t.fs_bytes,
            volume_bytes: t.volume_bytes,
            volume_size: t.volume_size,
            phases,
            encrypted: t.encrypted,
            pages_encrypted: t.pages_encrypted,
            unmeasured: t.unmeasured,
            outcome,
        }
    }

    async fn save_migration(&self, mig: &MigrationRecord) -> Result<()> {
        let mut m = mig.clone();
        m.updated_at = now_millis();
        self.migrations.put(&m.id, &m).await?;
        Ok(())
    }

    async fn finish(&self, mig: &mut MigrationRecord, phase: MigrationPhase, error: Option<String>) {
        mig.phase = phase;
        if error.is_some() {
            mig.error = error;
        }
        if let Err(e) = self.save_migration(mig).await {
            tracing::warn!("could not record the end of migration {}: {}", mig.id, e.message);
        }
        if phase == MigrationPhase::Done {
            // The container's monitoring series goes on; the move is marked on it.
            let text = format!("migrated from {} to {} ({})", mig.source, mig.destination, mig.mode.as_str());
            self.monitoring.lock().unwrap().container_event(
                &mig.container_id,
                herd_proto::now_millis(),
                "migration",
                &text,
            );
        }
    }

    /// Relays the source's progress reports to the caller.
    async fn forward_progress(
        &self,
        id: &str,
        updates: mpsc::Sender<MigrateUpdate>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        use futures::StreamExt;
        let mut sub = self.broker.client.subscribe(subjects::migration_progress(id)).await.ok()?;
        Some(tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                if let Ok(p) = serde_json::from_slice::<Progress>(&msg.payload)
                    && updates.send(MigrateUpdate::Progress(p)).await.is_err()
                {
                    break;
                }
            }
        }))
    }

    /// Finishes a migration left half-way, retrying until both nodes have done their part.
    pub(crate) fn spawn_recovery(&self, mig: MigrationRecord) {
        let Some(this) = self.me.upgrade() else { return };
        tokio::spawn(async move {
            let mut mig = mig;
            let mut delay = Duration::from_secs(1);
            this.migrating.lock().unwrap().insert(
                mig.container.clone(),
                Active {
                    id: mig.id.clone(),
                    container: mig.container.clone(),
                    container_id: mig.container_id.clone(),
                    destination: mig.destination.clone(),
                },
            );
            loop {
                if this.recover_once(&mut mig).await {
                    break;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            this.migrating.lock().unwrap().remove(&mig.container);
            this.events
                .emit(
                    "migration",
                    if mig.phase == MigrationPhase::Done { "done" } else { "abort" },
                    &mig.container,
                    None,
                    format!(
                        "migration {} of {} resolved: {}",
                        mig.id,
                        mig.container,
                        if mig.phase == MigrationPhase::Done {
                            format!("it runs on {}", mig.destination)
                        } else {
                            format!("it runs on {}", mig.source)
                        }
                    ),
                )
                .await;
        });
    }

    /// One attempt at resolving `mig`; true when it is over.
    async fn recover_once(&self, mig: &mut MigrationRecord) -> bool {
        let _guard = self.lock(&mig.container).await;
        let commit = match mig.phase {
            MigrationPhase::Done | MigrationPhase::Aborted => return true,
            MigrationPhase::Preparing | MigrationPhase::Aborting => false,
            MigrationPhase::Switching => true,
            MigrationPhase::Transferring => match self.destination_state(mig).await {
                Some(DestinationState::Running) => true,
                Some(DestinationState::Unknown | DestinationState::Aborted) => false,
                // Still moving between the nodes (they need no Control node for that), or no
                // answer: ask again later. The destination gives up on its own in the end.
                // The destination waits for the source. A source that knows nothing of the
                // migration never got the request to send (the Control node that had it died
                // first): nothing will come, and the destination would wait out its receive
                // timeout (5 min).
                Some(DestinationState::Prepared) if self.source_never_sent(mig).await => false,
                Some(DestinationState::Prepared | DestinationState::Restoring | DestinationState::Sending) | None => {
                    return false;
                }
            },
        };
        let req =
            |commit| NodeRequest::MigrateResolve { id: mig.container_id.clone(), migration: mig.id.clone(), commit };
        if commit {
            mig.phase = MigrationPhase::Switching;
            let _ = self.save_migration(mig).await;
            if self.switch_node(&mig.container, &mig.container_id, &mig.destination).await.is_err() {
                return false;
            }
            if self.node_call(&mig.source, &req(true), RESOLVE_TIMEOUT).await.is_err() {
                return false;
            }
            let _ = self.node_call(&mig.destination, &req(true), RESOLVE_TIMEOUT).await;
            self.finish(mig, MigrationPhase::Done, None).await;
        } else {
            mig.phase = MigrationPhase::Aborting;
            let _ = self.save_migration(mig).await;
            if self.node_call(&mig.destination, &req(false), RESOLVE_TIMEOUT).await.is_err() {
                return false;
            }
            if self.node_call(&mig.source, &req(false), RESOLVE_TIMEOUT).await.is_err() {
                return false;
            }
            self.finish(mig, MigrationPhase::Aborted, mig.error.clone()).await;
        }
        true
    }
}
