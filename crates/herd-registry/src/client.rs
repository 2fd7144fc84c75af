//! The HTTP side of the distribution API: one client per repository, which authenticates as the
//! registry asks (anonymously, with Basic credentials, or with a Bearer token fetched from the
//! registry's token service), resolves a reference to the image manifest for a platform, and
//! streams blobs while verifying their sha256.

use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use herd_proto::state::ImageConfig;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::challenge::{self, Challenge};
use crate::error::RegistryError;
use crate::manifest::{self, Descriptor, Document};
use crate::reference::Reference;

/// Largest manifest, index or image configuration read (they are JSON documents held in memory).
const MAX_DOCUMENT: u64 = 4 << 20;

/// A user name and password (or access token) for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <hidden>)", self.username)
    }
}

impl Credentials {
    fn basic(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    }
}

/// An image resolved to one platform's manifest, with its configuration read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The canonical reference (`docker.io/library/busybox:latest`).
    pub reference: String,
    /// `sha256:<hex>` of the image manifest (for an index, of the chosen entry).
    pub manifest_digest: String,
    /// `os/architecture` the image is for.
    pub platform: String,
    /// The configuration blob's digest: the image id.
    pub config_digest: String,
    pub config: ImageConfig,
    /// Bottom layer first.
    pub layers: Vec<Descriptor>,
}

/// A client of one repository on one registry.
pub struct RegistryClient {
    http: reqwest::Client,
    reference: Reference,
    base: String,
    credentials: Option<Credentials>,
    /// The scope actions asked of a token service: `pull`, or `pull,push` to push.
    actions: String,
    /// The `Authorization` header earned by the last challenge, reused until refused.
    authorization: Mutex<Option<String>>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

#[derive(Deserialize, Default)]
struct ErrorsBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// TLS to a registry: the system's certificate store (read only when the registry is spoken
/// to over HTTPS: it takes tens of milliseconds), with ring's crypto.
fn tls_settings(https: bool) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    if https {
        let found = rustls_native_certs::load_native_certs();
        if found.certs.is_empty() {
            let errors: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
            return Err(format!("no certificate authority found in the system's store ({})", errors.join("; ")));
        }
        roots.add_parsable_certificates(found.certs);
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl RegistryClient {
    /// A client of `reference`'s repository. Registries on loopback, and every registry when
    /// `insecure`, are spoken to in plain HTTP; others in HTTPS.
    pub fn new(
        reference: &Reference,
        credentials: Option<Credentials>,
        insecure: bool,
    ) -> Result<RegistryClient, RegistryError> {
        let scheme = if insecure || reference.is_loopback() { "http" } else { "https" };
        let tls = tls_settings(scheme == "https")
            .map_err(|reason| RegistryError::Protocol { registry: reference.registry.clone(), reason })?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("herd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RegistryError::Protocol {
                registry: reference.registry.clone(),
                reason: format!("cannot set up an HTTP client: {}", chain(&e)),
            })?;
        Ok(RegistryClient {
            http,
            reference: reference.clone(),
            base: format!("{scheme}://{}", reference.api_host()),
            credentials,
            actions: "pull".into(),
            authorization: Mutex::new(None),
        })
    }

    /// Asks token services for these actions (`pull,push` to upload) instead of `pull`.
    pub fn with_actions(mut self, actions: &str) -> RegistryClient {
        self.actions = actions.to_string();
        self
    }

    /// `scheme://host[:port]` of the registry's API.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn repo_url(&self, tail: &str) -> String {
        format!("{}/v2/{}/{tail}", self.base, self.reference.repository)
    }

    /// Sends a request to `url` (absolute, or a path under the registry), answering the
    /// registry's authentication challenge once if it makes one. A failed answer other than
    /// 401 is returned as it is; see [`RegistryClient::check`].
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Option<Bytes>,
    ) -> Result<Response, RegistryError> {
        let url = if url.starts_with("http://") || url.starts_with("https://") {
            url.to_string()
        } else {
            format!("{}{url}", self.base)
        };
        let mut answered_challenge = false;
        loop {
            let mut req = self.http.request(method.clone(), &url).headers(headers.clone());
            if let Some(auth) = self.authorization.lock().unwrap().clone() {
                req = req.header(AUTHORIZATION, auth);
            }
            if let Some(body) = &body {
                req = req.body(body.clone());
            }
            let resp = req.send().await.map_err(|e| self.unreachable(&url, &e))?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            let challenges: Vec<Challenge> = resp
                .headers()
                .get_all(WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(challenge::parse)
                .collect();
            let message = error_message(resp).await;
            if answered_challenge {
                return Err(self.unauthorized(format!("it refused the credentials it asked for{message}")));
            }
            self.answer(&challenges).await?;
            answered_challenge = true;
        }
    }

    /// Earns an `Authorization` header for the first challenge this client can answer.
    async fn answer(&self, challenges: &[Challenge]) -> Result<(), RegistryError> {
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            let token = self.fetch_token(bearer).await?;
            *self.authorization.lock().unwrap() = Some(format!("Bearer {token}"));
            return Ok(());
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            let Some(credentials) = &self.credentials else {
                return Err(
                    self.unauthorized("it asks for a user name and password: pass --user NAME --password-stdin".into())
                );
            };
            *self.authorization.lock().unwrap() = Some(credentials.basic());
            return Ok(());
        }
        let schemes: Vec<&str> = challenges.iter().map(|c| c.scheme.as_str()).collect();
        Err(self.unauthorized(if schemes.is_empty() {
            "it answered 401 without saying how to authenticate (no WWW-Authenticate header)".into()
        } else {
            format!("it asks for authentication schemes herd does not speak: {}", schemes.join(", "))
        }))
    }

    /// The token-service leg of Bearer auth: `GET realm?service=...&scope=repository:R:pull`,
    /// with Basic credentials when there are any.
    async fn fetch_token(&self, challenge: &Challenge) -> Result<String, RegistryError> {
        let realm = challenge.param("realm").ok_or_else(|| RegistryError::Protocol {
            registry: self.reference.registry.clone(),
            reason: "its Bearer challenge names no realm (token service)".into(),
        })?;
        let scope = format!("repository:{}:{}", self.reference.repository, self.actions);
        let mut query: Vec<(&str, &str)> = vec![("scope", &scope)];
        if let Some(service) = challenge.param("service") {
            query.push(("service", service));
        }
        let mut req = self.http.get(realm).query(&query);
        if let Some(c) = &self.credentials {
            req = req.header(AUTHORIZATION, c.basic()).query(&[("account", c.username.as_str())]);
        }
        let resp = req.send().await.map_err(|e| self.unreachable(realm, &e))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let message = error_message(resp).await;
            let hint = if self.credentials.is_some() { "" } else { "; pass --user NAME --password-stdin" };
            return Err(self.unauthorized(format!("its token service {realm} answered {status}{message}{hint}")));
        }
        if !status.is_success() {
            let message = error_message(resp).await;
            return Err(RegistryError::Protocol {
                registry: self.reference.registry.clone(),
                reason: format!("its token service {realm} answered {status}{message}"),
            });
        }
        let body = read_limited(resp, MAX_DOCUMENT, "the token answer", &self.reference.registry).await?;
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
            registry: self.reference.registry.clone(),
            reason: format!("its token service {realm} sent an unreadable answer: {e}"),
        })?;
        answer.token.or(answer.access_token).filter(|t| !t.is_empty()).ok_or_else(|| RegistryError::Protocol {
            registry: self.reference.registry.clone(),
            reason: format!("its token service {realm} sent no token"),
        })
    }

    /// Turns a failed answer into the error it means; `what` names what was asked for.
    pub async fn check(&self, resp: Response, what: &str) -> Result<Response, RegistryError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let (codes, message) = error_details(resp).await;
        Err(match status {
            StatusCode::NOT_FOUND => RegistryError::NotFound {
                registry: self.reference.registry.clone(),
                repository: self.reference.repository.clone(),
                what: what.to_string(),
                message,
            },
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => {
                self.unauthorized(format!("it answered {status}{}", paren(&message)))
            }
            _ if codes.iter().any(|c| c == "NAME_UNKNOWN" || c == "MANIFEST_UNKNOWN" || c == "BLOB_UNKNOWN") => {
                RegistryError::NotFound {
                    registry: self.reference.registry.clone(),
                    repository: self.reference.repository.clone(),
                    what: what.to_string(),
                    message,
                }
            }
            _ => RegistryError::Protocol {
                registry: self.reference.registry.clone(),
                reason: format!("asked for {what}, it answered {status}{}", paren(&message)),
            },
        })
    }

    /// Fetches a manifest or index by tag or digest: its bytes, `Content-Type` and digest. A
    /// manifest asked for by digest is checked against it.
    pub async fn fetch_manifest(&self, tag_or_digest: &str) -> Result<(Bytes, Option<String>, String), RegistryError> {
        let by_digest = tag_or_digest.starts_with("sha256:");
        let what = if by_digest { format!("manifest {tag_or_digest}") } else { format!("tag {tag_or_digest:?}") };
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, manifest::ACCEPT.parse().expect("a valid header"));
        let resp = self.send(Method::GET, &self.repo_url(&format!("manifests/{tag_or_digest}")), headers, None).await?;
        let resp = self.check(resp, &what).await?;
        let content_type = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
        let bytes = read_limited(resp, MAX_DOCUMENT, &what, &self.reference.registry).await?;
        let digest = sha256_of(&bytes);
        if by_digest && digest != tag_or_digest {
            return Err(RegistryError::DigestMismatch { what, expected: tag_or_digest.to_string(), actual: digest });
        }
        Ok((bytes, content_type, digest))
    }

    /// Resolves the reference to the image for `os/architecture`: through an index if the
    /// reference names one, checking every digest on the way, and reads the image's
    /// configuration (whose platform must match too).
    pub async fn resolve(&self, os: &str, architecture: &str) -> Result<ResolvedImage, RegistryError> {
        let shown = self.reference.to_string();
        let (bytes, content_type, mut digest) = self.fetch_manifest(self.reference.manifest_ref()).await?;
        let mut document = manifest::parse_document(content_type.as_deref(), &bytes, &shown)?;
        if let Document::Index(index) = &document {
            let entry = manifest::select_platform(index, os, architecture, &shown)?.clone();
            let (bytes, content_type, entry_digest) = self.fetch_manifest(&entry.digest).await?;
            document = manifest::parse_document(content_type.as_deref().or(Some(&entry.media_type)), &bytes, &shown)?;
            digest = entry_digest;
        }
        let Document::Image(image) = document else {
            return Err(RegistryError::UnsupportedMediaType {
                what: format!("the manifest {digest} of {shown}"),
                media_type: "an index inside an index".into(),
                hint: "nested indexes are not read",
            });
        };
        manifest::check_image_manifest(&image, &shown)?;
        let config_bytes = self.fetch_small_blob(&image.config, &format!("the image config of {shown}")).await?;
        let parsed = herd_image::parse_image_config(&config_bytes).map_err(|e| RegistryError::Protocol {
            registry: self.reference.registry.clone(),
            reason: format!("the image config {} of {shown} is unreadable: {e}", image.config.digest),
        })?;
        let config_os = if parsed.os.is_empty() { os } else { parsed.os.as_str() };
        if config_os != os || parsed.architecture != architecture {
            return Err(RegistryError::NoPlatform {
                reference: shown,
                wanted: manifest::platform_name(os, architecture, None),
                available: vec![manifest::platform_name(config_os, &parsed.architecture, None)],
            });
        }
        Ok(ResolvedImage {
            reference: shown,
            manifest_digest: digest,
            platform: manifest::platform_name(config_os, &parsed.architecture, None),
            config_digest: image.config.digest.clone(),
            config: parsed.config,
            layers: image.layers,
        })
    }

    async fn blob_response(&self, blob: &Descriptor, what: &str) -> Result<Response, RegistryError> {
        let resp =
            self.send(Method::GET, &self.repo_url(&format!("blobs/{}", blob.digest)), HeaderMap::new(), None).await?;
        self.check(resp, what).await
    }

    /// A small blob (an image configuration) in memory, verified.
    async fn fetch_small_blob(&self, blob: &Descriptor, what: &str) -> Result<Vec<u8>, RegistryError> {
        if blob.size > MAX_DOCUMENT {
            return Err(RegistryError::Protocol {
                registry: self.reference.registry.clone(),
                reason: format!("{what} is {} bytes, more than the {MAX_DOCUMENT} read", blob.size),
            });
        }
        let mut out = Vec::with_capacity(blob.size as usize);
        self.fetch_blob(blob, what, &mut out, |_| {}).await?;
        Ok(out)
    }

    /// Streams a blob into `sink`, hashing it on the way; `progress` hears the bytes received
    /// so far. Fails on a size or digest that differs from `blob`'s, having written what came:
    /// the caller throws the sink's content away. Returns the blob's first 8 bytes (its
    /// compression's magic number).
    pub async fn fetch_blob<W: AsyncWrite + Unpin>(
        &self,
        blob: &Descriptor,
        what: &str,
        sink: &mut W,
        mut progress: impl FnMut(u64),
    ) -> Result<Vec<u8>, RegistryError> {
        let resp = self.blob_response(blob, what).await?;
        let mut stream = resp.bytes_stream();
        let mut hasher = Sha256::new();
        let mut received = 0u64;
        let mut head = Vec::with_capacity(8);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| RegistryError::Protocol {
                registry: self.reference.registry.clone(),
                reason: format!("{what} was cut off after {received} bytes: {}", chain(&e)),
            })?;
            received += chunk.len() as u64;
            if received > blob.size {
                return Err(RegistryError::SizeMismatch { what: what.into(), expected: blob.size, actual: received });
            }
            hasher.update(&chunk);
            if head.len() < 8 {
                head.extend_from_slice(&chunk[..chunk.len().min(8 - head.len())]);
            }
            sink.write_all(&chunk).await.map_err(|err| RegistryError::Io { what: format!("storing {what}"), err })?;
            progress(received);
        }
        sink.flush().await.map_err(|err| RegistryError::Io { what: format!("storing {what}"), err })?;
        if received != blob.size {
            return Err(RegistryError::SizeMismatch { what: what.into(), expected: blob.size, actual: received });
        }
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != blob.digest {
            return Err(RegistryError::DigestMismatch { what: what.into(), expected: blob.digest.clone(), actual });
        }
        Ok(head)
    }

    fn unreachable(&self, url: &str, e: &reqwest::Error) -> RegistryError {
        RegistryError::Unreachable {
            registry: self.reference.registry.clone(),
            url: url.split('?').next().unwrap_or(url).to_string(),
            reason: chain(e),
        }
    }

    fn unauthorized(&self, reason: String) -> RegistryError {
        RegistryError::Unauthorized {
            registry: self.reference.registry.clone(),
            repository: self.reference.repository.clone(),
            reason,
        }
    }
}

/// "sha256:<hex>" of some bytes.
pub fn sha256_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// An error with its causes, the innermost last (`connection refused` is usually there).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

async fn read_limited(resp: Response, limit: u64, what: &str, registry: &str) -> Result<Bytes, RegistryError> {
    let too_big = || RegistryError::Protocol {
        registry: registry.into(),
        reason: format!("{what} is larger than {limit} bytes"),
    };
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(too_big());
    }
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| RegistryError::Protocol {
            registry: registry.into(),
            reason: format!("{what} was cut off: {}", chain(&e)),
        })?;
        if (out.len() + chunk.len()) as u64 > limit {
            return Err(too_big());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

/// The error codes and messages of a distribution API error body (`{"errors":[...]}`), or
/// the start of whatever else the body holds.
async fn error_details(resp: Response) -> (Vec<String>, String) {
    let body = resp.bytes().await.unwrap_or_default();
    let parsed: ErrorsBody = serde_json::from_slice(&body).unwrap_or_default();
    if parsed.errors.is_empty() {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_string();
        return (Vec::new(), text);
    }
    let codes = parsed.errors.iter().map(|e| e.code.clone()).collect();
    let message = parsed
        .errors
        .iter()
        .map(|e| if e.message.is_empty() { e.code.clone() } else { e.message.clone() })
        .collect::<Vec<_>>()
        .join("; ");
    (codes, message)
}

async fn error_message(resp: Response) -> String {
    paren(&error_details(resp).await.1)
}

fn paren(message: &str) -> String {
    if message.is_empty() { String::new() } else { format!(" ({message})") }
}
