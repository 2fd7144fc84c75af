//! `herd control status`: which Control replica leads and since when, how far the others
//! lag, and which brokers hold the cluster state.

use clap::Args;
use herd_proto::control::{ControlStatus, Role};

use crate::client::Client;
use crate::commands::print_json;
use crate::format::clean;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub async fn status(client: &Client, args: StatusArgs) -> anyhow::Result<()> {
    let s: ControlStatus = client.get("/v1/control/status").await?;
    if args.json {
        return print_json(&s);
    }
    for line in render(&s, herd_proto::now_millis()).lines() {
        println!("{}", clean(line));
    }
    Ok(())
}

/// A replica reports every second: one not heard from for this long is shown as silent.
const SILENT_AFTER_MS: u64 = 3000;

fn ago(ms: u64) -> String {
    if ms < 1000 { format!("{ms} ms") } else { format!("{:.1} s", ms as f64 / 1000.0) }
}

/// The status as text, `now` in Unix milliseconds.
pub fn render(s: &ControlStatus, now: u64) -> String {
    let mut out = String::new();
    match &s.lease {
        None if s.replicas.is_empty() => out.push_str("leader    control (runs alone: no replicas, no election)\n"),
        None => out.push_str("leader    none yet (an election is under way)\n"),
        Some(l) if l.released => {
            out.push_str(&format!("leader    none: {} let the lease go (term {})\n", l.replica, l.term))
        }
        Some(l) => out.push_str(&format!(
            "leader    {} at {} (term {}, leading for {})\n",
            l.replica,
            l.api,
            l.term,
            ago(now.saturating_sub(l.since))
        )),
    }
    if !s.replicas.is_empty() {
        out.push_str("replicas\n");
        out.push_str(&format!(
            "  {:<14} {:<9} {:<26} {:>6} {:>12} {:>10} {:>9}\n",
            "NAME", "ROLE", "API", "TERM", "LAG", "REPORTED", "MEMORY"
        ));
        for r in &s.replicas {
            // A replica that stopped reporting (dead, paused, cut off) is not what it said.
            let silent = now.saturating_sub(r.at) > SILENT_AFTER_MS;
            let role = match r.role {
                _ if silent => "silent",
                Role::Leader => "leader",
                Role::Follower => "follower",
            };
            let lag = if r.role == Role::Leader { "-".to_string() } else { ago(r.lease_seen_ms_ago) };
            out.push_str(&format!(
                "  {:<14} {:<9} {:<26} {:>6} {:>12} {:>10} {:>6} MiB\n",
                r.name,
                role,
                r.api,
                r.term,
                lag,
                format!("{} ago", ago(now.saturating_sub(r.at))),
                r.rss_bytes >> 20
            ));
        }
    }
    out.push_str(&format!("answered  by {} (broker server {})\n", s.answered_by, s.broker_server));
    if s.state_peers.is_empty() {
        out.push_str("state     one broker server (no replicas of the cluster state)\n");
    } else {
        let peers: Vec<String> = s
            .state_peers
            .iter()
            .map(|p| {
                let what = if p.leader {
                    "leader".to_string()
                } else if p.offline {
                    "offline".to_string()
                } else if p.current {
                    "current".to_string()
                } else {
                    format!("{} behind", p.lag)
                };
                format!("{} ({what})", p.name)
            })
            .collect();
        out.push_str(&format!("state     {}\n", peers.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_proto::control::{LeaderLease, ReplicaReport, StreamPeer};

    #[test]
    fn the_status_names_the_leader_the_followers_lag_and_the_state_peers() {
        let report = |name: &str, role, lag| ReplicaReport {
            name: name.into(),
            api: format!("http://127.0.0.1:770{}", name.len()),
            role,
            term: 3,
            started: 0,
            at: 9_500,
            lease_seen_ms_ago: lag,
            rss_bytes: 30 << 20,
        };
        let s = ControlStatus {
            answered_by: "control2".into(),
            lease: Some(LeaderLease {
                replica: "control".into(),
                api: "http://127.0.0.1:7700".into(),
                term: 3,
                since: 4_000,
                released: false,
            }),
            replicas: vec![
                report("control", Role::Leader, 0),
                report("control2", Role::Follower, 120),
                ReplicaReport { at: 1_000, ..report("control3", Role::Leader, 0) },
            ],
            broker_server: "broker2".into(),
            state_peers: vec![
                StreamPeer { name: "broker".into(), leader: true, current: true, lag: 0, offline: false },
                StreamPeer { name: "broker3".into(), leader: false, current: false, lag: 4, offline: false },
            ],
        };
        let text = render(&s, 10_000);
        assert!(text.starts_with("leader    control at http://127.0.0.1:7700 (term 3, leading for 6.0 s)"), "{text}");
        assert!(text.contains("control2       follower"), "{text}");
        assert!(text.contains("120 ms"), "{text}");
        assert!(text.contains("control3       silent"), "a replica that stopped reporting: {text}");
        assert!(text.contains("state     broker (leader), broker3 (4 behind)"), "{text}");
        let alone = ControlStatus { lease: None, replicas: vec![], state_peers: vec![], ..s };
        assert!(render(&alone, 0).contains("runs alone"));
    }
}
