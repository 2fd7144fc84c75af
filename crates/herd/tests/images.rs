//! Images imported in each supported form run, with their layers applied in order
//! (whiteouts included), their configuration honoured, and each layer fetched once per node.

mod common;
#[path = "../../herd-image/tests/support/mod.rs"]
mod support;

use std::time::Duration;

use common::Cluster;
use herd_proto::state::ImageRecord;
use serde_json::json;
use support::{Files, Item, gzip, hex_of, json_bytes, manifest, sha256, tar};

const T: Duration = Duration::from_secs(30);

/// The image config: the command prints the file the second layer adds, the directory the
/// second layer deleted a file from, and a variable from the image's environment.
fn image_config(layer_tars: &[&[u8]], mode: &str) -> Vec<u8> {
    let diff_ids: Vec<String> = layer_tars.iter().map(|t| sha256(t)).collect();
    json_bytes(&json!({
        "architecture": herd_image::host_architecture(),
        "os": "linux",
        "config": {
            "Cmd": ["sh", "-c", "cat /etc/motd; ls /etc; echo mode=$MODE; pwd"],
            "Env": ["PATH=/bin", format!("MODE={mode}")],
            "WorkingDir": "/srv"
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    }))
}

#[test]
fn oci_layout_docker_save_and_rootfs_tarballs_run() {
    let cluster = Cluster::up(9, 1);
    let dir = cluster.dir.path();
    let rootfs = dir.join("rootfs");
    herd_up::busybox_rootfs(&rootfs).unwrap();
    let mut base = Vec::new();
    herd_image::pack_dir(&rootfs, &mut base).unwrap();
    let top = tar(&[
        Item::Dir("etc/"),
        Item::File("etc/motd", b"from-layer-two\n", 0o644),
        Item::File("etc/.wh.group", b"", 0o644),
        Item::Dir("srv/"),
    ]);

    // OCI layout, gzip-compressed layers.
    let blobs = [gzip(&base), gzip(&top)];
    let config = image_config(&[&base, &top], "oci");
    let manifest_bytes =
        manifest(&config, &[(support::LAYER_GZIP, blobs[0].as_slice()), (support::LAYER_GZIP, blobs[1].as_slice())]);
    let mut oci = Files::default();
    oci.add("oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#);
    oci.blob(config.clone());
    for b in &blobs {
        oci.blob(b.clone());
    }
    let manifest_digest = oci.blob(manifest_bytes.clone());
    oci.add(
        "index.json",
        json_bytes(&json!({"schemaVersion": 2, "manifests": [
            {"mediaType": support::OCI_MANIFEST, "digest": manifest_digest, "size": manifest_bytes.len()}
        ]})),
    );
    let oci_path = dir.join("app-oci.tar");
    std::fs::write(&oci_path, oci.tar()).unwrap();

    // docker save, uncompressed layers.
    let config = image_config(&[&base, &top], "docker");
    let config_name = format!("{}.json", hex_of(&sha256(&config)));
    let mut docker = Files::default();
    docker.add(&config_name, config.clone());
    let layer_names: Vec<String> = [&base, &top]
        .iter()
        .map(|l| {
            let name = format!("{}/layer.tar", hex_of(&sha256(l)));
            docker.add(&name, (*l).clone());
            name
        })
        .collect();
    docker.add(
        "manifest.json",
        json_bytes(&json!([{"Config": config_name, "RepoTags": ["app:latest"], "Layers": layer_names}])),
    );
    let docker_path = dir.join("app-docker.tar");
    std::fs::write(&docker_path, docker.tar()).unwrap();

    // A plain root filesystem tarball, gzipped.
    let rootfs_path = dir.join("rootfs.tar.gz");
    std::fs::write(&rootfs_path, gzip(&base)).unwrap();

    cluster.ok(&["image", "import", "app-oci:1.0", oci_path.to_str().unwrap()]);
    cluster.ok(&["image", "import", "app-docker", docker_path.to_str().unwrap()]);
    let out = cluster.ok(&["image", "import", "plain", rootfs_path.to_str().unwrap()]);
    assert!(out.contains("imported plain:latest (rootfs tarball, 1 layer"), "{out}");
    let images: Vec<ImageRecord> = cluster.json(&["image", "ls"]);
    let sources: Vec<(&str, &str, usize)> =
        images.iter().map(|i| (i.name.as_str(), i.source.as_str(), i.layers.len())).collect();
    assert_eq!(
        sources,
        vec![
            ("app-docker:latest", "docker save", 2),
            ("app-oci:1.0", "oci-layout", 2),
            ("plain:latest", "rootfs tarball", 1)
        ]
    );
    let oci_image = images.iter().find(|i| i.name == "app-oci:1.0").unwrap();
    assert_eq!(oci_image.id, sha256(&image_config(&[&base, &top], "oci")));

    for (image, mode) in [("app-oci:1.0", "oci"), ("app-docker", "docker")] {
        let name = format!("run-{mode}");
        cluster.ok(&["run", "--name", &name, image]);
        let c = cluster.wait_state(&name, "exited", T);
        let log = cluster.ok(&["logs", &name]);
        assert_eq!(c.exit_code, Some(0), "{log}");
        assert!(log.contains("from-layer-two"), "the second layer is missing: {log}");
        assert!(log.contains("passwd"), "the first layer is missing: {log}");
        assert!(!log.lines().any(|l| l == "group"), "the whiteout did not hide etc/group: {log}");
        assert!(log.contains(&format!("mode={mode}")), "the image's environment is missing: {log}");
        assert!(log.trim_end().ends_with("/srv"), "the image's working directory is not used: {log}");
    }
    cluster.ok(&["run", "--name", "plain", "plain", "--", "head", "-1", "/etc/passwd"]);
    cluster.wait_state("plain", "exited", T);
    assert_eq!(cluster.ok(&["logs", "plain"]), "root:x:0:0:root:/root:/bin/sh\n");

    // Each distinct layer was fetched and unpacked once on the node, although four containers
    // used them: 2 (OCI, gzipped) + 2 (docker, plain tars); the rootfs tarball is byte for byte
    // the OCI image's first layer, so the cache already had it.
    cluster.ok(&["run", "--name", "again", "app-oci:1.0"]);
    cluster.wait_state("again", "exited", T);
    let layers = std::fs::read_dir(cluster.data_dir.join("nodes/n1/layers")).unwrap().count();
    assert_eq!(layers, 4);
}
