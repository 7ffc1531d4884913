//! Storage repositories and the disk formats they hold.
//!
//! **This crate knows nothing about XenAPI or HTTP**: it manages SRs (directories of VHD files, ISO libraries) and
//! reads, writes and converts disk images. `xapi-server` maps the SR, PBD, VDI, VBD and SM classes onto it.
//!
//! - [`formats`]: one folder per disk format; [`formats::vhd`] is XenServer's (blktap's) VHD, [`formats::vmdk`]
//!   reads VMware's single-file VMDKs as data extents for an import.
//! - [`block`]: what a block server needs from a disk ([`block::BlockDevice`]).
//! - [`nbd`]: the block server (our tapdisk): one VDI's chain over NBD on a unix socket.
//! - [`sr`]: the SR types: `ext` (a directory of VHD files) and `iso` (a directory of ISO images).

pub mod block;
pub mod error;
pub mod formats;
pub mod nbd;
pub mod sr;

pub use error::{Error, Result};
