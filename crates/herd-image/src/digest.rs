//! SHA-256 content digests in the OCI `sha256:<hex>` form.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

/// "sha256:<hex>" of a file's bytes.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut reader = HashingReader::new(File::open(path)?);
    io::copy(&mut reader, &mut io::sink())?;
    Ok(reader.digest())
}

/// "sha256:<hex>" of some bytes.
pub(crate) fn sha256_bytes(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The hex part of a `sha256:<64 lowercase hex>` digest, or `None` when it is not one
/// (another algorithm, or malformed). The result is safe to use as a file name.
pub(crate) fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))).then_some(hex)
}

/// A reader that hashes what passes through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader { inner, hasher: Sha256::new() }
    }

    /// "sha256:<hex>" of the bytes read so far.
    pub(crate) fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.clone().finalize()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A writer that hashes what passes through it, and keeps the first bytes for sniffing.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    head: Vec<u8>,
}

/// How many leading bytes [`HashingWriter`] keeps.
const HEAD_LEN: usize = 8;

impl<W> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: Sha256::new(), head: Vec::with_capacity(HEAD_LEN) }
    }

    /// "sha256:<hex>" of the bytes written so far.
    pub(crate) fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.clone().finalize()))
    }

    /// The first bytes written (up to 8).
    pub(crate) fn head(&self) -> &[u8] {
        &self.head
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        if self.head.len() < HEAD_LEN {
            let take = (HEAD_LEN - self.head.len()).min(n);
            self.head.extend_from_slice(&buf[..take]);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests() {
        let empty = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(sha256_bytes(b""), empty);
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"abc").unwrap();
        w.write_all(b"defghijk").unwrap();
        assert_eq!(w.digest(), sha256_bytes(b"abcdefghijk"));
        assert_eq!(w.head(), b"abcdefgh");
        assert_eq!(sha256_hex(empty), Some(&empty[7..]));
        assert_eq!(sha256_hex("sha256:../../etc/passwd"), None);
        assert_eq!(sha256_hex(&empty.to_uppercase()), None);
        assert_eq!(sha256_hex("sha512:abcd"), None);
    }
}
