//! monolithicFlat: a descriptor file naming one flat extent in the same directory. The extent is read in 1 MiB
//! windows; holes of the file (`SEEK_DATA`) are not read and all-zero 64 KiB runs are not returned.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::descriptor::{self, Descriptor};
use super::grain::is_zero;
use super::header::SECTOR;
use super::{MAX_EXTENT, VmdkInfo};
use crate::formats::vhd::MAX_SIZE;
use crate::{Error, Result};

/// The granularity at which zeros are skipped.
pub(crate) const ZERO_RUN: usize = 64 << 10;

#[derive(Debug)]
pub(crate) struct Flat {
    path: PathBuf,
    file: File,
    /// Where the extent starts in the file, bytes.
    base: u64,
    capacity: u64,
    /// Guest bytes `[win, win + win_len)` are in `buf`.
    win: u64,
    win_len: usize,
    /// The next guest byte to look at.
    pos: u64,
    buf: Vec<u8>,
}

impl Flat {
    /// Opens the extent that the descriptor `desc` (read from `path`) names.
    pub fn open(path: &Path, desc: Descriptor) -> Result<(Flat, VmdkInfo)> {
        let corrupt = |what: String| Error::corrupt(path, what);
        let [e] = &desc.extents[..] else {
            return Err(Error::Invalid(format!(
                "{}: a flat VMDK must have exactly one extent, this one has {}",
                path.display(),
                desc.extents.len()
            )));
        };
        if e.kind != "FLAT" && e.kind != "VMFS" {
            return Err(corrupt(format!("the extent of a {} VMDK is {}, not FLAT", desc.create_type, e.kind)));
        }
        if !descriptor::plain_name(&e.file) {
            return Err(corrupt(format!("the descriptor names another file: {:?}", e.file)));
        }
        if e.sectors > MAX_SIZE / SECTOR {
            return Err(corrupt(format!("the extent of {} sectors is larger than {} GiB", e.sectors, MAX_SIZE >> 30)));
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let data = dir.join(&e.file);
        let md = std::fs::symlink_metadata(&data).map_err(|err| Error::io(&data, err))?;
        if !md.file_type().is_file() {
            return Err(corrupt(format!("the flat extent {:?} is not a regular file", e.file)));
        }
        let file = File::open(&data).map_err(|err| Error::io(&data, err))?;
        let len = file.metadata().map_err(|err| Error::io(&data, err))?.len();
        let capacity = e.sectors * SECTOR;
        let base = e.offset.checked_mul(SECTOR).filter(|b| b.checked_add(capacity).is_some_and(|end| end <= len));
        let base =
            base.ok_or_else(|| corrupt(format!("the flat extent {:?} is shorter than the descriptor says", e.file)))?;
        let info = VmdkInfo { capacity, create_type: desc.create_type, grain_size: 0 };
        Ok((Flat { path: data, file, base, capacity, win: 0, win_len: 0, pos: 0, buf: vec![0u8; MAX_EXTENT] }, info))
    }

    /// Fills the window from `self.pos` (skipping a hole of the file first).
    fn refill(&mut self) -> Result<()> {
        use rustix::fs::{SeekFrom, seek};
        let mut pos = self.pos;
        match seek(&self.file, SeekFrom::Data(self.base + pos)) {
            Ok(d) => pos = pos.max((d - self.base) / ZERO_RUN as u64 * ZERO_RUN as u64),
            Err(rustix::io::Errno::NXIO) => pos = self.capacity,
            Err(_) => {}
        }
        let len = (self.capacity.saturating_sub(pos)).min(MAX_EXTENT as u64) as usize;
        self.file.read_exact_at(&mut self.buf[..len], self.base + pos).map_err(|e| Error::io(&self.path, e))?;
        self.win = pos;
        self.win_len = len;
        self.pos = pos;
        Ok(())
    }

    pub fn next_data(&mut self) -> Result<Option<(u64, &[u8])>> {
        loop {
            if self.pos >= self.capacity {
                return Ok(None);
            }
            if self.pos >= self.win + self.win_len as u64 || self.pos < self.win {
                self.refill()?;
                if self.win_len == 0 {
                    return Ok(None);
                }
            }
            let end = self.win_len;
            let mut a = (self.pos - self.win) as usize;
            while a < end && is_zero(&self.buf[a..(a + ZERO_RUN).min(end)]) {
                a += ZERO_RUN;
            }
            let a = a.min(end);
            let mut b = a;
            while b < end && !is_zero(&self.buf[b..(b + ZERO_RUN).min(end)]) {
                b = (b + ZERO_RUN).min(end);
            }
            self.pos = self.win + b as u64;
            if b > a {
                return Ok(Some((self.win + a as u64, &self.buf[a..b])));
            }
        }
    }
}
