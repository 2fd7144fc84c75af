//! Human output: tables, durations, timestamps, and user-given strings made safe to print.

use std::borrow::Cow;

use comfy_table::{Table, presets};
use herd_proto::UnixMillis;
use herd_proto::api::ContainerSummary;
use herd_proto::state::ContainerState;

/// Whether `c` must not reach a terminal raw: control characters (C0 such as ESC, CR and
/// backspace, DEL, C1 such as CSI U+009B) and the invisible bidirectional-text controls, which
/// reorder what is shown.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A user-given string (label, command, environment, image or error text) as human output
/// prints it: each character in [`unsafe_char`] is escaped the way Rust writes it (`\n`,
/// `\r`, `\t`, `\u{1b}`, `\u{202e}`), so a string cannot recolour the terminal, move the
/// cursor or overwrite what was printed. Everything else is kept as it is (backslashes too,
/// so `\u{1b}` typed literally looks the same as an escaped ESC). JSON output needs none of
/// this: JSON escapes control characters itself.
pub fn clean(s: &str) -> Cow<'_, str> {
    clean_keeping(s, &[])
}

/// [`clean`], keeping the characters of `keep` (say `\n` in a multi-line message) raw.
pub fn clean_keeping<'a>(s: &'a str, keep: &[char]) -> Cow<'a, str> {
    let escape = |c: char| unsafe_char(c) && !keep.contains(&c);
    if !s.chars().any(escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if escape(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Cells for [`Table::add_row`], each [`clean`]ed.
pub fn clean_row<S: AsRef<str>>(cells: impl IntoIterator<Item = S>) -> Vec<String> {
    cells.into_iter().map(|c| clean(c.as_ref()).into_owned()).collect()
}

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
/// takes seconds. Every cell is [`clean`]ed.
pub fn write_columns<const N: usize, C: AsRef<str>>(
    out: &mut impl std::io::Write,
    header: &[&str; N],
    rows: &[[C; N]],
) -> std::io::Result<()> {
    let cleaned: Vec<[Cow<str>; N]> = rows.iter().map(|row| std::array::from_fn(|i| clean(row[i].as_ref()))).collect();
    let rows = &cleaned;
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

/// `t` in RFC 3339, UTC, to the millisecond (`2024-05-01T12:00:00.123Z`), as `herd logs -t`
/// prints it and `--since` reads it back.
pub fn rfc3339(t: UnixMillis) -> String {
    chrono::DateTime::from_timestamp_millis(t as i64)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
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
    let joined = clean(&joined);
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
    fn log_times_are_rfc3339_that_since_reads_back() {
        let t = 1_700_000_000_123;
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123Z");
        assert_eq!(crate::since::parse_since(&rfc3339(t), 0).unwrap(), t);
    }

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
    fn control_characters_are_escaped() {
        assert!(matches!(clean("plain text: é ✓"), Cow::Borrowed(_)));
        assert_eq!(clean("\x1b[31mred\r\n\ttab\x7f\u{9b}"), "\\u{1b}[31mred\\r\\n\\ttab\\u{7f}\\u{9b}");
        assert_eq!(clean("abc\u{202e}cba"), "abc\\u{202e}cba");
        assert_eq!(clean_keeping("one\ntwo\x1b", &['\n']), "one\ntwo\\u{1b}");
        let mut out = Vec::new();
        write_columns(&mut out, &["NAME", "COMMAND"], &[["a", "\"\x1b[2Jx\""]]).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains('\x1b'), "{text:?}");
        assert_eq!(text, "NAME   COMMAND\na      \"\\u{1b}[2Jx\"\n");
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
