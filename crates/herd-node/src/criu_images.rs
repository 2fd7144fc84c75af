//! Checks of a checkpoint's CRIU images before CRIU restores from them, for damage that CRIU
//! itself does not survive.
//!
//! CRIU 4.2.1 restores memory from `pages-<id>.img` at the offsets `pagemap-*.img` lists; when
//! the pages image is shorter than that (a truncated file), its read loop gets 0 bytes at the
//! end of the file forever and never fails: the restore spins, logging a line per turn (3 GB
//! in 100 s here), until it is killed. [`check_pages`] compares the sizes first, so such a
//! checkpoint is refused at once with the file to blame.
//!
//! The images are CRIU's own format: a magic pair, then messages, each a little-endian `u32`
//! length and a protobuf message. A pagemap image holds a `pagemap_head { pages_id }` and then
//! `pagemap_entry { vaddr, compat_nr_pages, in_parent, flags, nr_pages }` messages; the pages
//! an entry flags "present" and not "in the parent" are stored one after another in
//! `pages-<pages_id>.img`. Whatever cannot be read as that is left to CRIU to judge.

use std::path::Path;

/// The magic every CRIU image (but a few service files) starts with.
const IMG_COMMON_MAGIC: u32 = 0x5456_4319;
/// The magic of pagemap images (private and shared memory).
const PAGEMAP_MAGIC: u32 = 0x5608_4025;
/// `pagemap_entry.flags`: the pages are in the parent (pre-copy) images.
const PE_PARENT: u64 = 1 << 0;
/// `pagemap_entry.flags`: the pages are in this checkpoint's pages image.
const PE_PRESENT: u64 = 1 << 2;

/// Fails when a pages image in `images` holds fewer bytes than its pagemap lists, naming both
/// files. Pagemaps it cannot read are skipped (CRIU reports those itself, at once).
pub fn check_pages(images: &Path) -> Result<(), String> {
    let entries = std::fs::read_dir(images).map_err(|e| format!("reading {}: {e}", images.display()))?;
    // SAFETY: sysconf has no preconditions.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !(name.starts_with("pagemap-") && name.ends_with(".img")) {
            continue;
        }
        let Ok(bytes) = std::fs::read(entry.path()) else { continue };
        let Some((pages_id, pages)) = pages_listed(&bytes) else { continue };
        let need = pages.saturating_mul(page_size);
        let pages_file = format!("pages-{pages_id}.img");
        let have = match std::fs::metadata(images.join(&pages_file)) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(format!("reading {}: {e}", images.join(&pages_file).display())),
        };
        if have < need {
            return Err(format!(
                "the checkpoint's CRIU images are damaged: {pages_file} holds {have} bytes but {name} lists \
                 {need} bytes of memory pages (in {})",
                images.display()
            ));
        }
    }
    Ok(())
}

/// The pages image id and the number of pages stored in it, from a pagemap image; `None`
/// when `bytes` is not a pagemap CRIU wrote.
fn pages_listed(bytes: &[u8]) -> Option<(u64, u64)> {
    let mut rest = bytes;
    if take_u32(&mut rest)? != IMG_COMMON_MAGIC || take_u32(&mut rest)? != PAGEMAP_MAGIC {
        return None;
    }
    let head = take_message(&mut rest)?;
    let pages_id = fields(head)?.into_iter().find(|(n, _)| *n == 1)?.1;
    let mut pages = 0u64;
    while !rest.is_empty() {
        let entry = fields(take_message(&mut rest)?)?;
        let field = |n: u32| entry.iter().find(|(f, _)| *f == n).map(|(_, v)| *v);
        // As CRIU reads entries of older images: `in_parent` before `flags`, 2 before 5.
        let flags = match (field(3), field(4)) {
            (Some(in_parent), _) if in_parent != 0 => PE_PARENT,
            (_, Some(flags)) => flags,
            (_, None) => PE_PRESENT,
        };
        let nr_pages = field(5).or(field(2))?;
        if flags & PE_PRESENT != 0 && flags & PE_PARENT == 0 {
            pages = pages.checked_add(nr_pages)?;
        }
    }
    Some((pages_id, pages))
}

fn take_u32(rest: &mut &[u8]) -> Option<u32> {
    let (head, tail) = rest.split_first_chunk::<4>()?;
    *rest = tail;
    Some(u32::from_le_bytes(*head))
}

/// One length-prefixed message.
fn take_message<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = take_u32(rest)? as usize;
    if len > rest.len() {
        return None;
    }
    let (message, tail) = rest.split_at(len);
    *rest = tail;
    Some(message)
}

/// The varint fields of a protobuf message, as (field number, value); other wire types are
/// skipped. `None` when the message is malformed.
fn fields(mut message: &[u8]) -> Option<Vec<(u32, u64)>> {
    let mut out = Vec::new();
    while !message.is_empty() {
        let key = varint(&mut message)?;
        let number = u32::try_from(key >> 3).ok()?;
        match key & 7 {
            0 => out.push((number, varint(&mut message)?)),
            1 => message = message.get(8..)?,
            2 => {
                let len = usize::try_from(varint(&mut message)?).ok()?;
                message = message.get(len..)?;
            }
            5 => message = message.get(4..)?,
            _ => return None,
        }
    }
    Some(out)
}

fn varint(rest: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, byte) in rest.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *rest = &rest[i + 1..];
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start of a pagemap CRIU 4.2.1 wrote here: pages image 1, then entries of 1, 1, 3
    /// pages flagged present (4) or present and lazy (6).
    const PAGEMAP: &[u8] = &[
        0x19, 0x43, 0x56, 0x54, 0x25, 0x40, 0x08, 0x56, // magics
        0x02, 0, 0, 0, 0x08, 0x01, // head: pages_id 1
        0x0b, 0, 0, 0, 0x08, 0x80, 0xa0, 0x80, 0x02, 0x10, 0x00, 0x20, 0x04, 0x28, 0x01, 0x0b, 0, 0, 0, 0x08, 0x80,
        0x80, 0xf8, 0x02, 0x10, 0x00, 0x20, 0x04, 0x28, 0x05, 0x0b, 0, 0, 0, 0x08, 0x80, 0xa0, 0xf9, 0x02, 0x10, 0x00,
        0x20, 0x06, 0x28, 0x01,
    ];

    fn entry(fields: &[(u8, u64)]) -> Vec<u8> {
        let mut m = Vec::new();
        for (n, v) in fields {
            m.push(n << 3);
            let mut v = *v;
            loop {
                let b = (v & 0x7f) as u8;
                v >>= 7;
                if v == 0 {
                    m.push(b);
                    break;
                }
                m.push(b | 0x80);
            }
        }
        let mut out = (m.len() as u32).to_le_bytes().to_vec();
        out.extend(m);
        out
    }

    #[test]
    fn counts_the_pages_a_pagemap_stores() {
        assert_eq!(pages_listed(PAGEMAP), Some((1, 7)));
        // Pages in the parent images, and lazy ones not present here, are not counted; an
        // entry of an older image without flags is present, one with `in_parent` is not.
        let mut map = PAGEMAP[..14].to_vec();
        map.extend(entry(&[(1, 0x1000), (2, 0), (4, 1 | 4), (5, 9)]));
        map.extend(entry(&[(1, 0x2000), (2, 0), (4, 2), (5, 9)]));
        map.extend(entry(&[(1, 0x3000), (2, 2)]));
        map.extend(entry(&[(1, 0x4000), (2, 8), (3, 1)]));
        assert_eq!(pages_listed(&map), Some((1, 2)));
    }

    #[test]
    fn anything_else_is_left_to_criu() {
        assert_eq!(pages_listed(b""), None);
        assert_eq!(pages_listed(&PAGEMAP[..PAGEMAP.len() - 1]), None, "a cut message");
        let mut other = PAGEMAP.to_vec();
        other[4] = 0;
        assert_eq!(pages_listed(&other), None, "another image's magic");
    }

    #[test]
    fn a_short_pages_image_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pagemap-1.img"), PAGEMAP).unwrap();
        std::fs::write(dir.path().join("pages-1.img"), vec![0u8; 7 * 4096]).unwrap();
        std::fs::write(dir.path().join("core-1.img"), b"not a pagemap").unwrap();
        check_pages(dir.path()).unwrap();
        std::fs::write(dir.path().join("pages-1.img"), vec![0u8; 4096]).unwrap();
        let err = check_pages(dir.path()).unwrap_err();
        assert!(err.contains("pages-1.img holds 4096 bytes but pagemap-1.img lists 28672 bytes"), "{err}");
        std::fs::remove_file(dir.path().join("pages-1.img")).unwrap();
        assert!(check_pages(dir.path()).unwrap_err().contains("holds 0 bytes"));
    }
}
