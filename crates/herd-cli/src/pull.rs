//! `herd image pull REF`: asks the Control node to pull an image from a registry and shows
//! its progress (a progress bar on a terminal, plain lines otherwise, one JSON report with
//! `--json`).

use std::io::{IsTerminal, Read};

use anyhow::{Context, bail};
use clap::Args;
use futures::StreamExt;
use herd_proto::pull::{PullReport, PullRequest, PullUpdate};
use herd_proto::units::Bytes as B;
use herd_registry::{Reference, dockercfg};
use reqwest::Method;

use crate::client::Client;
use crate::commands::print_json;

/// `herd image pull`
#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image, as Docker names it: busybox, registry:5000/team/app:v1, app@sha256:...
    pub reference: String,
    /// The local name (default: the reference's repository and tag, as `docker images` shows them).
    #[arg(long)]
    pub name: Option<String>,
    /// Registry user name; the password (or access token) is read from stdin with --password-stdin.
    /// Without it, an inline entry of the Docker config (docker login) is used if there is one.
    #[arg(long, requires = "password_stdin")]
    pub user: Option<String>,
    /// Read the registry password from stdin.
    #[arg(long, requires = "user")]
    pub password_stdin: bool,
    /// Speak plain HTTP to the registry (registries on loopback always get plain HTTP).
    #[arg(long)]
    pub insecure: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub async fn pull(client: &Client, args: PullArgs) -> anyhow::Result<()> {
    let reference = Reference::parse(&args.reference)?;
    let (username, password) = match (&args.user, args.password_stdin) {
        (Some(user), true) => {
            let mut password = String::new();
            std::io::stdin().read_to_string(&mut password).context("reading the password from stdin")?;
            let password = password.trim_end_matches(['\n', '\r']).to_string();
            if password.is_empty() {
                bail!("--password-stdin: stdin held no password");
            }
            (Some(user.clone()), Some(password))
        }
        _ => match dockercfg::default_path() {
            Some(path) => match dockercfg::credentials_for(&path, &reference.registry).map_err(anyhow::Error::msg)? {
                Some(c) => (Some(c.username), Some(c.password)),
                None => (None, None),
            },
            None => (None, None),
        },
    };
    let req = PullRequest {
        reference: args.reference.clone(),
        name: args.name.clone(),
        username,
        password,
        insecure: args.insecure,
    };
    let resp = client.send(client.request(Method::POST, "/v1/pulls").json(&req)).await?;
    let mut view = Progress::new(!args.json && std::io::stderr().is_terminal(), !args.json);
    let mut stream = resp.bytes_stream();
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.next().await {
        pending.extend_from_slice(&chunk.context("the pull's progress stream broke")?);
        while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            match serde_json::from_slice::<PullUpdate>(&line).context("decoding a pull update")? {
                PullUpdate::Report(report) => {
                    view.finish();
                    if args.json {
                        return print_json(&*report);
                    }
                    print_report(&report);
                    return Ok(());
                }
                PullUpdate::Error(e) => {
                    view.finish();
                    bail!("{e}");
                }
                update => view.show(&update),
            }
        }
    }
    view.finish();
    bail!("the Control node stopped answering before the pull ended; herd image ls shows whether it finished")
}

/// How progress is shown: a bar on a terminal, lines on stderr otherwise, nothing for `--json`.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    lines: bool,
    /// Bytes received per layer being fetched, for the bar's total position.
    received: Vec<(String, u64)>,
    /// Layers fetched and stored so far.
    stored: usize,
}

impl Progress {
    fn new(terminal: bool, lines: bool) -> Progress {
        let bar = terminal.then(|| {
            let b = indicatif::ProgressBar::new(0);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            b.enable_steady_tick(std::time::Duration::from_millis(100));
            b
        });
        Progress { bar, lines: lines && !terminal, received: Vec::new(), stored: 0 }
    }

    fn say(&self, text: String) {
        // References, digests and platforms are what the registry said.
        let text = crate::format::clean(&text).into_owned();
        match &self.bar {
            Some(b) => b.println(text),
            None if self.lines => eprintln!("{text}"),
            None => {}
        }
    }

    fn show(&mut self, update: &PullUpdate) {
        match update {
            PullUpdate::Resolved { reference, manifest_digest, platform, layers } => {
                let missing: Vec<_> = layers.iter().filter(|l| !l.present).collect();
                let total: u64 = missing.iter().map(|l| l.size).sum();
                self.received = missing.iter().map(|l| (l.digest.clone(), 0)).collect();
                self.say(format!(
                    "{reference}: {manifest_digest} ({platform}), {} layer{}, {} to fetch ({})",
                    layers.len(),
                    if layers.len() == 1 { "" } else { "s" },
                    missing.len(),
                    B(total)
                ));
                for l in layers.iter().filter(|l| l.present) {
                    self.say(format!("  {} already present ({})", short(&l.digest), B(l.size)));
                }
                if let Some(b) = &self.bar {
                    b.set_length(total);
                    b.set_message(format!("0/{} layers", missing.len()));
                }
            }
            PullUpdate::Progress { digest, bytes, .. } => {
                if let Some(entry) = self.received.iter_mut().find(|(d, _)| d == digest) {
                    entry.1 = *bytes;
                }
                if let Some(b) = &self.bar {
                    b.set_position(self.received.iter().map(|(_, n)| n).sum());
                }
            }
            PullUpdate::Stored { digest, size } => {
                if let Some(entry) = self.received.iter_mut().find(|(d, _)| d == digest) {
                    entry.1 = *size;
                }
                self.stored += 1;
                self.say(format!("  {} fetched and verified ({})", short(digest), B(*size)));
                if let Some(b) = &self.bar {
                    b.set_position(self.received.iter().map(|(_, n)| n).sum());
                    b.set_message(format!("{}/{} layers", self.stored, self.received.len()));
                }
            }
            PullUpdate::Report(_) | PullUpdate::Error(_) => {}
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

fn print_report(r: &PullReport) {
    let origin = r.image.registry.as_ref();
    let line = format!(
        "pulled {} from {} ({})",
        r.image.name,
        origin.map_or("?", |o| o.reference.as_str()),
        origin.map_or("?", |o| o.manifest_digest.as_str())
    );
    println!("{}", crate::format::clean(&line));
    println!(
        "  {} layer{}: {} fetched ({}), {} already present; {:.2} s",
        r.image.layers.len(),
        if r.image.layers.len() == 1 { "" } else { "s" },
        r.layers_fetched,
        B(r.bytes_fetched),
        r.layers_present,
        r.took_ms as f64 / 1000.0
    );
}
