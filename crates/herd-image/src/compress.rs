//! Recognising and undoing the compression of archives and layer blobs by their magic bytes.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use herd_proto::state::Compression;

use crate::error::ImageError;

/// What the first bytes of a file say about its compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sniffed {
    Known(Compression),
    /// A compression format we recognise but do not read.
    Unsupported(&'static str),
}

/// Sniffs compression from a blob's first bytes: gzip `1f 8b`, zstd `28 b5 2f fd`;
/// anything else is taken as uncompressed (a tar, if it is anything).
pub(crate) fn sniff(head: &[u8]) -> Sniffed {
    if head.starts_with(&[0x1f, 0x8b]) {
        Sniffed::Known(Compression::Gzip)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Sniffed::Known(Compression::Zstd)
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Sniffed::Unsupported("xz")
    } else if head.starts_with(b"BZh") {
        Sniffed::Unsupported("bzip2")
    } else {
        Sniffed::Known(Compression::None)
    }
}

/// The compression a layer blob starting with `head` uses, or the name of a compression
/// format Herd does not read.
pub fn layer_compression(head: &[u8]) -> Result<Compression, &'static str> {
    match sniff(head) {
        Sniffed::Known(c) => Ok(c),
        Sniffed::Unsupported(format) => Err(format),
    }
}

/// Sniffs a file's compression; `what` names it in errors.
pub(crate) fn sniff_file(path: &Path, what: &str) -> Result<Compression, ImageError> {
    let mut file = File::open(path).map_err(ImageError::io("open", path))?;
    let mut head = Vec::with_capacity(8);
    (&mut file).take(8).read_to_end(&mut head).map_err(ImageError::io("read", path))?;
    match sniff(&head) {
        Sniffed::Known(c) => Ok(c),
        Sniffed::Unsupported(format) => Err(ImageError::UnsupportedCompression { what: what.to_string(), format }),
    }
}

/// A reader that undoes `compression`. Concatenated gzip members and zstd frames are read
/// as one stream, as `gzip -d` and `zstd -d` do.
pub(crate) fn decoder<'a, R: Read + 'a>(reader: R, compression: Compression) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match compression {
        Compression::None => Box::new(BufReader::with_capacity(64 * 1024, reader)),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(reader)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_magic_bytes() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8, 0]), Sniffed::Known(Compression::Gzip));
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Sniffed::Known(Compression::Zstd));
        assert_eq!(sniff(b"etc/\0\0\0"), Sniffed::Known(Compression::None));
        assert_eq!(sniff(b""), Sniffed::Known(Compression::None));
        assert_eq!(sniff(&[0xfd, b'7', b'z', b'X', b'Z', 0]), Sniffed::Unsupported("xz"));
        assert_eq!(sniff(b"BZh91AY"), Sniffed::Unsupported("bzip2"));
    }

    #[test]
    fn decodes_concatenated_streams() {
        use std::io::Write;
        let mut gz = Vec::new();
        for part in [&b"hello "[..], b"world"] {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(part).unwrap();
            gz.extend(enc.finish().unwrap());
        }
        let mut out = String::new();
        decoder(&gz[..], Compression::Gzip).unwrap().read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello world");

        let mut zst = zstd::encode_all(&b"hello "[..], 0).unwrap();
        zst.extend(zstd::encode_all(&b"world"[..], 0).unwrap());
        let mut out = String::new();
        decoder(&zst[..], Compression::Zstd).unwrap().read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello world");
    }
}
