//! The web dashboard end to end, in a real browser: headless Chromium (Debian's `chromium`),
//! driven over the DevTools protocol, opens `/dashboard#token=...` on a live cluster with a
//! CPU-burning container, and the test reads what the page drew: the containers table, node
//! and container charts with data points that keep coming, and the marker of a migration
//! made while the page watches. Also: the page needs no token, the API still does.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Cluster;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);

/// `GET path` on the API of `cfg`; returns the status code, the headers (lower-cased) and
/// the body.
fn http_get(cfg: &herd_cli::CliConfig, path: &str, token: Option<&str>) -> (u16, String, String) {
    let (mut s, addr) = common::api_connect(cfg);
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or_else(|| panic!("not an HTTP answer: {out}"));
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, head.to_ascii_lowercase(), body.to_string())
}

#[test]
fn dashboard_page_needs_no_token_but_the_api_does() {
    // Each test has a cluster index of its own: nextest runs tests as separate processes, in
    // parallel, and `Cluster::up` takes down whatever cluster has its index.
    let cluster = Cluster::up(24, 1);
    let cfg = herd_cli::CliConfig::load(&cluster.config).unwrap();
    let get = |path: &str, token: Option<&str>| http_get(&cfg, path, token);

    let (code, head, body) = get("/dashboard", None);
    assert_eq!(code, 200, "{head}{body}");
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(body.contains("/dashboard/dashboard.js") && !body.contains(&cfg.token), "{body}");
    let (code, head, body) = get("/dashboard/dashboard.js", None);
    assert_eq!(code, 200);
    assert!(head.contains("content-type: text/javascript"), "{head}");
    assert!(body.contains("Authorization: `Bearer"), "the page sends the token on API calls");
    let (code, head, _) = get("/dashboard/dashboard.css", None);
    assert_eq!(code, 200);
    assert!(head.contains("content-type: text/css"), "{head}");
    let (code, head, _) = get("/", None);
    assert_eq!(code, 303);
    assert!(head.contains("location: /dashboard\r\n"), "{head}");

    // Everything else still needs the token: the API, and paths the dashboard does not serve.
    for path in ["/v1/nodes", "/v1/stats", "/v1/containers?all=true", "/metrics", "/dashboard/x.js"] {
        assert_eq!(get(path, None).0, 401, "{path} without a token");
        assert_eq!(get(path, Some("not-the-token-at-all")).0, 401, "{path} with a wrong token");
    }
    let (code, _, body) = get("/v1/nodes", Some(&cfg.token));
    assert_eq!(code, 200, "{body}");
    assert_eq!(get("/dashboard/x.js", Some(&cfg.token)).0, 404);

    // herd dashboard prints the link with the token in the fragment.
    assert_eq!(cluster.ok(&["dashboard"]).trim(), format!("{}/dashboard#token={}", cfg.api, cfg.token));
}

#[test]
fn dashboard_draws_live_charts_and_a_migration_in_headless_chromium() {
    let cluster = Cluster::up(21, 2);
    let mut browser = Browser::launch(&cluster);
    cluster.import_busybox();
    cluster.run_cpu_burner("burn", "n1", "0.5");
    let cfg = herd_cli::CliConfig::load(&cluster.config).unwrap();
    let link = cluster.ok(&["dashboard"]).trim().to_string();

    // A wrong token: the page asks for the right one, and the address bar loses the wrong one.
    browser.navigate(&format!("{}/dashboard#token=wrong", cfg.api));
    let prompt = browser.wait(
        "the token prompt",
        "(() => { const a = document.getElementById('auth'); return a && !a.hidden && a.innerText })()",
    );
    assert!(prompt.as_str().unwrap().contains("herd dashboard"), "{prompt}");
    assert_eq!(browser.eval("location.href"), json!(format!("{}/dashboard", cfg.api)));

    // herd dashboard's link: the token moves into session storage, out of the address bar.
    browser.navigate(&link);
    let row = browser.wait(
        "burn in the containers table",
        r#"(() => { const r = document.querySelector('#container-table tr[data-name="burn"]');
                    return r && r.innerText.includes('running') && r.innerText })()"#,
    );
    let row = row.as_str().unwrap();
    assert!(row.contains("n1") && row.contains("busybox"), "{row}");
    assert_eq!(browser.eval("location.href"), json!(format!("{}/dashboard", cfg.api)));
    assert_eq!(browser.eval("sessionStorage.getItem('herd.token')"), json!(cfg.token));
    let cards = browser.eval("document.getElementById('node-cards').innerText");
    assert!(cards.as_str().unwrap().contains("n2"), "{cards}");

    // Node charts: CPU, memory and network of each node, drawn from samples.
    for node in ["n1", "n2"] {
        for chart in ["cpu", "memory", "net"] {
            browser.wait_chart(&format!("node:{node}:{chart}"), "data-points >= 5 and a line", |c| {
                c.points >= 5 && c.lines > 0
            });
        }
    }

    // The container's charts, once its row is clicked: the burner's CPU is drawn, busy.
    browser.eval(r#"document.querySelector('#container-table tr[data-name="burn"]').click()"#);
    let cpu = browser.wait_chart("container:cpu", "burn's busy CPU", |c| {
        c.container == "burn" && c.points >= 3 && c.lines > 0 && c.last > 0.2
    });
    browser.wait_chart("container:memory", "burn's memory", |c| c.container == "burn" && c.points >= 3);
    let node_cpu = browser.chart("node:n1:cpu");

    // Live: newer points keep arriving without a reload.
    browser.wait_chart("container:cpu", "newer points of burn", |c| c.last_ts >= cpu.last_ts + 2000);
    browser.wait_chart("node:n1:cpu", "newer points of n1", |c| c.last_ts >= node_cpu.last_ts + 2000);

    // A migration while the page watches: a marker on the container's chart, and on the
    // charts of both nodes (from the event stream); the samples go on from n2.
    cluster.ok(&["migrate", "burn", "--to", "n2"]);
    let cpu = browser.wait_chart("container:cpu", "the migration marker", |c| {
        c.markers.iter().any(|m| m.kind == "migration" && m.title.contains("to n2"))
    });
    let marker = cpu.markers.iter().find(|m| m.kind == "migration").unwrap();
    assert!(marker.label.contains("n2"), "{marker:?}");
    browser.wait_chart("container:cpu", "samples of burn after the migration", |c| {
        c.last_ts > marker.ts + 1500 && c.last > 0.2
    });
    for node in ["n1", "n2"] {
        browser.wait_chart(&format!("node:{node}:cpu"), "the migration marker", |c| {
            c.markers.iter().any(|m| m.kind == "migration" && m.title.contains("burn"))
        });
    }
    browser.wait(
        "burn on n2 in the table",
        r#"(() => { const r = document.querySelector('#container-table tr[data-name="burn"]');
                    return r && r.cells[1].innerText === 'n2' })()"#,
    );
    let info = browser.eval("document.getElementById('detail-info').innerText");
    assert!(info.as_str().unwrap().contains("ran on n1 from"), "{info}");
    let events = browser.eval("document.getElementById('event-list').innerText");
    assert!(events.as_str().unwrap().contains("migration done"), "{events}");

    assert_eq!(browser.eval("document.getElementById('status').dataset.state"), json!("ok"));
    assert_eq!(browser.exceptions, Vec::<String>::new(), "the page threw");
}

/// What a chart figure says it drew (its `data-*` attributes and SVG).
#[derive(Debug)]
struct Chart {
    container: String,
    points: u64,
    last_ts: u64,
    last: f64,
    /// `path.line` elements.
    lines: u64,
    markers: Vec<Marker>,
}

#[derive(Debug)]
struct Marker {
    kind: String,
    ts: u64,
    label: String,
    title: String,
}

const CHART_JS: &str = r#"((key) => {
    const f = document.querySelector(`figure.chart[data-chart="${key}"]`);
    if (!f || !f.dataset.points) return null;
    return {
        container: f.dataset.container || '',
        points: Number(f.dataset.points),
        lastTs: Number(f.dataset.lastTs),
        last: Number(f.dataset.last || 0),
        lines: f.querySelectorAll('svg path.line').length,
        markers: [...f.querySelectorAll('svg g.marker')].map((g) => ({
            kind: g.dataset.kind, ts: Number(g.dataset.ts),
            label: g.querySelector('text').textContent, title: g.querySelector('title').textContent,
        })),
    };
})"#;

fn chart_from(v: &Value) -> Option<Chart> {
    let n = |k: &str| v[k].as_f64().unwrap_or(0.0);
    let s = |v: &Value, k: &str| v[k].as_str().unwrap_or("").to_string();
    v.is_object().then(|| Chart {
        container: s(v, "container"),
        points: n("points") as u64,
        last_ts: n("lastTs") as u64,
        last: n("last"),
        lines: n("lines") as u64,
        markers: v["markers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| Marker {
                kind: s(m, "kind"),
                ts: m["ts"].as_f64().unwrap_or(0.0) as u64,
                label: s(m, "label"),
                title: s(m, "title"),
            })
            .collect(),
    })
}

/// Headless Chromium, driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`:
/// commands go to its fd 3, answers and events come from its fd 4, each a JSON text ended by a
/// NUL byte), with one page attached. On drop, its whole process group is killed and its
/// profile directory removed, pass or fail.
struct Browser {
    child: Child,
    commands: std::fs::File,
    messages: mpsc::Receiver<Value>,
    next_id: u64,
    session: String,
    /// Uncaught exceptions the page reported.
    exceptions: Vec<String>,
    log: PathBuf,
    /// The profile directory (`--user-data-dir`), removed on drop after the browser is gone.
    _profile: tempfile::TempDir,
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}

impl Browser {
    /// Chromium trusting the cluster's API certificate, as a browser that imported the
    /// cluster CA would (the flag pins the API certificate's key).
    fn launch(cluster: &Cluster) -> Browser {
        use base64::Engine;
        use sha2::Digest;
        let spki = herd_tls::CertInfo::read(&cluster.tls_files("control").cert).unwrap().spki_der;
        let pin = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&spki));
        let exe = find_in_path("chromium").unwrap_or_else(|| {
            panic!("chromium is missing: apt-get install -y chromium (scripts/setup.sh installs it for the tests)")
        });
        let profile = tempfile::tempdir().unwrap();
        let log = profile.path().join("chromium.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
        let (to_browser, commands) = nix::unistd::pipe2(cloexec).unwrap();
        let (messages_out, from_browser) = nix::unistd::pipe2(cloexec).unwrap();
        let mut cmd = Command::new(&exe);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--remote-debugging-pipe",
            "--no-first-run",
            "--no-default-browser-check",
            "--no-proxy-server",
            "--disable-extensions",
            "--disable-sync",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-background-timer-throttling",
            "--disable-renderer-backgrounding",
            "--window-size=1280,1400",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--ignore-certificate-errors-spki-list={pin}"))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .process_group(0);
        let (read_fd, write_fd) = (to_browser.as_raw_fd(), from_browser.as_raw_fd());
        // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec. Copies
        // above 10 first, so moving one to 3 or 4 cannot overwrite the other.
        unsafe {
            cmd.pre_exec(move || {
                let r = libc::fcntl(read_fd, libc::F_DUPFD_CLOEXEC, 10);
                let w = libc::fcntl(write_fd, libc::F_DUPFD_CLOEXEC, 10);
                if r < 0 || w < 0 || libc::dup2(r, 3) < 0 || libc::dup2(w, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {}: {e}", exe.display()));
        // Only the browser keeps its ends: a dead browser then shows as end of file.
        drop((to_browser, from_browser));
        let (tx, messages) = mpsc::channel();
        std::thread::spawn(move || {
            for text in BufReader::new(std::fs::File::from(messages_out)).split(0).map_while(Result::ok) {
                let Ok(v) = serde_json::from_slice::<Value>(&text) else { break };
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let mut browser = Browser {
            child,
            commands: std::fs::File::from(commands),
            messages,
            next_id: 0,
            session: String::new(),
            exceptions: Vec::new(),
            log,
            _profile: profile,
        };
        let target = browser.call(None, "Target.createTarget", json!({ "url": "about:blank" }));
        let attached =
            browser.call(None, "Target.attachToTarget", json!({ "targetId": target["targetId"], "flatten": true }));
        browser.session = attached["sessionId"].as_str().expect("a session id").to_string();
        let session = browser.session.clone();
        browser.call(Some(&session), "Runtime.enable", json!({}));
        browser.call(Some(&session), "Page.enable", json!({}));
        browser
    }

    /// The last lines Chromium printed, to explain a failure.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!("\n---- chromium's output (last lines) ----\n{}", lines[lines.len().saturating_sub(30)..].join("\n"))
    }

    /// Sends a DevTools command and waits for its answer: `Err` with the protocol's error.
    fn try_call(&mut self, session: Option<&str>, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        if let Err(e) = self.commands.write_all(&bytes) {
            panic!("sending {method} to chromium: {e}{}", self.log_tail());
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let m = match self.messages.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(m) => m,
                Err(e) => panic!("no answer from chromium to {method} ({e}){}", self.log_tail()),
            };
            if m["method"] == "Runtime.exceptionThrown" {
                self.exceptions.push(m["params"]["exceptionDetails"].to_string());
            }
            if m["id"] == id {
                return match m.get("error") {
                    Some(e) => Err(e.clone()),
                    None => Ok(m["result"].clone()),
                };
            }
        }
    }

    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.try_call(session, method, params).unwrap_or_else(|e| panic!("chromium refused {method}: {e}"))
    }

    fn navigate(&mut self, url: &str) {
        let session = self.session.clone();
        let r = self.call(Some(&session), "Page.navigate", json!({ "url": url }));
        assert!(r.get("errorText").is_none(), "navigating to {url}: {r}");
    }

    /// Evaluates `expression` in the page: its JSON value, or `Err` when it threw or the page
    /// was between documents.
    fn try_eval(&mut self, expression: &str) -> Result<Value, String> {
        let session = self.session.clone();
        let params = json!({ "expression": expression, "returnByValue": true });
        let r = self.try_call(Some(&session), "Runtime.evaluate", params).map_err(|e| e.to_string())?;
        match r.get("exceptionDetails") {
            Some(ex) => Err(ex.to_string()),
            None => Ok(r["result"]["value"].clone()),
        }
    }

    fn eval(&mut self, expression: &str) -> Value {
        self.try_eval(expression).unwrap_or_else(|e| panic!("{expression} failed in the page: {e}"))
    }

    /// Polls `expression` until it gives something other than null, undefined or false;
    /// panics after [`T`] with `what` and what the page shows.
    fn wait(&mut self, what: &str, expression: &str) -> Value {
        let deadline = Instant::now() + T;
        let mut last = Ok(Value::Null);
        while Instant::now() < deadline {
            last = self.try_eval(expression);
            if let Ok(v) = &last
                && !v.is_null()
                && *v != json!(false)
            {
                return v.clone();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let status = self.try_eval("document.getElementById('status')?.innerText");
        let page = self.try_eval("document.body?.innerText.slice(0, 3000)");
        panic!(
            "timed out after {T:?} waiting for {what}: last {last:?}; the page's status: {status:?}; \
             the page shows: {page:?}; exceptions: {:?}",
            self.exceptions
        )
    }

    fn chart(&mut self, key: &str) -> Chart {
        let v = self.eval(&format!("{CHART_JS}({key:?})"));
        chart_from(&v).unwrap_or_else(|| panic!("no chart {key}"))
    }

    /// Waits until chart `key` exists and `ok` holds for it; returns it.
    fn wait_chart(&mut self, key: &str, what: &str, ok: impl Fn(&Chart) -> bool) -> Chart {
        let expression = format!("{CHART_JS}({key:?})");
        let deadline = Instant::now() + T;
        let mut last = None;
        while Instant::now() < deadline {
            last = self.try_eval(&expression).ok().as_ref().and_then(chart_from);
            if let Some(c) = last.take_if(|c| ok(c)) {
                return c;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "timed out after {T:?} waiting for {what} on chart {key}: last {last:?}; exceptions: {:?}",
            self.exceptions
        )
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The browser and its helpers share the process group it leads.
        let group = Pid::from_raw(self.child.id() as i32);
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
        let deadline = Instant::now() + Duration::from_secs(5);
        while killpg(group, None).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // The profile directory is removed when the fields drop, after this.
    }
}
