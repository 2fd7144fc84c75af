//! Admitting machines with one-time join tokens, answering the broker's auth callout for the
//! nodes that joined, and removing nodes (`herd nodes rm`). The wire format is in
//! [`herd_proto::join`]; the design in `docs/design/tls.md`.
//!
//! - A token is created by an API user (`herd join-token create`); the Control node keeps the
//!   SHA-256 of its secret and its expiry in [`subjects::JOIN_TOKENS_BUCKET`].
//! - A joining node proves the token once: the record is marked used by a write guarded by
//!   the revision it was read at, so of two nodes racing with one token exactly one joins,
//!   whichever Control replica each reaches. It gets a certificate signed by the cluster CA
//!   for the key of its signing request (its key never leaves it), naming it as a node with
//!   its address, and becomes a member ([`subjects::MEMBERS_BUCKET`]).
//! - The broker sends every connection that has no user of its own to [`CALLOUT_SUBJECT`];
//!   the Control node admits a certificate the broker verified against the cluster CA if it
//!   names a node that is a member, with that node's permissions, and refuses every other.
//! - `herd nodes rm` ends the membership, closes the node's connections through the broker's
//!   system account, and forgets the node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use herd_broker::callout::{AuthRequest, CALLOUT_SUBJECT, Issuer};
use herd_broker::{Broker, BrokerConfig, Bucket};
use herd_proto::join::{JoinReply, JoinRequest, JoinToken, JoinTokenRecord, MemberRecord, TokenText};
use herd_proto::{now_millis, subjects};
use herd_tls::{ClusterCa, Role, Subject};
use sha2::{Digest, Sha256};

use crate::control::Control;
use crate::error::{Error, Kind, Result};

/// The longest a join token may live.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 86400);

/// How long the broker's servers get to say which connections a removed node has.
const CONNZ_WAIT: Duration = Duration::from_secs(1);

/// What admitting nodes by token needs (`herd control --join-ca ...`).
#[derive(Debug, Clone)]
pub struct JoinConfig {
    /// The cluster CA's directory (`ca.crt`, `ca.key`): it signs joined nodes' certificates.
    pub ca_dir: PathBuf,
    /// A file holding the seed of the account key whose public half is the broker's
    /// `auth_callout` issuer.
    pub callout_seed: PathBuf,
    /// A user of the broker's system account, to close a removed node's connections
    /// (`None`: they stay open until they drop, and are refused when they come back).
    pub system: Option<BrokerConfig>,
    /// Another address the join routes (and only they) listen at: the cluster network, when
    /// the API listens on the loopback (`herd up`).
    pub listen: Option<SocketAddr>,
    /// How long a joined node's certificate is valid.
    pub cert_lifetime: Duration,
}

/// The Control node's part of joining.
pub(crate) struct Joining {
    ca: ClusterCa,
    ca_digest: String,
    issuer: Issuer,
    tokens: Bucket<JoinTokenRecord>,
    members: Bucket<MemberRecord>,
    system: Option<Broker>,
    cert_lifetime: Duration,
}

impl Joining {
    pub(crate) async fn open(cfg: &JoinConfig, broker: &Broker) -> anyhow::Result<Joining> {
        use anyhow::Context;
        let ca = ClusterCa::load(&cfg.ca_dir).context("the cluster CA that signs joining nodes")?;
        let ca_digest = herd_tls::request::ca_digest(ca.cert_pem()).map_err(anyhow::Error::msg)?;
        let seed = std::fs::read_to_string(&cfg.callout_seed)
            .with_context(|| format!("reading the callout key {}", cfg.callout_seed.display()))?;
        let issuer =
            Issuer::from_seed(&seed).with_context(|| format!("the callout key {}", cfg.callout_seed.display()))?;
        let system = match &cfg.system {
            Some(sys) => Some(Broker::connect(sys).await.context("connecting to the broker's system account")?),
            None => None,
        };
        Ok(Joining {
            ca,
            ca_digest,
            issuer,
            tokens: broker.bucket(subjects::JOIN_TOKENS_BUCKET).await?,
            members: broker.bucket(subjects::MEMBERS_BUCKET).await?,
            system,
            cert_lifetime: cfg.cert_lifetime,
        })
    }

    pub(crate) fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Compares in constant time.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Control {
    fn joining(&self) -> Result<&Joining> {
        self.joining.as_deref().ok_or_else(|| {
            Error::conflict(
                "this Control node does not admit nodes by token: start it with --join-ca and \
                 --callout-key (herd up does), and the broker with its auth callout",
            )
        })
    }

    /// The cluster CA's certificate, for a joining machine to check against its token.
    pub(crate) fn join_ca(&self) -> Result<String> {
        Ok(self.joining()?.ca_pem().to_string())
    }

    /// `herd join-token create`.
    pub(crate) async fn create_join_token(&self, ttl: Duration) -> Result<JoinToken> {
        let j = self.joining()?;
        if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
            return Err(Error::bad_request(format!(
                "a join token lives from 1 s to {}, not {}",
                humantime_secs(MAX_TOKEN_TTL),
                humantime_secs(ttl)
            )));
        }
        let id = hex::encode(rand::random::<[u8; 8]>());
        let secret = hex::encode(rand::random::<[u8; 16]>());
        let now = now_millis();
        let record = JoinTokenRecord {
            id: id.clone(),
            secret_sha256: sha256_hex(&secret),
            created_at: now,
            expires_at: now + ttl.as_millis() as u64,
            used_by: None,
            used_at: None,
        };
        j.tokens.put(&id, &record).await?;
        let token = TokenText { ca_digest: j.ca_digest.clone(), id: id.clone(), secret }.to_string();
        self.events
            .emit(
                "node",
                "join-token",
                &id,
                None,
                format!("join token {id} created, valid for {}", humantime_secs(ttl)),
            )
            .await;
        Ok(JoinToken { id, token, expires_at: record.expires_at })
    }

    /// `POST /v1/join`: a machine with a token becomes node `req.name`.
    pub(crate) async fn join(&self, req: JoinRequest, peer: Option<SocketAddr>) -> Result<JoinReply> {
        let j = self.joining()?;
        let from = peer.map(|p| p.ip().to_string()).unwrap_or_else(|| "?".into());
        let refuse = |why: String| {
            tracing::warn!("join of {:?} from {from} refused: {why}", req.name);
            Error::new(Kind::Forbidden, why)
        };
        let text: TokenText = req.token.parse().map_err(|e: String| refuse(e))?;
        if text.ca_digest != j.ca_digest {
            return Err(refuse("the token is for another cluster (its CA digest is not this cluster's)".into()));
        }
        herd_proto::names::validate_node_name(&req.name)
            .map_err(|e| Error::bad_request(format!("invalid node name {:?}: {}", req.name, e.0)))?;
        let Some(found) = j.tokens.get(&text.id).await? else {
            return Err(refuse(format!("unknown join token {}", text.id)));
        };
        let mut record = found.value;
        if !same(&record.secret_sha256, &sha256_hex(&text.secret)) {
            return Err(refuse(format!("wrong secret for join token {}", text.id)));
        }
        if let Some(by) = &record.used_by {
            return Err(refuse(format!(
                "join token {} was used already (by node {by}): a token admits one machine",
                text.id
            )));
        }
        if now_millis() >= record.expires_at {
            return Err(refuse(format!("join token {} has expired: herd join-token create makes a new one", text.id)));
        }
        // Registered nodes and members (some never connected): neither its name nor its
        // address (which its certificate will name) may be another node's.
        let (members, _) = j.members.snapshot().await?;
        let nodes: Vec<(String, std::net::Ipv4Addr)> = self
            .view
            .read()
            .unwrap()
            .nodes
            .values()
            .map(|n| (n.record.name.clone(), n.record.address))
            .chain(members.into_values().map(|m| (m.value.name, m.value.address)))
            .collect();
        if nodes.iter().any(|(name, _)| *name == req.name) {
            return Err(Error::conflict(format!(
                "a node named {} is in the cluster already: choose another name, or herd nodes rm {} first",
                req.name, req.name
            )));
        }
        let holder = nodes.into_iter().find(|(_, address)| *address == req.address);
        if let Some((holder, _)) = holder {
            return Err(Error::conflict(format!(
                "address {} is node {holder}'s: a joining node gives the address other nodes reach it at",
                req.address
            )));
        }
        // Used once: of two joins with this token, the write of the second finds a newer
        // revision and fails.
        record.used_by = Some(req.name.clone());
        record.used_at = Some(now_millis());
        if j.tokens.update(&text.id, &record, found.revision).await?.is_err() {
            return Err(refuse(format!("join token {} was used already: a token admits one machine", text.id)));
        }
        let subject = Subject::new(&req.name, Role::Node).with_ip(req.address.into());
        let cert =
            j.ca.sign_request(&req.csr, &subject, j.cert_lifetime)
                .map_err(|e| Error::bad_request(format!("the certificate request: {e}")))?;
        let member = MemberRecord {
            name: req.name.clone(),
            address: req.address,
            joined_at: now_millis(),
            token_id: text.id.clone(),
        };
        j.members.put(&req.name, &member).await?;
        tracing::info!("node {} joined from {from} with token {}", req.name, text.id);
        self.events
            .emit(
                "node",
                "join",
                &req.name,
                Some(&req.name),
                format!("node {} joined from {from} with token {} (address {})", req.name, text.id, req.address),
            )
            .await;
        Ok(JoinReply { name: req.name, cert, ca: j.ca_pem().to_string(), broker: self.cfg.broker.url.clone() })
    }

    /// `POST /v1/join/renew`: a member presents its current certificate (the handshake
    /// checked it against the cluster CA) and gets one for a new key, with the same name and
    /// address.
    pub(crate) async fn renew_node_cert(&self, peer: Option<crate::https::Peer>, csr: &str) -> Result<JoinReply> {
        let j = self.joining()?;
        let from = peer.as_ref().map(|p| p.addr.ip().to_string()).unwrap_or_else(|| "?".into());
        let refuse = |why: String| {
            tracing::warn!("certificate renewal from {from} refused: {why}");
            Error::new(Kind::Forbidden, why)
        };
        let Some(der) = peer.and_then(|p| p.cert) else {
            return Err(refuse("present the node's current certificate (TLS client authentication)".into()));
        };
        let info = herd_tls::CertInfo::parse(&der).map_err(|e| refuse(format!("the certificate: {e}")))?;
        if info.role.as_deref() != Some(Role::Node.as_str()) {
            return Err(refuse(format!("{} is not a node's certificate", info.name)));
        }
        let Some(member) = j.members.get(&info.name).await? else {
            return Err(refuse(format!(
                "node {} is not a member of the cluster (never joined, or removed)",
                info.name
            )));
        };
        let subject = Subject::new(&info.name, Role::Node).with_ip(member.value.address.into());
        let cert =
            j.ca.sign_request(csr, &subject, j.cert_lifetime)
                .map_err(|e| Error::bad_request(format!("the certificate request: {e}")))?;
        tracing::info!("node {}: certificate renewed (from {from})", info.name);
        Ok(JoinReply { name: info.name, cert, ca: j.ca_pem().to_string(), broker: self.cfg.broker.url.clone() })
    }

    /// The broker asks whether a connection without a user of its own may in.
    async fn authorize(&self, req: &AuthRequest) -> String {
        let j = self.joining.as_deref().expect("callouts are served with joining on");
        let who = format!("connection {} from {} ({:?})", req.client_id, req.client_host, req.client_name);
        let verdict = async {
            let pem = req.verified_certificate.as_deref().ok_or("it presented no certificate of the cluster CA")?;
            let info = herd_tls::request::cert_info_pem(pem)?;
            if info.role.as_deref() != Some(Role::Node.as_str()) {
                return Err(format!(
                    "its certificate is for {} {}, not a node",
                    info.role.unwrap_or_default(),
                    info.name
                ));
            }
            match j.members.get(&info.name).await {
                Ok(Some(_)) => Ok(info.name),
                Ok(None) => {
                    Err(format!("node {} is not a member of the cluster (never joined, or removed)", info.name))
                }
                Err(e) => Err(format!("the members could not be read: {e:#}")),
            }
        }
        .await;
        match verdict {
            Ok(node) => {
                tracing::info!("broker {}: {who} admitted as node {node}", req.server_name);
                j.issuer.allow(req, &node, &subjects::node_permissions(&node), None)
            }
            Err(why) => {
                tracing::warn!("broker {}: {who} refused: {why}", req.server_name);
                j.issuer.deny(req, &why)
            }
        }
    }

    /// Answers the broker's auth callouts (one replica at a time answers each).
    pub(crate) async fn serve_callouts(self: Arc<Self>) {
        let mut sub = match self.broker.client.queue_subscribe(CALLOUT_SUBJECT, "herd-control".into()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot answer the broker's auth callouts: {e}: joined nodes cannot connect");
                return;
            }
        };
        while let Some(msg) = sub.next().await {
            let Some(reply) = msg.reply.clone() else { continue };
            let token = String::from_utf8_lossy(&msg.payload).to_string();
            let this = self.clone();
            tokio::spawn(async move {
                match AuthRequest::decode(&token) {
                    Ok(req) => {
                        let answer = this.authorize(&req).await;
                        if let Err(e) = this.broker.client.publish(reply, answer.into()).await {
                            tracing::warn!("could not answer the broker's auth callout: {e}");
                        }
                    }
                    // Without the request's keys there is nothing to sign: the broker refuses
                    // the connection when its wait runs out.
                    Err(e) => tracing::warn!("ignoring a malformed auth callout request: {e}"),
                }
            });
        }
    }

    /// `herd nodes rm NODE`: a node that joined with a token leaves for good.
    pub(crate) async fn remove_node(&self, name: &str) -> Result<()> {
        let j = self.joining()?;
        let member = j.members.get(name).await?;
        let known = self.view.read().unwrap().nodes.contains_key(name);
        if member.is_none() {
            return Err(if known {
                Error::conflict(format!(
                    "node {name} did not join with a token: its broker credentials are in the broker's \
                     configuration, not the Control node's to revoke (herd up made them)"
                ))
            } else {
                Error::not_found(format!("no such node: {name}"))
            });
        }
        let placed: Vec<String> = {
            let view = self.view.read().unwrap();
            let mut names: Vec<String> =
                view.containers.values().filter(|c| c.node == name).map(|c| c.name.clone()).collect();
            names.sort();
            names
        };
        if !placed.is_empty() {
            return Err(Error::conflict(format!(
                "node {name} still has containers ({}): move them away (herd nodes drain {name}) or remove them first",
                placed.join(", ")
            )));
        }
        j.members.delete(name).await?;
        let closed = match &j.system {
            Some(sys) => close_connections(sys, name).await,
            None => Err("no connection to the broker's system account".to_string()),
        };
        let nodes: Bucket<herd_proto::state::NodeRecord> = self.broker.bucket(subjects::NODES_BUCKET).await?;
        nodes.delete(name).await?;
        {
            let mut view = self.view.write().unwrap();
            view.nodes.remove(name);
            view.nodes_changed();
        }
        let how = match closed {
            Ok(n) => format!("its {n} broker connection(s) closed"),
            Err(why) => {
                format!("its broker connections stay open until they drop ({why}), and are refused when they come back")
            }
        };
        tracing::info!("node {name} removed: {how}");
        self.events.emit("node", "removed", name, Some(name), format!("node {name} removed: {how}")).await;
        Ok(())
    }
}

/// Closes every connection of broker user `user` on every server of the cluster; returns how
/// many there were.
async fn close_connections(sys: &Broker, user: &str) -> std::result::Result<usize, String> {
    let inbox = sys.client.new_inbox();
    let mut answers = sys.client.subscribe(inbox.clone()).await.map_err(|e| e.to_string())?;
    let filter = serde_json::json!({ "user": user, "limit": 1024 });
    sys.client
        .publish_with_reply("$SYS.REQ.SERVER.PING.CONNZ", inbox, filter.to_string().into())
        .await
        .map_err(|e| e.to_string())?;
    let mut kicks = Vec::new();
    let deadline = tokio::time::Instant::now() + CONNZ_WAIT;
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, answers.next()).await {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&msg.payload) else { continue };
        let server = v["server"]["id"].as_str().unwrap_or_default().to_string();
        for c in v["data"]["connections"].as_array().into_iter().flatten() {
            if let Some(cid) = c["cid"].as_u64() {
                kicks.push((server.clone(), cid));
            }
        }
    }
    for (server, cid) in &kicks {
        let subject = format!("$SYS.REQ.SERVER.{server}.KICK");
        let body = serde_json::json!({ "cid": cid }).to_string();
        if let Err(e) = sys.client.request(subject, body.into()).await {
            return Err(format!("closing connection {cid} on {server}: {e}"));
        }
    }
    Ok(kicks.len())
}

fn humantime_secs(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}
