//! A single sparse extent file (monolithicSparse, or streamOptimized read with seeks): the header (or the footer
//! of a streamOptimized file whose grain directory is at the end), the grain directory, and the grain tables
//! loaded one at a time; grains are read in guest order, file-contiguous runs in one `pread`, compressed grains
//! inflated straight into the extent buffer.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::grain::{Inflater, is_zero};
use super::header::{Marker, SECTOR, SparseHeader};
use super::layout::{self, Layout, MetaRanges, MetaSource};
use super::{MAX_EXTENT, VmdkInfo};
use crate::{Error, Result};

/// Metadata read from the file with `pread`.
struct FileSource<'a> {
    file: &'a File,
    path: &'a Path,
}

impl MetaSource for FileSource<'_> {
    fn read_meta(&mut self, at: u64, len: usize, _what: &str) -> Result<Vec<u8>> {
        let mut b = vec![0u8; len];
        self.file.read_exact_at(&mut b, at).map_err(|e| Error::io(self.path, e))?;
        Ok(b)
    }
}

#[derive(Debug)]
pub(crate) struct Sparse {
    path: PathBuf,
    file: File,
    file_size: u64,
    h: SparseHeader,
    gd: Vec<u32>,
    meta: MetaRanges,
    /// The grain table `gt_index` (entries for grains past the capacity are zeroed).
    gt: Vec<u32>,
    gt_index: u64,
    /// The next grain to look at.
    cursor: u64,
    /// File bytes of the grains read so far: more than the file holds means tables point at the same data twice
    /// (a tiny file that would expand to the whole capacity).
    consumed: u64,
    buf: Vec<u8>,
    cbuf: Vec<u8>,
    inflater: Inflater,
}

impl Sparse {
    fn corrupt(&self, what: impl Into<String>) -> Error {
        Error::corrupt(&self.path, what)
    }

    fn read_at(&self, buf: &mut [u8], at: u64) -> Result<()> {
        self.file.read_exact_at(buf, at).map_err(|e| Error::io(&self.path, e))
    }

    /// Parses and validates `file` (already known to start with `KDMV`).
    pub fn open(path: &Path, file: File, file_size: u64) -> Result<(Sparse, VmdkInfo)> {
        let mut src = FileSource { file: &file, path };
        let Layout { h, create_type, gd, meta, .. } = layout::read_layout(&mut src, path, file_size)?;
        let info = VmdkInfo { capacity: h.capacity * SECTOR, create_type, grain_size: h.grain_bytes() };
        let grain = h.grain_bytes() as usize;
        let cbuf = if h.compressed() {
            vec![0u8; (12 + h.max_compressed() as usize).next_multiple_of(512)]
        } else {
            Vec::new()
        };
        let s = Sparse {
            path: path.to_path_buf(),
            file,
            file_size,
            gd,
            meta,
            gt: Vec::new(),
            gt_index: u64::MAX,
            cursor: 0,
            consumed: 0,
            buf: vec![0u8; MAX_EXTENT + grain + 1],
            cbuf,
            inflater: Inflater::new(),
            h,
        };
        Ok((s, info))
    }

    /// Loads and validates grain table `idx` (its directory entry is not 0).
    fn load_gt(&mut self, idx: u64) -> Result<()> {
        if self.gt_index == idx {
            return Ok(());
        }
        let per = u64::from(self.h.gtes_per_gt);
        let mut b = vec![0u8; (per * 4) as usize];
        self.read_at(&mut b, u64::from(self.gd[idx as usize]) * SECTOR)?;
        let mut gt: Vec<u32> = b.as_chunks::<4>().0.iter().map(|c| u32::from_le_bytes(*c)).collect();
        layout::check_gt(&self.h, &self.meta, idx, &gt, self.file_size).map_err(|e| self.corrupt(e))?;
        let grains = self.h.grains();
        for (j, e) in gt.iter_mut().enumerate() {
            if idx * per + j as u64 >= grains {
                *e = 0;
            }
        }
        self.gt = gt;
        self.gt_index = idx;
        Ok(())
    }

    /// Bytes of grain `g` inside the capacity.
    fn grain_len(&self, g: u64) -> u64 {
        layout::grain_len(&self.h, g)
    }

    /// The next grain at or after the cursor that has data: `(grain, sector)`.
    fn next_allocated(&mut self) -> Result<Option<(u64, u64)>> {
        let per = u64::from(self.h.gtes_per_gt);
        while self.cursor < self.h.grains() {
            let idx = self.cursor / per;
            if self.gd[idx as usize] != 0 {
                self.load_gt(idx)?;
                let from = (self.cursor % per) as usize;
                if let Some(j) = self.gt[from..].iter().position(|&e| e > 1) {
                    let g = idx * per + (from + j) as u64;
                    return Ok(Some((g, u64::from(self.gt[from + j]))));
                }
            }
            self.cursor = (idx + 1) * per;
        }
        Ok(None)
    }

    /// Reads and inflates compressed grain `g` (marker at `sector`) into `self.buf[fill..]`; returns its length.
    fn read_compressed(&mut self, g: u64, sector: u64, fill: usize) -> Result<usize> {
        let at = sector * SECTOR;
        let n = (self.cbuf.len() as u64).min(self.file_size - at) as usize;
        self.file.read_exact_at(&mut self.cbuf[..n], at).map_err(|e| Error::io(&self.path, e))?;
        let Marker::Grain { lba, size } = Marker::decode(&self.cbuf[..16]) else {
            return Err(self.corrupt(format!("grain {g} (sector {sector}) points at a metadata marker")));
        };
        if lba != g * self.h.grain_size {
            return Err(self.corrupt(format!("the grain at sector {sector} says LBA {lba}, its table says grain {g}")));
        }
        if u64::from(size) > self.h.max_compressed() {
            return Err(self.corrupt(format!("compressed grain {g} of {size} bytes is larger than a grain can be")));
        }
        if 12 + size as usize > n {
            return Err(self.corrupt(format!("compressed grain {g} extends past the end of the file")));
        }
        self.consume((12 + u64::from(size)).next_multiple_of(SECTOR))?;
        let len = self.grain_len(g) as usize;
        let out = &mut self.buf[fill..fill + len + 1];
        let got = self
            .inflater
            .inflate(&self.cbuf[12..12 + size as usize], out)
            .map_err(|e| Error::corrupt(&self.path, format!("grain {g}: {e}")))?;
        out[got..len].fill(0);
        Ok(len)
    }

    /// Counts `bytes` of the file as read; `Err` once more than the file has been read.
    fn consume(&mut self, bytes: u64) -> Result<()> {
        self.consumed += bytes;
        if self.consumed > self.file_size {
            return Err(self.corrupt("the grain tables point at the same data more than once"));
        }
        Ok(())
    }

    /// The next run of allocated, non-zero grains adjacent in the guest, up to [`MAX_EXTENT`] bytes.
    pub fn next_data(&mut self) -> Result<Option<(u64, &[u8])>> {
        let gb = self.h.grain_bytes();
        let per = u64::from(self.h.gtes_per_gt);
        let mut start = 0u64;
        let mut fill = 0usize;
        while fill < MAX_EXTENT {
            let Some((g, sector)) = self.next_allocated()? else { break };
            if fill > 0 && g * gb != start + fill as u64 {
                break;
            }
            if fill == 0 {
                start = g * gb;
            }
            if self.h.compressed() {
                let len = self.read_compressed(g, sector, fill)?;
                self.cursor = g + 1;
                if is_zero(&self.buf[fill..fill + len]) {
                    if fill > 0 {
                        break;
                    }
                    continue;
                }
                fill += len;
                continue;
            }
            // Uncompressed: the grains that follow in the same table and in the file, in one read.
            let j0 = (g % per) as usize;
            let room = ((MAX_EXTENT - fill) as u64).div_ceil(gb).max(1);
            let mut n = 1u64;
            while n < room
                && j0 + (n as usize) < self.gt.len()
                && u64::from(self.gt[j0 + n as usize]) == sector + n * self.h.grain_size
            {
                n += 1;
            }
            let len = ((g + n) * gb).min(self.h.capacity * SECTOR) - g * gb;
            let len = len.min((self.buf.len() - 1 - fill) as u64) as usize;
            let (file, path) = (&self.file, &self.path);
            file.read_exact_at(&mut self.buf[fill..fill + len], sector * SECTOR).map_err(|e| Error::io(path, e))?;
            let zero = self.buf[fill..fill + len].chunks(gb as usize).position(is_zero);
            match zero {
                None => {
                    self.consume(len as u64)?;
                    self.cursor = g + len.div_ceil(gb as usize) as u64;
                    fill += len;
                }
                Some(k) => {
                    self.consume(((k as u64 + 1) * gb).min(len as u64))?;
                    self.cursor = g + k as u64 + 1;
                    fill += k * gb as usize;
                    if fill > 0 {
                        break;
                    }
                }
            }
        }
        Ok((fill > 0).then(|| (start, &self.buf[..fill])))
    }
}
