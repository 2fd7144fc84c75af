//! The local cluster's network: a bridge on the host, a network namespace per node plugged
//! into it, forwarding allowed through the bridge. Undone by [`teardown`].

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use herd_net::{Netlink, Netns, attach_node, read_sysctl, write_sysctl};
use ipnet::Ipv4Net;

use crate::layout::{Layout, NodeLayout, UpState};

pub fn netns_path(node: &NodeLayout) -> PathBuf {
    PathBuf::from("/run/netns").join(&node.netns)
}

fn iptables(bin: &Path, op: &str, rule: &[String]) -> anyhow::Result<()> {
    let out = Command::new(bin)
        .arg("-w")
        .arg(op)
        .args(rule)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        anyhow::bail!("iptables {op} {}: {}", rule.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Builds the bridge and the node namespaces, recording each step in `state` as it goes.
pub async fn build(layout: &Layout, state: &mut UpState, iptables_bin: &Path) -> anyhow::Result<()> {
    let host = Netlink::new()?;
    host.create_bridge(&layout.bridge, layout.bridge_addr).await?;
    for node in &layout.nodes {
        let ns = Netns::create(&netns_path(node))?;
        let addr = Ipv4Net::new(node.address, layout.bridge_addr.prefix_len()).unwrap();
        attach_node(&host, &layout.bridge, &node.host_if, &ns, addr, layout.bridge_addr.addr()).await?;
    }
    let before = read_sysctl("net/ipv4/ip_forward")?;
    if before.trim() != "1" {
        state.ip_forward_before = Some(before.trim().to_string());
        state.save()?;
        write_sysctl("net/ipv4/ip_forward", "1")?;
    }
    // Containers keep off the broker and the API on this host (their nodes keep them off
    // the nodes' own services: herd_node::guard).
    let guard: Vec<String> = [
        "INPUT",
        "-s",
        &layout.opts.container_cidr.to_string(),
        "-p",
        "tcp",
        "-m",
        "multiport",
        "--dports",
        &format!("{},{}", layout.opts.broker_port, layout.opts.api_port),
        "-j",
        "DROP",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    iptables(iptables_bin, "-I", &guard)?;
    state.iptables_rules.push(guard);
    state.save()?;
    for dir in ["-i", "-o"] {
        let rule: Vec<String> =
            ["FORWARD", dir, &layout.bridge, "-j", "ACCEPT"].iter().map(|s| s.to_string()).collect();
        iptables(iptables_bin, "-I", &rule)?;
        state.iptables_rules.push(rule);
        state.save()?;
    }
    Ok(())
}

/// Removes what [`build`] made; every step runs even if an earlier one fails.
pub async fn teardown(state: &UpState) -> Vec<String> {
    let mut problems = Vec::new();
    let layout = &state.layout;
    for node in &layout.nodes {
        // Deleting the namespace deletes its end of the veth, and with it the host end.
        if let Err(e) = Netns::remove(&netns_path(node)) {
            problems.push(format!("removing network namespace {}: {e}", node.netns));
        }
    }
    match Netlink::new() {
        Ok(host) => {
            for node in &layout.nodes {
                if let Err(e) = host.delete_link(&node.host_if).await {
                    problems.push(format!("deleting {}: {e}", node.host_if));
                }
            }
            if let Err(e) = host.delete_link(&layout.bridge).await {
                problems.push(format!("deleting bridge {}: {e}", layout.bridge));
            }
        }
        Err(e) => problems.push(format!("netlink: {e}")),
    }
    if let Some(bin) = herd_node::tools::find_executable("iptables") {
        for rule in &state.iptables_rules {
            // Delete every copy (a crashed run may have added it twice).
            while iptables(&bin, "-D", rule).is_ok() {}
        }
    }
    if let Some(before) = &state.ip_forward_before
        && let Err(e) = write_sysctl("net/ipv4/ip_forward", before)
    {
        problems.push(format!("restoring net.ipv4.ip_forward: {e}"));
    }
    problems
}
