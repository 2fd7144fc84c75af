//! The container filters about what containers share with their node and with each other:
//! `port` (a requested host port is only placed where no other container publishes it) and
//! `dependency` (a container that joins another's network namespace lands on that one's node;
//! one that mounts a named volume lands where the volume's other users are, and one whose
//! volumes move with it lands where no other volume has their names).

use std::collections::BTreeMap;

use herd_proto::hostconfig::PortMapping;

use crate::{Candidate, Ctx, Rejection, Request};

/// What the dependency filter needs to know about the whole cluster: where each named volume
/// the request mounts is in use, and where the container whose network it joins runs.
#[derive(Debug, Default)]
pub(crate) struct Cluster<'a> {
    /// Volume name to the nodes whose containers use it.
    volumes: BTreeMap<&'a str, Vec<&'a str>>,
    /// The node of the container whose network namespace the request joins.
    network_node: Option<&'a str>,
}

impl<'a> Cluster<'a> {
    /// Looks only at what `req` depends on, so requests without dependencies cost nothing.
    pub(crate) fn of(nodes: &'a [Candidate], req: &'a Request) -> Cluster<'a> {
        let mut cluster = Cluster::default();
        if req.volumes.is_empty() && req.network_of.is_none() {
            return cluster;
        }
        for c in nodes {
            for v in req.volumes.iter().filter(|v| c.volumes.contains(*v)) {
                cluster.volumes.entry(v.as_str()).or_default().push(c.name.as_str());
            }
            if let Some(owner) = &req.network_of
                && c.hosted.iter().any(|h| &h.name == owner)
            {
                cluster.network_node = Some(c.name.as_str());
            }
        }
        cluster
    }
}

/// The first of `wanted` that clashes with a port `c` publishes already, and that port.
pub fn port_clash<'a>(c: &'a Candidate, wanted: &'a [PortMapping]) -> Option<(&'a PortMapping, &'a PortMapping)> {
    wanted.iter().find_map(|w| c.ports.iter().find(|p| p.clashes_with(w)).map(|p| (w, p)))
}

pub(crate) fn port_filter(c: &Candidate, r: &Request, ctx: &Ctx) -> Result<(), Rejection> {
    if let Some((wanted, taken)) = port_clash(c, &r.ports) {
        return Err(
            ctx.reject("port", || format!("host port {} is taken ({taken} published there)", wanted.host_side()))
        );
    }
    if let Some(address) = c.address
        && let Some(p) = r.ports.iter().find(|p| !p.host_ip.is_unspecified() && p.host_ip != address)
    {
        return Err(ctx.reject("port", || format!("host IP {} is not the node's address {address}", p.host_ip)));
    }
    Ok(())
}

pub(crate) fn dependency_filter(c: &Candidate, r: &Request, ctx: &Ctx) -> Result<(), Rejection> {
    let cluster = &ctx.cluster;
    if let Some(owner) = &r.network_of {
        match cluster.network_node {
            Some(node) if node == c.name => {}
            Some(node) => {
                return Err(ctx.reject("dependency", || {
                    format!("joins the network namespace of container {owner}, which is on {node}")
                }));
            }
            None => {
                return Err(ctx.reject("dependency", || {
                    format!("joins the network namespace of container {owner}, which is on no node")
                }));
            }
        }
    }
    for v in &r.volumes {
        if let Some(holders) = cluster.volumes.get(v.as_str())
            && !holders.contains(&c.name.as_str())
        {
            return Err(ctx.reject("dependency", || format!("volume {v} is on {}", holders.join(", "))));
        }
    }
    if let Some(v) = r.moving_volumes.iter().find(|v| c.volumes.contains(*v)) {
        return Err(ctx.reject("dependency", || format!("containers there use another volume named {v}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Hosted, Strategy, place};
    use herd_proto::hostconfig::Protocol;
    use herd_proto::state::Resources;
    use proptest::prelude::{Strategy as _, any, prop_assert, proptest};
    use std::net::Ipv4Addr;

    fn node(name: &str) -> Candidate {
        let mut c = Candidate::new(name, Resources { cpus_milli: 4000, memory_bytes: 4 << 30 });
        c.address = Some(Ipv4Addr::new(10, 77, 0, name[1..].parse::<u8>().unwrap()));
        c
    }

    fn port(s: &str) -> PortMapping {
        PortMapping::parse(s).unwrap()
    }

    fn host(c: &mut Candidate, name: &str) {
        c.hosted.push(Hosted { name: name.into(), image: "busybox:latest".into() });
        c.containers += 1;
    }

    #[test]
    fn taken_ports_exclude_nodes_and_say_which() {
        let mut n1 = node("n1");
        n1.ports.push(port("8080:80"));
        let n2 = node("n2");
        let req = Request { ports: vec![port("8080:81")], ..Default::default() };
        assert_eq!(place(&[n1.clone(), n2.clone()], &req, Strategy::Spread).unwrap(), "n2");
        let udp = Request { ports: vec![port("8080:80/udp")], ..Default::default() };
        assert_eq!(place(&[n1.clone()], &udp, Strategy::Spread).unwrap(), "n1");
        let mut n2 = n2;
        n2.ports.push(port("10.77.0.2:8080:80"));
        let text = place(&[n1, n2], &req, Strategy::Spread).unwrap_err().to_string();
        assert_eq!(
            text,
            "no node can run this container: \
             n1 (port filter: host port 0.0.0.0:8080/tcp is taken (0.0.0.0:8080->80/tcp published there)); \
             n2 (port filter: host port 0.0.0.0:8080/tcp is taken (10.77.0.2:8080->80/tcp published there))"
        );
    }

    #[test]
    fn a_host_ip_picks_the_node_with_that_address() {
        let req = Request { ports: vec![port("10.77.0.2:80:80")], ..Default::default() };
        assert_eq!(place(&[node("n1"), node("n2")], &req, Strategy::Spread).unwrap(), "n2");
        let text = place(&[node("n1")], &req, Strategy::Spread).unwrap_err().to_string();
        assert!(text.contains("n1 (port filter: host IP 10.77.0.2 is not the node's address 10.77.0.1)"), "{text}");
    }

    #[test]
    fn dependents_follow_their_dependency() {
        let mut n1 = node("n1");
        host(&mut n1, "db");
        let mut n2 = node("n2");
        host(&mut n2, "web");
        n2.volumes.insert("data".into());
        let nodes = vec![n1, n2];
        let joins = Request { network_of: Some("db".into()), ..Default::default() };
        assert_eq!(place(&nodes, &joins, Strategy::Spread).unwrap(), "n1");
        let mounts = Request { volumes: vec!["data".into()], ..Default::default() };
        assert_eq!(place(&nodes, &mounts, Strategy::Binpack).unwrap(), "n2");
        // A volume nobody uses yet may go anywhere.
        let fresh = Request { volumes: vec!["new".into()], ..Default::default() };
        assert!(place(&nodes, &fresh, Strategy::Spread).is_ok());
        let both = Request { network_of: Some("db".into()), volumes: vec!["data".into()], ..Default::default() };
        let text = place(&nodes, &both, Strategy::Spread).unwrap_err().to_string();
        assert_eq!(
            text,
            "no node can run this container: n1 (dependency filter: volume data is on n2); \
             n2 (dependency filter: joins the network namespace of container db, which is on n1)"
        );
        let missing = Request { network_of: Some("gone".into()), ..Default::default() };
        let text = place(&nodes, &missing, Strategy::Spread).unwrap_err().to_string();
        assert!(text.contains("container gone, which is on no node"), "{text}");
        // A volume that moves with its container (a migration) goes where no other volume
        // has its name.
        let moving = Request { moving_volumes: vec!["data".into()], ..Default::default() };
        assert_eq!(place(&nodes, &moving, Strategy::Binpack).unwrap(), "n1");
        let only_n2 = Request { node: Some("n2".into()), ..moving };
        let text = place(&nodes, &only_n2, Strategy::Spread).unwrap_err().to_string();
        assert!(text.contains("n2 (dependency filter: containers there use another volume named data)"), "{text}");
    }

    const PORTS: [u16; 3] = [80, 443, 8080];
    const IPS: [Ipv4Addr; 3] = [Ipv4Addr::UNSPECIFIED, Ipv4Addr::new(10, 77, 0, 1), Ipv4Addr::new(10, 77, 0, 2)];

    fn arb_ports() -> impl proptest::strategy::Strategy<Value = Vec<PortMapping>> {
        proptest::collection::vec((0usize..3, 0usize..3, any::<bool>()), 0..3).prop_map(|v| {
            let mut out: Vec<PortMapping> = Vec::new();
            for (p, ip, udp) in v {
                let m = PortMapping {
                    host_ip: IPS[ip],
                    host_port: PORTS[p],
                    container_port: 80,
                    protocol: if udp { Protocol::Udp } else { Protocol::Tcp },
                };
                // A request never clashes with itself (the Control node refuses that).
                if !out.iter().any(|q| q.clashes_with(&m)) {
                    out.push(m);
                }
            }
            out
        })
    }

    /// One container of a placement sequence: its ports, the container (by index) whose
    /// network it joins, and its volumes.
    type Ask = (Vec<PortMapping>, Option<usize>, Vec<usize>);

    fn arb_asks() -> impl proptest::strategy::Strategy<Value = Vec<Ask>> {
        let ask = (arb_ports(), proptest::option::of(0usize..20), proptest::collection::vec(0usize..3, 0..2));
        proptest::collection::vec(ask, 1..20)
    }

    proptest! {
        /// Containers placed one by one on 1-3 nodes: no node ever publishes two clashing
        /// ports, every dependent is on the node of the container whose network it joins,
        /// and each volume is used on one node only.
        #[test]
        fn placements_keep_ports_apart_and_dependents_together(n in 1usize..4, asks in arb_asks(), which in 0u8..3, seed in any::<u64>()) {
            let strategy = [Strategy::Spread, Strategy::Binpack, Strategy::Random { seed }][which as usize];
            let mut nodes: Vec<Candidate> = (1..=n).map(|i| node(&format!("n{i}"))).collect();
            let mut placed: Vec<String> = Vec::new();
            let mut joins: Vec<(usize, usize)> = Vec::new();
            for (i, (ports, network_of, volumes)) in asks.into_iter().enumerate() {
                let owner = network_of.filter(|&o| o < placed.len() && !placed[o].is_empty());
                let req = Request {
                    ports: ports.clone(),
                    network_of: owner.map(|o| format!("c{o}")),
                    volumes: volumes.iter().map(|v| format!("v{v}")).collect(),
                    ..Default::default()
                };
                match place(&nodes, &req, strategy) {
                    Ok(name) => {
                        let c = nodes.iter_mut().find(|c| c.name == name).unwrap();
                        prop_assert!(port_clash(c, &ports).is_none(), "{name} takes {ports:?} but has {:?}", c.ports);
                        c.ports.extend(ports);
                        c.volumes.extend(req.volumes.iter().cloned());
                        host(c, &format!("c{i}"));
                        if let Some(o) = owner {
                            joins.push((i, o));
                        }
                        placed.push(name);
                    }
                    Err(e) => {
                        prop_assert!(e.exclusions.iter().all(|x| x.filter == "port" || x.filter == "dependency"), "{e}");
                        placed.push(String::new());
                    }
                }
            }
            for c in &nodes {
                for (i, p) in c.ports.iter().enumerate() {
                    prop_assert!(c.ports[i + 1..].iter().all(|q| !q.clashes_with(p)), "{} publishes clashing ports {:?}", c.name, c.ports);
                }
                for v in &c.volumes {
                    prop_assert!(nodes.iter().filter(|o| o.volumes.contains(v)).count() == 1, "volume {v} on several nodes");
                }
            }
            for (dependent, owner) in joins {
                prop_assert!(placed[dependent] == placed[owner], "c{dependent} on {} but c{owner} on {}", placed[dependent], placed[owner]);
            }
        }
    }
}
