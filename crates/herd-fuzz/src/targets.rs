//! The fuzz targets' bodies. Each takes any bytes; its first byte picks the entry point that
//! gets the rest (`mode`). Besides "no panic, no hang", some check a property Herd relies on
//! (an unpacked checkpoint verifies, a policy's spec parses back).

use std::collections::BTreeMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use axum::Json;
use herd_control::requests;
use herd_image::criu_image::{Allowed, Images, NamespaceKind};
use herd_image::signing::{self, SigningKey};
use herd_node::transfer::{Accepted, Budget, Listener, MAGIC, Ticket, VERSION};
use herd_proto::api::{CheckpointRequest, LabelRequest, MigrateRequest, RestoreRequest, RunRequest};
use herd_proto::checkpoint::{MANIFEST_FILE, SIGNATURE_FILE};
use herd_proto::policy::SetPolicyRequest;
use herd_proto::pull::PullRequest;
use herd_proto::state::{ImageConfig, ImageRecord, NodeSettings, Resources};
use herd_sched::{Candidate, Hosted};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Splits `data` into parts, each a little-endian `u16` length and that many bytes (the last
/// part takes what is left when its length runs past the end). [`crate::seeds::join_parts`]
/// builds such inputs.
pub fn split_parts(mut data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    while data.len() >= 2 {
        let len = u16::from_le_bytes([data[0], data[1]]) as usize;
        let body = &data[2..];
        let len = len.min(body.len());
        parts.push(&body[..len]);
        data = &body[len..];
    }
    parts
}

/// A fresh scratch directory, under `$HERD_FUZZ_TMP` when set (removed when dropped).
fn scratch() -> tempfile::TempDir {
    match std::env::var_os("HERD_FUZZ_TMP") {
        Some(base) => {
            fs::create_dir_all(&base).expect("creating $HERD_FUZZ_TMP");
            tempfile::tempdir_in(base).expect("a scratch directory")
        }
        None => tempfile::tempdir().expect("a scratch directory"),
    }
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, bytes).expect("writing a scratch file");
    path
}

/// The runtime of the async entry points: one thread, as a fuzzer runs one input at a time.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime"))
}

/// Runs an async body, failing (as a hang) when it takes longer than any input should.
fn block_on_bounded<F: std::future::Future>(what: &str, f: F) -> F::Output {
    runtime().block_on(async {
        match tokio::time::timeout(Duration::from_secs(20), f).await {
            Ok(out) => out,
            Err(_) => panic!("{what}: no answer within 20 s, a hang"),
        }
    })
}

// --- image archives ---------------------------------------------------------------------

/// What an image may unpack to under fuzzing: small, so that a decompression bomb is refused
/// (as the Control node and the nodes refuse one past their bounds) instead of filling the disk.
const FUZZ_LIMITS: herd_image::UnpackLimits = herd_image::UnpackLimits { layer: 64 << 20, image: 128 << 20 };

fn fuzz_bounds() -> herd_image::LayerBounds {
    herd_image::LayerBounds { max_size: FUZZ_LIMITS.layer, reserve: None }
}

/// Image archives: mode 0 imports the rest as an uploaded archive ([`herd_image::import_archive`])
/// and extracts every layer it finds ([`herd_image::extract_layer`]), as the Control node and
/// then a node do; mode 1 extracts the rest as a layer blob; mode 2 parses it as an image
/// configuration ([`herd_image::parse_image_config`], as a pull does).
pub fn image_archive(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 3 {
        0 => {
            let dir = scratch();
            let archive = write_file(dir.path(), "upload", rest);
            let work = dir.path().join("work");
            if let Ok(image) = herd_image::import_archive(&archive, &work, &FUZZ_LIMITS) {
                assert!(!image.layers.is_empty(), "an imported image has layers");
                for (i, layer) in image.layers.iter().enumerate() {
                    let dest = dir.path().join(format!("layer-{i}"));
                    fs::create_dir(&dest).expect("creating a layer directory");
                    let _ =
                        herd_image::extract_layer_within(&layer.path, layer.layer.compression, &dest, &fuzz_bounds());
                }
            }
        }
        1 => {
            let dir = scratch();
            let blob = write_file(dir.path(), "blob", rest);
            if let Ok(compression) = herd_image::layer_compression(rest) {
                let dest = dir.path().join("layer");
                fs::create_dir(&dest).expect("creating a layer directory");
                let _ = herd_image::extract_layer_within(&blob, compression, &dest, &fuzz_bounds());
            }
        }
        _ => {
            let _ = herd_image::parse_image_config(rest);
        }
    }
}

// --- registry documents -----------------------------------------------------------------

/// What a registry answers and a user types for a pull: mode 0 parses the rest as a manifest
/// or index (`Content-Type` picked by its first byte) and goes on as a pull does (platform
/// choice, media type checks); mode 1 an image reference; mode 2 a `WWW-Authenticate` header;
/// mode 3 a Docker config file's credentials.
pub fn oci_manifest(data: &[u8]) {
    use herd_image::media_types::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
    use herd_registry::manifest::{Document, check_image_manifest, parse_document, select_platform};
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 4 {
        0 => {
            let Some((&ct, body)) = rest.split_first() else { return };
            let content_type = [
                None,
                Some(OCI_INDEX),
                Some(OCI_MANIFEST),
                Some(DOCKER_MANIFEST_LIST),
                Some(DOCKER_MANIFEST),
                Some("application/json; charset=utf-8"),
            ][ct as usize % 6];
            match parse_document(content_type, body, "fuzz") {
                Ok(Document::Index(index)) => {
                    let _ = select_platform(&index, "linux", herd_image::host_architecture(), "fuzz");
                }
                Ok(Document::Image(manifest)) => {
                    let _ = check_image_manifest(&manifest, "fuzz");
                }
                Err(_) => {}
            }
        }
        1 => {
            let text = String::from_utf8_lossy(rest);
            if let Ok(r) = herd_registry::Reference::parse(text.trim()) {
                let _ = (r.api_host(), r.manifest_ref(), r.familiar_repository(), r.is_loopback());
                let _ = herd_proto::names::normalize_image(&r.local_name());
            }
        }
        2 => {
            for challenge in herd_registry::challenge::parse(&String::from_utf8_lossy(rest)) {
                let _ = (challenge.param("realm"), challenge.param("service"), challenge.param("scope"));
            }
        }
        _ => {
            let dir = scratch();
            let path = write_file(dir.path(), "config.json", rest);
            for registry in ["docker.io", "127.0.0.1:5000"] {
                let _ = herd_registry::dockercfg::credentials_for(&path, registry);
            }
        }
    }
}

// --- checkpoints ------------------------------------------------------------------------

/// The key the checkpoint target signs and checks with.
pub fn signing_key() -> SigningKey {
    SigningKey::from_bytes([0x5a; signing::KEY_LEN])
}

/// What the container of the CRIU checks may have: Docker's default capabilities, own pid,
/// net, ipc, uts and mount namespaces, no_new_privs, a seccomp filter and the usual mounts.
pub fn allowed() -> Allowed {
    let own =
        [NamespaceKind::Pid, NamespaceKind::Network, NamespaceKind::Ipc, NamespaceKind::Uts, NamespaceKind::Mount];
    let set = |paths: &[&str]| paths.iter().map(|p| p.to_string()).collect();
    Allowed {
        capabilities: 0xA804_25FB,
        no_new_privs: true,
        seccomp: true,
        namespaces: own.into_iter().collect(),
        mountpoints: set(&["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"]),
        readonly: set(&["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]),
    }
}

/// Checkpoints: mode 0 parses the rest as a manifest; mode 1 unpacks it as a checkpoint
/// archive (as a node imports one), then verifies the directory and checks its CRIU images
/// (as before a restore); mode 2 decodes CRIU images given as parts ([`split_parts`]:
/// inventory, pstree, core, ids, then mount images) and checks them; mode 3 reads a tar header
/// block and checks a signature file (parts: manifest, signature); mode 4 checks the rest as an
/// upload's head (as `POST .../restore/archive` does) and reads the bounded archive through,
/// after signing its manifest with the target's key when the next byte is odd (an archive this
/// cluster exported, so that the checks behind the signature are reached too).
pub fn checkpoint(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 5 {
        0 => {
            let _ = herd_image::parse_manifest(rest, "fuzz");
        }
        1 => {
            let dir = scratch();
            let dest = dir.path().join("ck");
            if let Ok(manifest) = herd_image::unpack_checkpoint(rest, &dest, "fuzz") {
                let verified = herd_image::verify_checkpoint_dir(&dest);
                assert!(
                    verified.as_ref().is_ok_and(|m| *m == manifest),
                    "an unpacked checkpoint verifies: {verified:?}"
                );
                if let Ok(images) = Images::read_dir(&dest.join(herd_proto::checkpoint::CRIU_DIR)) {
                    let _ = images.check(&allowed());
                }
            }
        }
        2 => {
            let parts = split_parts(rest);
            if parts.len() < 3 {
                return;
            }
            let mounts: Vec<(String, Vec<u8>)> =
                parts[4.min(parts.len())..].iter().map(|m| ("mountpoints-1.img".to_string(), m.to_vec())).collect();
            let task_file = |kind: &str, _id: u32| {
                Ok(match kind {
                    "core" => Some(parts[2].to_vec()),
                    _ => parts.get(3).filter(|p| !p.is_empty()).map(|p| p.to_vec()),
                })
            };
            // The fourth part stands for the ids images and for seccomp.img alike.
            if let Ok(images) = Images::decode(parts[0], parts[1], task_file, &mounts, parts.get(3).copied()) {
                let _ = images.check(&allowed());
            }
        }
        3 => {
            let mut block = [0u8; 512];
            let n = rest.len().min(512);
            block[..n].copy_from_slice(&rest[..n]);
            let _ = signing::parse_tar_header(&block);
            let parts = split_parts(rest);
            if let [manifest, sig, ..] = parts[..] {
                let _ = signing_key().verify_file(manifest, sig);
            }
        }
        _ => {
            let Some((&flags, archive)) = rest.split_first() else { return };
            let (archive, container_id) = if flags & 1 == 1 { sign_head(archive) } else { (archive.to_vec(), None) };
            let container_id = container_id.unwrap_or_else(|| "0".repeat(32));
            block_on_bounded("check_upload", async {
                let key = signing_key();
                if let Ok(mut upload) = requests::check_upload(&archive[..], &key, "c", &container_id).await {
                    // What `restore_archive` does next: log the size, store the bounded archive.
                    let _ = upload.manifest.size();
                    let mut stored = Vec::new();
                    let _ = upload.archive.read_to_end(&mut stored).await;
                    assert!(stored.len() <= archive.len(), "the bounded archive is the upload, or a prefix of it");
                }
            });
        }
    }
}

/// `archive` with its first entry's content signed as a manifest (a signature entry inserted
/// after it), and the container id that manifest names when it parses.
fn sign_head(archive: &[u8]) -> (Vec<u8>, Option<String>) {
    let Some(block) = archive.get(..512).and_then(|b| <&[u8; 512]>::try_from(b).ok()) else {
        return (archive.to_vec(), None);
    };
    let Ok(Some((name, size, true))) = signing::parse_tar_header(block) else {
        return (archive.to_vec(), None);
    };
    let end = usize::try_from(signing::tar_entry_len(size.min(1 << 30))).unwrap_or(usize::MAX);
    if name != MANIFEST_FILE || end > archive.len() {
        return (archive.to_vec(), None);
    }
    let manifest = &archive[512..512 + size as usize];
    let id = herd_image::parse_manifest(manifest, "fuzz").ok().map(|m| m.container.id);
    let sig = signing::signature_file(&signing_key().sign(manifest));
    let mut out = archive[..end].to_vec();
    out.extend(signing::tar_entry(SIGNATURE_FILE, &sig));
    out.extend_from_slice(&archive[end..]);
    (out, id)
}

// --- the transfer protocol --------------------------------------------------------------

/// The ticket of the transfer target's listener (fixed, so that seeds can carry it).
pub fn transfer_ticket() -> Ticket {
    Ticket { migration: "m-fuzz".into(), token: "f".repeat(64) }
}

/// A hello as a node opens a connection with: magic, version, length, JSON.
pub fn hello_bytes(ticket: &Ticket, purpose: &str) -> Vec<u8> {
    let body = serde_json::to_vec(&serde_json::json!({
        "migration": ticket.migration, "token": ticket.token, "purpose": purpose,
    }))
    .expect("a hello encodes");
    let mut out = MAGIC.to_vec();
    out.extend(VERSION.to_be_bytes());
    out.extend((body.len() as u32).to_be_bytes());
    out.extend(body);
    out
}

/// The listener of the transfer target, bound once per process on loopback.
async fn listener() -> &'static Listener {
    static LISTENER: tokio::sync::OnceCell<Listener> = tokio::sync::OnceCell::const_new();
    LISTENER
        .get_or_init(|| async {
            Listener::bind(IpAddr::V4(Ipv4Addr::LOCALHOST), transfer_ticket(), Budget::unlimited())
                .await
                .expect("listening on loopback")
        })
        .await
}

/// Writes `bytes` to `stream`, closes its sending side and reads what comes back, ignoring
/// errors (the other end may close first).
async fn peer(mut stream: TcpStream, bytes: &[u8]) -> Vec<u8> {
    let _ = stream.write_all(bytes).await;
    let _ = stream.shutdown().await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    // No TIME_WAIT left behind per input: close with a reset.
    let _ = stream.set_zero_linger();
    answer
}

/// The node-to-node transfer protocol, over a real loopback connection to a real
/// [`Listener`]: mode 0 sends the rest as a connection's hello; modes 1 to 3 open a control
/// connection properly and send the rest as frames to a [`herd_node::transfer::Channel`]
/// waiting for messages (1), a directory (2, into a scratch directory) or a blob (3).
pub fn transfer(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let dir = scratch();
    block_on_bounded("transfer", async {
        let listener = listener().await;
        let stream = TcpStream::connect(listener.local_addr()).await.expect("connecting on loopback");
        if mode % 4 == 0 {
            // The listener answers one byte, or closes without a word; an accepted connection
            // stays open until it is taken from the listener.
            let mut stream = stream;
            let _ = stream.write_all(rest).await;
            let _ = stream.shutdown().await;
            let mut answer = [0u8; 1];
            let n = stream.read(&mut answer).await.unwrap_or(0);
            let _ = stream.set_zero_linger();
            if n == 1 && answer[0] == 0 {
                // Accepted: the listener hands the connection over.
                let accepted = listener.accept().await.expect("an accepted connection");
                drop(accepted);
            }
            return;
        }
        let mut stream = stream;
        stream.write_all(&hello_bytes(&transfer_ticket(), "control")).await.expect("sending the hello");
        let mut answer = [0u8; 1];
        stream.read_exact(&mut answer).await.expect("the hello's answer");
        assert_eq!(answer[0], 0, "the listener accepts its own ticket");
        let Accepted::Control(mut channel) = listener.accept().await.expect("the control connection") else {
            panic!("a control hello gives a control channel");
        };
        let receive = async {
            match mode % 4 {
                1 => {
                    for _ in 0..64 {
                        match channel.recv::<serde_json::Value>().await {
                            Ok(_) | Err(herd_node::transfer::TransferError::Json { .. }) => {}
                            Err(_) => break,
                        }
                    }
                }
                2 => {
                    let _ = channel.recv_dir(&dir.path().join("images")).await;
                }
                _ => {
                    let _ = channel.recv_blob(tokio::io::sink()).await;
                }
            }
            drop(channel);
        };
        tokio::join!(receive, peer(stream, rest));
    });
}

// --- API request bodies -----------------------------------------------------------------

/// The image `herd run` requests are checked against.
fn run_image() -> ImageRecord {
    ImageRecord {
        name: "busybox:latest".into(),
        id: format!("sha256:{}", "0".repeat(64)),
        layers: Vec::new(),
        config: ImageConfig {
            entrypoint: vec!["/bin/sh".into()],
            cmd: vec!["-c".into(), "sleep 1".into()],
            env: vec!["PATH=/bin".into(), "HOME=/root".into()],
            ..ImageConfig::default()
        },
        source: "rootfs tarball".into(),
        created_at: 0,
        registry: None,
    }
}

/// Two nodes with labels, containers, ports and volumes, for placement to look at.
fn candidates() -> Vec<Candidate> {
    let mut nodes = Vec::new();
    for (i, zone) in ["a", "b"].into_iter().enumerate() {
        let mut n = Candidate::new(&format!("n{}", i + 1), Resources { cpus_milli: 4000, memory_bytes: 8 << 30 });
        n.labels = BTreeMap::from([("zone".to_string(), zone.to_string()), ("disk".into(), "ssd".into())]);
        n.hosted = vec![
            Hosted { name: format!("web-{zone}"), image: "nginx:latest".into() },
            Hosted { name: "db".into(), image: "registry.example.com:5000/team/postgres:16".into() },
        ];
        n.containers = n.hosted.len();
        n.volumes = ["data".to_string()].into_iter().collect();
        nodes.push(n);
    }
    nodes
}

/// API request bodies, decoded with axum's `Json` as the handlers do and checked with the
/// handlers' own checks: mode 0 `POST /v1/containers` (then placed on two nodes), 1 node
/// labels, 2 `PUT /v1/policy`, 3 `POST /v1/pulls`, 4 migrate, checkpoint and restore; mode 5
/// hands the rest, as text, to every parser of values inside bodies and flags.
pub fn api_request(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else { return };
    match mode % 6 {
        0 => {
            let Ok(Json(req)) = Json::<RunRequest>::from_bytes(body) else { return };
            let Ok(checked) = requests::check_run(&req, "spread") else { return };
            if let Some(name) = &req.name {
                let _ = herd_proto::names::validate_container_name(name);
            }
            let _ = requests::resolve_process(&run_image(), &req);
            let placement = requests::placement(checked.placement, &checked.requested.host);
            let _ = herd_sched::place(&candidates(), &placement, checked.strategy);
            let _ = herd_sched::filter(&candidates(), &placement);
        }
        1 => {
            let Ok(Json(req)) = Json::<LabelRequest>::from_bytes(body) else { return };
            let _ = requests::apply_label_changes(&mut NodeSettings::default(), &req.changes);
        }
        2 => {
            let Ok(Json(req)) = Json::<SetPolicyRequest>::from_bytes(body) else { return };
            if let Ok((policy, _interval)) = requests::check_set_policy(&req) {
                // The Control node stores the spec and parses it again at its next start.
                let spec = policy.spec();
                let again = herd_policy::parse_policy(&spec);
                assert!(again.is_ok(), "the stored spec {spec:?} of {:?} does not parse: {:?}", req.spec, again.err());
            }
        }
        3 => {
            let Ok(Json(req)) = Json::<PullRequest>::from_bytes(body) else { return };
            if let Ok(pull) = requests::check_pull(&req) {
                let _ = (pull.reference.api_host(), pull.reference.manifest_ref());
            }
        }
        4 => {
            if let Ok(Json(req)) = Json::<MigrateRequest>::from_bytes(body) {
                let _ = Budget::new(req.bandwidth);
            }
            let _ = Json::<CheckpointRequest>::from_bytes(body);
            let _ = Json::<RestoreRequest>::from_bytes(body);
        }
        _ => {
            let text = String::from_utf8_lossy(body);
            let text = text.as_ref();
            let _ = herd_proto::units::parse_memory(text);
            let _ = herd_proto::units::parse_cpus(text);
            let _ = herd_proto::hostconfig::PortMapping::parse(text);
            let _ = herd_proto::hostconfig::VolumeMount::parse(text);
            let _ = herd_proto::hostconfig::parse_network(text);
            let _ = herd_proto::names::normalize_image(text);
            let _ = herd_proto::names::parse_pair(text, "fuzz");
            let _ = herd_sched::Constraint::parse(text);
            if let Ok(a) = herd_sched::Affinity::parse(text) {
                let _ = a.hits("web-a", "nginx:latest");
            }
            let _ = herd_policy::parse_policy(text);
        }
    }
}
