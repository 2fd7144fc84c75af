//! A log that moves with its container: the newest complete lines of a log, at most a given
//! number of bytes, behind a header line that says at which offset they start
//! (`{"herd_log":1,"base":N}`), so the offsets of the log stay the same on the node it moves
//! to. [`Carried`] is the sending side, [`import`] the receiving one.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use herd_proto::logs::LogLimits;
use herd_proto::node::LogEntry;
use serde::{Deserialize, Serialize};

use super::{Log, LogWriter, retrying_rotation};

/// The header line of a carried log.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    herd_log: u32,
    base: u64,
}

/// Longest line read (a header, or an entry: at most 16 KiB of text, escaped in JSON).
const MAX_CARRIED_LINE: u64 = 1 << 20;

/// The part of a log to carry: pieces of its segment files, opened when it was chosen (so a
/// rotation meanwhile takes nothing away).
#[derive(Debug)]
pub struct Carried {
    header: Vec<u8>,
    pieces: Vec<(File, u64, u64)>,
    /// The offset after the last byte carried.
    pub end: u64,
}

impl Carried {
    /// The complete lines of `log` from offset `from` (the oldest kept when `None` or rotated
    /// away) to its end, but no more than the last `limit` bytes of them.
    pub fn choose(log: &Log, from: Option<u64>, limit: u64) -> io::Result<Carried> {
        retrying_rotation(|| choose_once(log, from, limit))
    }

    /// Bytes of log lines carried (without the header).
    pub fn len(&self) -> u64 {
        self.pieces.iter().map(|(_, _, len)| len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The carried log as one stream: the header, then the lines.
    pub fn reader(self) -> io::Result<impl tokio::io::AsyncRead + Send + Unpin> {
        use tokio::io::AsyncReadExt;
        let mut stream: Box<dyn tokio::io::AsyncRead + Send + Unpin> = Box::new(std::io::Cursor::new(self.header));
        for (mut file, at, len) in self.pieces {
            file.seek(SeekFrom::Start(at))?;
            stream = Box::new(stream.chain(tokio::fs::File::from_std(file).take(len)));
        }
        Ok(stream)
    }
}

fn choose_once(log: &Log, from: Option<u64>, limit: u64) -> io::Result<Carried> {
    let segments = log.segments()?;
    // Open everything first: what is open stays readable whatever the writer removes.
    let mut files = Vec::new();
    for s in &segments {
        let file = File::open(&s.path)?;
        let len = file.metadata()?.len();
        files.push((s.base, file, len));
    }
    // The oldest offset from which the log runs on without a gap (a gap is left where a log
    // was received that started after the end of the one here): a carried log is one run.
    let mut oldest = files.first().map_or(from.unwrap_or(0), |(base, _, _)| *base);
    for pair in files.windows(2) {
        let ((base, _, len), (next, _, _)) = (&pair[0], &pair[1]);
        if base + len < *next {
            oldest = *next;
        }
    }
    // The end of the last complete line (a line being written is left for later).
    let mut end = oldest;
    if let Some((base, file, len)) = files.last_mut() {
        end = *base + complete_len(file, *len)?;
    }
    let mut start = from.unwrap_or(oldest).max(oldest).max(end.saturating_sub(limit));
    // Start at a line: skip the rest of a line cut by the limit.
    if start < end && start > from.unwrap_or(0).max(oldest) {
        start = next_line_start(&mut files, start, end)?;
    }
    let mut pieces = Vec::new();
    let mut at = start;
    for (i, (base, file, len)) in files.iter().enumerate() {
        let stop = files.get(i + 1).map_or(end, |(next, _, _)| (*next).min(*base + *len)).min(end);
        if at >= stop || at < *base {
            continue;
        }
        pieces.push((file.try_clone()?, at - *base, stop - at));
        at = stop;
    }
    let header = serde_json::to_vec(&Header { herd_log: 1, base: start }).map_err(io::Error::other)?;
    let mut header = header;
    header.push(b'\n');
    Ok(Carried { header, pieces, end: end.max(start) })
}

/// How many bytes of `file` (of length `len`) end with its last newline.
fn complete_len(file: &mut File, len: u64) -> io::Result<u64> {
    let mut pos = len;
    let mut buf = [0u8; 4096];
    while pos > 0 {
        let start = pos.saturating_sub(buf.len() as u64);
        let n = (pos - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|b| *b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        pos = start;
    }
    Ok(0)
}

/// The offset of the first line that starts at or after `at` (`end` when none does).
fn next_line_start(files: &mut [(u64, File, u64)], at: u64, end: u64) -> io::Result<u64> {
    let Some((base, file, _)) = files.iter_mut().rev().find(|(base, _, _)| *base <= at) else { return Ok(at) };
    if at == *base {
        return Ok(at); // a segment starts with a line
    }
    // The line starts after the newline at or after `at - 1`.
    file.seek(SeekFrom::Start(at - 1 - *base))?;
    let mut skipped = Vec::new();
    let n = BufReader::new(&mut *file).read_until(b'\n', &mut skipped)? as u64;
    Ok((at - 1 + n).min(end))
}

/// Writes a carried log read from `from` into the log in `state_dir`, rotating at `limits`
/// (so no more than they allow is kept, whatever arrives). A log that is already there goes
/// on: what it already has is skipped, and a carried log that starts after its end starts a
/// new segment. Returns the log's end offset.
pub fn import(state_dir: &Path, limits: LogLimits, from: impl Read) -> io::Result<u64> {
    let mut reader = BufReader::with_capacity(64 * 1024, from);
    let mut line = Vec::new();
    reader.by_ref().take(MAX_CARRIED_LINE).read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return LogWriter::open(state_dir, limits).map(|w| w.end());
    }
    // A node of an earlier version carries the whole log as it is, from offset 0.
    let (base, first) = match serde_json::from_slice::<Header>(line.trim_ascii_end()) {
        Ok(header) => (header.base, None),
        Err(_) if serde_json::from_slice::<LogEntry>(line.trim_ascii_end()).is_ok() => (0, Some(line.clone())),
        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, format!("not a carried log: {e}"))),
    };
    let mut writer = LogWriter::open(state_dir, limits)?;
    let mut skip = writer.continue_at(base)?;
    line = first.unwrap_or_default();
    loop {
        if line.is_empty() && reader.by_ref().take(MAX_CARRIED_LINE).read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let n = line.len() as u64;
        if line.last() != Some(&b'\n') {
            break; // cut short, or no line at all: what is left is not kept
        }
        if skip > 0 {
            // What the log here has already (should it end inside a line, that line is not
            // repeated either).
            skip = skip.saturating_sub(n);
        } else {
            writer.write_lines(&line)?;
        }
        line.clear();
    }
    writer.flush()?;
    Ok(writer.end())
}
