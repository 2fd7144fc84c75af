//! Importing an uploaded archive (rootfs tarball, OCI image layout or `docker save`) as image
//! layer blobs plus the configuration that decides how a container starts.
//!
//! The archive is read twice: a first pass lists its members and keeps the small JSON documents
//! (index, manifests, configs) in memory; once the manifests say which blobs make up the image,
//! a second pass copies just those blobs to the work directory, checking their digests.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use herd_proto::state::{Compression, ImageConfig, LayerRef};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::arch::host_architecture;
use crate::bounds::{Meter, Metered, UnpackLimits, charge_entry};
use crate::compress::{self, Sniffed, decoder, sniff_file};
use crate::digest::{HashingReader, HashingWriter, sha256_bytes, sha256_hex};
use crate::error::ImageError;
use crate::media_types::{CONFIG_TYPES, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, LAYER_TYPES, OCI_INDEX, OCI_MANIFEST};
use crate::tarwalk::{copy_data, corrupt, normalize, walk_tar};

/// What kind of archive was imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageSource {
    RootfsTarball,
    OciLayout,
    DockerSave,
}

impl ImageSource {
    /// The name shown to users and kept in `ImageRecord::source`.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageSource::RootfsTarball => "rootfs tarball",
            ImageSource::OciLayout => "oci-layout",
            ImageSource::DockerSave => "docker save",
        }
    }
}

impl fmt::Display for ImageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One layer of an imported image and where its blob was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedLayer {
    pub layer: LayerRef,
    /// The blob file inside the work directory ([`blob_path`] of the layer digest).
    pub path: PathBuf,
}

/// The result of [`import_archive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedImage {
    pub source: ImageSource,
    /// `sha256:<hex>`: the config blob's digest (OCI, docker save), or for a rootfs tarball the
    /// sha256 of its layer's digest string.
    pub id: String,
    pub config: ImageConfig,
    /// Bottom layer first.
    pub layers: Vec<ImportedLayer>,
}

/// Where [`import_archive`] writes the blob with `digest` inside `workdir`: `workdir/<hex>`.
/// `None` when `digest` is not a `sha256:<64 hex digits>` digest.
pub fn blob_path(workdir: &Path, digest: &str) -> Option<PathBuf> {
    sha256_hex(digest).map(|hex| workdir.join(hex))
}

/// Reads an uploaded archive (a tar, optionally gzip- or zstd-compressed: detected by magic
/// bytes) and works out what it is:
///
/// - an OCI image layout (it has `oci-layout` and `index.json`): index -> manifest (in an image
///   index, the first entry whose platform is `linux/<host architecture>`) -> config and
///   layers, blobs under `blobs/sha256/<hex>`;
/// - a `docker save` archive (it has `manifest.json`): the first image of `manifest.json`, its
///   `Config` and `Layers` (paths inside the archive);
/// - anything else: a rootfs tarball, one layer whose blob is the archive as uploaded.
///
/// Every blob the image uses is checked against its digest and written to `workdir` (created if
/// needed) as `<hex>` (see [`blob_path`]): the layers, and for OCI and docker images the config,
/// whose digest is the image id. Layers are also read through as tars, and checked against the
/// config's `rootfs.diff_ids` when it lists them (the only check `docker save` layers get).
/// Layer compression comes from the blobs' magic bytes, not from media types.
///
/// Decompression is bounded by `limits`: the archive as a whole may unpack to at most
/// `limits.image` bytes, each layer to `limits.layer` (a rootfs tarball is one layer), and the
/// distinct layers together to `limits.image`. Reading stops as soon as a bound is passed
/// ([`ImageError::TooLarge`]), so a compressed bomb costs no more than the bound.
///
/// On error, `workdir` may hold some blobs already written; the caller removes it.
pub fn import_archive(archive: &Path, workdir: &Path, limits: &UnpackLimits) -> Result<ImportedImage, ImageError> {
    let scan = Scan::read(archive, limits)?;
    fs::create_dir_all(workdir).map_err(ImageError::io("create directory", workdir))?;
    let is_file = |name: &str| scan.resolve(Path::new(name)).is_some();
    if is_file("oci-layout") && is_file("index.json") {
        scan.import_oci(workdir)
    } else if is_file("manifest.json") {
        scan.import_docker(workdir)
    } else {
        scan.import_rootfs(workdir)
    }
}

/// Largest JSON document (index, manifest, config) read from an archive.
const MAX_JSON_LEN: u64 = 4 << 20;
/// Largest total of JSON documents kept in memory while scanning an archive.
const MAX_JSON_TOTAL: usize = 64 << 20;
/// JSON documents are only looked for this many path components deep (`blobs/sha256/<hex>`).
const MAX_JSON_DEPTH: usize = 3;

// --- JSON documents -------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: Option<String>,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Default, Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// An OCI or Docker image configuration (the parts we use).
#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    config: Option<RunConfig>,
    #[serde(default)]
    rootfs: Option<RootFs>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RunConfig {
    #[serde(default)]
    entrypoint: Option<StringOrList>,
    #[serde(default)]
    cmd: Option<StringOrList>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    /// `{"80/tcp": {}}`: only the keys mean something.
    #[serde(default)]
    exposed_ports: Option<std::collections::BTreeMap<String, serde::de::IgnoredAny>>,
}

/// Docker accepts a single string where a list of strings is expected (`"Cmd": "sh"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    List(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    #[serde(default)]
    layers: Vec<String>,
}

impl ConfigFile {
    fn image_config(&self) -> ImageConfig {
        let run = self.config.as_ref();
        let list = |f: fn(&RunConfig) -> &Option<StringOrList>| {
            run.and_then(|r| match f(r) {
                Some(StringOrList::One(s)) => Some(vec![s.clone()]),
                Some(StringOrList::List(v)) => Some(v.clone()),
                None => None,
            })
            .unwrap_or_default()
        };
        ImageConfig {
            entrypoint: list(|r| &r.entrypoint),
            cmd: list(|r| &r.cmd),
            env: run.and_then(|r| r.env.clone()).unwrap_or_default(),
            working_dir: run.and_then(|r| r.working_dir.clone()).unwrap_or_default(),
            user: run.and_then(|r| r.user.clone()).unwrap_or_default(),
            architecture: self.architecture.clone(),
            exposed_ports: run.and_then(|r| r.exposed_ports.as_ref()).map(exposed_ports).unwrap_or_default(),
        }
    }
}

/// The most exposed ports an image keeps: they travel in its record and every container's.
const MAX_EXPOSED: usize = 256;

/// An image's exposed ports as Docker writes them (`80/tcp`; `tcp` when no protocol is
/// given), sorted by port: keys that are no port are left out, and past [`MAX_EXPOSED`] the rest.
fn exposed_ports<V>(keys: &std::collections::BTreeMap<String, V>) -> Vec<String> {
    let mut ports: Vec<(u16, &str)> = keys
        .keys()
        .filter_map(|k| {
            let (port, proto) = k.split_once('/').unwrap_or((k, "tcp"));
            let proto = ["tcp", "udp", "sctp"].into_iter().find(|p| p.eq_ignore_ascii_case(proto))?;
            let port: u16 = port.parse().ok().filter(|p| *p > 0 && port.bytes().all(|b| b.is_ascii_digit()))?;
            Some((port, proto))
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports.into_iter().take(MAX_EXPOSED).map(|(port, proto)| format!("{port}/{proto}")).collect()
}

/// An image configuration blob read for what starts a container, and the platform it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedConfig {
    pub config: ImageConfig,
    pub os: String,
    pub architecture: String,
}

/// Reads an OCI or Docker image configuration blob (what `herd image pull` fetches from a
/// registry) the way [`import_archive`] reads one from an archive.
pub fn parse_image_config(bytes: &[u8]) -> Result<ParsedConfig, serde_json::Error> {
    let file: ConfigFile = serde_json::from_slice(bytes)?;
    Ok(ParsedConfig { config: file.image_config(), os: file.os.clone(), architecture: file.architecture.clone() })
}

/// Whether a platform is one this host runs: Linux (or unspecified) on the host architecture.
fn runs_here(os: &str, architecture: &str) -> bool {
    (os.is_empty() || os == "linux") && architecture == host_architecture()
}

/// `os/arch[/variant]`, for the list of platforms an index offers.
fn platform_name(os: &str, architecture: &str, variant: Option<&str>) -> String {
    let os = if os.is_empty() { "linux" } else { os };
    match variant {
        Some(v) if !v.is_empty() => format!("{os}/{architecture}/{v}"),
        _ => format!("{os}/{architecture}"),
    }
}

// --- the archive ----------------------------------------------------------------------------

/// What a member of the archive is.
#[derive(Debug)]
enum MemberKind {
    File,
    /// A symbolic or hard link, with its target as a normalised archive path (`None` when the
    /// target climbs out of the archive).
    Link(Option<PathBuf>),
    Other,
}

#[derive(Debug)]
struct Member {
    /// Position among the archive's entries.
    index: u64,
    kind: MemberKind,
}

/// One blob the second pass copies out, and what the manifest says about it.
struct Want {
    what: String,
    expected: Option<String>,
}

/// A blob copied to the work directory.
#[derive(Debug, Clone)]
struct Fetched {
    digest: String,
    size: u64,
    compression: Compression,
    path: PathBuf,
}

/// The first pass over an archive.
struct Scan {
    archive: PathBuf,
    /// How the archive itself is compressed.
    compression: Compression,
    /// Members by normalised path (the last entry of a path wins, as when extracting).
    members: HashMap<PathBuf, Member>,
    /// Contents of the small JSON-looking files, by entry index.
    json: HashMap<u64, Vec<u8>>,
    entries: u64,
    /// What the archive unpacks to (see [`crate::bounds`]).
    unpacked: u64,
    limits: UnpackLimits,
}

impl Scan {
    /// Reads the whole archive once: checks it is a readable tar, lists members, keeps JSON.
    fn read(archive: &Path, limits: &UnpackLimits) -> Result<Scan, ImageError> {
        let what = archive.display().to_string();
        let compression = sniff_file(archive, &what)?;
        let file = File::open(archive).map_err(ImageError::io("open", archive))?;
        // The whole archive is bounded by the image bound; a rootfs tarball, which is one
        // layer, by the layer bound too once it is known to be one (after this pass).
        let meter = Meter::new(&UnpackLimits { layer: u64::MAX, image: limits.image }, 0, None);
        let reader = decoder(file, compression).map_err(|e| corrupt(&what, &e))?;
        let reader = Metered { inner: reader, meter: meter.clone() };
        let mut members = HashMap::new();
        let mut json = HashMap::new();
        let mut json_total = 0usize;
        let mut index = 0u64;
        let entries = walk_tar(reader, &what, true, |entry| {
            let i = index;
            index += 1;
            // Any member is a file of a root filesystem, a layer or a compressed layer blob, so
            // none can be much larger than a layer (compression adds a little to incompressible data).
            if entry.size() > limits.layer.saturating_add(limits.layer / 64).saturating_add(1 << 20) {
                let member = entry.path().map(|p| p.display().to_string()).unwrap_or_default();
                return Err(ImageError::TooLarge {
                    what: format!("the archive's member {member:?} ({})", herd_proto::units::Bytes(entry.size())),
                    limit: limits.layer,
                    bound: crate::bounds::Bound::Layer,
                });
            }
            if !charge_entry(&meter, entry) {
                return Err(corrupt(&what, &std::io::Error::other("over an unpack bound")));
            }
            let Some(path) = normalize(&entry.path().map_err(|e| corrupt(&what, &e))?) else {
                return Ok(()); // climbs out of the archive: nothing can refer to it
            };
            let link_target = || -> Result<Option<PathBuf>, ImageError> {
                Ok(entry.link_name().map_err(|e| corrupt(&what, &e))?.map(|t| t.into_owned()))
            };
            let kind = match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => MemberKind::File,
                // A symlink is relative to its directory (an absolute one to the archive root).
                tar::EntryType::Symlink => MemberKind::Link(
                    link_target()?.and_then(|t| normalize(&path.parent().unwrap_or(Path::new("")).join(t))),
                ),
                tar::EntryType::Link => MemberKind::Link(link_target()?.and_then(|t| normalize(&t))),
                _ => MemberKind::Other,
            };
            if matches!(kind, MemberKind::File)
                && entry.size() <= MAX_JSON_LEN
                && json_total < MAX_JSON_TOTAL
                && path.components().count() <= MAX_JSON_DEPTH
            {
                // Look at the first bytes before reading the rest: most files are no JSON.
                let mut data = Vec::new();
                entry.by_ref().take(16).read_to_end(&mut data).map_err(|e| corrupt(&what, &e))?;
                let json_like = data.iter().find(|b| !b.is_ascii_whitespace()).is_none_or(|b| b"{[".contains(b));
                if json_like {
                    entry.read_to_end(&mut data).map_err(|e| corrupt(&what, &e))?;
                    if data.len() as u64 != entry.size() {
                        return Err(ImageError::Corrupt {
                            what: what.clone(),
                            reason: format!("member {} is cut short", path.display()),
                        });
                    }
                    json_total += data.len();
                    json.insert(i, data);
                }
            }
            members.insert(path, Member { index: i, kind });
            Ok(())
        })
        .map_err(|e| meter.explain("the archive", e))?;
        Ok(Scan {
            archive: archive.to_path_buf(),
            compression,
            members,
            json,
            entries,
            unpacked: meter.used(),
            limits: *limits,
        })
    }

    /// The regular file that `path` is, or that it links to.
    fn resolve(&self, path: &Path) -> Option<&Member> {
        let mut path = path;
        for _ in 0..40 {
            let member = self.members.get(path)?;
            match &member.kind {
                MemberKind::File => return Some(member),
                MemberKind::Link(Some(target)) => path = target,
                _ => return None,
            }
        }
        None
    }

    /// The member at `path`, which must exist; `what` says what it is for.
    fn member(&self, path: &Path, what: &str) -> Result<&Member, ImageError> {
        self.resolve(path).ok_or_else(|| ImageError::MissingBlob {
            archive: self.archive.clone(),
            what: what.to_string(),
            member: path.display().to_string(),
        })
    }

    /// The contents of the JSON document at `path`.
    fn json_at(&self, path: &Path, what: &str) -> Result<&[u8], ImageError> {
        let member = self.member(path, what)?;
        self.json.get(&member.index).map(Vec::as_slice).ok_or_else(|| {
            self.invalid(what, format!("{} is not a JSON document of at most {MAX_JSON_LEN} bytes", path.display()))
        })
    }

    /// The JSON blob a descriptor points to, checked against its digest.
    fn json_blob(&self, desc: &Descriptor, what: &str) -> Result<&[u8], ImageError> {
        let path = self.blob_member_path(&desc.digest, what)?;
        let bytes = self.json_at(&path, what)?;
        let actual = sha256_bytes(bytes);
        if actual != desc.digest {
            return Err(ImageError::DigestMismatch {
                what: format!("{what} ({})", path.display()),
                expected: desc.digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// `blobs/sha256/<hex>` for a digest.
    fn blob_member_path(&self, digest: &str, what: &str) -> Result<PathBuf, ImageError> {
        let hex = sha256_hex(digest).ok_or_else(|| {
            self.invalid(what, format!("digest {digest:?} is not a sha256 digest (sha256:<64 lowercase hex digits>)"))
        })?;
        Ok(Path::new("blobs/sha256").join(hex))
    }

    fn parse<T: DeserializeOwned>(&self, bytes: &[u8], what: &str) -> Result<T, ImageError> {
        serde_json::from_slice(bytes).map_err(|e| self.invalid(what, e.to_string()))
    }

    fn invalid(&self, what: &str, reason: String) -> ImageError {
        ImageError::InvalidManifest { archive: self.archive.clone(), what: what.to_string(), reason }
    }

    // --- OCI image layout ---

    fn import_oci(&self, workdir: &Path) -> Result<ImportedImage, ImageError> {
        let index: Index = self.parse(self.json_at(Path::new("index.json"), "index.json")?, "index.json")?;
        let manifest = self.choose(&index, "index.json", 0)?;
        let config_bytes = self.manifest_config(&manifest)?;
        let config: ConfigFile = self.parse(config_bytes, "image config")?;
        write_blob(workdir, config_bytes)?;

        let count = manifest.layers.len();
        let mut layers = Vec::with_capacity(count);
        for (i, desc) in manifest.layers.iter().enumerate() {
            let what = format!("layer {} of {count} ({})", i + 1, desc.digest);
            if let Some(media_type) = &desc.media_type
                && !LAYER_TYPES.contains(&media_type.as_str())
            {
                return Err(ImageError::UnsupportedMediaType { what, media_type: media_type.clone() });
            }
            let path = self.blob_member_path(&desc.digest, &what)?;
            let member = self.member(&path, &what)?;
            layers.push((member.index, Want { what, expected: Some(desc.digest.clone()) }));
        }
        self.finish(ImageSource::OciLayout, manifest.config.digest.clone(), &config, layers, workdir)
    }

    /// The manifest to import from an image index: the only entry, or the first whose platform
    /// runs on this host (an entry without a platform is judged by its config).
    fn choose(&self, index: &Index, what: &str, depth: u32) -> Result<Manifest, ImageError> {
        if depth > 4 {
            return Err(self.invalid(what, "image indexes are nested more than 4 deep".into()));
        }
        if index.manifests.is_empty() {
            return Err(self.invalid(what, "it lists no manifests".into()));
        }
        let single = index.manifests.len() == 1;
        let mut found: Vec<String> = Vec::new();
        let mut note = |name: String, arch: &str| {
            if !arch.is_empty() && arch != "unknown" && !found.contains(&name) {
                found.push(name);
            }
        };
        let mut unsupported = None;
        for desc in &index.manifests {
            if let Some(p) = &desc.platform
                && !runs_here(&p.os, &p.architecture)
            {
                note(platform_name(&p.os, &p.architecture, p.variant.as_deref()), &p.architecture);
                continue;
            }
            match self.load_manifest_or_index(desc) {
                Ok(Doc::Index(inner)) => {
                    match self.choose(&inner, &format!("image index {}", desc.digest), depth + 1) {
                        Err(ImageError::NoManifestForArchitecture { found: inner_found, .. }) if !single => {
                            for name in inner_found {
                                let arch = name.split('/').nth(1).unwrap_or("").to_string();
                                note(name, &arch);
                            }
                        }
                        result => return result,
                    }
                }
                Ok(Doc::Manifest(manifest)) => {
                    if desc.platform.is_none() && !single {
                        let config: ConfigFile = self.parse(self.manifest_config(&manifest)?, "image config")?;
                        if !runs_here(&config.os, &config.architecture) {
                            note(
                                platform_name(&config.os, &config.architecture, config.variant.as_deref()),
                                &config.architecture,
                            );
                            continue;
                        }
                    }
                    return Ok(manifest);
                }
                Err(e @ ImageError::UnsupportedMediaType { .. }) if !single => {
                    unsupported.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        match unsupported {
            Some(e) if found.is_empty() => Err(e),
            _ => Err(ImageError::NoManifestForArchitecture { wanted: format!("linux/{}", host_architecture()), found }),
        }
    }

    fn load_manifest_or_index(&self, desc: &Descriptor) -> Result<Doc, ImageError> {
        let what = format!("manifest {}", desc.digest);
        let unsupported = |media_type: &str| ImageError::UnsupportedMediaType {
            what: what.clone(),
            media_type: media_type.to_string(),
        };
        let known = [OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST];
        if let Some(t) = &desc.media_type
            && !known.contains(&t.as_str())
        {
            return Err(unsupported(t));
        }
        let value: serde_json::Value = self.parse(self.json_blob(desc, &what)?, &what)?;
        let media_type =
            desc.media_type.as_deref().or_else(|| value.get("mediaType").and_then(|t| t.as_str())).map(str::to_string);
        let is_index = match media_type.as_deref() {
            Some(OCI_INDEX | DOCKER_MANIFEST_LIST) => true,
            Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
            Some(other) => return Err(unsupported(other)),
            None => value.get("manifests").is_some(),
        };
        let doc = if is_index {
            Doc::Index(serde_json::from_value(value).map_err(|e| self.invalid(&what, e.to_string()))?)
        } else {
            Doc::Manifest(serde_json::from_value(value).map_err(|e| self.invalid(&what, e.to_string()))?)
        };
        Ok(doc)
    }

    /// The config blob of a manifest, checked against its digest and media type.
    fn manifest_config(&self, manifest: &Manifest) -> Result<&[u8], ImageError> {
        let what = format!("image config {}", manifest.config.digest);
        if let Some(t) = &manifest.config.media_type
            && !CONFIG_TYPES.contains(&t.as_str())
        {
            return Err(ImageError::UnsupportedMediaType { what, media_type: t.clone() });
        }
        self.json_blob(&manifest.config, &what)
    }

    // --- docker save ---

    fn import_docker(&self, workdir: &Path) -> Result<ImportedImage, ImageError> {
        let images: Vec<DockerManifest> =
            self.parse(self.json_at(Path::new("manifest.json"), "manifest.json")?, "manifest.json")?;
        let image = images.first().ok_or_else(|| self.invalid("manifest.json", "it lists no images".into()))?;
        let member_path = |path: &str, what: &str| {
            normalize(Path::new(path))
                .ok_or_else(|| self.invalid("manifest.json", format!("{what} path {path:?} climbs out of the archive")))
        };

        let config_path = member_path(&image.config, "image config")?;
        let config_bytes = self.json_at(&config_path, "image config")?;
        let id = sha256_bytes(config_bytes);
        if let Some(expected) = digest_in_name(&config_path, true)
            && expected != id
        {
            return Err(ImageError::DigestMismatch {
                what: format!("image config ({})", image.config),
                expected,
                actual: id,
            });
        }
        let config: ConfigFile = self.parse(config_bytes, "image config")?;
        write_blob(workdir, config_bytes)?;

        let count = image.layers.len();
        let mut layers = Vec::with_capacity(count);
        for (i, path) in image.layers.iter().enumerate() {
            let what = format!("layer {} of {count} ({path})", i + 1);
            let path = member_path(path, &what)?;
            let member = self.member(&path, &what)?;
            // Docker names layer files by content only in its OCI-style `blobs/sha256/` form.
            let expected = digest_in_name(&path, false);
            layers.push((member.index, Want { what, expected }));
        }
        self.finish(ImageSource::DockerSave, id, &config, layers, workdir)
    }

    // --- rootfs tarball ---

    fn import_rootfs(&self, workdir: &Path) -> Result<ImportedImage, ImageError> {
        if self.entries == 0 {
            return Err(ImageError::EmptyArchive { path: self.archive.clone() });
        }
        if self.unpacked > self.limits.layer {
            return Err(ImageError::TooLarge {
                what: "the root filesystem tarball (one layer)".to_string(),
                limit: self.limits.layer,
                bound: crate::bounds::Bound::Layer,
            });
        }
        let fetched = copy_file_blob(&self.archive, self.compression, workdir)?;
        let id = sha256_bytes(fetched.digest.as_bytes());
        Ok(ImportedImage {
            source: ImageSource::RootfsTarball,
            id,
            config: ImageConfig { architecture: host_architecture().to_string(), ..ImageConfig::default() },
            layers: vec![ImportedLayer {
                layer: LayerRef { digest: fetched.digest, size: fetched.size, compression: fetched.compression },
                path: fetched.path,
            }],
        })
    }

    // --- common ---

    /// Copies the layer blobs out (second pass), checks them and assembles the image.
    fn finish(
        &self,
        source: ImageSource,
        id: String,
        config: &ConfigFile,
        layers: Vec<(u64, Want)>,
        workdir: &Path,
    ) -> Result<ImportedImage, ImageError> {
        let diff_ids = config.rootfs.as_ref().and_then(|r| r.diff_ids.clone()).unwrap_or_default();
        if !diff_ids.is_empty() && diff_ids.len() != layers.len() {
            return Err(self.invalid(
                "image config",
                format!("rootfs.diff_ids lists {} layers but the manifest has {}", diff_ids.len(), layers.len()),
            ));
        }

        let mut wanted: HashMap<u64, Vec<&Want>> = HashMap::new();
        for (index, want) in &layers {
            wanted.entry(*index).or_default().push(want);
        }
        let fetched = self.fetch(&wanted, workdir)?;

        let mut checked: HashMap<u64, String> = HashMap::new();
        let mut out = Vec::with_capacity(layers.len());
        // What the distinct layers unpack to, together (a layer listed twice is unpacked once).
        let mut image_used = 0u64;
        for (i, (index, want)) in layers.iter().enumerate() {
            let blob = &fetched[index];
            let diff_id = match checked.get(index) {
                Some(d) => d.clone(),
                None => {
                    let (d, unpacked) = read_layer(blob, &want.what, &self.limits, image_used)?;
                    image_used = image_used.saturating_add(unpacked);
                    checked.insert(*index, d.clone());
                    d
                }
            };
            if let Some(expected) = diff_ids.get(i)
                && *expected != diff_id
            {
                return Err(ImageError::DigestMismatch {
                    what: format!("{}, uncompressed (image config rootfs.diff_ids[{i}])", want.what),
                    expected: expected.clone(),
                    actual: diff_id,
                });
            }
            out.push(ImportedLayer {
                layer: LayerRef { digest: blob.digest.clone(), size: blob.size, compression: blob.compression },
                path: blob.path.clone(),
            });
        }
        Ok(ImportedImage { source, id, config: config.image_config(), layers: out })
    }

    /// Second pass: copies the wanted entries to `workdir`, checking digests.
    fn fetch(&self, wanted: &HashMap<u64, Vec<&Want>>, workdir: &Path) -> Result<HashMap<u64, Fetched>, ImageError> {
        let what = self.archive.display().to_string();
        let file = File::open(&self.archive).map_err(ImageError::io("open", &self.archive))?;
        let reader = decoder(file, self.compression).map_err(|e| corrupt(&what, &e))?;
        let mut fetched = HashMap::new();
        let mut index = 0u64;
        walk_tar(reader, &what, true, |entry| {
            let i = index;
            index += 1;
            let Some(wants) = wanted.get(&i) else {
                return Ok(());
            };
            let (temp, mut out) = TempBlob::create(workdir)?;
            let size = copy_data(entry, &mut out, |e| corrupt(&what, &e), &temp.path)?;
            if size != entry.size() {
                return Err(ImageError::Corrupt {
                    what: what.clone(),
                    reason: format!("{} is cut short", wants[0].what),
                });
            }
            out.flush().map_err(ImageError::io("write", &temp.path))?;
            let digest = out.digest();
            for want in wants {
                if let Some(expected) = &want.expected
                    && *expected != digest
                {
                    return Err(ImageError::DigestMismatch {
                        what: want.what.clone(),
                        expected: expected.clone(),
                        actual: digest,
                    });
                }
            }
            let compression = match compress::sniff(out.head()) {
                Sniffed::Known(c) => c,
                Sniffed::Unsupported(format) => {
                    return Err(ImageError::UnsupportedCompression { what: wants[0].what.clone(), format });
                }
            };
            drop(out);
            let path = temp.persist(workdir, &digest)?;
            fetched.insert(i, Fetched { digest, size, compression, path });
            Ok(())
        })?;
        if let Some(i) = wanted.keys().find(|i| !fetched.contains_key(i)) {
            return Err(ImageError::Corrupt {
                what: what.clone(),
                reason: format!("{} vanished between two reads: was the file changed meanwhile?", wanted[i][0].what),
            });
        }
        Ok(fetched)
    }
}

enum Doc {
    Index(Index),
    Manifest(Manifest),
}

/// The digest a `docker save` member name carries: `blobs/sha256/<hex>`, and when `loose`
/// also `<hex>.json` or `sha256:<hex>` (how configs are named).
fn digest_in_name(path: &Path, loose: bool) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let hex = if path.parent() == Some(Path::new("blobs/sha256")) {
        name
    } else if loose {
        let name = name.strip_suffix(".json").unwrap_or(name);
        name.strip_prefix("sha256:").unwrap_or(name)
    } else {
        return None;
    };
    let digest = format!("sha256:{hex}");
    sha256_hex(&digest).is_some().then_some(digest)
}

/// Reads a layer blob through as a tar, within `limits` when `image_used` bytes of the image
/// were unpacked already; returns the digest of its uncompressed content and what it unpacks to.
fn read_layer(blob: &Fetched, what: &str, limits: &UnpackLimits, image_used: u64) -> Result<(String, u64), ImageError> {
    read_layer_file(&blob.path, blob.compression, what, limits, image_used)
}

/// Reads a layer blob (one `herd image pull` fetched) through as a tar within `limits`, when
/// `image_used` bytes of its image were unpacked already; returns what it unpacks to.
/// `what` names it in errors ([`ImageError::TooLarge`] when it passes a bound).
pub fn measure_layer(
    blob: &Path,
    compression: Compression,
    what: &str,
    limits: &UnpackLimits,
    image_used: u64,
) -> Result<u64, ImageError> {
    read_layer_file(blob, compression, what, limits, image_used).map(|(_, size)| size)
}

fn read_layer_file(
    path: &Path,
    compression: Compression,
    what: &str,
    limits: &UnpackLimits,
    image_used: u64,
) -> Result<(String, u64), ImageError> {
    let file = File::open(path).map_err(ImageError::io("open", path))?;
    let meter = Meter::new(limits, image_used, None);
    let decoded = decoder(file, compression).map_err(|e| corrupt(what, &e))?;
    let mut reader = HashingReader::new(Metered { inner: decoded, meter: meter.clone() });
    // This reads to the end, so the digest covers what follows the end-of-archive blocks too.
    walk_tar(&mut reader, what, false, |entry| {
        if charge_entry(&meter, entry) {
            Ok(())
        } else {
            Err(corrupt(what, &std::io::Error::other("over an unpack bound")))
        }
    })
    .map_err(|e| meter.explain(what, e))?;
    Ok((reader.digest(), meter.used()))
}

// --- blob files -----------------------------------------------------------------------------

/// A blob being written in the work directory under a temporary name; removed unless persisted.
struct TempBlob {
    path: PathBuf,
    keep: bool,
}

impl TempBlob {
    fn create(workdir: &Path) -> Result<(TempBlob, HashingWriter<BufWriter<File>>), ImageError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = format!(".blob-{}-{}.partial", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let path = workdir.join(name);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(ImageError::io("create", &path))?;
        Ok((TempBlob { path, keep: false }, HashingWriter::new(BufWriter::with_capacity(256 * 1024, file))))
    }

    /// Renames the blob to its final name, `workdir/<hex of digest>`.
    fn persist(mut self, workdir: &Path, digest: &str) -> Result<PathBuf, ImageError> {
        let path = blob_path(workdir, digest).expect("a computed sha256 digest");
        fs::rename(&self.path, &path).map_err(ImageError::io("rename blob to", &path))?;
        self.keep = true;
        Ok(path)
    }
}

impl Drop for TempBlob {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Writes an in-memory blob to `workdir/<hex>`.
fn write_blob(workdir: &Path, bytes: &[u8]) -> Result<PathBuf, ImageError> {
    let (temp, mut out) = TempBlob::create(workdir)?;
    out.write_all(bytes).and_then(|()| out.flush()).map_err(ImageError::io("write", &temp.path))?;
    let digest = out.digest();
    drop(out);
    temp.persist(workdir, &digest)
}

/// Copies a whole file to `workdir/<hex>`, hashing it on the way.
fn copy_file_blob(source: &Path, compression: Compression, workdir: &Path) -> Result<Fetched, ImageError> {
    let mut file = File::open(source).map_err(ImageError::io("open", source))?;
    let (temp, mut out) = TempBlob::create(workdir)?;
    let size = copy_data(&mut file, &mut out, ImageError::io("read", source), &temp.path)?;
    out.flush().map_err(ImageError::io("write", &temp.path))?;
    let digest = out.digest();
    drop(out);
    let path = temp.persist(workdir, &digest)?;
    Ok(Fetched { digest, size, compression, path })
}
