//! The SR types: [`FileSr`] (`ext`: a directory of `<vdi-uuid>.vhd` files, as XenServer's local storage) and
//! [`IsoSr`] (`iso`: a read-only directory of ISO images).
//!
//! An SR here is only its directory: what a file is (a visible VDI, a hidden base copy, a snapshot's parent) is read
//! from the VHD headers, so `scan` rebuilds everything from the disk. The toolstack keeps the names and the other
//! XenAPI fields in its database. Operations that change more than one file (snapshot, coalesce) write an intent
//! journal under `.journal/` first, and [`FileSr::attach`] finishes or undoes whatever a crash interrupted.

mod file;
mod gc;
mod iso;
mod journal;

use std::path::Path;

pub use file::{FileSr, Scan, Snapshot, VdiFile};
pub use gc::GcReport;
pub use iso::{IsoImage, IsoSr};

use crate::{Error, Result};

/// Space as the filesystem under an SR reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// The filesystem's size, bytes (XenAPI `physical_size`).
    pub physical_size: u64,
    /// Bytes in use on the filesystem (XenAPI `physical_utilisation`).
    pub physical_utilisation: u64,
}

/// The space of the filesystem holding `dir`.
pub fn usage(dir: &Path) -> Result<Usage> {
    let st = rustix::fs::statvfs(dir).map_err(|e| Error::io(dir, e.into()))?;
    let frsize = st.f_frsize.max(1);
    let total = st.f_blocks.saturating_mul(frsize);
    let free = st.f_bfree.saturating_mul(frsize);
    Ok(Usage { physical_size: total, physical_utilisation: total.saturating_sub(free) })
}

/// A directory given by an administrator: absolute, no `..`, and (if `must_exist`) an existing directory.
pub fn check_dir(dir: &Path, must_exist: bool) -> Result<()> {
    if !dir.is_absolute() || dir.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(Error::Invalid(format!("{} is not an absolute path without '..'", dir.display())));
    }
    if must_exist && !dir.is_dir() {
        return Err(Error::NotFound(format!("the directory {}", dir.display())));
    }
    Ok(())
}

/// Makes a rename or unlink in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(|e| Error::io(dir, e))
}
