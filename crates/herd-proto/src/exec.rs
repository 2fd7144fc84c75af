//! `herd exec`: what the CLI asks for, and the framed byte stream that carries a session
//! between the CLI and the node that runs the process (the Control node relays it).
//!
//! # Stream
//!
//! Every frame is `type: u8 | length: u32 (big-endian) | payload`, payloads of at most
//! [`MAX_PAYLOAD`] bytes. The client sends [`Frame::Stdin`], [`Frame::StdinEof`] and
//! [`Frame::Resize`]; the node sends [`Frame::Started`] (or [`Frame::Error`]) first, then
//! [`Frame::Stdout`] and [`Frame::Stderr`] as the process writes, and [`Frame::Exit`] last,
//! after which it closes the connection. A client that closes its end ends the session: the
//! node kills the process.
//!
//! # Exec connection hello
//!
//! The Control node opens the node's one-time listener with the hello of the node's transfer
//! protocol (`herd_node::transfer`), purpose `exec`: [`exec_hello`] builds it.

use serde::{Deserialize, Serialize};

/// The protocol of the CLI's upgraded HTTP connection (`Upgrade: herd-exec`).
pub const UPGRADE: &str = "herd-exec";

/// What `herd exec` asks to run in a container.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExecRequest {
    /// The command and its arguments (at least the command).
    pub cmd: Vec<String>,
    /// `KEY=VALUE` pairs added to (or replacing in) the container's environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// `UID[:GID]` or `NAME[:GROUP]` (resolved in the container's `/etc/passwd` and
    /// `/etc/group`); the container's user when `None`.
    #[serde(default)]
    pub user: Option<String>,
    /// The working directory; the container's when `None`.
    #[serde(default)]
    pub workdir: Option<String>,
    /// Forward the client's standard input (otherwise the process reads end of file).
    #[serde(default)]
    pub interactive: bool,
    /// Give the process a terminal (stdout and stderr then come as one stream).
    #[serde(default)]
    pub tty: bool,
    /// The terminal's size at the start (with `tty`).
    #[serde(default)]
    pub size: Option<TermSize>,
}

impl ExecRequest {
    /// Checks what can be checked before the request leaves the client.
    pub fn validate(&self) -> Result<(), String> {
        match self.cmd.first() {
            None => return Err("no command given: herd exec NAME -- CMD [ARGS...]".into()),
            Some(c) if c.is_empty() => return Err("the command is an empty string".into()),
            _ => {}
        }
        if self.cmd.iter().chain(&self.env).any(|a| a.contains('\0')) {
            return Err("the command and environment cannot hold NUL bytes".into());
        }
        for e in &self.env {
            match e.split_once('=') {
                Some((k, _)) if !k.is_empty() => {}
                _ => return Err(format!("invalid environment variable {e:?}: expected KEY=VALUE")),
            }
        }
        if let Some(w) = &self.workdir
            && !w.starts_with('/')
        {
            return Err(format!("the working directory {w:?} must be an absolute path"));
        }
        if let Some(u) = &self.user
            && (u.is_empty() || u.contains('\0') || u.starts_with(':') || u.ends_with(':'))
        {
            return Err(format!("invalid user {u:?}: expected UID[:GID] or NAME[:GROUP]"));
        }
        Ok(())
    }
}

/// A terminal's size in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermSize {
    pub cols: u16,
    pub rows: u16,
}

/// One frame of an exec stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Client: bytes for the process's standard input (or terminal).
    Stdin(Vec<u8>),
    /// Client: its input ended; the process's standard input is closed.
    StdinEof,
    /// Client: its terminal was resized.
    Resize(TermSize),
    /// Node: the process runs, with this pid on the node.
    Started { pid: u32 },
    /// Node: what the process wrote to its standard output (or terminal).
    Stdout(Vec<u8>),
    /// Node: what the process wrote to its standard error.
    Stderr(Vec<u8>),
    /// Node (or the Control node): why the session failed, for the person who asked.
    Error(String),
    /// Node: the exit code (128 + signal when a signal killed the process; 126 when the
    /// command could not be run, 127 when it was not found). The last frame.
    Exit(i32),
}

/// Largest payload of a frame.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Bytes before a frame's payload.
pub const HEADER: usize = 5;

const T_STDIN: u8 = 1;
const T_STDIN_EOF: u8 = 2;
const T_RESIZE: u8 = 3;
const T_STARTED: u8 = 4;
const T_STDOUT: u8 = 5;
const T_STDERR: u8 = 6;
const T_ERROR: u8 = 7;
const T_EXIT: u8 = 8;

/// A stream that breaks the framing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed exec stream: {0}")]
pub struct FrameError(pub String);

impl Frame {
    /// The frame as bytes, header included. Payloads over [`MAX_PAYLOAD`] must be split by
    /// the caller (see [`data_frames`]).
    pub fn encode(&self) -> Vec<u8> {
        let (ty, payload): (u8, std::borrow::Cow<'_, [u8]>) = match self {
            Frame::Stdin(d) => (T_STDIN, d.into()),
            Frame::StdinEof => (T_STDIN_EOF, (&[][..]).into()),
            Frame::Resize(s) => {
                let mut p = s.cols.to_be_bytes().to_vec();
                p.extend_from_slice(&s.rows.to_be_bytes());
                (T_RESIZE, p.into())
            }
            Frame::Started { pid } => (T_STARTED, pid.to_be_bytes().to_vec().into()),
            Frame::Stdout(d) => (T_STDOUT, d.into()),
            Frame::Stderr(d) => (T_STDERR, d.into()),
            Frame::Error(m) => (T_ERROR, m.as_bytes().into()),
            Frame::Exit(code) => (T_EXIT, code.to_be_bytes().to_vec().into()),
        };
        debug_assert!(payload.len() <= MAX_PAYLOAD);
        let mut out = Vec::with_capacity(HEADER + payload.len());
        out.push(ty);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// Decodes one frame from its type and payload.
    pub fn decode(ty: u8, payload: &[u8]) -> Result<Frame, FrameError> {
        let fixed = |n: usize| -> Result<&[u8], FrameError> {
            if payload.len() == n {
                Ok(payload)
            } else {
                Err(FrameError(format!("frame type {ty} has {} bytes, not {n}", payload.len())))
            }
        };
        Ok(match ty {
            T_STDIN => Frame::Stdin(payload.to_vec()),
            T_STDIN_EOF => {
                fixed(0)?;
                Frame::StdinEof
            }
            T_RESIZE => {
                let p = fixed(4)?;
                Frame::Resize(TermSize {
                    cols: u16::from_be_bytes([p[0], p[1]]),
                    rows: u16::from_be_bytes([p[2], p[3]]),
                })
            }
            T_STARTED => {
                let p = fixed(4)?;
                Frame::Started { pid: u32::from_be_bytes([p[0], p[1], p[2], p[3]]) }
            }
            T_STDOUT => Frame::Stdout(payload.to_vec()),
            T_STDERR => Frame::Stderr(payload.to_vec()),
            T_ERROR => Frame::Error(String::from_utf8_lossy(payload).into_owned()),
            T_EXIT => {
                let p = fixed(4)?;
                Frame::Exit(i32::from_be_bytes([p[0], p[1], p[2], p[3]]))
            }
            other => return Err(FrameError(format!("unknown frame type {other}"))),
        })
    }
}

/// Parses a frame header: its type and payload length.
pub fn parse_header(h: &[u8; HEADER]) -> Result<(u8, usize), FrameError> {
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(FrameError(format!("a frame of {len} bytes (at most {MAX_PAYLOAD})")));
    }
    Ok((h[0], len))
}

/// `data` as frames made by `make`, none over [`MAX_PAYLOAD`], concatenated.
pub fn data_frames(data: &[u8], make: fn(Vec<u8>) -> Frame) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + HEADER);
    for chunk in data.chunks(MAX_PAYLOAD) {
        out.extend_from_slice(&make(chunk.to_vec()).encode());
    }
    out
}

/// Collects frames from bytes as they arrive, in pieces of any size.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < HEADER {
            return Ok(None);
        }
        let header: [u8; HEADER] = self.buf[..HEADER].try_into().expect("five bytes");
        let (ty, len) = parse_header(&header)?;
        if self.buf.len() < HEADER + len {
            return Ok(None);
        }
        let frame = Frame::decode(ty, &self.buf[HEADER..HEADER + len]);
        self.buf.drain(..HEADER + len);
        frame.map(Some)
    }

    /// Bytes received that do not make a whole frame yet.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// The hello that opens a node's exec listener (the node's transfer protocol, version 1,
/// purpose `exec`) for session `session` with its one-time `token`.
pub fn exec_hello(session: &str, token: &str) -> Vec<u8> {
    let body = serde_json::json!({ "migration": session, "token": token, "purpose": "exec" }).to_string();
    let mut out = b"HERDXFER".to_vec();
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body.as_bytes());
    out
}

/// An exec session in progress, as the node running it and the Control node relaying it
/// know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub session: String,
    /// The command line, for people.
    pub cmd: String,
    /// The process on its node, once it runs.
    pub pid: Option<u32>,
    pub started_at: crate::UnixMillis,
}

/// Why container `name` cannot be checkpointed or migrated (`action`, e.g. "migrate it")
/// while `sessions` are in progress: CRIU cannot dump a process whose terminal or pipes lead
/// out of the container.
pub fn sessions_block(name: &str, sessions: &[SessionInfo], action: &str) -> String {
    let described: Vec<String> = sessions
        .iter()
        .map(|s| {
            let pid = s.pid.map_or("pid not known yet".to_string(), |p| format!("pid {p}"));
            let secs = s.started_at / 1000;
            let (h, m, sec) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
            format!("{pid}, `{}`, started {h:02}:{m:02}:{sec:02} UTC", shorten(&s.cmd, 60))
        })
        .collect();
    let what =
        if sessions.len() == 1 { "an exec session".to_string() } else { format!("{} exec sessions", sessions.len()) };
    format!(
        "container {name} has {what} in progress ({}): wait for it to end or stop it, then {action} again \
         (CRIU cannot save a process attached to a terminal or pipes outside the container)",
        described.join("; ")
    )
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let cut: String = s.chars().take(max.saturating_sub(3)).collect();
        format!("{cut}...")
    }
}

/// The exit code Docker gives a command that could not be run, from the runtime's reason:
/// 127 when it was not found, 126 otherwise (not executable, and any other failure to start).
pub fn start_failure_code(message: &str) -> i32 {
    let m = message.to_ascii_lowercase();
    if m.contains("executable file not found") || m.contains("no such file or directory") { 127 } else { 126 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_through_a_decoder_in_pieces() {
        let frames = vec![
            Frame::Stdin(b"hello".to_vec()),
            Frame::StdinEof,
            Frame::Resize(TermSize { cols: 120, rows: 40 }),
            Frame::Started { pid: 4242 },
            Frame::Stdout(vec![0, 1, 2, 255]),
            Frame::Stderr(Vec::new()),
            Frame::Error("no such container".into()),
            Frame::Exit(-1),
            Frame::Exit(137),
        ];
        let bytes: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        for piece in [1, 2, 3, 7, bytes.len()] {
            let mut d = Decoder::new();
            let mut got = Vec::new();
            for chunk in bytes.chunks(piece) {
                d.push(chunk);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, frames, "in pieces of {piece}");
            assert_eq!(d.pending(), 0);
        }
    }

    #[test]
    fn bad_frames_are_refused() {
        let mut d = Decoder::new();
        d.push(&[99, 0, 0, 0, 0]);
        assert!(d.next_frame().is_err());
        let mut d = Decoder::new();
        d.push(&[T_EXIT, 0, 0, 0, 2, 1, 2]);
        assert!(d.next_frame().is_err());
        let mut d = Decoder::new();
        d.push(&[T_STDOUT, 0xff, 0xff, 0xff, 0xff]);
        assert!(d.next_frame().unwrap_err().0.contains("at most"));
    }

    #[test]
    fn long_data_is_split() {
        let data = vec![7u8; MAX_PAYLOAD * 2 + 3];
        let bytes = data_frames(&data, Frame::Stdout);
        let mut d = Decoder::new();
        d.push(&bytes);
        let mut total = 0;
        while let Some(Frame::Stdout(p)) = d.next_frame().unwrap() {
            assert!(p.len() <= MAX_PAYLOAD);
            total += p.len();
        }
        assert_eq!(total, data.len());
    }

    #[test]
    fn requests_are_checked() {
        let ok = ExecRequest { cmd: vec!["sh".into()], ..Default::default() };
        assert!(ok.validate().is_ok());
        assert!(ExecRequest::default().validate().unwrap_err().contains("no command"));
        let bad_env = ExecRequest { env: vec!["NOVALUE".into()], ..ok.clone() };
        assert!(bad_env.validate().unwrap_err().contains("KEY=VALUE"));
        let bad_dir = ExecRequest { workdir: Some("tmp".into()), ..ok.clone() };
        assert!(bad_dir.validate().unwrap_err().contains("absolute"));
        let bad_user = ExecRequest { user: Some("1000:".into()), ..ok.clone() };
        assert!(bad_user.validate().is_err());
        let nul = ExecRequest { cmd: vec!["a\0b".into()], ..ok };
        assert!(nul.validate().is_err());
    }

    #[test]
    fn start_failures_get_dockers_codes() {
        assert_eq!(
            start_failure_code(
                "exec failed: unable to start container process: exec: \"nope\": executable file not found in $PATH"
            ),
            127
        );
        assert_eq!(start_failure_code("exec: \"/nope\": stat /nope: no such file or directory"), 127);
        assert_eq!(start_failure_code("exec: \"/etc/passwd\": permission denied"), 126);
        assert_eq!(start_failure_code("something else"), 126);
    }

    #[test]
    fn blocking_sessions_are_named() {
        let s = SessionInfo { session: "e1".into(), cmd: "sh -c top".into(), pid: Some(42), started_at: 3_723_000 };
        let m = sessions_block("web", std::slice::from_ref(&s), "migrate it");
        assert!(
            m.starts_with("container web has an exec session in progress (pid 42, `sh -c top`, started 01:02:03 UTC)"),
            "{m}"
        );
        assert!(m.contains("wait for it to end or stop it, then migrate it again"), "{m}");
        let two = sessions_block("web", &[s.clone(), SessionInfo { pid: None, ..s }], "checkpoint it");
        assert!(two.contains("2 exec sessions") && two.contains("pid not known yet"), "{two}");
    }

    #[test]
    fn the_hello_has_the_transfer_protocols_form() {
        let h = exec_hello("e1", "tok");
        assert_eq!(&h[..8], b"HERDXFER");
        assert_eq!(u16::from_be_bytes([h[8], h[9]]), 1);
        let len = u32::from_be_bytes([h[10], h[11], h[12], h[13]]) as usize;
        let body: serde_json::Value = serde_json::from_slice(&h[14..]).unwrap();
        assert_eq!(len, h.len() - 14);
        assert_eq!(body["purpose"], "exec");
        assert_eq!(body["migration"], "e1");
    }
}
