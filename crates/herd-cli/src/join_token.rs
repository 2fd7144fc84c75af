//! `herd join-token create`: a one-time token with which one machine joins the cluster
//! (`herd node --join URL --token TOKEN`; see `herd_proto::join`).

use std::time::Duration;

use clap::Subcommand;
use herd_proto::join::{JoinToken, JoinTokenRequest};

use crate::client::Client;
use crate::commands::print_json;

#[derive(Debug, Subcommand)]
pub enum JoinTokenCommand {
    /// Make a token that lets one machine join the cluster as a node, once, before it expires.
    Create {
        /// How long the token may be used (at most 7d).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(client: &Client, command: JoinTokenCommand) -> anyhow::Result<()> {
    match command {
        JoinTokenCommand::Create { ttl, json } => {
            let token: JoinToken =
                client.post("/v1/join-tokens", &JoinTokenRequest { ttl_secs: ttl.as_secs().max(1) }).await?;
            if json {
                return print_json(&token);
            }
            println!("{}", token.token);
            eprintln!(
                "token {} admits one machine until {}. On that machine, as root:\n  \
                 herd node --join {} --token {} --name NAME --address ADDRESS",
                token.id,
                crate::format::timestamp(token.expires_at),
                client.endpoint(),
                token.token
            );
        }
    }
    Ok(())
}
