//! Herd's access to the NATS broker: authenticated connections, the JetStream buckets that
//! hold the cluster state, typed key-value access, typed request/reply, and the object stores
//! of image layers and checkpoints in transit.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use herd_broker::{Broker, BrokerConfig};
//! use herd_proto::state::NodeRecord;
//! let broker = Broker::connect(&BrokerConfig::new("nats://10.77.0.1:7422", "control")).await?;
//! let nodes = broker.bucket::<NodeRecord>(herd_proto::subjects::NODES_BUCKET).await?;
//! for (name, entry) in nodes.snapshot().await?.0 {
//!     println!("{name}: {}", entry.value.address);
//! }
//! # Ok(()) }
//! ```

mod bucket;
pub mod callout;
mod connect;
mod fence;
mod objects;
mod payload;

pub use async_nats;
pub use bucket::{Bucket, Change, Versioned, WriteConflict, failover_error};
pub use connect::{Broker, BrokerConfig};
pub use fence::{Fence, TERM_HEADER};
pub use objects::{Objects, StallGuard, put_object};
pub use payload::{HEADER_ROOM, PayloadTooLarge, check_fits, payload_too_large};
