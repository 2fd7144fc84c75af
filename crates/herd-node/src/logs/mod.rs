//! Container logs: one JSON [`LogEntry`] per line in `<state_dir>/log.jsonl`,
//! appended by the container's shim ([`LogWriter`], [`LineSplitter`]) and read
//! by the agent in chunks addressed by byte offsets ([`read_logs`], [`tail_offset`]).
//!
//! Entries are written with one `write(2)` each on an `O_APPEND` file, so a reader
//! only ever sees a prefix of the last line: readers stop before a line that has no
//! newline yet and return the offset just after the last complete line.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use herd_proto::node::{LogChunk, LogEntry, LogStream};

/// The log's file name inside a container's state directory.
pub const LOG_FILE: &str = "log.jsonl";

/// Longest line kept whole: a line that grows past this many bytes without a
/// newline is cut into entries of at most this size.
pub const MAX_LINE: usize = 16 * 1024;

/// Reads complete entries starting at byte `offset`, at most about `max_bytes` of
/// them (always at least one complete entry when there is one, however long);
/// `next_offset` is the offset after the last complete line read. Lines that are
/// not valid entries are skipped. A missing file reads as an empty log.
/// `finished` is false: the caller knows whether the container still runs.
pub fn read_logs(path: &Path, offset: u64, max_bytes: u64) -> io::Result<LogChunk> {
    let mut chunk = LogChunk { entries: Vec::new(), next_offset: offset, finished: false };
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(chunk),
        Err(e) => return Err(e),
    };
    file.seek(SeekFrom::Start(offset))?;
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut line = Vec::new();
    let mut used = 0u64;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)? as u64;
        if n == 0 || line.last() != Some(&b'\n') {
            break; // end of file, or a line still being written
        }
        if used > 0 && used + n > max_bytes {
            break;
        }
        used += n;
        chunk.next_offset += n;
        if let Ok(entry) = serde_json::from_slice::<LogEntry>(&line[..line.len() - 1]) {
            chunk.entries.push(entry);
        }
        if used >= max_bytes {
            break;
        }
    }
    Ok(chunk)
}

/// The offset at which the last `n` complete entries start (0 when the log holds
/// fewer; the end of the last complete line when `n` is 0). A missing file gives 0.
pub fn tail_offset(path: &Path, n: usize) -> io::Result<u64> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    const BLOCK: u64 = 8192;
    let mut buf = vec![0u8; BLOCK as usize];
    // Newlines seen so far scanning backwards; the first one found ends the last
    // complete line (anything after it is a partial line and is not counted).
    let mut newlines = 0usize;
    let mut pos = len;
    while pos > 0 {
        let start = pos.saturating_sub(BLOCK);
        let size = (pos - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf[..size])?;
        for i in (0..size).rev() {
            if buf[i] == b'\n' {
                newlines += 1;
                // The (n+1)-th newline from the end precedes the n-th last line.
                if newlines == n + 1 {
                    return Ok(start + i as u64 + 1);
                }
            }
        }
        pos = start;
    }
    // Fewer than n complete lines: all of them (an empty log, or n = 0 with no
    // complete line, starts at 0).
    Ok(0)
}

/// Appends entries to a log file (created with mode 0640 if missing).
#[derive(Debug)]
pub struct LogWriter {
    file: File,
    buf: Vec<u8>,
}

impl LogWriter {
    pub fn open(path: &Path) -> io::Result<LogWriter> {
        let file = OpenOptions::new().create(true).append(true).mode(0o640).open(path)?;
        Ok(LogWriter { file, buf: Vec::with_capacity(256) })
    }

    /// Appends one entry as one JSON line, with a single write.
    pub fn write_entry(&mut self, entry: &LogEntry) -> io::Result<()> {
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, entry)?;
        self.buf.push(b'\n');
        self.file.write_all(&self.buf)?;
        // Do not keep a large buffer around after an unusually long line.
        if self.buf.capacity() > 64 * 1024 {
            self.buf = Vec::with_capacity(256);
        }
        Ok(())
    }

    /// Appends `line` (without its newline) from `stream`, received at `time`.
    pub fn write_line(&mut self, stream: LogStream, time: u64, line: &[u8]) -> io::Result<()> {
        let entry = LogEntry { time, stream, line: String::from_utf8_lossy(line).into_owned() };
        self.write_entry(&entry)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("herd-logs-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        let _ = std::fs::remove_file(&p);
        p
    }

    fn lines(s: &mut LineSplitter, input: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            let spare = s.spare();
            let n = spare.len().min(rest.len());
            spare[..n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            s.filled(n);
            s.drain(|l| out.push(String::from_utf8_lossy(l).into_owned()));
        }
        out
    }

    #[test]
    fn splitter_lines_and_partials() {
        let mut s = LineSplitter::new();
        assert_eq!(lines(&mut s, b"a\nbb\nc"), ["a", "bb"]);
        assert_eq!(lines(&mut s, b"c\n\n"), ["cc", ""]);
        let long = vec![b'x'; MAX_LINE + 10];
        let out = lines(&mut s, &long);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), MAX_LINE);
        let mut rest = Vec::new();
        s.finish(|l| rest.push(l.len()));
        assert_eq!(rest, [10]);
        // A multibyte character straddling the cut stays whole.
        let mut input = vec![b'y'; MAX_LINE - 1];
        input.extend_from_slice("é\n".as_bytes());
        let out = lines(&mut s, &input);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].len(), MAX_LINE - 1);
        assert_eq!(out[1], "é");
    }

    #[test]
    fn write_read_tail() {
        let path = temp_path("log.jsonl");
        let mut w = LogWriter::open(&path).unwrap();
        for i in 0..100 {
            let stream = if i % 2 == 0 { LogStream::Stdout } else { LogStream::Stderr };
            w.write_line(stream, 1000 + i, format!("line {i}").as_bytes()).unwrap();
        }
        // A partial line at the end is not read.
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"ti").unwrap();

        let all = read_logs(&path, 0, u64::MAX).unwrap();
        assert_eq!(all.entries.len(), 100);
        assert_eq!(all.entries[3].line, "line 3");
        assert_eq!(all.entries[3].stream, LogStream::Stderr);
        assert_eq!(all.entries[3].time, 1003);
        let len = std::fs::metadata(&path).unwrap().len();
        assert_eq!(all.next_offset, len - 4);

        // Chunked reading sees every entry once.
        let mut offset = 0;
        let mut seen = Vec::new();
        loop {
            let c = read_logs(&path, offset, 200).unwrap();
            if c.entries.is_empty() {
                break;
            }
            assert!(c.entries.len() < 10);
            seen.extend(c.entries.into_iter().map(|e| e.line));
            offset = c.next_offset;
        }
        assert_eq!(seen.len(), 100);
        assert_eq!(seen[99], "line 99");
        // max_bytes smaller than a line still makes progress.
        assert_eq!(read_logs(&path, 0, 1).unwrap().entries.len(), 1);

        let t = tail_offset(&path, 5).unwrap();
        let c = read_logs(&path, t, u64::MAX).unwrap();
        assert_eq!(c.entries.iter().map(|e| e.line.as_str()).collect::<Vec<_>>()[0], "line 95");
        assert_eq!(c.entries.len(), 5);
        assert_eq!(tail_offset(&path, 0).unwrap(), len - 4);
        assert_eq!(tail_offset(&path, 1000).unwrap(), 0);
        assert_eq!(tail_offset(&path.with_extension("missing"), 3).unwrap(), 0);
        let missing = read_logs(&path.with_extension("missing"), 7, 10).unwrap();
        assert_eq!((missing.entries.len(), missing.next_offset), (0, 7));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
