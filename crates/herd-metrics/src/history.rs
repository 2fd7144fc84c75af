//! The Control node's bounded in-memory time-series store: one series per container (keyed
//! by container id, so it continues across nodes and migrations) and per node, each with a
//! full-resolution ring and coarser rollups, events, and a hard bound on memory.
//!
//! # Layout
//!
//! Each series keeps tiers of points, newest overwriting oldest:
//! - raw: every sample, for `raw_retention_ms` at `interval_ms` (default one hour at 1 s);
//! - rollups: the mean of each `step_ms` bucket (defaults: 10 s for 6 hours, 60 s for
//!   48 hours). A bucket is written when the first sample of the next bucket arrives; the
//!   bucket in progress is returned as the newest point of a rollup query.
//!
//! A point is a millisecond timestamp and one `f32` per field ([`CONTAINER_FIELDS`] or
//! [`NODE_FIELDS`]; `NaN` inside means "no value", `None` outside), 92 bytes for a container.
//! `f32` keeps 7 significant digits (a memory figure of 1 GiB to within 64 bytes).
//!
//! # Memory bound
//!
//! Rings grow as samples arrive, up to their capacity, so short-lived series stay small.
//! Every allocation is counted; before one would take the total over `max_bytes`, the least
//! recently updated other series are evicted whole (containers removed long ago go first).
//! If that is not enough, the growing ring stops growing and wraps at its current size.
//! [`HistoryConfig::series_bytes`] is what one full series costs, for sizing `max_bytes`:
//! with the defaults about 0.66 MB per container, so 512 MiB keeps about 800 containers'
//! full history.
//!
//! # Queries
//!
//! [`History::query`] picks the finest tier that still holds `from_ms` (or, failing that, the
//! coarsest), optionally averages points into `step_ms` buckets, and returns explicit
//! [`Gap`]s wherever consecutive samples are more than two intervals apart, and from the last
//! sample to the end of the range when that is more than three intervals: values are never
//! interpolated or invented. Samples older than the newest one of their series are ignored
//! (repeated or late batches).

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::sample::{Batch, CONTAINER_FIELDS, ContainerSample, NODE_FIELDS, NodeSample};

/// A series: a container (by id) or a node (by name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "lowercase")]
pub enum SeriesId {
    /// A container, by id.
    Container(String),
    /// A node, by name.
    Node(String),
}

impl std::fmt::Display for SeriesId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SeriesId::Container(id) => write!(f, "container {id}"),
            SeriesId::Node(n) => write!(f, "node {n}"),
        }
    }
}

impl SeriesId {
    fn fields(&self) -> &'static [&'static str] {
        match self {
            SeriesId::Container(_) => &CONTAINER_FIELDS,
            SeriesId::Node(_) => &NODE_FIELDS,
        }
    }
}

/// One rollup tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollupConfig {
    /// Bucket width, ms.
    pub step_ms: u64,
    /// How long buckets are kept, ms.
    pub retention_ms: u64,
}

/// Sizes and bounds of a [`History`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryConfig {
    /// The sampling interval, ms (gaps are intervals over twice this).
    pub interval_ms: u64,
    /// How long full-resolution samples are kept, ms.
    pub raw_retention_ms: u64,
    /// Coarser tiers, finest first.
    pub rollups: Vec<RollupConfig>,
    /// The bound on the store's memory, bytes.
    pub max_bytes: usize,
    /// Events kept per series (oldest dropped first).
    pub max_events_per_series: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            interval_ms: 1000,
            raw_retention_ms: 3_600_000,
            rollups: vec![
                RollupConfig { step_ms: 10_000, retention_ms: 6 * 3_600_000 },
                RollupConfig { step_ms: 60_000, retention_ms: 48 * 3_600_000 },
            ],
            max_bytes: 512 << 20,
            max_events_per_series: 256,
        }
    }
}

/// Longest event text kept, bytes.
pub const MAX_EVENT_TEXT: usize = 256;
const SERIES_OVERHEAD: usize = 512;

impl HistoryConfig {
    fn tier_specs(&self) -> Vec<(u64, usize)> {
        // The raw ring gets 5 % spare slots: a sampler running slightly fast must still
        // leave the full retention in the ring.
        let raw = self.raw_retention_ms.div_ceil(self.interval_ms) as usize;
        let mut v = vec![(self.interval_ms, raw + raw / 20 + 2)];
        v.extend(self.rollups.iter().map(|r| (r.step_ms, r.retention_ms.div_ceil(r.step_ms) as usize + 1)));
        v
    }

    /// What one series with `width` fields costs when every tier is full, bytes (events
    /// and texts included at their maximum).
    pub fn series_bytes(&self, width: usize) -> usize {
        let point = 8 + 4 * width;
        let tiers: usize = self.tier_specs().iter().map(|(_, cap)| cap * point + width * 12).sum();
        tiers
            + self.max_events_per_series * (std::mem::size_of::<Event>() + MAX_EVENT_TEXT + 32)
            + self.max_events_per_series * (std::mem::size_of::<NodeSpan>() + 64)
            + SERIES_OVERHEAD
            + 1024
            + std::mem::size_of::<ContainerSample>()
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), HistoryError> {
        let bad = |m: String| Err(HistoryError::BadConfig(m));
        if self.interval_ms == 0 {
            return bad("interval_ms must be positive".into());
        }
        if self.raw_retention_ms < self.interval_ms {
            return bad("raw_retention_ms must be at least one interval".into());
        }
        let mut prev = self.interval_ms;
        for r in &self.rollups {
            if r.step_ms <= prev || r.step_ms % self.interval_ms != 0 {
                return bad(format!(
                    "rollup step {} ms must be a multiple of the interval and coarser than the previous tier",
                    r.step_ms
                ));
            }
            if r.retention_ms < r.step_ms {
                return bad(format!("rollup {} ms: retention shorter than its step", r.step_ms));
            }
            prev = r.step_ms;
        }
        let need = self.series_bytes(CONTAINER_FIELDS.len().max(NODE_FIELDS.len()));
        if self.max_bytes < need {
            return bad(format!("max_bytes {} is less than one full series ({need} bytes)", self.max_bytes));
        }
        Ok(())
    }
}

/// Errors of the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// The configuration is unusable.
    #[error("bad history configuration: {0}")]
    BadConfig(String),
    /// The query range is reversed.
    #[error("bad time range: from {from_ms} is after to {to_ms}")]
    BadRange {
        /// Start, ms.
        from_ms: u64,
        /// End, ms.
        to_ms: u64,
    },
    /// A zero query step.
    #[error("bad step: must be positive")]
    BadStep,
    /// No such series.
    #[error("unknown series: {0}")]
    UnknownSeries(SeriesId),
}

/// Something that happened to a series, such as a migration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When, ms since the Unix epoch.
    pub ts_ms: u64,
    /// A short machine-readable kind, such as `migrated`.
    pub kind: String,
    /// Text for people, such as `n1 -> n2`.
    pub text: String,
}

/// From `from_ms` on (until the next span), the container ran on `node`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpan {
    /// First sample from this node, ms.
    pub from_ms: u64,
    /// The node.
    pub node: String,
}

/// No samples between two points more than two intervals apart (clipped to the query).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// The last sample before the gap (or the query start), ms.
    pub from_ms: u64,
    /// The first sample after the gap (or the query end), ms.
    pub to_ms: u64,
}

/// One point of a query: values in the order of [`QueryResult::fields`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Timestamp (a rollup or step bucket's start), ms.
    #[serde(rename = "t")]
    pub ts_ms: u64,
    /// Values; `None`: not measured.
    #[serde(rename = "v")]
    pub values: Vec<Option<f32>>,
}

/// A query's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryResult {
    /// The series.
    pub series: SeriesId,
    /// Field names, the columns of `points`.
    pub fields: Vec<String>,
    /// Resolution of the points, ms.
    pub step_ms: u64,
    /// Points in time order.
    pub points: Vec<Point>,
    /// Where samples are missing.
    pub gaps: Vec<Gap>,
    /// The series' events in the range.
    pub events: Vec<Event>,
    /// For a container: which node it ran on, from the span in effect at `from_ms` on.
    pub nodes: Vec<NodeSpan>,
    /// The series' newest sample, ms (later than the range if the query ended earlier).
    pub last_ts_ms: Option<u64>,
}

impl QueryResult {
    /// A series with no sample yet (a container that just started).
    pub fn empty(series: SeriesId, step_ms: u64) -> Self {
        QueryResult {
            fields: series.fields().iter().map(|f| f.to_string()).collect(),
            series,
            step_ms,
            points: Vec::new(),
            gaps: Vec::new(),
            events: Vec::new(),
            nodes: Vec::new(),
            last_ts_ms: None,
        }
    }

    /// One field's values over time.
    pub fn column(&self, field: &str) -> Option<Vec<(u64, Option<f32>)>> {
        let i = self.fields.iter().position(|f| f == field)?;
        Some(self.points.iter().map(|p| (p.ts_ms, p.values[i])).collect())
    }
}

/// Whether a sample was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Stored.
    Stored,
    /// Ignored: not newer than the series' newest sample.
    Stale,
}

/// What [`History::insert_batch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchOutcome {
    /// Samples stored.
    pub stored: usize,
    /// Samples ignored as stale.
    pub stale: usize,
    /// Batches missing before this one, by sequence number (lost in transit).
    pub lost_batches: u64,
}

/// The store's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HistoryStats {
    /// Series held.
    pub series: usize,
    /// Bytes counted.
    pub bytes: usize,
    /// The bound.
    pub max_bytes: usize,
    /// Series evicted to stay within the bound, since creation.
    pub evicted_series: u64,
}

/// A ring of points, growing on demand up to `limit` slots.
#[derive(Debug)]
struct Ring {
    width: usize,
    limit: usize,
    ts: Vec<u64>,
    vals: Vec<f32>,
    head: usize,
    dropped: bool,
}

impl Ring {
    fn new(width: usize, limit: usize) -> Ring {
        Ring { width, limit, ts: Vec::new(), vals: Vec::new(), head: 0, dropped: false }
    }

    fn bytes(&self) -> usize {
        self.ts.capacity() * 8 + self.vals.capacity() * 4
    }

    fn len(&self) -> usize {
        self.ts.len()
    }

    /// Extra bytes the next push needs, if it needs to grow, and the new slot count.
    fn growth(&self) -> Option<(usize, usize)> {
        let n = self.ts.len();
        if n < self.ts.capacity() || n >= self.limit {
            return None;
        }
        let new = self.limit.min((n * 2).max(16));
        Some(((new - n) * (8 + 4 * self.width), new))
    }

    fn grow(&mut self, slots: usize) {
        let n = self.ts.len();
        self.ts.reserve_exact(slots - n);
        self.vals.reserve_exact((slots - n) * self.width);
    }

    fn freeze(&mut self) {
        self.limit = self.ts.len().max(1);
    }

    fn push(&mut self, ts: u64, vals: &[f32]) {
        if self.ts.len() < self.limit {
            self.ts.push(ts);
            self.vals.extend_from_slice(vals);
        } else {
            let h = self.head;
            self.ts[h] = ts;
            self.vals[h * self.width..(h + 1) * self.width].copy_from_slice(vals);
            self.head = (h + 1) % self.ts.len();
            self.dropped = true;
        }
    }

    fn get(&self, i: usize) -> (u64, &[f32]) {
        let k = (self.head + i) % self.ts.len();
        (self.ts[k], &self.vals[k * self.width..(k + 1) * self.width])
    }

    fn oldest(&self) -> Option<u64> {
        (!self.ts.is_empty()).then(|| self.get(0).0)
    }
}

#[derive(Debug)]
struct Acc {
    bucket: u64,
    sum: Vec<f64>,
    n: Vec<u32>,
}

impl Acc {
    fn mean(&self) -> Vec<f32> {
        self.sum.iter().zip(&self.n).map(|(s, &n)| if n == 0 { f32::NAN } else { (s / n as f64) as f32 }).collect()
    }
}

#[derive(Debug)]
struct Tier {
    step_ms: u64,
    ring: Ring,
    /// The bucket in progress (rollup tiers only).
    acc: Option<Acc>,
    rollup: bool,
}

impl Tier {
    fn covers(&self, from_ms: u64) -> bool {
        !self.ring.dropped || self.ring.oldest().is_some_and(|o| o <= from_ms)
    }

    fn bytes(&self) -> usize {
        self.ring.bytes() + self.acc.as_ref().map_or(0, |a| a.sum.capacity() * 8 + a.n.capacity() * 4)
    }

    /// Points in time order, with the bucket in progress last.
    fn points(&self) -> impl Iterator<Item = (u64, Vec<f32>)> + '_ {
        let partial = self.acc.as_ref().filter(|a| a.n.iter().any(|&n| n > 0)).map(|a| (a.bucket, a.mean()));
        (0..self.ring.len()).map(|i| self.ring.get(i)).map(|(t, v)| (t, v.to_vec())).chain(partial)
    }
}

#[derive(Debug)]
enum Latest {
    Container { sample: ContainerSample, node: String },
    Node(NodeSample),
}

#[derive(Debug)]
struct Series {
    tiers: Vec<Tier>,
    events: VecDeque<Event>,
    nodes: VecDeque<NodeSpan>,
    last_ts: Option<u64>,
    touch: u64,
    latest: Option<Latest>,
}

impl Series {
    fn new(cfg: &HistoryConfig, width: usize) -> Series {
        let tiers = cfg
            .tier_specs()
            .into_iter()
            .enumerate()
            .map(|(i, (step_ms, cap))| Tier { step_ms, ring: Ring::new(width, cap), acc: None, rollup: i > 0 })
            .collect();
        Series { tiers, events: VecDeque::new(), nodes: VecDeque::new(), last_ts: None, touch: 0, latest: None }
    }

    fn bytes(&self) -> usize {
        let latest = match &self.latest {
            Some(Latest::Container { sample, node }) => {
                sample.id.capacity() + sample.name.as_ref().map_or(0, |n| n.capacity()) + node.capacity()
            }
            Some(Latest::Node(n)) => n.node.capacity(),
            None => 0,
        };
        SERIES_OVERHEAD
            + std::mem::size_of::<ContainerSample>()
            + latest
            + self.tiers.iter().map(Tier::bytes).sum::<usize>()
            + self
                .events
                .iter()
                .map(|e| std::mem::size_of::<Event>() + e.kind.capacity() + e.text.capacity())
                .sum::<usize>()
            + self.nodes.iter().map(|n| std::mem::size_of::<NodeSpan>() + n.node.capacity()).sum::<usize>()
    }
}

/// The store. Not thread-safe by itself: the Control node wraps it in a lock.
#[derive(Debug)]
pub struct History {
    cfg: HistoryConfig,
    series: HashMap<SeriesId, Series>,
    bytes: usize,
    clock: u64,
    evicted: u64,
    node_seq: HashMap<String, u64>,
}

fn to_row(values: &[Option<f64>]) -> Vec<f32> {
    values.iter().map(|v| v.map_or(f32::NAN, |x| x as f32)).collect()
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl History {
    /// An empty store.
    pub fn new(cfg: HistoryConfig) -> Result<History, HistoryError> {
        cfg.validate()?;
        Ok(History { cfg, series: HashMap::new(), bytes: 0, clock: 0, evicted: 0, node_seq: HashMap::new() })
    }

    /// The configuration.
    pub fn config(&self) -> &HistoryConfig {
        &self.cfg
    }

    /// Size and evictions.
    pub fn stats(&self) -> HistoryStats {
        HistoryStats {
            series: self.series.len(),
            bytes: self.bytes,
            max_bytes: self.cfg.max_bytes,
            evicted_series: self.evicted,
        }
    }

    /// The series held.
    pub fn series_ids(&self) -> impl Iterator<Item = &SeriesId> {
        self.series.keys()
    }

    /// Stores a container's sample taken on `node`.
    pub fn insert_container(&mut self, node: &str, sample: &ContainerSample) -> Inserted {
        let id = SeriesId::Container(sample.id.clone());
        let row = to_row(&sample.values());
        self.insert(id, sample.ts_ms, &row, Some(node), || Latest::Container {
            sample: sample.clone(),
            node: node.to_string(),
        })
    }

    /// Stores a node's sample.
    pub fn insert_node(&mut self, sample: &NodeSample) -> Inserted {
        let id = SeriesId::Node(sample.node.clone());
        let row = to_row(&sample.values());
        self.insert(id, sample.ts_ms, &row, None, || Latest::Node(sample.clone()))
    }

    /// Stores a batch's samples and checks its sequence number against the node's last one.
    pub fn insert_batch(&mut self, batch: &Batch) -> BatchOutcome {
        let mut out = BatchOutcome::default();
        match self.node_seq.insert(batch.node.clone(), batch.seq) {
            Some(last) if batch.seq > last + 1 => out.lost_batches = batch.seq - last - 1,
            _ => {}
        }
        let mut count = |r: Inserted| match r {
            Inserted::Stored => out.stored += 1,
            Inserted::Stale => out.stale += 1,
        };
        if let Some(ns) = &batch.node_sample {
            count(self.insert_node(ns));
        }
        for c in &batch.containers {
            count(self.insert_container(&batch.node, c));
        }
        out
    }

    fn insert(
        &mut self,
        id: SeriesId,
        ts: u64,
        row: &[f32],
        node: Option<&str>,
        latest: impl FnOnce() -> Latest,
    ) -> Inserted {
        if self.series.get(&id).and_then(|s| s.last_ts).is_some_and(|last| ts <= last) {
            return Inserted::Stale;
        }
        let mut s = self.take_or_create(&id);
        if let Some(n) = node
            && s.nodes.back().is_none_or(|span| span.node != n)
        {
            s.nodes.push_back(NodeSpan { from_ms: ts, node: n.to_string() });
            while s.nodes.len() > self.cfg.max_events_per_series {
                s.nodes.pop_front();
            }
        }
        for t in 0..s.tiers.len() {
            if !s.tiers[t].rollup {
                self.push_point(&mut s, t, ts, row);
                continue;
            }
            let step = s.tiers[t].step_ms;
            let bucket = ts - ts % step;
            let flushed = match &s.tiers[t].acc {
                Some(a) if a.bucket != bucket => Some((a.bucket, a.mean())),
                _ => None,
            };
            if let Some((b, mean)) = flushed {
                self.push_point(&mut s, t, b, &mean);
            }
            let acc =
                s.tiers[t].acc.get_or_insert_with(|| Acc { bucket, sum: vec![0.0; row.len()], n: vec![0; row.len()] });
            if acc.bucket != bucket {
                acc.bucket = bucket;
                acc.sum.iter_mut().for_each(|x| *x = 0.0);
                acc.n.iter_mut().for_each(|x| *x = 0);
            }
            for (i, v) in row.iter().enumerate() {
                if !v.is_nan() {
                    acc.sum[i] += *v as f64;
                    acc.n[i] += 1;
                }
            }
        }
        s.last_ts = Some(ts);
        s.latest = Some(latest());
        self.put_back(id, s);
        Inserted::Stored
    }

    /// Removes a series from the map for an update (its bytes leave the total while out).
    fn take_or_create(&mut self, id: &SeriesId) -> Series {
        let s = match self.series.remove(id) {
            Some(s) => s,
            None => {
                let s = Series::new(&self.cfg, id.fields().len());
                self.evict_for(s.bytes() + 256);
                return s;
            }
        };
        self.bytes -= s.bytes();
        s
    }

    fn put_back(&mut self, id: SeriesId, mut s: Series) {
        // Small allocations (rollup accumulators, node spans, the latest sample) are settled
        // here; rings were checked before growing.
        self.evict_for(s.bytes());
        self.clock += 1;
        s.touch = self.clock;
        self.bytes += s.bytes();
        self.series.insert(id, s);
    }

    /// Evicts least recently updated series until `need` more bytes fit; false if they
    /// cannot (the series being updated is out of the map, so it is never evicted).
    fn evict_for(&mut self, need: usize) -> bool {
        while self.bytes + need > self.cfg.max_bytes {
            let Some(victim) = self.series.iter().min_by_key(|(_, s)| s.touch).map(|(k, _)| k.clone()) else {
                return false;
            };
            if let Some(v) = self.series.remove(&victim) {
                self.bytes -= v.bytes();
                self.evicted += 1;
            }
        }
        true
    }

    fn push_point(&mut self, s: &mut Series, tier: usize, ts: u64, row: &[f32]) {
        if let Some((extra, slots)) = s.tiers[tier].ring.growth() {
            if self.evict_for(s.bytes() + extra) {
                s.tiers[tier].ring.grow(slots);
            } else {
                s.tiers[tier].ring.freeze();
            }
        }
        s.tiers[tier].ring.push(ts, row);
    }

    /// Adds an event to a series (creating the series if needed, e.g. a migration recorded
    /// before the destination's first sample). Texts are cut to [`MAX_EVENT_TEXT`] bytes;
    /// the oldest events go beyond `max_events_per_series`.
    pub fn add_event(&mut self, id: &SeriesId, ts_ms: u64, kind: &str, text: &str) {
        let mut s = self.take_or_create(id);
        let e = Event { ts_ms, kind: truncate(kind, 32), text: truncate(text, MAX_EVENT_TEXT) };
        let at = s.events.partition_point(|x| x.ts_ms <= ts_ms);
        s.events.insert(at, e);
        while s.events.len() > self.cfg.max_events_per_series {
            s.events.pop_front();
        }
        self.put_back(id.clone(), s);
    }

    /// Forgets a series; true if it existed.
    pub fn remove(&mut self, id: &SeriesId) -> bool {
        match self.series.remove(id) {
            Some(s) => {
                self.bytes -= s.bytes();
                true
            }
            None => false,
        }
    }

    /// A container's newest sample and the node it came from.
    pub fn latest_container(&self, id: &str) -> Option<(&ContainerSample, &str)> {
        match &self.series.get(&SeriesId::Container(id.to_string()))?.latest {
            Some(Latest::Container { sample, node }) => Some((sample, node)),
            _ => None,
        }
    }

    /// A node's newest sample.
    pub fn latest_node(&self, name: &str) -> Option<&NodeSample> {
        match &self.series.get(&SeriesId::Node(name.to_string()))?.latest {
            Some(Latest::Node(n)) => Some(n),
            _ => None,
        }
    }

    /// Every container's newest sample and node.
    pub fn latest_containers(&self) -> impl Iterator<Item = (&ContainerSample, &str)> {
        self.series.values().filter_map(|s| match &s.latest {
            Some(Latest::Container { sample, node }) => Some((sample, node.as_str())),
            _ => None,
        })
    }

    /// Every node's newest sample.
    pub fn latest_nodes(&self) -> impl Iterator<Item = &NodeSample> {
        self.series.values().filter_map(|s| match &s.latest {
            Some(Latest::Node(n)) => Some(n),
            _ => None,
        })
    }

    /// Points of a series between `from_ms` and `to_ms` inclusive, averaged into `step_ms`
    /// buckets if given (a step finer than the stored resolution returns that resolution),
    /// with gaps, events and node spans.
    pub fn query(
        &self,
        id: &SeriesId,
        from_ms: u64,
        to_ms: u64,
        step_ms: Option<u64>,
    ) -> Result<QueryResult, HistoryError> {
        if from_ms > to_ms {
            return Err(HistoryError::BadRange { from_ms, to_ms });
        }
        if step_ms == Some(0) {
            return Err(HistoryError::BadStep);
        }
        let s = self.series.get(id).ok_or_else(|| HistoryError::UnknownSeries(id.clone()))?;
        // The finest tier that still holds `from_ms`, or with a step, the coarsest of those
        // not coarser than the step; if none holds it, the coarsest tier.
        let covering: Vec<&Tier> = s.tiers.iter().filter(|t| t.covers(from_ms)).collect();
        let tier = match (covering.first(), step_ms) {
            (None, _) => s.tiers.last().expect("a series has a raw tier"),
            (Some(finest), None) => finest,
            (Some(finest), Some(st)) => covering.iter().rev().find(|t| t.step_ms <= st).unwrap_or(finest),
        };

        // Points in range, and the neighbours just outside it for gaps at the edges.
        let mut before = None;
        let mut after = None;
        let mut inside: Vec<(u64, Vec<f32>)> = Vec::new();
        for (t, v) in tier.points() {
            if t < from_ms {
                before = Some(t);
            } else if t <= to_ms {
                inside.push((t, v));
            } else {
                after.get_or_insert(t);
            }
        }
        let limit = 2 * tier.step_ms;
        let mut gaps = Vec::new();
        let stamps: Vec<u64> = before.into_iter().chain(inside.iter().map(|(t, _)| *t)).chain(after).collect();
        for w in stamps.windows(2) {
            if w[1] - w[0] > limit {
                gaps.push(Gap { from_ms: w[0].max(from_ms), to_ms: w[1].min(to_ms) });
            }
        }
        // Silent up to the end of the range (a node that stopped sending, a container that
        // went): a gap too, once it is longer than a sample's usual delay could explain.
        if let (Some(&last), None) = (stamps.last(), after)
            && to_ms.saturating_sub(last) > limit + tier.step_ms
        {
            gaps.push(Gap { from_ms: last.max(from_ms), to_ms });
        }

        let out_step = step_ms.map_or(tier.step_ms, |st| st.max(tier.step_ms));
        let points = if out_step > tier.step_ms { bucket(&inside, out_step) } else { inside };
        let points = points
            .into_iter()
            .map(|(t, v)| Point { ts_ms: t, values: v.into_iter().map(|x| (!x.is_nan()).then_some(x)).collect() })
            .collect();

        let events = s.events.iter().filter(|e| e.ts_ms >= from_ms && e.ts_ms <= to_ms).cloned().collect();
        let first = s.nodes.partition_point(|n| n.from_ms <= from_ms).saturating_sub(1);
        let nodes = s.nodes.iter().skip(first).filter(|n| n.from_ms <= to_ms).cloned().collect();
        Ok(QueryResult {
            series: id.clone(),
            fields: id.fields().iter().map(|f| f.to_string()).collect(),
            step_ms: out_step,
            points,
            gaps,
            events,
            nodes,
            last_ts_ms: s.last_ts,
        })
    }
}

/// Means of points per `step` bucket (aligned to multiples of `step`), ignoring NaN.
fn bucket(points: &[(u64, Vec<f32>)], step: u64) -> Vec<(u64, Vec<f32>)> {
    let mut out: Vec<(u64, Vec<f32>)> = Vec::new();
    let mut i = 0;
    while i < points.len() {
        let b = points[i].0 - points[i].0 % step;
        let width = points[i].1.len();
        let (mut sum, mut n) = (vec![0f64; width], vec![0u32; width]);
        while i < points.len() && points[i].0 - points[i].0 % step == b {
            for (k, v) in points[i].1.iter().enumerate() {
                if !v.is_nan() {
                    sum[k] += *v as f64;
                    n[k] += 1;
                }
            }
            i += 1;
        }
        out.push((
            b,
            sum.iter().zip(&n).map(|(s, &c)| if c == 0 { f32::NAN } else { (s / c as f64) as f32 }).collect(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> HistoryConfig {
        HistoryConfig {
            interval_ms: 1000,
            raw_retention_ms: 60_000,
            rollups: vec![
                RollupConfig { step_ms: 10_000, retention_ms: 300_000 },
                RollupConfig { step_ms: 60_000, retention_ms: 3_600_000 },
            ],
            max_bytes: 1 << 20,
            max_events_per_series: 8,
        }
    }

    fn cs(id: &str, ts_ms: u64, cpu: f64) -> ContainerSample {
        ContainerSample { id: id.into(), ts_ms, cpu_cores: Some(cpu), mem_bytes: Some(1 << 20), ..Default::default() }
    }

    fn cid(id: &str) -> SeriesId {
        SeriesId::Container(id.into())
    }

    #[test]
    fn config_validation() {
        assert!(HistoryConfig::default().validate().is_ok());
        let d = HistoryConfig::default();
        // One hour at 1 Hz at least.
        assert!(d.raw_retention_ms / d.interval_ms >= 3600);
        let per = d.series_bytes(CONTAINER_FIELDS.len());
        assert!(per < 1 << 20, "{per}");
        let bad = |f: fn(&mut HistoryConfig)| {
            let mut c = small();
            f(&mut c);
            assert!(matches!(History::new(c), Err(HistoryError::BadConfig(_))));
        };
        bad(|c| c.interval_ms = 0);
        bad(|c| c.raw_retention_ms = 10);
        bad(|c| c.rollups[0].step_ms = 1500);
        bad(|c| c.rollups[1].step_ms = 10_000);
        bad(|c| c.rollups[0].retention_ms = 1);
        bad(|c| c.max_bytes = 1000);
    }

    #[test]
    fn insert_and_query_raw() {
        let mut h = History::new(small()).unwrap();
        for i in 0..30u64 {
            assert_eq!(h.insert_container("n1", &cs("c1", 1_000_000 + i * 1000, i as f64)), Inserted::Stored);
        }
        let r = h.query(&cid("c1"), 1_005_000, 1_010_000, None).unwrap();
        assert_eq!(r.step_ms, 1000);
        assert_eq!(r.points.len(), 6);
        assert_eq!(r.points[0].ts_ms, 1_005_000);
        let cpu = r.column("cpu_cores").unwrap();
        assert_eq!(cpu[0], (1_005_000, Some(5.0)));
        let blk = r.column("blk_read_bps").unwrap();
        assert!(blk.iter().all(|(_, v)| v.is_none()), "absent values stay absent");
        assert_eq!(r.gaps, vec![]);
        assert_eq!(r.nodes, vec![NodeSpan { from_ms: 1_000_000, node: "n1".into() }]);
        assert_eq!(r.last_ts_ms, Some(1_029_000));
        // Repeated and late samples are ignored.
        assert_eq!(h.insert_container("n1", &cs("c1", 1_029_000, 0.0)), Inserted::Stale);
        assert_eq!(h.insert_container("n1", &cs("c1", 1_000_000, 0.0)), Inserted::Stale);
        assert_eq!(h.latest_container("c1").unwrap().0.cpu_cores, Some(29.0));
        // Step averaging.
        let r = h.query(&cid("c1"), 1_000_000, 1_009_999, Some(5000)).unwrap();
        assert_eq!(r.step_ms, 5000);
        assert_eq!(r.column("cpu_cores").unwrap(), vec![(1_000_000, Some(2.0)), (1_005_000, Some(7.0))]);
        // A step finer than stored is the stored resolution.
        assert_eq!(h.query(&cid("c1"), 1_000_000, 1_002_000, Some(10)).unwrap().step_ms, 1000);
    }

    #[test]
    fn errors() {
        let mut h = History::new(small()).unwrap();
        h.insert_container("n1", &cs("c1", 1000, 1.0));
        assert_eq!(h.query(&cid("c1"), 5, 4, None), Err(HistoryError::BadRange { from_ms: 5, to_ms: 4 }));
        assert_eq!(h.query(&cid("c1"), 0, 4, Some(0)), Err(HistoryError::BadStep));
        assert_eq!(h.query(&cid("zz"), 0, 4, None), Err(HistoryError::UnknownSeries(cid("zz"))));
        assert_eq!(
            h.query(&SeriesId::Node("c1".into()), 0, 4, None),
            Err(HistoryError::UnknownSeries(SeriesId::Node("c1".into())))
        );
        assert_eq!(HistoryError::BadRange { from_ms: 5, to_ms: 4 }.to_string(), "bad time range: from 5 is after to 4");
        assert_eq!(HistoryError::UnknownSeries(cid("zz")).to_string(), "unknown series: container zz");
        // An empty range inside the data is fine.
        assert_eq!(h.query(&cid("c1"), 1001, 1001, None).unwrap().points, vec![]);
    }

    #[test]
    fn gaps_are_marked_not_filled() {
        let mut h = History::new(small()).unwrap();
        let mut ts = 0;
        for i in 0..10 {
            h.insert_container("n1", &cs("c1", ts, i as f64));
            ts += 1000;
        }
        // One sample late: 2 s apart is not a gap.
        ts += 1000;
        h.insert_container("n1", &cs("c1", ts, 0.0));
        ts += 1000;
        // The node goes silent for 15 s.
        ts += 15_000;
        for _ in 0..5 {
            h.insert_container("n1", &cs("c1", ts, 1.0));
            ts += 1000;
        }
        let r = h.query(&cid("c1"), 0, ts, None).unwrap();
        assert_eq!(r.gaps, vec![Gap { from_ms: 11_000, to_ms: 27_000 }]);
        assert_eq!(r.points.len(), 16, "no invented points");
        // A query starting inside the gap reports it from its start.
        let r = h.query(&cid("c1"), 15_000, 28_000, None).unwrap();
        assert_eq!(r.gaps, vec![Gap { from_ms: 15_000, to_ms: 27_000 }]);
        // A query entirely inside the gap.
        let r = h.query(&cid("c1"), 15_000, 20_000, None).unwrap();
        assert_eq!((r.points.len(), r.gaps.clone()), (0, vec![Gap { from_ms: 15_000, to_ms: 20_000 }]));
        // Silent since the last sample (31 s): a trailing gap, once over three intervals.
        let r = h.query(&cid("c1"), 20_000, 34_000, None).unwrap();
        assert_eq!(r.gaps, vec![Gap { from_ms: 20_000, to_ms: 27_000 }], "the last sample is 3 s old: no gap yet");
        let r = h.query(&cid("c1"), 20_000, 35_000, None).unwrap();
        assert_eq!(r.gaps, vec![Gap { from_ms: 20_000, to_ms: 27_000 }, Gap { from_ms: 31_000, to_ms: 35_000 }]);
    }

    #[test]
    fn rollups_beyond_raw_retention() {
        let mut h = History::new(small()).unwrap();
        // 10 minutes at 1 Hz: raw keeps ~1 minute, the 10 s tier keeps 5 minutes.
        for i in 0..600u64 {
            h.insert_container("n1", &cs("c1", i * 1000, (i / 10) as f64));
        }
        let recent = h.query(&cid("c1"), 590_000, 599_000, None).unwrap();
        assert_eq!((recent.step_ms, recent.points.len()), (1000, 10));
        // Four minutes back: only the 10 s tier has it; each point is its bucket's mean.
        let r = h.query(&cid("c1"), 360_000, 400_000, None).unwrap();
        assert_eq!(r.step_ms, 10_000);
        assert_eq!(r.column("cpu_cores").unwrap()[0], (360_000, Some(36.0)));
        assert_eq!(r.points.len(), 5);
        assert_eq!(r.gaps, vec![]);
        // Eight minutes back: the 60 s tier.
        let r = h.query(&cid("c1"), 60_000, 599_000, None).unwrap();
        assert_eq!(r.step_ms, 60_000);
        assert_eq!(r.column("cpu_cores").unwrap()[0], (60_000, Some(8.5)));
        // The 60 s bucket in progress is the last point (540_000..600_000, not yet flushed).
        assert_eq!(r.points.last().unwrap().ts_ms, 540_000);
        // A finer step than the only tier holding the range gets that tier's resolution.
        assert_eq!(h.query(&cid("c1"), 60_000, 599_000, Some(10_000)).unwrap().step_ms, 60_000);
        // With a step, the coarsest tier not coarser than it is used (fewer points to average).
        let r = h.query(&cid("c1"), 560_000, 599_000, Some(20_000)).unwrap();
        assert_eq!(r.step_ms, 20_000);
        assert_eq!(r.column("cpu_cores").unwrap(), vec![(560_000, Some(56.5)), (580_000, Some(58.5))]);
        // A range older than every tier's retention: the coarsest tier, truncated, no error.
        let mut h2 = History::new(small()).unwrap();
        for i in 0..10u64 {
            h2.insert_container("n1", &cs("c1", 10_000_000 + i * 1000, 1.0));
        }
        assert_eq!(h2.query(&cid("c1"), 0, 5_000_000, None).unwrap().points, vec![]);
    }

    #[test]
    fn memory_stays_bounded() {
        let cfg = small();
        let per = cfg.series_bytes(CONTAINER_FIELDS.len());
        let mut h = History::new(HistoryConfig { max_bytes: per * 3, ..cfg }).unwrap();
        // One series, many samples: the rings wrap, the size levels off.
        for i in 0..5000u64 {
            h.insert_container("n1", &cs("c1", i * 1000, 1.0));
        }
        let one = h.stats().bytes;
        assert!(one <= per, "{one} > {per}");
        for i in 5000..10_000u64 {
            h.insert_container("n1", &cs("c1", i * 1000, 1.0));
        }
        assert_eq!(h.stats().bytes, one);
        // Many series: the oldest are evicted, the bound holds after every insert.
        for round in 0..3u64 {
            for c in 0..20u64 {
                for i in 0..200u64 {
                    h.insert_container("n1", &cs(&format!("x{c}"), 10_000_000 + round * 1_000_000 + i * 1000, 1.0));
                    assert!(h.stats().bytes <= h.stats().max_bytes);
                }
            }
        }
        let st = h.stats();
        assert!(st.evicted_series > 0);
        assert!(st.series >= 3, "{st:?}");
        assert!(h.query(&cid("c1"), 0, u64::MAX, None).is_err(), "least recently updated series was evicted");
        assert!(h.query(&cid("x19"), 0, u64::MAX, None).is_ok());
        // Removal returns the bytes.
        let before = h.stats().bytes;
        assert!(h.remove(&cid("x19")));
        assert!(h.stats().bytes < before);
        assert!(!h.remove(&cid("x19")));
    }

    #[test]
    fn tight_budget_freezes_rings_instead_of_exceeding() {
        let cfg = small();
        let per = cfg.series_bytes(CONTAINER_FIELDS.len());
        let mut h = History::new(HistoryConfig { max_bytes: per, ..cfg }).unwrap();
        // Two live series alternate; neither can be evicted for the other forever without
        // the bound holding.
        for i in 0..3000u64 {
            h.insert_container("n1", &cs("a", i * 1000, 1.0));
            h.insert_container("n1", &cs("b", i * 1000, 2.0));
            assert!(h.stats().bytes <= per);
        }
        assert!(h.query(&cid("b"), 0, u64::MAX, None).is_ok());
    }

    #[test]
    fn events_and_migration_continuity() {
        let mut h = History::new(small()).unwrap();
        for i in 0..10u64 {
            h.insert_container("n1", &cs("c1", i * 1000, 0.5));
        }
        h.add_event(&cid("c1"), 10_500, "migrated", "n1 -> n2");
        // The destination's samples continue the same series (after the freeze, a 3 s gap).
        for i in 13..20u64 {
            h.insert_container("n2", &cs("c1", i * 1000, 0.7));
        }
        let r = h.query(&cid("c1"), 0, 19_000, None).unwrap();
        assert_eq!(r.points.len(), 17);
        assert_eq!(r.events, vec![Event { ts_ms: 10_500, kind: "migrated".into(), text: "n1 -> n2".into() }]);
        assert_eq!(
            r.nodes,
            vec![NodeSpan { from_ms: 0, node: "n1".into() }, NodeSpan { from_ms: 13_000, node: "n2".into() }]
        );
        assert_eq!(r.gaps, vec![Gap { from_ms: 9000, to_ms: 13_000 }]);
        assert_eq!(h.latest_container("c1").unwrap().1, "n2");
        // A query after the move shows the span in effect.
        let r = h.query(&cid("c1"), 15_000, 16_000, None).unwrap();
        assert_eq!(r.nodes, vec![NodeSpan { from_ms: 13_000, node: "n2".into() }]);
        assert_eq!(r.events, vec![]);
        // Events are bounded and can precede samples.
        for i in 0..20 {
            h.add_event(&cid("new"), i, "k", &"x".repeat(1000));
        }
        let r = h.query(&cid("new"), 0, 100, None).unwrap();
        assert_eq!(r.events.len(), 8);
        assert_eq!(r.events[0].ts_ms, 12);
        assert_eq!(r.events[0].text.len(), MAX_EVENT_TEXT);
        assert_eq!(r.points, vec![]);
    }

    #[test]
    fn batches_and_nodes() {
        let mut h = History::new(small()).unwrap();
        let mut b = Batch::new("n1", 1, 1000);
        b.node_sample = Some(NodeSample { node: "n1".into(), ts_ms: 1000, containers: 1, ..Default::default() });
        b.containers.push(cs("c1", 1000, 0.1));
        assert_eq!(h.insert_batch(&b), BatchOutcome { stored: 2, stale: 0, lost_batches: 0 });
        assert_eq!(h.insert_batch(&b), BatchOutcome { stored: 0, stale: 2, lost_batches: 0 });
        let mut b4 = Batch::new("n1", 4, 4000);
        b4.containers.push(cs("c1", 4000, 0.1));
        assert_eq!(h.insert_batch(&b4).lost_batches, 2);
        assert_eq!(h.latest_node("n1").unwrap().containers, 1);
        assert_eq!(h.latest_nodes().count(), 1);
        assert_eq!(h.latest_containers().count(), 1);
        let r = h.query(&SeriesId::Node("n1".into()), 0, 5000, None).unwrap();
        assert_eq!(r.fields.len(), NODE_FIELDS.len());
        assert_eq!(r.column("containers").unwrap(), vec![(1000, Some(1.0))]);
        assert_eq!(serde_json::to_string(&SeriesId::Node("n1".into())).unwrap(), r#"{"kind":"node","id":"n1"}"#);
    }
}
