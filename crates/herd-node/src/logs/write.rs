//! Writing a log: the shim's [`LogWriter`], which batches entries into few writes and rotates
//! segments at the container's limits, and the [`LineSplitter`] that cuts a stream into lines.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use herd_proto::logs::LogLimits;
use herd_proto::node::{LogEntry, LogStream};

use super::{Log, segment_name};

/// Longest line kept whole: a line that grows past this many bytes without a
/// newline is cut into entries of at most this size.
pub const MAX_LINE: usize = 16 * 1024;

/// Bytes of entries collected before they are written, when the caller does not
/// [`LogWriter::flush`] sooner.
const BATCH: usize = 64 * 1024;

/// Appends entries to a log, rotating its segments at `limits`: a segment grows to at most
/// `max_size` bytes (a single larger entry gets a segment of its own), then the next one
/// starts where it ends, and the oldest beyond `max_files` are removed. Entries are collected
/// and written in batches of whole lines: [`LogWriter::flush`] writes what was collected.
/// One writer per log at a time (the shim while the container runs; a log being received
/// before it starts). Files are created with mode 0640.
#[derive(Debug)]
pub struct LogWriter {
    dir: PathBuf,
    limits: LogLimits,
    /// The segment being written, its first byte's offset and its size on disk.
    file: File,
    base: u64,
    size: u64,
    /// The offsets of the segments kept, oldest first, the current one last.
    kept: VecDeque<u64>,
    /// Whole lines not written yet.
    pending: Vec<u8>,
    /// One entry being encoded.
    entry: Vec<u8>,
}

impl LogWriter {
    /// Opens the log in `state_dir` to append to its newest segment (creating the first one if
    /// there is none), and removes segments beyond `limits.max_files`.
    pub fn open(state_dir: &Path, limits: LogLimits) -> io::Result<LogWriter> {
        let segments = Log::new(state_dir).segments()?;
        let base = segments.last().map_or(0, |s| s.base);
        let file = open_segment(state_dir, base)?;
        let size = file.metadata()?.len();
        let mut w = LogWriter {
            dir: state_dir.to_path_buf(),
            limits,
            file,
            base,
            size,
            kept: segments.iter().map(|s| s.base).collect(),
            pending: Vec::new(),
            entry: Vec::with_capacity(256),
        };
        if w.kept.is_empty() {
            w.kept.push_back(base);
        }
        w.prune()?;
        Ok(w)
    }

    /// The offset after the last byte collected so far.
    pub fn end(&self) -> u64 {
        self.base + self.size + self.pending.len() as u64
    }

    /// Collects one entry as one JSON line.
    pub fn write_entry(&mut self, entry: &LogEntry) -> io::Result<()> {
        let mut encoded = std::mem::take(&mut self.entry);
        encoded.clear();
        serde_json::to_writer(&mut encoded, entry)?;
        encoded.push(b'\n');
        let r = self.write_lines(&encoded);
        // Do not keep a large buffer around after an unusually long line.
        if encoded.capacity() <= BATCH {
            self.entry = encoded;
        }
        r
    }

    /// Collects `line` (without its newline) from `stream`, received at `time`.
    pub fn write_line(&mut self, stream: LogStream, time: u64, line: &[u8]) -> io::Result<()> {
        let entry = LogEntry { time, stream, line: String::from_utf8_lossy(line).into_owned() };
        self.write_entry(&entry)
    }

    /// Collects whole lines (`lines` ends with a newline, or is empty), starting a new segment
    /// first when they would not fit in the current one.
    pub(super) fn write_lines(&mut self, lines: &[u8]) -> io::Result<()> {
        let held = self.size + self.pending.len() as u64;
        if held > 0 && held + lines.len() as u64 > self.limits.max_size {
            self.rotate()?;
        }
        self.pending.extend_from_slice(lines);
        if self.pending.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes what was collected, with one `write(2)` in the common case.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let r = self.file.write_all(&self.pending);
        // What could not be written is lost rather than retried forever; the size follows
        // the file.
        self.size = self.file.metadata().map(|m| m.len()).unwrap_or(self.size + self.pending.len() as u64);
        self.pending.clear();
        if self.pending.capacity() > 4 * BATCH {
            self.pending = Vec::new();
        }
        r
    }

    /// Goes on at offset `at`, when the log so far ends before it: a new segment starts there
    /// (the bytes in between were never here). Returns how many bytes of what comes next the
    /// log already has, when it ends after `at`.
    pub(super) fn continue_at(&mut self, at: u64) -> io::Result<u64> {
        let end = self.end();
        if at > end {
            self.flush()?;
            self.start_segment(at)?;
        }
        Ok(end.saturating_sub(at))
    }

    /// Starts the next segment where the current one ends.
    fn rotate(&mut self) -> io::Result<()> {
        self.flush()?;
        self.start_segment(self.base + self.size)
    }

    fn start_segment(&mut self, base: u64) -> io::Result<()> {
        self.file = open_segment(&self.dir, base)?;
        self.base = base;
        self.size = self.file.metadata()?.len();
        self.kept.push_back(base);
        self.prune()
    }

    /// Removes the oldest segments beyond `max_files`.
    fn prune(&mut self) -> io::Result<()> {
        while self.kept.len() > self.limits.max_files.max(1) as usize {
            let Some(oldest) = self.kept.pop_front() else { break };
            match std::fs::remove_file(self.dir.join(segment_name(oldest))) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

fn open_segment(dir: &Path, base: u64) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(0o640).open(dir.join(segment_name(base)))
}

/// Splits one stream's bytes into lines, holding at most [`MAX_LINE`] bytes of an
/// unfinished line. Feed it by reading into [`LineSplitter::spare`] and calling
/// [`LineSplitter::filled`]; complete lines come out of [`LineSplitter::drain`].
#[derive(Debug)]
pub struct LineSplitter {
    buf: Box<[u8]>,
    len: usize,
}

impl Default for LineSplitter {
    fn default() -> Self {
        LineSplitter::new()
    }
}

impl LineSplitter {
    pub fn new() -> LineSplitter {
        LineSplitter { buf: vec![0u8; MAX_LINE].into_boxed_slice(), len: 0 }
    }

    /// The free space to read into (never empty after [`LineSplitter::drain`]).
    pub fn spare(&mut self) -> &mut [u8] {
        &mut self.buf[self.len..]
    }

    /// Records that `n` bytes were read into [`LineSplitter::spare`].
    pub fn filled(&mut self, n: usize) {
        self.len = (self.len + n).min(self.buf.len());
    }

    /// Calls `emit` with every complete line (without its newline), then, if the
    /// buffer is full without a newline, with its content as one partial line (cut
    /// before an incomplete UTF-8 character at the end, which is kept).
    pub fn drain(&mut self, mut emit: impl FnMut(&[u8])) {
        let mut start = 0;
        while let Some(i) = self.buf[start..self.len].iter().position(|&b| b == b'\n') {
            emit(&self.buf[start..start + i]);
            start += i + 1;
        }
        if start == 0 && self.len == self.buf.len() {
            let cut = utf8_cut(&self.buf[..self.len]);
            emit(&self.buf[..cut]);
            start = cut;
        }
        self.buf.copy_within(start..self.len, 0);
        self.len -= start;
    }

    /// Emits what is left as a last partial line (at end of stream).
    pub fn finish(&mut self, mut emit: impl FnMut(&[u8])) {
        if self.len > 0 {
            emit(&self.buf[..self.len]);
            self.len = 0;
        }
    }
}

/// Where to cut `bytes` so as not to split a UTF-8 character that is incomplete
/// at its end (at most 3 bytes are held back; invalid data is cut anywhere).
fn utf8_cut(bytes: &[u8]) -> usize {
    let tail = bytes.len().saturating_sub(3);
    for i in (tail..bytes.len()).rev() {
        let b = bytes[i];
        if b & 0b1100_0000 != 0b1000_0000 {
            // The lead byte of the last character: complete?
            let need = match b {
                0x00..=0x7f => 1,
                0xc0..=0xdf => 2,
                0xe0..=0xef => 3,
                0xf0..=0xf7 => 4,
                _ => return bytes.len(),
            };
            return if bytes.len() - i < need && i > 0 { i } else { bytes.len() };
        }
    }
    bytes.len()
}
