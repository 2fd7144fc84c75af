//! How `herd top` looks: one frame drawn from a [`TopState`], top to bottom a header line, the
//! nodes with usage bars, the containers table, recent events and a footer with the keys.

use herd_proto::UnixMillis;
use herd_proto::api::{ContainerStats, NodeState, NodeStats};
use herd_proto::units::Bytes;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Row, Table};

use super::state::{SortKey, TopState};

/// The screen's parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Areas {
    pub header: Rect,
    pub nodes: Rect,
    pub containers: Rect,
    pub events: Rect,
    pub footer: Rect,
}

/// Splits the screen: the nodes pane fits its nodes (up to a third of the screen), the
/// containers table takes what the others leave.
pub fn areas(area: Rect, state: &TopState) -> Areas {
    let node_rows = state.snapshot.nodes.len().max(1) as u16;
    let nodes_height = (node_rows + 3).min((area.height / 3).max(4));
    let events_height = if area.height >= 30 { 9 } else { 5 };
    let footer_height = 1 + u16::from(state.error.is_some());
    let [header, nodes, containers, events, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(nodes_height),
        Constraint::Min(4),
        Constraint::Length(events_height),
        Constraint::Length(footer_height),
    ])
    .areas(area);
    Areas { header, nodes, containers, events, footer }
}

/// How many container rows fit in the table (inside its border, below its header).
pub fn container_rows_visible(area: Rect, state: &TopState) -> usize {
    usize::from(areas(area, state).containers.height.saturating_sub(3))
}

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, state: &TopState) {
    let areas = areas(frame.area(), state);
    frame.render_widget(header(state), areas.header);
    draw_nodes(frame, state, areas.nodes);
    draw_containers(frame, state, areas.containers);
    draw_events(frame, state, areas.events);
    frame.render_widget(footer(state), areas.footer);
}

fn header(state: &TopState) -> Line<'static> {
    let (ready, total) = state.nodes_ready();
    let ready_style = if ready < total { Style::new().fg(Color::Yellow) } else { Style::new().fg(Color::Green) };
    let updated = match state.updated_at {
        Some(t) => format!("updated {}", clock(t)),
        None => "connecting…".to_string(),
    };
    Line::from(vec![
        Span::styled(" herd top ", Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED)),
        Span::raw("  nodes "),
        Span::styled(format!("{ready}/{total} ready"), ready_style.add_modifier(Modifier::BOLD)),
        Span::raw("   containers "),
        Span::styled(format!("{} running", state.snapshot.containers.len()), Style::new().bold()),
        Span::raw("   "),
        Span::styled(updated, Style::new().fg(Color::DarkGray)),
    ])
}

/// The columns of the nodes pane; narrow screens leave out the rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeColumn {
    Name,
    State,
    Cpu,
    Memory,
    Load,
    Net,
    Disk,
    Containers,
}

impl NodeColumn {
    fn title(self) -> &'static str {
        match self {
            NodeColumn::Name => "NODE",
            NodeColumn::State => "STATE",
            NodeColumn::Cpu => "CPU",
            NodeColumn::Memory => "MEMORY",
            NodeColumn::Load => "LOAD",
            NodeColumn::Net => "NET RX / TX",
            NodeColumn::Disk => "DISK R / W",
            NodeColumn::Containers => "CTRS",
        }
    }
}

const RATE_WIDTH: u16 = 21;

fn node_columns(width: u16, name_width: u16) -> Vec<(NodeColumn, Constraint)> {
    let mut columns = vec![
        (NodeColumn::Name, Constraint::Length(name_width)),
        (NodeColumn::State, Constraint::Length(5)),
        (NodeColumn::Cpu, Constraint::Fill(1)),
        (NodeColumn::Memory, Constraint::Fill(1)),
        (NodeColumn::Load, Constraint::Length(5)),
    ];
    if width >= 90 {
        columns.push((NodeColumn::Net, Constraint::Length(RATE_WIDTH)));
    }
    if width >= 112 {
        columns.push((NodeColumn::Disk, Constraint::Length(RATE_WIDTH)));
    }
    columns.push((NodeColumn::Containers, Constraint::Length(4)));
    columns
}

/// The nodes pane: a grid laid out by hand, since its bars are drawn to their cells' widths.
fn draw_nodes(frame: &mut Frame, state: &TopState, area: Rect) {
    let block = Block::bordered().title(" Nodes ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let nodes = &state.snapshot.nodes;
    if nodes.is_empty() {
        frame.render_widget(Line::from("no nodes yet").dark_gray(), inner);
        return;
    }
    let name_width = nodes.iter().map(|n| n.name.chars().count()).max().unwrap_or(0).clamp(4, 24) as u16;
    let columns = node_columns(inner.width, name_width);
    let layout = Layout::horizontal(columns.iter().map(|(_, c)| *c)).spacing(1);
    let rows = std::iter::once(None).chain(nodes.iter().map(Some));
    for (y, node) in (inner.y..inner.bottom()).zip(rows) {
        let cells = layout.split(Rect { y, height: 1, ..inner });
        for ((column, _), cell) in columns.iter().zip(cells.iter()) {
            let line = match node {
                None => Line::from(column.title()).bold(),
                Some(node) => node_cell(node, *column, cell.width),
            };
            frame.render_widget(line, *cell);
        }
    }
}

fn node_cell(node: &NodeStats, column: NodeColumn, width: u16) -> Line<'static> {
    let down = node.state == NodeState::Down;
    let line = match column {
        NodeColumn::Name => Line::from(node.name.clone()),
        NodeColumn::State => {
            let color = if down { Color::Red } else { Color::Green };
            Line::styled(node.state.as_str(), Style::new().fg(color))
        }
        NodeColumn::Cpu => usage_bar(cpu_used(node), width),
        NodeColumn::Memory => usage_bar(memory_used(node), width),
        NodeColumn::Load => Line::from(figure(node.load1, |l| format!("{l:.2}"))),
        NodeColumn::Net => Line::from(rate_pair(node.net_rx_bytes_per_sec, node.net_tx_bytes_per_sec)),
        NodeColumn::Disk => Line::from(rate_pair(node.disk_read_bytes_per_sec, node.disk_write_bytes_per_sec)),
        NodeColumn::Containers => Line::from(node.containers_running.to_string()),
    };
    // A down node's figures are its last ones: dim them.
    if down && column != NodeColumn::State { line.dark_gray() } else { line }
}

/// Share of the node's CPU time that was busy (user, system, iowait and steal), 0 to 1.
pub fn cpu_used(node: &NodeStats) -> Option<f64> {
    let parts = [node.cpu_user_percent, node.cpu_system_percent, node.cpu_iowait_percent, node.cpu_steal_percent];
    if parts.iter().all(Option::is_none) {
        return None;
    }
    Some((parts.iter().flatten().sum::<f64>() / 100.0).clamp(0.0, 1.0))
}

/// Share of the node's memory in use (total less available), 0 to 1.
pub fn memory_used(node: &NodeStats) -> Option<f64> {
    let (total, available) = (node.memory_total_bytes?, node.memory_available_bytes?);
    (total > 0).then(|| total.saturating_sub(available) as f64 / total as f64)
}

/// `█████░░░░░  50.0%`, exactly `width` cells wide (the label alone when the cell is narrow),
/// green, then yellow from 60 %, red from 85 %.
pub fn usage_bar(fraction: Option<f64>, width: u16) -> Line<'static> {
    const LABEL_WIDTH: usize = 7;
    let width = usize::from(width);
    let Some(fraction) = fraction.map(|f| f.clamp(0.0, 1.0)) else {
        return Line::from(format!("{:>width$}", "-")).dark_gray();
    };
    let label = format!("{:>LABEL_WIDTH$}", format!("{:.1}%", fraction * 100.0));
    let cells = width.saturating_sub(LABEL_WIDTH);
    let filled = ((fraction * cells as f64).round() as usize).min(cells);
    let color = match fraction {
        f if f < 0.60 => Color::Green,
        f if f < 0.85 => Color::Yellow,
        _ => Color::Red,
    };
    Line::from(vec![
        Span::styled("█".repeat(filled), Style::new().fg(color)),
        Span::styled("░".repeat(cells - filled), Style::new().fg(Color::DarkGray)),
        Span::raw(label),
    ])
}

#[derive(Debug, Clone, Copy)]
struct ContainerColumn {
    title: &'static str,
    sort: Option<SortKey>,
    width: Constraint,
    cell: fn(&ContainerStats) -> String,
}

/// The containers table's columns; narrow screens leave out block and then network I/O.
fn container_columns(width: u16) -> Vec<ContainerColumn> {
    let column = |title, sort, width, cell| ContainerColumn { title, sort, width, cell };
    let mut columns = vec![
        column("NAME", Some(SortKey::Name), Constraint::Fill(2), |c: &ContainerStats| c.name.clone()),
        column("NODE", Some(SortKey::Node), Constraint::Fill(1), |c| c.node.clone()),
        column("CPU %", Some(SortKey::Cpu), Constraint::Length(7), |c| {
            figure(c.cpu_cores, |v| format!("{:.1}%", v * 100.0))
        }),
        column("MEM", Some(SortKey::Memory), Constraint::Length(9), |c| {
            figure(c.memory_bytes, |b| Bytes(b).to_string())
        }),
        column("MEM %", None, Constraint::Length(6), |c| {
            let percent = match (c.memory_bytes, c.memory_limit_bytes) {
                (Some(used), Some(limit)) if limit > 0 => Some(used as f64 * 100.0 / limit as f64),
                _ => None,
            };
            figure(percent, |p| format!("{p:.1}%"))
        }),
    ];
    if width >= 80 {
        columns.push(column("NET I/O", None, Constraint::Length(19), |c| byte_pair(c.net_rx_bytes, c.net_tx_bytes)));
    }
    if width >= 100 {
        columns.push(column("BLOCK I/O", None, Constraint::Length(19), |c| {
            byte_pair(c.block_read_bytes, c.block_write_bytes)
        }));
    }
    columns.push(column("PIDS", None, Constraint::Length(5), |c| figure(c.pids, |p| p.to_string())));
    columns
}

fn draw_containers(frame: &mut Frame, state: &TopState, area: Rect) {
    let rows = state.rows();
    let total = state.snapshot.containers.len();
    let page = usize::from(area.height.saturating_sub(3));
    let first = state.scroll.min(rows.len().saturating_sub(page));
    let arrow = if state.descending() { "▼" } else { "▲" };
    let mut title = format!(" Containers {} ", rows.len());
    if rows.len() != total {
        title = format!(" Containers {} of {total} matching \"{}\" ", rows.len(), state.filter);
    }
    title.push_str(&format!("· by {} {arrow} ", state.sort.label()));
    if rows.len() > page && page > 0 {
        title.push_str(&format!("· rows {}-{} ", first + 1, (first + page).min(rows.len())));
    }
    let block = Block::bordered().title(title);
    if rows.is_empty() {
        let why = if total == 0 { "no running containers" } else { "no container matches the filter" };
        frame.render_widget(Paragraph::new(Line::from(why).dark_gray()).block(block), area);
        return;
    }
    let columns = container_columns(area.width.saturating_sub(2));
    let header = Row::new(columns.iter().map(|col| {
        if col.sort == Some(state.sort) {
            Line::from(format!("{}{arrow}", col.title)).bold().cyan()
        } else {
            Line::from(col.title).bold()
        }
    }));
    let body =
        rows[first..].iter().take(page).map(|c| Row::new(columns.iter().map(|col| (col.cell)(c)))).collect::<Vec<_>>();
    let table = Table::new(body, columns.iter().map(|col| col.width)).header(header).column_spacing(1).block(block);
    frame.render_widget(table, area);
}

fn draw_events(frame: &mut Frame, state: &TopState, area: Rect) {
    let block = Block::bordered().title(" Recent events ");
    let lines: Vec<Line> = state
        .snapshot
        .events
        .iter()
        .take(usize::from(area.height.saturating_sub(2)))
        .map(|e| {
            let kind_style = match e.kind.as_str() {
                "migration" => Style::new().fg(Color::Magenta).bold(),
                "node" => Style::new().fg(Color::Yellow),
                _ => Style::new().fg(Color::Blue),
            };
            Line::from(vec![
                Span::styled(clock(e.time), Style::new().fg(Color::DarkGray)),
                Span::raw(" "),
                Span::styled(format!("{:<9}", e.kind), kind_style),
                Span::raw(format!(" {:<10} ", e.action)),
                Span::styled(e.name.clone(), Style::new().bold()),
                Span::raw(format!(": {}", e.message)),
            ])
        })
        .collect();
    let paragraph =
        if lines.is_empty() { Paragraph::new(Line::from("no events yet").dark_gray()) } else { Paragraph::new(lines) };
    frame.render_widget(paragraph.block(block), area);
}

/// The keys (or the filter being typed), and on a line above them the last refresh error.
fn footer(state: &TopState) -> Paragraph<'static> {
    let mut lines = Vec::new();
    if let Some(error) = &state.error {
        lines.push(Line::from(format!(" {error} (retrying)")).red().bold());
    }
    if state.typing_filter {
        lines.push(Line::from(vec![
            Span::styled(" filter: ", Style::new().bold()),
            Span::raw(state.filter.clone()),
            Span::styled("▏", Style::new().fg(Color::Cyan)),
            Span::styled("   Enter apply  Esc clear", Style::new().fg(Color::DarkGray)),
        ]));
        return Paragraph::new(lines);
    }
    let mut spans = Vec::new();
    for (key, what) in [
        ("c", "cpu"),
        ("m", "mem"),
        ("n", "name"),
        ("N", "node"),
        ("r", "reverse"),
        ("/", "filter"),
        ("↑↓ jk", "scroll"),
        ("q", "quit"),
    ] {
        spans.push(Span::styled(format!(" {key}"), Style::new().fg(Color::Cyan).bold()));
        spans.push(Span::raw(format!(" {what} ")));
    }
    lines.push(Line::from(spans));
    Paragraph::new(lines)
}

/// `-` for a figure the node has not reported.
fn figure<T>(value: Option<T>, show: impl Fn(T) -> String) -> String {
    value.map(show).unwrap_or_else(|| "-".into())
}

fn byte_pair(a: Option<u64>, b: Option<u64>) -> String {
    format!("{} / {}", figure(a, |v| Bytes(v).to_string()), figure(b, |v| Bytes(v).to_string()))
}

fn rate_pair(a: Option<f64>, b: Option<f64>) -> String {
    let rate = |v: f64| format!("{}/s", Bytes(v.max(0.0).round() as u64));
    format!("{} / {}", figure(a, rate), figure(b, rate))
}

/// `12:00:03` in local time.
fn clock(t: UnixMillis) -> String {
    chrono::DateTime::from_timestamp_millis(t as i64)
        .map(|d| d.with_timezone(&chrono::Local).format("%H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::state::tests::sample_state;
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    /// Draws `state` on a `width` x `height` screen and returns the screen's text, line by line.
    fn render(state: &TopState, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|frame| draw(frame, state)).unwrap();
        let buffer = terminal.backend().buffer();
        (0..height).map(|y| (0..width).map(|x| buffer[(x, y)].symbol().to_string()).collect::<String>()).collect()
    }

    fn line_with<'a>(lines: &'a [String], needle: &str) -> &'a str {
        lines
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line has {needle:?}:\n{}", lines.join("\n")))
    }

    /// The container names in the order the table shows them.
    fn table_order(state: &TopState, lines: &[String], width: u16, height: u16) -> Vec<String> {
        let table = areas(Rect::new(0, 0, width, height), state).containers;
        let names: Vec<&str> = state.snapshot.containers.iter().map(|c| c.name.as_str()).collect();
        lines[usize::from(table.y) + 2..usize::from(table.bottom()) - 1]
            .iter()
            .filter_map(|l| names.iter().find(|n| l.trim_start_matches('│').trim_start().starts_with(**n)))
            .map(|n| n.to_string())
            .collect()
    }

    #[test]
    fn draws_nodes_with_bars_containers_and_events() {
        let state = sample_state();
        let lines = render(&state, 140, 32);
        let header = &lines[0];
        assert!(header.contains("nodes 1/2 ready"), "{header}");
        assert!(header.contains("containers 3 running"), "{header}");

        let n1 = line_with(&lines, "│n1 ");
        assert!(n1.contains("ready"), "{n1}");
        // 40 % CPU and 3 of 8 GiB memory: partly filled bars with their figures.
        assert!(n1.contains("█") && n1.contains("░"), "{n1}");
        assert!(n1.contains("40.0%"), "{n1}");
        assert!(n1.contains("37.5%"), "{n1}");
        assert!(n1.contains("1.25"), "{n1}");
        assert!(n1.contains("300B/s / 4KiB/s"), "{n1}");
        let n2 = line_with(&lines, "│n2 ");
        assert!(n2.contains("down") && n2.contains("90.0%"), "{n2}");

        for column in ["NAME", "NODE", "CPU %▼", "MEM", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"] {
            line_with(&lines, column);
        }
        let api = line_with(&lines, "│api ");
        assert!(api.contains("90.0%") && api.contains("20MiB") && api.contains("7.8%"), "{api}");
        assert!(api.contains("12KiB / 3KiB") && api.contains("5MiB / 0B"), "{api}");

        let migration = lines.iter().position(|l| l.contains("migration") && l.contains("migrate")).unwrap();
        let start = lines.iter().position(|l| l.contains("container") && l.contains("start")).unwrap();
        assert!(migration < start, "newest event first");
        line_with(&lines, "c cpu");
        line_with(&lines, "q quit");
    }

    #[test]
    fn table_rows_follow_the_sort() {
        let (width, height) = (120, 30);
        let mut state = sample_state();
        assert_eq!(table_order(&state, &render(&state, width, height), width, height), ["api", "cache", "web"]);
        state.apply_key(KeyEvent::new(KeyCode::Char('m'), KeyModifiers::NONE));
        let lines = render(&state, width, height);
        assert_eq!(table_order(&state, &lines, width, height), ["web", "cache", "api"]);
        line_with(&lines, "MEM▼");
        state.apply_key(KeyEvent::new(KeyCode::Char('r'), KeyModifiers::NONE));
        let lines = render(&state, width, height);
        assert_eq!(table_order(&state, &lines, width, height), ["api", "cache", "web"]);
        line_with(&lines, "MEM▲");
    }

    #[test]
    fn filter_shows_in_the_title_and_footer() {
        let mut state = sample_state();
        state.apply_key(KeyEvent::new(KeyCode::Char('/'), KeyModifiers::NONE));
        for c in "redis".chars() {
            state.apply_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
        }
        let lines = render(&state, 120, 30);
        assert_eq!(table_order(&state, &lines, 120, 30), ["cache"]);
        line_with(&lines, "Containers 1 of 3 matching \"redis\" · by cpu ▼");
        line_with(&lines, "filter: redis▏");
    }

    #[test]
    fn a_refresh_error_shows_in_the_footer() {
        let mut state = sample_state();
        state.update(Err("cannot reach the Control node at http://127.0.0.1:7700".into()), 0);
        let lines = render(&state, 120, 30);
        let last = &lines[lines.len() - 2];
        assert!(last.contains("cannot reach the Control node") && last.contains("retrying"), "{last}");
        // The last figures stay up.
        line_with(&lines, "│api ");
    }

    #[test]
    fn an_empty_cluster_and_a_tiny_screen_still_draw() {
        let lines = render(&TopState::default(), 80, 24);
        line_with(&lines, "connecting…");
        line_with(&lines, "q quit");
        line_with(&lines, "no nodes yet");
        line_with(&lines, "no running containers");
        line_with(&lines, "no events yet");
        render(&sample_state(), 20, 5);
        render(&sample_state(), 1, 1);
    }

    #[test]
    fn narrow_screens_drop_rate_columns_but_keep_the_bars() {
        let state = sample_state();
        let lines = render(&state, 80, 24);
        let n1 = line_with(&lines, "│n1 ");
        assert!(n1.contains("█") && n1.contains("40.0%"), "{n1}");
        assert!(!lines.iter().any(|l| l.contains("DISK")), "{}", lines.join("\n"));
        assert!(!lines.iter().any(|l| l.contains("BLOCK I/O")));
    }

    #[test]
    fn usage_bars_fill_their_width() {
        let bar = usage_bar(Some(0.5), 17).to_string();
        assert_eq!(bar, "█████░░░░░  50.0%");
        assert_eq!(usage_bar(Some(1.5), 10).to_string(), "███ 100.0%");
        assert_eq!(usage_bar(Some(0.0), 9).to_string(), "░░   0.0%");
        assert_eq!(usage_bar(None, 5).to_string(), "    -");
    }

    #[test]
    fn node_usage_figures() {
        let mut node = sample_state().snapshot.nodes[0].clone();
        node.cpu_iowait_percent = Some(5.0);
        node.cpu_steal_percent = Some(5.0);
        assert!((cpu_used(&node).unwrap() - 0.5).abs() < 1e-9);
        assert!((memory_used(&node).unwrap() - 0.375).abs() < 1e-9);
        node.cpu_user_percent = None;
        node.cpu_system_percent = None;
        node.cpu_iowait_percent = None;
        node.cpu_steal_percent = None;
        node.memory_total_bytes = Some(0);
        assert_eq!(cpu_used(&node), None);
        assert_eq!(memory_used(&node), None);
    }
}
