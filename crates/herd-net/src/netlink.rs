//! [`Netlink`]: an rtnetlink handle bound to one network namespace, with the
//! link, address and route operations Herd needs, each idempotent where that
//! makes sense and with errors that name the interface, address and namespace.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::sys::{Socket, TokioSocket, protocols::NETLINK_ROUTE};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::error::netlink_errno;
use crate::netns::NsRef;
use crate::{NetError, Netns, sysctl};

/// The routing protocol number (`proto 72` in `ip route`) Herd stamps on the
/// routes it installs, so [`Netlink::routes_via`] lists only Herd's routes and
/// a route sync never deletes a route an administrator added. 72 is unused in
/// iproute2's `rt_protos` list.
pub const ROUTE_PROTOCOL: u8 = 72;

/// The receive buffer asked for each netlink socket. When replies overflow the
/// buffer the kernel drops them (`ENOBUFS`) and the requests they answer would
/// wait forever: with the default (about 208 KiB), 100 concurrent link lookups
/// in a node with 100 veths lost some.
const RECEIVE_BUFFER: usize = 4 << 20;

/// Raises `socket`'s receive buffer to [`RECEIVE_BUFFER`]: past the
/// `net.core.rmem_max` cap where the process may (`SO_RCVBUFFORCE`, with
/// CAP_NET_ADMIN), up to the cap otherwise. Best effort: a smaller buffer only
/// makes overflow likelier.
fn enlarge_receive_buffer(socket: &Socket) {
    let size = RECEIVE_BUFFER as libc::c_int;
    for option in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a valid
        // pointer to a local c_int, on a descriptor `socket` owns.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

/// The longest interface name Linux accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// A netlink (rtnetlink) handle whose socket lives in one network namespace.
///
/// A netlink socket stays bound to the namespace it was created in, so a
/// `Netlink` can be used from any thread or task. Its connection runs as a task
/// on the tokio runtime that was current at creation, and ends when the last
/// clone of the handle is dropped.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: Handle,
    ns: NsRef,
}

impl Netlink {
    /// A handle on the calling thread's current network namespace. Must be
    /// called inside a tokio runtime with IO enabled.
    pub fn new() -> Result<Netlink, NetError> {
        let runtime = current_runtime("opening a netlink socket")?;
        let ns = NsRef::current()?;
        Self::from_socket(runtime, ns, Socket::new(NETLINK_ROUTE))
    }

    /// A handle whose socket lives in `ns`: the socket is opened on a thread
    /// that entered `ns`, then used from here. Blocks the calling thread for
    /// the short life of that thread; async callers may prefer
    /// [`Netlink::in_netns_async`]. Must be called inside a tokio runtime.
    pub fn in_netns(ns: &Netns) -> Result<Netlink, NetError> {
        let runtime = current_runtime(&format!("opening a netlink socket in {}", ns.label()))?;
        let nsref = NsRef::of(ns)?;
        let socket = nsref.run(|| Socket::new(NETLINK_ROUTE))?;
        Self::from_socket(runtime, nsref, socket)
    }

    /// Like [`Netlink::in_netns`], without blocking the async runtime.
    pub async fn in_netns_async(ns: &Netns) -> Result<Netlink, NetError> {
        let runtime = current_runtime(&format!("opening a netlink socket in {}", ns.label()))?;
        let nsref = NsRef::of(ns)?;
        let socket = nsref.run_async(|| Socket::new(NETLINK_ROUTE)).await?;
        Self::from_socket(runtime, nsref, socket)
    }

    fn from_socket(
        runtime: tokio::runtime::Handle,
        ns: NsRef,
        socket: std::io::Result<Socket>,
    ) -> Result<Netlink, NetError> {
        let socket = socket.map_err(|e| NetError::io(format!("opening a netlink socket in {}", ns.label()), e))?;
        enlarge_receive_buffer(&socket);
        let raw = socket.into_raw_fd();
        // SAFETY: `raw` is the descriptor of the netlink socket just created
        // above, and `into_raw_fd` gave up its ownership, which moves into the
        // TokioSocket (it closes it on drop). `from_raw_fd` registers it with
        // the reactor of the current runtime, which exists (checked above).
        let socket = unsafe { TokioSocket::from_raw_fd(raw) };
        let (connection, handle, _) = rtnetlink::from_socket(socket);
        runtime.spawn(connection);
        Ok(Netlink { handle, ns })
    }

    /// The underlying rtnetlink handle, for requests this type does not wrap.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// How errors name this handle's namespace ("netns /run/herd/c1", "the
    /// host netns (net:\[4026531840\])", ...).
    pub fn netns_label(&self) -> &str {
        self.ns.label()
    }

    fn ctx(&self, what: impl std::fmt::Display) -> String {
        format!("{what} in {}", self.ns.label())
    }

    /// The index of interface `name`, or `None` if there is none.
    pub async fn link_index(&self, name: &str) -> Result<Option<u32>, NetError> {
        Ok(self.link(name).await?.map(|l| l.header.index))
    }

    /// The full description of interface `name`, or `None`.
    async fn link(&self, name: &str) -> Result<Option<LinkMessage>, NetError> {
        validate_ifname(name)?;
        let mut links = self.handle.link().get().match_name(name.to_string()).execute();
        match links.try_next().await {
            Ok(link) => Ok(link),
            Err(e) if netlink_errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(NetError::netlink(self.ctx(format_args!("looking up interface {name}")), e)),
        }
    }

    /// The index of interface `name`, which must exist.
    pub(crate) async fn require_index(&self, name: &str) -> Result<u32, NetError> {
        self.link_index(name).await?.ok_or_else(|| NetError::NotFound(self.ctx(format_args!("interface {name}"))))
    }

    /// Deletes interface `name` (for a veth, both ends, wherever the peer is).
    /// Ok if it does not exist.
    pub async fn delete_link(&self, name: &str) -> Result<(), NetError> {
        validate_ifname(name)?;
        let request = self.handle.link().del_with_message(LinkUnspec::new_with_name(name).build());
        match request.execute().await {
            Ok(()) => Ok(()),
            Err(e) if netlink_errno(&e) == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(NetError::netlink(self.ctx(format_args!("deleting interface {name}")), e)),
        }
    }

    /// Sets interface `name` up.
    pub async fn set_up(&self, name: &str) -> Result<(), NetError> {
        validate_ifname(name)?;
        let request = self.handle.link().change(LinkUnspec::new_with_name(name).up().build());
        match request.execute().await {
            Ok(()) => Ok(()),
            Err(e) if netlink_errno(&e) == Some(libc::ENODEV) => {
                Err(NetError::NotFound(self.ctx(format_args!("interface {name}"))))
            }
            Err(e) => Err(NetError::netlink(self.ctx(format_args!("setting interface {name} up")), e)),
        }
    }

    pub(crate) async fn set_up_index(&self, index: u32, name: &str) -> Result<(), NetError> {
        self.handle
            .link()
            .change(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| NetError::netlink(self.ctx(format_args!("setting interface {name} up")), e))
    }

    /// Adds `addr` (address and prefix length) to interface `name`. Ok if the
    /// interface already has exactly that address.
    pub async fn add_address(&self, name: &str, addr: Ipv4Net) -> Result<(), NetError> {
        let index = self.require_index(name).await?;
        self.add_address_index(index, name, addr).await
    }

    pub(crate) async fn add_address_index(&self, index: u32, name: &str, addr: Ipv4Net) -> Result<(), NetError> {
        let request = self.handle.address().add(index, IpAddr::V4(addr.addr()), addr.prefix_len());
        match request.execute().await {
            Ok(()) => Ok(()),
            Err(e) if netlink_errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(NetError::netlink(self.ctx(format_args!("adding address {addr} to {name}")), e)),
        }
    }

    /// Routes `dest` via `gateway` in the main table, replacing any route to
    /// exactly `dest` (`ip route replace DEST via GATEWAY`). Host bits of
    /// `dest` are ignored. The route carries [`ROUTE_PROTOCOL`].
    pub async fn replace_route_via(&self, dest: Ipv4Net, gateway: Ipv4Addr) -> Result<(), NetError> {
        let dest = dest.trunc();
        let route = herd_route(dest).gateway(gateway).build();
        self.handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(|e| NetError::netlink(self.ctx(format_args!("routing {dest} via {gateway}")), e))
    }

    /// Routes `dest` straight out of interface `dev` (scope link), replacing any
    /// route to exactly `dest` (`ip route replace DEST dev DEV`). The
    /// interface must be up. The route carries [`ROUTE_PROTOCOL`].
    pub async fn replace_route_dev(&self, dest: Ipv4Net, dev: &str) -> Result<(), NetError> {
        let index = self.require_index(dev).await?;
        let dest = dest.trunc();
        let route = herd_route(dest).output_interface(index).scope(RouteScope::Link).build();
        self.handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(|e| NetError::netlink(self.ctx(format_args!("routing {dest} to dev {dev}")), e))
    }

    /// A default route via `gateway` out of interface `index` (named `dev`),
    /// replacing any default route; `onlink` when the gateway is in no subnet
    /// of the interface (a container's 169.254.1.1).
    pub(crate) async fn replace_default_route(
        &self,
        gateway: Ipv4Addr,
        index: u32,
        dev: &str,
        onlink: bool,
    ) -> Result<(), NetError> {
        let mut route = RouteMessageBuilder::<Ipv4Addr>::new()
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
            .gateway(gateway)
            .output_interface(index);
        if onlink {
            route = route.onlink();
        }
        self.handle.route().add(route.build()).replace().execute().await.map_err(|e| {
            let onlink = if onlink { " onlink" } else { "" };
            NetError::netlink(self.ctx(format_args!("adding default route via {gateway} dev {dev}{onlink}")), e)
        })
    }

    /// Deletes the main-table route to exactly `dest`, whoever installed it
    /// (`ip route del DEST`). Ok if there is none.
    pub async fn delete_route(&self, dest: Ipv4Net) -> Result<(), NetError> {
        let dest = dest.trunc();
        // Like `ip route del`: match any scope, type and protocol.
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dest.network(), dest.prefix_len())
            .protocol(RouteProtocol::Unspec)
            .scope(RouteScope::NoWhere)
            .kind(RouteType::Unspec)
            .build();
        match self.handle.route().del(route).execute().await {
            Ok(()) => Ok(()),
            Err(e) if netlink_errno(&e) == Some(libc::ESRCH) => Ok(()),
            Err(e) => Err(NetError::netlink(self.ctx(format_args!("deleting route to {dest}")), e)),
        }
    }

    /// Deletes the route to `dest` only if it is Herd's route via `gateway` (a route to the
    /// same destination out of an interface, or via another gateway, stays).
    pub async fn delete_route_via(&self, dest: Ipv4Net, gateway: Ipv4Addr) -> Result<(), NetError> {
        let dest = dest.trunc();
        let route = herd_route(dest).gateway(gateway).scope(RouteScope::NoWhere).kind(RouteType::Unspec).build();
        match self.handle.route().del(route).execute().await {
            Ok(()) => Ok(()),
            Err(e) if netlink_errno(&e) == Some(libc::ESRCH) => Ok(()),
            Err(e) => Err(NetError::netlink(self.ctx(format_args!("deleting route to {dest} via {gateway}")), e)),
        }
    }

    /// Lists Herd's /32 routes via a gateway in the main table, as
    /// `(destination, gateway)`: the ones [`Netlink::replace_route_via`]
    /// installed (marked with [`ROUTE_PROTOCOL`]), for route syncing. Routes
    /// installed by anyone else are not listed.
    pub async fn routes_via(&self) -> Result<Vec<(Ipv4Addr, Ipv4Addr)>, NetError> {
        Ok(self.routes_herd().await?.into_iter().filter_map(|(d, g)| Some((d, g?))).collect())
    }

    /// Every Herd /32 route in the main table, with its gateway (`None`: a route straight out
    /// of an interface, such as a local container's veth), sorted.
    pub async fn routes_herd(&self) -> Result<Vec<(Ipv4Addr, Option<Ipv4Addr>)>, NetError> {
        let mut dump = self.handle.route().get(RouteMessageBuilder::<Ipv4Addr>::new().build()).execute();
        let mut routes = Vec::new();
        while let Some(route) =
            dump.try_next().await.map_err(|e| NetError::netlink(self.ctx("listing IPv4 routes"), e))?
        {
            if let Some(entry) = parse_herd_route(&route) {
                routes.push(entry);
            }
        }
        routes.sort_unstable();
        Ok(routes)
    }

    /// Creates bridge `name` with address `addr` and sets it up. Idempotent: an
    /// existing bridge gets the address (if missing) and is set up; an existing
    /// interface that is not a bridge is an error.
    pub async fn create_bridge(&self, name: &str, addr: Ipv4Net) -> Result<(), NetError> {
        match self.link(name).await? {
            Some(link) if link_kind(&link) == Some(&InfoKind::Bridge) => {}
            Some(_) => {
                return Err(NetError::AlreadyExists(
                    self.ctx(format_args!("interface {name}, which is not a bridge,")),
                ));
            }
            None => match self.handle.link().add(LinkBridge::new(name).build()).execute().await {
                Ok(()) => {}
                // Created concurrently: fine if it is a bridge, checked below.
                Err(e) if netlink_errno(&e) == Some(libc::EEXIST) => {
                    let link = self.link(name).await?;
                    if link.as_ref().and_then(link_kind) != Some(&InfoKind::Bridge) {
                        return Err(NetError::AlreadyExists(
                            self.ctx(format_args!("interface {name}, which is not a bridge,")),
                        ));
                    }
                }
                Err(e) => {
                    return Err(NetError::netlink(self.ctx(format_args!("creating bridge {name}")), e));
                }
            },
        }
        self.add_address(name, addr).await?;
        self.set_up(name).await
    }

    /// Creates a veth pair: `name` in this namespace and `peer` created
    /// directly in the namespace of `peer_ns` (`ip link add NAME type veth
    /// peer name PEER netns NS`), both down, with the given MAC addresses
    /// (kernel-chosen if `None`). Creating the peer where it belongs costs a
    /// fraction of moving it there afterwards (a move waits for the network
    /// stack to quiesce, and moves serialize in the kernel).
    ///
    /// The kernel makes both ends or neither. Fails with
    /// [`NetError::AlreadyExists`] naming the taken name if `name` exists here
    /// or `peer` exists in `peer_ns`.
    pub(crate) async fn add_veth(
        &self,
        name: &str,
        mac: Option<[u8; 6]>,
        peer_ns: &Netlink,
        peer: &str,
        peer_mac: Option<[u8; 6]>,
    ) -> Result<(), NetError> {
        validate_ifname(name)?;
        validate_ifname(peer)?;
        // The kernel resolves this fd in our descriptor table while handling
        // the request; `peer_ns` (and so the fd) outlives the await.
        let peer_ns_fd = peer_ns.ns.fd().as_raw_fd();
        let mut peer_msg = LinkUnspec::new_with_name(peer).setns_by_fd(peer_ns_fd);
        if let Some(mac) = peer_mac {
            peer_msg = peer_msg.address(mac.to_vec());
        }
        let mut veth = LinkVeth::new(name, peer).set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg.build())));
        if let Some(mac) = mac {
            veth = veth.address(mac.to_vec());
        }
        match self.handle.link().add(veth.build()).execute().await {
            Ok(()) => Ok(()),
            Err(e) if netlink_errno(&e) == Some(libc::EEXIST) => {
                // Say which of the two names is taken (if still so).
                let taken = if self.link_index(name).await?.is_some() {
                    self.ctx(format_args!("interface {name}"))
                } else {
                    peer_ns.ctx(format_args!("interface {peer}"))
                };
                Err(NetError::AlreadyExists(taken))
            }
            Err(e) => Err(NetError::netlink(
                self.ctx(format_args!("creating veth pair {name} <-> {peer} (in {})", peer_ns.netns_label())),
                e,
            )),
        }
    }

    /// The name of interface `index`, or `None` if there is none.
    pub(crate) async fn link_name(&self, index: u32) -> Result<Option<String>, NetError> {
        let mut links = self.handle.link().get().match_index(index).execute();
        match links.try_next().await {
            Ok(link) => Ok(link.and_then(|link| {
                link.attributes.into_iter().find_map(|attr| match attr {
                    LinkAttribute::IfName(name) => Some(name),
                    _ => None,
                })
            })),
            Err(e) if netlink_errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(NetError::netlink(self.ctx(format_args!("looking up interface #{index}")), e)),
        }
    }

    /// Deletes interface `index` (named `name`). Ok if it does not exist.
    pub(crate) async fn delete_link_index(&self, index: u32, name: &str) -> Result<(), NetError> {
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if netlink_errno(&e) == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(NetError::netlink(self.ctx(format_args!("deleting interface {name}")), e)),
        }
    }

    /// Puts interface `name` in device group `group` (`ip link set NAME
    /// group GROUP`).
    pub(crate) async fn set_group(&self, name: &str, group: u32) -> Result<(), NetError> {
        let request = self.handle.link().change(LinkUnspec::new_with_name(name).link_group(group).build());
        match request.execute().await {
            Ok(()) => Ok(()),
            Err(e) if netlink_errno(&e) == Some(libc::ENODEV) => {
                Err(NetError::NotFound(self.ctx(format_args!("interface {name}"))))
            }
            Err(e) => Err(NetError::netlink(self.ctx(format_args!("putting interface {name} in group {group}")), e)),
        }
    }

    /// The names of the interfaces in device group `group`.
    pub(crate) async fn links_in_group(&self, group: u32) -> Result<Vec<String>, NetError> {
        let mut dump = self.handle.link().get().execute();
        let mut names = Vec::new();
        let context = || self.ctx(format_args!("listing the interfaces of group {group}"));
        while let Some(link) = dump.try_next().await.map_err(|e| NetError::netlink(context(), e))? {
            let (mut name, mut in_group) = (None, false);
            for attr in link.attributes {
                match attr {
                    LinkAttribute::IfName(n) => name = Some(n),
                    LinkAttribute::Group(g) => in_group = g == group,
                    _ => {}
                }
            }
            if in_group {
                names.push(name.unwrap_or_default());
            }
        }
        Ok(names)
    }

    /// Deletes every interface in device group `group`, in one batch (`ip
    /// link delete group GROUP`). Ok if there is none.
    pub(crate) async fn delete_group(&self, group: u32) -> Result<(), NetError> {
        let request = self.handle.link().del_with_message(LinkUnspec::new_with_index(0).link_group(group).build());
        match request.execute().await {
            Ok(()) => Ok(()),
            Err(e) if netlink_errno(&e) == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(NetError::netlink(self.ctx(format_args!("deleting the interfaces of group {group}")), e)),
        }
    }

    /// Makes interface `name` a port of bridge index `bridge` and sets it up.
    pub(crate) async fn enslave_up(&self, name: &str, bridge: u32, bridge_name: &str) -> Result<(), NetError> {
        self.handle
            .link()
            .change(LinkUnspec::new_with_name(name).controller(bridge).up().build())
            .execute()
            .await
            .map_err(|e| {
                NetError::netlink(
                    self.ctx(format_args!("attaching {name} to bridge {bridge_name} and setting it up")),
                    e,
                )
            })
    }

    /// Writes sysctls under `/proc/sys` in this handle's namespace (see
    /// [`crate::write_sysctl`] for the key format): directly if the calling
    /// thread is in that namespace, else from a thread that enters it.
    pub async fn write_sysctl(&self, key: &str, value: &str) -> Result<(), NetError> {
        self.write_sysctls(&[(key, value)]).await
    }

    pub(crate) async fn write_sysctls(&self, settings: &[(&str, &str)]) -> Result<(), NetError> {
        let write_all =
            |settings: &[(&str, &str)]| settings.iter().try_for_each(|(key, value)| sysctl::write_sysctl(key, value));
        if self.ns.is_current_thread() {
            return write_all(settings).map_err(|e| e.context(&format!("configuring {}", self.ns.label())));
        }
        let owned: Vec<(String, String)> = settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.ns
            .run_async(move || owned.iter().try_for_each(|(key, value)| sysctl::write_sysctl(key, value)))
            .await?
            .map_err(|e| e.context(&format!("configuring {}", self.ns.label())))
    }
}

/// A main-table unicast route to `dest` marked with [`ROUTE_PROTOCOL`].
fn herd_route(dest: Ipv4Net) -> RouteMessageBuilder<Ipv4Addr> {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dest.network(), dest.prefix_len())
        .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
}

/// `(dest, gateway)` if `route` is one of Herd's /32-via-gateway routes in
/// the main table.
#[cfg(test)]
fn herd_route_via(route: &RouteMessage) -> Option<(Ipv4Addr, Ipv4Addr)> {
    match parse_herd_route(route)? {
        (dest, Some(gateway)) => Some((dest, gateway)),
        _ => None,
    }
}

/// A Herd /32 route in the main table: its destination and gateway (none for a route
/// straight out of an interface, as to a local container).
fn parse_herd_route(route: &RouteMessage) -> Option<(Ipv4Addr, Option<Ipv4Addr>)> {
    let header = &route.header;
    let mut table = u32::from(header.table);
    let (mut dest, mut gateway) = (None, None);
    for attr in &route.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(a)) => dest = Some(*a),
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(*g),
            _ => {}
        }
    }
    let ours = table == u32::from(RouteHeader::RT_TABLE_MAIN)
        && header.destination_prefix_length == 32
        && header.kind == RouteType::Unicast
        && u8::from(header.protocol) == ROUTE_PROTOCOL;
    if ours { Some((dest?, gateway)) } else { None }
}

fn link_kind(link: &LinkMessage) -> Option<&InfoKind> {
    link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|info| match info {
            LinkInfo::Kind(kind) => Some(kind),
            _ => None,
        }),
        _ => None,
    })
}

/// Checks an interface name the way the kernel does (`dev_valid_name`), so a
/// bad name fails with a clear message before anything is changed.
pub fn validate_ifname(name: &str) -> Result<(), NetError> {
    let bad = |reason: &str| Err(NetError::invalid(format!("interface name {name:?}"), reason));
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_IFNAME_LEN {
        return bad("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are reserved");
    }
    if name.chars().any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace()) {
        return bad("contains '/', ':', NUL or whitespace");
    }
    Ok(())
}

fn current_runtime(what: &str) -> Result<tokio::runtime::Handle, NetError> {
    tokio::runtime::Handle::try_current().map_err(|_| NetError::NoRuntime(what.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netlink_sockets_get_a_large_receive_buffer() {
        let socket = Socket::new(NETLINK_ROUTE).unwrap();
        let default = socket.get_rx_buf_sz().unwrap();
        enlarge_receive_buffer(&socket);
        let size = socket.get_rx_buf_sz().unwrap();
        // The kernel doubles what it is given, for its bookkeeping.
        if nix::unistd::geteuid().is_root() {
            assert!(size >= RECEIVE_BUFFER, "{size} bytes (default {default})");
        } else {
            assert!(size >= default, "{size} bytes, below the default {default}");
        }
    }

    #[test]
    fn interface_names_follow_the_kernel_rules() {
        for good in ["eth0", "hc1234567890abc", "br-herd.1", "veth_a-b"] {
            validate_ifname(good).unwrap();
        }
        for bad in ["", "hc1234567890abcd", ".", "..", "a/b", "a:b", "a b", "a\tb"] {
            assert!(matches!(validate_ifname(bad), Err(NetError::Invalid { .. })), "{bad:?} accepted");
        }
    }

    #[test]
    fn only_herd_main_table_host_routes_via_a_gateway_are_listed() {
        let dest: Ipv4Net = "10.1.2.3/32".parse().unwrap();
        let gw = Ipv4Addr::new(192, 168, 0, 2);
        let ours = herd_route(dest).gateway(gw).build();
        assert_eq!(herd_route_via(&ours), Some((dest.addr(), gw)));

        let other_proto =
            RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(dest.addr(), 32).gateway(gw).build();
        assert_eq!(herd_route_via(&other_proto), None);

        let not_host = herd_route("10.1.2.0/24".parse().unwrap()).gateway(gw).build();
        assert_eq!(herd_route_via(&not_host), None);

        let dev_only = herd_route(dest).output_interface(3).build();
        assert_eq!(herd_route_via(&dev_only), None);
        assert_eq!(parse_herd_route(&dev_only), Some((dest.addr(), None)), "local routes are listed by routes_herd");

        let other_table = herd_route(dest).gateway(gw).table_id(100).build();
        assert_eq!(herd_route_via(&other_table), None);
    }

    #[test]
    fn no_runtime_is_an_error_not_a_panic() {
        let err = Netlink::new().unwrap_err();
        assert!(matches!(err, NetError::NoRuntime(_)), "{err}");
    }
}
