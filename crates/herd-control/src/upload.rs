//! Refusing an upload so that the client hears why.
//!
//! A server that answers and closes while the client still sends makes the client's kernel
//! drop the answer with the connection (a reset): the client sees "error sending request"
//! instead of the reason. So the rest of a refused upload is read and dropped first, within
//! a bound on bytes and time; beyond it the connection is closed, as the upload is not worth
//! reading.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};

/// How long a refused upload is read on, at most.
const DRAIN_TIME: Duration = Duration::from_secs(30);

/// Reads and drops up to `bytes` more of a refused upload (see the module's note).
pub async fn drain_refused<E>(mut body: Pin<&mut impl Stream<Item = Result<Bytes, E>>>, bytes: u64) {
    let drain = async {
        let mut dropped = 0u64;
        while let Some(Ok(chunk)) = body.next().await {
            dropped += chunk.len() as u64;
            if dropped > bytes {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
}
