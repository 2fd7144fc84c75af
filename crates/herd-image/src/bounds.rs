//! Bounds on what reading or unpacking a layer may cost: the most bytes one layer and one image
//! may unpack to, and a reserve of free disk space kept on the filesystem a layer is unpacked
//! onto. A compressed bomb (17 MB of gzip that inflates to 16 GiB of zeros) is stopped as soon
//! as its decompressed stream passes a bound, so no more than the bound is ever read or written.
//!
//! A layer's unpacked size is the size of its decompressed tar stream (headers, padding and
//! file data), except that a sparse file counts at its full size, since extraction writes it
//! out densely.

use std::cell::Cell;
use std::ffi::CString;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use herd_proto::units::Bytes;

use crate::error::ImageError;

/// The most one layer and one image (all its distinct layers together) may unpack to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    pub layer: u64,
    pub image: u64,
}

impl UnpackLimits {
    /// No bound at all.
    pub const UNLIMITED: UnpackLimits = UnpackLimits { layer: u64::MAX, image: u64::MAX };
    /// Default bound of one layer: 8 GiB. Real layers are far smaller (a JDK layer is about
    /// 300 MiB, PostgreSQL's about 400 MiB, the largest layer of CUDA development images about
    /// 5 GiB), while a 17 MB gzip bomb expands to 16 GiB.
    pub const DEFAULT_LAYER: u64 = 8 << 30;
    /// Default bound of one image: 16 GiB, twice a layer (large database and machine learning
    /// images are a few GiB up to about 10 GiB unpacked).
    pub const DEFAULT_IMAGE: u64 = 16 << 30;
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits { layer: Self::DEFAULT_LAYER, image: Self::DEFAULT_IMAGE }
    }
}

/// Free space to keep on the filesystem holding `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskReserve {
    pub path: PathBuf,
    pub bytes: u64,
}

/// Bytes of the filesystem holding `path` that an unprivileged user may still write, and its
/// total size.
pub fn disk_space(path: &Path) -> io::Result<(u64, u64)> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the path contains a NUL byte"))?;
    // SAFETY: statvfs is plain data, for which all-zero is valid; `c` is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let unit = st.f_frsize as u64;
    Ok((st.f_bavail as u64 * unit, st.f_blocks as u64 * unit))
}

/// Which bound a meter enforces (for the error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Layer,
    Image,
}

/// The message of [`ImageError::TooLarge`].
pub(crate) fn too_large_message(what: &str, limit: u64, bound: Bound) -> String {
    let refused = "it was refused and nothing of it was kept (raise that setting if the image is genuine)";
    match bound {
        Bound::Layer => format!(
            "{what} unpacks to more than {}, the most one layer may unpack to (--max-layer-size); {refused}",
            bytes(limit)
        ),
        Bound::Image => format!(
            "{what}: the image unpacks to more than {}, the most one image may unpack to (--max-image-size); {refused}",
            bytes(limit)
        ),
    }
}

/// Why a meter stopped a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Trip {
    Over {
        bound: Bound,
        limit: u64,
    },
    Disk {
        path: PathBuf,
        reserve: u64,
        free: u64,
    },
    /// The free space could not be read.
    DiskUnknown {
        path: PathBuf,
        error: String,
    },
}

/// How often (in bytes read) the free disk space is looked at while unpacking.
const DISK_CHECK_EVERY: u64 = 4 << 20;

/// Counts the bytes a stream unpacks to, and stops it at a bound or when the disk gets short.
#[derive(Debug)]
pub(crate) struct Meter {
    /// Bytes allowed, and the bound that allows them (the smaller of what is left of the layer
    /// and of the image bound).
    limit: u64,
    bound: Bound,
    /// The bound as configured (for an image, the whole image's), for the error.
    configured: u64,
    used: Cell<u64>,
    reserve: Option<DiskReserve>,
    next_disk_check: Cell<u64>,
    tripped: std::cell::RefCell<Option<Trip>>,
}

impl Meter {
    /// A meter for one layer when `image_used` bytes of its image were unpacked already.
    pub(crate) fn new(limits: &UnpackLimits, image_used: u64, reserve: Option<DiskReserve>) -> Rc<Meter> {
        let image_left = limits.image.saturating_sub(image_used);
        let (limit, bound, configured) = if limits.layer <= image_left {
            (limits.layer, Bound::Layer, limits.layer)
        } else {
            (image_left, Bound::Image, limits.image)
        };
        Rc::new(Meter {
            limit,
            bound,
            configured,
            used: Cell::new(0),
            reserve,
            next_disk_check: Cell::new(0),
            tripped: Default::default(),
        })
    }

    /// Bytes counted so far.
    pub(crate) fn used(&self) -> u64 {
        self.used.get()
    }

    /// Why the meter stopped its stream, if it did.
    pub(crate) fn tripped(&self) -> Option<Trip> {
        self.tripped.borrow().clone()
    }

    /// Counts `n` more bytes; false (and tripped) when that passes the bound or the disk is short.
    pub(crate) fn charge(&self, n: u64) -> bool {
        if self.tripped.borrow().is_some() {
            return false;
        }
        let used = self.used.get().saturating_add(n);
        self.used.set(used);
        if used > self.limit {
            self.trip(Trip::Over { bound: self.bound, limit: self.configured });
            return false;
        }
        if let Some(reserve) = &self.reserve
            && used >= self.next_disk_check.get()
        {
            self.next_disk_check.set(used.saturating_add(DISK_CHECK_EVERY));
            match disk_space(&reserve.path) {
                Ok((free, _)) if free < reserve.bytes => {
                    self.trip(Trip::Disk { path: reserve.path.clone(), reserve: reserve.bytes, free });
                    return false;
                }
                Ok(_) => {}
                Err(e) => {
                    self.trip(Trip::DiskUnknown { path: reserve.path.clone(), error: e.to_string() });
                    return false;
                }
            }
        }
        true
    }

    fn trip(&self, trip: Trip) {
        self.tripped.borrow_mut().get_or_insert(trip);
    }

    /// The error for a stream this meter stopped, naming it `what`.
    pub(crate) fn error(&self, what: &str) -> Option<ImageError> {
        Some(match self.tripped()? {
            Trip::Over { bound, limit } => ImageError::TooLarge { what: what.to_string(), limit, bound },
            Trip::Disk { path, reserve, free } => {
                ImageError::DiskReserve { what: what.to_string(), path, reserve, free }
            }
            Trip::DiskUnknown { path, error } => {
                ImageError::Io { action: "read the free space of", path, err: io::Error::other(error) }
            }
        })
    }

    /// Replaces `err` with the meter's error when the meter is why the stream failed.
    pub(crate) fn explain(&self, what: &str, err: ImageError) -> ImageError {
        self.error(what).unwrap_or(err)
    }
}

/// A reader counted by a [`Meter`]: it fails once the meter trips.
pub(crate) struct Metered<R> {
    pub(crate) inner: R,
    pub(crate) meter: Rc<Meter>,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.meter.tripped.borrow().is_some() {
            return Err(io::Error::other("stopped: over an unpack bound"));
        }
        let n = self.inner.read(buf)?;
        if !self.meter.charge(n as u64) {
            return Err(io::Error::other("stopped: over an unpack bound"));
        }
        Ok(n)
    }
}

/// Looks at an entry's header before its data is read: charges what a sparse entry adds to
/// its stored bytes (its holes, which extraction writes out), and trips the meter right away
/// when the entry's data cannot fit in what is left (a 16 GiB file is refused without
/// inflating it). False when the meter tripped.
pub(crate) fn charge_entry<R: Read>(meter: &Meter, entry: &tar::Entry<'_, R>) -> bool {
    let stored = entry.header().entry_size().unwrap_or(0);
    if entry.header().entry_type().is_gnu_sparse() && !meter.charge(entry.size().saturating_sub(stored)) {
        return false;
    }
    if meter.used().saturating_add(stored) > meter.limit {
        meter.trip(Trip::Over { bound: meter.bound, limit: meter.configured });
        return false;
    }
    // A large file that would eat into the disk reserve is refused before it is written.
    if let Some(reserve) = &meter.reserve
        && entry.size() >= DISK_CHECK_EVERY
    {
        match disk_space(&reserve.path) {
            Ok((free, _)) if free < reserve.bytes.saturating_add(entry.size()) => {
                meter.trip(Trip::Disk { path: reserve.path.clone(), reserve: reserve.bytes, free });
                return false;
            }
            Ok(_) => {}
            Err(e) => {
                meter.trip(Trip::DiskUnknown { path: reserve.path.clone(), error: e.to_string() });
                return false;
            }
        }
    }
    true
}

/// `12GiB` style, for messages.
pub(crate) fn bytes(n: u64) -> String {
    Bytes(n).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smaller_bound_applies() {
        let limits = UnpackLimits { layer: 100, image: 250 };
        let m = Meter::new(&limits, 0, None);
        assert!(m.charge(100));
        assert!(!m.charge(1));
        assert_eq!(m.tripped(), Some(Trip::Over { bound: Bound::Layer, limit: 100 }));
        let m = Meter::new(&limits, 200, None);
        assert!(!m.charge(51));
        assert_eq!(m.tripped(), Some(Trip::Over { bound: Bound::Image, limit: 250 }));
        // Once tripped, always tripped.
        assert!(!m.charge(0));
    }

    #[test]
    fn a_metered_reader_stops_at_the_bound() {
        let limits = UnpackLimits { layer: 10_000, image: u64::MAX };
        let meter = Meter::new(&limits, 0, None);
        let mut r = Metered { inner: io::repeat(0), meter: meter.clone() };
        let err = io::copy(&mut r, &mut io::sink()).unwrap_err();
        assert!(err.to_string().contains("unpack bound"), "{err}");
        assert!(meter.used() > 10_000 && meter.used() < 10_000 + 64 * 1024, "{}", meter.used());
        let msg = meter.error("layer x").unwrap().to_string();
        assert!(msg.contains("layer x unpacks to more than 9.8KiB"), "{msg}");
    }

    #[test]
    fn the_disk_reserve_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (free, total) = disk_space(dir.path()).unwrap();
        assert!(free > 0 && total >= free);
        // A reserve above what is free trips on the first check.
        let reserve = DiskReserve { path: dir.path().to_path_buf(), bytes: total + 1 };
        let meter = Meter::new(&UnpackLimits::UNLIMITED, 0, Some(reserve));
        assert!(!meter.charge(1));
        let msg = meter.error("layer y").unwrap().to_string();
        assert!(msg.contains("layer y") && msg.contains("--disk-reserve"), "{msg}");
        // One that is free is fine.
        let reserve = DiskReserve { path: dir.path().to_path_buf(), bytes: 0 };
        let meter = Meter::new(&UnpackLimits::UNLIMITED, 0, Some(reserve));
        assert!(meter.charge(DISK_CHECK_EVERY * 3));
    }
}
