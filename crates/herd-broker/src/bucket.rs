//! Typed access to a JetStream key-value bucket holding JSON records.

use std::collections::HashMap;
use std::marker::PhantomData;

use anyhow::Context;
use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A value with the bucket revision that wrote it.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub value: T,
    pub revision: u64,
}

/// A change seen by [`Bucket::watch`].
#[derive(Debug, Clone, PartialEq)]
pub enum Change<T> {
    Put { key: String, value: T, revision: u64 },
    Delete { key: String, revision: u64 },
}

/// A key-value bucket whose values are `T` encoded as JSON.
pub struct Bucket<T> {
    store: kv::Store,
    /// For the broker's bound on one message.
    client: async_nats::Client,
    /// Whether the broker is a cluster whose writes are tried again while it fails over
    /// (see [`Bucket::retrying`]).
    clustered: bool,
    /// Checked before every write (see [`crate::Fence`]).
    fence: Option<crate::Fence>,
    _value: PhantomData<fn() -> T>,
}

impl<T> Clone for Bucket<T> {
    fn clone(&self) -> Self {
        Bucket {
            store: self.store.clone(),
            client: self.client.clone(),
            clustered: self.clustered,
            fence: self.fence.clone(),
            _value: PhantomData,
        }
    }
}

/// How long a write to a clustered broker is tried again while the cluster fails over: a
/// stream whose leader was lost elects another within seconds, and a client whose server
/// went reconnects to another, which may not know the stream yet.
const FAILOVER_WITHIN: std::time::Duration = std::time::Duration::from_secs(15);

/// Whether an error is one a clustered broker gives while it fails over, and that passes
/// (a request cut off, a server that does not know a stream yet): an operation that can be
/// run again may be.
pub fn failover_error(e: &dyn std::fmt::Display) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    ["timed out", "no stream found", "no responders", "temporarily unavailable", "disconnected", "not connected"]
        .iter()
        .any(|t| text.contains(t))
}

/// Outcome of a conditional write.
#[derive(Debug, PartialEq, Eq)]
pub enum WriteConflict {
    /// `create` found the key already there, or `update` found a newer revision.
    Conflict,
}

impl<T: Serialize + DeserializeOwned> Bucket<T> {
    pub(crate) fn new(
        store: kv::Store,
        client: async_nats::Client,
        clustered: bool,
        fence: Option<crate::Fence>,
    ) -> Self {
        Bucket { store, client, clustered, fence, _value: PhantomData }
    }

    /// Runs the write `op` again, for up to [`FAILOVER_WITHIN`], while a clustered broker
    /// fails over ([`failover_error`]s); `op` is told whether it is a try again. Every try
    /// first checks the bucket's fence: a replica that no longer leads writes nothing.
    async fn retrying<R, E, F, Fut>(&self, mut op: F) -> anyhow::Result<R>
    where
        E: std::error::Error + Send + Sync + 'static,
        F: FnMut(bool) -> Fut,
        Fut: std::future::Future<Output = Result<R, E>>,
    {
        let deadline = tokio::time::Instant::now() + FAILOVER_WITHIN;
        let mut again = false;
        loop {
            if let Some(fence) = &self.fence {
                fence.check().with_context(|| format!("writing to bucket {}", self.name()))?;
            }
            match op(again).await {
                Ok(r) => return Ok(r),
                Err(e) if self.clustered && failover_error(&e) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(anyhow::Error::new(e).context(format!(
                            "the broker did not take it within {}s: fewer than a majority of its servers answer, \
                             or it is still failing over (it may land once they answer again)",
                            FAILOVER_WITHIN.as_secs()
                        )));
                    }
                    tracing::debug!("bucket {}: {e}; trying again", self.name());
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    again = true;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Whether `key` now holds exactly `bytes`: how a write tried again learns that its first
    /// try landed (the answer was what got lost). Returns its revision then.
    async fn holds(&self, key: &str, bytes: &Bytes) -> Option<u64> {
        match self.store.entry(key).await {
            Ok(Some(e)) if e.operation == Operation::Put && e.value == *bytes => Some(e.revision),
            _ => None,
        }
    }

    /// The JSON of `value`, refused ([`crate::PayloadTooLarge`]) when the broker would not
    /// carry it.
    fn encode(&self, key: &str, value: &T) -> anyhow::Result<Bytes> {
        let bytes = serde_json::to_vec(value)?;
        crate::check_fits(
            self.client.max_payload(),
            || format!("the record {key:?} of bucket {}", self.name()),
            bytes.len(),
        )?;
        Ok(Bytes::from(bytes))
    }

    fn decode(&self, key: &str, bytes: &[u8]) -> anyhow::Result<T> {
        serde_json::from_slice(bytes).with_context(|| format!("record {key:?} in bucket {} is not valid", self.name()))
    }

    pub fn name(&self) -> &str {
        &self.store.name
    }

    pub async fn get(&self, key: &str) -> anyhow::Result<Option<Versioned<T>>> {
        let entry =
            self.store.entry(key).await.with_context(|| format!("reading {key:?} from bucket {}", self.name()))?;
        match entry {
            Some(e) if e.operation == Operation::Put => {
                Ok(Some(Versioned { value: self.decode(key, &e.value)?, revision: e.revision }))
            }
            _ => Ok(None),
        }
    }

    /// Writes unconditionally; returns the new revision.
    pub async fn put(&self, key: &str, value: &T) -> anyhow::Result<u64> {
        let bytes = self.encode(key, value)?;
        self.retrying(|_| self.store.put(key, bytes.clone()))
            .await
            .with_context(|| format!("writing {key:?} to bucket {}", self.name()))
    }

    /// Writes only if the key does not exist yet.
    pub async fn create(&self, key: &str, value: &T) -> anyhow::Result<Result<u64, WriteConflict>> {
        let bytes = self.encode(key, value)?;
        self.retrying(|again| {
            let bytes = bytes.clone();
            async move {
                match self.store.create(key, bytes.clone()).await {
                    Ok(rev) => Ok(Ok(rev)),
                    Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                        // Tried again: the first try may be what created it.
                        match if again { self.holds(key, &bytes).await } else { None } {
                            Some(rev) => Ok(Ok(rev)),
                            None => Ok(Err(WriteConflict::Conflict)),
                        }
                    }
                    Err(e) => Err(e),
                }
            }
        })
        .await
        .with_context(|| format!("creating {key:?} in bucket {}", self.name()))
    }

    /// Writes only if the key is still at `revision`.
    pub async fn update(&self, key: &str, value: &T, revision: u64) -> anyhow::Result<Result<u64, WriteConflict>> {
        let bytes = self.encode(key, value)?;
        self.retrying(|again| {
            let bytes = bytes.clone();
            async move {
                match self.store.update(key, bytes.clone(), revision).await {
                    Ok(rev) => Ok(Ok(rev)),
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                        match if again { self.holds(key, &bytes).await.filter(|rev| *rev > revision) } else { None } {
                            Some(rev) => Ok(Ok(rev)),
                            None => Ok(Err(WriteConflict::Conflict)),
                        }
                    }
                    Err(e) => Err(e),
                }
            }
        })
        .await
        .with_context(|| format!("updating {key:?} in bucket {}", self.name()))
    }

    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.retrying(|_| self.store.delete(key))
            .await
            .with_context(|| format!("deleting {key:?} from bucket {}", self.name()))
    }

    /// Every current record, and a stream of the changes that follow it (nothing is missed
    /// between the two). Records that cannot be decoded are skipped with a warning.
    pub async fn snapshot(
        &self,
    ) -> anyhow::Result<(HashMap<String, Versioned<T>>, impl Stream<Item = Change<T>> + use<T>)> {
        // Asked of the broker: the store's own `status` repeats what it knew when it was
        // opened, so a bucket opened empty would look empty for ever.
        let values = self
            .store
            .stream
            .clone()
            .info()
            .await
            .with_context(|| format!("reading the state of bucket {}", self.name()))?
            .state
            .messages;
        let mut watch =
            self.store.watch_with_history(">").await.with_context(|| format!("watching bucket {}", self.name()))?;
        let mut map = HashMap::new();
        if values > 0 {
            while let Some(entry) = watch.next().await {
                let entry = entry.with_context(|| format!("watching bucket {}", self.name()))?;
                let done = entry.seen_current || entry.delta == 0;
                match self.to_change(entry) {
                    Some(Change::Put { key, value, revision }) => {
                        map.insert(key, Versioned { value, revision });
                    }
                    Some(Change::Delete { key, .. }) => {
                        map.remove(&key);
                    }
                    None => {}
                }
                if done {
                    break;
                }
            }
        }
        let last = map.values().map(|v| v.revision).max().unwrap_or(0);
        Ok((map, self.clone().resuming_watch(watch, last)))
    }

    /// The changes `watch` gives after revision `last`, and after it ends or fails (its
    /// consumer lived on a broker that went away), those of a new watch from the revision
    /// after the last one seen: a follower of a bucket misses nothing when the broker fails
    /// over. With one value per key kept, it sees each key's newest value after a gap.
    fn resuming_watch(self, watch: kv::Watch, last: u64) -> impl Stream<Item = Change<T>> + use<T> {
        futures::stream::unfold((self, Some(watch), last), |(this, mut watch, mut last)| async move {
            loop {
                let current = match watch.as_mut() {
                    Some(w) => w,
                    None => match this.store.watch_all_from_revision(last + 1).await {
                        Ok(w) => {
                            tracing::info!("watching bucket {} again from revision {}", this.name(), last + 1);
                            watch.insert(w)
                        }
                        Err(e) => {
                            tracing::warn!("cannot watch bucket {} again yet: {e}", this.name());
                            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                            continue;
                        }
                    },
                };
                match current.next().await {
                    Some(Ok(entry)) => {
                        if entry.revision <= last {
                            continue; // seen before the watch was opened again
                        }
                        last = entry.revision;
                        if let Some(change) = this.to_change(entry) {
                            return Some((change, (this, watch, last)));
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!("watch on bucket {} failed: {e}; opening it again", this.name());
                        watch = None;
                    }
                    None => {
                        tracing::warn!("watch on bucket {} ended; opening it again", this.name());
                        watch = None;
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        })
    }

    fn to_change(&self, entry: kv::Entry) -> Option<Change<T>> {
        match entry.operation {
            Operation::Put => match self.decode(&entry.key, &entry.value) {
                Ok(value) => Some(Change::Put { key: entry.key, value, revision: entry.revision }),
                Err(e) => {
                    tracing::warn!("{e:#}");
                    None
                }
            },
            Operation::Delete | Operation::Purge => Some(Change::Delete { key: entry.key, revision: entry.revision }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_of_a_failover_are_told_from_the_others() {
        assert!(failover_error(&"ack error: no stream found for given subject"));
        assert!(failover_error(&"failed to create key in store: timed out: timed out"));
        assert!(!failover_error(&"wrong last sequence: 41"));
        assert!(!failover_error(&"maximum payload exceeded"));
    }
}
