//! Seed inputs: for each target, real samples of what it parses, made here with the same
//! code (and formats) Herd and the tools it reads from use: a busybox-like root filesystem
//! as a plain, gzip and zstd tarball, an OCI image layout and a `docker save` archive of it;
//! registry manifests, indexes, references, challenges and Docker configs; a checkpoint whose
//! CRIU images come from a real checkpoint of a busybox container (`samples/criu/`), as a
//! directory packed into an archive, signed and unsigned; transfer hellos and frame
//! sequences; API request bodies as the CLI sends them. Each seed starts with the mode byte
//! its target reads (see [`crate::targets`]).

use std::io::Write;
use std::path::Path;

use herd_proto::checkpoint::{CheckpointManifest, FORMAT, SIGNATURE_FILE};
use serde_json::json;
use sha2::{Digest, Sha256};

/// The seeds of target `name`, each with a file name.
pub fn seeds(name: &str) -> Vec<(String, Vec<u8>)> {
    match name {
        "image_archive" => image_archive(),
        "oci_manifest" => oci_manifest(),
        "checkpoint" => checkpoint(),
        "transfer" => transfer(),
        "api_request" => api_request(),
        other => panic!("no target {other}"),
    }
}

/// Joins parts the way [`crate::targets::split_parts`] splits them.
pub fn join_parts(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend((p.len() as u16).to_le_bytes());
        out.extend_from_slice(p);
    }
    out
}

fn with_mode(mode: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![mode];
    out.extend_from_slice(body);
    out
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

// --- image archives ---------------------------------------------------------------------

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

/// A small busybox-like root filesystem: directories, a "binary" with its applet links (a
/// symlink and a hard link), a setuid file, configuration files, a FIFO, an OCI whiteout, an
/// opaque-directory marker, and a PAX extended attribute.
pub fn rootfs_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for dir in ["bin/", "etc/", "tmp/", "usr/", "usr/share/", "var/"] {
        b.append_data(&mut header(tar::EntryType::Directory, 0, 0o755), dir, &[][..]).unwrap();
    }
    let busybox: Vec<u8> = b"\x7fELF\x02\x01\x01".iter().copied().chain((0..1500u32).map(|i| (i * 7) as u8)).collect();
    b.append_data(&mut header(tar::EntryType::Regular, busybox.len() as u64, 0o4755), "bin/busybox", &busybox[..])
        .unwrap();
    let mut link = header(tar::EntryType::Symlink, 0, 0o777);
    b.append_link(&mut link, "bin/sh", "busybox").unwrap();
    let mut hard = header(tar::EntryType::Link, 0, 0o755);
    b.append_link(&mut hard, "bin/ls", "bin/busybox").unwrap();
    let passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n";
    b.append_data(&mut header(tar::EntryType::Regular, passwd.len() as u64, 0o644), "etc/passwd", &passwd[..]).unwrap();
    b.append_data(&mut header(tar::EntryType::Fifo, 0, 0o600), "tmp/fifo", &[][..]).unwrap();
    b.append_data(&mut header(tar::EntryType::Regular, 0, 0o644), "var/.wh.old-cache", &[][..]).unwrap();
    b.append_data(&mut header(tar::EntryType::Regular, 0, 0o644), "usr/share/.wh..wh..opq", &[][..]).unwrap();
    b.append_pax_extensions([("SCHILY.xattr.user.origin", &b"herd"[..])]).unwrap();
    b.append_data(&mut header(tar::EntryType::Regular, 3, 0o644), "etc/hostname", &b"bb\n"[..]).unwrap();
    b.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 3).unwrap()
}

/// An archive of `files` (path, content), plain tar.
fn archive(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        b.append_data(&mut header(tar::EntryType::Regular, data.len() as u64, 0o644), path, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

fn image_config(layer_tar: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": herd_image::host_architecture(), "os": "linux",
        "config": {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"], "WorkingDir": "/", "User": "0:0"},
        "rootfs": {"type": "layers", "diff_ids": [sha256(layer_tar)]},
        "history": [{"created_by": "herd-fuzz seeds"}],
    }))
    .unwrap()
}

/// An OCI image layout of [`rootfs_tar`] (gzip layer), its index pointing at a nested index
/// when `nested`.
pub fn oci_layout(nested: bool) -> Vec<u8> {
    let tar = rootfs_tar();
    let layer = gzip(&tar);
    let config = image_config(&tar);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": herd_image::media_types::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(&layer), "size": layer.len()}],
    }))
    .unwrap();
    let platform = json!({"architecture": herd_image::host_architecture(), "os": "linux"});
    let inner = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": herd_image::media_types::OCI_INDEX,
        "manifests": [
            {"mediaType": herd_image::media_types::OCI_MANIFEST, "digest": sha256(&manifest), "size": manifest.len(), "platform": platform},
            {"mediaType": herd_image::media_types::OCI_MANIFEST, "digest": sha256(b"other"), "size": 5, "platform": {"architecture": "s390x", "os": "linux"}},
        ],
    }))
    .unwrap();
    let top = if nested {
        json!({"schemaVersion": 2, "manifests": [{"mediaType": herd_image::media_types::OCI_INDEX, "digest": sha256(&inner), "size": inner.len()}]})
    } else {
        json!({"schemaVersion": 2, "manifests": [{"mediaType": herd_image::media_types::OCI_MANIFEST, "digest": sha256(&manifest), "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "latest"}}]})
    };
    let blob = |b: &[u8]| (format!("blobs/sha256/{}", &sha256(b)[7..]), b.to_vec());
    let mut files = vec![
        ("oci-layout".to_string(), br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
        ("index.json".to_string(), serde_json::to_vec(&top).unwrap()),
        blob(&manifest),
        blob(&config),
        blob(&layer),
    ];
    if nested {
        files.push(blob(&inner));
    }
    archive(&files)
}

/// A `docker save` archive of [`rootfs_tar`] (uncompressed layer, in Docker's pre-OCI layout).
pub fn docker_save() -> Vec<u8> {
    let tar = rootfs_tar();
    let config = image_config(&tar);
    let config_name = format!("{}.json", &sha256(&config)[7..]);
    let layer_dir = &sha256(b"layer-id")[7..];
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_name, "RepoTags": ["busybox:latest"], "Layers": [format!("{layer_dir}/layer.tar")],
    }]))
    .unwrap();
    archive(&[
        ("manifest.json".to_string(), manifest),
        (config_name.clone(), config),
        (format!("{layer_dir}/VERSION"), b"1.0".to_vec()),
        (format!("{layer_dir}/layer.tar"), tar),
        ("repositories".to_string(), br#"{"busybox":{"latest":"x"}}"#.to_vec()),
    ])
}

fn image_archive() -> Vec<(String, Vec<u8>)> {
    let tar = rootfs_tar();
    vec![
        ("rootfs.tar".into(), with_mode(0, &tar)),
        ("rootfs.tar.gz".into(), with_mode(0, &gzip(&tar))),
        ("rootfs.tar.zst".into(), with_mode(0, &zstd(&tar))),
        ("oci-layout.tar".into(), with_mode(0, &oci_layout(false))),
        ("oci-layout-nested-index.tar.gz".into(), with_mode(0, &gzip(&oci_layout(true)))),
        ("docker-save.tar".into(), with_mode(0, &docker_save())),
        ("layer.tar".into(), with_mode(1, &tar)),
        ("layer.tar.gz".into(), with_mode(1, &gzip(&tar))),
        ("layer.tar.zst".into(), with_mode(1, &zstd(&tar))),
        ("config.json".into(), with_mode(2, &image_config(&tar))),
    ]
}

// --- registry documents -----------------------------------------------------------------

fn oci_manifest() -> Vec<(String, Vec<u8>)> {
    let d = |n: u8| format!("sha256:{}", hex::encode([n; 32]));
    let index = json!({
        "schemaVersion": 2, "mediaType": herd_image::media_types::OCI_INDEX,
        "manifests": [
            {"mediaType": herd_image::media_types::OCI_MANIFEST, "digest": d(1), "size": 1000, "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": herd_image::media_types::OCI_MANIFEST, "digest": d(2), "size": 1000, "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
            {"mediaType": herd_image::media_types::OCI_MANIFEST, "digest": d(3), "size": 800, "platform": {"architecture": "unknown", "os": "unknown"}},
        ],
    });
    let manifest = json!({
        "schemaVersion": 2, "mediaType": herd_image::media_types::DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": d(4), "size": 1470},
        "layers": [
            {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": d(5), "size": 2_000_000},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": d(6), "size": 300},
        ],
    });
    let mut list = index.clone();
    list["mediaType"] = json!(herd_image::media_types::DOCKER_MANIFEST_LIST);
    let doc = |ct: u8, v: &serde_json::Value| {
        let mut out = vec![0, ct];
        out.extend(serde_json::to_vec(v).unwrap());
        out
    };
    let mut seeds = vec![
        ("oci-index.json".to_string(), doc(0, &index)),
        ("docker-manifest.json".into(), doc(0, &manifest)),
        ("docker-manifest-list.json".into(), doc(3, &list)),
        (
            "manifest-no-media-type.json".into(),
            doc(2, &json!({"schemaVersion": 2, "config": manifest["config"], "layers": manifest["layers"]})),
        ),
        (
            "schema1.json".into(),
            doc(
                0,
                &json!({"schemaVersion": 1, "mediaType": "application/vnd.docker.distribution.manifest.v1+prettyjws"}),
            ),
        ),
    ];
    for (i, r) in [
        "busybox",
        "docker.io/library/busybox:latest",
        "127.0.0.1:5000/app:v1",
        &format!("ghcr.io/org/team/app:1.2@{}", d(7)),
        &format!("localhost/app@{}", d(8)),
    ]
    .iter()
    .enumerate()
    {
        seeds.push((format!("reference-{i}"), with_mode(1, r.as_bytes())));
    }
    for (i, c) in [
        r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        r#"Basic realm="Registry Realm", Bearer realm="http://127.0.0.1:5001/token", error="insufficient_scope""#,
    ]
    .iter()
    .enumerate()
    {
        seeds.push((format!("challenge-{i}"), with_mode(2, c.as_bytes())));
    }
    let cfg = json!({"auths": {
        "https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNzd29yZA=="},
        "127.0.0.1:5000": {"username": "u", "password": "p"},
        "ghcr.io": {"auth": "bm8tY29sb24="},
    }, "credsStore": "desktop"});
    seeds.push(("docker-config.json".into(), with_mode(3, &serde_json::to_vec(&cfg).unwrap())));
    seeds
}

// --- checkpoints ------------------------------------------------------------------------

/// The CRIU images of a real checkpoint of a busybox container (taken by CRIU 4.2.1 in a
/// Herd cluster), by file name.
pub const CRIU_SAMPLES: &[(&str, &[u8])] = &[
    ("inventory.img", include_bytes!("../samples/criu/inventory.img")),
    ("pstree.img", include_bytes!("../samples/criu/pstree.img")),
    ("core-1.img", include_bytes!("../samples/criu/core-1.img")),
    ("core-9.img", include_bytes!("../samples/criu/core-9.img")),
    ("ids-1.img", include_bytes!("../samples/criu/ids-1.img")),
    ("ids-9.img", include_bytes!("../samples/criu/ids-9.img")),
    ("mountpoints-13.img", include_bytes!("../samples/criu/mountpoints-13.img")),
];

fn criu_sample(name: &str) -> &'static [u8] {
    CRIU_SAMPLES.iter().find(|(n, _)| *n == name).map(|(_, b)| *b).expect("a sample")
}

/// Writes a checkpoint directory: the sample CRIU images, a small page file, a writable-layer
/// tar and the manifest Herd writes for them.
pub fn checkpoint_dir(dir: &Path) -> CheckpointManifest {
    let criu = dir.join(herd_proto::checkpoint::CRIU_DIR);
    std::fs::create_dir_all(&criu).unwrap();
    for (name, bytes) in CRIU_SAMPLES {
        std::fs::write(criu.join(name), bytes).unwrap();
    }
    std::fs::write(criu.join("pages-1.img"), vec![0x90u8; 4096]).unwrap();
    let diff = archive(&[("tmp/counter".to_string(), b"41\n".to_vec())]);
    std::fs::write(dir.join(herd_proto::checkpoint::ROOTFS_DIFF), diff).unwrap();
    let files = herd_image::checkpoint_files(dir).unwrap();
    let size: u64 = files.iter().map(|f| f.size).sum();
    let manifest: CheckpointManifest = serde_json::from_value(json!({
        "format": FORMAT,
        "container": {
            "id": "e08cee0a73b645ec0f0c4861c0dff28d", "name": "c1", "image": "busybox:latest",
            "layers": [{"digest": format!("sha256:{}", "2".repeat(64)), "size": 1986048, "compression": "none"}],
            "args": ["sh", "-c", "sleep 3600"], "env": ["PATH=/bin"], "working_dir": "/", "ip": "10.200.0.1",
            "limits": {"memory_bytes": 67108864}, "labels": {"app": "counter"},
        },
        "checkpoint": {"id": "ck1", "node": "n1", "created_at": 1_700_000_000_000u64, "leave_running": false, "size_bytes": size},
        "files": files,
    }))
    .unwrap();
    herd_image::write_manifest(dir, &manifest).unwrap();
    manifest
}

fn checkpoint() -> Vec<(String, Vec<u8>)> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ck");
    checkpoint_dir(&dir);
    let manifest = std::fs::read(dir.join(herd_proto::checkpoint::MANIFEST_FILE)).unwrap();
    let mut unsigned = Vec::new();
    herd_image::pack_checkpoint(&dir, &mut unsigned, false).unwrap();
    let sig = herd_image::signing::signature_file(&crate::targets::signing_key().sign(&manifest));
    std::fs::write(dir.join(SIGNATURE_FILE), &sig).unwrap();
    let mut signed = Vec::new();
    herd_image::pack_checkpoint(&dir, &mut signed, true).unwrap();
    let sample = |n| criu_sample(n);
    let mut seeds = vec![
        ("manifest.json".to_string(), with_mode(0, &manifest)),
        ("archive.tar".into(), with_mode(1, &unsigned)),
        ("archive-signed.tar".into(), with_mode(1, &signed)),
    ];
    for (pid, (core, ids)) in [("core-1.img", "ids-1.img"), ("core-9.img", "ids-9.img")].into_iter().enumerate() {
        let parts = join_parts(&[
            sample("inventory.img"),
            sample("pstree.img"),
            sample(core),
            sample(ids),
            sample("mountpoints-13.img"),
        ]);
        seeds.push((format!("criu-images-{pid}"), with_mode(2, &parts)));
    }
    seeds.push(("tar-header".into(), with_mode(3, &herd_image::signing::tar_entry(SIGNATURE_FILE, &sig))));
    seeds.push(("signature".into(), with_mode(3, &join_parts(&[&manifest, &sig]))));
    let mut upload = vec![4, 0];
    upload.extend(&signed);
    seeds.push(("upload-signed.tar".into(), upload));
    let mut upload = vec![4, 1];
    upload.extend(&unsigned);
    seeds.push(("upload-to-sign.tar".into(), upload));
    seeds
}

// --- the transfer protocol --------------------------------------------------------------

fn frame(ty: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![ty];
    out.extend((payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn json_frame(ty: u8, v: serde_json::Value) -> Vec<u8> {
    frame(ty, &serde_json::to_vec(&v).unwrap())
}

fn transfer() -> Vec<(String, Vec<u8>)> {
    use crate::targets::{hello_bytes, transfer_ticket};
    let ticket = transfer_ticket();
    let mut wrong = ticket.clone();
    wrong.token = "0".repeat(64);
    let mut v2 = hello_bytes(&ticket, "control");
    v2[9] = 2;
    let pre_dump = {
        let body = serde_json::to_vec(
            &json!({"migration": ticket.migration, "token": ticket.token, "purpose": {"pre_dump": {"round": 2}}}),
        )
        .unwrap();
        let mut out = herd_node::transfer::MAGIC.to_vec();
        out.extend(herd_node::transfer::VERSION.to_be_bytes());
        out.extend((body.len() as u32).to_be_bytes());
        out.extend(body);
        out
    };
    let messages: Vec<u8> = [
        json_frame(1, json!({"images_sent": {"bytes": 4096}})),
        json_frame(1, json!("restore")),
        json_frame(1, json!({"restored": {"pid": 42, "at": 1_700_000_000_000u64}})),
        json_frame(8, json!({"message": "disk full"})),
    ]
    .concat();
    let core = criu_sample("core-1.img");
    let dir: Vec<u8> = [
        json_frame(2, json!({"files": 2, "bytes": core.len() + 4})),
        json_frame(3, json!({"name": "core-1.img", "size": core.len(), "mode": 0o600})),
        frame(4, &core[..1000]),
        frame(4, &core[1000..]),
        json_frame(3, json!({"name": "pages-1.img", "size": 4, "mode": 0o644})),
        frame(4, b"\x90\x90\x90\x90"),
        json_frame(5, json!({"files": 2, "bytes": core.len() + 4})),
    ]
    .concat();
    let blob: Vec<u8> = [
        frame(6, b""),
        frame(4, &archive(&[("tmp/x".to_string(), b"x".to_vec())])),
        frame(4, b"tail of the log\n"),
        json_frame(5, json!({"files": 0, "bytes": 2048 + 16})),
    ]
    .concat();
    vec![
        ("hello-control".into(), with_mode(0, &hello_bytes(&ticket, "control"))),
        ("hello-pages".into(), with_mode(0, &hello_bytes(&ticket, "pages"))),
        ("hello-pre-dump".into(), with_mode(0, &pre_dump)),
        ("hello-wrong-token".into(), with_mode(0, &hello_bytes(&wrong, "control"))),
        ("hello-version-2".into(), with_mode(0, &v2)),
        ("messages".into(), with_mode(1, &messages)),
        ("directory".into(), with_mode(2, &dir)),
        ("blob".into(), with_mode(3, &blob)),
    ]
}

// --- API request bodies -----------------------------------------------------------------

fn api_request() -> Vec<(String, Vec<u8>)> {
    let body = |mode: u8, v: serde_json::Value| with_mode(mode, &serde_json::to_vec(&v).unwrap());
    let mut seeds = vec![
        (
            "run.json".to_string(),
            body(
                0,
                json!({
                    "name": "web-1", "image": "nginx", "node": null,
                    "limits": {"memory_bytes": 268435456u64, "cpus_milli": 500, "pids": 100},
                    "env": ["MODE=prod", "EMPTY="], "labels": {"app": "web"}, "command": ["nginx", "-g", "daemon off;"],
                    "constraints": ["node.labels.zone==a", "node.hostname!=n2*"],
                    "affinities": ["container!=web-*", "image~=redis", "affinity:container==~db"],
                    "strategy": "binpack", "ports": ["8080:80", "127.0.0.1:5353:53/udp"], "volumes": ["data:/var/lib/data:ro"],
                }),
            ),
        ),
        (
            "run-network.json".into(),
            body(0, json!({"image": "busybox:1.36", "network": "container:web-a", "strategy": "random"})),
        ),
        ("labels.json".into(), body(1, json!({"changes": ["zone=a", "disk-", "rack=r1=x"]}))),
        ("policy.json".into(), body(2, json!({"spec": "0.7*forecast:horizon=30m+0.3*balance", "interval_secs": 5.0}))),
        ("policy-hotspot.json".into(), body(2, json!({"spec": "hotspot:threshold=80%,k=3,n=5"}))),
        ("policy-consolidate.json".into(), body(2, json!({"spec": "consolidate", "interval_secs": 0.5}))),
        (
            "pull.json".into(),
            body(
                3,
                json!({"reference": "127.0.0.1:5000/app:v1", "name": "app", "username": "u", "password": "p", "insecure": true}),
            ),
        ),
        ("migrate.json".into(), body(4, json!({"to": "n2", "mode": "postcopy", "bandwidth": 10_000_000u64}))),
        ("restore.json".into(), body(4, json!({"checkpoint": "ck1", "node": "n2", "leave_running": true}))),
    ];
    for (i, v) in [
        "512m",
        "1.5",
        "10.0.0.1:53:5353/udp",
        "data:/srv:ro",
        "container:web",
        "node.labels.zone==a*",
        "image~=redis:7",
        "hotspot:threshold=0.8",
    ]
    .iter()
    .enumerate()
    {
        seeds.push((format!("value-{i}"), with_mode(5, v.as_bytes())));
    }
    seeds
}
