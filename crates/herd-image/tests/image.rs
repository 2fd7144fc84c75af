//! Import, extraction and packing of images, on archives built in memory. Run as root: layers
//! hold whiteout devices, trusted.* attributes and files of other owners.

mod support;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use herd_image::{
    ImageError, ImageSource, ImportedImage, OPAQUE_XATTR, UnpackLimits, blob_path, extract_layer, host_architecture,
    import_archive, pack_dir, sha256_file,
};
use herd_proto::state::Compression;
use serde_json::json;
use support::*;
use tempfile::TempDir;

/// Writes `bytes` as an archive in a new temp dir and imports it into `<tmp>/work`.
fn import_bytes(bytes: &[u8]) -> (TempDir, Result<ImportedImage, ImageError>) {
    let tmp = TempDir::new().unwrap();
    let archive = tmp.path().join("upload");
    fs::write(&archive, bytes).unwrap();
    let result = import_archive(&archive, &tmp.path().join("work"), &UnpackLimits::default());
    (tmp, result)
}

fn extract_to(tmp: &Path, name: &str, blob: &Path, compression: Compression) -> Result<std::path::PathBuf, ImageError> {
    let dest = tmp.join(name);
    fs::create_dir(&dest).unwrap();
    extract_layer(blob, compression, &dest).map(|()| dest)
}

fn assert_test_image_config(image: &ImportedImage, arch: &str) {
    assert_eq!(image.config.entrypoint, ["/bin/tool"]);
    assert_eq!(image.config.cmd, ["--serve", "8080"]);
    assert_eq!(image.config.env, ["PATH=/usr/bin:/bin", "MODE=test"]);
    assert_eq!(image.config.working_dir, "/data");
    assert_eq!(image.config.user, "1000:1000");
    // As Docker writes them, sorted by port; what is no port is left out.
    assert_eq!(image.config.exposed_ports, ["53/udp", "8080/tcp", "9000/tcp"]);
    assert_eq!(image.config.architecture, arch);
}

/// Checks the two extracted layers of the test image.
fn assert_test_layers_extract(tmp: &Path, image: &ImportedImage) {
    let lower = extract_to(tmp, "lower", &image.layers[0].path, image.layers[0].layer.compression).unwrap();
    assert_eq!(fs::read(lower.join("etc/gone")).unwrap(), b"gone");
    let tool = fs::metadata(lower.join("bin/tool")).unwrap();
    assert_eq!(tool.permissions().mode() & 0o7777, 0o755);
    assert_eq!(tool.mtime() as u64, MTIME);
    assert_eq!(fs::metadata(lower.join("data/old")).unwrap().permissions().mode() & 0o7777, 0o600);
    assert_eq!(fs::metadata(lower.join("bin")).unwrap().mtime() as u64, MTIME, "directory mtimes are kept");

    let upper = extract_to(tmp, "upper", &image.layers[1].path, image.layers[1].layer.compression).unwrap();
    let gone = fs::symlink_metadata(upper.join("etc/gone")).unwrap();
    assert!(gone.file_type().is_char_device(), "a whiteout is a character device");
    assert_eq!(gone.rdev(), 0, "a whiteout is device 0/0");
    assert!(!upper.join("etc/.wh.gone").exists());
    assert_eq!(lgetxattr(&upper.join("data"), OPAQUE_XATTR).as_deref(), Some(&b"y"[..]));
    assert!(lgetxattr(&upper.join("etc"), OPAQUE_XATTR).is_none());
    assert!(!upper.join("data/.wh..wh..opq").exists());
    assert_eq!(fs::read(upper.join("data/new")).unwrap(), b"new");
    let mut names: Vec<_> = fs::read_dir(upper.join("data")).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["new"]);
}

#[test]
fn imports_an_oci_layout_with_gzip_layers() {
    let host = host_architecture();
    let oci = oci_image(host, gzip, LAYER_GZIP);
    let (tmp, result) = import_bytes(&oci.files.tar());
    let image = result.unwrap();

    assert_eq!(image.source, ImageSource::OciLayout);
    assert_eq!(image.source.to_string(), "oci-layout");
    assert_eq!(image.id, sha256(&oci.config));
    assert_test_image_config(&image, host);
    assert_eq!(image.layers.len(), 2);
    for (layer, blob) in image.layers.iter().zip(&oci.layer_blobs) {
        assert_eq!(layer.layer.digest, sha256(blob));
        assert_eq!(layer.layer.size, blob.len() as u64);
        assert_eq!(layer.layer.compression, Compression::Gzip);
        assert_eq!(fs::read(&layer.path).unwrap(), *blob);
        assert_eq!(layer.path, blob_path(&tmp.path().join("work"), &layer.layer.digest).unwrap());
        assert_eq!(sha256_file(&layer.path).unwrap(), layer.layer.digest);
    }
    // The config blob is written too, named by the image id.
    let config = blob_path(&tmp.path().join("work"), &image.id).unwrap();
    assert_eq!(fs::read(config).unwrap(), oci.config);
    // Nothing else: no leftover temporary files.
    assert_eq!(fs::read_dir(tmp.path().join("work")).unwrap().count(), 3);

    assert_test_layers_extract(tmp.path(), &image);
}

#[test]
fn imports_a_zstd_compressed_oci_layout_with_zstd_layers() {
    let oci = oci_image(host_architecture(), zstd, LAYER_ZSTD);
    let (tmp, result) = import_bytes(&zstd(&oci.files.tar()));
    let image = result.unwrap();
    assert_eq!(image.source, ImageSource::OciLayout);
    assert!(image.layers.iter().all(|l| l.layer.compression == Compression::Zstd));
    assert_test_layers_extract(tmp.path(), &image);
}

#[test]
fn layer_compression_comes_from_the_blob_not_the_media_type() {
    // Uncompressed layers that claim to be gzip.
    let oci = oci_image(host_architecture(), |t| t.to_vec(), LAYER_GZIP);
    let (_tmp, result) = import_bytes(&gzip(&oci.files.tar()));
    let image = result.unwrap();
    assert!(image.layers.iter().all(|l| l.layer.compression == Compression::None));
}

/// A `docker save` archive (the pre-OCI layout): `<id>/layer.tar` layers, `<config hex>.json`.
fn docker_save(config_override: Option<Vec<u8>>) -> (Files, Vec<u8>, Vec<Vec<u8>>) {
    let (lower, upper) = test_layers();
    let config = config_override.unwrap_or_else(|| config(host_architecture(), &[&lower, &upper, &lower]));
    let upper_gz = gzip(&upper);
    let config_name = format!("{}.json", hex_of(&sha256(&config)));
    let mut files = Files::default();
    files.add(&config_name, config.clone());
    files.add("1111/layer.tar", lower.clone());
    files.add("1111/VERSION", "1.0");
    files.add("2222/layer.tar", upper_gz.clone());
    files.add(
        "manifest.json",
        json_bytes(&json!([{
            "Config": config_name,
            "RepoTags": ["demo:latest"],
            "Layers": ["1111/layer.tar", "2222/layer.tar", "3333/layer.tar"]
        }])),
    );
    files.add("repositories", r#"{"demo":{"latest":"2222"}}"#);
    (files, config, vec![lower, upper_gz])
}

fn docker_save_tar(files: &Files) -> Vec<u8> {
    // The third layer is a symlink to the first, as `docker save` writes repeated layers.
    let mut items: Vec<Item> = files.0.iter().map(|(p, d)| Item::File(p, d, 0o644)).collect();
    items.push(Item::Dir("3333/"));
    items.push(Item::Symlink("3333/layer.tar", "../1111/layer.tar"));
    tar(&items)
}

#[test]
fn imports_a_docker_save_archive() {
    let (files, config, blobs) = docker_save(None);
    let (tmp, result) = import_bytes(&docker_save_tar(&files));
    let image = result.unwrap();
    assert_eq!(image.source, ImageSource::DockerSave);
    assert_eq!(image.source.to_string(), "docker save");
    assert_eq!(image.id, sha256(&config));
    assert_test_image_config(&image, host_architecture());
    assert_eq!(image.layers.len(), 3);
    assert_eq!(image.layers[0].layer.compression, Compression::None);
    assert_eq!(image.layers[1].layer.compression, Compression::Gzip);
    assert_eq!(image.layers[0].layer.digest, sha256(&blobs[0]));
    assert_eq!(image.layers[1].layer.digest, sha256(&blobs[1]));
    assert_eq!(image.layers[2], image.layers[0], "a symlinked layer is the same blob");
    assert_test_layers_extract(tmp.path(), &image);
}

#[test]
fn docker_save_layers_are_checked_against_diff_ids() {
    let (lower, upper) = test_layers();
    // The config claims other content for the second layer.
    let bad = config(host_architecture(), &[&lower, &lower, &lower]);
    let (files, _, _) = docker_save(Some(bad));
    let (_tmp, result) = import_bytes(&docker_save_tar(&files));
    let err = result.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{message}");
    assert!(message.contains(&sha256(&lower)) && message.contains(&sha256(&upper)), "{message}");
    assert!(message.contains("layer 2 of 3"), "{message}");
}

/// An OCI layout whose index offers the test image for `arches`; `nested` puts the platform
/// list in an image index blob that index.json points to. Returns the archive and each arch's
/// first layer blob.
fn multi_arch(arches: &[&str], nested: bool) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut files = Files::default();
    files.add("oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#);
    let mut entries = Vec::new();
    let mut firsts = Vec::new();
    for arch in arches {
        // A layer that differs per architecture.
        let layer = tar(&[Item::File("arch", arch.as_bytes(), 0o644)]);
        let blob = gzip(&layer);
        let config = config(arch, &[&layer]);
        let manifest = manifest(&config, &[(LAYER_GZIP, &blob)]);
        files.blob(config);
        files.blob(blob.clone());
        files.blob(manifest.clone());
        let mut d = descriptor(OCI_MANIFEST, &manifest);
        d["platform"] = json!({"architecture": arch, "os": "linux"});
        entries.push(d);
        firsts.push(blob);
    }
    // A build attestation, as buildx adds.
    let attestation = json_bytes(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, b"{}"), "layers": []}));
    files.blob(attestation.clone());
    let mut d = descriptor(OCI_MANIFEST, &attestation);
    d["platform"] = json!({"architecture": "unknown", "os": "unknown"});
    entries.push(d);

    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
    if nested {
        let index = json_bytes(&index);
        files.blob(index.clone());
        files.add("index.json", json_bytes(&json!({"schemaVersion": 2, "manifests": [descriptor(OCI_INDEX, &index)]})));
    } else {
        files.add("index.json", json_bytes(&index));
    }
    (files.tar(), firsts)
}

#[test]
fn multi_arch_index_without_the_host_architecture_is_an_error_naming_what_it_has() {
    let a = foreign_arch(&[]);
    let b = foreign_arch(&[a]);
    for nested in [true, false] {
        let (archive, _) = multi_arch(&[a, b], nested);
        let (_tmp, result) = import_bytes(&archive);
        let err = result.unwrap_err();
        let message = err.to_string();
        match &err {
            ImageError::NoManifestForArchitecture { wanted, found } => {
                assert_eq!(wanted, &format!("linux/{}", host_architecture()));
                assert_eq!(found, &[format!("linux/{a}"), format!("linux/{b}")]);
            }
            other => panic!("unexpected error: {other}"),
        }
        assert!(message.contains(&format!("linux/{a}")) && message.contains(host_architecture()), "{message}");
        assert!(!message.contains("unknown"), "{message}");
    }
}

#[test]
fn multi_arch_index_picks_the_host_architecture() {
    let host = host_architecture();
    let foreign = foreign_arch(&[]);
    for nested in [true, false] {
        let (archive, firsts) = multi_arch(&[foreign, host], nested);
        let (_tmp, result) = import_bytes(&archive);
        let image = result.unwrap();
        assert_eq!(image.config.architecture, host);
        assert_eq!(image.layers.len(), 1);
        assert_eq!(image.layers[0].layer.digest, sha256(&firsts[1]));
    }
}

#[test]
fn a_single_foreign_image_without_an_index_is_imported_as_is() {
    // Placement decides where it can run; import does not.
    let foreign = foreign_arch(&[]);
    let oci = oci_image(foreign, gzip, LAYER_GZIP);
    let (_tmp, result) = import_bytes(&oci.files.tar());
    assert_eq!(result.unwrap().config.architecture, foreign);
}

#[test]
fn imports_a_rootfs_tarball() {
    let rootfs = tar(&[
        Item::Dir("./"),
        Item::Dir("./etc/"),
        Item::File("./etc/hostname", b"box\n", 0o644),
        Item::Symlink("./etc/localtime", "/usr/share/zoneinfo/UTC"),
    ]);
    let archive = gzip(&rootfs);
    let (tmp, result) = import_bytes(&archive);
    let image = result.unwrap();
    assert_eq!(image.source, ImageSource::RootfsTarball);
    assert_eq!(image.source.to_string(), "rootfs tarball");
    assert_eq!(image.layers.len(), 1);
    let layer = &image.layers[0];
    assert_eq!(layer.layer.digest, sha256(&archive));
    assert_eq!(layer.layer.size, archive.len() as u64);
    assert_eq!(layer.layer.compression, Compression::Gzip);
    assert_eq!(fs::read(&layer.path).unwrap(), archive, "the blob is the archive as uploaded");
    assert_eq!(image.id, sha256(layer.layer.digest.as_bytes()));
    assert_eq!(image.config.architecture, host_architecture());
    assert!(image.config.entrypoint.is_empty() && image.config.cmd.is_empty() && image.config.env.is_empty());

    let dest = extract_to(tmp.path(), "root", &layer.path, layer.layer.compression).unwrap();
    assert_eq!(fs::read(dest.join("etc/hostname")).unwrap(), b"box\n");
    assert_eq!(fs::read_link(dest.join("etc/localtime")).unwrap(), Path::new("/usr/share/zoneinfo/UTC"));
}

#[test]
fn garbage_truncated_and_empty_archives_are_errors() {
    let rootfs = tar(&[Item::Dir("etc/"), Item::File("etc/big", &[b'x'; 100_000], 0o644)]);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let garbage: Vec<u8> = (0..8192)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    let gz = gzip(&rootfs);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", garbage),
        ("truncated tar", rootfs[..rootfs.len() / 2].to_vec()),
        ("tar cut at a block boundary", rootfs[..512 + 100_352].to_vec()),
        ("truncated tar.gz", gz[..gz.len() / 2].to_vec()),
        ("tar.gz without its trailer", gz[..gz.len() - 4].to_vec()),
        ("truncated tar.zst", {
            let z = zstd(&rootfs);
            z[..z.len() - 10].to_vec()
        }),
        ("text", b"hello, this is not an archive at all\n".to_vec()),
    ];
    for (name, bytes) in cases {
        let (tmp, result) = import_bytes(&bytes);
        match result {
            Err(ImageError::Corrupt { what, reason }) => {
                assert!(what.contains("upload"), "{name}: {what}: {reason}");
            }
            other => panic!("{name}: expected a corrupt archive error, got {other:?}"),
        }
        // Nothing written.
        let work = tmp.path().join("work");
        assert!(!work.exists() || fs::read_dir(&work).unwrap().count() == 0, "{name}");
    }
    for (name, bytes) in [("empty file", Vec::new()), ("empty tar", tar(&[])), ("empty tar.gz", gzip(&tar(&[])))] {
        let (_tmp, result) = import_bytes(&bytes);
        assert!(matches!(result, Err(ImageError::EmptyArchive { .. })), "{name}: {result:?}");
    }
    let (_tmp, result) = import_bytes(&[0xfd, b'7', b'z', b'X', b'Z', 0, 0, 0]);
    assert!(matches!(result, Err(ImageError::UnsupportedCompression { format: "xz", .. })), "{result:?}");
}

#[test]
fn a_blob_that_does_not_match_its_digest_is_an_error_naming_both() {
    let mut oci = oci_image(host_architecture(), gzip, LAYER_GZIP);
    let expected = sha256(&oci.layer_blobs[1]);
    let tampered = gzip(&tar(&[Item::File("evil", b"evil", 0o755)]));
    let actual = sha256(&tampered);
    let path = format!("blobs/sha256/{}", hex_of(&expected));
    for (p, data) in &mut oci.files.0 {
        if *p == path {
            *data = tampered.clone();
        }
    }
    let (tmp, result) = import_bytes(&oci.files.tar());
    let err = result.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{message}");
    assert!(message.contains(&expected) && message.contains(&actual), "{message}");
    assert!(message.contains("layer 2 of 2"), "{message}");
    // The bad blob is not left in the work directory.
    let leftovers: Vec<_> = fs::read_dir(tmp.path().join("work")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(leftovers.iter().all(|n| n.to_str() != Some(hex_of(&actual))), "{leftovers:?}");
    assert!(leftovers.iter().all(|n| !n.to_string_lossy().ends_with(".partial")), "{leftovers:?}");
}

#[test]
fn a_missing_blob_and_an_unsupported_media_type_are_errors() {
    let mut oci = oci_image(host_architecture(), gzip, LAYER_GZIP);
    let gone = format!("blobs/sha256/{}", hex_of(&sha256(&oci.layer_blobs[0])));
    oci.files.0.retain(|(p, _)| *p != gone);
    let (_tmp, result) = import_bytes(&oci.files.tar());
    let err = result.unwrap_err();
    assert!(matches!(err, ImageError::MissingBlob { .. }), "{err}");
    assert!(err.to_string().contains(&gone), "{err}");

    // A Helm chart, not a container image.
    let chart = gzip(b"chart");
    let config = json_bytes(&json!({}));
    let manifest_bytes = json_bytes(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.cncf.helm.config.v1+json", &config),
        "layers": [descriptor("application/vnd.cncf.helm.chart.content.v1.tar+gzip", &chart)]
    }));
    let mut files = Files::default();
    files.add("oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#);
    files.blob(config);
    files.blob(chart);
    files.blob(manifest_bytes.clone());
    files.add(
        "index.json",
        json_bytes(&json!({"schemaVersion": 2, "manifests": [descriptor(OCI_MANIFEST, &manifest_bytes)]})),
    );
    let (_tmp, result) = import_bytes(&files.tar());
    let err = result.unwrap_err();
    assert!(matches!(err, ImageError::UnsupportedMediaType { .. }), "{err}");
    assert!(err.to_string().contains("application/vnd.cncf.helm.config.v1+json"), "{err}");
}

/// Extracts a layer made of `items` into `<tmp>/dest`.
fn extract_items(tmp: &Path, items: &[Item]) -> Result<std::path::PathBuf, ImageError> {
    let blob = tmp.join("layer.tar");
    fs::write(&blob, tar(items)).unwrap();
    extract_to(tmp, "dest", &blob, Compression::None)
}

#[test]
fn path_traversal_is_rejected() {
    let cases: Vec<(&str, Vec<Item>)> = vec![
        ("dot-dot file", vec![Item::Raw { name: "../x", kind: tar::EntryType::Regular, link: "", data: b"x" }]),
        (
            "dot-dot below a directory",
            vec![Item::Raw { name: "a/../../x", kind: tar::EntryType::Regular, link: "", data: b"x" }],
        ),
        (
            "hard link out",
            vec![Item::Raw { name: "h", kind: tar::EntryType::Link, link: "../../../../etc/passwd", data: b"" }],
        ),
        (
            "whiteout of the parent",
            vec![Item::Raw { name: "../.wh.x", kind: tar::EntryType::Regular, link: "", data: b"" }],
        ),
    ];
    for (name, items) in cases {
        let tmp = TempDir::new().unwrap();
        let err = extract_items(tmp.path(), &items).unwrap_err();
        assert!(matches!(err, ImageError::PathEscape { .. }), "{name}: {err}");
        assert!(!tmp.path().join("x").exists(), "{name}");
    }
}

#[test]
fn symlinks_are_never_followed_when_extracting() {
    let tmp = TempDir::new().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let outside_str = outside.to_str().unwrap();
    let cases: Vec<(&str, Vec<Item>)> = vec![
        ("absolute symlink", vec![Item::Symlink("a", outside_str), Item::File("a/passwd", b"root::0:0", 0o644)]),
        ("relative symlink", vec![Item::Symlink("a", "../outside"), Item::File("a/passwd", b"root::0:0", 0o644)]),
        (
            "symlink to a directory, then a whiteout in it",
            vec![Item::Symlink("a", outside_str), Item::File("a/.wh.passwd", b"", 0o644)],
        ),
        (
            "symlink to a directory, then an opaque marker in it",
            vec![Item::Symlink("a", outside_str), Item::File("a/.wh..wh..opq", b"", 0o644)],
        ),
        ("hard link through a symlink", vec![Item::Symlink("a", outside_str), Item::Hardlink("h", "a/passwd")]),
    ];
    fs::write(outside.join("passwd"), "original").unwrap();
    for (name, items) in cases {
        let run = TempDir::new().unwrap();
        let err = extract_items(run.path(), &items).unwrap_err();
        assert!(matches!(err, ImageError::PathEscape { .. }), "{name}: {err}");
        assert_eq!(fs::read_to_string(outside.join("passwd")).unwrap(), "original", "{name}");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 1, "{name}");
        assert!(lgetxattr(&outside, OPAQUE_XATTR).is_none(), "{name}");
    }

    // A file replacing a symlink is written in its place, not through it.
    let run = TempDir::new().unwrap();
    let dest = extract_items(
        run.path(),
        &[Item::Symlink("f", &format!("{outside_str}/passwd")), Item::File("f", b"mine", 0o644)],
    )
    .unwrap();
    assert_eq!(fs::read(dest.join("f")).unwrap(), b"mine");
    assert_eq!(fs::read_to_string(outside.join("passwd")).unwrap(), "original");
}

#[test]
fn absolute_and_dotted_entry_paths_stay_inside() {
    let tmp = TempDir::new().unwrap();
    let dest = extract_items(
        tmp.path(),
        &[
            Item::Raw { name: "/abs/file", kind: tar::EntryType::Regular, link: "", data: b"abs" },
            Item::Raw { name: "./a/./b/../c", kind: tar::EntryType::Regular, link: "", data: b"c" },
            Item::Raw { name: "/hl", kind: tar::EntryType::Link, link: "/abs/file", data: b"" },
        ],
    )
    .unwrap();
    assert_eq!(fs::read(dest.join("abs/file")).unwrap(), b"abs");
    assert_eq!(fs::read(dest.join("a/c")).unwrap(), b"c");
    assert_eq!(fs::metadata(dest.join("hl")).unwrap().ino(), fs::metadata(dest.join("abs/file")).unwrap().ino());
}

#[test]
fn extraction_details() {
    let tmp = TempDir::new().unwrap();
    let dest = extract_items(
        tmp.path(),
        &[
            // A whiteout then a directory of the same name: a new, opaque directory.
            Item::File(".wh.cache", b"", 0o644),
            Item::Dir("cache/"),
            // A whiteout then a file under the same name, with no directory entry.
            Item::File(".wh.logs", b"", 0o644),
            Item::File("logs/today", b"log", 0o644),
            // A whiteout of a file the layer itself has: the file stays.
            Item::File("kept", b"kept", 0o644),
            Item::File(".wh.kept", b"", 0o644),
            // Ownership, setuid, and allowed and forbidden extended attributes.
            Item::Owned("suid", b"x", 0o4755, 4321, 8765),
            Item::Xattrs(&[("user.herd", b"1"), ("trusted.overlay.opaque", b"y")]),
            Item::Dir("labelled/"),
            // Other AUFS bookkeeping is dropped.
            Item::Dir(".wh..wh.plnk/"),
            Item::File(".wh..wh.plnk/12.34", b"", 0o644),
            Item::File(".wh..wh.aufs", b"", 0o644),
        ],
    )
    .unwrap();
    assert!(fs::metadata(dest.join("cache")).unwrap().is_dir());
    assert_eq!(lgetxattr(&dest.join("cache"), OPAQUE_XATTR).as_deref(), Some(&b"y"[..]));
    assert_eq!(lgetxattr(&dest.join("logs"), OPAQUE_XATTR).as_deref(), Some(&b"y"[..]));
    assert_eq!(fs::read(dest.join("logs/today")).unwrap(), b"log");
    assert_eq!(fs::read(dest.join("kept")).unwrap(), b"kept");
    let suid = fs::metadata(dest.join("suid")).unwrap();
    assert_eq!((suid.uid(), suid.gid(), suid.permissions().mode() & 0o7777), (4321, 8765, 0o4755));
    assert_eq!(lgetxattr(&dest.join("labelled"), "user.herd").as_deref(), Some(&b"1"[..]));
    assert!(lgetxattr(&dest.join("labelled"), OPAQUE_XATTR).is_none());
    let mut names: Vec<_> =
        fs::read_dir(&dest).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["cache", "kept", "labelled", "logs", "suid"]);
}

#[test]
fn extract_layer_checks_its_destination_and_compression() {
    let tmp = TempDir::new().unwrap();
    let blob = tmp.path().join("layer.tar.gz");
    fs::write(&blob, gzip(&tar(&[Item::File("f", b"f", 0o644)]))).unwrap();
    let dest = tmp.path().join("dest");
    fs::create_dir(&dest).unwrap();
    fs::write(dest.join("already"), "here").unwrap();
    let err = extract_layer(&blob, Compression::Gzip, &dest).unwrap_err();
    assert!(matches!(err, ImageError::InvalidDestination { .. }), "{err}");
    let err = extract_layer(&blob, Compression::Gzip, &tmp.path().join("missing")).unwrap_err();
    assert!(matches!(err, ImageError::InvalidDestination { .. }), "{err}");

    let err = extract_to(tmp.path(), "plain", &blob, Compression::None).unwrap_err();
    assert!(err.to_string().contains("gzip"), "{err}");
    let dest = extract_to(tmp.path(), "ok", &blob, Compression::Gzip).unwrap();
    assert_eq!(fs::read(dest.join("f")).unwrap(), b"f");
}

#[test]
fn pack_import_extract_round_trips_a_directory() {
    let tmp = TempDir::new().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("bin")).unwrap();
    fs::create_dir_all(src.join("etc/empty")).unwrap();
    let run = src.join("bin/run");
    fs::write(&run, "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(&run, fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&run, Some(1234), Some(5678)).unwrap();
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(MTIME);
    fs::File::options().write(true).open(&run).unwrap().set_modified(when).unwrap();
    std::os::unix::fs::symlink("run", src.join("bin/run-link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", src.join("dangling")).unwrap();
    fs::hard_link(&run, src.join("bin/run-hard")).unwrap();
    fs::write(src.join("etc/secret"), "s").unwrap();
    fs::set_permissions(src.join("etc/secret"), fs::Permissions::from_mode(0o640)).unwrap();
    let fifo = std::ffi::CString::new(src.join("fifo").to_str().unwrap()).unwrap();
    // SAFETY: valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);

    let archive = tmp.path().join("rootfs.tar");
    pack_dir(&src, fs::File::create(&archive).unwrap()).unwrap();
    let image = import_archive(&archive, &tmp.path().join("work"), &UnpackLimits::default()).unwrap();
    assert_eq!(image.source, ImageSource::RootfsTarball);
    assert_eq!(image.layers[0].layer.compression, Compression::None);
    let dest = extract_to(tmp.path(), "dest", &image.layers[0].path, Compression::None).unwrap();

    let meta = fs::metadata(dest.join("bin/run")).unwrap();
    assert_eq!(fs::read(dest.join("bin/run")).unwrap(), b"#!/bin/sh\nexit 0\n");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
    assert_eq!((meta.uid(), meta.gid()), (1234, 5678));
    assert_eq!(meta.mtime() as u64, MTIME);
    assert_eq!(fs::read_link(dest.join("bin/run-link")).unwrap(), Path::new("run"));
    assert_eq!(fs::read_link(dest.join("dangling")).unwrap(), Path::new("/nonexistent/target"));
    assert_eq!(fs::metadata(dest.join("bin/run-hard")).unwrap().ino(), meta.ino(), "hard links stay linked");
    assert_eq!(fs::metadata(dest.join("etc/secret")).unwrap().permissions().mode() & 0o7777, 0o640);
    assert!(fs::metadata(dest.join("etc/empty")).unwrap().is_dir());
    assert!(!dest.join("fifo").exists() && fs::symlink_metadata(dest.join("fifo")).is_err(), "fifos are skipped");

    // Packing is deterministic: the same tree gives the same bytes.
    let mut again = Vec::new();
    pack_dir(&src, &mut again).unwrap();
    assert_eq!(again, fs::read(&archive).unwrap());
}
