//! Connecting to the broker and creating the cluster's JetStream state.

use std::time::Duration;

use anyhow::{Context, bail};
use async_nats::jetstream::{self, kv, object_store, stream};
use async_nats::{ConnectOptions, RequestErrorKind};
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bucket::Bucket;
use crate::objects::Objects;
use herd_proto::subjects;

/// Where the broker is and who we are to it.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `nats://host:port`.
    pub url: String,
    /// Client name shown by the broker's monitoring (`control`, `node n1`, ...).
    pub client_name: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// How long to keep trying the first connection.
    pub connect_timeout: Duration,
}

impl BrokerConfig {
    pub fn new(url: impl Into<String>, client_name: impl Into<String>) -> Self {
        BrokerConfig {
            url: url.into(),
            client_name: client_name.into(),
            user: None,
            password: None,
            connect_timeout: Duration::from_secs(15),
        }
    }

    pub fn with_credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self.password = Some(password.into());
        self
    }
}

/// A connection to the broker with JetStream.
#[derive(Clone)]
pub struct Broker {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
}

impl Broker {
    /// Connects, retrying until `connect_timeout`; the client reconnects by itself afterwards.
    pub async fn connect(cfg: &BrokerConfig) -> anyhow::Result<Broker> {
        let deadline = tokio::time::Instant::now() + cfg.connect_timeout;
        let mut last_err;
        loop {
            let mut opts = match (&cfg.user, &cfg.password) {
                (Some(u), Some(p)) => ConnectOptions::with_user_and_password(u.clone(), p.clone()),
                _ => ConnectOptions::new(),
            };
            opts = opts
                .name(&cfg.client_name)
                .connection_timeout(Duration::from_secs(3))
                .request_timeout(Some(Duration::from_secs(10)))
                .max_reconnects(None);
            match opts.connect(cfg.url.as_str()).await {
                Ok(client) => {
                    let js = jetstream::new(client.clone());
                    return Ok(Broker { client, js });
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
        let store = match self.js.get_key_value(name).await {
            Ok(s) => s,
            Err(_) => self
                .js
                .create_key_value(kv::Config {
                    bucket: name.to_string(),
                    history: 1,
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .with_context(|| format!("creating key-value bucket {name}"))?,
        };
        Ok(Bucket::new(store, self.client.clone()))
    }

    /// Opens the object store of image layers, creating it when missing.
    pub async fn layer_store(&self) -> anyhow::Result<Objects> {
        let store = match self.js.get_object_store(subjects::LAYERS_STORE).await {
            Ok(s) => s,
            Err(_) => self
                .js
                .create_object_store(object_store::Config {
                    bucket: subjects::LAYERS_STORE.to_string(),
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .context("creating the image layer store")?,
        };
        Ok(Objects::new(store, self.js.clone(), subjects::LAYERS_STORE, subjects::CHECKPOINTS_CHUNK))
    }

    /// Opens the object store that carries checkpoints between nodes and between a node and
    /// the Control node, creating it when missing. Its objects are transient: leftovers of
    /// interrupted transfers expire.
    pub async fn checkpoint_store(&self) -> anyhow::Result<Objects> {
        let store = match self.js.get_object_store(subjects::CHECKPOINTS_STORE).await {
            Ok(s) => s,
            Err(_) => self
                .js
                .create_object_store(object_store::Config {
                    bucket: subjects::CHECKPOINTS_STORE.to_string(),
                    description: Some("checkpoints in transit".into()),
                    max_age: Duration::from_secs(subjects::CHECKPOINTS_STORE_MAX_AGE_SECS),
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .context("creating the checkpoint store")?,
        };
        Ok(Objects::new(store, self.js.clone(), subjects::CHECKPOINTS_STORE, subjects::CHECKPOINTS_CHUNK))
    }

    /// Opens the object store of ticker versions (see `herd_proto::ha`), creating it when
    /// missing. Unlike the checkpoint store it is not transient: a version stays until
    /// retention or the removal of its container deletes it.
    pub async fn versions_store(&self) -> anyhow::Result<Objects> {
        let store = match self.js.get_object_store(subjects::VERSIONS_STORE).await {
            Ok(s) => s,
            Err(_) => self
                .js
                .create_object_store(object_store::Config {
                    bucket: subjects::VERSIONS_STORE.to_string(),
                    description: Some("checkpoint ticker versions".into()),
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .context("creating the version store")?,
        };
        Ok(Objects::new(store, self.js.clone(), subjects::VERSIONS_STORE, subjects::CHECKPOINTS_CHUNK))
    }

    /// Opens the event stream, creating it (bounded to the newest 10,000 events) when missing.
    pub async fn event_stream(&self) -> anyhow::Result<stream::Stream> {
        self.js
            .get_or_create_stream(stream::Config {
                name: subjects::EVENTS_STREAM.to_string(),
                subjects: vec![subjects::EVENTS_SUBJECTS.to_string()],
                max_messages: 10_000,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .context("creating the event stream")
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
    /// in errors (`node n1`).
    pub async fn request<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        subject: String,
        who: &str,
        req: &Req,
        timeout: Duration,
    ) -> anyhow::Result<Resp> {
        let payload = serde_json::to_vec(req)?;
        crate::check_fits(self.max_payload(), || format!("the request to {who}"), payload.len())?;
        let request = async_nats::Request::new().payload(Bytes::from(payload)).timeout(Some(timeout));
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
