//! `herd start` and `herd restart`: a container that exited, or was stopped, starts again on
//! its node with its name, id, address, spec and writable layer, as `docker start` and
//! `docker restart` do. A checkpointed container is not started afresh: `herd restore`
//! continues it, and that is what the refusal says.

use herd_proto::api::ContainerInfo;
use herd_proto::node::NodeRequest;
use herd_proto::state::{ContainerRecord, ContainerState, Desired};

use crate::containers::CREATE_TIMEOUT;
use crate::control::Control;
use crate::error::{Error, Kind, Result};

/// Why a checkpointed container is not started, and what does continue it.
fn checkpointed(name: &str, record: &ContainerRecord) -> Error {
    let newest = record.checkpoints.last().map(|c| format!(" ({} on {})", c.id, c.node)).unwrap_or_default();
    Error::conflict(format!(
        "container {name} is checkpointed{newest}: herd restore {name} continues it where it was; \
         herd start does not start a checkpointed container afresh (remove it and run it again for that)"
    ))
}

impl Control {
    /// `herd start`: starts a stopped container again; a running one is left as it is.
    pub async fn start_container(&self, name: &str) -> Result<ContainerInfo> {
        self.ensure_not_migrating(name)?;
        let _guard = self.lock(name).await;
        let (record, state) = self.record_of(name)?;
        match state {
            ContainerState::Running => {
                if record.desired != Desired::Running {
                    self.set_desired(record, Desired::Running).await?;
                }
                return self.container(name);
            }
            ContainerState::Checkpointed => return Err(checkpointed(name, &record)),
            ContainerState::Created => {
                return Err(Error::conflict(format!("container {name} is still being created: wait until it runs")));
            }
            ContainerState::Exited | ContainerState::Failed => {}
        }
        let req = NodeRequest::Start { id: record.id.clone() };
        if let Err(e) = self.node_call(&record.node, &req, CREATE_TIMEOUT).await {
            // The node records why in the container's status (herd inspect shows it).
            let _ = self.refresh_status(&record).await;
            return Err(match e.kind {
                Kind::Unavailable => Error::unavailable(format!(
                    "container {name} cannot start: {}; it is on that node (with its files): herd start {name} once the node is back",
                    e.message
                )),
                // The node's message says what it could not do.
                kind => Error::new(kind, e.message),
            });
        }
        self.refresh_status(&record).await?;
        if record.desired != Desired::Running {
            self.set_desired(record, Desired::Running).await?;
        }
        self.container(name)
    }

    /// `herd restart`: stops the container (SIGTERM, then SIGKILL after `timeout_secs`) if it
    /// runs, then starts it again.
    pub async fn restart(&self, name: &str, timeout_secs: u64) -> Result<ContainerInfo> {
        let (record, state) = self.record_of(name)?;
        if state == ContainerState::Checkpointed {
            return Err(checkpointed(name, &record));
        }
        self.stop(name, timeout_secs).await?;
        let info = self.start_container(name).await?;
        self.events.emit("container", "restart", name, Some(&info.node), format!("container {name} restarted")).await;
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpointed_container_is_pointed_at_restore() {
        let mut record: ContainerRecord = serde_json::from_value(serde_json::json!({
            "id": "00", "name": "db", "image": "postgres:latest", "image_id": "sha256:00", "node": "n1",
            "ip": "10.88.0.2", "limits": {}, "args": ["postgres"], "env": [], "working_dir": "/",
            "labels": {}, "created_at": 0, "desired": "stopped"
        }))
        .unwrap();
        let err = checkpointed("db", &record);
        assert!(
            err.message.starts_with("container db is checkpointed: herd restore db continues it"),
            "{}",
            err.message
        );
        record.checkpoints.push(herd_proto::state::CheckpointInfo {
            id: "ck2".into(),
            node: "n2".into(),
            created_at: 0,
            leave_running: false,
            size_bytes: 0,
        });
        assert!(checkpointed("db", &record).message.contains("checkpointed (ck2 on n2)"));
    }
}
