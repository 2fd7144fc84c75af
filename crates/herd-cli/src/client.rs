//! A typed client of the Control node's HTTP API.

use std::time::Duration;

use anyhow::{Context, anyhow};
use herd_proto::api::ApiError;
use reqwest::{Method, RequestBuilder, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::CliConfig;

#[derive(Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(cfg: &CliConfig) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("building the HTTP client")?;
        Ok(Client { base: cfg.api.trim_end_matches('/').to_string(), token: cfg.token.clone(), http })
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token)
    }

    /// Sends a request and turns a failed answer into its API error message.
    pub async fn send(&self, req: RequestBuilder) -> anyhow::Result<Response> {
        let resp = self.reached(req.send().await)?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(api_error(resp).await)
    }

    /// The answer, or why the Control node could not be asked.
    fn reached(&self, sent: reqwest::Result<Response>) -> anyhow::Result<Response> {
        sent.map_err(|e| {
            if e.is_connect() {
                anyhow!("cannot reach the Control node at {}: is the cluster up? (herd up)", self.base)
            } else {
                anyhow!("request to the Control node at {} failed: {e}", self.base)
            }
        })
    }

    /// Sends a request for an HTTP upgrade to `protocol` and returns the upgraded connection;
    /// an answer other than 101 Switching Protocols is the API's error.
    pub async fn upgrade(&self, req: RequestBuilder, protocol: &str) -> anyhow::Result<reqwest::Upgraded> {
        let req = req.header(reqwest::header::CONNECTION, "Upgrade").header(reqwest::header::UPGRADE, protocol);
        let resp = self.reached(req.send().await)?;
        if resp.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
            if resp.status().is_success() {
                return Err(anyhow!("the Control node at {} did not switch to {protocol}", self.base));
            }
            return Err(api_error(resp).await);
        }
        resp.upgrade().await.with_context(|| format!("switching the connection to the Control node to {protocol}"))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self.send(self.request(Method::GET, path)).await?;
        resp.json().await.context("decoding the Control node's answer")
    }

    /// The answer's body as it came, for callers that decode it borrowing from it.
    pub async fn get_bytes(&self, path: &str) -> anyhow::Result<bytes::Bytes> {
        let resp = self.send(self.request(Method::GET, path)).await?;
        resp.bytes().await.context("reading the Control node's answer")
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> anyhow::Result<T> {
        let resp = self.send(self.request(Method::POST, path).json(body)).await?;
        resp.json().await.context("decoding the Control node's answer")
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.send(self.request(Method::DELETE, path)).await?;
        Ok(())
    }
}

/// The API's error message in a failed answer.
async fn api_error(resp: Response) -> anyhow::Error {
    let status = resp.status();
    let body = resp.bytes().await.unwrap_or_default();
    match serde_json::from_slice::<ApiError>(&body) {
        Ok(e) => anyhow!(e.error),
        Err(_) => anyhow!("the Control node answered {status}: {}", String::from_utf8_lossy(&body)),
    }
}

/// Escapes one path segment (container and image names are restricted, but be safe).
pub fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' | b':' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
