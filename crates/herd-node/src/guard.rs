//! Keeps containers away from the cluster's own services: iptables rules in the node's
//! network namespace (where the agent runs and every container's traffic passes).
//!
//! - Chain `HERD-GUARD-IN` (filter, from `INPUT`): nothing from a container address reaches
//!   the node itself unless it belongs to a connection the node opened. This closes the
//!   migration listeners (and anything else the node serves) to every container, on this
//!   node or another. Published ports are not affected: their DNAT (see [`crate::ports`])
//!   sends them to `FORWARD`.
//! - Chain `HERD-GUARD-FWD` (filter, from `FORWARD`): no connection from a container
//!   reaches the broker's address and port, wherever the broker runs.
//!
//! Both chains are rebuilt whole at every agent start, so they never hold stale rules.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use anyhow::anyhow;
use ipnet::Ipv4Net;

const TABLE: &str = "filter";
pub const INPUT_CHAIN: &str = "HERD-GUARD-IN";
pub const FORWARD_CHAIN: &str = "HERD-GUARD-FWD";

/// The rules of both chains, as `(chain, rule)`.
pub fn rules(containers: Ipv4Net, broker: &[SocketAddr]) -> Vec<(&'static str, String)> {
    let mut rules = vec![(
        INPUT_CHAIN,
        format!(
            "-s {containers} -m conntrack ! --ctstate ESTABLISHED,RELATED -m comment --comment herd:no-node-access -j DROP"
        ),
    )];
    for b in broker {
        if let IpAddr::V4(ip) = b.ip() {
            rules.push((
                FORWARD_CHAIN,
                format!(
                    "-s {containers} -d {ip}/32 -p tcp -m tcp --dport {} -m comment --comment herd:no-broker-access -j DROP",
                    b.port()
                ),
            ));
        }
    }
    rules
}

/// The broker's addresses, from its URL (`nats://host:port`, comma-separated for several).
pub fn broker_addresses(url: &str) -> Vec<SocketAddr> {
    url.split(',')
        .filter_map(|u| {
            let rest = u.trim().split_once("://").map_or(u.trim(), |(_, r)| r);
            let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h).trim_end_matches('/');
            let with_port = if hostport.contains(':') { hostport.to_string() } else { format!("{hostport}:4222") };
            with_port.to_socket_addrs().ok()
        })
        .flatten()
        .collect()
}

/// Installs the guard chains (replacing what an earlier agent left) and their jumps.
pub async fn install(containers: Ipv4Net, broker_url: &str) -> anyhow::Result<()> {
    let broker = broker_addresses(broker_url);
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut ipt = iptables::new(false)
            .map_err(|e| anyhow!("cannot run iptables (install it with apt-get install iptables): {e}"))?;
        // Listing a chain must not look up the names of its rules' addresses (no DNS here:
        // each lookup would wait for its timeout).
        ipt.is_numeric = true;
        let fail = |what: String| move |e: Box<dyn std::error::Error>| anyhow!("{what}: {e}");
        for (parent, chain) in [("INPUT", INPUT_CHAIN), ("FORWARD", FORWARD_CHAIN)] {
            if ipt.chain_exists(TABLE, chain).map_err(fail(format!("looking for chain {chain}")))? {
                ipt.flush_chain(TABLE, chain).map_err(fail(format!("flushing chain {chain}")))?;
            } else {
                ipt.new_chain(TABLE, chain).map_err(fail(format!("creating chain {chain}")))?;
            }
            let jump = format!("-j {chain}");
            if !ipt.exists(TABLE, parent, &jump).map_err(fail(format!("checking the jump from {parent}")))? {
                ipt.insert(TABLE, parent, &jump, 1).map_err(fail(format!("adding a jump from {parent} to {chain}")))?;
            }
        }
        for (chain, rule) in rules(containers, &broker) {
            ipt.append(TABLE, chain, &rule).map_err(fail(format!("iptables -A {chain} {rule}")))?;
        }
        Ok(())
    })
    .await
    .map_err(|e| anyhow!("the guard task: {e}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_give_addresses() {
        let a = broker_addresses("nats://10.77.0.1:7422");
        assert_eq!(a, vec!["10.77.0.1:7422".parse().unwrap()]);
        let a = broker_addresses("nats://u:p@10.0.0.1:4000,nats://10.0.0.2");
        assert_eq!(a, vec!["10.0.0.1:4000".parse().unwrap(), "10.0.0.2:4222".parse().unwrap()]);
    }

    #[test]
    fn rules_drop_container_traffic_to_the_node_and_the_broker() {
        let r = rules("10.88.0.0/16".parse().unwrap(), &["10.77.0.1:7422".parse().unwrap()]);
        assert_eq!(r.len(), 2);
        assert!(r[0].1.starts_with("-s 10.88.0.0/16 -m conntrack ! --ctstate ESTABLISHED,RELATED"), "{}", r[0].1);
        assert!(r[1].1.contains("-d 10.77.0.1/32 -p tcp -m tcp --dport 7422"), "{}", r[1].1);
    }
}
