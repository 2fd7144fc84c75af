//! Node management (`herd nodes label|drain|activate`): the operator's labels and drain
//! decisions, kept in their own bucket (`herd-node-settings`) that only the Control node
//! writes, so each node stays the one writer of its own record in `herd-nodes`.
//!
//! Draining marks the node (placement then skips it, see `herd_sched`'s availability filter)
//! and migrates its running containers away one at a time, to nodes the scheduler picks. A
//! container that cannot move stays where it is, running, and the report says why.

use std::sync::Arc;

use herd_proto::api::{DrainMove, DrainReport, DrainStay, MigrateRequest, NodeInfo};
use herd_proto::migration::ModeRequest;
use herd_proto::state::{Availability, ContainerState, NodeSettings};

use crate::control::Control;
use crate::error::{Error, Result};

/// Applies `KEY=VALUE` (set) and `KEY-` (remove) changes to the operator's labels.
pub fn apply_label_changes(settings: &mut NodeSettings, changes: &[String]) -> Result<()> {
    if changes.is_empty() {
        return Err(Error::bad_request("no label changes given: use KEY=VALUE to set a label, KEY- to remove one"));
    }
    for change in changes {
        if let Some(key) = change.strip_suffix('-')
            && !change.contains('=')
        {
            check_key(key, change)?;
            settings.labels.insert(key.to_string(), None);
        } else {
            let (key, value) = herd_proto::names::parse_pair(change, "label").map_err(|e| Error::bad_request(e.0))?;
            check_key(&key, change)?;
            settings.labels.insert(key, Some(value));
        }
    }
    Ok(())
}

fn check_key(key: &str, change: &str) -> Result<()> {
    if key.is_empty() || key.contains(char::is_whitespace) || key.contains(['=', ',']) {
        return Err(Error::bad_request(format!(
            "invalid label change {change:?}: use KEY=VALUE to set a label, KEY- to remove one"
        )));
    }
    Ok(())
}

impl Control {
    /// Reads a node's settings, changes them with `change`, writes them back and updates the
    /// view. Fails with "not found" naming the node when the cluster has no such node.
    async fn change_settings(&self, node: &str, change: impl FnOnce(&mut NodeSettings) -> Result<()>) -> Result<()> {
        let _writing = self.settings_writes.lock().await;
        let mut settings = {
            let view = self.view.read().unwrap();
            if !view.nodes.contains_key(node) {
                return Err(Error::not_found(format!("no such node: {node}")));
            }
            view.settings.get(node).cloned().unwrap_or_default()
        };
        change(&mut settings)?;
        self.node_settings.put(node, &settings).await?;
        let mut view = self.view.write().unwrap();
        view.settings.insert(node.to_string(), settings);
        view.nodes_changed();
        Ok(())
    }

    fn node(&self, node: &str) -> Result<NodeInfo> {
        let view = self.view.read().unwrap();
        let entry = view.nodes.get(node).ok_or_else(|| Error::not_found(format!("no such node: {node}")))?;
        Ok(view.node_info(&view.allocations(), entry))
    }

    /// `herd nodes label NODE KEY=VALUE KEY- ...`
    pub async fn label_node(&self, node: &str, changes: &[String]) -> Result<NodeInfo> {
        self.change_settings(node, |s| apply_label_changes(s, changes)).await?;
        let msg = format!("node {node} labels changed: {}", changes.join(" "));
        self.events.emit("node", "label", node, Some(node), msg).await;
        self.node(node)
    }

    /// `herd nodes activate NODE`: placements may use the node again.
    pub async fn activate_node(&self, node: &str) -> Result<NodeInfo> {
        self.change_settings(node, |s| {
            s.availability = Availability::Active;
            Ok(())
        })
        .await?;
        self.events.emit("node", "activate", node, Some(node), format!("node {node} is active")).await;
        self.node(node)
    }

    /// `herd nodes drain NODE`: no new placements on the node, and its running containers
    /// are migrated away one at a time (mode auto, the scheduler picks the destination).
    pub async fn drain_node(self: Arc<Self>, node: &str) -> Result<DrainReport> {
        self.change_settings(node, |s| {
            s.availability = Availability::Drain;
            Ok(())
        })
        .await?;
        self.events.emit("node", "drain", node, Some(node), format!("node {node} is draining")).await;
        let mut report = DrainReport { node: node.to_string(), moved: Vec::new(), stayed: Vec::new() };
        let mut hosted: Vec<(String, ContainerState)> = {
            let view = self.view.read().unwrap();
            view.containers.values().filter(|c| c.node == node).map(|c| (c.name.clone(), view.state_of(c))).collect()
        };
        hosted.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, state) in hosted {
            let reason = if state == ContainerState::Running {
                match self.clone().move_away(&name).await {
                    Ok(m) => {
                        let msg = format!("drain of node {node}: container {name} moved to {}", m.destination);
                        self.events.emit("node", "drain-move", node, Some(node), msg).await;
                        report.moved.push(DrainMove { container: name, to: m.destination, migration: m.id });
                        continue;
                    }
                    Err(e) => e.message,
                }
            } else {
                format!("container {name} is {}: only running containers are moved", state.as_str())
            };
            let msg = format!("drain of node {node}: container {name} stays: {reason}");
            self.events.emit("node", "drain-stay", node, Some(node), msg).await;
            report.stayed.push(DrainStay { container: name, reason });
        }
        Ok(report)
    }

    /// Migrates a container to the node the scheduler picks (mode auto). Progress updates are
    /// not forwarded: the drain report says what happened.
    async fn move_away(self: Arc<Self>, name: &str) -> Result<herd_proto::migration::MigrationReport> {
        let (updates, mut ignored) = tokio::sync::mpsc::channel(16);
        let drop_updates = tokio::spawn(async move { while ignored.recv().await.is_some() {} });
        let req = MigrateRequest { to: None, mode: ModeRequest::Auto, bandwidth: None, safe: false };
        let result = self.migrate(name.to_string(), req, updates).await;
        let _ = drop_updates.await;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn label_changes_set_and_remove() {
        let mut s = NodeSettings::default();
        apply_label_changes(&mut s, &changes(&["zone=b", "gpu=", "disk-"])).unwrap();
        assert_eq!(s.labels["zone"], Some("b".to_string()));
        assert_eq!(s.labels["gpu"], Some(String::new()));
        assert_eq!(s.labels["disk"], None);
        // A value may end in a dash: that is a set, not a removal.
        apply_label_changes(&mut s, &changes(&["tier=a-"])).unwrap();
        assert_eq!(s.labels["tier"], Some("a-".to_string()));
    }

    #[test]
    fn bad_label_changes_are_refused() {
        for bad in ["zone", "-", "=b", "a b=c"] {
            let err = apply_label_changes(&mut NodeSettings::default(), &changes(&[bad])).unwrap_err();
            assert!(err.message.contains(bad), "{bad}: {}", err.message);
        }
        assert!(apply_label_changes(&mut NodeSettings::default(), &[]).is_err());
    }
}
