//! Human output: tables, durations and timestamps.

use comfy_table::{Table, presets};
use herd_proto::UnixMillis;
use herd_proto::api::ContainerSummary;
use herd_proto::state::ContainerState;

/// A borderless, left-aligned table like `docker ps` prints.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_header(header.to_vec());
    for c in t.column_iter_mut() {
        c.set_padding((0, 3));
    }
    t
}

/// Writes rows under a header in columns three spaces apart, like [`table`] without its
/// cost: `herd ps` lists up to a hundred thousand rows, for which a general table layout
/// takes seconds.
pub fn write_columns<const N: usize, C: AsRef<str>>(
    out: &mut impl std::io::Write,
    header: &[&str; N],
    rows: &[[C; N]],
) -> std::io::Result<()> {
    let mut widths: [usize; N] = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.as_ref().chars().count());
        }
    }
    let mut line = String::new();
    let mut write_row = |cells: &mut dyn Iterator<Item = &str>| {
        line.clear();
        for (cell, width) in cells.zip(widths) {
            line.push_str(cell);
            let pad = width + 3 - cell.chars().count();
            line.extend(std::iter::repeat_n(' ', pad));
        }
        writeln!(out, "{}", line.trim_end())
    };
    write_row(&mut header.iter().copied())?;
    for row in rows {
        write_row(&mut row.iter().map(AsRef::as_ref))?;
    }
    Ok(())
}

/// Prints a table without the trailing spaces of its last column.
pub fn print_table(t: &Table) {
    for line in t.lines() {
        println!("{}", line.trim_end());
    }
}

/// `5s`, `3m`, `2h`, `4d`.
pub fn ago(then: UnixMillis, now: UnixMillis) -> String {
    let secs = now.saturating_sub(then) / 1000;
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m", secs / 60),
        3600..=86_399 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// `2024-05-01 12:00:03` in local time.
pub fn timestamp(t: UnixMillis) -> String {
    chrono::DateTime::from_timestamp_millis(t as i64)
        .map(|d| d.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

/// The STATUS column of `herd ps`: `running 5m`, `exited (3) 2m ago`.
pub fn status(c: &ContainerSummary<'_>, now: UnixMillis) -> String {
    let s = match c.state {
        ContainerState::Running => format!("running {}", c.started_at.map(|t| ago(t, now)).unwrap_or_default()),
        ContainerState::Exited => format!(
            "exited ({}) {} ago",
            c.exit_code.map_or("?".into(), |x| x.to_string()),
            c.finished_at.map(|t| ago(t, now)).unwrap_or_default()
        ),
        ContainerState::Checkpointed => "checkpointed".to_string(),
        ContainerState::Created => "created".to_string(),
        ContainerState::Failed => "failed".to_string(),
    };
    if c.node_down { format!("{s} (node down)") } else { s.trim_end().to_string() }
}

/// A command line shortened to `width` characters, quoted like `docker ps` does.
pub fn command(args: &[String], width: usize) -> String {
    let joined = args.join(" ");
    if joined.chars().count() > width {
        let cut: String = joined.chars().take(width.saturating_sub(1)).collect();
        format!("\"{cut}…\"")
    } else {
        format!("\"{joined}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_look_like_the_table() {
        let header = ["NAME", "COMMAND", "PORTS"];
        let rows = [
            ["web".to_string(), "\"httpd -f\"".to_string(), "0.0.0.0:8080->80/tcp".to_string()],
            ["a-much-longer-name".to_string(), "\"sleep 1\"".to_string(), String::new()],
            ["ünïcode".to_string(), String::new(), "x".to_string()],
        ];
        let mut t = table(&header);
        for r in &rows {
            t.add_row(r.to_vec());
        }
        let expected: String = t.lines().map(|l| format!("{}\n", l.trim_end())).collect();
        let mut out = Vec::new();
        write_columns(&mut out, &header, &rows).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn durations() {
        assert_eq!(ago(0, 59_000), "59s");
        assert_eq!(ago(0, 120_000), "2m");
        assert_eq!(ago(0, 7_200_000), "2h");
        assert_eq!(ago(0, 3 * 86_400_000), "3d");
        assert_eq!(ago(10, 0), "0s");
    }

    #[test]
    fn long_commands_are_cut() {
        let args: Vec<String> = vec!["sh".into(), "-c".into(), "echo hello world".into()];
        assert_eq!(command(&args, 40), "\"sh -c echo hello world\"");
        assert_eq!(command(&args, 8), "\"sh -c e…\"");
    }
}
