//! `herd start` and `herd restart`: stopped containers started again on their nodes, with
//! their names, addresses and files (see docs/design/cli.md).

use clap::Args;
use reqwest::Method;

use crate::client::{Client, segment};

/// `herd start`
#[derive(Debug, Args)]
pub struct StartArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
}

pub async fn start(client: &Client, args: StartArgs) -> anyhow::Result<()> {
    for name in &args.names {
        client.send(client.request(Method::POST, &format!("/v1/containers/{}/start", segment(name)))).await?;
        println!("{name}");
    }
    Ok(())
}

/// `herd restart`
#[derive(Debug, Args)]
pub struct RestartArgs {
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(long = "time", short = 't', default_value_t = 10)]
    pub timeout: u64,
    #[arg(required = true)]
    pub names: Vec<String>,
}

pub async fn restart(client: &Client, args: RestartArgs) -> anyhow::Result<()> {
    for name in &args.names {
        let req = client
            .request(Method::POST, &format!("/v1/containers/{}/restart", segment(name)))
            .query(&[("timeout", args.timeout)]);
        client.send(req).await?;
        println!("{name}");
    }
    Ok(())
}
