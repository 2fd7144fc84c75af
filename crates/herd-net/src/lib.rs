//! Linux networking for Herd, over netlink (no `ip` processes).
//!
//! - [`Netns`]: network namespaces pinned by a bind mount at a path the caller
//!   chooses, and running code inside one on a dedicated thread.
//! - [`Netlink`]: an rtnetlink handle bound to one namespace: links, addresses,
//!   routes, bridges.
//! - [`attach_container`] / [`detach_container`] (or, cheaper, the batched
//!   [`detach_containers`] and [`detach_and_remove`]): Calico-style routed /32s.
//!   In the container's namespace: `lo` up, `eth0` with the container's IP as a
//!   /32, default route via 169.254.1.1 dev eth0 onlink. In the node's: the
//!   veth's node side up with proxy ARP, and `IP/32 dev <host_if>`. Routes to
//!   containers on other nodes are `IP/32 via <node>` ([`Netlink::replace_route_via`]).
//! - [`attach_node`]: the local cluster's underlay (a node namespace plugged
//!   into a host bridge), for `herd up`.
//! - [`write_sysctl`] / [`read_sysctl`]: `/proc/sys` in the calling thread's
//!   namespace.
//!
//! Everything here needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN).

mod container;
mod error;
mod netlink;
mod netns;
mod node;
mod sysctl;
mod veth;

pub use container::{
    CONTAINER_GATEWAY, CONTAINER_IF, HOST_IF_MAC, NETNS_TEARDOWN_GRACE, attach_container, container_mac,
    detach_and_remove, detach_container, detach_containers,
};
pub use error::NetError;
pub use netlink::{MAX_IFNAME_LEN, Netlink, ROUTE_PROTOCOL, validate_ifname};
pub use netns::Netns;
pub use node::{NODE_IF, attach_node};
pub use sysctl::{read_sysctl, write_sysctl};
