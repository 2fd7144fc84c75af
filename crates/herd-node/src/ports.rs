//! Publishing a container's ports on its node (`herd run -p`): DNAT rules in the node's
//! network namespace, where the agent runs. Connections to one of the node's addresses on a
//! published host port (from other hosts, from the node itself or from containers) are sent
//! to the container's address and port; conntrack takes the replies back.
//!
//! The rules live in the nat chain `HERD-PORTS`, jumped to from `PREROUTING` and `OUTPUT` for
//! traffic to a local address. Each rule carries the comment `herd:<container id>` and is
//! derived from the container's spec alone, so publishing is idempotent and unpublishing needs
//! nothing but the spec (after an agent restart too).

use std::net::Ipv4Addr;

use anyhow::{Context, anyhow};
use herd_proto::hostconfig::PortMapping;

/// The nat chain holding every published port of the node.
pub const CHAIN: &str = "HERD-PORTS";
const TABLE: &str = "nat";
/// Jumps into [`CHAIN`]: traffic arriving for, or sent by the node to, one of its addresses.
const JUMPS: [(&str, &str); 2] = [
    ("PREROUTING", "-m addrtype --dst-type LOCAL -j HERD-PORTS"),
    ("OUTPUT", "-m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j HERD-PORTS"),
];

/// The rule (after `-A HERD-PORTS`) that publishes `port` of container `id` at address `ip`.
pub fn rule(id: &str, ip: Ipv4Addr, port: &PortMapping) -> String {
    let proto = port.protocol.as_str();
    let host = if port.host_ip.is_unspecified() { String::new() } else { format!("-d {}/32 ", port.host_ip) };
    format!(
        "{host}-p {proto} -m {proto} --dport {} -m comment --comment herd:{id} -j DNAT --to-destination {ip}:{}",
        port.host_port, port.container_port
    )
}

fn iptables() -> anyhow::Result<iptables::IPTables> {
    let mut ipt = iptables::new(false)
        .map_err(|e| anyhow!("cannot run iptables (install it with apt-get install iptables): {e}"))?;
    // Listing a chain must not look up the names of its rules' addresses (each lookup waits
    // for a DNS timeout where there is no DNS).
    ipt.is_numeric = true;
    Ok(ipt)
}

fn ensure_chain(ipt: &iptables::IPTables) -> anyhow::Result<()> {
    let fail = |what: String| move |e: Box<dyn std::error::Error>| anyhow!("{what}: {e}");
    if !ipt.chain_exists(TABLE, CHAIN).map_err(fail(format!("looking for chain {CHAIN}")))? {
        // Another agent in this namespace may have made it meanwhile.
        if let Err(e) = ipt.new_chain(TABLE, CHAIN)
            && !ipt.chain_exists(TABLE, CHAIN).unwrap_or(false)
        {
            return Err(anyhow!("creating chain {CHAIN} in table {TABLE}: {e}"));
        }
    }
    for (chain, jump) in JUMPS {
        if !ipt.exists(TABLE, chain, jump).map_err(fail(format!("checking the jump from {chain}")))? {
            ipt.insert(TABLE, chain, jump, 1).map_err(fail(format!("adding a jump from {chain} to {CHAIN}")))?;
        }
    }
    Ok(())
}

/// Publishes `ports` of container `id` (address `ip`) on this node; rules already there stay.
pub async fn publish(id: &str, ip: Ipv4Addr, ports: &[PortMapping]) -> anyhow::Result<()> {
    if ports.is_empty() {
        return Ok(());
    }
    let rules: Vec<String> = ports.iter().map(|p| rule(id, ip, p)).collect();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let ipt = iptables()?;
        ensure_chain(&ipt)?;
        for r in &rules {
            let present = ipt.exists(TABLE, CHAIN, r).map_err(|e| anyhow!("checking rule {r}: {e}"))?;
            if !present {
                ipt.append(TABLE, CHAIN, r).map_err(|e| anyhow!("iptables -t {TABLE} -A {CHAIN} {r}: {e}"))?;
            }
        }
        Ok(())
    })
    .await
    .context("the port publishing task")?
    .context("publishing ports")
}

/// Removes what [`publish`] added for the same arguments; Ok when it is not there.
pub async fn unpublish(id: &str, ip: Ipv4Addr, ports: &[PortMapping]) -> anyhow::Result<()> {
    if ports.is_empty() {
        return Ok(());
    }
    let rules: Vec<String> = ports.iter().map(|p| rule(id, ip, p)).collect();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let ipt = iptables()?;
        for r in &rules {
            ipt.delete_all(TABLE, CHAIN, r).map_err(|e| anyhow!("iptables -t {TABLE} -D {CHAIN} {r}: {e}"))?;
        }
        Ok(())
    })
    .await
    .context("the port unpublishing task")?
    .context("unpublishing ports")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_name_the_container_and_match_the_host_ip_when_given() {
        let ip = Ipv4Addr::new(10, 88, 0, 5);
        let any = PortMapping::parse("8080:80").unwrap();
        assert_eq!(
            rule("abc", ip, &any),
            "-p tcp -m tcp --dport 8080 -m comment --comment herd:abc -j DNAT --to-destination 10.88.0.5:80"
        );
        let one = PortMapping::parse("10.77.0.11:53:5353/udp").unwrap();
        assert_eq!(
            rule("abc", ip, &one),
            "-d 10.77.0.11/32 -p udp -m udp --dport 53 -m comment --comment herd:abc -j DNAT --to-destination 10.88.0.5:5353"
        );
    }
}
