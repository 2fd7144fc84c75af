//! herd-node: the Compute node agent (`herd node`) and its building blocks.
//!
//! - [`agent`]: the agent itself: registration, heartbeats, requests, route sync;
//!   [`fence`]: its lease on the cluster, and what it stops when the lease runs out;
//! - [`runtime`]: the container manager (runc, CRIU, overlayfs, cgroups, networking);
//!   [`checkpointing`]: its checkpoints and restores;
//! - [`checkpoints`]: checkpoints leaving and reaching the node through the broker;
//!   [`versions`]: checkpoint ticker versions, stored in and restored from the version store;
//!   [`version_trail`]: what a container's next version builds on, for an incremental dump;
//! - [`migrate`] and [`transfer`]: live migration between nodes, and its node-to-node connections
//!   ([`hello_slots`]: how many unauthenticated ones a listener holds);
//! - [`page_server`]: the destination's CRIU processes that take a migration's pages;
//!   [`relay`], [`pageproxy`]: the agents' relays of pages connections; [`criu_config`]: the
//!   CRIU settings runc passes on (TLS included); [`dirty_keeper`]: CRIU's dirty-memory
//!   trackers, held between pre-copy rounds on kernels without soft-dirty;
//! - [`runc`]: a typed wrapper of the runc command line; [`criu_images`]: checks of CRIU images
//!   before a restore;
//! - [`shim`]: the per-container shim process that starts a container with runc,
//!   owns its stdio, writes its log and collects its exit status;
//! - [`logs`]: the container log format and its readers;
//! - [`layers`], [`overlay`], [`spec`], [`cgroups`], [`paths`]: what a container is made of;
//! - [`user`]: the user a container runs as, resolved in its own `/etc/passwd` and `/etc/group`;
//! - [`routes`]: /32 routes to containers on other nodes;
//! - [`ports`], [`volumes`]: published ports (DNAT on the node) and named volumes;
//!   [`volume_tree`] and [`volume_move`]: named volumes moving with a migrating container;
//! - [`sampler`]: per-container and per-node monitoring samples, published every interval;
//! - [`sim`]: the simulated runtime (`herd node --runtime sim`), which accepts containers
//!   without running them, for scale tests;
//! - [`facts`], [`tools`]: what the node can do and where its programs are;
//! - [`cleanup`]: removing everything a node made (for `herd down`).

pub mod agent;
pub mod cgroups;
pub mod checkpointing;
pub mod checkpoints;
pub mod cleanup;
pub mod criu_config;
pub mod criu_images;
pub mod dirty_keeper;
pub mod dumpable;
pub mod exec;
pub mod facts;
pub mod fence;
pub mod guard;
pub mod hello_slots;
pub mod join;
pub mod layers;
pub mod leader_term;
pub mod logs;
pub mod migrate;
pub mod netfilter;
pub mod netlock;
pub mod overlay;
pub mod page_server;
pub mod pageproxy;
pub mod paths;
pub mod ports;
pub mod relay;
pub mod restore_check;
pub mod routes;
pub mod runc;
pub mod runtime;
pub mod sampler;
pub mod seccomp;
pub mod shim;
pub mod sim;
pub mod spec;
pub mod tools;
pub mod transfer;
pub mod tree_delta;
pub mod user;
pub mod version_trail;
pub mod versions;
pub mod volume_copy;
pub mod volume_move;
pub mod volume_tree;
pub mod volumes;
