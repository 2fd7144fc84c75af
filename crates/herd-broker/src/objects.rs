//! Writing transfer objects (checkpoints and logs in transit) to an object store.

use async_nats::jetstream::object_store::{ObjectMetadata, ObjectStore};
use herd_proto::subjects;
use tokio::io::AsyncRead;

/// Stores everything `data` yields as object `name`, in chunks of
/// [`subjects::CHECKPOINTS_CHUNK`]; returns its size. The object is complete only when this
/// succeeds; a reader that ends early stores a short object, so a caller whose producer can
/// fail checks it and deletes the object.
pub async fn put_object(store: &ObjectStore, name: &str, data: &mut (impl AsyncRead + Unpin)) -> anyhow::Result<u64> {
    let meta =
        ObjectMetadata { name: name.to_string(), chunk_size: Some(subjects::CHECKPOINTS_CHUNK), ..Default::default() };
    let info = store.put(meta, data).await.map_err(|e| anyhow::anyhow!("storing {name} in the broker: {e}"))?;
    Ok(info.size as u64)
}
