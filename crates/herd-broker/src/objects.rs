//! The object stores (image layers, checkpoints and logs in transit), and writing an object
//! whole or not at all.
//!
//! A JetStream object store keeps an object as chunks published to
//! `$O.<bucket>.C.<nuid>` and, once the last chunk is stored, a metadata message on
//! `$O.<bucket>.M.<base64url(name)>` that names the nuid (NATS ADR-20). async-nats' own `put`
//! leaves the chunks behind when its reader fails or its future is dropped half-way (an
//! aborted upload): nothing names them, nothing deletes them, and they fill the broker's
//! disk. [`put_object`] writes the same format itself and purges its chunks on every path
//! that does not end with the metadata stored, so a store never holds part of an object.

use std::ops::Deref;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, object_store::ObjectStore};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use bytes::BytesMut;
use rand::Rng;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};

/// An object store of the cluster: the async-nats handle (readers use it as it is, through
/// `Deref`) and what [`put_object`] needs to write and clean up chunks itself.
#[derive(Clone)]
pub struct Objects {
    store: ObjectStore,
    js: jetstream::Context,
    bucket: String,
    chunk_size: usize,
    /// Checked before every write (see [`crate::Fence`]).
    fence: Option<crate::Fence>,
}

impl Deref for Objects {
    type Target = ObjectStore;

    fn deref(&self) -> &ObjectStore {
        &self.store
    }
}

impl Objects {
    pub(crate) fn new(
        store: ObjectStore,
        js: jetstream::Context,
        bucket: &str,
        chunk_size: usize,
        fence: Option<crate::Fence>,
    ) -> Objects {
        Objects { store, js, bucket: bucket.to_string(), chunk_size, fence }
    }

    fn check_fence(&self) -> anyhow::Result<()> {
        self.fence.as_ref().map_or(Ok(()), crate::Fence::check)
    }

    /// Deletes object `name` (after the fence's check, unlike the store's own `delete`).
    pub async fn delete(&self, name: &str) -> anyhow::Result<()> {
        self.check_fence()?;
        self.store.delete(name).await.map_err(|e| anyhow::anyhow!("deleting {name:?} from {}: {e}", self.bucket))
    }

    /// The bucket's name (`herd-layers`, `herd-checkpoints`).
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn stream_name(&self) -> String {
        format!("OBJ_{}", self.bucket)
    }

    /// How many messages the store holds under its chunk subjects: what a leak of partial
    /// objects would grow (for tests and diagnostics).
    pub async fn chunk_messages(&self) -> anyhow::Result<u64> {
        let stream = self.js.get_stream(self.stream_name()).await?;
        let info = stream.info_with_subjects(format!("$O.{}.C.>", self.bucket)).await?;
        let mut total = 0u64;
        let mut subjects = info;
        while let Some(s) = futures::StreamExt::next(&mut subjects).await {
            total += s?.1 as u64;
        }
        Ok(total)
    }
}

/// Chunks published for an object that is not complete yet; purged when dropped unless
/// [`Pending::commit`]ted.
struct Pending {
    objects: Objects,
    subject: String,
    committed: bool,
}

impl Pending {
    fn commit(mut self) {
        self.committed = true;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        let (objects, subject) = (self.objects.clone(), std::mem::take(&mut self.subject));
        let purge = async move {
            let result = async {
                let stream = objects.js.get_stream(objects.stream_name()).await?;
                stream.purge().filter(subject.clone()).await?;
                anyhow::Ok(())
            }
            .await;
            if let Err(e) = result {
                tracing::warn!("could not purge the chunks of an unfinished object ({subject}): {e:#}");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(purge);
            }
            Err(_) => tracing::warn!("the chunks of an unfinished object ({}) stay until they expire", self.subject),
        }
    }
}

/// Stores everything `data` yields as object `name` of `store` and returns its size. The
/// object exists only once this succeeds: when `data` fails, the broker refuses a chunk, or
/// the future is dropped, every chunk written is purged and an earlier object of that name
/// is left as it was.
pub async fn put_object(store: &Objects, name: &str, data: &mut (impl AsyncRead + Unpin)) -> anyhow::Result<u64> {
    anyhow::ensure!(!name.is_empty(), "an object needs a name");
    store.check_fence()?;
    let nuid = format!("{:032x}", rand::rng().random::<u128>());
    let chunks_subject = format!("$O.{}.C.{nuid}", store.bucket);
    let pending = Pending { objects: store.clone(), subject: chunks_subject.clone(), committed: false };
    let previous = store.store.info(name).await.ok();

    let mut buffer = BytesMut::with_capacity(store.chunk_size);
    let mut sha256 = Sha256::new();
    let (mut size, mut chunks) = (0usize, 0usize);
    loop {
        // Fill a whole chunk (the last one may be short).
        while buffer.len() < store.chunk_size {
            let n = (&mut *data)
                .take((store.chunk_size - buffer.len()) as u64)
                .read_buf(&mut buffer)
                .await
                .map_err(|e| anyhow::anyhow!("reading {name} to store it: {e}"))?;
            if n == 0 {
                break;
            }
        }
        if buffer.is_empty() {
            break;
        }
        let last = buffer.len() < store.chunk_size;
        let payload = buffer.split().freeze();
        sha256.update(&payload);
        size += payload.len();
        chunks += 1;
        store
            .js
            .publish(chunks_subject.clone(), payload)
            .await
            .map_err(|e| anyhow::anyhow!("storing {name} in the broker: {e}"))?
            .await
            .map_err(|e| anyhow::anyhow!("storing {name} in the broker: {e}"))?;
        if last {
            break;
        }
    }

    // The metadata message, as async-nats' `ObjectInfo` reads it.
    let info = serde_json::json!({
        "name": name,
        "bucket": store.bucket,
        "nuid": nuid,
        "size": size,
        "chunks": chunks,
        "mtime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "digest": format!("SHA-256={}", URL_SAFE.encode(sha256.finalize())),
        "options": { "max_chunk_size": store.chunk_size },
    });
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_ROLLUP, "sub");
    let meta_subject = format!("$O.{}.M.{}", store.bucket, URL_SAFE.encode(name));
    store.check_fence()?; // the object exists once its metadata is stored
    store
        .js
        .publish_with_headers(meta_subject, headers, serde_json::to_vec(&info)?.into())
        .await
        .map_err(|e| anyhow::anyhow!("storing {name} in the broker: {e}"))?
        .await
        .map_err(|e| anyhow::anyhow!("storing {name} in the broker: {e}"))?;
    pending.commit();

    // The object replaced an earlier one of its name: that one's chunks go.
    if let Some(previous) = previous.filter(|p| p.nuid != nuid) {
        let old = format!("$O.{}.C.{}", store.bucket, previous.nuid);
        if let Ok(stream) = store.js.get_stream(store.stream_name()).await
            && let Err(e) = stream.purge().filter(old.clone()).await
        {
            tracing::warn!("could not purge the replaced chunks of {name} ({old}): {e}");
        }
    }
    Ok(size as u64)
}

/// A reader of an object that fails with `TimedOut` when no byte arrives for `stall`: a
/// JetStream consumer that stops delivering (a broker under load, a dropped consumer) makes
/// an error its reader can act on, not a read that waits forever.
pub struct StallGuard<R> {
    inner: R,
    stall: std::time::Duration,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl<R> StallGuard<R> {
    pub fn new(inner: R, stall: std::time::Duration) -> StallGuard<R> {
        StallGuard { inner, stall, deadline: Box::pin(tokio::time::sleep(stall)) }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for StallGuard<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::future::Future;
        use std::task::Poll;
        let before = buf.filled().len();
        match std::pin::Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    let next = tokio::time::Instant::now() + self.stall;
                    self.deadline.as_mut().reset(next);
                }
                Poll::Ready(result)
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no data from the broker for {:?}", self.stall),
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod stall_tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_stops_delivering_times_out() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let mut guarded = StallGuard::new(rx, std::time::Duration::from_secs(5));
        tokio::io::AsyncWriteExt::write_all(&mut tx, b"abc").await.unwrap();
        let mut buf = [0u8; 3];
        guarded.read_exact(&mut buf).await.unwrap();
        let err = guarded.read_u8().await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        drop(tx);
    }
}
