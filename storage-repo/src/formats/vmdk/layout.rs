//! The validation a sparse extent's metadata shares between the file reader (`sparse`) and the streaming ingest
//! (`ingest`): the header (or the footer of a streamOptimized file with its grain directory at the end), the
//! embedded descriptor, the grain directory, the location of every grain table, and every grain table entry.
//! Where the bytes come from is a [`MetaSource`]: `pread` on a file, or an upload's head buffered in memory.

use std::path::Path;

use super::descriptor;
use super::header::{FLAG_REDUNDANT_GT, GD_AT_END, MARKER_EOS, MARKER_FOOTER, Marker, SECTOR, SparseHeader};
use crate::{Error, Result};

/// Where metadata is read from. `at + len` is always inside the size given to [`read_layout`].
pub(super) trait MetaSource {
    /// `len` bytes at byte `at`; `what` names them for errors.
    fn read_meta(&mut self, at: u64, len: usize, what: &str) -> Result<Vec<u8>>;
}

/// Sorted, merged sector ranges `[start, end)` holding metadata (header, descriptor, directories, tables, footer).
#[derive(Debug, Default)]
pub(super) struct MetaRanges(pub Vec<(u64, u64)>);

impl MetaRanges {
    pub fn sort(&mut self) {
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
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        let i = self.0.partition_point(|&(_, e)| e <= start);
        self.0.get(i).is_some_and(|&(s, _)| s < end)
    }
}

/// A sparse extent's validated metadata.
#[derive(Debug)]
pub(super) struct Layout {
    /// The header, or the footer when the header puts the grain directory at the end.
    pub h: SparseHeader,
    pub create_type: String,
    pub gd: Vec<u32>,
    /// Header, descriptor, directories, footer and grain tables, sorted.
    pub meta: MetaRanges,
    /// The grain tables `(directory index, first sector)`, in directory order.
    pub tables: Vec<(usize, u64)>,
}

/// Reads and validates the metadata of a sparse extent of `size` bytes (known to start with `KDMV`) from `src`;
/// errors name `path`.
pub(super) fn read_layout(src: &mut dyn MetaSource, path: &Path, size: u64) -> Result<Layout> {
    let corrupt = |what: String| Error::corrupt(path, what);
    if size < SECTOR {
        return Err(corrupt("the file is shorter than its header".into()));
    }
    let hb = src.read_meta(0, 512, "the header")?;
    let first = SparseHeader::decode(hb[..].try_into().expect("512 bytes")).map_err(corrupt)?;
    let sectors = size / SECTOR;
    let mut meta = MetaRanges::default();
    meta.0.push((0, 1));

    // The embedded descriptor.
    let mut create_type = if first.compressed() { "streamOptimized" } else { "monolithicSparse" }.to_string();
    if first.descriptor_size > 0 {
        let end = first.descriptor_offset.checked_add(first.descriptor_size).filter(|&e| e <= sectors);
        let end = end.ok_or_else(|| corrupt("the embedded descriptor extends past the end of the file".into()))?;
        let d = src.read_meta(
            first.descriptor_offset * SECTOR,
            (first.descriptor_size * SECTOR) as usize,
            "the descriptor",
        )?;
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
        if size < 4 * SECTOR {
            return Err(corrupt("the file is too short for a footer".into()));
        }
        let tail = src.read_meta(size / SECTOR * SECTOR - 1536, 1536, "the footer")?;
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
    if h.flags & FLAG_REDUNDANT_GT != 0 && h.rgd_offset != 0 {
        meta.0.push((h.rgd_offset, h.rgd_offset.saturating_add(h.gd_sectors())));
    }
    let gdb = src.read_meta(h.gd_offset * SECTOR, (gd_entries * 4) as usize, "the grain directory")?;
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
        if g * SECTOR + u64::from(h.gtes_per_gt) * 4 > size {
            return Err(corrupt(format!("grain table {i} (sector {g}) is outside the file")));
        }
        if meta.overlaps(g, g + gt_sectors) {
            return Err(corrupt(format!("grain table {i} (sector {g}) overlaps the header or a directory")));
        }
        tables.push((i, g));
    }
    meta.0.extend(tables.iter().map(|&(_, g)| (g, g + gt_sectors)));
    meta.sort();
    Ok(Layout { h, create_type, gd, meta, tables })
}

/// Bytes of grain `g` inside the capacity.
pub(super) fn grain_len(h: &SparseHeader, g: u64) -> u64 {
    let gb = h.grain_bytes();
    gb.min(h.capacity * SECTOR - g * gb)
}

/// Checks the entries of grain table `idx` of a file of `size` bytes (entries past the capacity are not looked
/// at): each grain with data must lie inside the file (a compressed grain's marker sector) and not over metadata.
/// `Err` is a sentence naming the grain.
pub(super) fn check_gt(
    h: &SparseHeader,
    meta: &MetaRanges,
    idx: u64,
    gt: &[u32],
    size: u64,
) -> std::result::Result<(), String> {
    let per = u64::from(h.gtes_per_gt);
    let grains = h.grains();
    let sectors = size / SECTOR;
    for (j, &e) in gt.iter().enumerate() {
        let g = idx * per + j as u64;
        if g >= grains {
            break;
        }
        if e <= 1 {
            continue;
        }
        let at = u64::from(e);
        // A compressed grain starts with its marker sector; its length is checked when it is read.
        let len = if h.compressed() { 1 } else { grain_len(h, g).div_ceil(SECTOR) };
        if at + len > sectors {
            return Err(format!("grain {g} (sector {at}) is outside the file"));
        }
        if meta.overlaps(at, at + len) {
            return Err(format!("grain {g} (sector {at}) overlaps the header or a grain table"));
        }
    }
    Ok(())
}
