//! A typed client of the Control node's HTTP API.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow};
use herd_proto::api::ApiError;
use herd_proto::control::LEADER_HEADER;
use reqwest::{Method, RequestBuilder, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::CliConfig;

/// How long a request looks for the leading Control replica before it gives up: an election
/// takes about two seconds, but a broker failing over can hold it up for longer.
const FIND_LEADER_WITHIN: Duration = Duration::from_secs(30);

/// A client of the Control node's API. With several endpoints (Control replicas, `api` in
/// the config lists them separated by commas), a request goes to the one that led last, and
/// moves on to another when that one cannot be reached or does not lead, until one leads.
#[derive(Clone)]
pub struct Client {
    /// The endpoints' base URLs; requests are built on the first and sent to whichever leads.
    bases: Vec<String>,
    /// The endpoint that answered last.
    current: Arc<AtomicUsize>,
    token: String,
    http: reqwest::Client,
}

/// The HTTP client of a config: an `https://` API is checked against the config's cluster CA
/// and nothing else (the system's roots are never loaded: they cost every command tens of
/// milliseconds), and the user's certificate is presented when the config has one.
pub fn http_client(cfg: &CliConfig) -> anyhow::Result<reqwest::Client> {
    let identity = match (&cfg.cert, &cfg.key) {
        (Some(c), Some(k)) => Some((c.as_str(), k.as_str())),
        _ => None,
    };
    let tls = match &cfg.ca {
        Some(ca) => herd_tls::config::client_config_from_pem(ca, identity)?,
        None => {
            anyhow::ensure!(
                !cfg.api.split(',').any(|a| a.trim().starts_with("https://")),
                "the Herd config's API is https:// but the config holds no cluster CA (ca = \"-----BEGIN CERTIFICATE-----...\"): herd up writes it"
            );
            // Plain HTTP: TLS settings that trust nothing, never used.
            rustls::ClientConfig::builder_with_provider(herd_tls::config::provider())
                .with_safe_default_protocol_versions()?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        }
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .context("building the HTTP client")
}

/// The TLS error behind a failed connection, if that is why it failed (a certificate of
/// another CA, an expired one, a name it does not hold).
fn tls_failure(e: &reqwest::Error) -> Option<String> {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        let text = s.to_string();
        if text.contains("certificate") || text.contains("TLS") || text.contains("handshake") {
            return Some(text);
        }
        source = s.source();
    }
    None
}

/// A request the leader never answered, and another replica leads now: the request may or
/// may not have taken effect (whatever the old leader had not written when it lost its lease,
/// it writes no more).
#[derive(Debug)]
pub struct LeaderMoved(pub String);

impl std::fmt::Display for LeaderMoved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: the request may or may not have taken effect; check with herd ps, herd inspect or herd events",
            self.0
        )
    }
}

impl std::error::Error for LeaderMoved {}

/// What one endpoint made of a request.
enum Tried {
    Answered(Response),
    /// It could not be reached, or it does not lead (with the leader's URL if it said): the
    /// request was not carried out.
    NotThere(String, Option<String>),
    /// An idempotent request it may have carried out, then stopped answering: it is asked
    /// again of the leader.
    Moved(String),
}

/// Whether a request may be sent twice with the effect of once: reads, `PUT` and `DELETE`
/// (as HTTP defines them), and the commands that set a state rather than add to one (stop,
/// start, update, node labels, drain, activate). `herd run --name` and `herd migrate` find out
/// for themselves ([`LeaderMoved`]); the others report that they may have taken effect.
fn idempotent(method: &Method, path: &str) -> bool {
    match *method {
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE => true,
        Method::POST => {
            ["/stop", "/start", "/update", "/labels", "/drain", "/activate"].iter().any(|s| path.ends_with(s))
        }
        _ => false,
    }
}

impl Client {
    pub fn new(cfg: &CliConfig) -> anyhow::Result<Client> {
        let http = http_client(cfg)?;
        let bases: Vec<String> =
            cfg.api.split(',').map(|b| b.trim().trim_end_matches('/').to_string()).filter(|b| !b.is_empty()).collect();
        anyhow::ensure!(!bases.is_empty(), "the Herd config names no API endpoint (api = \"http://...\")");
        Ok(Client { bases, current: Arc::new(AtomicUsize::new(0)), token: cfg.token.clone(), http })
    }

    /// The endpoint requests go to first: the one that answered last.
    pub fn endpoint(&self) -> &str {
        &self.bases[self.endpoint_index()]
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.bases[0])).bearer_auth(&self.token)
    }

    /// Sends a request and turns a failed answer into its API error message.
    pub async fn send(&self, req: RequestBuilder) -> anyhow::Result<Response> {
        let (resp, moved) = self.execute(req).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        if let Some(moved) = moved
            && resp.status() == reqwest::StatusCode::NOT_FOUND
            && resp.url().path().starts_with("/v1/")
        {
            // A removal asked again of the new leader: the old one had done it.
            eprintln!("note: {moved}; the replica that stopped answering had done it");
            return Ok(resp);
        }
        Err(api_error(resp).await)
    }

    /// Sends a request to the leading endpoint and returns its answer, whatever its status.
    /// With the answer: for a removal (DELETE) asked again because the leader stopped
    /// answering, why it was asked again.
    async fn execute(&self, req: RequestBuilder) -> anyhow::Result<(Response, Option<String>)> {
        let req = req.build().context("building the request")?;
        if self.bases.len() > 1 && req.try_clone().is_none() {
            // A streamed body is sent once: find the leader first.
            let (probe, _) = self.execute_request(self.request(Method::GET, "/v1/health").build()?).await?;
            drop(probe);
        }
        self.execute_request(req).await
    }

    async fn execute_request(&self, req: reqwest::Request) -> anyhow::Result<(Response, Option<String>)> {
        let deadline = tokio::time::Instant::now() + FIND_LEADER_WITHIN;
        let removal = req.method() == Method::DELETE;
        let mut req = Some(req);
        let mut why: Vec<String> = Vec::new();
        let mut moved: Option<String> = None;
        loop {
            let first = self.current.load(Ordering::Relaxed);
            let mut hinted: Option<usize> = None;
            for step in 0..self.bases.len() {
                let i = hinted.take().unwrap_or((first + step) % self.bases.len());
                let Some(original) = req.as_ref() else { break };
                // The last try of a body that cannot be copied takes the original.
                let attempt = match original.try_clone() {
                    Some(r) => r,
                    None => req.take().expect("checked above"),
                };
                match self.try_endpoint(i, attempt).await? {
                    Tried::Answered(resp) => {
                        self.current.store(i, Ordering::Relaxed);
                        return Ok((resp, moved.filter(|_| removal)));
                    }
                    Tried::Moved(reason) => {
                        why.push(reason.clone());
                        moved = Some(reason);
                    }
                    Tried::NotThere(reason, leader) => {
                        why.push(reason);
                        hinted = leader.and_then(|l| self.bases.iter().position(|b| *b == l)).filter(|h| *h != i);
                        if let Some(h) = hinted {
                            self.current.store(h, Ordering::Relaxed);
                        }
                    }
                }
            }
            if req.is_none() || tokio::time::Instant::now() >= deadline {
                why.dedup();
                let tail: Vec<String> = why.iter().rev().take(self.bases.len()).rev().cloned().collect();
                if self.bases.len() == 1 && tail.iter().all(|w| w.contains("cannot reach")) {
                    return Err(anyhow!("{}: is the cluster up? (herd up)", tail.join("; ")));
                }
                return Err(anyhow!(
                    "no Control node endpoint served the request within {}s: {}",
                    FIND_LEADER_WITHIN.as_secs(),
                    tail.join("; ")
                ));
            }
            if self.bases.len() == 1 && why.last().is_some_and(|w| w.contains("cannot reach")) {
                // One endpoint that is not there: say so at once, as before replicas.
                return Err(anyhow!("{}: is the cluster up? (herd up)", why.last().unwrap()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends `req` to endpoint `i`.
    async fn try_endpoint(&self, i: usize, mut req: reqwest::Request) -> anyhow::Result<Tried> {
        let base = &self.bases[i];
        let rest = req.url().as_str().strip_prefix(self.bases[0].as_str()).unwrap_or("").to_string();
        *req.url_mut() = reqwest::Url::parse(&format!("{base}{rest}")).with_context(|| format!("API URL {base}"))?;
        let idempotent = idempotent(req.method(), req.url().path());
        let sent = tokio::select! {
            sent = self.http.execute(req) => sent,
            moved = self.leader_moved_from(i) => {
                return if idempotent { Ok(Tried::Moved(moved)) } else { Err(LeaderMoved(moved).into()) };
            }
        };
        match sent {
            Ok(resp) => {
                if resp.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE
                    && let Some(leader) = resp.headers().get(LEADER_HEADER)
                {
                    let leader = leader.to_str().unwrap_or("").trim_end_matches('/').to_string();
                    let reason = api_error(resp).await.to_string();
                    return Ok(Tried::NotThere(reason, (!leader.is_empty()).then_some(leader)));
                }
                Ok(Tried::Answered(resp))
            }
            // A certificate the config does not trust is no reason to try again or elsewhere.
            Err(e) if e.is_connect() && tls_failure(&e).is_some() => Err(anyhow!(
                "the Control node at {base} could not be trusted: {}; is the CA in the Herd config this cluster's (herd up writes it)?",
                tls_failure(&e).unwrap_or_default(),
            )),
            Err(e) if e.is_connect() => Ok(Tried::NotThere(format!("cannot reach the Control node at {base}"), None)),
            Err(e) if idempotent => Ok(Tried::Moved(format!("request to the Control node at {base} failed: {e}"))),
            Err(e) => Err(anyhow!(
                "the Control node at {base} did not answer ({e}): the request may or may not have taken effect; \
                 check with herd ps, herd inspect or herd events"
            )),
        }
    }

    /// Completes once another endpoint says that a replica other than endpoint `i` leads:
    /// how a request to a leader that stopped answering without closing its connections
    /// (paused, or cut off) is given up. Never completes with one endpoint.
    pub async fn leader_moved_from(&self, i: usize) -> String {
        if self.bases.len() < 2 {
            return std::future::pending().await;
        }
        let base = &self.bases[i];
        tokio::time::sleep(Duration::from_secs(1)).await;
        loop {
            for (j, other) in self.bases.iter().enumerate().filter(|(j, _)| *j != i) {
                let asked = self
                    .http
                    .get(format!("{other}/v1/control/lease"))
                    .bearer_auth(&self.token)
                    .timeout(Duration::from_secs(1))
                    .send()
                    .await;
                let Ok(resp) = asked else { continue };
                let Ok(lease) = resp.json::<Option<herd_proto::control::LeaderLease>>().await else { continue };
                if let Some(lease) = lease
                    && !lease.released
                    && lease.api.trim_end_matches('/') != base
                {
                    if let Some(k) = self.bases.iter().position(|b| b == lease.api.trim_end_matches('/')) {
                        self.current.store(k, Ordering::Relaxed);
                    } else {
                        self.current.store(j, Ordering::Relaxed);
                    }
                    return format!(
                        "the Control node at {base} stopped answering and replica {} leads now (term {})",
                        lease.replica, lease.term
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The index of the endpoint requests go to first.
    pub fn endpoint_index(&self) -> usize {
        self.current.load(Ordering::Relaxed) % self.bases.len()
    }

    /// Sends a request for an HTTP upgrade to `protocol` and returns the upgraded connection;
    /// an answer other than 101 Switching Protocols is the API's error.
    pub async fn upgrade(&self, req: RequestBuilder, protocol: &str) -> anyhow::Result<reqwest::Upgraded> {
        let req = req.header(reqwest::header::CONNECTION, "Upgrade").header(reqwest::header::UPGRADE, protocol);
        let (resp, _) = self.execute(req).await?;
        if resp.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
            if resp.status().is_success() {
                return Err(anyhow!("the Control node at {} did not switch to {protocol}", self.endpoint()));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_that_set_a_state_are_sent_again_and_those_that_add_one_are_not() {
        assert!(idempotent(&Method::GET, "/v1/containers"));
        assert!(idempotent(&Method::DELETE, "/v1/containers/web"));
        assert!(idempotent(&Method::PUT, "/v1/policy"));
        assert!(idempotent(&Method::POST, "/v1/containers/web/stop"));
        assert!(idempotent(&Method::POST, "/v1/nodes/n1/drain"));
        assert!(!idempotent(&Method::POST, "/v1/containers"));
        assert!(!idempotent(&Method::POST, "/v1/containers/web/migrate"));
        assert!(!idempotent(&Method::POST, "/v1/containers/web/checkpoint"));
        assert!(!idempotent(&Method::POST, "/v1/containers/web/restart"));
    }
}
