//! `herd exec`: runs a command in a running container and carries its stdio over an upgraded
//! HTTP connection to the Control node ([`herd_proto::exec`]); exits with the command's exit
//! code. With `-t` this terminal is put in raw mode while the command runs (so Ctrl-C and
//! the like reach the command as bytes) and put back on every way out; its size follows
//! SIGWINCH.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};

use anyhow::{Context, bail};
use clap::Args;
use herd_proto::exec::{Decoder, ExecRequest, Frame, TermSize};
use nix::sys::termios::{self, SetArg, Termios};
use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::signal::unix::{SignalKind, signal};

use crate::client::{Client, segment};

/// `herd exec`
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Forward this standard input to the command (end of file closes the command's).
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the command a terminal; with -i, this one (in raw mode while the command runs).
    #[arg(short, long)]
    pub tty: bool,
    /// Run as USER[:GROUP], names or ids (names are looked up in the container); default: the
    /// container's user.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Set an environment variable, KEY=VALUE (KEY alone passes this shell's value); repeatable.
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory in the container (default: the container's).
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// The container.
    pub name: String,
    /// The command and its arguments (after --).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true, value_name = "CMD")]
    pub cmd: Vec<String>,
}

/// `-e KEY` takes KEY's value from this environment, as Docker does (and is left out when it
/// has none).
fn environment(given: &[String]) -> Vec<String> {
    given
        .iter()
        .filter_map(
            |e| if e.contains('=') { Some(e.clone()) } else { std::env::var(e).ok().map(|v| format!("{e}={v}")) },
        )
        .collect()
}

/// Runs `herd exec`; returns the command's exit code.
pub async fn exec(client: &Client, args: ExecArgs) -> anyhow::Result<i32> {
    let stdin_tty = nix::unistd::isatty(std::io::stdin().as_fd()).unwrap_or(false);
    if args.tty && args.interactive && !stdin_tty {
        bail!("-it needs a terminal on standard input: drop -t to pipe input to the command");
    }
    let req = ExecRequest {
        cmd: args.cmd.clone(),
        env: environment(&args.env),
        user: args.user.clone(),
        workdir: args.workdir.clone(),
        interactive: args.interactive,
        tty: args.tty,
        size: if args.tty { terminal_size() } else { None },
    };
    req.validate().map_err(anyhow::Error::msg)?;
    let request = serde_json::to_string(&req)?;
    let http = client
        .request(Method::GET, &format!("/v1/containers/{}/exec", segment(&args.name)))
        .query(&[("request", request)]);
    let stream = client.upgrade(http, herd_proto::exec::UPGRADE).await?;
    // Raw only when this terminal is the command's: Ctrl-C is then a byte for it.
    let raw = if args.tty && args.interactive { Some(RawMode::enter(std::io::stdin().as_fd())?) } else { None };
    let outcome = session(stream, args.interactive, args.tty, raw.is_some()).await;
    drop(raw);
    let Outcome { code, error } = outcome?;
    if let Some(e) = error {
        let text = crate::format::clean_keeping(&e, &['\n', '\t']).into_owned();
        let _ = writeln!(std::io::stderr().lock(), "error: {text}");
    }
    Ok(code)
}

/// The terminal's settings before raw mode, put back when dropped.
struct RawMode {
    fd: std::os::fd::OwnedFd,
    saved: Termios,
}

impl RawMode {
    fn enter(fd: BorrowedFd<'_>) -> anyhow::Result<RawMode> {
        let fd = fd.try_clone_to_owned().context("duplicating standard input")?;
        let saved = termios::tcgetattr(&fd).context("reading the terminal's settings")?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&fd, SetArg::TCSANOW, &raw).context("putting the terminal in raw mode")?;
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(&self.fd, SetArg::TCSANOW, &self.saved);
    }
}

/// The size of this terminal (stdout's, else stdin's).
fn terminal_size() -> Option<TermSize> {
    for fd in [1, 0] {
        let mut ws = nix::libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCGWINSZ fills a winsize.
        if unsafe { nix::libc::ioctl(fd, nix::libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_col > 0 {
            return Some(TermSize { cols: ws.ws_col, rows: ws.ws_row });
        }
    }
    None
}

struct Outcome {
    code: i32,
    /// Why the command could not run, said after the terminal is put back.
    error: Option<String>,
}

/// Reads this standard input on a thread of its own (a terminal cannot be read
/// asynchronously without changing it for every process that shares it); `None` is its end.
fn stdin_chunks() -> tokio::sync::mpsc::Receiver<Option<Vec<u8>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = vec![0u8; 32 << 10];
        let mut stdin = std::io::stdin().lock();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.blocking_send(Some(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = tx.blocking_send(None);
    });
    rx
}

async fn session(stream: reqwest::Upgraded, interactive: bool, tty: bool, raw: bool) -> anyhow::Result<Outcome> {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut input = interactive.then(stdin_chunks);
    let mut winch = signal(SignalKind::window_change()).context("watching the terminal's size")?;
    // In raw mode the terminal sends no signals; one from elsewhere must not leave it raw.
    // (Only then: a handler replaces the default action, and otherwise Ctrl-C must end
    // herd exec, and with it the session.)
    let mut stops = match raw {
        true => {
            Some([signal(SignalKind::terminate())?, signal(SignalKind::hangup())?, signal(SignalKind::interrupt())?])
        }
        false => None,
    };
    let mut decoder = Decoder::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut error: Option<String> = None;
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    loop {
        tokio::select! {
            chunk = async { input.as_mut().unwrap().recv().await }, if input.is_some() => {
                let frame = match chunk.flatten() {
                    Some(data) => Frame::Stdin(data),
                    None => {
                        input = None;
                        Frame::StdinEof
                    }
                };
                // The session may have just ended: its exit code is still to be read.
                let _ = wr.write_all(&frame.encode()).await;
            }
            _ = winch.recv(), if tty => {
                if let Some(size) = terminal_size() {
                    let _ = wr.write_all(&Frame::Resize(size).encode()).await;
                }
            }
            signal = async {
                let [term, hup, int] = stops.as_mut().unwrap();
                tokio::select! {
                    _ = term.recv() => nix::libc::SIGTERM,
                    _ = hup.recv() => nix::libc::SIGHUP,
                    _ = int.recv() => nix::libc::SIGINT,
                }
            }, if raw => return Ok(Outcome { code: 128 + signal, error }),
            n = rd.read(&mut buf) => {
                let n = n.context("the exec session's connection broke")?;
                if n == 0 {
                    bail!(
                        "{}",
                        error.unwrap_or_else(|| "the exec session ended before the command's exit code came: the connection to the Control node was lost".into())
                    );
                }
                decoder.push(&buf[..n]);
                while let Some(frame) = decoder.next_frame()? {
                    match frame {
                        Frame::Stdout(data) => {
                            stdout.write_all(&data)?;
                            stdout.flush()?;
                        }
                        Frame::Stderr(data) => {
                            stderr.write_all(&data)?;
                            stderr.flush()?;
                        }
                        Frame::Error(message) => error = Some(message),
                        Frame::Exit(code) => return Ok(Outcome { code, error }),
                        Frame::Started { .. } | Frame::Stdin(_) | Frame::StdinEof | Frame::Resize(_) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_without_a_value_comes_from_here() {
        // SAFETY: a test of its own; nothing else reads this variable.
        unsafe { std::env::set_var("HERD_EXEC_TEST_VALUE", "from-here") };
        let env = environment(&[
            "A=1".into(),
            "HERD_EXEC_TEST_VALUE".into(),
            "HERD_EXEC_TEST_UNSET_VARIABLE".into(),
            "B=".into(),
        ]);
        assert_eq!(env, ["A=1", "HERD_EXEC_TEST_VALUE=from-here", "B="]);
    }
}
