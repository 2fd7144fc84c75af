//! What `herd top` shows and how keys change it: the latest figures from the Control node, the
//! sort order, the filter and the scroll position. Nothing here does I/O, so tests drive it
//! with plain values.

use std::cmp::Ordering;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use herd_proto::UnixMillis;
use herd_proto::api::{ContainerStats, Event, NodeStats};

/// One refresh's worth of figures from the Control node.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub nodes: Vec<NodeStats>,
    /// Running containers.
    pub containers: Vec<ContainerStats>,
    /// Recent events, newest first.
    pub events: Vec<Event>,
}

/// The column the containers table is sorted by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SortKey {
    #[default]
    Cpu,
    Memory,
    Name,
    Node,
}

impl SortKey {
    pub fn label(self) -> &'static str {
        match self {
            SortKey::Cpu => "cpu",
            SortKey::Memory => "memory",
            SortKey::Name => "name",
            SortKey::Node => "node",
        }
    }

    /// Whether this column reads best biggest first (figures) rather than A to Z (names).
    fn biggest_first(self) -> bool {
        matches!(self, SortKey::Cpu | SortKey::Memory)
    }

    /// Ascending order of two containers by this column.
    fn compare(self, a: &ContainerStats, b: &ContainerStats) -> Ordering {
        match self {
            SortKey::Cpu => compare_figures(a.cpu_cores, b.cpu_cores),
            SortKey::Memory => a.memory_bytes.cmp(&b.memory_bytes),
            SortKey::Name => a.name.cmp(&b.name),
            SortKey::Node => a.node.cmp(&b.node),
        }
    }
}

/// Orders optional figures with a missing one below every present one.
fn compare_figures(a: Option<f64>, b: Option<f64>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.total_cmp(&b),
        (a, b) => a.is_some().cmp(&b.is_some()),
    }
}

/// Everything `herd top` draws, and the user's choices of what to see.
#[derive(Debug, Default)]
pub struct TopState {
    pub snapshot: Snapshot,
    /// When the last successful refresh arrived.
    pub updated_at: Option<UnixMillis>,
    /// Why the last refresh failed, until one succeeds.
    pub error: Option<String>,
    pub sort: SortKey,
    /// Show the sort order upside down.
    pub reverse: bool,
    /// Substring a container's name, node or image must contain (case-insensitive).
    pub filter: String,
    /// The user is typing the filter (keys go into it).
    pub typing_filter: bool,
    /// Index of the first container row shown.
    pub scroll: usize,
    /// How many container rows fit on the screen (set by the drawing loop).
    pub page_rows: usize,
    /// The user asked to leave.
    pub quit: bool,
}

impl TopState {
    /// Takes in one refresh: new figures, or why there are none (the old ones stay up).
    pub fn update(&mut self, refresh: Result<Snapshot, String>, now: UnixMillis) {
        match refresh {
            Ok(snapshot) => {
                self.snapshot = snapshot;
                self.updated_at = Some(now);
                self.error = None;
                self.scroll = self.scroll.min(self.max_scroll());
            }
            Err(e) => self.error = Some(e),
        }
    }

    /// The containers to show, filtered and in display order.
    pub fn rows(&self) -> Vec<&ContainerStats> {
        let needle = self.filter.to_lowercase();
        let mut rows: Vec<&ContainerStats> =
            self.snapshot.containers.iter().filter(|c| matches_filter(c, &needle)).collect();
        let key = self.sort;
        rows.sort_by(|a, b| {
            let by_key = if key.biggest_first() { key.compare(b, a) } else { key.compare(a, b) };
            by_key.then_with(|| a.name.cmp(&b.name))
        });
        if self.reverse {
            rows.reverse();
        }
        rows
    }

    /// Whether the rows go from biggest to smallest (for the arrow in the column header).
    pub fn descending(&self) -> bool {
        self.sort.biggest_first() != self.reverse
    }

    /// Nodes that are ready, and all nodes.
    pub fn nodes_ready(&self) -> (usize, usize) {
        let nodes = &self.snapshot.nodes;
        (nodes.iter().filter(|n| n.state == herd_proto::api::NodeState::Ready).count(), nodes.len())
    }

    /// Changes the state as the key asks.
    pub fn apply_key(&mut self, key: KeyEvent) {
        if key.modifiers.contains(KeyModifiers::CONTROL) && matches!(key.code, KeyCode::Char('c' | 'C')) {
            self.quit = true;
        } else if self.typing_filter {
            self.filter_key(key.code);
        } else {
            self.command_key(key.code);
        }
    }

    fn filter_key(&mut self, code: KeyCode) {
        match code {
            KeyCode::Enter => self.typing_filter = false,
            KeyCode::Esc => {
                self.typing_filter = false;
                self.filter.clear();
            }
            KeyCode::Backspace => {
                self.filter.pop();
            }
            KeyCode::Char(c) => self.filter.push(c),
            _ => return,
        }
        self.scroll = 0;
    }

    fn command_key(&mut self, code: KeyCode) {
        match code {
            KeyCode::Char('q') => self.quit = true,
            // Esc backs out of a filter first, then leaves.
            KeyCode::Esc if !self.filter.is_empty() => {
                self.filter.clear();
                self.scroll = 0;
            }
            KeyCode::Esc => self.quit = true,
            KeyCode::Char('c') => self.sort_by(SortKey::Cpu),
            KeyCode::Char('m') => self.sort_by(SortKey::Memory),
            KeyCode::Char('n') => self.sort_by(SortKey::Name),
            KeyCode::Char('N') => self.sort_by(SortKey::Node),
            KeyCode::Char('r') => {
                self.reverse = !self.reverse;
                self.scroll = 0;
            }
            KeyCode::Char('/') => self.typing_filter = true,
            KeyCode::Down | KeyCode::Char('j') => self.scroll_by(1),
            KeyCode::Up | KeyCode::Char('k') => self.scroll_by(-1),
            KeyCode::PageDown | KeyCode::Char(' ') => self.scroll_by(self.page() as isize),
            KeyCode::PageUp => self.scroll_by(-(self.page() as isize)),
            KeyCode::Home | KeyCode::Char('g') => self.scroll = 0,
            KeyCode::End | KeyCode::Char('G') => self.scroll = self.max_scroll(),
            _ => {}
        }
    }

    fn sort_by(&mut self, key: SortKey) {
        self.sort = key;
        self.reverse = false;
        self.scroll = 0;
    }

    fn page(&self) -> usize {
        self.page_rows.max(1)
    }

    /// The last first row that still fills the page.
    fn max_scroll(&self) -> usize {
        self.rows().len().saturating_sub(self.page())
    }

    fn scroll_by(&mut self, delta: isize) {
        self.scroll = self.scroll.saturating_add_signed(delta).min(self.max_scroll());
    }
}

/// Whether a container's name, node or image contains `needle` (already lowercase).
fn matches_filter(c: &ContainerStats, needle: &str) -> bool {
    needle.is_empty() || [&c.name, &c.node, &c.image].iter().any(|field| field.to_lowercase().contains(needle))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use herd_proto::api::NodeState;

    pub fn container(name: &str, node: &str, image: &str, cpu_cores: f64, memory_mib: u64) -> ContainerStats {
        ContainerStats {
            name: name.into(),
            id: format!("id-{name}"),
            node: node.into(),
            image: image.into(),
            cpu_cores: Some(cpu_cores),
            cpu_percent_of_limit: Some(cpu_cores * 200.0),
            memory_bytes: Some(memory_mib << 20),
            memory_limit_bytes: Some(256 << 20),
            net_rx_bytes: Some(12 << 10),
            net_tx_bytes: Some(3 << 10),
            block_read_bytes: Some(5 << 20),
            block_write_bytes: Some(0),
            pids: Some(3),
            ..ContainerStats::default()
        }
    }

    pub fn node(name: &str, state: NodeState, cpu_percent: f64, used_gib: u64) -> NodeStats {
        NodeStats {
            name: name.into(),
            state,
            time: Some(1_700_000_000_000),
            cpus: Some(4),
            cpu_user_percent: Some(cpu_percent * 0.75),
            cpu_system_percent: Some(cpu_percent * 0.25),
            cpu_iowait_percent: Some(0.0),
            cpu_steal_percent: None,
            load1: Some(1.25),
            load5: Some(1.0),
            load15: Some(0.5),
            memory_total_bytes: Some(8 << 30),
            memory_available_bytes: Some((8 - used_gib) << 30),
            memory_containers_bytes: Some(1 << 30),
            disk_read_bytes_per_sec: Some(1024.0),
            disk_write_bytes_per_sec: Some(2048.0 * 1024.0),
            net_rx_bytes_per_sec: Some(300.0),
            net_tx_bytes_per_sec: Some(4096.0),
            pressure_cpu: None,
            pressure_memory: None,
            pressure_io: None,
            containers_running: 2,
        }
    }

    pub fn event(seq: u64, kind: &str, action: &str, name: &str, message: &str) -> Event {
        Event {
            seq,
            time: 1_700_000_000_000 + seq * 1000,
            kind: kind.into(),
            action: action.into(),
            name: name.into(),
            node: Some("n1".into()),
            message: message.into(),
        }
    }

    /// Three containers whose CPU, memory and name orders all differ.
    pub fn sample_state() -> TopState {
        let mut state = TopState::default();
        let snapshot = Snapshot {
            nodes: vec![node("n1", NodeState::Ready, 40.0, 3), node("n2", NodeState::Down, 90.0, 7)],
            containers: vec![
                container("web", "n1", "nginx:latest", 0.10, 200),
                container("api", "n2", "busybox:latest", 0.90, 20),
                container("cache", "n1", "redis:7", 0.50, 90),
            ],
            events: vec![
                event(2, "migration", "migrate", "api", "n2 -> n1 (precopy), downtime 40 ms"),
                event(1, "container", "start", "web", "started"),
            ],
        };
        state.update(Ok(snapshot), 1_700_000_005_000);
        state
    }

    fn names(state: &TopState) -> Vec<&str> {
        state.rows().iter().map(|c| c.name.as_str()).collect()
    }

    fn press(state: &mut TopState, code: KeyCode) {
        state.apply_key(KeyEvent::new(code, KeyModifiers::NONE));
    }

    fn type_text(state: &mut TopState, text: &str) {
        for c in text.chars() {
            press(state, KeyCode::Char(c));
        }
    }

    #[test]
    fn sorts_by_cpu_biggest_first_by_default() {
        let state = sample_state();
        assert_eq!(names(&state), ["api", "cache", "web"]);
        assert!(state.descending());
    }

    #[test]
    fn sort_keys_pick_the_column() {
        let mut state = sample_state();
        press(&mut state, KeyCode::Char('m'));
        assert_eq!(state.sort, SortKey::Memory);
        assert_eq!(names(&state), ["web", "cache", "api"]);
        press(&mut state, KeyCode::Char('n'));
        assert_eq!(names(&state), ["api", "cache", "web"]);
        assert!(!state.descending());
        press(&mut state, KeyCode::Char('N'));
        // n1 before n2; ties by name.
        assert_eq!(names(&state), ["cache", "web", "api"]);
        press(&mut state, KeyCode::Char('c'));
        assert_eq!(names(&state), ["api", "cache", "web"]);
    }

    #[test]
    fn reverse_flips_the_order_and_a_new_sort_resets_it() {
        let mut state = sample_state();
        press(&mut state, KeyCode::Char('m'));
        press(&mut state, KeyCode::Char('r'));
        assert!(state.reverse);
        assert!(!state.descending());
        assert_eq!(names(&state), ["api", "cache", "web"]);
        press(&mut state, KeyCode::Char('n'));
        assert!(!state.reverse);
        press(&mut state, KeyCode::Char('r'));
        assert_eq!(names(&state), ["web", "cache", "api"]);
    }

    #[test]
    fn missing_figures_sort_below_present_ones() {
        let mut state = sample_state();
        state.snapshot.containers[1].cpu_cores = None; // api
        state.snapshot.containers[0].memory_bytes = None; // web
        assert_eq!(names(&state), ["cache", "web", "api"]);
        press(&mut state, KeyCode::Char('m'));
        assert_eq!(names(&state), ["cache", "api", "web"]);
    }

    #[test]
    fn filter_matches_name_node_or_image_ignoring_case() {
        let mut state = sample_state();
        state.filter = "REDIS".into();
        assert_eq!(names(&state), ["cache"]);
        state.filter = "n1".into();
        assert_eq!(names(&state), ["cache", "web"]);
        state.filter = "we".into();
        assert_eq!(names(&state), ["web"]);
        state.filter = "nothing-like-it".into();
        assert!(state.rows().is_empty());
    }

    #[test]
    fn typing_a_filter_applies_on_enter_and_esc_clears_it() {
        let mut state = sample_state();
        press(&mut state, KeyCode::Char('/'));
        assert!(state.typing_filter);
        // Sort and quit keys are text while typing.
        type_text(&mut state, "cqx");
        press(&mut state, KeyCode::Backspace);
        assert_eq!(state.filter, "cq");
        assert!(!state.quit);
        assert_eq!(state.sort, SortKey::Cpu);
        press(&mut state, KeyCode::Backspace);
        press(&mut state, KeyCode::Backspace);
        type_text(&mut state, "busy");
        press(&mut state, KeyCode::Enter);
        assert!(!state.typing_filter);
        assert_eq!(state.filter, "busy");
        assert_eq!(names(&state), ["api"]);

        press(&mut state, KeyCode::Char('/'));
        type_text(&mut state, "box");
        press(&mut state, KeyCode::Esc);
        assert!(!state.typing_filter);
        assert_eq!(state.filter, "");
        assert_eq!(names(&state).len(), 3);
        assert!(!state.quit);
    }

    #[test]
    fn quit_keys() {
        for code in [KeyCode::Char('q'), KeyCode::Esc] {
            let mut state = sample_state();
            press(&mut state, code);
            assert!(state.quit, "{code:?} quits");
        }
        let mut state = sample_state();
        state.typing_filter = true;
        state.apply_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
        assert!(state.quit, "ctrl-c quits even while typing a filter");
    }

    #[test]
    fn esc_clears_an_applied_filter_before_quitting() {
        let mut state = sample_state();
        state.filter = "web".into();
        press(&mut state, KeyCode::Esc);
        assert!(!state.quit);
        assert!(state.filter.is_empty());
        press(&mut state, KeyCode::Esc);
        assert!(state.quit);
    }

    #[test]
    fn scrolling_stays_within_the_rows() {
        let mut state = sample_state();
        state.page_rows = 2;
        press(&mut state, KeyCode::Up);
        assert_eq!(state.scroll, 0);
        press(&mut state, KeyCode::Char('j'));
        assert_eq!(state.scroll, 1);
        press(&mut state, KeyCode::Down);
        assert_eq!(state.scroll, 1, "the last page stays full");
        press(&mut state, KeyCode::Char('k'));
        assert_eq!(state.scroll, 0);
        press(&mut state, KeyCode::End);
        assert_eq!(state.scroll, 1);
        // Fewer containers after a refresh pull the scroll back.
        let mut fewer = state.snapshot.clone();
        fewer.containers.truncate(1);
        state.update(Ok(fewer), 1);
        assert_eq!(state.scroll, 0);
    }

    #[test]
    fn a_failed_refresh_keeps_the_figures_and_shows_why() {
        let mut state = sample_state();
        state.update(Err("cannot reach the Control node".into()), 1_700_000_009_000);
        assert_eq!(state.error.as_deref(), Some("cannot reach the Control node"));
        assert_eq!(state.rows().len(), 3);
        assert_eq!(state.updated_at, Some(1_700_000_005_000));
        state.update(Ok(state.snapshot.clone()), 1_700_000_010_000);
        assert_eq!(state.error, None);
    }

    #[test]
    fn counts_ready_nodes() {
        assert_eq!(sample_state().nodes_ready(), (1, 2));
    }
}
