//! What an image may cost is bounded, and a failed import leaves nothing behind: a gzip bomb,
//! a layer or an image past the Control node's bounds, a bad name and a record the broker
//! refuses all leave no layer in the store and no upload on disk; a node refuses a layer past
//! its own bound or one that would eat into its disk reserve, leaving no partial unpack; and
//! an image that lists one layer twice runs.

mod common;
#[path = "../../herd-image/tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use common::Cluster;
use herd_proto::api::LayerInfo;
use herd_proto::state::ImageRecord;
use serde_json::json;
use support::{Files, Item, gzip, gzip_bomb, hex_of, json_bytes, sha256, tar};

const T: Duration = Duration::from_secs(30);
const MIB: usize = 1 << 20;

/// A tar of `count` files of 1 MiB, each filled with `byte`.
fn mib_files(count: usize, byte: u8) -> Vec<u8> {
    let data = vec![byte; MIB];
    let names: Vec<String> = (0..count).map(|i| format!("data/f{i:03}")).collect();
    let mut items = vec![Item::Dir("data/")];
    items.extend(names.iter().map(|n| Item::File(n, &data, 0o644)));
    tar(&items)
}

/// An OCI layout whose manifest lists `layers` (uncompressed tars, gzipped here) in order, a
/// layer listed twice stored once; `config` extends the image config.
fn oci_layout(layers: &[&[u8]], config: serde_json::Value) -> Vec<u8> {
    let blobs: Vec<Vec<u8>> = layers.iter().map(|l| gzip(l)).collect();
    let mut image_config = json!({
        "architecture": herd_image::host_architecture(),
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| sha256(l)).collect::<Vec<_>>()}
    });
    if let (Some(base), Some(extra)) = (image_config.as_object_mut(), config.as_object()) {
        base.extend(extra.clone());
    }
    let config_bytes = json_bytes(&image_config);
    let manifest = json_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": support::OCI_MANIFEST,
        "config": support::descriptor(support::OCI_CONFIG, &config_bytes),
        "layers": blobs.iter().map(|b| support::descriptor(support::LAYER_GZIP, b)).collect::<Vec<_>>()
    }));
    let mut files = Files::default();
    files.add("oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#);
    files.blob(config_bytes);
    for (i, b) in blobs.iter().enumerate() {
        if !blobs[..i].contains(b) {
            files.blob(b.clone());
        }
    }
    let digest = files.blob(manifest.clone());
    files.add(
        "index.json",
        json_bytes(&json!({"schemaVersion": 2, "manifests": [
            {"mediaType": support::OCI_MANIFEST, "digest": digest, "size": manifest.len()}
        ]})),
    );
    files.tar()
}

/// The busybox root filesystem as a layer tar.
fn busybox_layer(dir: &Path) -> Vec<u8> {
    let rootfs = dir.join("busybox-rootfs");
    if !rootfs.exists() {
        herd_up::busybox_rootfs(&rootfs).unwrap();
    }
    let mut base = Vec::new();
    herd_image::pack_dir(&rootfs, &mut base).unwrap();
    base
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_string()
}

fn entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(list) => list.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Asserts the cluster has no image, no layer in its store and no upload left.
fn assert_nothing_left(cluster: &Cluster, after: &str) {
    let layers: Vec<LayerInfo> = cluster.json(&["image", "layers"]);
    assert!(layers.is_empty(), "{after} left layers in the store: {layers:?}");
    let images: Vec<ImageRecord> = cluster.json(&["image", "ls"]);
    assert!(images.is_empty(), "{after} left images: {:?}", images.iter().map(|i| &i.name).collect::<Vec<_>>());
    let uploads = entries(&cluster.data_dir.join("control/uploads"));
    assert!(uploads.is_empty(), "{after} left uploads: {uploads:?}");
}

#[test]
fn imports_past_the_bounds_are_refused_and_leave_nothing_behind() {
    let cluster = Cluster::up_with_env(
        45,
        1,
        &[],
        &[("HERD_CONTROL_MAX_LAYER_SIZE", "64m"), ("HERD_CONTROL_MAX_IMAGE_SIZE", "96m")],
    );
    let dir = cluster.dir.path();

    // A 17 MB gzip bomb: a root filesystem tarball holding 16 GiB of zeros.
    let bomb = write(dir, "bomb.tar.gz", &gzip_bomb("zeros", 16 << 30));
    let started = Instant::now();
    let err = cluster.fails(&["image", "import", "bomb", &bomb]);
    let took = started.elapsed();
    assert!(err.contains("more than 64MiB") && err.contains("--max-layer-size"), "{err}");
    assert!(err.contains("member \"zeros\" (16GiB)"), "{err}");
    assert!(took < T, "refusing the bomb took {took:?}");
    eprintln!("a 16 GiB gzip bomb was refused in {took:?}");
    assert_nothing_left(&cluster, "the gzip bomb");

    // An upload larger than the archive of any image within the image bound is cut off (a
    // sparse file: no disk is used for it).
    let huge = dir.join("huge.bin");
    std::fs::File::create(&huge).unwrap().set_len(120 << 20).unwrap();
    let err = cluster.fails(&["image", "import", "huge", huge.to_str().unwrap()]);
    assert!(err.contains("the upload is larger than") && err.contains("--max-image-size"), "{err}");
    assert_nothing_left(&cluster, "an upload past the image bound");

    // A layer of many small files, each well within the bound: stopped while it is read.
    let many = mib_files(80, 0);
    let err = cluster.fails(&["image", "import", "many", &write(dir, "many.tar", &oci_layout(&[&many], json!({})))]);
    assert!(err.contains("layer 1 of 1") && err.contains("more than 64MiB"), "{err}");
    assert_nothing_left(&cluster, "a layer past the layer bound");

    // Two layers within the layer bound, past the image bound together.
    let (zeros, ones) = (mib_files(50, 0), mib_files(50, 1));
    let err =
        cluster.fails(&["image", "import", "two", &write(dir, "two.tar", &oci_layout(&[&zeros, &ones], json!({})))]);
    assert!(err.contains("more than") && err.contains("--max-image-size"), "{err}");
    assert_nothing_left(&cluster, "an image past the image bound");

    // A bad name is refused, and nothing is stored for it.
    let busybox = write(dir, "busybox.tar", &busybox_layer(dir));
    let err = cluster.fails(&["image", "import", "q..q", &busybox]);
    assert!(err.contains("invalid image name \"q..q\"") && err.contains("no '..'"), "{err}");
    assert_nothing_left(&cluster, "an import with a bad name");

    // A failure after the layer was stored (the image's record is too large for the broker:
    // an environment of 3.9 MB and one small layer listed 40,000 times): the layer goes too.
    let small = tar(&[Item::File("hello", b"hello\n", 0o644)]);
    let blob = gzip(&small);
    let config = json_bytes(&json!({
        "architecture": herd_image::host_architecture(), "os": "linux",
        "config": {"Env": [format!("BIG={}", "x".repeat(3_900_000))], "Cmd": ["sh"]}
    }));
    let descriptor = json!({"digest": sha256(&blob), "size": blob.len()});
    let manifest = json_bytes(&json!({
        "schemaVersion": 2,
        "config": support::descriptor(support::OCI_CONFIG, &config),
        "layers": vec![descriptor; 40_000]
    }));
    let mut files = Files::default();
    files.add("oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#);
    files.blob(config);
    files.blob(blob.clone());
    let digest = files.blob(manifest.clone());
    files.add(
        "index.json",
        json_bytes(&json!({"schemaVersion": 2, "manifests": [{"digest": digest, "size": manifest.len()}]})),
    );
    let err = cluster.fails(&["image", "import", "huge-record", &write(dir, "huge.tar", &files.tar())]);
    assert!(err.contains("herd-images") && err.contains("the limit is 8MiB") && err.contains("max_payload"), "{err}");
    assert_nothing_left(&cluster, "an import whose record the broker refused");

    // Within the bounds, an import works, and its layer is listed with its image.
    cluster.ok(&["image", "import", "busybox", &busybox]);
    let layers: Vec<LayerInfo> = cluster.json(&["image", "layers"]);
    assert_eq!(layers.len(), 1, "{layers:?}");
    assert_eq!(
        (layers[0].digest.as_str(), layers[0].images.clone()),
        (sha256(&busybox_layer(dir)).as_str(), vec!["busybox:latest".to_string()])
    );
    let table = cluster.ok(&["image", "layers"]);
    assert!(table.contains(hex_of(&layers[0].digest)) && table.contains("busybox:latest"), "{table}");
}

#[test]
fn an_image_that_lists_a_layer_twice_runs() {
    let cluster = Cluster::up(46, 1);
    let dir = cluster.dir.path();
    let base = busybox_layer(dir);
    // x sets /etc/motd; y, between the two x, changes it and adds a file; x on top sets it back.
    let x = tar(&[Item::Dir("etc/"), Item::File("etc/motd", b"from-x\n", 0o644)]);
    let y = tar(&[
        Item::Dir("etc/"),
        Item::File("etc/motd", b"from-y\n", 0o644),
        Item::File("etc/only-y", b"y-was-here\n", 0o644),
    ]);
    let config = json!({"config": {"Cmd": ["sh", "-c", "cat /etc/motd /etc/only-y"], "Env": ["PATH=/bin"]}});
    let image = write(dir, "twice.tar", &oci_layout(&[&base, &x, &y, &x], config));
    cluster.ok(&["image", "import", "twice", &image]);
    let images: Vec<ImageRecord> = cluster.json(&["image", "ls"]);
    assert_eq!(images[0].layers.len(), 4);

    cluster.ok(&["run", "--name", "twice", "twice"]);
    let c = cluster.wait_state("twice", "exited", T);
    let log = cluster.ok(&["logs", "twice"]);
    assert_eq!(c.exit_code, Some(0), "error: {:?}, log: {log}", c.error);
    assert_eq!(log, "from-x\ny-was-here\n");
    // Three distinct layers, each unpacked once.
    let cached: Vec<String> =
        entries(&cluster.data_dir.join("nodes/n1/layers")).into_iter().filter(|e| !e.starts_with('.')).collect();
    assert_eq!(cached.len(), 3, "{cached:?}");
}

/// Asserts node n1 holds no partial fetch or unpack, and no container named `name` exists.
fn assert_no_partial_unpack(cluster: &Cluster, name: &str) {
    let layers_dir = cluster.data_dir.join("nodes/n1/layers");
    let partial: Vec<String> = entries(&layers_dir).into_iter().filter(|e| e.starts_with(".tmp-")).collect();
    assert!(partial.is_empty(), "partial layers left on n1: {partial:?}");
    let ps = cluster.ok(&["ps", "-a", "-q"]);
    assert!(!ps.lines().any(|l| l == name), "container {name} was left: {ps}");
}

#[test]
fn a_node_refuses_a_layer_past_its_own_bound() {
    // The Control node takes the image (its bounds are the defaults); the node's is 32 MiB.
    let cluster = Cluster::up_with_env(47, 1, &[], &[("HERD_NODE_MAX_LAYER_SIZE", "32m")]);
    let dir = cluster.dir.path();
    let base = busybox_layer(dir);
    let big = mib_files(48, 0);
    let config = json!({"config": {"Cmd": ["ls", "/data"], "Env": ["PATH=/bin"]}});
    cluster.ok(&["image", "import", "big", &write(dir, "big.tar", &oci_layout(&[&base, &big], config))]);

    let err = cluster.fails(&["run", "--name", "big", "big"]);
    assert!(err.contains("more than 32MiB") && err.contains("--max-layer-size"), "{err}");
    assert!(err.contains(&sha256(&gzip(&big))), "the error does not name the layer: {err}");
    assert_no_partial_unpack(&cluster, "big");
    let big_layer = cluster.data_dir.join("nodes/n1/layers").join(hex_of(&sha256(&gzip(&big))));
    assert!(!big_layer.exists(), "{} was kept", big_layer.display());

    // The node works on: an image within its bound runs.
    cluster.ok(&["image", "import", "busybox", &write(dir, "busybox.tar", &base)]);
    cluster.ok(&["run", "--name", "small", "busybox", "--", "true"]);
    assert_eq!(cluster.wait_state("small", "exited", T).exit_code, Some(0));
}

#[test]
fn a_node_keeps_its_disk_reserve() {
    // A reserve of the whole filesystem cannot be kept: every layer is refused.
    let cluster = Cluster::up_with_env(48, 1, &[], &[("HERD_NODE_DISK_RESERVE", "100%")]);
    let dir = cluster.dir.path();
    cluster.ok(&["image", "import", "busybox", &write(dir, "busybox.tar", &busybox_layer(dir))]);
    let err = cluster.fails(&["run", "--name", "c", "busybox", "--", "true"]);
    assert!(err.contains("--disk-reserve") && err.contains("free"), "{err}");
    assert_no_partial_unpack(&cluster, "c");
    let cached: Vec<String> = entries(&cluster.data_dir.join("nodes/n1/layers"));
    assert!(cached.is_empty(), "layers were cached past the reserve: {cached:?}");
}
