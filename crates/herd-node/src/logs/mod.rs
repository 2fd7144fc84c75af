//! Container logs: one JSON [`LogEntry`](herd_proto::node::LogEntry) per line, written by the
//! container's shim ([`LogWriter`], [`LineSplitter`]) into files in its state directory and
//! read by the agent in chunks addressed by offsets ([`Log::read`]).
//!
//! # Files and offsets
//!
//! The log is a sequence of files ("segments"), each named after the offset of its first
//! byte: `log.jsonl` starts at 0, `log.<offset>.jsonl` at `<offset>`. An offset counts every
//! byte the container's log ever held, so the offsets readers keep stay meaningful when old
//! files go: a segment holds at most the container's `max_size` bytes (unless one entry is
//! larger), the writer starts the next one at the offset where it ends, and only the newest
//! `max_files` are kept ([`herd_proto::logs::LogLimits`]). A reader asking for an offset that
//! was rotated away is told how many bytes it missed ([`LogChunk::dropped`]) and reads on from
//! the oldest kept. Nothing is ever renamed, so a segment's name stays true while it exists.
//!
//! Entries are written whole, a batch at a time, with one `write(2)` each on an `O_APPEND`
//! file: a reader only ever sees a prefix of the last line, stops before a line that has no
//! newline yet and returns the offset just after the last complete line. Rotated segments
//! end with a complete line.
//!
//! A log that moves with its container (a checkpoint restored on another node, a migration)
//! travels as a "carried log" ([`carry`]): a header line with the offset of its first byte,
//! then the newest complete lines, at most the container's `max_size * max_files` bytes.

mod carry;
mod read;
mod write;

use std::io;
use std::path::{Path, PathBuf};

pub use carry::{Carried, import};
pub use herd_proto::logs::LogLimits;
use herd_proto::node::LogChunk;
pub use write::{LineSplitter, LogWriter, MAX_LINE};

/// The name of the first segment, which starts at offset 0 (and the whole log of a container
/// whose log never rotated).
pub const LOG_FILE: &str = "log.jsonl";

/// The file name of the segment that starts at `base`.
fn segment_name(base: u64) -> String {
    if base == 0 { LOG_FILE.to_string() } else { format!("log.{base}.jsonl") }
}

/// The offset at which the segment named `name` starts, if it is a segment.
fn segment_base(name: &str) -> Option<u64> {
    if name == LOG_FILE {
        return Some(0);
    }
    let digits = name.strip_prefix("log.")?.strip_suffix(".jsonl")?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Runs `f`, again when it failed because the writer removed a segment under it (at most a
/// few times: a writer rotates once per file, not in a loop).
fn retrying_rotation<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    for _ in 0..4 {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            r => return r,
        }
    }
    f()
}

/// One file of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    /// The offset of its first byte.
    base: u64,
    path: PathBuf,
}

/// A container's log: the segments in its state directory.
#[derive(Debug, Clone)]
pub struct Log {
    dir: PathBuf,
}

impl Log {
    /// The log kept in `state_dir` (which need not exist).
    pub fn new(state_dir: &Path) -> Log {
        Log { dir: state_dir.to_path_buf() }
    }

    /// Its segments, oldest first (none when the directory is missing).
    fn segments(&self) -> io::Result<Vec<Segment>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out: Vec<Segment> = entries
            .flatten()
            .filter_map(|e| Some(Segment { base: segment_base(e.file_name().to_str()?)?, path: e.path() }))
            .collect();
        out.sort_by_key(|s| s.base);
        Ok(out)
    }

    /// Whether anything was ever logged here.
    pub fn exists(&self) -> bool {
        self.segments().is_ok_and(|s| !s.is_empty())
    }

    /// Complete entries from `offset`, at most about `max_bytes` of them (always at least one
    /// when there is one, however long). See [`read::read`].
    pub fn read(&self, offset: u64, max_bytes: u64) -> io::Result<LogChunk> {
        read::read(self, offset, max_bytes)
    }

    /// The offset at which the last `n` complete entries start (the oldest kept when there
    /// are fewer; the end of the last complete line when `n` is 0). An empty log gives 0.
    pub fn tail_offset(&self, n: usize) -> io::Result<u64> {
        read::tail_offset(self, n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use herd_proto::node::LogStream;

    use super::*;

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
    fn segment_names_carry_their_offsets() {
        for base in [0, 1, 10 << 20, u64::MAX] {
            assert_eq!(segment_base(&segment_name(base)), Some(base));
        }
        for other in ["log.jsonl.tmp", "log..jsonl", "log.01.jsonl", "log.x.jsonl", "log.1.json", "runc.log"] {
            assert_eq!(segment_base(other), None, "{other}");
        }
    }

    /// Unbounded enough not to rotate.
    const LARGE: LogLimits = LogLimits { max_size: 1 << 30, max_files: 5 };

    fn write_numbers(w: &mut LogWriter, range: std::ops::Range<u64>) {
        for i in range {
            let stream = if i % 2 == 0 { LogStream::Stdout } else { LogStream::Stderr };
            w.write_line(stream, 1000 + i, format!("line {i}").as_bytes()).unwrap();
        }
        w.flush().unwrap();
    }

    fn numbers(chunk: &LogChunk) -> Vec<u64> {
        chunk.entries.iter().map(|e| e.line.strip_prefix("line ").unwrap().parse().unwrap()).collect()
    }

    fn files(dir: &Path) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| (e.file_name().into_string().unwrap(), e.metadata().unwrap().len()))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn write_read_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::new(dir.path());
        assert!(!log.exists());
        let mut w = LogWriter::open(dir.path(), LARGE).unwrap();
        write_numbers(&mut w, 0..100);
        // A partial line at the end is not read.
        let path = dir.path().join(LOG_FILE);
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"ti").unwrap();

        let all = log.read(0, u64::MAX).unwrap();
        assert_eq!(numbers(&all), (0..100).collect::<Vec<_>>());
        assert_eq!((all.entries[3].stream, all.entries[3].time), (LogStream::Stderr, 1003));
        let len = std::fs::metadata(&path).unwrap().len();
        assert_eq!((all.next_offset, all.dropped), (len - 4, 0));

        // Chunked reading sees every entry once; max_bytes smaller than a line still moves on.
        let mut offset = 0;
        let mut seen = Vec::new();
        loop {
            let c = log.read(offset, 200).unwrap();
            if c.entries.is_empty() {
                break;
            }
            assert!(c.entries.len() < 10);
            seen.extend(numbers(&c));
            offset = c.next_offset;
        }
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
        assert_eq!(log.read(0, 1).unwrap().entries.len(), 1);

        let t = log.tail_offset(5).unwrap();
        assert_eq!(numbers(&log.read(t, u64::MAX).unwrap()), [95, 96, 97, 98, 99]);
        assert_eq!(log.tail_offset(0).unwrap(), len - 4);
        assert_eq!(log.tail_offset(1000).unwrap(), 0);
        let missing = Log::new(&dir.path().join("missing"));
        assert_eq!(missing.tail_offset(3).unwrap(), 0);
        let c = missing.read(7, 10).unwrap();
        assert_eq!((c.entries.len(), c.next_offset, c.dropped), (0, 7, 0));
    }

    #[test]
    fn rotation_keeps_the_newest_files_and_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let limits = LogLimits { max_size: 1000, max_files: 3 };
        let log = Log::new(dir.path());
        let mut w = LogWriter::open(dir.path(), limits).unwrap();
        write_numbers(&mut w, 0..30);
        // A follower at the end of what was written so far.
        let follower = log.read(0, u64::MAX).unwrap();
        assert_eq!(follower.dropped, 0);
        let follower_numbers = numbers(&follower);
        write_numbers(&mut w, 30..1000);
        let end = w.end();

        // At most three files of at most 1000 bytes each, named after their first offsets.
        let kept = files(dir.path());
        assert_eq!(kept.len(), 3, "{kept:?}");
        assert!(kept.iter().all(|(_, len)| *len <= 1000), "{kept:?}");
        let bases: Vec<u64> = kept.iter().map(|(name, _)| segment_base(name).unwrap()).collect();
        let mut sorted = bases.clone();
        sorted.sort();
        assert_eq!(
            sorted.last().unwrap() + kept.iter().find(|(n, _)| segment_base(n) == sorted.last().copied()).unwrap().1,
            end
        );

        // Reading from 0: told what is gone, then the newest lines without a gap, to the end.
        let c = log.read(0, u64::MAX).unwrap();
        assert_eq!(c.dropped, sorted[0]);
        assert_eq!(c.next_offset, end);
        let got = numbers(&c);
        assert_eq!(*got.last().unwrap(), 999);
        assert_eq!(got, (got[0]..1000).collect::<Vec<_>>());
        // The follower, far behind, learns how much it missed; the offsets it would have read
        // next are exactly those before the oldest kept line.
        let behind = log.read(follower.next_offset, u64::MAX).unwrap();
        assert_eq!(behind.dropped, sorted[0] - follower.next_offset);
        assert_eq!(numbers(&behind)[0], got[0]);
        assert_eq!(follower_numbers.last(), Some(&29));
        // A follower that keeps up reads across rotations without losing a line.
        let mut offset = end;
        let mut followed = Vec::new();
        for round in 0..10 {
            write_numbers(&mut w, 1000 + round * 10..1000 + round * 10 + 10);
            let c = log.read(offset, u64::MAX).unwrap();
            assert_eq!(c.dropped, 0);
            followed.extend(numbers(&c));
            offset = c.next_offset;
        }
        assert_eq!(followed, (1000..1100).collect::<Vec<_>>());
        assert_eq!(log.tail_offset(2).map(|t| numbers(&log.read(t, u64::MAX).unwrap())).unwrap(), [1098, 1099]);

        // An entry larger than a file gets one of its own; reopening with fewer files prunes.
        w.write_line(LogStream::Stdout, 1, &[b'x'; 3000]).unwrap();
        w.flush().unwrap();
        drop(w);
        assert!(files(dir.path()).iter().any(|(_, len)| *len > 3000));
        let w = LogWriter::open(dir.path(), LogLimits { max_size: 1000, max_files: 1 }).unwrap();
        assert_eq!(files(dir.path()).len(), 1);
        assert_eq!(log.read(w.end(), 10).unwrap().dropped, 0);
    }

    #[test]
    fn a_carried_log_keeps_its_offsets_and_limits() {
        let from = tempfile::tempdir().unwrap();
        let limits = LogLimits { max_size: 2000, max_files: 4 };
        let mut w = LogWriter::open(from.path(), limits).unwrap();
        write_numbers(&mut w, 0..500);
        // A line being written is not carried.
        let source = Log::new(from.path());
        let newest = source.segments().unwrap().last().unwrap().path.clone();
        let whole = std::fs::metadata(&newest).unwrap().len();
        std::fs::OpenOptions::new().append(true).open(&newest).unwrap().write_all(b"{\"time\":").unwrap();
        let end = w.end();

        let carry = |from_offset, limit| {
            let c = Carried::choose(&source, from_offset, limit).unwrap();
            let mut bytes = Vec::new();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let (carried_end, len) = (c.end, c.len());
            rt.block_on(async {
                use tokio::io::AsyncReadExt;
                c.reader().unwrap().read_to_end(&mut bytes).await.unwrap();
            });
            (bytes, carried_end, len)
        };
        let (bytes, carried_end, len) = carry(None, 3000);
        assert_eq!(carried_end, end);
        assert!(len <= 3000 && len > 2500, "{len}");

        // Imported elsewhere, it reads as the newest lines at the same offsets.
        let to = tempfile::tempdir().unwrap();
        assert_eq!(import(to.path(), limits, &bytes[..]).unwrap(), end);
        let here = Log::new(to.path()).read(0, u64::MAX).unwrap();
        assert_eq!(here.next_offset, end);
        assert_eq!(here.dropped, end - len);
        assert_eq!(numbers(&here), numbers(&source.read(end - len, u64::MAX).unwrap()));
        assert_eq!(*numbers(&here).last().unwrap(), 499);

        // The rest follows on: nothing twice, nothing missing.
        std::fs::OpenOptions::new().write(true).open(&newest).unwrap().set_len(whole).unwrap();
        write_numbers(&mut w, 500..520);
        let (tail, _, _) = carry(Some(end), u64::MAX);
        assert_eq!(import(to.path(), limits, &tail[..]).unwrap(), w.end());
        let all = numbers(&Log::new(to.path()).read(0, u64::MAX).unwrap());
        assert_eq!(all, (all[0]..520).collect::<Vec<_>>());
        // Again: what it has already is skipped.
        assert_eq!(import(to.path(), limits, &tail[..]).unwrap(), w.end());
        assert_eq!(numbers(&Log::new(to.path()).read(0, u64::MAX).unwrap()), all);

        // A carried log larger than the limits here keeps only what they allow.
        let small = tempfile::tempdir().unwrap();
        let (everything, _, _) = carry(None, u64::MAX);
        import(small.path(), LogLimits { max_size: 1000, max_files: 2 }, &everything[..]).unwrap();
        assert!(files(small.path()).iter().map(|(_, len)| len).sum::<u64>() <= 2000);
        assert_eq!(*numbers(&Log::new(small.path()).read(0, u64::MAX).unwrap()).last().unwrap(), 519);

        // A log with a gap (received after a later start) carries the run after the gap.
        let gapped = tempfile::tempdir().unwrap();
        import(gapped.path(), limits, &everything[..]).unwrap();
        let lines = &tail[tail.iter().position(|b| *b == b'\n').unwrap() + 1..];
        let mut later = format!("{{\"herd_log\":1,\"base\":{}}}\n", w.end() + 500).into_bytes();
        later.extend_from_slice(lines);
        import(gapped.path(), limits, &later[..]).unwrap();
        let c = Carried::choose(&Log::new(gapped.path()), None, u64::MAX).unwrap();
        assert_eq!((c.end, c.len()), (w.end() + 500 + lines.len() as u64, lines.len() as u64));
        let read = Log::new(gapped.path()).read(w.end(), u64::MAX).unwrap();
        assert_eq!((read.dropped, numbers(&read)), (500, (500..520).collect::<Vec<_>>()));

        // A log carried whole by a node of an earlier version starts at 0.
        let legacy = tempfile::tempdir().unwrap();
        let raw = std::fs::read(from.path().join(segment_name(source.segments().unwrap()[0].base))).unwrap();
        import(legacy.path(), LARGE, &raw[..]).unwrap();
        let c = Log::new(legacy.path()).read(0, u64::MAX).unwrap();
        assert_eq!(
            (c.dropped, c.next_offset, c.entries.len()),
            (0, raw.len() as u64, raw.split(|b| *b == b'\n').count() - 1)
        );

        // Garbage is refused; nothing at all makes an empty log.
        assert!(import(tempfile::tempdir().unwrap().path(), limits, &b"not a log\n"[..]).is_err());
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(import(empty.path(), limits, &b""[..]).unwrap(), 0);
    }
}
