//! The broker's auth callout: how nats-server asks the Control node whether a connection
//! without a user of its own in the broker's configuration (a node that joined the cluster
//! with a token) may in, and with which permissions.
//!
//! With `authorization { auth_callout { issuer: ACCOUNT_KEY, auth_users: [...] } }` in its
//! configuration, nats-server sends every other connection's details to
//! [`CALLOUT_SUBJECT`] and waits for a signed answer. Both are JWTs as nats-io/jwt v2 writes
//! them (`BASE64URL(header).BASE64URL(claims).BASE64URL(ed25519 signature)`, header
//! `{"typ":"JWT","alg":"ed25519-nkey"}`, keys as NATS nkeys):
//!
//! - the request, signed by the server: `sub` the issuer, `nats.server_id.id` the server,
//!   `nats.user_nkey` a key the server made for this connection, `nats.client_info` and
//!   `nats.connect_opts` what the client said, `nats.client_tls.verified_chains` the client's
//!   certificate chain as PEM once the server checked it against its CA;
//! - the answer, signed by the issuer: `aud` the server's id, `sub` the user key of the
//!   request, and `nats.jwt`, a user JWT (also signed by the issuer, `sub` that same user key,
//!   `aud` the account, `$G` for a server without accounts, `nats.pub`/`nats.sub`/`nats.resp`
//!   its permissions), or `nats.error`, the reason for a refusal, which the server logs.
//!
//! Only the issuer's key signs answers, so the broker takes them from nobody else; the
//! server's key on the request says which server asks.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herd_proto::subjects::NodePermissions;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The subject nats-server sends its authorization requests to.
pub const CALLOUT_SUBJECT: &str = "$SYS.REQ.USER.AUTH";
/// The account users of a server without `accounts` live in.
pub const GLOBAL_ACCOUNT: &str = "$G";

const HEADER: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;

/// What went wrong with a request from the broker.
#[derive(Debug, thiserror::Error)]
pub enum CalloutError {
    #[error("not a JWT of three parts")]
    Shape,
    #[error("its {0} is not base64url")]
    Base64(&'static str),
    #[error("its header is not a NATS JWT header: {0}")]
    Header(String),
    #[error("its claims are not an authorization request: {0}")]
    Claims(String),
    #[error("its signature does not match its issuer {0}")]
    Signature(String),
    #[error("the issuer key: {0}")]
    Key(String),
}

/// The account key that signs the answers; its public half is the `issuer` of the broker's
/// `auth_callout` configuration.
pub struct Issuer {
    key: nkeys::KeyPair,
}

impl Issuer {
    /// A new account key.
    pub fn generate() -> Issuer {
        Issuer { key: nkeys::KeyPair::new_account() }
    }

    /// The key whose seed (`SA...`) is `seed`.
    pub fn from_seed(seed: &str) -> Result<Issuer, CalloutError> {
        let key = nkeys::KeyPair::from_seed(seed.trim()).map_err(|e| CalloutError::Key(e.to_string()))?;
        if !key.public_key().starts_with('A') {
            return Err(CalloutError::Key("not an account key (its seed must begin with SA)".into()));
        }
        Ok(Issuer { key })
    }

    /// The seed, to keep in a private file.
    pub fn seed(&self) -> String {
        self.key.seed().expect("a generated key has its seed")
    }

    /// The public key (`A...`), for the broker's configuration.
    pub fn public_key(&self) -> String {
        self.key.public_key()
    }

    fn sign_claims(&self, claims: &Value) -> String {
        let head = URL_SAFE_NO_PAD.encode(HEADER);
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialize"));
        let signed = format!("{head}.{body}");
        let signature = self.key.sign(signed.as_bytes()).expect("an account key with its seed signs");
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// The answer that lets the connection of `req` in as user `name` with `permissions`,
    /// until `expires` (seconds since the epoch) if given: the server closes the connection
    /// then, and the client's reconnection asks again.
    pub fn allow(&self, req: &AuthRequest, name: &str, permissions: &NodePermissions, expires: Option<u64>) -> String {
        let mut user = self.claims(&req.user_nkey, GLOBAL_ACCOUNT, name);
        user["nats"] = json!({
            "pub": { "allow": permissions.publish_allow, "deny": permissions.publish_deny },
            "sub": { "allow": permissions.subscribe_allow },
            // allow_responses: true (one reply within the server's default time).
            "resp": { "max": 0, "ttl": 0 },
            "subs": -1, "data": -1, "payload": -1,
            "type": "user", "version": 2,
        });
        if let Some(exp) = expires {
            user["exp"] = json!(exp);
        }
        self.answer(req, json!({ "jwt": self.sign_claims(&user) }))
    }

    /// The answer that refuses the connection of `req`; `reason` goes into the server's log.
    pub fn deny(&self, req: &AuthRequest, reason: &str) -> String {
        self.answer(req, json!({ "error": reason }))
    }

    fn answer(&self, req: &AuthRequest, mut nats: Value) -> String {
        let mut claims = self.claims(&req.user_nkey, &req.server_id, "");
        nats["type"] = json!("authorization_response");
        nats["version"] = json!(2);
        claims["nats"] = nats;
        self.sign_claims(&claims)
    }

    fn claims(&self, subject: &str, audience: &str, name: &str) -> Value {
        let mut claims = json!({
            "jti": hex::encode(rand::random::<[u8; 16]>()),
            "iat": chrono::Utc::now().timestamp(),
            "iss": self.public_key(),
            "sub": subject,
            "aud": audience,
        });
        if !name.is_empty() {
            claims["name"] = json!(name);
        }
        claims
    }
}

/// What the broker tells about a connection it asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequest {
    /// The asking server's id (its public key, `N...`).
    pub server_id: String,
    /// The server's name.
    pub server_name: String,
    /// The key the server made for this connection: the answer must name it.
    pub user_nkey: String,
    /// The connection's number on that server (`cid`).
    pub client_id: u64,
    /// The client's address.
    pub client_host: String,
    /// The name the client gave (`herd node n3`).
    pub client_name: String,
    /// The user name the client gave, if any.
    pub user: String,
    /// The client's certificate (PEM), as the server checked it against its CA; `None` for a
    /// connection without one, or one the server did not check.
    pub verified_certificate: Option<String>,
}

#[derive(Deserialize)]
struct RequestClaims {
    iss: String,
    nats: RequestBody,
}

#[derive(Deserialize)]
struct RequestBody {
    server_id: ServerId,
    user_nkey: String,
    #[serde(default)]
    client_info: ClientInfo,
    #[serde(default)]
    connect_opts: ConnectOpts,
    #[serde(default)]
    client_tls: Option<ClientTls>,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct ServerId {
    id: String,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize, Default)]
struct ClientInfo {
    #[serde(default)]
    host: String,
    #[serde(default)]
    id: u64,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize, Default)]
struct ConnectOpts {
    #[serde(default)]
    user: String,
}

#[derive(Deserialize, Serialize, Default)]
struct ClientTls {
    #[serde(default)]
    verified_chains: Vec<Vec<String>>,
}

impl AuthRequest {
    /// Reads a request JWT and checks its signature against the key of the server it names.
    pub fn decode(token: &str) -> Result<AuthRequest, CalloutError> {
        let token = token.trim();
        let mut parts = token.split('.');
        let (Some(head), Some(body), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(CalloutError::Shape);
        };
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(head).map_err(|_| CalloutError::Base64("header"))?)
                .map_err(|e| CalloutError::Header(e.to_string()))?;
        let alg = header["alg"].as_str().unwrap_or_default();
        if !header["typ"].as_str().is_some_and(|t| t.eq_ignore_ascii_case("jwt")) || alg != "ed25519-nkey" {
            return Err(CalloutError::Header(header.to_string()));
        }
        let claims: RequestClaims =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).map_err(|_| CalloutError::Base64("claims"))?)
                .map_err(|e| CalloutError::Claims(e.to_string()))?;
        if claims.nats.kind != "authorization_request" {
            return Err(CalloutError::Claims(format!("of type {:?}", claims.nats.kind)));
        }
        let signature = URL_SAFE_NO_PAD.decode(sig).map_err(|_| CalloutError::Base64("signature"))?;
        let server =
            nkeys::KeyPair::from_public_key(&claims.iss).map_err(|e| CalloutError::Signature(e.to_string()))?;
        server
            .verify(format!("{head}.{body}").as_bytes(), &signature)
            .map_err(|_| CalloutError::Signature(claims.iss.clone()))?;
        let n = claims.nats;
        Ok(AuthRequest {
            server_id: n.server_id.id,
            server_name: n.server_id.name,
            user_nkey: n.user_nkey,
            client_id: n.client_info.id,
            client_host: n.client_info.host,
            client_name: n.client_info.name,
            user: n.connect_opts.user,
            verified_certificate: n
                .client_tls
                .and_then(|t| t.verified_chains.into_iter().next())
                .and_then(|chain| chain.into_iter().next()),
        })
    }
}

/// Decodes the claims of a JWT without checking its signature (tests, and logs).
pub fn claims_of(token: &str) -> Option<Value> {
    let body = token.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request as nats-server writes one, signed by a server key.
    fn request(server: &nkeys::KeyPair, user: &nkeys::KeyPair, certificate: Option<&str>) -> String {
        let mut nats = json!({
            "server_id": { "name": "herd_t1", "host": "10.0.0.1", "id": server.public_key() },
            "user_nkey": user.public_key(),
            "client_info": { "host": "10.0.0.13", "id": 17, "name": "herd node n3", "kind": "Client", "type": "nats" },
            "connect_opts": { "protocol": 1 },
            "type": "authorization_request", "version": 2,
        });
        if let Some(pem) = certificate {
            nats["client_tls"] = json!({ "version": "1.3", "verified_chains": [[pem, "CA PEM"]] });
        }
        let claims =
            json!({ "iss": server.public_key(), "sub": "ISSUER", "aud": "nats-authorization-request", "nats": nats });
        let signed = format!("{}.{}", URL_SAFE_NO_PAD.encode(HEADER), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let sig = server.sign(signed.as_bytes()).unwrap();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    #[test]
    fn a_request_is_read_and_its_signature_checked() {
        let (server, user) = (nkeys::KeyPair::new_server(), nkeys::KeyPair::new_user());
        let req = AuthRequest::decode(&request(&server, &user, Some("NODE PEM"))).unwrap();
        assert_eq!(req.server_id, server.public_key());
        assert_eq!(req.user_nkey, user.public_key());
        assert_eq!((req.client_id, req.client_name.as_str()), (17, "herd node n3"));
        assert_eq!(req.verified_certificate.as_deref(), Some("NODE PEM"));
        assert_eq!(AuthRequest::decode(&request(&server, &user, None)).unwrap().verified_certificate, None);

        // A changed claim breaks the signature; garbage is refused with what is wrong.
        let token = request(&server, &user, Some("NODE PEM"));
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        let mut claims = claims_of(&token).unwrap();
        claims["nats"]["client_tls"]["verified_chains"][0][0] = json!("FORGED PEM");
        parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
        assert!(matches!(AuthRequest::decode(&parts.join(".")), Err(CalloutError::Signature(_))));
        assert!(matches!(AuthRequest::decode("a.b"), Err(CalloutError::Shape)));
        assert!(matches!(AuthRequest::decode("!.b.c"), Err(CalloutError::Base64("header"))));
    }

    #[test]
    fn answers_are_signed_by_the_issuer_for_the_asking_server_and_user() {
        let (server, user) = (nkeys::KeyPair::new_server(), nkeys::KeyPair::new_user());
        let req = AuthRequest::decode(&request(&server, &user, Some("PEM"))).unwrap();
        let issuer = Issuer::generate();
        assert!(Issuer::from_seed(&issuer.seed()).unwrap().public_key() == issuer.public_key());
        assert!(Issuer::from_seed(&nkeys::KeyPair::new_user().seed().unwrap()).is_err());

        let perms = herd_proto::subjects::node_permissions("n3");
        let answer = issuer.allow(&req, "n3", &perms, Some(4_000_000_000));
        let verify = |token: &str| {
            let (signed, sig) = token.rsplit_once('.').unwrap();
            let key = nkeys::KeyPair::from_public_key(&issuer.public_key()).unwrap();
            key.verify(signed.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).unwrap()).is_ok()
        };
        assert!(verify(&answer));
        let claims = claims_of(&answer).unwrap();
        assert_eq!(claims["aud"], json!(server.public_key()));
        assert_eq!(claims["sub"], json!(user.public_key()));
        assert_eq!(claims["iss"], json!(issuer.public_key()));
        assert_eq!(claims["nats"]["type"], json!("authorization_response"));
        let user_jwt = claims["nats"]["jwt"].as_str().unwrap();
        assert!(verify(user_jwt));
        let user_claims = claims_of(user_jwt).unwrap();
        assert_eq!(user_claims["sub"], json!(user.public_key()));
        assert_eq!(user_claims["aud"], json!(GLOBAL_ACCOUNT));
        assert_eq!(user_claims["name"], json!("n3"));
        assert_eq!(user_claims["exp"], json!(4_000_000_000u64));
        assert_eq!(user_claims["nats"]["pub"]["allow"], json!(perms.publish_allow));

        let refusal = claims_of(&issuer.deny(&req, "node n3 was removed")).unwrap();
        assert_eq!(refusal["nats"]["error"], json!("node n3 was removed"));
        assert!(refusal["nats"].get("jwt").is_none());
    }
}
