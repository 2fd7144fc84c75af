//! Connecting to the broker and creating the cluster's JetStream state.
//!
//! The broker may be one nats-server or a JetStream cluster of several: a [`BrokerConfig`]'s
//! URL is then a comma-separated list (`nats://a:4222,nats://b:4222,nats://c:4222`), the
//! client connects to any of them and moves to another when its server goes, and every
//! bucket, stream and object store is created with one replica per listed server, up to
//! [`MAX_REPLICAS`]: with three servers, the loss of any one loses nothing.

use std::time::Duration;

use anyhow::{Context, bail};
use async_nats::jetstream::{self, kv, object_store, stream};
use async_nats::{ConnectOptions, RequestErrorKind};
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Fence;
use crate::bucket::Bucket;
use crate::objects::Objects;
use herd_proto::subjects;

/// The most replicas of a bucket, stream or object store: NATS' own advice for a cluster
/// (three survive the loss of one server; more cost writes and buy little).
pub const MAX_REPLICAS: usize = 3;

/// How often a client of a clustered broker pings its server; two unanswered pings end the
/// connection, well within a node's heartbeat timeout (3 s by default).
pub const PING_INTERVAL: Duration = Duration::from_millis(500);

/// Where the broker is and who we are to it.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `nats://host:port`, or several of them separated by commas (the servers of one
    /// JetStream cluster).
    pub url: String,
    /// Client name shown by the broker's monitoring (`control`, `node n1`, ...).
    pub client_name: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// How long to keep trying the first connection.
    pub connect_timeout: Duration,
    /// TLS to the broker: the cluster CA the server is checked against, and this client's
    /// certificate (the broker asks every client for one). `None`: plain text.
    pub tls: Option<herd_tls::TlsFiles>,
}

impl BrokerConfig {
    pub fn new(url: impl Into<String>, client_name: impl Into<String>) -> Self {
        BrokerConfig {
            url: url.into(),
            client_name: client_name.into(),
            user: None,
            password: None,
            connect_timeout: Duration::from_secs(15),
            tls: None,
        }
    }

    /// Connects over TLS with `files` (see [`BrokerConfig::tls`]).
    pub fn with_tls(mut self, files: Option<herd_tls::TlsFiles>) -> Self {
        self.tls = files;
        self
    }

    pub fn with_credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self.password = Some(password.into());
        self
    }

    /// The servers listed in [`BrokerConfig::url`].
    pub fn urls(&self) -> Vec<&str> {
        self.url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect()
    }

    /// How many replicas the cluster's JetStream state gets: one per listed server, up to
    /// [`MAX_REPLICAS`].
    pub fn replicas(&self) -> usize {
        self.urls().len().clamp(1, MAX_REPLICAS)
    }
}

/// A connection to the broker with JetStream.
#[derive(Clone)]
pub struct Broker {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    /// Replicas of what it creates (see [`BrokerConfig::replicas`]).
    replicas: usize,
    /// Since when the connection has been up (`None` while it is down).
    connected_since: std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    /// What every write checks first, for a Control replica that leads (see [`Fence`]).
    fence: Option<Fence>,
}

impl Broker {
    /// Connects, retrying until `connect_timeout`; the client reconnects by itself afterwards.
    pub async fn connect(cfg: &BrokerConfig) -> anyhow::Result<Broker> {
        let deadline = tokio::time::Instant::now() + cfg.connect_timeout;
        let mut last_err;
        let connected_since = std::sync::Arc::new(std::sync::Mutex::new(None));
        loop {
            let link = connected_since.clone();
            let mut opts = match (&cfg.user, &cfg.password) {
                (Some(u), Some(p)) => ConnectOptions::with_user_and_password(u.clone(), p.clone()),
                _ => ConnectOptions::new(),
            };
            opts = opts
                .name(&cfg.client_name)
                .connection_timeout(Duration::from_secs(3))
                .request_timeout(Some(Duration::from_secs(10)))
                .max_reconnects(None)
                .event_callback(move |event| {
                    let link = link.clone();
                    async move {
                        match event {
                            async_nats::Event::Connected => {
                                *link.lock().unwrap() = Some(std::time::Instant::now());
                                tracing::info!("connected to the broker");
                            }
                            async_nats::Event::Disconnected => {
                                *link.lock().unwrap() = None;
                                tracing::warn!("disconnected from the broker; reconnecting");
                            }
                            other => tracing::debug!("broker connection: {other}"),
                        }
                    }
                });
            if let Some(tls) = &cfg.tls {
                // The files are read again at each (re)connection: a renewed certificate is
                // used from the next one on.
                opts = opts
                    .require_tls(true)
                    .add_root_certificates(tls.ca.clone())
                    .add_client_certificate(tls.cert.clone(), tls.key.clone());
            }
            if cfg.replicas() > 1 {
                // A server that stops answering (stopped, or cut off) keeps its connections
                // open: pings every 0.5 s find it out within seconds, and the client moves to
                // another server (async-nats' default, a minute, would stall every request).
                opts = opts.ping_interval(PING_INTERVAL);
            }
            let addrs = cfg
                .urls()
                .into_iter()
                .map(|u| u.parse::<async_nats::ServerAddr>().with_context(|| format!("broker address {u:?}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            if addrs.is_empty() {
                bail!("no broker address given");
            }
            match opts.connect(addrs).await {
                Ok(client) => {
                    let js = jetstream::new(client.clone());
                    *connected_since.lock().unwrap() = Some(std::time::Instant::now());
                    return Ok(Broker { client, js, replicas: cfg.replicas(), connected_since, fence: None });
                }
                Err(e) => last_err = e.to_string(),
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "cannot connect to the broker at {} as {:?}: {last_err}",
                    cfg.url,
                    cfg.user.as_deref().unwrap_or("(no user)")
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Opens a key-value bucket, creating it (one value per key, file storage) when missing.
    pub async fn bucket<T: Serialize + DeserializeOwned>(&self, name: &str) -> anyhow::Result<Bucket<T>> {
        let store = self
            .until_ready(|| async move {
                match self.js.get_key_value(name).await {
                    Ok(s) => Ok(s),
                    Err(_) => self
                        .js
                        .create_key_value(kv::Config {
                            bucket: name.to_string(),
                            history: 1,
                            storage: stream::StorageType::File,
                            num_replicas: self.replicas,
                            ..Default::default()
                        })
                        .await
                        .with_context(|| format!("creating key-value bucket {name}")),
                }
            })
            .await?;
        Ok(Bucket::new(store, self.client.clone(), self.replicas > 1, self.fence.clone()))
    }

    /// Opens the object store of image layers, creating it when missing.
    pub async fn layer_store(&self) -> anyhow::Result<Objects> {
        self.object_store(subjects::LAYERS_STORE, "the image layer store", object_store::Config::default()).await
    }

    /// Opens the object store that carries checkpoints between nodes and between a node and
    /// the Control node, creating it when missing. Its objects are transient: leftovers of
    /// interrupted transfers expire.
    pub async fn checkpoint_store(&self) -> anyhow::Result<Objects> {
        let config = object_store::Config {
            description: Some("checkpoints in transit".into()),
            max_age: Duration::from_secs(subjects::CHECKPOINTS_STORE_MAX_AGE_SECS),
            ..Default::default()
        };
        self.object_store(subjects::CHECKPOINTS_STORE, "the checkpoint store", config).await
    }

    /// Opens the object store of ticker versions (see `herd_proto::ha`), creating it when
    /// missing. Unlike the checkpoint store it is not transient: a version stays until
    /// retention or the removal of its container deletes it.
    pub async fn versions_store(&self) -> anyhow::Result<Objects> {
        let config =
            object_store::Config { description: Some("checkpoint ticker versions".into()), ..Default::default() };
        self.object_store(subjects::VERSIONS_STORE, "the version store", config).await
    }

    /// Opens object store `bucket` (`what` in errors), creating it from `config` (on file,
    /// with the broker's replicas) when missing.
    async fn object_store(&self, bucket: &str, what: &str, config: object_store::Config) -> anyhow::Result<Objects> {
        let config = object_store::Config {
            bucket: bucket.to_string(),
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            ..config
        };
        let store = self
            .until_ready(|| {
                let config = config.clone();
                async move {
                    match self.js.get_object_store(bucket).await {
                        Ok(s) => Ok(s),
                        Err(_) => self.js.create_object_store(config).await.with_context(|| format!("creating {what}")),
                    }
                }
            })
            .await?;
        Ok(Objects::new(store, self.js.clone(), bucket, subjects::CHECKPOINTS_CHUNK, self.fence.clone()))
    }

    /// Opens the event stream, creating it (bounded to the newest 10,000 events) when missing.
    pub async fn event_stream(&self) -> anyhow::Result<stream::Stream> {
        self.until_ready(|| async move {
            self.js
                .get_or_create_stream(stream::Config {
                    name: subjects::EVENTS_STREAM.to_string(),
                    subjects: vec![subjects::EVENTS_SUBJECTS.to_string()],
                    max_messages: 10_000,
                    storage: stream::StorageType::File,
                    num_replicas: self.replicas,
                    ..Default::default()
                })
                .await
                .context("creating the event stream")
        })
        .await
    }

    /// Runs `op`, which opens or creates JetStream state, until it succeeds. A clustered
    /// broker that has just started refuses such requests ("JetStream system temporarily
    /// unavailable"), or leaves them unanswered, until its servers have elected a leader; it
    /// is given 30 s for that. One server answers at once: its error is returned as it is.
    async fn until_ready<T, F, Fut>(&self, mut op: F) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<T>>,
    {
        if self.replicas == 1 {
            return op().await;
        }
        // An early request may go unanswered rather than refused: it is asked again after a
        // few seconds instead of the client's whole request timeout.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let attempt = match tokio::time::timeout(Duration::from_secs(2), op()).await {
                Ok(r) => r,
                Err(_) => Err(anyhow::anyhow!("no answer within 2 s")),
            };
            match attempt {
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!("the broker's JetStream is not ready yet: {e:#}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                r => return r,
            }
        }
    }

    /// The same connection, whose buckets and object stores opened from now on, and whose
    /// requests, check `fence` before every write (see [`Fence`]).
    pub fn with_fence(&self, fence: Fence) -> Broker {
        Broker { fence: Some(fence), ..self.clone() }
    }

    /// The fence this connection's writes check, if any.
    pub fn fence(&self) -> Option<&Fence> {
        self.fence.as_ref()
    }

    /// Refuses a write when this connection's fence no longer holds.
    pub fn check_fence(&self) -> anyhow::Result<()> {
        self.fence.as_ref().map_or(Ok(()), Fence::check)
    }

    /// How long the connection has been up without a break (`None` while it is down): what
    /// a component heard from the others in a shorter time says nothing of them.
    pub fn connected_for(&self) -> Option<Duration> {
        self.connected_since.lock().unwrap().map(|since| since.elapsed())
    }

    /// The most bytes the broker carries in one message (its `max_payload`, as the server
    /// announced it).
    pub fn max_payload(&self) -> usize {
        self.client.max_payload()
    }

    /// Publishes `msg` as JSON on `subject` (core NATS, fire and forget).
    pub async fn publish<M: Serialize>(&self, subject: String, msg: &M) -> anyhow::Result<()> {
        let payload = serde_json::to_vec(msg)?;
        crate::check_fits(self.max_payload(), || format!("the message to {subject}"), payload.len())?;
        self.client.publish(subject, Bytes::from(payload)).await.context("publishing to the broker")
    }

    /// Sends `req` as JSON to `subject` and decodes the JSON reply; `who` names the responder
    /// in errors (`node n1`). With a fence, the request is refused once it no longer holds and
    /// carries its term ([`crate::TERM_HEADER`]) otherwise.
    pub async fn request<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        subject: String,
        who: &str,
        req: &Req,
        timeout: Duration,
    ) -> anyhow::Result<Resp> {
        let payload = serde_json::to_vec(req)?;
        crate::check_fits(self.max_payload(), || format!("the request to {who}"), payload.len())?;
        let mut request = async_nats::Request::new().payload(Bytes::from(payload)).timeout(Some(timeout));
        if let Some(fence) = &self.fence {
            fence.check()?;
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(crate::TERM_HEADER, fence.term().to_string().as_str());
            request = request.headers(headers);
        }
        let msg = match self.client.send_request(subject, request).await {
            Ok(m) => m,
            Err(e) => match e.kind() {
                RequestErrorKind::TimedOut => {
                    bail!("{who} did not answer within {}s", timeout.as_secs())
                }
                RequestErrorKind::NoResponders => bail!("{who} is not connected to the broker"),
                _ => bail!("request to {who} failed: {e}"),
            },
        };
        serde_json::from_slice(&msg.payload).with_context(|| format!("{who} sent a reply that could not be decoded"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_of_servers_gives_one_replica_each_up_to_three() {
        let one = BrokerConfig::new("nats://10.77.0.1:7422", "t");
        assert_eq!((one.urls(), one.replicas()), (vec!["nats://10.77.0.1:7422"], 1));
        let three = BrokerConfig::new("nats://a:4222, nats://b:4222,nats://c:4222", "t");
        assert_eq!(three.urls(), ["nats://a:4222", "nats://b:4222", "nats://c:4222"]);
        assert_eq!(three.replicas(), 3);
        assert_eq!(BrokerConfig::new("nats://a,nats://b,nats://c,nats://d,nats://e", "t").replicas(), 3);
        assert_eq!(BrokerConfig::new("nats://a,nats://b", "t").replicas(), 2);
    }
}
