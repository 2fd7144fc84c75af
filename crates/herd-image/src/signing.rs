//! Signing exported checkpoints: the Control node's key, the MAC of a manifest, and the
//! tar entry that carries it (see [`herd_proto::checkpoint::SIGNATURE_FILE`]).
//!
//! Only the Control node holds the key; nodes never need it, since checkpoints that never
//! left the cluster are not signed. The Control node signs a manifest when a checkpoint is
//! exported and checks the signature when an archive is uploaded for a restore, before any
//! node sees it.
//!
//! ```
//! use herd_image::signing::SigningKey;
//! let key = SigningKey::from_bytes([7; 32]);
//! let sig = key.sign(br#"{"format":"herd-checkpoint/1"}"#);
//! key.verify(br#"{"format":"herd-checkpoint/1"}"#, &sig).unwrap();
//! assert!(key.verify(br#"{"format":"herd-checkpoint/1" }"#, &sig).is_err());
//! ```

use herd_proto::checkpoint::{CheckpointSignature, SIGNATURE_ALGORITHM, SIGNATURE_CONTEXT, SIGNATURE_FILE};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Bytes of a key.
pub const KEY_LEN: usize = 32;
/// The largest signature file accepted.
pub const MAX_SIGNATURE: u64 = 4096;

type HmacSha256 = Hmac<Sha256>;

/// Why a signature was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error(
        "it is not signed by this cluster: Herd restores from outside the cluster only checkpoints that this \
         cluster exported (herd checkpoint --image-dir), whose manifest its Control node signed, and this one \
         has no {SIGNATURE_FILE}"
    )]
    Missing,
    #[error("its {SIGNATURE_FILE} is not a Herd checkpoint signature: {0}")]
    Malformed(String),
    #[error(
        "it was signed by another cluster's key ({theirs}; this cluster's is {ours}): a checkpoint can only be \
         restored into the cluster that exported it"
    )]
    OtherKey { theirs: String, ours: String },
    #[error(
        "its manifest does not match its signature: the checkpoint was modified after it was exported, and \
         Herd refuses to restore it"
    )]
    Mismatch,
}

/// The Control node's checkpoint signing key.
#[derive(Clone)]
pub struct SigningKey {
    key: [u8; KEY_LEN],
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.id())
    }
}

impl SigningKey {
    pub fn from_bytes(key: [u8; KEY_LEN]) -> SigningKey {
        SigningKey { key }
    }

    /// Reads a key file: [`KEY_LEN`] bytes, hex, surrounding white space ignored.
    pub fn parse(text: &str) -> Result<SigningKey, String> {
        let bytes = hex::decode(text.trim()).map_err(|e| format!("not hex: {e}"))?;
        let key: [u8; KEY_LEN] =
            bytes.try_into().map_err(|b: Vec<u8>| format!("{} bytes, where a key has {KEY_LEN}", b.len()))?;
        Ok(SigningKey { key })
    }

    /// The key file's text.
    pub fn to_hex(&self) -> String {
        hex::encode(self.key)
    }

    /// Names the key without revealing it: the first 8 bytes of a SHA-256 of it, hex.
    pub fn id(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"herd checkpoint key id\n");
        h.update(self.key);
        hex::encode(&h.finalize()[..8])
    }

    fn mac(&self) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(SIGNATURE_CONTEXT);
        mac
    }

    /// Signs the bytes of a manifest, exactly as they are stored.
    pub fn sign(&self, manifest: &[u8]) -> CheckpointSignature {
        let mut mac = self.mac();
        mac.update(manifest);
        CheckpointSignature {
            algorithm: SIGNATURE_ALGORITHM.into(),
            key_id: self.id(),
            mac: hex::encode(mac.finalize().into_bytes()),
        }
    }

    /// Checks `signature` against the bytes of a manifest (in constant time).
    pub fn verify(&self, manifest: &[u8], signature: &CheckpointSignature) -> Result<(), SignatureError> {
        if signature.algorithm != SIGNATURE_ALGORITHM {
            return Err(SignatureError::Malformed(format!(
                "algorithm {:?}, where Herd signs with {SIGNATURE_ALGORITHM}",
                signature.algorithm
            )));
        }
        let given = hex::decode(&signature.mac).map_err(|e| SignatureError::Malformed(format!("its MAC: {e}")))?;
        if signature.key_id != self.id() {
            return Err(SignatureError::OtherKey { theirs: signature.key_id.clone(), ours: self.id() });
        }
        let mut mac = self.mac();
        mac.update(manifest);
        mac.verify_slice(&given).map_err(|_| SignatureError::Mismatch)
    }

    /// Checks the content of a signature file against the bytes of a manifest.
    pub fn verify_file(&self, manifest: &[u8], signature_file: &[u8]) -> Result<(), SignatureError> {
        let sig: CheckpointSignature =
            serde_json::from_slice(signature_file).map_err(|e| SignatureError::Malformed(e.to_string()))?;
        self.verify(manifest, &sig)
    }
}

/// The signature file's bytes.
pub fn signature_file(signature: &CheckpointSignature) -> Vec<u8> {
    let mut json = serde_json::to_vec_pretty(signature).expect("signatures serialize");
    json.push(b'\n');
    json
}

/// One whole tar entry (header, data, padding) of a regular file, as a checkpoint archive
/// holds it.
pub fn tar_entry(name: &str, data: &[u8]) -> Vec<u8> {
    let mut header = crate::checkpoint::file_header(data.len() as u64);
    header.set_path(name).expect("checkpoint file names fit a tar header");
    header.set_cksum();
    let mut out = header.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

/// What a tar header block says about the entry it starts: its name, data size and whether
/// it is a regular file. `None` for an end-of-archive (all-zero) block.
pub fn parse_tar_header(block: &[u8; 512]) -> Result<Option<(String, u64, bool)>, String> {
    if block.iter().all(|b| *b == 0) {
        return Ok(None);
    }
    let header = tar::Header::from_byte_slice(block);
    let sum: u32 = block.iter().enumerate().map(|(i, b)| if (148..156).contains(&i) { 32 } else { *b as u32 }).sum();
    if header.cksum().map_err(|e| format!("a tar header is corrupt: {e}"))? != sum {
        return Err("a tar header's checksum is wrong: this is not a checkpoint archive".into());
    }
    let name = header.path().map_err(|e| format!("a tar entry's name is corrupt: {e}"))?;
    let name = name.to_str().ok_or("a tar entry's name is not UTF-8")?.to_string();
    let size = header.entry_size().map_err(|e| format!("a tar entry's size is corrupt: {e}"))?;
    Ok(Some((name, size, header.entry_type().is_file())))
}

/// Bytes a tar entry of `size` bytes takes, header and padding included.
pub fn tar_entry_len(size: u64) -> u64 {
    512 + size.div_ceil(512) * 512
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sign_and_refuse_changes_and_other_keys() {
        let key = SigningKey::from_bytes([1; 32]);
        let manifest = br#"{"format":"herd-checkpoint/1","files":[]}"#;
        let sig = key.sign(manifest);
        assert_eq!(sig.algorithm, "hmac-sha256");
        key.verify(manifest, &sig).unwrap();
        key.verify_file(manifest, &signature_file(&sig)).unwrap();

        let mut changed = manifest.to_vec();
        changed[5] ^= 1;
        assert_eq!(key.verify(&changed, &sig), Err(SignatureError::Mismatch));
        let mut forged = sig.clone();
        forged.mac.replace_range(0..2, if &forged.mac[0..2] == "00" { "01" } else { "00" });
        assert_eq!(key.verify(manifest, &forged), Err(SignatureError::Mismatch));

        let other = SigningKey::from_bytes([2; 32]);
        let err = other.verify(manifest, &sig).unwrap_err();
        assert!(matches!(err, SignatureError::OtherKey { .. }), "{err}");
        // The key id does not let anyone sign: the same id with another MAC is refused.
        let mut spoofed = other.sign(manifest);
        spoofed.key_id = key.id();
        assert_eq!(key.verify(manifest, &spoofed), Err(SignatureError::Mismatch));
        assert!(matches!(key.verify_file(manifest, b"{}"), Err(SignatureError::Malformed(_))));
    }

    #[test]
    fn key_files_round_trip() {
        let key = SigningKey::from_bytes([0xab; 32]);
        let again = SigningKey::parse(&format!("{}\n", key.to_hex())).unwrap();
        assert_eq!(again.id(), key.id());
        assert!(SigningKey::parse("abcd").unwrap_err().contains("2 bytes"));
        assert!(SigningKey::parse("zz").is_err());
        assert!(!format!("{key:?}").contains(&key.to_hex()), "Debug does not print the key");
    }

    #[test]
    fn tar_entries_parse_back() {
        let entry = tar_entry(SIGNATURE_FILE, b"{}\n");
        assert_eq!(entry.len() as u64, tar_entry_len(3));
        let block: &[u8; 512] = entry[..512].try_into().unwrap();
        assert_eq!(parse_tar_header(block).unwrap(), Some((SIGNATURE_FILE.to_string(), 3, true)));
        assert_eq!(parse_tar_header(&[0; 512]).unwrap(), None);
        let mut bad = *block;
        bad[0] ^= 1;
        assert!(parse_tar_header(&bad).unwrap_err().contains("checksum"));
    }
}
