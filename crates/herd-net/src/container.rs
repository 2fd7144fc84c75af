//! Container networking, Calico-style routed /32s: the container's namespace
//! gets `eth0` with its IP as a /32 and a default route via 169.254.1.1 on-link;
//! the node side of the veth answers ARP for that gateway (proxy ARP) and the
//! node routes the /32 to it. Nothing in the container's namespace depends on
//! the node, so after a live migration the destination builds an identical one
//! and the container keeps its IP.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;

use crate::veth::create_veth;
use crate::{NetError, Netlink, Netns, validate_ifname};

/// The gateway every container routes through. No interface has it: the node
/// side of each container's veth answers ARP for it by proxy ARP.
pub const CONTAINER_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// The container's interface, in its own namespace.
pub const CONTAINER_IF: &str = "eth0";

/// The MAC of the node side of every container veth, the same on every node
/// (as Calico does): the container's ARP entry for its gateway stays right
/// across a live migration.
pub const HOST_IF_MAC: [u8; 6] = [0xee; 6];

/// The MAC of a container's `eth0`, derived from its IP (locally administered
/// prefix 0a:58, then the four IP bytes) so a migrated container's interface
/// is identical at the destination.
pub fn container_mac(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x0a, 0x58, a, b, c, d]
}

/// Connects the container namespace `ns` to the node namespace of `node`, with
/// address `ip`, through a veth whose node side is called `host_if` (at most 15
/// bytes, unique on the node).
///
/// In `ns`: `lo` up; `eth0` (MAC [`container_mac`]) up with `ip/32`; default
/// route via [`CONTAINER_GATEWAY`] dev eth0 onlink. In the node namespace:
/// `host_if` (MAC [`HOST_IF_MAC`]) up with `proxy_arp` = 1, `proxy_delay` = 0
/// and `forwarding` = 1, and the route `ip/32 dev host_if` (replacing any
/// route to `ip/32`, e.g. one via the node the container lived on before a
/// migration).
///
/// Proxy ARP answers for 169.254.1.1 only if the node has a route to it out of
/// another interface (a default route will do), and traffic from other hosts
/// needs the node's `net.ipv4.ip_forward` = 1 ([`crate::attach_node`] sets both
/// up for the local cluster).
///
/// Install any firewall rule the container's namespace needs before calling
/// this: its link comes up here. Safe to run concurrently for many
/// containers. The container's end is created in `ns` directly as `eth0`
/// (never moved between namespaces). If `ns` already has an `eth0`, or
/// `host_if` already exists, the error is [`NetError::AlreadyExists`] and
/// nothing is changed in either namespace. If a later step fails, or the
/// future is dropped half-way, the veth made by this call is deleted (taking
/// its routes and addresses with it); an interface called `host_if` that
/// already existed is left alone.
pub async fn attach_container(node: &Netlink, ns: &Netns, host_if: &str, ip: Ipv4Addr) -> Result<(), NetError> {
    validate_ifname(host_if)?;
    let what = format!("attaching {} as {ip} via {host_if} in {}", ns.label(), node.netns_label());
    async {
        // Open the container's namespace first: a bad `ns` changes nothing.
        let container = Netlink::in_netns_async(ns).await?;
        let undo =
            create_veth(node, host_if, Some(HOST_IF_MAC), &container, CONTAINER_IF, Some(container_mac(ip))).await?;
        let result = configure(node, &container, host_if, ip).await;
        undo.finish(result).await
    }
    .await
    .map_err(|e| e.context(&what))
}

async fn configure(node: &Netlink, container: &Netlink, host_if: &str, ip: Ipv4Addr) -> Result<(), NetError> {
    let index = container.require_index(CONTAINER_IF).await?;
    container.add_address_index(index, CONTAINER_IF, Ipv4Net::from(ip)).await?;
    container.set_up_index(index, CONTAINER_IF).await?;
    container.set_up("lo").await?;
    container.replace_default_route(CONTAINER_GATEWAY, index, CONTAINER_IF, true).await?;

    let proxy_arp = format!("net/ipv4/conf/{host_if}/proxy_arp");
    // Answer ARP at once rather than after up to 0.8 s (the default delay).
    let proxy_delay = format!("net/ipv4/neigh/{host_if}/proxy_delay");
    // The kernel answers proxy ARP only on interfaces that forward; this also
    // lets the container's packets be routed on even if the node's global
    // ip_forward is off (replies from other hosts still need it on).
    let forwarding = format!("net/ipv4/conf/{host_if}/forwarding");
    node.write_sysctls(&[(&proxy_arp, "1"), (&proxy_delay, "0"), (&forwarding, "1")]).await?;
    node.set_up(host_if).await?;
    node.replace_route_dev(Ipv4Net::from(ip), host_if).await
}

/// Deletes the node side `host_if` of a container's veth: its peer (the
/// container's `eth0`) and the route `ip/32 dev host_if` go with it. Ok if it
/// is already gone. The container's namespace itself is left to
/// [`Netns::remove`]. Deleting a veth costs the kernel about 20 ms, and
/// deletions serialize; when the container's namespace goes too,
/// [`detach_and_remove`] is much cheaper.
pub async fn detach_container(node: &Netlink, host_if: &str) -> Result<(), NetError> {
    node.delete_link(host_if).await.map_err(|e| e.context(&format!("detaching container veth {host_if}")))
}

/// Detaches many containers at once: the same as [`detach_container`] for
/// each of `host_ifs`, but the kernel deletes them all in one batch (about as
/// long as deleting one veth, ~20 ms, instead of ~20 ms each). For when the
/// containers' namespaces stay; when they go too, [`detach_and_remove`] is
/// cheaper still.
///
/// The veths are first put in a device group of their own (`ip link set
/// group`), then the group is deleted (`ip link delete group`). Should any
/// other interface turn out to be in that group, each veth is deleted on its
/// own instead. Names already gone are Ok. If the future is dropped half-way,
/// some veths may be left in place (in that group): calling again finishes.
pub async fn detach_containers<S: AsRef<str>>(node: &Netlink, host_ifs: &[S]) -> Result<(), NetError> {
    let names: Vec<&str> = host_ifs.iter().map(AsRef::as_ref).collect();
    for name in &names {
        validate_ifname(name)?;
    }
    if let [one] = names[..] {
        return detach_container(node, one).await;
    }
    if names.is_empty() {
        return Ok(());
    }
    let what = format!("detaching {} container veths ({}, ...)", names.len(), names[0]);
    async {
        let group = batch_group();
        let marked = futures::future::join_all(names.iter().map(|n| node.set_group(n, group))).await;
        let mut first_error = None;
        for (name, result) in names.iter().zip(marked) {
            match result {
                Ok(()) | Err(NetError::NotFound(_)) => {}
                Err(e) => {
                    first_error.get_or_insert(e.context(&format!("marking {name}")));
                }
            }
        }
        let members = node.links_in_group(group).await?;
        if members.iter().all(|m| names.contains(&m.as_str())) {
            node.delete_group(group).await?;
        } else {
            tracing::warn!(group, ?members, "another interface is in the batch's device group: deleting one by one");
            for name in &names {
                node.delete_link(name).await?;
            }
        }
        first_error.map_or(Ok(()), Err)
    }
    .await
    .map_err(|e| e.context(&what))
}

/// A device group for one batch of deletions, unlikely to be anyone else's:
/// the top bit set, then 15 bits of the pid and a 16-bit counter.
fn batch_group() -> u32 {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    0x8000_0000 | ((std::process::id() & 0x7fff) << 16) | (n & 0xffff)
}

/// How long [`detach_and_remove`] waits for the kernel to destroy the
/// container's namespace (and so the veth) before deleting the veth itself.
/// The kernel usually takes a few ms (tens under a burst of teardowns).
pub const NETNS_TEARDOWN_GRACE: Duration = Duration::from_secs(2);

/// Tears down a container's networking and its namespace: unpins the namespace
/// at `ns_path` ([`Netns::remove`]) and returns once the node side `host_if` of
/// its veth is gone, with its route `ip/32 dev host_if` and the container's
/// `eth0`, as after [`detach_container`] followed by [`Netns::remove`].
///
/// It lets the kernel destroy the namespace, which takes the veth with it:
/// namespace destruction is asynchronous and batched across namespaces, so it
/// costs a fraction of deleting the veth (about 20 ms each, serialized). If
/// something else still holds the namespace (a process in it, an open fd or
/// socket, a mount elsewhere), the veth does not go by itself: after
/// [`NETNS_TEARDOWN_GRACE`] it is deleted explicitly, so the call is always
/// correct, only slow in that case. Ok if the veth or the namespace is
/// already gone; idempotent.
///
/// Cancelling the future may leave the veth in place until the kernel gets
/// to the namespace (or forever, if the namespace is held); the namespace
/// file may already be gone. Calling it again finishes the job. Needs the
/// runtime's timer (`enable_all` or `enable_time`) to wait.
pub async fn detach_and_remove(node: &Netlink, host_if: &str, ns_path: &Path) -> Result<(), NetError> {
    validate_ifname(host_if)?;
    let what = format!("detaching container veth {host_if} and removing netns {}", ns_path.display());
    async {
        // Identify the link by index, so waiting never mistakes a new link of
        // the same name for it.
        let index = node.link_index(host_if).await?;
        Netns::remove(ns_path)?;
        let Some(index) = index else {
            return Ok(());
        };

        // The kernel destroys a free namespace within a ms or so (tens of ms
        // for a burst, which it batches; longer if a socket in it was closed
        // less than an RCU grace period ago).
        let deadline = Instant::now() + NETNS_TEARDOWN_GRACE;
        let mut pause = Duration::from_micros(500);
        loop {
            match node.link_name(index).await? {
                Some(name) if name == host_if => {}
                // Gone (or the index now names another link: ours is gone).
                _ => return Ok(()),
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 3 / 2).min(Duration::from_millis(5));
        }
        tracing::debug!(
            %host_if,
            netns = %ns_path.display(),
            "the container netns outlived its removal (still held elsewhere): deleting the veth"
        );
        node.delete_link_index(index, host_if).await
    }
    .await
    .map_err(|e| e.context(&what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_mac_is_local_unicast_and_follows_the_ip() {
        let mac = container_mac(Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(mac, [0x0a, 0x58, 10, 1, 2, 3]);
        assert_eq!(mac[0] & 0b01, 0, "unicast");
        assert_eq!(mac[0] & 0b10, 0b10, "locally administered");
        assert_eq!(HOST_IF_MAC[0] & 0b11, 0b10, "local unicast");
    }
}
