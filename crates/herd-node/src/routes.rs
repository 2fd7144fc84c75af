//! Route sync: keeps a `/32 via <node address>` route to every container that runs on
//! another node, following the cluster state. Each Compute node runs it in its own network
//! namespace, and `herd up` runs it on the host, so container addresses are reachable from
//! everywhere without tunnels, and a migrated container's route flips to its new node.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use herd_broker::{Broker, Change};
use herd_net::Netlink;
use herd_proto::state::{ContainerRecord, NodeRecord};
use herd_proto::subjects;
use ipnet::Ipv4Net;

/// The routes one namespace should have, derived from nodes and container placements, and
/// which addresses changed since the last look (so a change costs one route, not all).
#[derive(Debug, Default)]
pub struct RouteTable {
    /// This namespace's own node, whose containers are routed through their veths instead.
    local_node: Option<String>,
    range: Option<Ipv4Net>,
    node_addresses: HashMap<String, Ipv4Addr>,
    /// Container name -> (node, address).
    placements: HashMap<String, (String, Ipv4Addr)>,
    /// Address -> the containers that have it (more than one when containers share a
    /// network namespace).
    users: HashMap<Ipv4Addr, Vec<String>>,
    /// Addresses whose route may have changed since [`RouteTable::take_changes`].
    dirty: HashSet<Ipv4Addr>,
}

impl RouteTable {
    pub fn new(local_node: Option<String>, range: Option<Ipv4Net>) -> Self {
        RouteTable { local_node, range, ..Default::default() }
    }

    pub fn set_node(&mut self, name: &str, address: Ipv4Addr) {
        if self.node_addresses.insert(name.to_string(), address) != Some(address) {
            let moved = self.placements.values().filter(|(node, _)| node == name).map(|(_, ip)| *ip);
            self.dirty.extend(moved);
        }
    }

    pub fn set_container(&mut self, name: &str, node: &str, ip: Ipv4Addr) {
        if let Some((_, old)) = self.placements.insert(name.to_string(), (node.to_string(), ip))
            && old != ip
        {
            self.forget_user(old, name);
        }
        let users = self.users.entry(ip).or_default();
        if !users.iter().any(|u| u == name) {
            users.push(name.to_string());
        }
        self.dirty.insert(ip);
    }

    pub fn remove_container(&mut self, name: &str) {
        if let Some((_, ip)) = self.placements.remove(name) {
            self.forget_user(ip, name);
        }
    }

    fn forget_user(&mut self, ip: Ipv4Addr, name: &str) {
        if let Some(users) = self.users.get_mut(&ip) {
            users.retain(|u| u != name);
            if users.is_empty() {
                self.users.remove(&ip);
            }
        }
        self.dirty.insert(ip);
    }

    /// The gateway to `ip`: none when it is on this node, outside the range, on a node not
    /// known yet, or on a simulated node (which has no address: nothing runs there).
    fn route_of(&self, ip: Ipv4Addr) -> Option<Ipv4Addr> {
        if self.range.is_some_and(|r| !r.contains(&ip)) {
            return None;
        }
        let nodes = self.users.get(&ip)?.iter().filter_map(|u| self.placements.get(u).map(|(node, _)| node));
        let mut gateway = None;
        for node in nodes {
            if Some(node) == self.local_node.as_ref() {
                return None;
            }
            gateway = gateway.or(self.node_addresses.get(node).copied().filter(|gw| !gw.is_unspecified()));
        }
        gateway
    }

    /// Container address -> gateway, for every container on another known node.
    pub fn desired(&self) -> HashMap<Ipv4Addr, Ipv4Addr> {
        self.users.keys().filter_map(|ip| self.route_of(*ip).map(|gw| (*ip, gw))).collect()
    }

    /// The addresses changed since the last call, with their gateway now (`None`: no route).
    pub fn take_changes(&mut self) -> Vec<(Ipv4Addr, Option<Ipv4Addr>)> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty.into_iter().map(|ip| (ip, self.route_of(ip))).collect()
    }
}

/// The namespace's Herd routes within `range`: container address -> gateway.
async fn current_routes(netlink: &Netlink, range: Option<Ipv4Net>) -> anyhow::Result<HashMap<Ipv4Addr, Ipv4Addr>> {
    Ok(netlink.routes_via().await?.into_iter().filter(|(ip, _)| range.is_none_or(|r| r.contains(ip))).collect())
}

/// Changes the routes in `applied` (what the namespace has) into `desired`, and records what
/// it changed in `applied`.
async fn apply(netlink: &Netlink, applied: &mut HashMap<Ipv4Addr, Ipv4Addr>, desired: &HashMap<Ipv4Addr, Ipv4Addr>) {
    let differ = desired.iter().filter(|(ip, gw)| applied.get(ip) != Some(gw)).map(|(ip, gw)| (*ip, Some(*gw)));
    let gone = applied.keys().filter(|ip| !desired.contains_key(ip)).map(|ip| (*ip, None));
    let changes = differ.chain(gone).collect();
    apply_changes(netlink, applied, changes).await;
}

/// Applies the routes of the addresses that changed, against the routes in `applied`.
async fn apply_changes(
    netlink: &Netlink,
    applied: &mut HashMap<Ipv4Addr, Ipv4Addr>,
    changes: Vec<(Ipv4Addr, Option<Ipv4Addr>)>,
) {
    for (ip, wanted) in changes {
        let dest = Ipv4Net::new(ip, 32).expect("a /32 is valid");
        match (wanted, applied.get(&ip).copied()) {
            (Some(gw), have) if have != Some(gw) => match netlink.replace_route_via(dest, gw).await {
                Ok(()) => {
                    applied.insert(ip, gw);
                }
                Err(e) => tracing::warn!("cannot route {ip} via {gw}: {e}"),
            },
            // Only our route via `gw`: the container may have just arrived on this node,
            // whose route out of its veth must stay.
            (None, Some(gw)) => match netlink.delete_route_via(dest, gw).await {
                Ok(()) => {
                    applied.remove(&ip);
                }
                Err(e) => tracing::warn!("cannot delete the route to {ip}: {e}"),
            },
            _ => {}
        }
    }
}

/// Changes arriving within this window are applied together: starting a thousand containers
/// makes a thousand changes, and working out the routes once per change would cost the square.
const BATCH_WINDOW: Duration = Duration::from_millis(20);
/// How often the namespace's routes are read back, to repair what someone else changed.
const RESYNC_EVERY: Duration = Duration::from_secs(60);

/// Follows the nodes and containers buckets forever, keeping this namespace's routes current.
pub async fn run_route_sync(broker: Broker, local_node: Option<String>, range: Option<Ipv4Net>) -> anyhow::Result<()> {
    let netlink = Netlink::new()?;
    let nodes = broker.bucket::<NodeRecord>(subjects::NODES_BUCKET).await?;
    let containers = broker.bucket::<ContainerRecord>(subjects::CONTAINERS_BUCKET).await?;
    let mut table = RouteTable::new(local_node, range);
    let (node_map, node_changes) = nodes.snapshot().await?;
    for n in node_map.values() {
        table.set_node(&n.value.name, n.value.address);
    }
    let (container_map, container_changes) = containers.snapshot().await?;
    for c in container_map.values() {
        table.set_container(&c.value.name, &c.value.node, c.value.ip);
    }
    let mut applied = current_routes(&netlink, range).await?;
    apply(&netlink, &mut applied, &table.desired()).await;
    table.take_changes();
    let mut resynced = Instant::now();

    enum Update {
        Node(Box<Change<NodeRecord>>),
        Container(Box<Change<ContainerRecord>>),
    }
    let mut updates = futures::stream::select(
        node_changes.map(|n| Update::Node(Box::new(n))).boxed(),
        container_changes.map(|c| Update::Container(Box::new(c))).boxed(),
    );
    let take = |table: &mut RouteTable, update: Update| match update {
        Update::Node(change) => {
            if let Change::Put { value, .. } = *change {
                table.set_node(&value.name, value.address)
            }
        }
        Update::Container(change) => match *change {
            Change::Put { value, .. } => table.set_container(&value.name, &value.node, value.ip),
            Change::Delete { key, .. } => table.remove_container(&key),
        },
    };
    while let Some(update) = updates.next().await {
        take(&mut table, update);
        tokio::time::sleep(BATCH_WINDOW).await;
        while let Some(more) = updates.next().now_or_never() {
            match more {
                Some(update) => take(&mut table, update),
                None => anyhow::bail!("the cluster state watch ended"),
            }
        }
        if resynced.elapsed() >= RESYNC_EVERY {
            applied = current_routes(&netlink, range).await?;
            resynced = Instant::now();
            apply(&netlink, &mut applied, &table.desired()).await;
            table.take_changes();
        } else {
            apply_changes(&netlink, &mut applied, table.take_changes()).await;
        }
    }
    anyhow::bail!("the cluster state watch ended")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_go_to_other_nodes_only() {
        let mut t = RouteTable::new(Some("n1".into()), Some("10.88.0.0/16".parse().unwrap()));
        t.set_node("n1", "10.77.0.11".parse().unwrap());
        t.set_node("n2", "10.77.0.12".parse().unwrap());
        t.set_container("a", "n1", "10.88.0.1".parse().unwrap());
        t.set_container("b", "n2", "10.88.0.2".parse().unwrap());
        t.set_container("c", "n3", "10.88.0.3".parse().unwrap()); // node not known yet
        t.set_container("d", "n2", "192.168.1.1".parse().unwrap()); // outside the range
        let want: HashMap<Ipv4Addr, Ipv4Addr> =
            [("10.88.0.2".parse().unwrap(), "10.77.0.12".parse().unwrap())].into_iter().collect();
        assert_eq!(t.desired(), want);
        // A migration to n1 makes the route local (no gateway route any more).
        t.set_container("b", "n1", "10.88.0.2".parse().unwrap());
        assert!(t.desired().is_empty());
    }

    #[test]
    fn changes_name_only_the_addresses_that_moved() {
        let mut t = RouteTable::new(Some("n1".into()), None);
        let (a, b) = ("10.88.0.1".parse().unwrap(), "10.88.0.2".parse().unwrap());
        let (n2, n3) = ("10.77.0.12".parse().unwrap(), "10.77.0.13".parse().unwrap());
        t.set_node("n2", n2);
        t.set_node("n3", n3);
        t.set_container("a", "n2", a);
        t.set_container("b", "n1", b);
        let mut changes = t.take_changes();
        changes.sort();
        assert_eq!(changes, [(a, Some(n2)), (b, None)]);
        assert!(t.take_changes().is_empty());
        // A migration of a to n3, then to this node.
        t.set_container("a", "n3", a);
        assert_eq!(t.take_changes(), [(a, Some(n3))]);
        t.set_container("a", "n1", a);
        assert_eq!(t.take_changes(), [(a, None)]);
        // A second container sharing b's network namespace keeps b's route when b goes.
        t.set_container("b", "n2", b);
        t.set_container("b2", "n2", b);
        t.remove_container("b");
        assert_eq!(t.take_changes(), [(b, Some(n2))]);
        t.remove_container("b2");
        assert_eq!(t.take_changes(), [(b, None)]);
        // A node whose address changes moves its containers' routes; a simulated node has none.
        t.set_container("c", "n3", "10.88.0.3".parse().unwrap());
        t.take_changes();
        t.set_node("n3", "0.0.0.0".parse().unwrap());
        assert_eq!(t.take_changes(), [("10.88.0.3".parse().unwrap(), None)]);
    }

    #[test]
    fn the_host_routes_every_container() {
        let mut t = RouteTable::new(None, None);
        t.set_node("n1", "10.77.0.11".parse().unwrap());
        t.set_container("a", "n1", "10.88.0.1".parse().unwrap());
        assert_eq!(t.desired().len(), 1);
        t.remove_container("a");
        assert!(t.desired().is_empty());
    }
}
