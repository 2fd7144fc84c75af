//! `herd top`: a full-screen live view of the cluster: nodes with usage bars, the running
//! containers sorted and filtered as the user asks, and recent events.
//!
//! A task polls the Control node and sends each refresh over a channel; the main loop draws
//! and reads keys meanwhile, so a slow or unreachable Control node never freezes the keys.

mod draw;
mod state;
mod terminal;

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use crossterm::event::{Event as TermEvent, EventStream, KeyEventKind};
use futures::StreamExt;
use herd_proto::api::{ContainerStats, Event, NodeStats};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use self::state::{Snapshot, TopState};
use crate::client::Client;

/// How many recent events to fetch (the pane shows as many as fit).
const EVENTS: usize = 50;

/// Longest wait for one refresh before it counts as failed.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(10);

/// `herd top`
#[derive(Debug, Args)]
pub struct TopArgs {
    /// How often to refresh, in milliseconds (at least 100).
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = parse_interval_ms)]
    pub interval_ms: u64,
}

fn parse_interval_ms(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(ms) if ms >= 100 => Ok(ms),
        Ok(_) => Err("refreshing more often than every 100 ms is not supported".into()),
        Err(e) => Err(format!("not a number of milliseconds: {e}")),
    }
}

pub async fn top(client: &Client, args: TopArgs) -> anyhow::Result<()> {
    if !std::io::stdout().is_terminal() {
        bail!("herd top needs a terminal; use herd stats --no-stream or --json for scripts");
    }
    let (refreshes_tx, mut refreshes) = mpsc::channel(1);
    let _poller =
        AbortOnDrop(tokio::spawn(poll(client.clone(), Duration::from_millis(args.interval_ms), refreshes_tx)));
    let mut screen = terminal::Screen::take_over()?;
    let mut keys = EventStream::new();
    let mut state = TopState::default();
    loop {
        screen
            .draw(|frame| {
                state.page_rows = draw::container_rows_visible(frame.area(), &state);
                draw::draw(frame, &state);
            })
            .context("drawing the screen")?;
        tokio::select! {
            refresh = refreshes.recv() => match refresh {
                Some(refresh) => state.update(refresh, herd_proto::now_millis()),
                None => bail!("herd top's refresh task stopped"),
            },
            event = keys.next() => match event {
                Some(Ok(TermEvent::Key(key))) if key.kind == KeyEventKind::Press => state.apply_key(key),
                // A resize (or a key release) only needs a redraw.
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e).context("reading the keyboard"),
                None => return Ok(()),
            },
        }
        if state.quit {
            return Ok(());
        }
    }
}

/// Fetches a refresh every `interval` until the receiver is gone; a failure is sent as its
/// message and the next tick tries again.
async fn poll(client: Client, interval: Duration, refreshes: mpsc::Sender<Result<Snapshot, String>>) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let refresh = match tokio::time::timeout(REFRESH_TIMEOUT, fetch(&client)).await {
            Ok(result) => result.map_err(|e| format!("{e:#}")),
            Err(_) => Err(format!("the Control node did not answer within {}s", REFRESH_TIMEOUT.as_secs())),
        };
        if refreshes.send(refresh).await.is_err() {
            return;
        }
    }
}

/// The nodes' and containers' latest figures and the recent events, asked for at once.
async fn fetch(client: &Client) -> anyhow::Result<Snapshot> {
    let events_path = format!("/v1/events?limit={EVENTS}");
    let (nodes, containers, mut events) = tokio::try_join!(
        async { client.get::<Vec<NodeStats>>("/v1/stats/nodes").await.context("node figures") },
        async { client.get::<Vec<ContainerStats>>("/v1/stats").await.context("container figures") },
        async { client.get::<Vec<Event>>(&events_path).await.context("recent events") },
    )?;
    events.sort_by_key(|e| std::cmp::Reverse((e.time, e.seq)));
    Ok(Snapshot { nodes, containers, events })
}

/// Stops a task when dropped, on every way out of `top`.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::parse_interval_ms;

    #[test]
    fn interval_is_at_least_100_ms() {
        assert_eq!(parse_interval_ms("100"), Ok(100));
        assert_eq!(parse_interval_ms("2500"), Ok(2500));
        assert!(parse_interval_ms("99").unwrap_err().contains("100 ms"));
        assert!(parse_interval_ms("fast").unwrap_err().contains("milliseconds"));
    }
}
