//! Input past what the cluster can carry or the kernel takes is refused with the bound, and
//! what users type is printed safely: a 10 MB environment answers HTTP 413 naming the broker's
//! limit (not a 500), a pids limit beyond Linux's is refused while -1 means none (and the
//! cgroup agrees with what herd shows), and labels and commands holding terminal escape
//! sequences are printed escaped by `herd ps`, `herd inspect` and `herd events`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::Cluster;
use herd_proto::api::RunRequest;

const T: Duration = Duration::from_secs(30);

/// POSTs `body` to the cluster's API at `path`; returns the status and the body.
fn post_json(cluster: &Cluster, path: &str, body: &impl serde::Serialize) -> (u16, String) {
    let cfg = herd_cli::config::CliConfig::load(&cluster.config).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let resp = herd_cli::client::http_client(&cfg)
            .unwrap()
            .post(format!("{}{path}", cfg.api))
            .bearer_auth(&cfg.token)
            .json(body)
            .send()
            .await
            .expect("the API answers");
        (resp.status().as_u16(), resp.text().await.unwrap())
    })
}

fn run_request(name: &str, env: Vec<String>, pids: Option<u64>) -> RunRequest {
    RunRequest {
        name: Some(name.into()),
        image: "busybox".into(),
        node: None,
        limits: herd_proto::state::Limits { pids, ..Default::default() },
        env,
        labels: Default::default(),
        command: vec!["sleep".into(), "600".into()],
        constraints: vec![],
        affinities: vec![],
        strategy: None,
        ports: vec![],
        network: None,
        volumes: vec![],
        ..Default::default()
    }
}

/// `pids.max` of the cgroup container `id` runs in on node n1, as the kernel has it.
fn pids_max(cluster: &Cluster, id: &str) -> String {
    let run_dir = cluster.node_layout("n1").run_dir;
    let out = Command::new("runc").arg("--root").arg(run_dir.join("runc")).args(["state", id]).output().unwrap();
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).expect("runc state of the container");
    let pid = state["pid"].as_u64().expect("a running container has a pid");
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let file = match cgroups.lines().find_map(|l| l.split_once(":pids:").map(|(_, p)| p.to_string())) {
        Some(p) => format!("/sys/fs/cgroup/pids{p}/pids.max"),
        None => {
            let p = cgroups.lines().find_map(|l| l.strip_prefix("0::")).expect("a cgroup v2 line");
            format!("/sys/fs/cgroup{p}/pids.max")
        }
    };
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("reading {file}: {e}")).trim().to_string()
}

/// The control bytes (other than newline) in `text`.
fn raw_control_bytes(text: &str) -> Vec<u8> {
    text.bytes().filter(|b| (*b < 0x20 && *b != b'\n') || *b == 0x7f).collect()
}

#[test]
fn oversized_requests_bad_limits_and_escape_sequences() {
    let cluster = Cluster::up(49, 1);
    cluster.import_busybox();

    // A 10 MB environment: 413 with the size and the broker's limit, and nothing created.
    let big = run_request("big-env", vec![format!("BIG={}", "x".repeat(10 << 20))], None);
    let (status, body) = post_json(&cluster, "/v1/containers", &big);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("is 10MiB") && body.contains("the limit is 8MiB") && body.contains("max_payload"), "{body}");
    assert!(!cluster.ok(&["ps", "-a", "-q"]).contains("big-env"));

    // A pids limit past what Linux takes is refused, by the CLI and by the API.
    let err = cluster.fails(&["run", "--name", "p1", "--pids-limit", "18446744073709551615", "busybox", "--", "true"]);
    assert!(err.contains("4194304"), "{err}");
    let (status, body) = post_json(&cluster, "/v1/containers", &run_request("p2", vec![], Some(u64::MAX)));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("4194304") && body.contains("PID_MAX_LIMIT"), "{body}");
    assert_eq!(cluster.ok(&["ps", "-a", "-q"]), "");
    // -1 means no limit, as in Docker; the largest limit is taken as it is. What herd shows is
    // what the cgroup has.
    cluster.ok(&["run", "--name", "unlimited", "--pids-limit", "-1", "busybox", "--", "sleep", "600"]);
    cluster.ok(&["run", "--name", "largest", "--pids-limit", "4194304", "busybox", "--", "sleep", "600"]);
    let unlimited = cluster.wait_state("unlimited", "running", T);
    let largest = cluster.wait_state("largest", "running", T);
    assert_eq!(unlimited.limits.pids, None);
    assert_eq!(pids_max(&cluster, &unlimited.id), "max");
    assert!(cluster.ok(&["inspect", "unlimited"]).contains("PIDs limit:   -"));
    assert_eq!(largest.limits.pids, Some(4_194_304));
    assert_eq!(pids_max(&cluster, &largest.id), "4194304");

    // Escape sequences and carriage returns in a label and in the command are printed escaped.
    cluster.ok(&[
        "run",
        "--name",
        "evil",
        "--label",
        "note=\x1b[31mred\x1b[0m\rover",
        "busybox",
        "--",
        "sh",
        "-c",
        "echo \x1b[2J; sleep 600",
    ]);
    cluster.wait_state("evil", "running", T);
    for args in [&["ps"][..], &["ps", "-a"], &["inspect", "evil"], &["events"], &["nodes"]] {
        let out = cluster.ok(args);
        assert_eq!(raw_control_bytes(&out), Vec::<u8>::new(), "herd {} printed control bytes: {out:?}", args.join(" "));
    }
    let inspect = cluster.ok(&["inspect", "evil"]);
    assert!(inspect.contains("note=\\u{1b}[31mred\\u{1b}[0m\\rover"), "{inspect}");
    assert!(inspect.contains("echo \\u{1b}[2J; sleep 600"), "{inspect}");
    let ps = cluster.ok(&["ps"]);
    assert!(ps.contains("\"sh -c echo \\u{1b}[2J; s…\""), "{ps}");
    // JSON stays JSON: the strings come back as they were given.
    let c = cluster.container("evil");
    assert_eq!(c.labels["note"], "\x1b[31mred\x1b[0m\rover");
}
