//! `herd node --join URL --token TOKEN`: a new machine becomes a node of the cluster.
//!
//! The machine does not know the cluster's CA yet, so it cannot check the Control node it
//! talks to. It reads the CA from `GET /v1/join/ca` over TLS it does not check, and keeps it
//! only if its SHA-256 is the digest the token carries (someone in between would have to give
//! a CA of the same digest). Everything after that is checked against that CA: `POST
//! /v1/join` with the token, the node's name and address and a certificate signing request
//! for a key made here, which never leaves the machine. The answer is the node's
//! certificate and the broker's address; they are kept in `DATA_DIR/tls` (mode 0600), so
//! that the node starts again with the same command without a token, which is spent.
//!
//! Before its certificate lapses (two thirds into its life, as `herd up` renews its own), the
//! node asks `POST /v1/join/renew` for a new one, for a new key, presenting the current one.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use herd_proto::join::{JoinReply, JoinRequest, TokenText};
use herd_tls::TlsFiles;
use herd_tls::files::{private_dir, write_private};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde::{Deserialize, Serialize};

/// What a joined node keeps beside its TLS files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joined {
    pub name: String,
    pub broker: String,
    /// The Control node it joined at, where it renews its certificate.
    #[serde(default)]
    pub url: String,
}

const JOINED_FILE: &str = "joined.json";

/// The node's TLS files and what it joined, from `data_dir/tls`: joins first if they are
/// not there (then `token` is needed).
pub async fn join_or_load(
    url: &str,
    token: Option<&str>,
    name: &str,
    address: Ipv4Addr,
    data_dir: &Path,
) -> anyhow::Result<(TlsFiles, Joined)> {
    let dir = data_dir.join("tls");
    let files = TlsFiles::in_dir(&dir, name);
    let joined_path = dir.join(JOINED_FILE);
    if let Ok(text) = std::fs::read_to_string(&joined_path) {
        let joined: Joined =
            serde_json::from_str(&text).with_context(|| format!("reading {}", joined_path.display()))?;
        anyhow::ensure!(
            joined.name == name,
            "{} joined the cluster as node {}, not {name}: use --name {} (or another --data-dir to join again)",
            data_dir.display(),
            joined.name,
            joined.name
        );
        if files.cert.exists() && files.key.exists() && files.ca.exists() {
            tracing::info!("joined before as node {name}: using {}", dir.display());
            return Ok((files, joined));
        }
    }
    let token = token.context("this machine has not joined yet: --token is needed (herd join-token create)")?;
    let text: TokenText = token.parse().map_err(anyhow::Error::msg)?;
    let base = url.trim_end_matches('/');
    anyhow::ensure!(base.starts_with("https://"), "--join {url}: the Control node's API URL, https://HOST:PORT");

    // The CA, over TLS not checked yet, kept only if the token names it.
    let unchecked = reqwest::Client::builder()
        .tls_backend_preconfigured(accept_any_server())
        .timeout(Duration::from_secs(15))
        .build()?;
    let ca_pem = fetch_text(&unchecked, &format!("{base}/v1/join/ca")).await.context("reading the cluster CA")?;
    let digest = herd_tls::request::ca_digest(&ca_pem).map_err(|e| anyhow::anyhow!("the cluster CA at {base}: {e}"))?;
    if digest != text.ca_digest {
        bail!(
            "the CA at {base} is not the one the token names ({digest}, the token says {}): a wrong address, \
             a token of another cluster, or someone in between; nothing was sent",
            text.ca_digest
        );
    }

    // From here on, the Control node is checked against that CA.
    let mine = herd_tls::request::key_and_request(name)?;
    let checked = reqwest::Client::builder()
        .tls_backend_preconfigured(herd_tls::config::client_config_from_pem(&ca_pem, None)?)
        .timeout(Duration::from_secs(30))
        .build()?;
    let req = JoinRequest { token: token.trim().to_string(), name: name.to_string(), address, csr: mine.csr_pem };
    let resp = checked
        .post(format!("{base}/v1/join"))
        .json(&req)
        .send()
        .await
        .with_context(|| format!("joining at {base}"))?;
    let reply: JoinReply = answer(resp, "the join").await?;

    private_dir(&dir)?;
    write_private(&files.ca, reply.ca.as_bytes())?;
    write_private(&files.key, mine.key_pem.as_bytes())?;
    write_private(&files.cert, reply.cert.as_bytes())?;
    let joined = Joined { name: reply.name, broker: reply.broker, url: base.to_string() };
    write_private(&joined_path, serde_json::to_vec_pretty(&joined)?.as_slice())?;
    tracing::info!("joined the cluster as node {name}; its certificate is in {}", dir.display());
    Ok((files, joined))
}

/// The Control node's answer to `what`: its JSON, or its error message.
async fn answer<T: serde::de::DeserializeOwned>(resp: reqwest::Response, what: &str) -> anyhow::Result<T> {
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        let error = serde_json::from_str::<herd_proto::api::ApiError>(&body).map(|e| e.error).unwrap_or(body);
        bail!("the Control node refused {what} ({status}): {error}");
    }
    resp.json().await.with_context(|| format!("reading the answer to {what}"))
}

async fn fetch_text(client: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    let resp = client.get(url).send().await.with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    let body = resp.text().await?;
    if !status.is_success() {
        let error = serde_json::from_str::<herd_proto::api::ApiError>(&body).map(|e| e.error).unwrap_or(body);
        bail!("GET {url}: {status}: {error}");
    }
    Ok(body)
}

/// TLS that takes any server certificate: only for reading the CA, which is then checked
/// against the token's digest before anything is trusted or sent.
fn accept_any_server() -> rustls::ClientConfig {
    let provider = herd_tls::config::provider();
    let verifier = Arc::new(AnyServer(provider.clone()));
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the provider's protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth()
}

#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Renews the certificate in `files` at `url` whenever it is due, until the process ends: a
/// new key and request, sent over TLS with the current certificate. Connections made after a
/// renewal use the new one (the broker client reads the files at each connection).
pub async fn keep_renewed(url: String, files: TlsFiles) {
    loop {
        let now = std::time::SystemTime::now();
        let wait = match herd_tls::CertInfo::read(&files.cert) {
            Ok(info) if info.due_for_renewal(now) => match renew(&url, &files).await {
                Ok(()) => {
                    tracing::info!("certificate renewed at {url}");
                    Duration::from_secs(1)
                }
                Err(e) => {
                    tracing::warn!("renewing the node's certificate at {url}: {e:#}; trying again");
                    (info.lifetime() / 20).clamp(Duration::from_secs(1), Duration::from_secs(60))
                }
            },
            // Until it is due, looking again at least every ten minutes (a clock that jumps).
            Ok(info) => info
                .renew_at()
                .duration_since(now)
                .unwrap_or_default()
                .clamp(Duration::from_secs(1), Duration::from_secs(600)),
            Err(e) => {
                tracing::error!("reading the node's certificate: {e}");
                Duration::from_secs(60)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

async fn renew(url: &str, files: &TlsFiles) -> anyhow::Result<()> {
    let info = herd_tls::CertInfo::read(&files.cert)?;
    let mine = herd_tls::request::key_and_request(&info.name)?;
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(herd_tls::config::client_config(&files.ca, Some(files))?)
        .timeout(Duration::from_secs(30))
        .build()?;
    let req = herd_proto::join::RenewRequest { csr: mine.csr_pem };
    let resp = client.post(format!("{url}/v1/join/renew")).json(&req).send().await?;
    let reply: JoinReply = answer(resp, "the renewal").await?;
    anyhow::ensure!(reply.name == info.name, "the renewed certificate names {}, not {}", reply.name, info.name);
    // The key first: whoever reads both after the certificate changed finds them matching.
    write_private(&files.key, mine.key_pem.as_bytes())?;
    write_private(&files.cert, reply.cert.as_bytes())?;
    Ok(())
}
