//! The `herd` client commands: they talk to the Control node's HTTP API with the token from
//! the user's Herd config, and print tables for people or JSON for scripts.

pub mod analyze;
pub mod ca;
mod checkpoint;
pub mod classes;
pub mod client;
pub mod commands;
pub mod config;
pub mod control;
pub mod dashboard;
pub mod exec;
pub mod format;
pub mod join_token;
pub mod models;
pub mod nodes;
pub mod policy;
pub mod pull;
pub mod recorded;
pub mod sim;
mod since;
mod start;
pub mod stats;
pub mod top;

pub use client::Client;
pub use config::CliConfig;
