//! Reading a log by offsets, across its segments, while its writer appends and rotates.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};

use herd_proto::node::{LogChunk, LogEntry};

use super::{Log, Segment, retrying_rotation};

/// Complete entries from `offset`, at most about `max_bytes` of them (always at least one
/// complete entry when there is one, however long); `next_offset` is the offset after the last
/// complete line read. An offset older than the oldest segment reads from that segment on,
/// with [`LogChunk::dropped`] saying how many bytes were rotated away. Lines that are not
/// valid entries are skipped. A missing log reads as an empty one. `finished` is false: the
/// caller knows whether the container still runs.
pub(super) fn read(log: &Log, offset: u64, max_bytes: u64) -> io::Result<LogChunk> {
    retrying_rotation(|| read_once(log, offset, max_bytes))
}

fn read_once(log: &Log, offset: u64, max_bytes: u64) -> io::Result<LogChunk> {
    let segments = log.segments()?;
    let mut chunk = LogChunk { entries: Vec::new(), next_offset: offset, dropped: 0, finished: false };
    let Some(first) = segments.first() else { return Ok(chunk) };
    if offset < first.base {
        chunk.dropped = first.base - offset;
        chunk.next_offset = first.base;
    }
    // The segment holding the offset: the last one starting at or before it.
    let mut k = segments.iter().rposition(|s| s.base <= chunk.next_offset).unwrap_or(0);
    let mut used = 0u64;
    loop {
        let segment = &segments[k];
        let at = chunk.next_offset - segment.base;
        let ended = read_segment(segment, at, max_bytes, &mut used, &mut chunk)?;
        if !ended || used >= max_bytes {
            return Ok(chunk);
        }
        // A segment ends with a complete line and the next starts where it ends. Should the
        // next start later (a log carried here without what came in between), the gap is
        // counted as dropped.
        let Some(next) = segments.get(k + 1) else { return Ok(chunk) };
        if next.base > chunk.next_offset {
            chunk.dropped += next.base - chunk.next_offset;
            chunk.next_offset = next.base;
        } else if next.base < chunk.next_offset {
            return Ok(chunk); // overlapping segments: never written so; stop rather than repeat
        }
        k += 1;
    }
}

/// Reads complete lines of `segment` from byte `at` into `chunk` while `used` stays within
/// `max_bytes`; true when it got to the end of the file at the end of a line.
fn read_segment(segment: &Segment, at: u64, max_bytes: u64, used: &mut u64, chunk: &mut LogChunk) -> io::Result<bool> {
    let mut file = File::open(&segment.path)?;
    file.seek(SeekFrom::Start(at))?;
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)? as u64;
        if n == 0 {
            return Ok(true);
        }
        if line.last() != Some(&b'\n') {
            return Ok(false); // a line still being written
        }
        if *used > 0 && *used + n > max_bytes {
            return Ok(false);
        }
        *used += n;
        chunk.next_offset += n;
        if let Ok(entry) = serde_json::from_slice::<LogEntry>(&line[..line.len() - 1]) {
            chunk.entries.push(entry);
        }
        if *used >= max_bytes {
            return Ok(false);
        }
    }
}

/// The offset at which the last `n` complete entries start: the segments are scanned from the
/// end as one stream, where the (n+1)-th newline from the end precedes the n-th last line
/// (and the first one ends the last complete line).
pub(super) fn tail_offset(log: &Log, n: usize) -> io::Result<u64> {
    retrying_rotation(|| tail_once(log, n))
}

fn tail_once(log: &Log, n: usize) -> io::Result<u64> {
    const BLOCK: u64 = 8192;
    let segments = log.segments()?;
    let mut buf = vec![0u8; BLOCK as usize];
    let mut newlines = 0usize;
    for segment in segments.iter().rev() {
        let mut file = File::open(&segment.path)?;
        let mut pos = file.metadata()?.len();
        while pos > 0 {
            let start = pos.saturating_sub(BLOCK);
            let size = (pos - start) as usize;
            file.seek(SeekFrom::Start(start))?;
            file.read_exact(&mut buf[..size])?;
            for i in (0..size).rev() {
                if buf[i] == b'\n' {
                    newlines += 1;
                    if newlines == n.saturating_add(1) {
                        return Ok(segment.base + start + i as u64 + 1);
                    }
                }
            }
            pos = start;
        }
    }
    // Fewer than n complete lines: all that is kept.
    Ok(segments.first().map_or(0, |s| s.base))
}
