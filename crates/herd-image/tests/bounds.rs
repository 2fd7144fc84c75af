//! Import and extraction stay within their bounds: compressed bombs, sparse files, layers and
//! images larger than allowed, and a disk reserve. Run as root (extraction sets owners).

mod support;

use std::fs;
use std::path::Path;
use std::time::Instant;

use herd_image::{
    Bound, DiskReserve, ImageError, LayerBounds, UnpackLimits, disk_space, extract_layer_within, import_archive,
};
use herd_proto::state::Compression;
use serde_json::json;
use support::*;

const MIB: u64 = 1 << 20;

/// Imports `bytes` as an archive with `limits`; returns the result and what the work
/// directory holds afterwards.
fn import_with(bytes: &[u8], limits: UnpackLimits) -> (Result<herd_image::ImportedImage, ImageError>, Vec<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("upload");
    fs::write(&archive, bytes).unwrap();
    let work = tmp.path().join("work");
    let result = import_archive(&archive, &work, &limits);
    (result, listing(&work))
}

fn listing(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

/// Bytes of the regular files below `dir`, as allocated on disk.
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        total += if m.is_dir() { disk_usage(&e.path()) } else { m.blocks() * 512 };
    }
    total
}

/// A tar of `count` files of `size` zero bytes each.
fn zero_files(count: usize, size: usize) -> Vec<u8> {
    let zeros = vec![0u8; size];
    let names: Vec<String> = (0..count).map(|i| format!("f{i:03}")).collect();
    let items: Vec<Item> = names.iter().map(|n| Item::File(n, &zeros, 0o644)).collect();
    tar(&items)
}

/// An OCI layout of an image with the given (compressed) layer blobs.
fn oci_of(blobs: &[Vec<u8>], diff_ids: &[&[u8]]) -> Vec<u8> {
    let config = config(herd_image::host_architecture(), diff_ids);
    let layers: Vec<(&str, &[u8])> = blobs.iter().map(|b| (LAYER_GZIP, b.as_slice())).collect();
    let manifest = manifest(&config, &layers);
    let mut files = Files::default();
    files.add("oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#);
    files.blob(config);
    for b in blobs {
        if !files.0.iter().any(|(p, _)| p.ends_with(hex_of(&sha256(b)))) {
            files.blob(b.clone());
        }
    }
    let digest = files.blob(manifest.clone());
    files.add(
        "index.json",
        json_bytes(&json!({"schemaVersion": 2, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": digest, "size": manifest.len()}
        ]})),
    );
    files.tar()
}

#[test]
fn a_gzip_bomb_is_refused_without_inflating_it() {
    // 17 MB that inflate to 16 GiB of zeros, as a root filesystem tarball.
    let bomb = gzip_bomb("zeros", 16 << 30);
    assert!(bomb.len() < 20_000_000, "{}", bomb.len());
    let started = Instant::now();
    let (result, left) = import_with(&bomb, UnpackLimits { layer: 64 * MIB, image: 256 * MIB });
    let took = started.elapsed();
    let err = result.unwrap_err();
    assert!(matches!(err, ImageError::TooLarge { bound: Bound::Layer, limit, .. } if limit == 64 * MIB), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("more than 64MiB") && msg.contains("--max-layer-size"), "{msg}");
    assert!(msg.contains("member \"zeros\" (16GiB)"), "{msg}");
    assert!(left.is_empty(), "the import left {left:?}");
    eprintln!("refused a 16 GiB gzip bomb in {took:?}");
}

#[test]
fn a_layer_of_many_files_stops_at_the_layer_bound() {
    // 48 files of 1 MiB, each well under the bound, inside an OCI image: the layer is refused
    // while it is read, and the blobs written so far are the caller's to remove.
    let layer = zero_files(48, MIB as usize);
    let oci = oci_of(&[gzip(&layer)], &[&layer]);
    let (result, _) = import_with(&oci, UnpackLimits { layer: 16 * MIB, image: 1 << 30 });
    let err = result.unwrap_err();
    assert!(matches!(err, ImageError::TooLarge { bound: Bound::Layer, .. }), "{err}");
    assert!(err.to_string().starts_with("layer 1 of 1 (sha256:"), "{err}");
    // Within the bound, it imports.
    let (result, _) = import_with(&oci, UnpackLimits { layer: 64 * MIB, image: 1 << 30 });
    result.unwrap();
}

#[test]
fn the_image_bound_counts_distinct_layers_once() {
    let a = zero_files(10, MIB as usize);
    let b = tar(&[Item::File("other", &[1u8; 10 << 20], 0o644)]);
    let limits = UnpackLimits { layer: 16 * MIB, image: 16 * MIB };
    // Two different layers of 10 MiB: over the image bound.
    let (result, _) = import_with(&oci_of(&[gzip(&a), gzip(&b)], &[&a, &b]), limits);
    let err = result.unwrap_err();
    assert!(matches!(err, ImageError::TooLarge { bound: Bound::Image, .. }), "{err}");
    assert!(err.to_string().contains("--max-image-size"), "{err}");
    // One layer listed twice is unpacked once, so it counts once.
    let (result, _) = import_with(&oci_of(&[gzip(&a), gzip(&a)], &[&a, &a]), limits);
    assert_eq!(result.unwrap().layers.len(), 2);
}

/// A GNU sparse tar entry `name` of `real_size` bytes storing only 512 bytes of data.
fn sparse_tar(name: &str, real_size: u64) -> Vec<u8> {
    let octal = |field: &mut [u8], v: u64| {
        let s = format!("{v:0width$o}", width = field.len() - 1);
        field[..s.len()].copy_from_slice(s.as_bytes());
        field[s.len()] = 0;
    };
    let mut h = tar::Header::new_gnu();
    h.set_path(name).unwrap();
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_mode(0o644);
    h.set_mtime(MTIME);
    h.set_size(512);
    let gnu = h.as_gnu_mut().unwrap();
    octal(&mut gnu.realsize, real_size);
    octal(&mut gnu.sparse[0].offset, real_size - 512);
    octal(&mut gnu.sparse[0].numbytes, 512);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend([b'x'; 512]);
    out.extend([0u8; 1024]);
    out
}

#[test]
fn a_sparse_file_counts_at_its_full_size() {
    let layer = sparse_tar("holes", 1 << 30);
    let tmp = tempfile::tempdir().unwrap();
    let blob = tmp.path().join("blob");
    fs::write(&blob, &layer).unwrap();
    let dest = tmp.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let err = extract_layer_within(&blob, Compression::None, &dest, &LayerBounds { max_size: 64 * MIB, reserve: None })
        .unwrap_err();
    assert!(matches!(err, ImageError::TooLarge { .. }), "{err}");
    assert!(listing(&dest).is_empty(), "{:?}", listing(&dest));
}

#[test]
fn extraction_stops_at_its_bound_and_writes_no_more() {
    let layer = gzip(&zero_files(64, MIB as usize));
    let tmp = tempfile::tempdir().unwrap();
    let blob = tmp.path().join("blob");
    fs::write(&blob, &layer).unwrap();
    let dest = tmp.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let bounds = LayerBounds { max_size: 8 * MIB, reserve: None };
    let err = extract_layer_within(&blob, Compression::Gzip, &dest, &bounds).unwrap_err();
    assert!(matches!(err, ImageError::TooLarge { bound: Bound::Layer, limit, .. } if limit == 8 * MIB), "{err}");
    let written = disk_usage(&dest);
    assert!(written <= 8 * MIB, "wrote {written} bytes past an 8 MiB bound");
    // Unbounded, the same layer unpacks whole.
    let dest2 = tmp.path().join("dest2");
    fs::create_dir(&dest2).unwrap();
    extract_layer_within(&blob, Compression::Gzip, &dest2, &LayerBounds::default()).unwrap();
    assert_eq!(listing(&dest2).len(), 64);
}

#[test]
fn extraction_keeps_the_disk_reserve() {
    let layer = gzip(&zero_files(16, MIB as usize));
    let tmp = tempfile::tempdir().unwrap();
    let blob = tmp.path().join("blob");
    fs::write(&blob, &layer).unwrap();
    let dest = tmp.path().join("dest");
    fs::create_dir(&dest).unwrap();
    // A reserve as large as the filesystem cannot be kept.
    let (_, total) = disk_space(tmp.path()).unwrap();
    let bounds = LayerBounds { max_size: u64::MAX, reserve: Some(DiskReserve { path: dest.clone(), bytes: total }) };
    let err = extract_layer_within(&blob, Compression::Gzip, &dest, &bounds).unwrap_err();
    assert!(matches!(err, ImageError::DiskReserve { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("--disk-reserve") && msg.contains(&dest.display().to_string()), "{msg}");
    assert!(disk_usage(&dest) <= 4 * MIB + 64 * 1024, "{}", disk_usage(&dest));
}
