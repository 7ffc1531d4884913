//! Creating dynamic and differencing files in `vhd-util`'s layout:
//!
//! ```text
//! 0      footer copy (512)
//! 512    dynamic header (1024)
//! 1536   BAT: one u32 per 2 MiB block, 0xFFFFFFFF, padded with zeros to a sector
//!        batmap header (512), then the batmap (1 bit per block, padded to a sector)
//!        differencing only: MacX, W2ku, W2ru locators, each padded to a sector
//!        footer (512)
//! ```
//!
//! A 4 GiB dynamic disk is 11 264 bytes (batmap at 10 240), as `vhd-util create -s 4096` makes it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use uuid::Uuid;

use super::batmap::{self, BatmapHeader};
use super::footer::{FOOTER_SIZE, Footer, round_size, vhd_time};
use super::header::{HEADER_SIZE, Header, Locator};
use super::locator;
use super::meta::{self, Mode, padded};
use super::{BLOCK_SIZE, Chain, DiskType, Info, MAX_CHAIN_DEPTH, MAX_SIZE, SECTOR};
use crate::{Error, Result};

pub(crate) const TABLE_OFFSET: u64 = (FOOTER_SIZE + HEADER_SIZE) as u64;

/// Where the structures after the BAT go for a BAT of `entries` at `table_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub table_offset: u64,
    pub bat_bytes: u64,
    pub batmap_header: u64,
    pub batmap: u64,
    pub batmap_sectors: u64,
    /// First byte after the batmap: where locators go.
    pub end: u64,
}

impl Layout {
    pub fn new(table_offset: u64, entries: u64) -> Layout {
        let bat_bytes = padded(entries * 4);
        let batmap_header = table_offset + bat_bytes;
        let batmap = batmap_header + SECTOR;
        let batmap_sectors = batmap::map_sectors(entries);
        Layout { table_offset, bat_bytes, batmap_header, batmap, batmap_sectors, end: batmap + batmap_sectors * SECTOR }
    }
}

/// The BAT as bytes: `entries` big-endian, padded with zeros to a sector (as blktap writes it).
pub(crate) fn bat_bytes(entries: &[u32], padded_len: u64) -> Vec<u8> {
    let mut out = vec![0u8; padded_len as usize];
    for (i, e) in entries.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&e.to_be_bytes());
    }
    out
}

/// A batmap header for `map`, with its checksum for a disk of `current_size`.
/// A batmap header for `map` at `offset`; the marker and keyhash of `keep` (the header being replaced) go on.
pub(crate) fn batmap_header(offset: u64, map: &[u8], current_size: u64, keep: Option<&BatmapHeader>) -> BatmapHeader {
    let summed = (batmap::checksummed_len(current_size) as usize).min(map.len());
    BatmapHeader {
        offset,
        size: (map.len() as u64 / SECTOR) as u32,
        version: batmap::BATMAP_VERSION,
        checksum: batmap::checksum(&map[..summed], batmap::BATMAP_VERSION),
        marker: keep.map_or(0, |h| h.marker),
        keyhash: keep.map_or([0; batmap::KEYHASH_SIZE], |h| h.keyhash),
    }
}

/// Fsyncs the directory holding `path`, so a created or renamed entry is durable.
pub(crate) fn sync_dir(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))
}

fn check_size(virtual_size: u64) -> Result<u64> {
    let size = round_size(virtual_size).filter(|&s| s <= MAX_SIZE);
    match size {
        Some(s) if s > 0 => Ok(s),
        _ => Err(Error::Invalid(format!("virtual size {virtual_size} is out of range (1 byte to {MAX_SIZE})"))),
    }
}

/// The parent a new child or a reparented child points at: its name, footer and mtime, after checking that it
/// sits in `child`'s directory.
pub(crate) struct NewParent {
    pub name: String,
    pub uuid: Uuid,
    pub size: u64,
    pub mtime: u32,
    /// What a child inherits of the parent's batmap header (its keyhash).
    pub keyhash: [u8; batmap::KEYHASH_SIZE],
}

pub(crate) fn new_parent(child: &Path, parent: &Path) -> Result<NewParent> {
    let name = parent.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if !locator::valid_name(name) {
        return Err(Error::Invalid(format!("{} cannot be named by a parent locator", parent.display())));
    }
    let dir_of = |p: &Path| -> Result<std::path::PathBuf> {
        let d = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        d.canonicalize().map_err(|e| Error::io(d, e))
    };
    if dir_of(child)? != dir_of(parent)? {
        return Err(Error::Invalid(format!(
            "parent {} is not in the directory of {}",
            parent.display(),
            child.display()
        )));
    }
    let lmeta = std::fs::symlink_metadata(parent).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound(parent.display().to_string()),
        _ => Error::io(parent, e),
    })?;
    if !lmeta.is_file() {
        return Err(Error::Invalid(format!("parent {} is not a regular file", parent.display())));
    }
    let file = File::open(parent).map_err(|e| Error::io(parent, e))?;
    let m = meta::read(&file, parent, Mode::Read)?;
    let mtime = vhd_time(lmeta.modified().map_err(|e| Error::io(parent, e))?);
    let keyhash = m.batmap.as_ref().map_or([0; batmap::KEYHASH_SIZE], |b| b.header.inherited_keyhash());
    Ok(NewParent { name: name.to_owned(), uuid: m.footer.uuid, size: m.footer.current_size, mtime, keyhash })
}

/// Builds a complete new file: metadata for `footer.current_size`, plus the locators naming `parent`.
fn image(footer: &Footer, parent: Option<&NewParent>) -> Result<Vec<u8>> {
    let entries = footer.current_size / BLOCK_SIZE;
    let lay = Layout::new(TABLE_OFFSET, entries);
    let mut header = Header::new(TABLE_OFFSET, entries as u32, BLOCK_SIZE as u32);
    let mut payloads = Vec::new();
    let mut at = lay.end;
    if let Some(p) = parent {
        header.parent_uuid = p.uuid;
        header.parent_timestamp = p.mtime;
        header
            .set_parent_name(&p.name)
            .ok_or_else(|| Error::Invalid(format!("parent name {:?} is too long", p.name)))?;
        for (i, code) in locator::CODES.into_iter().enumerate() {
            let payload = locator::encode(code, &p.name);
            let space = padded(payload.len() as u64);
            header.locators[i] = Locator {
                code,
                data_space: space as u32,
                data_len: payload.len() as u32,
                reserved: 0,
                data_offset: at,
            };
            payloads.push((at, payload));
            at += space;
        }
    }
    let mut out = vec![0u8; (at + FOOTER_SIZE as u64) as usize];
    let f = footer.encode();
    out[..FOOTER_SIZE].copy_from_slice(&f);
    out[FOOTER_SIZE..FOOTER_SIZE + HEADER_SIZE].copy_from_slice(&header.encode());
    let bat = bat_bytes(&vec![meta::UNUSED; entries as usize], lay.bat_bytes);
    out[lay.table_offset as usize..(lay.table_offset + lay.bat_bytes) as usize].copy_from_slice(&bat);
    let map = vec![0u8; (lay.batmap_sectors * SECTOR) as usize];
    let mut bh = batmap_header(lay.batmap, &map, footer.current_size, None);
    if let Some(p) = parent {
        bh.keyhash = p.keyhash;
    }
    out[lay.batmap_header as usize..lay.batmap as usize].copy_from_slice(&bh.encode());
    for (off, p) in payloads {
        out[off as usize..off as usize + p.len()].copy_from_slice(&p);
    }
    out[at as usize..].copy_from_slice(&f);
    Ok(out)
}

/// Writes a new file atomically: the bytes go to a temporary name beside `path`, are fsynced, and are then
/// hard-linked as `path` (which fails if it exists) before the temporary name is removed and the directory synced.
/// A crash leaves either no `path` or the complete file.
fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    if path.exists() {
        return Err(Error::Invalid(format!("{} already exists", path.display())));
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("vhd");
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", Uuid::new_v4()));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()));
    let linked = written.map_err(|e| Error::io(&tmp, e)).and_then(|()| {
        std::fs::hard_link(&tmp, path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::Invalid(format!("{} already exists", path.display())),
            _ => Error::io(path, e),
        })
    });
    let _ = std::fs::remove_file(&tmp);
    linked?;
    sync_dir(path)
}

pub(crate) fn create_dynamic(path: &Path, uuid: Uuid, virtual_size: u64) -> Result<Info> {
    let size = check_size(virtual_size)?;
    let footer = Footer::new(DiskType::Dynamic, size, uuid);
    write_new(path, &image(&footer, None)?)?;
    super::read_info(path)
}

pub(crate) fn create_child(path: &Path, uuid: Uuid, parent: &Path) -> Result<Info> {
    let p = new_parent(path, parent)?;
    let depth = Chain::open(parent, false)?.depth();
    if depth >= MAX_CHAIN_DEPTH {
        return Err(Error::Invalid(format!(
            "{} already heads a chain of {depth} files (at most {MAX_CHAIN_DEPTH})",
            parent.display()
        )));
    }
    let size = check_size(p.size)?;
    let footer = Footer::new(DiskType::Differencing, size, uuid);
    write_new(path, &image(&footer, Some(&p))?)?;
    super::read_info(path)
}

pub(crate) fn create_delta(
    path: &Path,
    uuid: Uuid,
    virtual_size: u64,
    parent_uuid: Uuid,
    parent_name: &str,
) -> Result<Info> {
    if !locator::valid_name(parent_name) {
        return Err(Error::Invalid(format!("{parent_name:?} cannot be named by a parent locator")));
    }
    let size = check_size(virtual_size)?;
    let footer = Footer::new(DiskType::Differencing, size, uuid);
    let p = NewParent {
        name: parent_name.to_owned(),
        uuid: parent_uuid,
        size,
        mtime: 0,
        keyhash: [0; batmap::KEYHASH_SIZE],
    };
    write_new(path, &image(&footer, Some(&p))?)?;
    super::read_info(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_of_4_gib_matches_vhd_util() {
        let l = Layout::new(TABLE_OFFSET, 2048);
        assert_eq!(l.table_offset, 1536);
        assert_eq!(l.bat_bytes, 8192);
        assert_eq!(l.batmap_header, 9728);
        assert_eq!(l.batmap, 10240);
        assert_eq!(l.batmap_sectors, 1);
        // Then the footer: an 11 264-byte file.
        assert_eq!(l.end + 512, 11264);
    }

    #[test]
    fn image_of_a_small_disk() {
        let f = Footer::new(DiskType::Dynamic, 2 << 20, Uuid::from_u128(1));
        let img = image(&f, None).unwrap();
        // Footer copy, header, one-sector BAT, batmap header, one-sector batmap, footer.
        assert_eq!(img.len(), 512 + 1024 + 512 + 512 + 512 + 512);
        assert_eq!(&img[1536..1540], &[0xff; 4]);
        assert_eq!(&img[1540..2048], &[0u8; 508][..]);
        assert_eq!(&img[2048..2056], b"tdbatmap");
        assert_eq!(&img[..512], &img[img.len() - 512..]);
    }

    #[test]
    fn sizes_are_checked() {
        assert!(check_size(0).is_err());
        assert!(check_size(MAX_SIZE + 1).is_err());
        assert_eq!(check_size(MAX_SIZE).unwrap(), MAX_SIZE);
        assert_eq!(check_size(1).unwrap(), 2 << 20);
    }
}
