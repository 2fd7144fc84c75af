//! `herd ca`: the cluster CA for a cluster on several machines (`herd up` makes its own).
//!
//! ```sh
//! herd ca init --dir /etc/herd/ca --cluster prod
//! herd ca issue --dir /etc/herd/ca --name n1 --role node --ip 10.0.0.11 --out /etc/herd/tls
//! herd node --name n1 --tls-ca /etc/herd/tls/ca.crt --tls-cert /etc/herd/tls/n1.crt --tls-key /etc/herd/tls/n1.key ...
//! ```

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::{Args, Subcommand};
use herd_tls::{CertInfo, ClusterCa, Role, Subject};

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Make a new cluster CA: DIR/ca.crt (give it to every machine) and DIR/ca.key (keep it
    /// on the machine that issues certificates only).
    Init(InitArgs),
    /// Issue a component's certificate and key, signed by the CA.
    Issue(IssueArgs),
    /// Show what a certificate says: whom it names, its role, addresses, validity.
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where the CA goes (made with mode 0700; an existing CA is never replaced).
    #[arg(long)]
    pub dir: PathBuf,
    /// The cluster's name, written into the CA's name.
    #[arg(long, default_value = "herd")]
    pub cluster: String,
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The CA's directory (`herd ca init --dir`).
    #[arg(long)]
    pub dir: PathBuf,
    /// The component's name: the node's name (n1), a Control replica's (control), a broker's.
    #[arg(long)]
    pub name: String,
    #[arg(long, value_parser = ["broker", "control", "node", "user"])]
    pub role: String,
    /// An address the component is reached at (repeatable).
    #[arg(long = "ip")]
    pub ips: Vec<IpAddr>,
    /// A DNS name the component is reached at (repeatable).
    #[arg(long = "dns")]
    pub dns_names: Vec<String>,
    /// How long the certificate is valid (renew it, with this command, before it expires).
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    pub lifetime: Duration,
    /// Where NAME.crt, NAME.key and ca.crt are written (mode 0600).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A certificate file (PEM).
    pub cert: PathBuf,
}

pub fn run(cmd: CaCommand) -> anyhow::Result<()> {
    match cmd {
        CaCommand::Init(a) => {
            let ca = ClusterCa::init(&a.dir, &a.cluster)?;
            println!("cluster CA made: {} (give it to every machine)", ca.cert_path().display());
            println!("its key: {} (keep it on the issuing machine only)", a.dir.join(herd_tls::ca::CA_KEY).display());
            Ok(())
        }
        CaCommand::Issue(a) => {
            let ca = ClusterCa::load(&a.dir).with_context(|| format!("loading the CA of {}", a.dir.display()))?;
            let role = Role::parse(&a.role).expect("clap checks the role");
            anyhow::ensure!(
                role == Role::User || !(a.ips.is_empty() && a.dns_names.is_empty()),
                "a {role} is reached at an address: give its --ip (or --dns), which peers check its certificate against"
            );
            let mut subject = Subject::new(&a.name, role);
            for ip in a.ips {
                subject = subject.with_ip(ip);
            }
            for d in &a.dns_names {
                subject = subject.with_dns(d);
            }
            let files = ca.issue_into(&subject, a.lifetime, &a.out)?;
            println!("{}\n{}\n{}", files.cert.display(), files.key.display(), files.ca.display());
            Ok(())
        }
        CaCommand::Show(a) => {
            print!("{}", describe(&CertInfo::read(&a.cert)?, SystemTime::now()));
            Ok(())
        }
    }
}

/// A certificate's description, as `herd ca show` prints it.
pub fn describe(info: &CertInfo, now: SystemTime) -> String {
    let when = |t: SystemTime| chrono::DateTime::<chrono::Utc>::from(t).format("%Y-%m-%d %H:%M:%S UTC").to_string();
    let state = match info.not_after.duration_since(now) {
        Err(_) => "expired".to_string(),
        Ok(left) if info.due_for_renewal(now) => {
            format!("due for renewal ({} left)", humantime::format_duration(Duration::from_secs(left.as_secs())))
        }
        Ok(left) => format!("valid ({} left)", humantime::format_duration(Duration::from_secs(left.as_secs()))),
    };
    let mut addresses: Vec<String> = info.ips.iter().map(|i| i.to_string()).collect();
    addresses.extend(info.dns_names.iter().cloned());
    format!(
        "name       {}\nrole       {}\naddresses  {}\nvalid      {} to {}\nstate      {state}\n",
        crate::format::clean(&info.name),
        info.role.as_deref().map(crate::format::clean).unwrap_or_else(|| "(none: not a Herd certificate)".into()),
        if addresses.is_empty() { "(none)".into() } else { addresses.join(", ") },
        when(info.not_before),
        when(info.not_after),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_is_described_with_its_state() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::init(&dir.path().join("ca"), "t").unwrap();
        let subject = Subject::new("n1", Role::Node).with_ip("10.0.0.11".parse().unwrap());
        let files = ca.issue_into(&subject, Duration::from_secs(3 * 86400), dir.path()).unwrap();
        let info = CertInfo::read(&files.cert).unwrap();
        let now = SystemTime::now();
        let text = describe(&info, now);
        assert!(text.contains("name       n1\nrole       node\naddresses  10.0.0.11\n"), "{text}");
        assert!(text.contains("state      valid (2days 23h"), "{text}");
        assert!(describe(&info, now + Duration::from_secs(2 * 86400 + 60)).contains("due for renewal"));
        assert!(describe(&info, now + Duration::from_secs(4 * 86400)).contains("state      expired"));
    }
}
