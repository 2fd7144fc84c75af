//! What a container shares with its node and with other containers (published ports, another
//! container's network namespace, named volumes): a run request's are parsed and checked before
//! anything is created and handed to placement; and the rules that keep a move or a removal
//! from breaking containers that depend on one another.

use herd_proto::api::RunRequest;
use herd_proto::hostconfig::{self, HostConfig, SharedNetwork};
use herd_proto::state::{ContainerRecord, ContainerState};

use crate::error::{Error, Result};
use crate::view::View;

/// A run request's ports, network and volumes, parsed but not yet checked against the cluster.
#[derive(Debug, Clone, Default)]
pub struct Requested {
    pub host: HostConfig,
    /// The container whose network namespace it joins.
    pub network_of: Option<String>,
}

/// Parses `-p`, `--network`, `-v`, `--cap-add`, `--cap-drop`, `--security-opt` and
/// `--read-only`: malformed input is refused before anything is reserved.
pub fn parse(req: &RunRequest) -> Result<Requested> {
    let bad = |e: herd_proto::names::NameError| Error::bad_request(e.0);
    let ports = hostconfig::parse_ports(&req.ports).map_err(bad)?;
    let volumes = hostconfig::parse_volumes(&req.volumes).map_err(bad)?;
    let cap_add = hostconfig::parse_capabilities("--cap-add", &req.cap_add).map_err(bad)?;
    let cap_drop = hostconfig::parse_capabilities("--cap-drop", &req.cap_drop).map_err(bad)?;
    let confinement = herd_proto::confinement::parse_security_opts(&req.security_opt, req.read_only).map_err(bad)?;
    let network_of = match &req.network {
        Some(n) => hostconfig::parse_network(n).map_err(bad)?,
        None => None,
    };
    if let Some(owner) = &network_of
        && !ports.is_empty()
    {
        return Err(Error::bad_request(format!(
            "a container that joins the network of {owner} cannot publish ports of its own: publish them on {owner}"
        )));
    }
    Ok(Requested { host: HostConfig { ports, network: None, volumes, cap_add, cap_drop, confinement }, network_of })
}

/// Checks the container whose network namespace is joined and fills it in: it must exist, run,
/// and have a namespace of its own. Returns the finished host config and that container's record.
pub fn resolve(view: &View, requested: &Requested) -> Result<(HostConfig, Option<ContainerRecord>)> {
    let mut host = requested.host.clone();
    let Some(owner) = &requested.network_of else { return Ok((host, None)) };
    let record = view
        .containers
        .get(owner)
        .ok_or_else(|| Error::not_found(format!("no such container: {owner} (--network container:{owner})")))?;
    if let Some(theirs) = &record.host.network {
        return Err(Error::bad_request(format!(
            "container {owner} itself shares the network of {}: use --network container:{}",
            theirs.name, theirs.name
        )));
    }
    if view.state_of(record) != ContainerState::Running {
        return Err(Error::conflict(format!(
            "container {owner} is not running: only a running container's network can be joined"
        )));
    }
    host.network = Some(SharedNetwork { name: owner.clone(), id: record.id.clone() });
    Ok((host, Some(record.clone())))
}

/// Fills a placement request with what the host config asks of the node.
pub fn placement(mut request: herd_sched::Request, host: &HostConfig) -> herd_sched::Request {
    request.ports = host.ports.clone();
    request.network_of = host.network.as_ref().map(|n| n.name.clone());
    request.volumes = host.volumes.iter().map(|v| v.name.clone()).collect();
    request
}

/// The containers that share `name`'s network namespace, sorted.
pub fn sharers(view: &View, name: &str) -> Vec<String> {
    let mut out: Vec<String> = view
        .containers
        .values()
        .filter(|c| c.host.network.as_ref().is_some_and(|n| n.name == name))
        .map(|c| c.name.clone())
        .collect();
    out.sort();
    out
}

/// The other containers on `record`'s node that mount a volume `record` mounts, by volume
/// (volumes nobody else uses are left out), names sorted.
pub fn volume_sharers(view: &View, record: &ContainerRecord) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for v in &record.host.volumes {
        if out.iter().any(|(name, _): &(String, Vec<String>)| *name == v.name) {
            continue;
        }
        let mut users: Vec<String> = view
            .containers
            .values()
            .filter(|c| c.name != record.name && c.node == record.node)
            .filter(|c| c.host.volumes.iter().any(|w| w.name == v.name))
            .map(|c| c.name.clone())
            .collect();
        if !users.is_empty() {
            users.sort();
            out.push((v.name.clone(), users));
        }
    }
    out
}

/// Refuses to move a container that shares with others: moving a group together is not
/// supported, and moving one of them alone would break the others. Its named volumes move
/// with it (`herd migrate`) unless another container uses one of them.
pub fn ensure_movable(view: &View, record: &ContainerRecord) -> Result<()> {
    let name = &record.name;
    if let Some(n) = &record.host.network {
        return Err(Error::conflict(format!(
            "container {name} cannot move: it shares the network namespace of container {}, and containers that depend on one another do not move (as a group or apart)",
            n.name
        )));
    }
    let sharers = sharers(view, name);
    if !sharers.is_empty() {
        return Err(Error::conflict(format!(
            "container {name} cannot move: {} share{} its network namespace, and containers that depend on one another do not move (as a group or apart)",
            sharers.join(", "),
            if sharers.len() == 1 { "s" } else { "" }
        )));
    }
    if let Some((volume, users)) = volume_sharers(view, record).into_iter().next() {
        return Err(Error::conflict(format!(
            "container {name} cannot move: its volume {volume} is also used by {} on node {}, and containers that share a volume do not move (as a group or apart)",
            users.join(", "),
            record.node
        )));
    }
    Ok(())
}

/// Every container that [`ensure_movable`] refuses to move, in one pass over the containers:
/// those that share a network namespace (either side) or a named volume on their node.
pub fn unmovable(view: &View) -> std::collections::HashSet<String> {
    use std::collections::{HashMap, HashSet};
    let mut out = HashSet::new();
    let mut volume_users: HashMap<(&str, &str), Vec<&str>> = HashMap::new();
    for c in view.containers.values() {
        if let Some(n) = &c.host.network {
            out.insert(c.name.clone());
            out.insert(n.name.clone());
        }
        let mut seen = HashSet::new();
        for v in c.host.volumes.iter().filter(|v| seen.insert(v.name.as_str())) {
            volume_users.entry((c.node.as_str(), v.name.as_str())).or_default().push(c.name.as_str());
        }
    }
    for users in volume_users.values().filter(|u| u.len() > 1) {
        out.extend(users.iter().map(|u| u.to_string()));
    }
    out
}

/// Refuses to restore a container with named volumes on another node: `herd restore --node`
/// does not carry volumes (a migration does).
pub fn ensure_no_volumes(record: &ContainerRecord, target: &str) -> Result<()> {
    if record.host.volumes.is_empty() {
        return Ok(());
    }
    let mut names: Vec<&str> = record.host.volumes.iter().map(|v| v.name.as_str()).collect();
    names.dedup();
    Err(Error::conflict(format!(
        "container {} cannot be restored on {target}: its volume{} {} stay{} on node {}, and herd restore --node does not carry volumes; \
         restore it on {} and move it with herd migrate, which takes its volumes along",
        record.name,
        if names.len() == 1 { "" } else { "s" },
        names.join(", "),
        if names.len() == 1 { "s" } else { "" },
        record.node,
        record.node
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(ports: &[&str], network: Option<&str>, volumes: &[&str]) -> RunRequest {
        RunRequest {
            image: "busybox".into(),
            ports: ports.iter().map(|s| s.to_string()).collect(),
            network: network.map(str::to_string),
            volumes: volumes.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn bad_input_is_refused_with_its_cause() {
        let msg = |r: RunRequest| parse(&r).unwrap_err().message;
        assert!(msg(run(&["0:80"], None, &[])).contains("host port 0 is out of range 1-65535"));
        assert!(msg(run(&["8080:80"], Some("container:web"), &[])).contains("cannot publish ports of its own"));
        assert!(msg(run(&[], Some("bridge"), &[])).contains("use container:NAME"));
        let caps = RunRequest { cap_add: vec!["NET_ADMIN".into(), "SYS_NICEE".into()], ..run(&[], None, &[]) };
        assert!(msg(caps).contains("--cap-add SYS_NICEE: no such capability"));
        assert!(msg(run(&[], None, &["/etc:/etc"])).contains("bind mounts of host paths are not supported"));
        let ok = parse(&run(&["8080:80"], None, &["data:/data"])).unwrap();
        assert_eq!(ok.host.ports.len(), 1);
        assert_eq!(ok.network_of, None);
    }

    fn record(name: &str, node: &str, volumes: &[&str]) -> ContainerRecord {
        let mut r: ContainerRecord = serde_json::from_value(serde_json::json!({
            "id": format!("id-{name}"), "name": name, "image": "busybox", "image_id": "i", "node": node,
            "ip": "10.0.0.1", "limits": {}, "args": [], "env": [], "working_dir": "/", "labels": {},
            "created_at": 0, "desired": "running", "checkpoints": []
        }))
        .unwrap();
        r.host.volumes = volumes
            .iter()
            .map(|v| herd_proto::hostconfig::VolumeMount {
                name: v.to_string(),
                target: format!("/{v}"),
                read_only: false,
            })
            .collect();
        r
    }

    #[test]
    fn a_volume_moves_with_its_only_user_and_a_shared_one_pins_its_users() {
        let mut view = View::default();
        for r in [
            record("db", "n1", &["pgdata"]),
            record("a", "n1", &["shared", "own"]),
            record("b", "n1", &["shared"]),
            // Another node's volume of the same name is another volume.
            record("c", "n2", &["pgdata"]),
        ] {
            view.insert_container(r);
        }
        ensure_movable(&view, &view.containers["db"]).unwrap();
        ensure_movable(&view, &view.containers["c"]).unwrap();
        let err = ensure_movable(&view, &view.containers["a"]).unwrap_err().message;
        assert_eq!(
            err,
            "container a cannot move: its volume shared is also used by b on node n1, and containers that share a volume do not move (as a group or apart)"
        );
        assert!(ensure_movable(&view, &view.containers["b"]).is_err());
        // The policy's view agrees.
        let pinned = unmovable(&view);
        let mut pinned: Vec<&str> = pinned.iter().map(String::as_str).collect();
        pinned.sort();
        assert_eq!(pinned, ["a", "b"]);
        let err = ensure_no_volumes(&view.containers["db"], "n2").unwrap_err().message;
        assert!(err.contains("herd restore --node does not carry volumes") && err.contains("herd migrate"), "{err}");
    }

    #[test]
    fn joining_a_missing_container_names_it() {
        let view = View::default();
        let requested = parse(&run(&[], Some("container:missing"), &[])).unwrap();
        let err = resolve(&view, &requested).unwrap_err();
        assert_eq!(err.message, "no such container: missing (--network container:missing)");
    }
}
