//! A hostile API user against a real cluster: a checkpoint edited outside the cluster cannot
//! grant its processes anything (the Control node's signature, then the node's check of the
//! CRIU images), and an upload cut short or longer than its manifest leaves nothing behind in
//! the broker. See docs/design/threat-model.md.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use common::{COUNTER, Cluster, wait_for};
use sha2::{Digest, Sha256};

const T: Duration = Duration::from_secs(60);

/// CRIU's protobuf varint of Docker's capability set, and of (almost) every capability: the
/// same length, so the edit keeps every entry's size.
fn varint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Gives every thread in checkpoint directory `dir` every capability, then makes its manifest
/// agree with the edited files (sizes and digests), as the hostile user did. Returns how many
/// capability sets were changed.
fn grant_every_capability(dir: &Path) -> usize {
    let (docker, all) = (varint(0xA804_25FB), varint(0xFEFF_FFFF));
    assert_eq!(docker.len(), all.len());
    let mut changed = 0;
    for e in std::fs::read_dir(dir.join("criu")).unwrap() {
        let path = e.unwrap().path();
        if !path.file_name().unwrap().to_str().unwrap().starts_with("core-") {
            continue;
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let mut at = 0;
        while let Some(i) = bytes[at..].windows(docker.len()).position(|w| w == docker) {
            bytes[at + i..at + i + all.len()].copy_from_slice(&all);
            at += i + all.len();
            changed += 1;
        }
        std::fs::write(&path, bytes).unwrap();
    }
    let manifest_path = dir.join("checkpoint.json");
    let mut manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    for f in manifest["files"].as_array_mut().unwrap() {
        let data = std::fs::read(dir.join(f["path"].as_str().unwrap())).unwrap();
        f["size"] = data.len().into();
        f["digest"] = format!("sha256:{}", hex::encode(Sha256::digest(&data))).into();
    }
    std::fs::write(&manifest_path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
    changed
}

/// The bounding capability set of the process `pid`, from `/proc`.
fn cap_bnd(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("CapBnd:")).unwrap().trim().to_string()
}

#[test]
fn a_checkpoint_edited_to_grant_capabilities_is_refused() {
    let cluster = Cluster::up(50, 2);
    cluster.import_busybox();
    cluster.ok(&["run", "--name", "counter", "busybox", "--", "sh", "-c", COUNTER]);
    let seen = cluster.counts_on("counter", 0, T);
    let genuine = cluster.dir.path().join("genuine");
    cluster.ok(&["checkpoint", "--image-dir", genuine.to_str().unwrap(), "counter"]);
    assert!(genuine.join("checkpoint.sig").exists(), "an exported checkpoint carries its signature");

    // Every capability in the saved credentials, the manifest made to agree: refused by the
    // Control node, as the manifest no longer matches its signature.
    let edited = cluster.dir.path().join("edited");
    copy_dir(&genuine, &edited);
    assert!(grant_every_capability(&edited) >= 3, "the edit found the saved capability sets");
    let err = cluster.fails(&["restore", "--image-dir", edited.to_str().unwrap(), "--node", "n2", "counter"]);
    assert!(err.contains("does not match its signature"), "{err}");

    // Without a signature at all.
    let unsigned = cluster.dir.path().join("unsigned");
    copy_dir(&edited, &unsigned);
    std::fs::remove_file(unsigned.join("checkpoint.sig")).unwrap();
    let err = cluster.fails(&["restore", "--image-dir", unsigned.to_str().unwrap(), "counter"]);
    assert!(err.contains("not signed by this cluster"), "{err}");

    // Signed with the cluster's own key: the node's check of the images refuses it.
    cluster.sign_checkpoint(&edited);
    let err = cluster.fails(&["restore", "--image-dir", edited.to_str().unwrap(), "--node", "n2", "counter"]);
    assert!(err.contains("capabilities 0x56fbda04 beyond the container's"), "{err}");
    assert_eq!(cluster.state("counter"), "checkpointed", "a refused restore changes nothing");
    assert_eq!(cluster.container("counter").node, "n1");

    // The genuine checkpoint restores, with Docker's capabilities and no more.
    cluster.ok(&["restore", "--image-dir", genuine.to_str().unwrap(), "--node", "n2", "counter"]);
    let c = cluster.container("counter");
    assert_eq!(c.node, "n2");
    assert_eq!(cap_bnd(c.pid.expect("a running container has a pid")), "00000000a80425fb");
    cluster.counts_on("counter", seen, T);
}

/// The number of chunk messages in the broker's checkpoint store (what partial objects
/// would leave behind).
fn checkpoint_chunks(cluster: &Cluster) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let broker = herd_broker::Broker::connect(&cluster.broker_config()).await.unwrap();
        broker.checkpoint_store().await.unwrap().chunk_messages().await.unwrap()
    })
}

/// Sends `head` then `body` as a checkpoint upload for `name` with plain HTTP/1.1 (chunked),
/// stopping after `send` bytes of `body` when `abort`; returns the status line, if any came.
fn upload(cluster: &Cluster, name: &str, head: &[u8], body: &[u8], send: usize, abort: bool) -> Option<String> {
    let cfg = herd_cli::CliConfig::load(&cluster.config).unwrap();
    let token = cfg.token.clone();
    let (mut s, addr) = common::api_connect(&cfg);
    write!(
        s,
        "POST /v1/containers/{name}/restore/archive HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    // The Control node may answer (and close) before the body ends: stop sending then.
    let chunk = |s: &mut Box<dyn common::ReadWrite>, data: &[u8]| -> std::io::Result<()> {
        write!(s, "{:x}\r\n", data.len())?;
        s.write_all(data)?;
        s.write_all(b"\r\n")
    };
    let mut sent = chunk(&mut s, head);
    for part in body[..send].chunks(256 << 10) {
        sent = sent.and_then(|_| chunk(&mut s, part));
    }
    if abort {
        drop(s);
        return None;
    }
    let _ = sent.and_then(|_| s.write_all(b"0\r\n\r\n"));
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.lines().next().map(str::to_string)
}

#[test]
fn uploads_cut_short_or_too_long_leave_nothing_in_the_broker() {
    let cluster = Cluster::up(51, 1);
    cluster.import_busybox();
    // A file in its writable layer, so that the upload spans many chunks of the store.
    let fill = "dd if=/dev/urandom of=/big bs=1M count=6 && echo filled; sleep 1000";
    cluster.ok(&["run", "--name", "big", "busybox", "--", "sh", "-c", fill]);
    cluster.wait_log("big", "filled", T);
    let dir = cluster.dir.path().join("ck");
    cluster.ok(&["checkpoint", "--image-dir", dir.to_str().unwrap(), "big"]);
    let mut archive = Vec::new();
    herd_image::pack_checkpoint(&dir, &mut archive, true).unwrap();
    assert!(archive.len() > 4 << 20, "the archive is {} bytes", archive.len());
    let before = checkpoint_chunks(&cluster);

    // Cut short half-way, the client gone: the chunks written so far are purged.
    upload(&cluster, "big", &archive[..4096], &archive[4096..], archive.len() / 2, true);
    wait_for("the partial upload's chunks to be purged", T, || (checkpoint_chunks(&cluster) == before).then_some(()));

    // Longer than its manifest says: refused, nothing kept.
    let mut longer = archive[..archive.len() - 1024].to_vec();
    longer.extend(vec![0x55u8; 3 << 20]);
    let status = upload(&cluster, "big", &longer[..4096], &longer[4096..], longer.len() - 4096, false).unwrap();
    assert!(status.contains(" 400 "), "{status}");
    wait_for("the refused upload's chunks to be purged", T, || (checkpoint_chunks(&cluster) == before).then_some(()));

    // The whole, genuine upload restores.
    let status = upload(&cluster, "big", &archive[..4096], &archive[4096..], archive.len() - 4096, false).unwrap();
    assert!(status.contains(" 200 "), "{status}");
    cluster.wait_state("big", "running", T);
    wait_for("the upload's object to be deleted", T, || (checkpoint_chunks(&cluster) == before).then_some(()));
}

/// Tries, as user `nobody`, to read `path` and to run it; returns what went wrong, `None` when
/// both were possible.
fn nobody_reaches(path: &Path) -> Vec<String> {
    use std::os::unix::process::CommandExt;
    let mut reached = Vec::new();
    let read = std::process::Command::new("/bin/busybox")
        .args(["cat"])
        .arg(path)
        .uid(65534)
        .gid(65534)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    if read.success() {
        reached.push(format!("nobody read {}", path.display()));
    }
    if let Ok(out) = std::process::Command::new(path).args(["id", "-u"]).uid(65534).gid(65534).output() {
        reached.push(format!("nobody ran {}: {}", path.display(), String::from_utf8_lossy(&out.stdout).trim()));
    }
    reached
}

#[test]
fn no_other_user_of_a_node_reaches_its_setuid_files_or_secrets() {
    use std::os::unix::fs::PermissionsExt;
    let cluster = Cluster::up(52, 1);
    // An image whose layer holds a setuid-root busybox.
    let rootfs = cluster.dir.path().join("suid-rootfs");
    herd_up::busybox_rootfs(&rootfs).unwrap();
    std::fs::copy(rootfs.join("bin/busybox"), rootfs.join("bin/suid")).unwrap();
    std::fs::set_permissions(rootfs.join("bin/suid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    cluster.ok(&["image", "import", "suid", rootfs.to_str().unwrap()]);
    // A container that makes one more in its writable layer, with a password in its
    // environment (and so in its memory).
    let script = "cp /bin/busybox /made-suid && chmod 4755 /made-suid && echo ready; sleep 1000";
    cluster.ok(&["run", "--name", "secret", "-e", "PASSWORD=hunter2-secret", "suid", "--", "sh", "-c", script]);
    cluster.wait_log("secret", "ready", T);
    cluster.ok(&["checkpoint", "--leave-running", "secret"]);
    let id = cluster.container("secret").id;

    let node = cluster.data_dir.join("nodes/n1");
    let layer_suid = std::fs::read_dir(node.join("layers"))
        .unwrap()
        .map(|e| e.unwrap().path().join("bin/suid"))
        .find(|p| p.exists())
        .expect("the layer with the setuid file is unpacked on n1");
    let container = node.join("containers").join(&id);
    let ck = node.join("checkpoints").join(&id).join("ck1");
    let pages = std::fs::read_dir(ck.join("criu"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with("pages-"))
        .expect("the checkpoint has page images");
    let run = cluster.run_dir();
    let mut targets = vec![
        layer_suid,
        container.join("upper/made-suid"),
        container.join("spec.json"),
        container.join("bundle/config.json"),
        ck.join("checkpoint.json"),
        pages,
        run.join("secrets/api-token"),
        run.join("logs/control.log"),
        cluster.data_dir.join("control/checkpoint-signing.key"),
    ];
    // The broker's store: image layers and checkpoints in transit.
    let mut pending = vec![cluster.data_dir.join("broker")];
    while let Some(dir) = pending.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                pending.push(e.path());
            } else if e.file_name().to_str().unwrap().ends_with(".blk") {
                targets.push(e.path());
            }
        }
    }
    let mut reached = Vec::new();
    for t in &targets {
        assert!(t.exists(), "{} should exist for this test to mean anything", t.display());
        reached.extend(nobody_reaches(t));
    }
    assert!(reached.is_empty(), "another user of the node reached what is Herd's:\n{}", reached.join("\n"));
    // The password was really there for nobody to read.
    assert!(std::fs::read_to_string(container.join("spec.json")).unwrap().contains("hunter2-secret"));
}

/// A process killed when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn containers_reach_neither_the_broker_nor_their_nodes_services() {
    let cluster = Cluster::up(53, 2);
    cluster.import_busybox();
    let layout = cluster.up_state().layout;
    let broker = layout.broker_url().trim_start_matches("nats://").to_string();
    let (n1, n2) = (cluster.node_address("n1"), cluster.node_address("n2"));
    // A service of node n2 (standing for its migration listeners), reachable from the host.
    let netns = format!("herd-{}-n2", cluster.name);
    let service = Killed(
        std::process::Command::new("ip")
            .args(["netns", "exec", &netns, "/bin/busybox", "nc", "-ll", "-p", "9999", "-e", "/bin/true"])
            .spawn()
            .unwrap(),
    );
    wait_for("n2's test service to listen", T, || {
        std::net::TcpStream::connect_timeout(&format!("{n2}:9999").parse().unwrap(), Duration::from_secs(1)).ok()
    });
    assert!(std::net::TcpStream::connect(&broker).is_ok(), "the host reaches the broker");
    // A web server published on n2, which containers may use.
    cluster.ok(&[
        "run",
        "--name",
        "web",
        "--constraint",
        "node.name==n2",
        "-p",
        "8080:80",
        "busybox",
        "--",
        "sh",
        "-c",
        "echo hello > /index.html; httpd -f -p 80 -h /",
    ]);
    cluster.wait_state("web", "running", T);

    let probe = format!(
        "for t in {broker} {n2}:9999 {n1}:9999; do if nc -w 2 ${{t%:*}} ${{t#*:}} </dev/null; then echo \"open $t\"; \
         else echo \"closed $t\"; fi; done; echo \"web: $(wget -q -O- http://{n2}:8080/)\"; echo probed; sleep 1000"
    );
    for node in ["n1", "n2"] {
        let name = format!("probe-{node}");
        cluster.ok(&[
            "run",
            "--name",
            &name,
            "--constraint",
            &format!("node.name=={node}"),
            "busybox",
            "--",
            "sh",
            "-c",
            &probe,
        ]);
        let log = cluster.wait_log(&name, "probed", T);
        assert!(log.contains(&format!("closed {broker}")), "a container on {node} reached the broker: {log}");
        assert!(log.contains(&format!("closed {n2}:9999")), "a container on {node} reached n2's service: {log}");
        assert!(log.contains("web: hello"), "a container on {node} no longer reaches a published port: {log}");
    }
    drop(service);
}
