//! Reading and validating one file's metadata (footers, header, BAT, batmap, locators) from hostile bytes.
//!
//! Every offset, length and count is checked against the file's length before it is used, so no allocation is
//! larger than the file and no read goes past its end. `Strict` adds the rules `vhd-util check` applies on top of
//! what a reader needs.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::batmap::{self, BatmapHeader};
use super::bitmap;
use super::footer::{self, FOOTER_SIZE, Footer};
use super::header::{self, HEADER_SIZE, Header, Locator};
use super::locator;
use super::{BLOCK_SIZE, DiskType, Info, MAX_SIZE, ParentRef, SECTOR};
use crate::{Error, Result};

pub(crate) const UNUSED: u32 = u32::MAX;
/// Bytes of a block's sector bitmap (padded to a sector) for every block size we read (≤ 2 MiB).
pub(crate) const BITMAP_BYTES: u64 = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// What a reader needs.
    Read,
    /// `vhd-util check`'s rules as well.
    Strict,
}

#[derive(Debug, Clone)]
pub(crate) struct Batmap {
    pub header: BatmapHeader,
    pub header_offset: u64,
    /// `header.size` sectors.
    pub map: Vec<u8>,
}

#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub path: PathBuf,
    pub file_len: u64,
    pub footer: Footer,
    pub kind: DiskType,
    /// False if the footer at the end is damaged and the copy at offset 0 is used (an interrupted allocation).
    pub trailing_ok: bool,
    /// False if both footers are valid but differ (an interrupted footer update).
    pub copies_match: bool,
    pub header: Option<Header>,
    /// One entry per block of the current size.
    pub bat: Vec<u32>,
    pub block_size: u64,
    pub batmap: Option<Batmap>,
    /// Why a batmap the creator promises could not be used (it is then ignored).
    pub batmap_problem: Option<String>,
    pub parent: Option<ParentRef>,
    /// End of the last metadata structure (header, BAT, batmap, locators).
    pub end_of_metadata: u64,
    /// End of the last allocated block, or of the metadata.
    pub end_of_data: u64,
}

impl Meta {
    pub fn info(&self) -> Info {
        Info {
            uuid: self.footer.uuid,
            disk_type: self.kind,
            virtual_size: self.footer.current_size,
            hidden: self.footer.hidden != 0,
            parent: self.parent.clone(),
            creator: self.footer.creator_app,
            file_size: self.file_len,
            allocated_blocks: self.bat.iter().filter(|&&e| e != UNUSED).count() as u64,
            block_size: self.block_size,
        }
    }

    pub fn batmap_test(&self, block: usize) -> bool {
        self.batmap.as_ref().is_some_and(|b| block < b.map.len() * 8 && bitmap::test(&b.map, block))
    }
}

pub(crate) fn read_exact(file: &File, path: &Path, buf: &mut [u8], offset: u64) -> Result<()> {
    file.read_exact_at(buf, offset).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => Error::corrupt(path, format!("the file ends before offset {offset}")),
        _ => Error::io(path, e),
    })
}

/// Sector-padded length of `bytes` (at least one sector), as blktap's `vhd_bytes_padded`.
pub(crate) fn padded(bytes: u64) -> u64 {
    bytes.div_ceil(SECTOR).max(1) * SECTOR
}

fn end(offset: u64, len: u64) -> Option<u64> {
    offset.checked_add(len)
}

/// Reads and validates the metadata of the open `file` at `path`.
pub(crate) fn read(file: &File, path: &Path, mode: Mode) -> Result<Meta> {
    let corrupt = |what: String| Error::corrupt(path, what);
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if file_len < FOOTER_SIZE as u64 {
        return Err(corrupt(format!("the file is {file_len} bytes, shorter than a VHD footer (512)")));
    }

    // Footers: the one at the end, else the copy at offset 0 (dynamic and differencing disks).
    let mut raw = [0u8; FOOTER_SIZE];
    read_exact(file, path, &mut raw, file_len - FOOTER_SIZE as u64)?;
    let trailing = Footer::decode(&raw);
    let mut copy_raw = [0u8; FOOTER_SIZE];
    read_exact(file, path, &mut copy_raw, 0)?;
    let copy = Footer::decode(&copy_raw);
    let (footer, trailing_ok) = match (trailing, copy) {
        (Ok(f), _) => (f, true),
        (Err(why), Ok(c)) if c.disk_type != footer::TYPE_FIXED && file_len >= 3 * FOOTER_SIZE as u64 => {
            if mode == Mode::Strict {
                return Err(corrupt(format!("the footer at the end is invalid ({why}); the copy at 0 is valid")));
            }
            (c, false)
        }
        (Err(why), _) => return Err(corrupt(format!("no valid footer: {why}"))),
    };
    let kind = footer.kind().ok_or_else(|| corrupt(format!("unknown disk type {}", footer.disk_type)))?;
    let copies_match = kind == DiskType::Fixed || !trailing_ok || raw == copy_raw;
    // Blocks and locators must end before the footer, unless it is missing (then they may reach the end).
    let limit = if trailing_ok { file_len - FOOTER_SIZE as u64 } else { file_len };

    check_footer(&footer, mode).map_err(corrupt)?;
    if mode == Mode::Strict && kind != DiskType::Fixed {
        match Footer::decode(&copy_raw) {
            Err(why) => return Err(corrupt(format!("the footer copy at offset 0 is invalid ({why})"))),
            Ok(_) if !copies_match => return Err(corrupt("the footer and its copy at offset 0 differ".into())),
            Ok(_) => {}
        }
    }
    let size = footer.current_size;

    if kind == DiskType::Fixed {
        if size > file_len - FOOTER_SIZE as u64 {
            return Err(corrupt(format!("fixed disk of {size} bytes in a file of {file_len}")));
        }
        return Ok(Meta {
            path: path.to_owned(),
            file_len,
            footer,
            kind,
            trailing_ok,
            copies_match,
            header: None,
            bat: Vec::new(),
            block_size: 0,
            batmap: None,
            batmap_problem: None,
            parent: None,
            end_of_metadata: 0,
            end_of_data: size,
        });
    }

    // Dynamic header.
    let hoff = footer.data_offset;
    check_header_offset(hoff, limit, "the file").map_err(corrupt)?;
    let mut hraw = [0u8; HEADER_SIZE];
    read_exact(file, path, &mut hraw, hoff)?;
    let header = Header::decode(&hraw).map_err(|w| corrupt(w.into()))?;
    let lay = check_header(&header, hoff, size, limit, BLOCK_SIZE, "the file").map_err(corrupt)?;
    let Layout { block_size: bs, blocks, table_offset: toff, bat_bytes, header_end } = lay;
    let mut bat_raw = vec![0u8; (blocks * 4) as usize];
    read_exact(file, path, &mut bat_raw, toff)?;
    let bat = decode_bat(&bat_raw);
    drop(bat_raw);
    let mut eom = header_end.max(toff + bat_bytes);
    // Structures we may rewrite in place: locators must not overlap them.
    let mut regions = vec![(0, FOOTER_SIZE as u64), (hoff, header_end), (toff, toff + bat_bytes)];

    // Batmap: trusted only when valid; otherwise ignored (it is an accelerator).
    let mut batmap = None;
    let mut batmap_problem = None;
    if footer.has_batmap() && bs == BLOCK_SIZE {
        match read_batmap(file, path, &footer, &header, limit) {
            Ok(b) => {
                let map_end = b.header.offset + u64::from(b.header.size) * SECTOR;
                eom = eom.max(b.header_offset + SECTOR).max(map_end);
                regions.push((b.header_offset, b.header_offset + SECTOR));
                regions.push((b.header.offset, map_end));
                batmap = Some(b);
            }
            Err(why) => {
                if mode == Mode::Strict {
                    return Err(corrupt(format!("batmap is invalid: {why}")));
                }
                batmap_problem = Some(why);
            }
        }
    }

    // Locators.
    let mut names: Vec<(u32, std::result::Result<String, String>)> = Vec::new();
    let mut seen_codes = Vec::new();
    for (i, l) in header.locators.iter().enumerate() {
        match l.code {
            header::PLAT_NONE => {
                if mode == Mode::Strict && *l != Locator::default() {
                    return Err(corrupt(format!("parent locator {i} is empty but has non-zero fields")));
                }
                continue;
            }
            header::PLAT_WI2R
            | header::PLAT_WI2K
            | header::PLAT_W2RU
            | header::PLAT_W2KU
            | header::PLAT_MAC
            | header::PLAT_MACX => {}
            code => return Err(corrupt(format!("parent locator {i} has an unknown platform code {code:#x}"))),
        }
        if mode == Mode::Strict && seen_codes.contains(&l.code) {
            return Err(corrupt(format!("parent locator {i} repeats platform code {:#x}", l.code)));
        }
        seen_codes.push(l.code);
        let space = l.space_bytes().filter(|&s| s > 0);
        let Some(space) = space else {
            return Err(corrupt(format!("parent locator {i} has an invalid data space {}", l.data_space)));
        };
        if l.data_offset == 0 || end(l.data_offset, space).is_none_or(|e| e > limit) {
            return Err(corrupt(format!(
                "parent locator {i} ({} bytes at offset {}) is outside the file",
                space, l.data_offset
            )));
        }
        if regions.iter().any(|&(a, b)| l.data_offset < b && a < l.data_offset + space) {
            return Err(corrupt(format!("parent locator {i} overlaps the footer copy, header, BAT or batmap")));
        }
        if l.data_len == 0 || u64::from(l.data_len) > space {
            return Err(corrupt(format!("parent locator {i} has an invalid length {}", l.data_len)));
        }
        if mode == Mode::Strict && l.reserved != 0 {
            return Err(corrupt(format!("parent locator {i} has non-zero reserved bits")));
        }
        eom = eom.max(l.data_offset + space);
        if kind == DiskType::Differencing && locator::CODES.contains(&l.code) {
            if u64::from(l.data_len) > locator::MAX_PAYLOAD {
                return Err(corrupt(format!("parent locator {i} is {} bytes long", l.data_len)));
            }
            let mut payload = vec![0u8; l.data_len as usize];
            read_exact(file, path, &mut payload, l.data_offset)?;
            let name = match locator::decode_path(l.code, &payload) {
                None => Err(format!("parent locator {i} cannot be decoded")),
                Some(p) => locator::relative_name(&p).map(str::to_owned),
            };
            names.push((l.code, name));
        }
    }

    // Parent.
    let parent = if kind == DiskType::Differencing {
        if header.parent_uuid.is_nil() {
            return Err(corrupt("differencing disk without a parent UUID (raw parents are not supported)".into()));
        }
        let mut chosen: Option<String> = None;
        for (_, n) in &names {
            match n {
                Err(why) => return Err(corrupt(why.clone())),
                Ok(n) => match &chosen {
                    Some(c) if c != n => {
                        return Err(corrupt(format!("parent locators disagree ({c:?} and {n:?})")));
                    }
                    _ => chosen = Some(n.clone()),
                },
            }
        }
        let Some(file_name) = chosen else {
            return Err(corrupt("differencing disk without a MacX, W2ku or W2ru parent locator".into()));
        };
        if mode == Mode::Strict {
            match header.parent_name() {
                None => return Err(corrupt("the header's parent name is not valid UTF-16".into())),
                Some(n) if n != file_name => {
                    return Err(corrupt(format!("the header names parent {n:?}, the locators {file_name:?}")));
                }
                Some(_) => {}
            }
            let now = footer::vhd_time(std::time::SystemTime::now());
            if u64::from(header.parent_timestamp) > u64::from(now) + 1800 {
                return Err(corrupt("the parent's time stamp is in the future".into()));
            }
        }
        Some(ParentRef { uuid: header.parent_uuid, file_name })
    } else {
        if mode == Mode::Strict
            && (!header.parent_uuid.is_nil()
                || header.parent_timestamp != 0
                || header.parent_name.iter().any(|&b| b != 0)
                || header.locators.iter().any(|l| *l != Locator::default()))
        {
            return Err(corrupt("a dynamic disk with parent fields set".into()));
        }
        None
    };
    if mode == Mode::Strict && (header.reserved1 != 0 || header.reserved2_dirty) {
        return Err(corrupt("the header's reserved bits are not zero".into()));
    }

    // BAT entries: inside the file, after the metadata, not overlapping one another.
    let span = bitmap_bytes(bs) + bs;
    let used = check_bat(&bat, span, &[(0, eom)], limit, "the file").map_err(corrupt)?;
    let end_of_data = used.last().map_or(eom, |&(sector, _)| u64::from(sector) * SECTOR + span).max(eom);
    drop(used);

    // A batmap bit for an unallocated block would make a reader skip to nothing: refuse in Strict, drop otherwise.
    if let Some(b) = batmap.as_mut() {
        for (i, &e) in bat.iter().enumerate() {
            if e == UNUSED && i < b.map.len() * 8 && bitmap::test(&b.map, i) {
                if mode == Mode::Strict {
                    return Err(corrupt(format!("the batmap marks unallocated block {i} full")));
                }
                bitmap::clear(&mut b.map, i);
            }
        }
    }

    Ok(Meta {
        path: path.to_owned(),
        file_len,
        footer,
        kind,
        trailing_ok,
        copies_match,
        header: Some(header),
        bat,
        block_size: bs,
        batmap,
        batmap_problem,
        parent,
        end_of_metadata: eom,
        end_of_data,
    })
}

/// Bytes of the sector bitmap in front of each block of `block_size` bytes (one bit per sector, padded to a
/// sector): 512 for every block size up to 2 MiB.
pub(crate) fn bitmap_bytes(block_size: u64) -> u64 {
    padded(block_size / SECTOR / 8)
}

/// Where a dynamic header and its BAT are, once [`check_header`] has validated them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    pub block_size: u64,
    /// Blocks of the disk's size (BAT entries in use; the BAT may have more).
    pub blocks: u64,
    pub table_offset: u64,
    /// The BAT's whole extent (all its entries), sector-padded.
    pub bat_bytes: u64,
    pub header_end: u64,
}

/// Checks the footer's data offset (where the dynamic header is) against `limit`, the end of `container`.
pub(crate) fn check_header_offset(hoff: u64, limit: u64, container: &str) -> std::result::Result<(), String> {
    if hoff < FOOTER_SIZE as u64
        || !hoff.is_multiple_of(SECTOR)
        || end(hoff, HEADER_SIZE as u64).is_none_or(|e| e > limit)
    {
        return Err(format!("header offset {hoff} is outside {container}"));
    }
    Ok(())
}

/// Validates a dynamic header at `hoff` for a disk of `size` bytes: its fixed fields, its block size (a power of
/// two from 512 up to `max_block`), and a BAT that covers the size, sits after the footer copy, does not overlap
/// the header and ends by `limit`. `container` names what `limit` is the end of, for messages.
pub(crate) fn check_header(
    header: &Header,
    hoff: u64,
    size: u64,
    limit: u64,
    max_block: u64,
    container: &str,
) -> std::result::Result<Layout, String> {
    if header.data_offset != u64::MAX {
        return Err("the header's data offset is not all ones".into());
    }
    if header.version != header::HEADER_VERSION {
        return Err(format!("unknown header version {:#x}", header.version));
    }
    let bs = u64::from(header.block_size);
    if !bs.is_power_of_two() || !(SECTOR..=max_block).contains(&bs) {
        return Err(format!(
            "block size {bs} is not supported (a power of two up to {} MiB; blktap uses 2 MiB)",
            max_block >> 20
        ));
    }
    let blocks = size.div_ceil(bs);
    let max = u64::from(header.max_bat_entries);
    if max < blocks {
        return Err(format!("the BAT has {max} entries, fewer than the {blocks} blocks of the disk's size"));
    }
    let toff = header.table_offset;
    let bat_bytes = padded(max * 4);
    let header_end = hoff + HEADER_SIZE as u64;
    if !toff.is_multiple_of(SECTOR)
        || toff < FOOTER_SIZE as u64
        || (toff < header_end && hoff < toff + bat_bytes)
        || end(toff, bat_bytes).is_none_or(|e| e > limit)
    {
        return Err(format!("BAT of {max} entries at offset {toff} does not fit in {container}"));
    }
    Ok(Layout { block_size: bs, blocks, table_offset: toff, bat_bytes, header_end })
}

/// The BAT's big-endian u32 entries.
pub(crate) fn decode_bat(raw: &[u8]) -> Vec<u32> {
    raw.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// Checks the allocated BAT entries (blocks of `span` bytes, bitmap included): each inside `limit` (the end of
/// `container`), outside the `metadata` byte ranges, and not overlapping one another. Returns them as
/// `(sector, block)`, sorted by sector.
pub(crate) fn check_bat(
    bat: &[u32],
    span: u64,
    metadata: &[(u64, u64)],
    limit: u64,
    container: &str,
) -> std::result::Result<Vec<(u32, u32)>, String> {
    let mut used: Vec<(u32, u32)> = Vec::with_capacity(bat.iter().filter(|&&e| e != UNUSED).count());
    for (i, &e) in bat.iter().enumerate() {
        if e == UNUSED {
            continue;
        }
        let off = u64::from(e) * SECTOR;
        if let Some(&(a, b)) = metadata.iter().find(|&&(a, b)| off < b && a < off + span) {
            return Err(format!("BAT entry {i} (offset {off}) points into the metadata ({a}..{b})"));
        }
        if off + span > limit {
            return Err(format!("BAT entry {i} (offset {off}) points past the end of {container}"));
        }
        // The BAT has at most u32::MAX entries.
        used.push((e, i as u32));
    }
    used.sort_unstable();
    for w in used.windows(2) {
        if u64::from(w[0].0) * SECTOR + span > u64::from(w[1].0) * SECTOR {
            return Err(format!("BAT entries {} and {} overlap", w[0].1, w[1].1));
        }
    }
    Ok(used)
}

pub(crate) fn check_footer(f: &Footer, mode: Mode) -> std::result::Result<(), String> {
    if f.features & footer::FEATURES_RESERVED == 0 {
        return Err("the footer's reserved feature bit is clear".into());
    }
    if f.version != footer::FILE_FORMAT_VERSION {
        return Err(format!("unknown file format version {:#x}", f.version));
    }
    if f.current_size > MAX_SIZE {
        return Err(format!("virtual size {} is larger than the maximum {MAX_SIZE}", f.current_size));
    }
    if !f.current_size.is_multiple_of(SECTOR) {
        return Err(format!("virtual size {} is not a multiple of 512", f.current_size));
    }
    if mode == Mode::Strict {
        if f.features & !(footer::FEATURES_RESERVED | footer::FEATURES_TEMPORARY) != 0 {
            return Err("the footer has unknown feature bits".into());
        }
        if f.kind() == Some(DiskType::Fixed) && f.data_offset != u64::MAX {
            return Err("a fixed disk's data offset is not all ones".into());
        }
        let now = footer::vhd_time(std::time::SystemTime::now());
        if u64::from(f.timestamp) > u64::from(now) + 1800 {
            return Err("the creation time is in the future".into());
        }
        if f.is_tap() && f.creator_version > footer::TAP_VERSION {
            return Err("unsupported tap creator version".into());
        }
        if footer::chs(f.current_size) < f.geometry {
            return Err("the geometry is larger than the size".into());
        }
        if f.saved_state > 1 {
            return Err("invalid saved state".into());
        }
        if f.hidden > 1 {
            return Err("invalid hidden flag".into());
        }
        if f.reserved_dirty {
            return Err("the footer's reserved bits are not zero".into());
        }
        if f.uuid.is_nil() {
            return Err("the UUID is nil".into());
        }
    }
    Ok(())
}

fn read_batmap(
    file: &File,
    path: &Path,
    footer: &Footer,
    header: &Header,
    limit: u64,
) -> std::result::Result<Batmap, String> {
    let header_offset = header.table_offset + padded(u64::from(header.max_bat_entries) * 4);
    if header_offset + SECTOR > limit {
        return Err("the batmap header is past the end of the file".into());
    }
    let mut raw = [0u8; batmap::BATMAP_HEADER_SIZE];
    read_exact(file, path, &mut raw, header_offset).map_err(|e| e.to_string())?;
    let h = BatmapHeader::decode(&raw)?;
    if h.size == 0 {
        return Err("the batmap has size zero".into());
    }
    if (u64::from(h.size) << 12) < u64::from(header.max_bat_entries) {
        return Err("the batmap is smaller than the BAT".into());
    }
    let bytes = u64::from(h.size) * SECTOR;
    if h.offset < header_offset + SECTOR || h.offset % SECTOR != 0 || end(h.offset, bytes).is_none_or(|e| e > limit) {
        return Err("the batmap is outside the file".into());
    }
    let summed = batmap::checksummed_len(footer.current_size);
    if summed > bytes {
        return Err("the batmap is smaller than its checksum range".into());
    }
    let mut map = vec![0u8; bytes as usize];
    read_exact(file, path, &mut map, h.offset).map_err(|e| e.to_string())?;
    if batmap::checksum(&map[..summed as usize], h.version) != h.checksum {
        return Err("bad batmap checksum".into());
    }
    Ok(Batmap { header: h, header_offset, map })
}
