//! Builders for the archives the tests import: tars, compressed blobs, OCI layouts and
//! `docker save` archives, all made in memory.

#![allow(dead_code)]

use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const MTIME: u64 = 1_700_000_000;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// One entry of a tar built by [`tar`].
pub enum Item<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8], u32),
    /// A file with an owner.
    Owned(&'a str, &'a [u8], u32, u64, u64),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    /// Written with its name bytes as given, bypassing the tar crate's path checks.
    Raw {
        name: &'a str,
        kind: tar::EntryType,
        link: &'a str,
        data: &'a [u8],
    },
    /// PAX extended attributes (`SCHILY.xattr.<name>`) for the next entry.
    Xattrs(&'a [(&'a str, &'a [u8])]),
}

/// A tar of `items`, all with mtime [`MTIME`] and owner 0:0 unless said otherwise.
pub fn tar(items: &[Item]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for item in items {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(MTIME);
        h.set_uid(0);
        h.set_gid(0);
        match item {
            Item::Dir(path) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, path, &[][..]).unwrap();
            }
            Item::File(path, data, mode) => {
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, *data).unwrap();
            }
            Item::Owned(path, data, mode, uid, gid) => {
                h.set_mode(*mode);
                h.set_uid(*uid);
                h.set_gid(*gid);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, *data).unwrap();
            }
            Item::Symlink(path, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, path, target).unwrap();
            }
            Item::Hardlink(path, target) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_link(&mut h, path, target).unwrap();
            }
            Item::Raw { name, kind, link, data } => {
                h.set_entry_type(*kind);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                let gnu = h.as_gnu_mut().unwrap();
                gnu.name[..name.len()].copy_from_slice(name.as_bytes());
                gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
            Item::Xattrs(attrs) => {
                let keys: Vec<(String, &[u8])> = attrs.iter().map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v)).collect();
                b.append_pax_extensions(keys.iter().map(|(k, v)| (k.as_str(), *v))).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

pub fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap()
}

/// The files of an archive being assembled, in order.
#[derive(Default)]
pub struct Files(pub Vec<(String, Vec<u8>)>);

impl Files {
    pub fn add(&mut self, path: &str, data: impl Into<Vec<u8>>) {
        self.0.push((path.to_string(), data.into()));
    }

    /// Adds a blob under `blobs/sha256/` and returns its digest.
    pub fn blob(&mut self, data: impl Into<Vec<u8>>) -> String {
        let data = data.into();
        let digest = sha256(&data);
        self.add(&format!("blobs/sha256/{}", hex_of(&digest)), data);
        digest
    }

    pub fn tar(&self) -> Vec<u8> {
        let items: Vec<Item> = self.0.iter().map(|(p, d)| Item::File(p, d, 0o644)).collect();
        tar(&items)
    }
}

pub fn descriptor(media_type: &str, data: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": sha256(data), "size": data.len()})
}

pub fn json_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

/// An image config for `arch` whose layers have the given uncompressed tars.
pub fn config(arch: &str, layer_tars: &[&[u8]]) -> Vec<u8> {
    let diff_ids: Vec<String> = layer_tars.iter().map(|t| sha256(t)).collect();
    json_bytes(&json!({
        "architecture": arch,
        "os": "linux",
        "config": {
            "Entrypoint": ["/bin/tool"],
            "Cmd": ["--serve", "8080"],
            "Env": ["PATH=/usr/bin:/bin", "MODE=test"],
            "WorkingDir": "/data",
            "User": "1000:1000",
            "ExposedPorts": {"8080/tcp": {}, "53/udp": {}, "9000": {}, "not-a-port": {}, "0/tcp": {}}
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    }))
}

/// A manifest of a config and `(media type, blob)` layers.
pub fn manifest(config: &[u8], layers: &[(&str, &[u8])]) -> Vec<u8> {
    let layers: Vec<Value> = layers.iter().map(|(t, b)| descriptor(t, b)).collect();
    json_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": layers
    }))
}

/// The two layers of the test image, uncompressed: the second deletes `etc/gone` with a
/// whiteout and makes `data` opaque.
pub fn test_layers() -> (Vec<u8>, Vec<u8>) {
    let lower = tar(&[
        Item::Dir("etc/"),
        Item::File("etc/keep", b"keep", 0o644),
        Item::File("etc/gone", b"gone", 0o644),
        Item::Dir("data/"),
        Item::File("data/old", b"old", 0o600),
        Item::Dir("bin/"),
        Item::File("bin/tool", b"#!/bin/sh\necho hi\n", 0o755),
    ]);
    let upper = tar(&[
        Item::Dir("etc/"),
        Item::File("etc/.wh.gone", b"", 0o644),
        Item::Dir("data/"),
        Item::File("data/.wh..wh..opq", b"", 0o644),
        Item::File("data/new", b"new", 0o644),
    ]);
    (lower, upper)
}

/// An OCI layout of the test image with the layers compressed by `compress`.
pub struct OciImage {
    pub files: Files,
    pub config: Vec<u8>,
    pub layer_blobs: Vec<Vec<u8>>,
}

pub fn oci_image(arch: &str, compress: fn(&[u8]) -> Vec<u8>, media_type: &str) -> OciImage {
    let (lower, upper) = test_layers();
    let blobs = vec![compress(&lower), compress(&upper)];
    let config = config(arch, &[&lower, &upper]);
    let manifest = manifest(&config, &[(media_type, &blobs[0]), (media_type, &blobs[1])]);
    let mut files = Files::default();
    files.add("oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#);
    files.blob(config.clone());
    for b in &blobs {
        files.blob(b.clone());
    }
    let manifest_digest = files.blob(manifest.clone());
    files.add(
        "index.json",
        json_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{
                "mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": "latest"}
            }]
        })),
    );
    OciImage { files, config, layer_blobs: blobs }
}

/// Reads an extended attribute without following symlinks.
pub fn lgetxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
    let c_name = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid strings and a buffer with its length.
    let n = unsafe { libc::lgetxattr(c_path.as_ptr(), c_name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

/// A Go-style architecture name that is not the host's.
pub fn foreign_arch(not: &[&str]) -> &'static str {
    ["s390x", "arm64", "amd64", "riscv64", "ppc64le"]
        .into_iter()
        .find(|a| *a != herd_image::host_architecture() && !not.contains(a))
        .unwrap()
}

/// A gzip bomb: a gzip-compressed tar holding one file `name` of `size` zero bytes (`size` a
/// multiple of 1 MiB), made without ever holding the zeros: the stream is a series of gzip
/// members (which `gzip -d` reads as one stream), the first holding the tar header, then one
/// member of 1 MiB of zeros (about 1 KiB compressed) repeated, then the end-of-archive blocks.
/// 16 GiB take 17 MB.
pub fn gzip_bomb(name: &str, size: u64) -> Vec<u8> {
    const CHUNK: u64 = 1 << 20;
    assert_eq!(size % CHUNK, 0, "the size must be a multiple of 1 MiB");
    let best = |data: &[u8]| {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    };
    let mut header = tar::Header::new_gnu();
    header.set_path(name).unwrap();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(MTIME);
    header.set_cksum();
    let mut out = best(header.as_bytes());
    let zeros = best(&vec![0u8; CHUNK as usize]);
    for _ in 0..size / CHUNK {
        out.extend_from_slice(&zeros);
    }
    out.extend(best(&[0u8; 1024]));
    out
}
