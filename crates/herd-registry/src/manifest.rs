//! Manifests and indexes of the distribution API (Docker schema 2 and OCI), and the choice of
//! the image that runs on this node's platform.

use herd_image::media_types::{CONFIG_TYPES, LAYER_TYPES};
pub use herd_image::media_types::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
use serde::{Deserialize, Serialize};

use crate::error::RegistryError;

const DOCKER_SCHEMA1: &[&str] = &[
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

/// The `Accept` header of manifest requests: every kind this client reads.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// Points at a blob or a manifest: what it is, its digest and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// `os/architecture[/variant]`.
    pub fn name(&self) -> String {
        platform_name(&self.os, &self.architecture, self.variant.as_deref())
    }
}

/// `os/architecture[/variant]`.
pub fn platform_name(os: &str, architecture: &str, variant: Option<&str>) -> String {
    match variant {
        Some(v) if !v.is_empty() => format!("{os}/{architecture}/{v}"),
        _ => format!("{os}/{architecture}"),
    }
}

/// An image index (OCI) or manifest list (Docker): one manifest per platform.
#[derive(Debug, Clone, Deserialize)]
pub struct Index {
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// An image manifest: its configuration blob and its layers, bottom first.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageManifest {
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// What a manifest request answered.
#[derive(Debug, Clone)]
pub enum Document {
    Index(Index),
    Image(ImageManifest),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Peek {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
    #[serde(default)]
    layers: Option<serde_json::Value>,
}

/// Reads a manifest or index. Its kind comes from its `mediaType` field, else from the
/// answer's `Content-Type`, else from its shape. `what` names it in errors.
pub fn parse_document(content_type: Option<&str>, bytes: &[u8], what: &str) -> Result<Document, RegistryError> {
    let invalid = |reason: String| RegistryError::Protocol {
        registry: what.to_string(),
        reason: format!("invalid manifest: {reason}"),
    };
    let peek: Peek = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
    let content_type = content_type.map(|c| c.split(';').next().unwrap_or(c).trim());
    let media_type = peek.media_type.as_deref().filter(|m| !m.is_empty()).or(content_type).unwrap_or("");
    let kind = match media_type {
        OCI_INDEX | DOCKER_MANIFEST_LIST => "index",
        OCI_MANIFEST | DOCKER_MANIFEST => "image",
        m if DOCKER_SCHEMA1.contains(&m) => {
            return Err(RegistryError::UnsupportedMediaType {
                what: what.to_string(),
                media_type: m.to_string(),
                hint: "Docker schema 1 manifests are deprecated and not read; push the image again with a current tool",
            });
        }
        _ if peek.manifests.is_some() => "index",
        _ if peek.layers.is_some() => "image",
        m => {
            return Err(RegistryError::UnsupportedMediaType {
                what: what.to_string(),
                media_type: if m.is_empty() { "(none)".into() } else { m.to_string() },
                hint: "herd pulls Docker schema 2 and OCI images and indexes",
            });
        }
    };
    Ok(match kind {
        "index" => Document::Index(serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?),
        _ => Document::Image(serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?),
    })
}

/// The entry of an index for `os/architecture`, or an error listing the platforms it has.
/// An entry without a platform is taken only when it is the index's only entry; attestation
/// entries (`unknown/unknown`) are not listed.
pub fn select_platform<'a>(
    index: &'a Index,
    os: &str,
    architecture: &str,
    reference: &str,
) -> Result<&'a Descriptor, RegistryError> {
    let matches = |d: &&Descriptor| {
        d.platform.as_ref().is_some_and(|p| p.os == os && p.architecture == architecture)
            || (index.manifests.len() == 1 && d.platform.is_none())
    };
    // On arm64, `v8` or no variant is the plain one.
    let preferred = index
        .manifests
        .iter()
        .filter(matches)
        .find(|d| d.platform.as_ref().and_then(|p| p.variant.as_deref()).is_none_or(|v| v.is_empty() || v == "v8"));
    if let Some(d) = preferred.or_else(|| index.manifests.iter().find(matches)) {
        return Ok(d);
    }
    let mut available: Vec<String> = Vec::new();
    for p in index.manifests.iter().filter_map(|d| d.platform.as_ref()) {
        let name = p.name();
        if p.architecture != "unknown" && !available.contains(&name) {
            available.push(name);
        }
    }
    Err(RegistryError::NoPlatform {
        reference: reference.to_string(),
        wanted: platform_name(os, architecture, None),
        available,
    })
}

/// Checks the media types of an image manifest's config and layers.
pub fn check_image_manifest(manifest: &ImageManifest, what: &str) -> Result<(), RegistryError> {
    let config = &manifest.config.media_type;
    if !config.is_empty() && !CONFIG_TYPES.contains(&config.as_str()) {
        return Err(RegistryError::UnsupportedMediaType {
            what: format!("the config of {what}"),
            media_type: config.clone(),
            hint: "this is not a container image (an artifact such as a Helm chart or a signature?)",
        });
    }
    let count = manifest.layers.len();
    for (i, layer) in manifest.layers.iter().enumerate() {
        if !layer.media_type.is_empty() && !LAYER_TYPES.contains(&layer.media_type.as_str()) {
            return Err(RegistryError::UnsupportedMediaType {
                what: format!("layer {} of {count} of {what} ({})", i + 1, layer.digest),
                media_type: layer.media_type.clone(),
                hint: "herd reads tar layers, uncompressed, gzip or zstd",
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(entries: &[(&str, &str, Option<&str>)]) -> Index {
        Index {
            manifests: entries
                .iter()
                .enumerate()
                .map(|(i, (os, arch, variant))| Descriptor {
                    media_type: OCI_MANIFEST.into(),
                    digest: format!("sha256:{i:064x}"),
                    size: 1,
                    platform: Some(Platform {
                        os: os.to_string(),
                        architecture: arch.to_string(),
                        variant: variant.map(str::to_string),
                    }),
                })
                .collect(),
        }
    }

    #[test]
    fn picks_the_node_platform() {
        let idx = index(&[("linux", "arm", Some("v7")), ("linux", "amd64", None), ("unknown", "unknown", None)]);
        assert_eq!(select_platform(&idx, "linux", "amd64", "x").unwrap().digest, format!("sha256:{:064x}", 1));
        let idx = index(&[("linux", "arm64", Some("v9")), ("linux", "arm64", Some("v8"))]);
        assert_eq!(select_platform(&idx, "linux", "arm64", "x").unwrap().digest, format!("sha256:{:064x}", 1));
        let idx = index(&[("linux", "arm64", Some("v9"))]);
        assert_eq!(select_platform(&idx, "linux", "arm64", "x").unwrap().digest, format!("sha256:{:064x}", 0));
    }

    #[test]
    fn a_missing_platform_names_the_ones_there_are() {
        let idx = index(&[("linux", "arm64", Some("v8")), ("linux", "s390x", None), ("unknown", "unknown", None)]);
        let err = select_platform(&idx, "linux", "amd64", "reg/app:1").unwrap_err().to_string();
        assert_eq!(err, "reg/app:1 has no image for linux/amd64; it has: linux/arm64/v8, linux/s390x");
        let idx = index(&[("windows", "amd64", None)]);
        let err = select_platform(&idx, "linux", "amd64", "w").unwrap_err().to_string();
        assert!(err.contains("it has: windows/amd64"), "{err}");
    }

    #[test]
    fn a_single_entry_without_platform_is_taken() {
        let mut idx = index(&[("linux", "amd64", None)]);
        idx.manifests[0].platform = None;
        select_platform(&idx, "linux", "amd64", "x").unwrap();
    }

    #[test]
    fn documents_by_media_type_header_or_shape() {
        let manifest = br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:aa","size":2},"layers":[]}"#;
        assert!(matches!(parse_document(Some(OCI_MANIFEST), manifest, "m").unwrap(), Document::Image(_)));
        assert!(matches!(parse_document(None, manifest, "m").unwrap(), Document::Image(_)));
        let list = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#;
        assert!(matches!(parse_document(Some("application/json"), list, "m").unwrap(), Document::Index(_)));
        let v1 = br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#;
        let err =
            parse_document(Some("application/vnd.docker.distribution.manifest.v1+prettyjws; charset=utf-8"), v1, "m")
                .unwrap_err()
                .to_string();
        assert!(err.contains("schema 1"), "{err}");
        assert!(parse_document(None, b"not json", "m").unwrap_err().to_string().contains("invalid manifest"));
    }

    #[test]
    fn artifacts_and_odd_layers_are_refused() {
        let doc = br#"{"config":{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"sha256:aa","size":2},"layers":[]}"#;
        let Document::Image(m) = parse_document(Some(OCI_MANIFEST), doc, "chart").unwrap() else { panic!() };
        assert!(check_image_manifest(&m, "chart").unwrap_err().to_string().contains("not a container image"));
        let doc = br#"{"config":{"digest":"sha256:aa","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+bz2","digest":"sha256:bb","size":1}]}"#;
        let Document::Image(m) = parse_document(Some(OCI_MANIFEST), doc, "img").unwrap() else { panic!() };
        assert!(check_image_manifest(&m, "img").unwrap_err().to_string().contains("layer 1 of 1"));
    }
}
