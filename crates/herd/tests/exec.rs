//! `herd exec` end to end: output and exit codes, stdin, the process in the container's
//! namespaces and cgroup, a terminal session through a real pseudo-terminal, a client that
//! dies, and checkpoint and migration refused while a session runs.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Cluster, process_runs, wait_for};

const T: Duration = Duration::from_secs(30);
/// A container whose init reaps what is left to it (busybox sh waits for any child).
const REAPING_INIT: &str = "trap 'exit 0' TERM; while true; do sleep 1; done";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn exec(cluster: &Cluster, args: &[&str]) -> Output {
    let mut a = vec!["exec"];
    a.extend_from_slice(args);
    cluster.herd(&a)
}

/// Pids of the processes in `cluster`'s containers (their cgroups) whose command line is
/// exactly `argv`.
fn processes(cluster: &Cluster, argv: &[&str]) -> Vec<u32> {
    let cgroup = format!("/herd/{}/", cluster.name);
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .filter(|pid| process_runs(*pid as u64))
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(&cgroup)))
        .collect()
}

fn namespaces(pid: u32) -> Vec<(String, String)> {
    ["pid", "mnt", "net", "ipc", "uts", "cgroup"]
        .iter()
        .map(|ns| {
            let link = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
            (ns.to_string(), link.display().to_string())
        })
        .collect()
}

fn cgroups(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap()
}

/// Kills a spawned `herd` at the end of a test, whatever happened.
struct Spawned(Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn exec_runs_commands_in_the_container_with_their_output_and_exit_code() {
    let cluster = Cluster::up(65, 1);
    cluster.import_busybox();
    cluster.ok(&["run", "--name", "c", "--env", "GREETING=hello", "busybox", "--", "sh", "-c", REAPING_INIT]);
    let info = cluster.wait_state("c", "running", T);

    // stdout and stderr apart, and the command's exit code.
    let out = exec(&cluster, &["c", "--", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(text(&out.stdout), "out\n");
    assert_eq!(text(&out.stderr), "err\n");

    // The container's environment, user and working directory, unless told otherwise.
    let out = cluster.ok(&["exec", "c", "--", "sh", "-c", "echo $GREETING $(id -u):$(id -g) $(pwd)"]);
    assert_eq!(out, "hello 0:0 /\n");
    let out = cluster.ok(&[
        "exec",
        "-e",
        "GREETING=bye",
        "-e",
        "OTHER=x",
        "-u",
        "nobody",
        "-w",
        "/tmp",
        "c",
        "--",
        "sh",
        "-c",
        "echo $GREETING $OTHER $(id -u):$(id -g) $(pwd)",
    ]);
    assert_eq!(out, "bye x 65534:65534 /tmp\n");
    assert_eq!(cluster.ok(&["exec", "-u", "1234:5678", "c", "--", "id", "-u"]), "1234\n");
    let err = cluster.fails(&["exec", "-u", "alice", "c", "--", "true"]);
    assert!(err.contains("unable to find user alice") && err.contains("in container c"), "{err}");

    // Large output arrives whole.
    let out = exec(&cluster, &["c", "--", "sh", "-c", "yes 0123456789 | head -c 3000000"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout.len(), 3_000_000);
    assert!(out.stdout.starts_with(b"0123456789\n0123456789\n"));

    // -i forwards stdin, and its end closes the command's; without -i the command reads nothing.
    let mut cat = cluster.command(&["exec", "-i", "c", "--", "cat"]);
    let mut cat = cat.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let input: Vec<u8> = (0..20_000).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
    let mut stdin = cat.stdin.take().unwrap();
    let writer = {
        let input = input.clone();
        std::thread::spawn(move || stdin.write_all(&input))
    };
    let out = cat.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout == input, "cat gave back {} bytes of {}", out.stdout.len(), input.len());
    let out = exec(&cluster, &["c", "--", "cat"]);
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");

    // Docker's exit codes for a command that cannot run, with the reason.
    let out = exec(&cluster, &["c", "--", "no-such-command", "x"]);
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains("\"no-such-command\" not found in container c") && err.contains("$PATH"), "{err}");
    assert!(out.stdout.is_empty());
    let out = exec(&cluster, &["c", "--", "/etc/passwd"]);
    assert_eq!(out.status.code(), Some(126), "{out:?}");
    assert!(text(&out.stderr).contains("\"/etc/passwd\" cannot be run in container c"), "{out:?}");
    // A signal's death is 128 + its number.
    let out = exec(&cluster, &["c", "--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(out.status.code(), Some(137), "{out:?}");

    // Bad input.
    let err = cluster.fails(&["exec", "nope", "--", "true"]);
    assert!(err.contains("no such container: nope"), "{err}");
    let err = cluster.fails(&["exec", "c"]);
    assert!(err.contains("CMD"), "{err}");
    let err = cluster.fails(&["exec", "-w", "relative", "c", "--", "true"]);
    assert!(err.contains("must be an absolute path"), "{err}");

    // The process is in the container's namespaces and cgroup, and dies with its client, its
    // children too.
    let init = info.pid.expect("a running container has a pid");
    let client = Spawned(
        cluster
            .command(&["exec", "c", "--", "sh", "-c", "sleep 4321 & sleep 4322"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (bg, fg) = wait_for("the exec'd processes", T, || {
        match (&processes(&cluster, &["sleep", "4321"])[..], &processes(&cluster, &["sleep", "4322"])[..]) {
            ([bg], [fg]) => Some((*bg, *fg)),
            _ => None,
        }
    });
    assert_eq!(namespaces(fg), namespaces(init));
    assert_eq!(cgroups(fg), cgroups(init));
    assert_eq!(namespaces(bg), namespaces(init));
    // Not the node agent's: the container's own cgroup.
    assert!(cgroups(fg).contains(&info.id), "{}", cgroups(fg));
    drop(client); // SIGKILL: no goodbye
    wait_for("the exec'd processes to be killed with their client", T, || {
        (!process_runs(bg as u64) && !process_runs(fg as u64)).then_some(())
    });
    // The shell, and runc once it has seen its process go.
    wait_for("the exec'd shell and its runc to go", T, || {
        let shell = processes(&cluster, &["sh", "-c", "sleep 4321 & sleep 4322"]);
        let runc = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .any(|c| text(&c).contains("exec\0--pid-file") && text(&c).contains(&info.id));
        (shell.is_empty() && !runc).then_some(())
    });

    // An agent that restarts loses its sessions' connections: the new one kills what they
    // left running, and the client says the session was lost.
    let client = cluster
        .command(&["exec", "c", "--", "sleep", "4600"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sleeper =
        wait_for("sleep 4600 in the container", T, || processes(&cluster, &["sleep", "4600"]).first().copied());
    let agent = cluster.agent_pid("n1").expect("n1 has an agent");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent as i32), nix::sys::signal::SIGKILL).unwrap();
    let out = client.wait_with_output().unwrap();
    assert!(!out.status.success(), "{out:?}");
    let err = text(&out.stderr);
    assert!(
        err.contains("the exec session in c is lost") || err.contains("before the command's exit code came"),
        "{err}"
    );
    cluster.wait_agent_restarted("n1", agent, Duration::from_secs(90));
    wait_for("the new agent to kill what the session left", T, || (!process_runs(sleeper as u64)).then_some(()));
    // (A busy machine can make the new agent miss a heartbeat: a few tries.)
    wait_for("exec on the new agent", T, || {
        let out = exec(&cluster, &["c", "--", "echo", "again"]);
        (out.status.success() && out.stdout == b"again\n").then_some(())
    });

    // A node that is down says so.
    let stopped = cluster.stop_agent("n1");
    let err = wait_for("n1 to be down", T, || {
        let out = exec(&cluster, &["c", "--", "true"]);
        let err = text(&out.stderr);
        (!out.status.success() && err.contains("down")).then_some(err)
    });
    // "node n1 is down", or "... went down before it answered" for an exec under way.
    assert!(err.contains("node n1 ") && err.contains("down"), "{err}");
    stopped.resume();
    wait_for("exec to work again", T, || exec(&cluster, &["c", "--", "true"]).status.success().then_some(()));

    // A container that stops takes its exec sessions with it.
    let mut long = cluster.command(&["exec", "c", "--", "sleep", "999"]);
    let long = long.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for("sleep 999 in the container", T, || (!processes(&cluster, &["sleep", "999"]).is_empty()).then_some(()));
    cluster.ok(&["stop", "-t", "1", "c"]);
    let out = long.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    let err = cluster.fails(&["exec", "c", "--", "true"]);
    assert!(err.contains("container c is exited: herd exec needs a running container"), "{err}");
}

/// The test's side of a pseudo-terminal: reads what the program wrote (without carriage
/// returns), with time limits.
struct Terminal {
    master: OwnedFd,
    seen: Vec<u8>,
}

impl Terminal {
    fn read_until(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(at) = find(&self.seen, needle.as_bytes()) {
                let upto: Vec<u8> = self.seen.drain(..at + needle.len()).collect();
                return text(&upto);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {needle:?} on the terminal; it showed {:?}",
                text(&self.seen)
            );
            let mut fds = [nix::poll::PollFd::new(self.master.as_fd(), nix::poll::PollFlags::POLLIN)];
            let ms = left.as_millis().min(1000) as u16;
            if nix::poll::poll(&mut fds, ms).unwrap_or(0) > 0 {
                let mut buf = [0u8; 4096];
                match nix::unistd::read(&self.master, &mut buf) {
                    // Carriage returns left out: busybox's line editor writes a varying number.
                    Ok(n) if n > 0 => self.seen.extend(buf[..n].iter().filter(|b| **b != b'\r')),
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }

    fn type_in(&self, s: &str) {
        nix::unistd::write(&self.master, s.as_bytes()).unwrap();
    }

    fn resize(&self, rows: u16, cols: u16) {
        let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ with a valid winsize.
        assert_eq!(unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) }, 0);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The settings of a terminal that matter for raw mode, comparable.
fn modes(fd: &OwnedFd) -> String {
    let t = nix::sys::termios::tcgetattr(fd).unwrap();
    format!("{:?} {:?} {:?} {:?} {:?}", t.input_flags, t.output_flags, t.control_flags, t.local_flags, t.control_chars)
}

#[test]
fn exec_it_gives_an_interactive_terminal_and_puts_the_local_one_back() {
    let cluster = Cluster::up(66, 1);
    cluster.import_busybox();
    cluster.ok(&["run", "--name", "c", "busybox", "--", "sh", "-c", REAPING_INIT]);
    cluster.wait_state("c", "running", T);

    let winsize = nix::pty::Winsize { ws_row: 30, ws_col: 100, ws_xpixel: 0, ws_ypixel: 0 };
    let pty = nix::pty::openpty(Some(&winsize), None).unwrap();
    let before = modes(&pty.slave);
    let mut cmd = cluster.command(&["exec", "-it", "c", "--", "sh"]);
    cmd.stdin(Stdio::from(pty.slave.try_clone().unwrap()))
        .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
        .stderr(Stdio::from(pty.slave.try_clone().unwrap()));
    // SAFETY: setsid and ioctl are async-signal-safe: herd runs in a session of its own, whose
    // controlling terminal is the pty, as in a terminal emulator.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut herd = Spawned(cmd.spawn().unwrap());
    drop(cmd);
    let mut term = Terminal { master: pty.master, seen: Vec::new() };

    term.read_until("# ", T);
    // In raw mode while the session runs: the terminal echoes nothing itself.
    assert_ne!(modes(&pty.slave), before, "the terminal was not put in raw mode");
    term.type_in("echo $((6*7))\r");
    let shown = term.read_until("42\n", T);
    assert!(shown.contains("echo $((6*7))"), "{shown:?}");
    term.read_until("# ", T);

    // The terminal's size at the start, and after a resize (SIGWINCH).
    term.type_in("stty size\r");
    term.read_until("30 100\n", T);
    term.resize(40, 132);
    // The resize travels as a frame: ask until the shell sees it.
    wait_for("the new terminal size in the container", T, || {
        term.type_in("stty size\r");
        let shown = term.read_until("# ", T);
        shown.contains("40 132").then_some(())
    });

    // Ctrl-C is a byte for the container's terminal, which interrupts the command there (and
    // not herd exec).
    term.type_in("sleep 100\r");
    term.read_until("sleep 100\n", T);
    wait_for("sleep 100 in the container", T, || (!processes(&cluster, &["sleep", "100"]).is_empty()).then_some(()));
    term.type_in("\x03");
    term.read_until("# ", T);
    term.type_in("echo status $?\r");
    term.read_until("status 130", T);
    assert!(herd.0.try_wait().unwrap().is_none(), "Ctrl-C ended herd exec");

    term.type_in("exit 3\r");
    let status = wait_for("herd exec to end", T, || herd.0.try_wait().unwrap());
    assert_eq!(status.code(), Some(3), "{status:?}");
    assert_eq!(modes(&pty.slave), before, "the terminal's modes were not put back");

    // Killed by a signal from elsewhere, it puts the terminal back too.
    let mut cmd = cluster.command(&["exec", "-it", "c", "--", "sh", "-c", "echo ready; sleep 4500"]);
    cmd.stdin(Stdio::from(pty.slave.try_clone().unwrap()))
        .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
        .stderr(Stdio::from(pty.slave.try_clone().unwrap()));
    let mut herd = Spawned(cmd.spawn().unwrap());
    term.read_until("ready", T);
    wait_for("sleep 4500 in the container", T, || (processes(&cluster, &["sleep", "4500"]).len() == 1).then_some(()));
    assert_ne!(modes(&pty.slave), before);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(herd.0.id() as i32), nix::sys::signal::SIGTERM).unwrap();
    let status = wait_for("herd exec to end on SIGTERM", T, || herd.0.try_wait().unwrap());
    assert_eq!(status.code(), Some(128 + 15), "{status:?} (signal {:?})", status.signal());
    assert_eq!(modes(&pty.slave), before, "the terminal's modes were not put back after SIGTERM");
    // The session's process went with it.
    wait_for("the session's process to be killed", T, || {
        processes(&cluster, &["sleep", "4500"]).is_empty().then_some(())
    });
}

#[test]
fn checkpoint_and_migration_wait_for_exec_sessions() {
    let cluster = Cluster::up(67, 2);
    cluster.import_busybox();
    cluster.ok(&["run", "--name", "c", "--node", "n1", "busybox", "--", "sh", "-c", REAPING_INIT]);
    let info = cluster.wait_state("c", "running", T);

    // A session in progress: cat echoes what it is given until its input ends.
    let mut cat = cluster.command(&["exec", "-i", "c", "--", "cat"]);
    let mut cat = Spawned(cat.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    let mut stdin = cat.0.stdin.take().unwrap();
    let mut stdout = cat.0.stdout.take().unwrap();
    stdin.write_all(b"ping\n").unwrap();
    let mut got = [0u8; 5];
    stdout.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping\n");
    let cat_pid = processes(&cluster, &["cat"]);
    assert_eq!(cat_pid.len(), 1, "{cat_pid:?}");

    let err = cluster.fails(&["migrate", "c", "--to", "n2"]);
    assert!(
        err.contains(&format!("container c has an exec session in progress (pid {}, `cat`, started ", cat_pid[0]))
            && err.contains("wait for it to end or stop it, then migrate it again"),
        "{err}"
    );
    let err = cluster.fails(&["checkpoint", "c"]);
    assert!(err.contains("has an exec session in progress") && err.contains("then checkpoint it again"), "{err}");
    // A drain (like the policy engine: both go through the migration) leaves it, and says why.
    let drained = cluster.herd(&["nodes", "drain", "n1"]);
    let said = format!("{}{}", text(&drained.stdout), text(&drained.stderr));
    assert!(said.contains("c") && said.contains("has an exec session in progress"), "{said}");
    cluster.ok(&["nodes", "activate", "n1"]);
    // Untouched: running once, on n1, and the session goes on.
    assert_eq!(cluster.runc_copies(&info.id), [("n1".to_string(), "running".to_string())]);
    stdin.write_all(b"pong\n").unwrap();
    stdout.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"pong\n");

    // Once it has ended, the container moves.
    drop(stdin);
    let status = cat.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    cluster.ok(&["migrate", "c", "--to", "n2"]);
    cluster.wait_runs_only_on("c", "n2", T);
    assert_eq!(cluster.ok(&["exec", "c", "--", "echo", "moved"]), "moved\n");

    // A killed session can leave zombies behind in a container whose init does not reap them:
    // the container still moves.
    cluster.ok(&["run", "--name", "z", "--node", "n2", "busybox", "--", "sleep", "3600"]);
    cluster.wait_state("z", "running", T);
    let client = Spawned(
        cluster
            .command(&["exec", "z", "--", "sh", "-c", "sleep 4401 & sleep 4402"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the exec'd sleeps", T, || (processes(&cluster, &["sleep", "4402"]).len() == 1).then_some(()));
    drop(client);
    // Refused until the node has killed what the session left running.
    wait_for("z to migrate once the session ended", T, || {
        let out = cluster.herd(&["migrate", "z", "--to", "n1"]);
        let err = text(&out.stderr);
        assert!(out.status.success() || err.contains("exec session in progress"), "{err}");
        out.status.success().then_some(())
    });
    cluster.wait_runs_only_on("z", "n1", T);
}
