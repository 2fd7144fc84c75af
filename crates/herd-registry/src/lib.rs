//! A client of the OCI distribution API (Docker registries), for `herd image pull`.
//!
//! - [`reference`]: image references parsed the way Docker does (`busybox` is
//!   `docker.io/library/busybox:latest`).
//! - [`challenge`]: `WWW-Authenticate` challenges (Basic, Bearer).
//! - [`manifest`]: manifests and indexes (Docker schema 2, OCI), and picking the one for this
//!   node's platform.
//! - [`dockercfg`]: credentials from the user's Docker config (`docker login`).
//! - [`client`]: the HTTP side: anonymous, Basic and Bearer-token auth, manifests, and blobs
//!   streamed with their sha256 verified.
//!
//! Where the pulled image goes (the layer store, the image record) is the Control node's
//! business, not this crate's.

pub mod challenge;
pub mod client;
pub mod dockercfg;
mod error;
pub mod manifest;
pub mod reference;

pub use client::{Credentials, RegistryClient, ResolvedImage};
pub use error::RegistryError;
pub use manifest::Descriptor;
pub use reference::Reference;
