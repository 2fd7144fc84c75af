//! Joining a machine to the cluster with a one-time token, and removing a node.
//!
//! `herd join-token create` asks the Control node for a token ([`JoinTokenRequest`] →
//! [`JoinToken`]); `herd node --join URL --token TOKEN` on the new machine reads the cluster
//! CA from `GET /v1/join/ca` over a connection it does not trust yet, keeps it only if its
//! digest is the one in the token, then sends `POST /v1/join` ([`JoinRequest`]: the token, its
//! name and address, and a certificate signing request for a key it keeps) over a connection
//! checked against that CA, and gets its certificate and the broker's address back
//! ([`JoinReply`]); before that certificate lapses, the node presents it to `POST
//! /v1/join/renew` for a new one ([`RenewRequest`]). The broker lets it in through the Control node's auth callout, which
//! admits a node certificate only while its node is a member ([`MemberRecord`]); `herd nodes
//! rm` ends the membership and closes the node's connections.
//!
//! A token's text is `HJT1-<CA digest, 64 hex>-<id, 16 hex>-<secret, 32 hex>` ([`TokenText`]);
//! the Control node keeps only the SHA-256 of the secret ([`JoinTokenRecord`], key: the id).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::UnixMillis;

/// The prefix and version of a token's text.
const TOKEN_PREFIX: &str = "HJT1";

/// `POST /v1/join-tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenRequest {
    /// How long the token may be used, in seconds.
    pub ttl_secs: u64,
}

/// A new token, as `herd join-token create` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    pub id: String,
    pub token: String,
    pub expires_at: UnixMillis,
}

/// A token as the Control node keeps it. Key: the token's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenRecord {
    pub id: String,
    /// Hex SHA-256 of the secret.
    pub secret_sha256: String,
    pub created_at: UnixMillis,
    pub expires_at: UnixMillis,
    /// The node that used it, once used.
    #[serde(default)]
    pub used_by: Option<String>,
    #[serde(default)]
    pub used_at: Option<UnixMillis>,
}

/// `POST /v1/join`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub token: String,
    /// The node's name.
    pub name: String,
    /// The address other nodes reach it at (its certificate names it).
    pub address: Ipv4Addr,
    /// A PEM certificate signing request for the node's key.
    pub csr: String,
}

/// `POST /v1/join/renew`, over TLS with the node's current certificate: a new certificate for
/// a new key, before the current one lapses. The answer is a [`JoinReply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewRequest {
    /// A PEM certificate signing request for the node's new key.
    pub csr: String,
}

/// What a joining node gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinReply {
    pub name: String,
    /// Its certificate (PEM), signed by the cluster CA.
    pub cert: String,
    /// The cluster CA (PEM).
    pub ca: String,
    /// The broker's URL(s), as the Control node reaches them.
    pub broker: String,
}

/// A node that joined with a token and may connect to the broker. Key: the node's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub name: String,
    pub address: Ipv4Addr,
    pub joined_at: UnixMillis,
    /// The token it joined with.
    pub token_id: String,
}

/// The parts of a token's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenText {
    /// `sha256:` and the hex digest of the cluster CA's certificate.
    pub ca_digest: String,
    pub id: String,
    pub secret: String,
}

impl fmt::Display for TokenText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digest = self.ca_digest.strip_prefix("sha256:").unwrap_or(&self.ca_digest);
        write!(f, "{TOKEN_PREFIX}-{digest}-{}-{}", self.id, self.secret)
    }
}

impl FromStr for TokenText {
    type Err = String;

    fn from_str(s: &str) -> Result<TokenText, String> {
        let bad = |why: &str| format!("not a Herd join token ({why}): herd join-token create prints one");
        let parts: Vec<&str> = s.trim().split('-').collect();
        let [prefix, digest, id, secret] = parts[..] else { return Err(bad("it has not four parts")) };
        if prefix != TOKEN_PREFIX {
            return Err(bad(&format!("it does not begin with {TOKEN_PREFIX}-")));
        }
        let hex = |p: &str, len: usize| p.len() == len && p.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex(digest, 64) || !hex(id, 16) || !hex(secret, 32) {
            return Err(bad("a part has the wrong length or is not hexadecimal"));
        }
        Ok(TokenText { ca_digest: format!("sha256:{}", digest.to_lowercase()), id: id.into(), secret: secret.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_print_and_parse() {
        let t = TokenText {
            ca_digest: format!("sha256:{}", "ab".repeat(32)),
            id: "0123456789abcdef".into(),
            secret: "f".repeat(32),
        };
        let text = t.to_string();
        assert!(text.starts_with("HJT1-abab"), "{text}");
        assert_eq!(text.parse::<TokenText>(), Ok(t));
        for bad in ["", "HJT1-ab-cd-ef", "HJT2-x-y-z", &text[..text.len() - 1], &text.replace("HJT1-ab", "HJT1-zz")] {
            assert!(bad.parse::<TokenText>().unwrap_err().contains("not a Herd join token"), "{bad}");
        }
    }
}
