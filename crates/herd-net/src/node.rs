//! The local test cluster's underlay (`herd up`): each Compute node gets its
//! own network namespace, plugged into a host bridge by a veth whose far end is
//! the node's `eth0`, and set up to route for its containers.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::veth::create_veth;
use crate::{NetError, Netlink, Netns, validate_ifname};

/// The node's underlay interface, in the node's namespace.
pub const NODE_IF: &str = "eth0";

/// Plugs node namespace `ns` into `bridge` (which must exist in `host`'s
/// namespace): a veth `host_if`, port of `bridge` and up, whose peer becomes
/// `eth0` in `ns` with address `addr` (e.g. 10.77.0.11/24), up, with a default
/// route via `gateway` (the bridge's address). Also in `ns`: `lo` up,
/// `net.ipv4.ip_forward` = 1 and `rp_filter` = 0 (all, default and eth0), so
/// the node routes for its containers.
///
/// The node's end is created in `ns` directly as `eth0` (never moved between
/// namespaces). If `ns` already has an `eth0`, or `host_if` already exists,
/// the error is [`NetError::AlreadyExists`] and nothing is changed. If a later
/// step fails, or the future is dropped half-way, the veth made by this call
/// is deleted (sysctls already written stay written).
pub async fn attach_node(
    host: &Netlink,
    bridge: &str,
    host_if: &str,
    ns: &Netns,
    addr: Ipv4Net,
    gateway: Ipv4Addr,
) -> Result<(), NetError> {
    validate_ifname(bridge)?;
    validate_ifname(host_if)?;
    let what =
        format!("attaching node {} ({addr}) to bridge {bridge} via {host_if} in {}", ns.label(), host.netns_label());
    async {
        let bridge_index =
            host.link_index(bridge).await?.ok_or_else(|| NetError::NotFound(format!("bridge {bridge}")))?;
        let node = Netlink::in_netns_async(ns).await?;
        let undo = create_veth(host, host_if, None, &node, NODE_IF, None).await?;
        let result = configure(host, &node, bridge, bridge_index, host_if, addr, gateway).await;
        undo.finish(result).await
    }
    .await
    .map_err(|e| e.context(&what))
}

async fn configure(
    host: &Netlink,
    node: &Netlink,
    bridge: &str,
    bridge_index: u32,
    host_if: &str,
    addr: Ipv4Net,
    gateway: Ipv4Addr,
) -> Result<(), NetError> {
    host.enslave_up(host_if, bridge_index, bridge).await?;

    let index = node.require_index(NODE_IF).await?;
    node.add_address_index(index, NODE_IF, addr).await?;
    node.set_up_index(index, NODE_IF).await?;
    node.set_up("lo").await?;
    node.replace_default_route(gateway, index, NODE_IF, false).await?;

    let node_if_rp_filter = format!("net/ipv4/conf/{NODE_IF}/rp_filter");
    node.write_sysctls(&[
        ("net/ipv4/ip_forward", "1"),
        ("net/ipv4/conf/all/rp_filter", "0"),
        ("net/ipv4/conf/default/rp_filter", "0"),
        (&node_if_rp_filter, "0"),
    ])
    .await
}
