//! The Control node: keeps the cluster state, places containers, and serves the HTTP API
//! the CLI and the dashboard use. It talks to Compute nodes through the NATS broker, and
//! relays `herd exec` sessions to them over TCP ([`exec`]).
//!
//! ```no_run
//! # async fn demo(cfg: herd_control::ControlConfig) -> anyhow::Result<()> {
//! herd_control::run(cfg, async { tokio::signal::ctrl_c().await.ok(); }).await
//! # }
//! ```

mod api;
mod checkpoint_archive;
mod checkpoints;
mod containers;
mod control;
mod dashboard;
mod error;
mod events;
mod exec;
mod faults;
mod forecasters;
mod ha;
mod hostconfig;
mod https;
mod images;
pub mod ipam;
pub mod join;
pub mod lease;
mod migrate;
mod monitoring;
mod nodes;
mod policy;
mod pull;
pub mod replica;
mod start;
mod upload;
mod view;

use std::future::Future;

use anyhow::Context;

pub use containers::MIN_MEMORY;

/// What the API's handlers do with a request before they read or change any cluster state:
/// the checks of each body (decoded with axum's `Json`) and of an uploaded checkpoint
/// archive's head. Public for the fuzz targets (`crates/herd-fuzz`), which feed them arbitrary
/// bytes.
pub mod requests {
    pub use crate::checkpoint_archive::{Bounded, CheckedUpload, check_upload};
    pub use crate::containers::{CheckedRun, check_run, resolve_process, validate_limits};
    pub use crate::error::{Error, Kind};
    pub use crate::hostconfig::{Requested, placement};
    pub use crate::nodes::apply_label_changes;
    pub use crate::policy::check_set_policy;
    pub use crate::pull::{CheckedPull, check_pull};
}
pub use control::{Control, ControlConfig};
pub use herd_image::UnpackLimits;
pub use replica::{ReplicaConfig, run_replica};

/// Runs the Control node until `shutdown` completes.
pub async fn run(cfg: ControlConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let listen = cfg.api_listen;
    let join_listen = cfg.join.as_ref().and_then(|j| j.listen);
    let tls = cfg.tls.as_ref().map(https::server_config).transpose()?;
    let control = Control::start(cfg).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen for the API on {listen}"))?;
    tracing::info!("API listening on {listen} ({})", if tls.is_some() { "HTTPS" } else { "plain HTTP" });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    if let Some(at) = join_listen {
        let joins = tokio::net::TcpListener::bind(at)
            .await
            .with_context(|| format!("cannot listen for joining nodes on {at}"))?;
        tracing::info!("joining nodes are admitted on {at} too");
        let (tls, router, until) = (tls.clone(), api::join_router(control.clone()), until_stopped());
        tokio::spawn(async move {
            if let Err(e) = https::serve(joins, tls, router, until).await {
                tracing::error!("the join listener stopped: {e:#}");
            }
        });
    }
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    https::serve(listener, tls, api::router(control), until_stopped()).await
}
