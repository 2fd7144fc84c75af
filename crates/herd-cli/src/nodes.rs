//! `herd nodes label|drain|activate|rm`: the operator's node management.
//!
//! Spelled under `herd nodes` because `herd node` is the Compute node agent, whose required
//! flags (`--name`, `--address`) would make management subcommands there awkward and easy
//! to confuse with starting an agent.

use clap::Subcommand;
use herd_proto::api::{DrainReport, LabelRequest, NodeInfo};

use crate::client::{Client, segment};
use crate::commands::print_json;
use crate::format::clean;

#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// Set (KEY=VALUE) or remove (KEY-) labels of a node, over the labels it registered with.
    Label {
        node: String,
        /// KEY=VALUE to set a label, KEY- to remove one.
        #[arg(required = true, value_name = "KEY=VALUE|KEY-")]
        changes: Vec<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Stop placing containers on a node and migrate its running containers to other nodes.
    Drain {
        node: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove a node that joined with a token: it may no longer connect to the broker, its
    /// connections are closed, and the cluster forgets it. Its containers must be gone first.
    Rm { node: String },
    /// Let placement use a drained node again.
    Activate {
        node: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub async fn manage(client: &Client, command: NodesCommand) -> anyhow::Result<()> {
    match command {
        NodesCommand::Label { node, changes, json } => {
            let path = format!("/v1/nodes/{}/labels", segment(&node));
            let info: NodeInfo = client.post(&path, &LabelRequest { changes }).await?;
            if json {
                return print_json(&info);
            }
            let labels: Vec<String> = info.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let line =
                format!("node {} labels: {}", info.name, if labels.is_empty() { "-".into() } else { labels.join(",") });
            println!("{}", clean(&line));
        }
        NodesCommand::Drain { node, json } => {
            let path = format!("/v1/nodes/{}/drain", segment(&node));
            let report: DrainReport = client.post(&path, &()).await?;
            if json {
                return print_json(&report);
            }
            println!("node {} is draining: no new containers are placed on it", report.node);
            for m in &report.moved {
                println!("moved {} to {} (migration {})", m.container, m.to, m.migration);
            }
            for s in &report.stayed {
                println!("{}", clean(&format!("kept {} on {}: {}", s.container, report.node, s.reason)));
            }
            if report.moved.is_empty() && report.stayed.is_empty() {
                println!("no containers were on it");
            }
        }
        NodesCommand::Rm { node } => {
            client.delete(&format!("/v1/nodes/{}", segment(&node))).await?;
            println!("{}", clean(&format!("node {node} removed: it can no longer connect to the broker")));
        }
        NodesCommand::Activate { node, json } => {
            let path = format!("/v1/nodes/{}/activate", segment(&node));
            let info: NodeInfo = client.post(&path, &()).await?;
            if json {
                return print_json(&info);
            }
            println!("node {} is active: containers may be placed on it", info.name);
        }
    }
    Ok(())
}
