//! The local cluster's certificates: `herd up` makes the cluster CA (kept in the data
//! directory, so a restarted cluster keeps it) and issues one certificate per component,
//! each naming the addresses it is reached at, then renews them while the cluster runs.
//! The CLI gets the CA only: it authenticates with the API token, which TLS keeps secret (a
//! client certificate cost every command about 1 ms, for no authority the token lacks).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use herd_tls::{ClusterCa, Role, Subject, TlsFiles};

use crate::layout::Layout;

/// `herd up`'s own connection to the broker.
pub const UP: &str = "up";

/// The CA and every component's files.
pub struct ClusterCerts {
    ca: ClusterCa,
    files: BTreeMap<String, TlsFiles>,
    lifetime: Duration,
}

impl ClusterCerts {
    /// The CA of `layout`'s data directory (made when missing), and a fresh certificate for
    /// each component; `sim` names the simulated nodes' process, when there is one.
    pub fn issue(layout: &Layout, lifetime: Duration, sim: Option<&str>) -> anyhow::Result<ClusterCerts> {
        let ca = ClusterCa::load_or_init(&layout.ca_dir(), &layout.opts.name)
            .with_context(|| format!("the cluster CA in {}", layout.ca_dir().display()))?;
        // A server is reached at its listening address, and on this machine at 127.0.0.1.
        let server = |name: &str, role: Role, listen: &str| -> anyhow::Result<Subject> {
            let ip: IpAddr = listen
                .rsplit_once(':')
                .and_then(|(h, _)| h.parse().ok())
                .with_context(|| format!("{name}'s address {listen:?}"))?;
            Ok(Subject::new(name, role).with_ip(ip).with_ip([127, 0, 0, 1].into()).with_dns("localhost"))
        };
        let mut subjects = Vec::new();
        for b in layout.brokers() {
            subjects.push(server(&b.name, Role::Broker, &b.listen)?);
        }
        for c in layout.controls() {
            // Joining nodes reach it on the bridge (see `Layout::join_listen`).
            subjects.push(server(&c.name, Role::Control, &c.listen)?.with_ip(IpAddr::V4(layout.bridge_addr.addr())));
        }
        // Joining nodes get theirs from the Control node.
        for n in layout.nodes.iter().filter(|n| !layout.joins(&n.name)) {
            subjects.push(Subject::new(&n.name, Role::Node).with_ip(IpAddr::V4(n.address)));
        }
        if let Some(sim) = sim {
            subjects.push(Subject::new(sim, Role::Node));
        }
        subjects.push(Subject::new(UP, Role::User));
        let dir = layout.tls_dir();
        let mut files = BTreeMap::new();
        for s in subjects {
            let f =
                ca.issue_into(&s, lifetime, &dir).with_context(|| format!("issuing the certificate of {}", s.name))?;
            files.insert(s.name.clone(), f);
        }
        Ok(ClusterCerts { ca, files, lifetime })
    }

    pub fn files(&self, name: &str) -> &TlsFiles {
        &self.files[name]
    }

    /// `--tls-ca CA --tls-cert CERT --tls-key KEY` of component `name`.
    pub fn args(&self, name: &str) -> Vec<OsString> {
        let f = self.files(name);
        vec![
            "--tls-ca".into(),
            f.ca.clone().into(),
            "--tls-cert".into(),
            f.cert.clone().into(),
            "--tls-key".into(),
            f.key.clone().into(),
        ]
    }

    /// The CA's certificate in PEM, for the CLI's configuration.
    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// How often to look for certificates due for renewal: a tenth of their lifetime, at
    /// most every ten minutes.
    pub fn check_every(&self) -> Duration {
        (self.lifetime / 10).clamp(Duration::from_secs(1), Duration::from_secs(600))
    }

    /// Renews every certificate due at `now`; returns the names of those renewed.
    pub fn renew_due(&self, now: SystemTime) -> Vec<String> {
        let mut renewed = Vec::new();
        for (name, f) in &self.files {
            match self.ca.renew_if_due(f, now) {
                Ok(true) => renewed.push(name.clone()),
                Ok(false) => {}
                Err(e) => tracing::error!("renewing the certificate of {name}: {e}"),
            }
        }
        renewed
    }
}

/// nats-server's `tls` block for files `f`: clients (and, inside `cluster`, routes) must
/// present a certificate of the cluster CA.
pub fn nats_tls_block(f: &TlsFiles, indent: &str) -> String {
    format!(
        "{indent}tls {{\n{indent}  cert_file: \"{}\"\n{indent}  key_file: \"{}\"\n{indent}  ca_file: \"{}\"\n{indent}  verify: true\n{indent}  timeout: 2\n{indent}}}\n",
        f.cert.display(),
        f.key.display(),
        f.ca.display()
    )
}
