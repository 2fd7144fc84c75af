//! `herd stats`: live per-container figures, like `docker stats`.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::Args;
use herd_proto::api::ContainerStats;
use herd_proto::units::Bytes;

use crate::client::Client;
use crate::format;

/// `herd stats`
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Containers to show (default: every running container).
    pub names: Vec<String>,
    /// Print once and exit instead of refreshing every second.
    #[arg(long)]
    pub no_stream: bool,
    /// JSON: one array of containers (one line per refresh when streaming).
    #[arg(long)]
    pub json: bool,
}

pub async fn stats(client: &Client, args: StatsArgs) -> anyhow::Result<()> {
    let path = format!("/v1/stats?names={}", args.names.join(","));
    let terminal = std::io::stdout().is_terminal();
    loop {
        let stats: Vec<ContainerStats> = client.get(&path).await?;
        if args.json {
            println!("{}", serde_json::to_string(&stats)?);
        } else {
            if terminal && !args.no_stream {
                print!("\x1b[2J\x1b[H"); // clear the screen, cursor home
            }
            format::print_table(&table(&stats));
        }
        std::io::stdout().flush()?;
        if args.no_stream {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".into())
}

fn table(stats: &[ContainerStats]) -> comfy_table::Table {
    let mut t =
        format::table(&["NAME", "NODE", "CPU", "CPU % LIMIT", "MEM USAGE / LIMIT", "NET I/O", "BLOCK I/O", "PIDS"]);
    for s in stats {
        t.add_row(vec![
            s.name.clone(),
            s.node.clone(),
            opt(s.cpu_cores, |c| format!("{:.1}%", c * 100.0)),
            opt(s.cpu_percent_of_limit, |p| format!("{p:.1}%")),
            format!(
                "{} / {}",
                opt(s.memory_bytes, |b| Bytes(b).to_string()),
                opt(s.memory_limit_bytes, |b| Bytes(b).to_string())
            ),
            format!(
                "{} / {}",
                opt(s.net_rx_bytes, |b| Bytes(b).to_string()),
                opt(s.net_tx_bytes, |b| Bytes(b).to_string())
            ),
            format!(
                "{} / {}",
                opt(s.block_read_bytes, |b| Bytes(b).to_string()),
                opt(s.block_write_bytes, |b| Bytes(b).to_string())
            ),
            opt(s.pids, |p| p.to_string()),
        ]);
    }
    t
}
