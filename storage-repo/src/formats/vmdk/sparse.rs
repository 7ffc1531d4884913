//! A single sparse extent file (monolithicSparse, or streamOptimized read with seeks): the header (or the footer
//! of a streamOptimized file whose grain directory is at the end), the grain directory, and the grain tables
//! loaded one at a time; grains are read in guest order, file-contiguous runs in one `pread`, compressed grains
//! inflated straight into the extent buffer.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::descriptor;
use super::grain::{Inflater, is_zero};
use super::header::{GD_AT_END, MARKER_EOS, MARKER_FOOTER, Marker, SECTOR, SparseHeader};
use super::{MAX_EXTENT, VmdkInfo};
use crate::{Error, Result};

/// Sorted, merged sector ranges `[start, end)` holding metadata (header, descriptor, directories, tables, footer).
#[derive(Debug, Default)]
struct MetaRanges(Vec<(u64, u64)>);

impl MetaRanges {
    fn sort(&mut self) {
        self.0.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.0.len());
        for &(s, e) in &self.0 {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.0 = merged;
    }

    /// True if `[start, end)` overlaps a range (the list must be sorted).
    fn overlaps(&self, start: u64, end: u64) -> bool {
        let i = self.0.partition_point(|&(_, e)| e <= start);
        self.0.get(i).is_some_and(|&(s, _)| s < end)
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
        let corrupt = |what: String| Error::corrupt(path, what);
        let read = |buf: &mut [u8], at: u64| file.read_exact_at(buf, at).map_err(|e| Error::io(path, e));
        if file_size < SECTOR {
            return Err(corrupt("the file is shorter than its header".into()));
        }
        let mut hb = [0u8; 512];
        read(&mut hb, 0)?;
        let first = SparseHeader::decode(&hb).map_err(corrupt)?;
        let sectors = file_size / SECTOR;
        let mut meta = MetaRanges::default();
        meta.0.push((0, 1));

        // The embedded descriptor.
        let mut create_type = if first.compressed() { "streamOptimized" } else { "monolithicSparse" }.to_string();
        if first.descriptor_size > 0 {
            let end = first.descriptor_offset.checked_add(first.descriptor_size).filter(|&e| e <= sectors);
            let end = end.ok_or_else(|| corrupt("the embedded descriptor extends past the end of the file".into()))?;
            let mut d = vec![0u8; (first.descriptor_size * SECTOR) as usize];
            read(&mut d, first.descriptor_offset * SECTOR)?;
            let desc = descriptor::parse(&d).map_err(|e| corrupt(format!("embedded descriptor: {e}")))?;
            if desc.create_type != "monolithicSparse" && desc.create_type != "streamOptimized" {
                return Err(Error::Invalid(format!(
                    "{}: createType {} is not a single-file sparse VMDK (monolithicSparse or streamOptimized)",
                    path.display(),
                    desc.create_type
                )));
            }
            if desc.extents.len() > 1 {
                return Err(Error::Invalid(format!("{}: a VMDK of several extents is not supported", path.display())));
            }
            create_type = desc.create_type;
            meta.0.push((first.descriptor_offset, end));
        }

        // A streamOptimized file with its grain directory at the end: the footer holds the real header.
        let h = if first.gd_offset == GD_AT_END {
            if !first.compressed() {
                return Err(corrupt("the grain directory is 'at the end' in an uncompressed file".into()));
            }
            if file_size < 4 * SECTOR {
                return Err(corrupt("the file is too short for a footer".into()));
            }
            let mut tail = [0u8; 1536];
            read(&mut tail, file_size / SECTOR * SECTOR - 1536)?;
            if Marker::decode(&tail[..512]) != (Marker::Meta { sectors: 1, kind: MARKER_FOOTER }) {
                return Err(corrupt("no footer marker before the end-of-stream marker".into()));
            }
            if Marker::decode(&tail[1024..]) != (Marker::Meta { sectors: 0, kind: MARKER_EOS }) {
                return Err(corrupt("no end-of-stream marker at the end of the file".into()));
            }
            let footer = SparseHeader::decode(tail[512..1024].try_into().expect("512 bytes"))
                .map_err(|e| corrupt(format!("footer: {e}")))?;
            if footer.gd_offset == GD_AT_END {
                return Err(corrupt("the footer does not say where the grain directory is".into()));
            }
            if (footer.capacity, footer.grain_size, footer.flags) != (first.capacity, first.grain_size, first.flags) {
                return Err(corrupt("the footer disagrees with the header (capacity, grain size or flags)".into()));
            }
            meta.0.push((sectors - 3, sectors));
            footer
        } else {
            first
        };

        // The grain directory (and the redundant one, whose tables we do not read).
        let gd_entries = h.gd_entries();
        if h.gd_offset == 0 || h.gd_offset.saturating_add(h.gd_sectors()) > sectors {
            return Err(corrupt(format!("the grain directory (sector {}) is outside the file", h.gd_offset)));
        }
        if h.flags & super::header::FLAG_REDUNDANT_GT != 0 && h.rgd_offset != 0 {
            meta.0.push((h.rgd_offset, h.rgd_offset.saturating_add(h.gd_sectors())));
        }
        let mut gdb = vec![0u8; (gd_entries * 4) as usize];
        read(&mut gdb, h.gd_offset * SECTOR)?;
        let gd: Vec<u32> = gdb.as_chunks::<4>().0.iter().map(|c| u32::from_le_bytes(*c)).collect();
        meta.0.push((h.gd_offset, h.gd_offset + h.gd_sectors()));
        meta.sort();

        // Grain tables: inside the file, not over the header, descriptor, directories or footer.
        let gt_sectors = h.gt_sectors();
        let mut tables = Vec::new();
        for (i, &g) in gd.iter().enumerate() {
            if g == 0 {
                continue;
            }
            let g = u64::from(g);
            if g * SECTOR + u64::from(h.gtes_per_gt) * 4 > file_size {
                return Err(corrupt(format!("grain table {i} (sector {g}) is outside the file")));
            }
            if meta.overlaps(g, g + gt_sectors) {
                return Err(corrupt(format!("grain table {i} (sector {g}) overlaps the header or a directory")));
            }
            tables.push((g, g + gt_sectors));
        }
        meta.0.extend(tables);
        meta.sort();

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
        let grains = self.h.grains();
        let sectors = self.file_size / SECTOR;
        for (j, e) in gt.iter_mut().enumerate() {
            let g = idx * per + j as u64;
            if g >= grains {
                *e = 0;
                continue;
            }
            if *e <= 1 {
                continue;
            }
            let at = u64::from(*e);
            // A compressed grain starts with its marker sector; its length is checked when it is read.
            let len = if self.h.compressed() { 1 } else { self.grain_len(g).div_ceil(SECTOR) };
            if at + len > sectors {
                return Err(self.corrupt(format!("grain {g} (sector {at}) is outside the file")));
            }
            if self.meta.overlaps(at, at + len) {
                return Err(self.corrupt(format!("grain {g} (sector {at}) overlaps the header or a grain table")));
            }
        }
        self.gt = gt;
        self.gt_index = idx;
        Ok(())
    }

    /// Bytes of grain `g` inside the capacity.
    fn grain_len(&self, g: u64) -> u64 {
        let gb = self.h.grain_bytes();
        gb.min(self.h.capacity * SECTOR - g * gb)
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
