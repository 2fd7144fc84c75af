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
    _value: PhantomData<fn() -> T>,
}

impl<T> Clone for Bucket<T> {
    fn clone(&self) -> Self {
        Bucket { store: self.store.clone(), client: self.client.clone(), _value: PhantomData }
    }
}

/// Outcome of a conditional write.
#[derive(Debug, PartialEq, Eq)]
pub enum WriteConflict {
    /// `create` found the key already there, or `update` found a newer revision.
    Conflict,
}

impl<T: Serialize + DeserializeOwned> Bucket<T> {
    pub(crate) fn new(store: kv::Store, client: async_nats::Client) -> Self {
        Bucket { store, client, _value: PhantomData }
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
        self.store
            .put(key, self.encode(key, value)?)
            .await
            .with_context(|| format!("writing {key:?} to bucket {}", self.name()))
    }

    /// Writes only if the key does not exist yet.
    pub async fn create(&self, key: &str, value: &T) -> anyhow::Result<Result<u64, WriteConflict>> {
        match self.store.create(key, self.encode(key, value)?).await {
            Ok(rev) => Ok(Ok(rev)),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(Err(WriteConflict::Conflict)),
            Err(e) => Err(e).with_context(|| format!("creating {key:?} in bucket {}", self.name())),
        }
    }

    /// Writes only if the key is still at `revision`.
    pub async fn update(&self, key: &str, value: &T, revision: u64) -> anyhow::Result<Result<u64, WriteConflict>> {
        match self.store.update(key, self.encode(key, value)?, revision).await {
            Ok(rev) => Ok(Ok(rev)),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(Err(WriteConflict::Conflict)),
            Err(e) => Err(e).with_context(|| format!("updating {key:?} in bucket {}", self.name())),
        }
    }

    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.store.delete(key).await.with_context(|| format!("deleting {key:?} from bucket {}", self.name()))
    }

    /// Every current record, and a stream of the changes that follow it (nothing is missed
    /// between the two). Records that cannot be decoded are skipped with a warning.
    pub async fn snapshot(
        &self,
    ) -> anyhow::Result<(HashMap<String, Versioned<T>>, impl Stream<Item = Change<T>> + use<T>)> {
        let values = self.store.status().await.context("reading bucket status")?.values();
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
        let this = self.clone();
        let changes = watch.filter_map(move |entry| {
            let change = match entry {
                Ok(e) => this.to_change(e),
                Err(e) => {
                    tracing::warn!("watch on bucket {} failed: {e}", this.name());
                    None
                }
            };
            futures::future::ready(change)
        });
        Ok((map, changes))
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
