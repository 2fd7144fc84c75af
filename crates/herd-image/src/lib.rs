//! Image file formats: turning what a user imports into image layers, and layers into
//! overlayfs lower directories.
//!
//! The Control node calls [`import_archive`] on an upload (a rootfs tarball, an OCI image
//! layout or a `docker save` archive) and stores the layer blobs it writes; the CLI calls
//! [`pack_dir`] to upload a rootfs directory as a tarball; a Compute node agent calls
//! [`extract_layer`] to unpack each layer blob into its own directory, which overlayfs then
//! stacks, and [`pack_upper`] to save a container's writable overlay directory as a layer
//! that [`extract_layer`] restores (checkpoints and live migration). Checkpoints move between
//! machines as checkpoint archives ([`pack_checkpoint`], [`unpack_checkpoint`]); ticker
//! versions are kept as content-addressed blocks ([`versions`]).
//!
//! Everything here is synchronous file work: no network, no async runtime.

mod arch;
mod bounds;
mod checkpoint;
mod compress;
pub mod criu_image;
mod digest;
mod error;
mod extract;
mod import;
mod pack;
mod private;
pub mod signing;
mod tarwalk;
mod upper;
pub mod versions;

pub use arch::host_architecture;
pub use bounds::{Bound, DiskReserve, UnpackLimits, disk_space};
pub use checkpoint::{
    MAX_MANIFEST, checkpoint_files, pack_checkpoint, parse_manifest, read_manifest, unpack_checkpoint,
    verify_checkpoint_dir, write_manifest,
};
pub use compress::layer_compression;
pub use digest::sha256_file;
pub use error::ImageError;
pub use extract::{LayerBounds, OPAQUE_XATTR, extract_layer, extract_layer_within};
pub use import::{
    ImageSource, ImportedImage, ImportedLayer, ParsedConfig, blob_path, import_archive, measure_layer,
    parse_image_config,
};
pub mod media_types;
pub use pack::pack_dir;
pub use private::private_dir;
pub use upper::{UpperAttrs, can_read_trusted_xattrs, kept_xattr, pack_upper};
