//! The `herd up` supervisor: builds the network, starts the broker, the Control node and
//! the node agents, restarts whichever dies, and tears everything down on `herd down`,
//! SIGTERM or Ctrl-C.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use herd_broker::{Broker, BrokerConfig};
use herd_cli::{CliConfig, Client};
use herd_proto::node::{NodeRequest, NodeResult};
use herd_proto::subjects;
use rand::Rng;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::certs::ClusterCerts;
use crate::layout::{Layout, UpOptions, UpState};
use crate::{demo, mntns, network, preflight, teardown};

const OPTIONS_ENV: &str = "HERD_UP_OPTIONS";
const NOTIFY_ENV: &str = "HERD_UP_NOTIFY_FD";
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// Seconds containers get between SIGTERM and SIGKILL when the cluster stops.
pub const DEFAULT_STOP_TIMEOUT: u64 = 10;
const STOP_TIMEOUT_FILE: &str = "stop-timeout";
/// The component that runs every simulated node, and the prefix of their names.
const SIM_COMPONENT: &str = "sim";

/// Where progress goes: the terminal, or the pipe to the `herd up --detach` that started us.
struct Progress {
    pipe: Option<std::fs::File>,
}

impl Progress {
    fn say(&mut self, msg: &str) {
        match &mut self.pipe {
            Some(p) => {
                let _ = writeln!(p, "{msg}");
            }
            None => eprintln!("{msg}"),
        }
        tracing::info!("{msg}");
    }
}

fn random_secret() -> String {
    let bytes: [u8; 24] = rand::rng().random();
    hex::encode(bytes)
}

fn write_secret(dir: &Path, name: &str, value: &str) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(value.as_bytes())?;
    Ok(path)
}

pub(crate) fn pid_alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
}

/// `herd up`. With `detach`, returns once the cluster is ready and leaves a supervisor
/// running in the background; otherwise supervises until Ctrl-C.
pub async fn up(opts: UpOptions, detach: bool, demo_after: bool) -> anyhow::Result<()> {
    preflight::check()?;
    let layout = Layout::new(opts)?;
    if let Some(old) = UpState::load(&layout.opts.run_dir)? {
        if pid_alive(old.supervisor_pid) {
            bail!(
                "cluster {} is already up (supervisor pid {}): use it, or stop it with herd down --name {}",
                layout.opts.name,
                old.supervisor_pid,
                layout.opts.name
            );
        }
        eprintln!("cleaning up after a previous run of cluster {} that did not stop cleanly", layout.opts.name);
        teardown::run(&old, false).await;
    }
    if detach {
        spawn_detached(&layout)?;
    } else {
        supervise(layout.clone(), Progress { pipe: None }, demo_after).await?;
        return Ok(());
    }
    if demo_after {
        demo::run(&layout).await?;
    }
    Ok(())
}

/// Runs the supervisor in a new session and relays its progress until it is ready.
fn spawn_detached(layout: &Layout) -> anyhow::Result<()> {
    herd_image::private_dir(&layout.opts.run_dir)?;
    herd_image::private_dir(&layout.logs_dir())?;
    let log_path = layout.logs_dir().join("up.log");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
    let (read_end, write_end) = nix::unistd::pipe().context("creating a pipe")?;
    let write_fd = write_end.as_raw_fd();
    let exe = std::env::current_exe().context("locating the herd executable")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["up", "--supervise"])
        .env(OPTIONS_ENV, serde_json::to_string(&layout.opts)?)
        .env(NOTIFY_ENV, write_fd.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: between fork and exec only async-signal-safe calls: setsid and fcntl.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            let flags = libc::fcntl(write_fd, libc::F_GETFD);
            libc::fcntl(write_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting the supervisor")?;
    drop(write_end);
    let reader = std::io::BufReader::new(std::fs::File::from(read_end));
    let mut outcome: Option<Result<(), String>> = None;
    for line in reader.lines() {
        let line = line.unwrap_or_default();
        if line == "ready" {
            outcome = Some(Ok(()));
            break;
        } else if let Some(err) = line.strip_prefix("error: ") {
            outcome = Some(Err(err.to_string()));
            break;
        } else {
            eprintln!("{line}");
        }
    }
    // The supervisor lives on in its own session; do not leave a zombie behind if it failed.
    std::thread::spawn(move || child.wait());
    match outcome {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => bail!("{e} (log: {})", log_path.display()),
        None => bail!("the supervisor stopped before the cluster was ready; see {}", log_path.display()),
    }
}

/// Entry point of `herd up --supervise` (the detached supervisor).
pub async fn supervise_from_env() -> anyhow::Result<()> {
    let opts: UpOptions = serde_json::from_str(&std::env::var(OPTIONS_ENV).context("missing options")?)?;
    let fd: i32 = std::env::var(NOTIFY_ENV).context("missing notify fd")?.parse()?;
    // SAFETY: the fd was left open for us by the parent and nothing else owns it.
    let pipe = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let layout = Layout::new(opts)?;
    supervise(layout, Progress { pipe: Some(pipe) }, false).await
}

/// Everything a component needs to be (re)started.
struct Component {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    /// Namespaces to run in (a path to pin and its `CLONE_NEW*` kind); none: the host's.
    namespaces: Vec<(PathBuf, libc::c_int)>,
    log: PathBuf,
    restarts: Vec<Instant>,
}

impl Component {
    fn spawn(&self, exits: mpsc::UnboundedSender<(String, u32, std::process::ExitStatus)>) -> anyhow::Result<u32> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(false);
        let fds = self
            .namespaces
            .iter()
            .map(|(ns, kind)| {
                let fd: OwnedFd = std::fs::File::open(ns).with_context(|| format!("opening {}", ns.display()))?.into();
                Ok((fd, *kind))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if !fds.is_empty() {
            let raw: Vec<(i32, libc::c_int)> = fds.iter().map(|(fd, kind)| (fd.as_raw_fd(), *kind)).collect();
            // SAFETY: setns is async-signal-safe (a mount namespace needs a single-threaded
            // caller, which the forked child is); the fds stay open until after spawn.
            unsafe {
                cmd.pre_exec(move || {
                    for (fd, kind) in &raw {
                        if libc::setns(*fd, *kind) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().with_context(|| format!("starting {}", self.name))?;
        drop(fds);
        Ok(watch(child, self.name.clone(), exits))
    }
}

fn watch(
    mut child: tokio::process::Child,
    name: String,
    exits: mpsc::UnboundedSender<(String, u32, std::process::ExitStatus)>,
) -> u32 {
    let pid = child.id().unwrap_or(0);
    tokio::spawn(async move {
        if let Ok(status) = child.wait().await {
            let _ = exits.send((name, pid, status));
        }
    });
    pid
}

struct Supervisor {
    layout: Layout,
    state: UpState,
    components: Vec<Component>,
    pids: HashMap<String, u32>,
    exits_tx: mpsc::UnboundedSender<(String, u32, std::process::ExitStatus)>,
    exits_rx: mpsc::UnboundedReceiver<(String, u32, std::process::ExitStatus)>,
    broker: Option<Broker>,
    /// The CA and the components' certificates (`None` with `--no-tls`).
    certs: Option<ClusterCerts>,
}

impl Supervisor {
    /// Renews the certificates that are due; brokers are told to reload theirs (SIGHUP),
    /// the other components read theirs again at their next handshake or connection.
    fn renew_certificates(&mut self) {
        let Some(certs) = &self.certs else { return };
        let renewed = certs.renew_due(std::time::SystemTime::now());
        if renewed.is_empty() {
            return;
        }
        tracing::info!("renewed the certificates of {}", renewed.join(", "));
        for b in self.layout.brokers() {
            if renewed.contains(&b.name)
                && let Some(pid) = self.pids.get(&b.name)
            {
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), nix::sys::signal::Signal::SIGHUP);
            }
        }
    }

    /// The CLI's configuration: the API's URLs, its token, and the cluster CA when the
    /// cluster speaks TLS.
    fn write_cli_config(&self, token: String) -> anyhow::Result<CliConfig> {
        let cli = CliConfig {
            api: self.layout.api_url(),
            token,
            cluster: self.layout.opts.name.clone(),
            ca: self.certs.as_ref().map(|c| c.ca_pem().to_string()),
            ..Default::default()
        };
        cli.save(&self.layout.opts.config_path)?;
        Ok(cli)
    }
    fn record_pids(&mut self) {
        self.state.broker_pid = self.pids.get("broker").copied();
        self.state.broker_pids =
            self.layout.brokers().into_iter().map(|b| (b.name.clone(), self.pids.get(&b.name).copied())).collect();
        self.state.control_pid = self.pids.get("control").copied();
        self.state.control_pids =
            self.layout.controls().into_iter().map(|c| (c.name.clone(), self.pids.get(&c.name).copied())).collect();
        self.state.node_pids =
            self.layout.nodes.iter().map(|n| (n.name.clone(), self.pids.get(&n.name).copied())).collect();
        if let Some(pid) = self.pids.get(SIM_COMPONENT) {
            self.state.node_pids.push((SIM_COMPONENT.to_string(), Some(*pid)));
        }
        if let Err(e) = self.state.save() {
            tracing::warn!("could not save the cluster state: {e:#}");
        }
    }

    fn start(&mut self, name: &str) -> anyhow::Result<()> {
        let c = self.components.iter().find(|c| c.name == name).expect("known component");
        let pid = c.spawn(self.exits_tx.clone())?;
        self.pids.insert(name.to_string(), pid);
        self.record_pids();
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `grace`.
    async fn stop(&mut self, name: &str, grace: Duration) {
        let Some(pid) = self.pids.remove(name) else { return };
        let target = nix::unistd::Pid::from_raw(pid as i32);
        let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while pid_alive(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if pid_alive(pid) {
            tracing::warn!("{name} did not stop within {}s: killing it", grace.as_secs());
            let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL);
        }
        self.record_pids();
    }

    /// A component exited on its own: restart it, backing off if it keeps dying.
    async fn restart(&mut self, name: &str, pid: u32, status: std::process::ExitStatus) {
        if self.pids.get(name) != Some(&pid) {
            return; // an instance we stopped ourselves
        }
        self.pids.remove(name);
        let c = self.components.iter_mut().find(|c| c.name == name).expect("known component");
        c.restarts.retain(|t| t.elapsed() < Duration::from_secs(60));
        c.restarts.push(Instant::now());
        let delay = Duration::from_millis(200 * (1 << c.restarts.len().min(6)) as u64);
        tracing::warn!("{name} exited ({status}); restarting it in {}ms (log: {})", delay.as_millis(), c.log.display());
        tokio::time::sleep(delay).await;
        if let Err(e) = self.start(name) {
            tracing::error!("could not restart {name}: {e:#}");
        }
    }

    async fn shutdown_nodes(&self) {
        let Some(broker) = &self.broker else { return };
        // `herd down --time` leaves its grace period here; Ctrl-C uses the default.
        let timeout_secs = std::fs::read_to_string(self.layout.opts.run_dir.join(STOP_TIMEOUT_FILE))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(DEFAULT_STOP_TIMEOUT);
        let waits = self.layout.nodes.iter().filter(|n| self.pids.contains_key(&n.name)).map(|n| {
            let req = NodeRequest::Shutdown { stop_containers: true, timeout_secs };
            async move {
                let r: anyhow::Result<NodeResult> = broker
                    .request(subjects::node_rpc(&n.name), &format!("node {}", n.name), &req, Duration::from_secs(60))
                    .await;
                match r {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!("node {} could not stop its containers: {}", n.name, e.message),
                    Err(e) => tracing::warn!("node {}: {e:#}", n.name),
                }
            }
        });
        futures::future::join_all(waits).await;
    }
}

async fn supervise(layout: Layout, mut progress: Progress, demo_after: bool) -> anyhow::Result<()> {
    let opts = layout.opts.clone();
    // Secrets, logs, the broker's store (layers, checkpoints in transit) and every node's
    // data: closed to the machine's other users.
    for dir in [&opts.run_dir, &opts.data_dir, &layout.secrets_dir(), &layout.logs_dir()] {
        herd_image::private_dir(dir).with_context(|| format!("creating {} (mode 0700)", dir.display()))?;
    }
    let (exits_tx, exits_rx) = mpsc::unbounded_channel();
    let state = UpState {
        layout: layout.clone(),
        supervisor_pid: std::process::id(),
        broker_pid: None,
        broker_pids: Vec::new(),
        control_pid: None,
        control_pids: Vec::new(),
        node_pids: Vec::new(),
        iptables_rules: Vec::new(),
        ip_forward_before: None,
        ready: false,
    };
    state.save()?;
    let mut sup = Supervisor {
        layout: layout.clone(),
        state,
        components: Vec::new(),
        pids: HashMap::new(),
        exits_tx,
        exits_rx,
        broker: None,
        certs: None,
    };
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;

    let started = tokio::select! {
        r = start_cluster(&mut sup, &mut progress) => r,
        _ = sigint.recv() => Err(anyhow::anyhow!("interrupted")),
        _ = sigterm.recv() => Err(anyhow::anyhow!("terminated")),
    };
    if let Err(e) = started {
        progress.say(&format!("error: {e:#}"));
        shutdown(sup).await;
        return Err(e);
    }
    let simulated = if opts.sim_nodes > 0 { format!(" and {} simulated nodes", opts.sim_nodes) } else { String::new() };
    progress.say(&format!(
        "cluster {} is up: {} nodes{simulated}, API {} (config {})",
        opts.name,
        layout.nodes.len(),
        layout.api_url(),
        opts.config_path.display()
    ));
    progress.say("ready");
    progress.pipe = None;
    if demo_after {
        if let Err(e) = demo::run(&layout).await {
            eprintln!("the demo failed: {e:#}");
        }
        eprintln!("\nherd up is running in the foreground: press Ctrl-C to stop the cluster.");
    }

    let mut renewal = tokio::time::interval(sup.certs.as_ref().map_or(Duration::from_secs(3600), |c| c.check_every()));
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            Some((name, pid, status)) = sup.exits_rx.recv() => sup.restart(&name, pid, status).await,
            _ = renewal.tick() => sup.renew_certificates(),
        }
    }
    eprintln!("stopping cluster {}...", opts.name);
    shutdown(sup).await;
    eprintln!("cluster {} stopped", opts.name);
    Ok(())
}

async fn start_cluster(sup: &mut Supervisor, progress: &mut Progress) -> anyhow::Result<()> {
    let programs = preflight::check()?;
    let layout = sup.layout.clone();
    let opts = &layout.opts;
    let exe = std::env::current_exe().context("locating the herd executable")?;

    progress.say(&format!(
        "network: bridge {} ({}), {} node namespaces",
        layout.bridge,
        layout.bridge_addr,
        layout.nodes.len()
    ));
    network::build(&layout, &mut sup.state, &programs.iptables).await?;

    // Secrets: one broker password per component, one API token.
    let secrets = layout.secrets_dir();
    let api_token = random_secret();
    let token_file = write_secret(&secrets, "api-token", &api_token)?;
    let mut users = vec![("control".to_string(), random_secret()), ("up".to_string(), random_secret())];
    // Joining nodes have no user at the broker: their certificate admits them, through the
    // Control node's auth callout.
    for n in layout.nodes.iter().filter(|n| !layout.joins(&n.name)) {
        users.push((n.name.clone(), random_secret()));
    }
    let mut password_files = HashMap::new();
    if opts.sim_nodes > 0 {
        users.push((SIM_COMPONENT.to_string(), random_secret()));
    }
    for (user, pass) in &users {
        password_files.insert(user.clone(), write_secret(&secrets, &format!("broker-{user}"), pass)?);
    }
    // With TLS, the broker asks the Control node about every connection without a user of
    // its own (a joined node's), and the Control node may close connections through the
    // system account (herd nodes rm).
    let admission = if opts.tls {
        let issuer = herd_broker::callout::Issuer::generate();
        let system_password = random_secret();
        Some(Admission {
            issuer_public: issuer.public_key(),
            seed_file: write_secret(&secrets, "callout-issuer.nk", &issuer.seed())?,
            system_password_file: write_secret(&secrets, &format!("broker-{SYSTEM_USER}"), &system_password)?,
            system_password,
        })
    } else {
        None
    };
    // The cluster CA and one certificate per component (`--no-tls`: none).
    if opts.tls {
        let lifetime = Duration::from_secs(opts.cert_lifetime_secs);
        let sim = (opts.sim_nodes > 0).then_some(SIM_COMPONENT);
        let certs = ClusterCerts::issue(&layout, lifetime, sim)?;
        progress.say(&format!(
            "TLS: cluster CA in {}, certificates valid for {}",
            layout.ca_dir().display(),
            humantime::format_duration(lifetime)
        ));
        sup.certs = Some(certs);
    }

    // The broker: one nats-server, or a JetStream cluster whose routes take a password of
    // their own.
    let route_password = random_secret();
    let brokers = layout.brokers();
    for (i, b) in brokers.iter().enumerate() {
        herd_image::private_dir(&b.store)?;
        let conf = nats_config(
            &layout,
            i,
            &users,
            &route_password,
            sup.certs.as_ref().map(|c| c.files(&b.name)),
            admission.as_ref(),
        );
        let conf_path = write_secret(&opts.run_dir, &format!("{}.conf", if i == 0 { "nats" } else { &b.name }), &conf)?;
        progress.say(&format!("broker: nats-server on {}", b.url));
        sup.components.push(Component {
            name: b.name.clone(),
            program: programs.nats_server.clone(),
            args: vec!["-c".into(), conf_path.into()],
            namespaces: Vec::new(),
            log: layout.logs_dir().join(format!("{}.log", b.name)),
            restarts: Vec::new(),
        });
        sup.start(&b.name)?;
    }
    let up_password = users.iter().find(|(u, _)| u == "up").unwrap().1.clone();
    let up_tls = sup.certs.as_ref().map(|c| c.files(crate::certs::UP).clone());
    let broker = Broker::connect(
        &BrokerConfig::new(layout.broker_url(), "herd up").with_credentials("up", up_password).with_tls(up_tls),
    )
    .await?;
    sup.broker = Some(broker.clone());

    // The Control node, or its replicas: they share the API token and the checkpoint
    // signing key, and elect a leader through a lease in the broker.
    let controls = layout.controls();
    let signing_key = controls[0].data_dir.join("checkpoint-signing.key");
    for c in &controls {
        progress.say(&format!("{}: API on {}", c.name, c.url));
        let mut args: Vec<OsString> = vec![
            "control".into(),
            "--broker".into(),
            layout.broker_url().into(),
            "--broker-user".into(),
            "control".into(),
            "--broker-password-file".into(),
            password_files["control"].clone().into(),
            "--api-listen".into(),
            c.listen.clone().into(),
            "--api-token-file".into(),
            token_file.clone().into(),
            "--data-dir".into(),
            c.data_dir.clone().into(),
            "--container-cidr".into(),
            opts.container_cidr.to_string().into(),
            "--node-timeout".into(),
            opts.node_timeout_secs.to_string().into(),
        ];
        if controls.len() > 1 {
            args.extend([
                "--replica".into(),
                c.name.clone().into(),
                "--advertise".into(),
                c.url.clone().into(),
                "--checkpoint-key".into(),
                signing_key.clone().into(),
            ]);
        }
        if let Some(certs) = &sup.certs {
            args.extend(certs.args(&c.name));
        }
        if let Some(a) = &admission {
            args.extend([
                "--join-ca".into(),
                layout.ca_dir().into(),
                "--callout-key".into(),
                a.seed_file.clone().into(),
                "--broker-system-user".into(),
                SYSTEM_USER.into(),
                "--broker-system-password-file".into(),
                a.system_password_file.clone().into(),
                "--join-cert-lifetime".into(),
                format!("{}s", opts.cert_lifetime_secs).into(),
            ]);
            if controls.len() == 1 {
                args.extend(["--join-listen".into(), layout.join_listen().into()]);
            }
        }
        if let Some(p) = &opts.policy {
            args.extend(["--policy".into(), p.into()]);
        }
        if let Some(s) = opts.policy_interval_secs {
            args.extend(["--policy-interval".into(), s.to_string().into()]);
        }
        sup.components.push(Component {
            name: c.name.clone(),
            program: exe.clone(),
            args,
            namespaces: Vec::new(),
            log: layout.logs_dir().join(format!("{}.log", c.name)),
            restarts: Vec::new(),
        });
        sup.start(&c.name)?;
    }

    let cli = sup.write_cli_config(api_token)?;
    let cli_client = Client::new(&cli)?;

    // The Compute nodes, each in network and mount namespaces of its own.
    for n in &layout.nodes {
        progress.say(&format!("node {}: {} in network namespace {}", n.name, n.address, n.netns));
        let mntns = mntns::pin_path(&opts.run_dir, &n.name);
        mntns::create(&mntns).with_context(|| format!("creating the mount namespace of node {}", n.name))?;
        let mut args: Vec<OsString> = vec!["node".into(), "--name".into(), n.name.clone().into()];
        if layout.joins(&n.name) {
            // As a machine of its own would: it learns the broker and gets its certificate
            // by joining (and restarts from what it kept, without the spent token).
            let token = join_token(&cli_client).await?;
            args.extend([
                "--join".into(),
                format!("https://{}", layout.join_listen()).into(),
                "--token".into(),
                token.into(),
            ]);
        } else {
            args.extend([
                "--broker".into(),
                layout.broker_url().into(),
                "--broker-user".into(),
                n.name.clone().into(),
                "--broker-password-file".into(),
                password_files[&n.name].clone().into(),
            ]);
        }
        args.extend([
            "--address".into(),
            n.address.to_string().into(),
            "--data-dir".into(),
            n.data_dir.clone().into(),
            "--run-dir".into(),
            n.run_dir.clone().into(),
            "--cgroup-parent".into(),
            n.cgroup_parent.clone().into(),
            "--container-cidr".into(),
            opts.container_cidr.to_string().into(),
        ]);
        args.extend(capacity_args(opts));
        if let Some(certs) = sup.certs.as_ref().filter(|_| !layout.joins(&n.name)) {
            args.extend(certs.args(&n.name));
        }
        if let Some(size) = &opts.node_log_max_size {
            args.extend(["--log-max-size".into(), size.into()]);
        }
        if let Some(files) = opts.node_log_max_files {
            args.extend(["--log-max-files".into(), files.to_string().into()]);
        }
        for (_, k, v) in opts.node_labels.iter().filter(|(node, _, _)| *node == n.name) {
            args.extend(["--label".into(), format!("{k}={v}").into()]);
        }
        sup.components.push(Component {
            name: n.name.clone(),
            program: exe.clone(),
            args,
            namespaces: vec![(network::netns_path(n), libc::CLONE_NEWNET), (mntns, libc::CLONE_NEWNS)],
            log: layout.logs_dir().join(format!("node-{}.log", n.name)),
            restarts: Vec::new(),
        });
        sup.start(&n.name)?;
    }

    // Simulated nodes: one process, outside the node namespaces; they have no address
    // because they run nothing to reach.
    if opts.sim_nodes > 0 {
        progress.say(&format!("{} simulated nodes (runtime sim: they run nothing)", opts.sim_nodes));
        let mut args: Vec<OsString> = vec![
            "node".into(),
            "--runtime".into(),
            "sim".into(),
            "--name".into(),
            SIM_COMPONENT.into(),
            "--sim-nodes".into(),
            opts.sim_nodes.to_string().into(),
            "--broker".into(),
            layout.broker_url().into(),
            "--broker-user".into(),
            SIM_COMPONENT.into(),
            "--broker-password-file".into(),
            password_files[SIM_COMPONENT].clone().into(),
            "--address".into(),
            "0.0.0.0".into(),
        ];
        args.extend(capacity_args(opts));
        if let Some(certs) = &sup.certs {
            args.extend(certs.args(SIM_COMPONENT));
        }
        sup.components.push(Component {
            name: SIM_COMPONENT.into(),
            program: exe.clone(),
            args,
            namespaces: Vec::new(),
            log: layout.logs_dir().join("sim-nodes.log"),
            restarts: Vec::new(),
        });
        sup.start(SIM_COMPONENT)?;
    }

    let wait = herd_cli::commands::wait_ready(&cli_client, layout.nodes.len() + opts.sim_nodes, READY_TIMEOUT);
    tokio::pin!(wait);
    // Components that die while starting are restarted; their logs say why.
    loop {
        tokio::select! {
            r = &mut wait => { r.map_err(|e| anyhow::anyhow!("{e:#}; logs are in {}", layout.logs_dir().display()))?; break; }
            Some((name, pid, status)) = sup.exits_rx.recv() => sup.restart(&name, pid, status).await,
        }
    }

    // Routes from this machine to every container.
    let range = Some(opts.container_cidr);
    tokio::spawn(async move {
        if let Err(e) = herd_node::routes::run_route_sync(broker, None, range).await {
            tracing::error!("host route sync stopped: {e:#}");
        }
    });
    sup.state.ready = true;
    sup.record_pids();
    Ok(())
}

/// `--cpus`/`--memory` for a node agent (real or simulated): what `--node-cpus`/`--node-memory` say
/// each node offers; without them each agent reports its own default.
fn capacity_args(opts: &UpOptions) -> Vec<OsString> {
    let mut args = Vec::new();
    if let Some(c) = opts.node_cpus_milli {
        args.extend(["--cpus".into(), herd_proto::units::Cpus(c).to_string().into()]);
    }
    if let Some(m) = opts.node_memory_bytes {
        args.extend(["--memory".into(), m.to_string().into()]);
    }
    args
}

/// The broker user of the system account the Control node closes connections with.
const SYSTEM_USER: &str = "control-sys";

/// How the broker admits connections without a user of their own (joined nodes): it asks the
/// Control node, whose answers `issuer_public` signs.
struct Admission {
    issuer_public: String,
    seed_file: PathBuf,
    system_password: String,
    system_password_file: PathBuf,
}

/// A one-time join token for a node `herd up` starts as a joining machine; the Control node
/// may still be starting, so this asks until it answers.
async fn join_token(client: &Client) -> anyhow::Result<String> {
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    loop {
        let req = herd_proto::join::JoinTokenRequest { ttl_secs: 600 };
        match client.post::<_, herd_proto::join::JoinToken>("/v1/join-tokens", &req).await {
            Ok(t) => return Ok(t.token),
            Err(e) if std::time::Instant::now() > deadline => return Err(e.context("making a join token")),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// A node user's `permissions` block in nats-server's configuration, with a leading comma.
fn node_permissions_conf(p: &herd_proto::subjects::NodePermissions) -> String {
    let list = |subjects: &[String]| subjects.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
    format!(
        ", permissions: {{ publish: {{ allow: [{}], deny: [{}] }}, subscribe: {{ allow: [{}] }}, allow_responses: true }}",
        list(&p.publish_allow),
        list(&p.publish_deny),
        list(&p.subscribe_allow)
    )
}

/// The configuration of broker `i` of `layout`: its clients' users, and with several brokers
/// the cluster's routes to the others, authenticated with `route_password`.
fn nats_config(
    layout: &Layout,
    i: usize,
    users: &[(String, String)],
    route_password: &str,
    tls: Option<&herd_tls::TlsFiles>,
    admission: Option<&Admission>,
) -> String {
    let brokers = layout.brokers();
    let me = &brokers[i];
    let static_users: Vec<&str> = users.iter().map(|(u, _)| u.as_str()).collect();
    let users: Vec<String> = users
        .iter()
        .map(|(u, p)| {
            // Compute nodes get least privilege; the Control node, the simulated nodes and
            // `herd up` itself (which asks nodes to shut down) may do anything.
            let permissions = if layout.nodes.iter().any(|n| n.name == *u) {
                node_permissions_conf(&herd_proto::subjects::node_permissions(u))
            } else {
                String::new()
            };
            format!("    {{ user: \"{u}\", password: \"{p}\"{permissions} }}")
        })
        .collect();
    let name = &layout.opts.name;
    let server_name = if i == 0 { format!("herd_{name}") } else { format!("herd_{name}_{}", i + 1) };
    let cluster = if brokers.len() > 1 {
        let routes: Vec<String> = brokers
            .iter()
            .filter(|b| b.name != me.name)
            .map(|b| format!("    \"nats-route://route:{route_password}@{}\"", b.route_listen))
            .collect();
        // Servers ping their peers and clients every 2 s, and give up on one after two
        // unanswered pings: a stopped server is found out within seconds (default: minutes).
        format!(
            "ping_interval: \"2s\"\nping_max: 2\n\
             cluster {{\n  name: \"herd_{name}\"\n  listen: \"{}\"\n  \
             authorization {{ user: \"route\", password: \"{route_password}\" }}\n{}  routes: [\n{}\n  ]\n}}\n",
            me.route_listen,
            tls.map(|f| crate::certs::nats_tls_block(f, "  ")).unwrap_or_default(),
            routes.join(",\n")
        )
    } else {
        String::new()
    };
    // HERD_BROKER_DEBUG=1: the servers log at debug level (why a stream found no peers to
    // place it on, say), for tests that chase a fault of the cluster's.
    let debug = if std::env::var_os("HERD_BROKER_DEBUG").is_some_and(|v| v == "1") { "debug: true\n" } else { "" };
    format!(
        "# Generated by herd up for cluster {name}; each component has its own credentials.\n\
         {debug}server_name: \"{server_name}\"\n\
         listen: \"{listen}\"\n\
         max_payload: 8MB\n\
         jetstream {{\n    store_dir: \"{store}\"\n    max_memory_store: 256MB\n}}\n\
         {cluster}\
         {tls}\
         {system}\
         authorization {{\n  users: [\n{users}\n  ]\n{callout}}}\n",
        tls = tls.map(|f| crate::certs::nats_tls_block(f, "")).unwrap_or_default(),
        system = admission
            .map(|a| format!(
                "accounts {{\n  SYS: {{ users: [ {{ user: \"{SYSTEM_USER}\", password: \"{}\" }} ] }}\n}}\nsystem_account: SYS\n",
                a.system_password
            ))
            .unwrap_or_default(),
        callout = admission
            .map(|a| {
                let mut bypass: Vec<String> = static_users.iter().map(|u| format!("\"{u}\"")).collect();
                bypass.push(format!("\"{SYSTEM_USER}\""));
                format!(
                    "  auth_callout {{\n    issuer: \"{}\"\n    auth_users: [ {} ]\n  }}\n",
                    a.issuer_public,
                    bypass.join(", ")
                )
            })
            .unwrap_or_default(),
        listen = me.listen,
        store = me.store.display(),
        users = users.join(",\n"),
    )
}

/// Stops containers, components and the network, in that order.
async fn shutdown(mut sup: Supervisor) {
    sup.shutdown_nodes().await;
    let nodes: Vec<String> = sup.layout.nodes.iter().map(|n| n.name.clone()).collect();
    for n in &nodes {
        sup.stop(n, Duration::from_secs(5)).await;
    }
    sup.stop(SIM_COMPONENT, Duration::from_secs(5)).await;
    for c in sup.layout.controls().iter().rev() {
        sup.stop(&c.name, Duration::from_secs(5)).await;
    }
    for b in sup.layout.brokers() {
        sup.stop(&b.name, Duration::from_secs(5)).await;
    }
    sup.record_pids();
    teardown::run(&sup.state, false).await;
}

/// `herd down`: stops the cluster whose runtime directory is `run_dir`, giving its
/// containers `stop_timeout` seconds between SIGTERM and SIGKILL.
pub async fn down(run_dir: &Path, name: &str, purge: bool, stop_timeout: u64) -> anyhow::Result<()> {
    let Some(state) = UpState::load(run_dir)? else {
        let data = PathBuf::from("/var/lib/herd").join(name);
        if purge && data.exists() {
            std::fs::remove_dir_all(&data).with_context(|| format!("removing {}", data.display()))?;
            eprintln!("cluster {name} is not up; removed its data in {}", data.display());
        } else {
            eprintln!("cluster {name} is not up");
        }
        return Ok(());
    };
    let pid = state.supervisor_pid;
    if pid_alive(pid) {
        std::fs::write(run_dir.join(STOP_TIMEOUT_FILE), stop_timeout.to_string())
            .with_context(|| format!("writing to {}", run_dir.display()))?;
        let target = nix::unistd::Pid::from_raw(pid as i32);
        nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGTERM).context("signalling the supervisor")?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while pid_alive(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if pid_alive(pid) {
            eprintln!("the supervisor (pid {pid}) did not stop in time: killing it and cleaning up");
            let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL);
        }
    }
    // Whatever the supervisor did not get to (it may have crashed) is undone here.
    if let Some(left) = UpState::load(run_dir)? {
        teardown::run(&left, false).await;
    }
    if purge {
        let data = &state.layout.opts.data_dir;
        if data.exists() {
            std::fs::remove_dir_all(data).with_context(|| format!("removing {}", data.display()))?;
        }
    }
    let config = &state.layout.opts.config_path;
    if CliConfig::load(config).is_ok_and(|c| c.cluster == state.layout.opts.name) {
        let _ = std::fs::remove_file(config);
    }
    eprintln!("cluster {} is down", state.layout.opts.name);
    Ok(())
}
