//! Operations on closed files (check, hidden flag, reparenting, resize, coalesce) and whole-chain helpers
//! (allocated ranges, copy, zeroing).
//!
//! Each operation orders its writes so that a crash leaves a file that opens: new structures are written where
//! nothing live points, fsynced, and then one small in-place write (a BAT entry, the header, the footers) makes
//! them live.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use super::bitmap;
use super::chain::{self, Inner, open_writable};
use super::create::{self, Layout, bat_bytes, batmap_header};
use super::footer::{FOOTER_SIZE, round_size};
use super::header::PLAT_NONE;
use super::locator;
use super::meta::{self, BITMAP_BYTES, Meta, Mode, UNUSED, padded};
use super::{BLOCK_SIZE, DiskType, Info, MAX_CHAIN_DEPTH, MAX_SIZE, SECTOR};
use crate::{Error, Result};

const COPY_CHUNK: u64 = 1 << 20;

pub(crate) fn read_meta(path: &Path, mode: Mode) -> Result<Meta> {
    let file = File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::NotFound(path.display().to_string()),
        _ => Error::io(path, e),
    })?;
    meta::read(&file, path, mode)
}

pub(crate) fn check(path: &Path) -> Result<Info> {
    let m = read_meta(path, Mode::Strict)?;
    if let Some(p) = &m.parent {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let ppath = dir.join(&p.file_name);
        let pm = read_meta(&ppath, Mode::Read)
            .map_err(|e| Error::corrupt(path, format!("parent {:?} cannot be opened: {e}", p.file_name)))?;
        if pm.footer.uuid != p.uuid {
            return Err(Error::corrupt(
                path,
                format!("parent {:?} has UUID {}, the header expects {}", p.file_name, pm.footer.uuid, p.uuid),
            ));
        }
    }
    Ok(m.info())
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

/// Called after each fsync of a multi-step update (tests snapshot the file there: every such state must open).
type Observer<'a> = &'a mut dyn FnMut();

fn sync(file: &File, path: &Path, observe: &mut Observer<'_>) -> Result<()> {
    file.sync_data().map_err(io_err(path))?;
    observe();
    Ok(())
}

/// Writes `footer` at the end (`at`), syncs, then writes it as the copy at 0 and syncs.
fn write_footers(
    file: &File,
    path: &Path,
    footer: &[u8; FOOTER_SIZE],
    at: u64,
    observe: &mut Observer<'_>,
) -> Result<()> {
    file.write_all_at(footer, at).map_err(io_err(path))?;
    sync(file, path, observe)?;
    file.write_all_at(footer, 0).map_err(io_err(path))?;
    sync(file, path, observe)
}

pub(crate) fn set_hidden(path: &Path, hidden: bool) -> Result<()> {
    let (file, m) = open_writable(path)?;
    let mut f = m.footer.clone();
    f.hidden = u8::from(hidden);
    let mut none: Observer<'_> = &mut || {};
    write_footers(&file, path, &f.encode(), m.file_len - FOOTER_SIZE as u64, &mut none)
}

/// Rewrites the header's parent fields and the locators in place. Not atomic: a crash between the locator and
/// header writes leaves names and UUID disagreeing, which opening reports as corrupt (never a wrong parent);
/// running `set_parent` again repairs it.
pub(crate) fn set_parent(path: &Path, parent: &Path) -> Result<()> {
    let (file, m) = open_writable(path)?;
    if m.kind != DiskType::Differencing {
        return Err(Error::Invalid(format!("{} is not a differencing disk", path.display())));
    }
    let p = create::new_parent(path, parent)?;
    let pchain = Inner::open(parent, false)?;
    let me = file.metadata().map_err(io_err(path))?;
    for l in &pchain.layers {
        let st = l.file.metadata().map_err(io_err(&l.path))?;
        if (st.dev(), st.ino()) == (me.dev(), me.ino()) {
            return Err(Error::Invalid(format!("{} would become its own ancestor", path.display())));
        }
    }
    if pchain.layers.len() >= MAX_CHAIN_DEPTH {
        return Err(Error::Invalid(format!("the chain would be deeper than {MAX_CHAIN_DEPTH} files")));
    }
    drop(pchain);
    let mut header = m.header.clone().expect("dynamic disks have a header");
    header.parent_uuid = p.uuid;
    header.parent_timestamp = p.mtime;
    header.set_parent_name(&p.name).ok_or_else(|| Error::Invalid(format!("parent name {:?} is too long", p.name)))?;
    for l in header.locators.iter_mut().filter(|l| locator::CODES.contains(&l.code)) {
        let payload = locator::encode(l.code, &p.name);
        let space = l.space_bytes().unwrap_or(0);
        if padded(payload.len() as u64) > space {
            return Err(Error::Invalid(format!("parent name {:?} does not fit in the locator space", p.name)));
        }
        let mut block = vec![0u8; space as usize];
        block[..payload.len()].copy_from_slice(&payload);
        file.write_all_at(&block, l.data_offset).map_err(io_err(path))?;
        l.data_len = payload.len() as u32;
    }
    file.sync_data().map_err(io_err(path))?;
    file.write_all_at(&header.encode(), m.footer.data_offset).map_err(io_err(path))?;
    file.sync_data().map_err(io_err(path))
}

pub(crate) fn resize(path: &Path, new_size: u64) -> Result<Info> {
    resize_observed(path, new_size, &mut || {})
}

fn resize_observed(path: &Path, new_size: u64, mut observe: Observer<'_>) -> Result<Info> {
    let obs = &mut observe;
    let new = round_size(new_size)
        .filter(|&s| s <= MAX_SIZE)
        .ok_or_else(|| Error::Invalid(format!("virtual size {new_size} is larger than the maximum {MAX_SIZE}")))?;
    let (file, m) = open_writable(path)?;
    let cur = m.footer.current_size;
    if new < cur {
        return Err(Error::Invalid(format!(
            "{}: shrinking from {cur} to {new} bytes is not supported",
            path.display()
        )));
    }
    if new == cur {
        return Ok(m.info());
    }
    let io = io_err(path);
    let mut header = m.header.clone().expect("dynamic disks have a header");
    let entries = new / BLOCK_SIZE;
    let max = u64::from(header.max_bat_entries);
    let mut footer_at = m.file_len - FOOTER_SIZE as u64;
    let mut map = m.batmap.as_ref().map(|b| (b.header_offset, b.header.offset, b.map.clone()));
    if entries > max {
        let batmap_fits = m.batmap.as_ref().is_none_or(|b| u64::from(b.header.size) * 4096 >= entries);
        if padded(entries * 4) == padded(max * 4) && batmap_fits && m.batmap_problem.is_none() {
            // The new entries fit in the BAT's last sector: fill them, then let the header count them.
            let fill = vec![0xffu8; ((entries - max) * 4) as usize];
            file.write_all_at(&fill, header.table_offset + max * 4).map_err(&io)?;
            sync(&file, path, obs)?;
            header.max_bat_entries = entries as u32;
            file.write_all_at(&header.encode(), m.footer.data_offset).map_err(&io)?;
            sync(&file, path, obs)?;
        } else {
            let (at, new_map) = relocate_metadata(&file, &m, &mut header, entries, obs)?;
            footer_at = at;
            map = new_map;
        }
    }
    // Batmap bits past the old size must be clear before the new size counts them (the checksum is then the
    // same for both sizes).
    if let Some((hoff, off, mut bits)) = map {
        let old_blocks = cur.div_ceil(BLOCK_SIZE) as usize;
        let mut changed = false;
        for i in old_blocks..bits.len() * 8 {
            if bitmap::test(&bits, i) {
                bitmap::clear(&mut bits, i);
                changed = true;
            }
        }
        if changed || m.batmap_problem.is_some() {
            file.write_all_at(&bits, off).map_err(&io)?;
            let keep = m.batmap.as_ref().map(|b| &b.header);
            file.write_all_at(&batmap_header(off, &bits, cur, keep).encode(), hoff).map_err(&io)?;
            sync(&file, path, obs)?;
        }
    }
    let mut f = m.footer.clone();
    f.current_size = new;
    f.geometry = super::footer::chs(new);
    write_footers(&file, path, &f.encode(), footer_at, obs)?;
    drop(file);
    super::read_info(path)
}

/// Moves the BAT, batmap and locators to a new region after the old metadata, sized for `entries`. Blocks that
/// sit where the region goes are first moved to the end of the file, one at a time (copy, footer, fsync, BAT
/// entry, fsync). The region is written and synced before the header switches to it, so the file is valid at
/// every step. Returns the footer's offset and the new batmap.
#[allow(clippy::type_complexity)]
fn relocate_metadata(
    file: &File,
    m: &Meta,
    header: &mut super::header::Header,
    entries: u64,
    obs: &mut Observer<'_>,
) -> Result<(u64, Option<(u64, u64, Vec<u8>)>)> {
    let path = m.path.as_path();
    let io = io_err(path);
    let with_batmap = m.footer.has_batmap();
    let table = m.end_of_metadata.div_ceil(SECTOR) * SECTOR;
    let lay = Layout::new(table, entries);
    let mut at = if with_batmap { lay.end } else { lay.batmap_header };
    let mut payloads = Vec::new();
    for (i, l) in header.locators.iter().enumerate() {
        if l.code == PLAT_NONE {
            continue;
        }
        let space = l.space_bytes().unwrap_or(SECTOR);
        let mut buf = vec![0u8; space as usize];
        meta::read_exact(file, path, &mut buf, l.data_offset)?;
        payloads.push((i, at, buf));
        at += space;
    }
    let new_eom = at;

    // The footer goes past the new region, then blocks in the way move behind it.
    let mut footer_at = m.file_len - FOOTER_SIZE as u64;
    let footer = m.footer.encode();
    if footer_at < new_eom {
        footer_at = new_eom;
        file.write_all_at(&footer, footer_at).map_err(&io)?;
        sync(file, path, obs)?;
    }
    let mut bat = m.bat.clone();
    let mut in_way: Vec<(u64, usize)> = bat
        .iter()
        .enumerate()
        .filter(|&(_, &e)| e != UNUSED && u64::from(e) * SECTOR < new_eom)
        .map(|(i, &e)| (u64::from(e), i))
        .collect();
    in_way.sort_unstable();
    let mut buf = vec![0u8; (BITMAP_BYTES + BLOCK_SIZE) as usize];
    for (e, i) in in_way {
        meta::read_exact(file, path, &mut buf, e * SECTOR)?;
        let data_off = (footer_at + BITMAP_BYTES).div_ceil(4096) * 4096;
        let bm_off = data_off - BITMAP_BYTES;
        let entry = u32::try_from(bm_off / SECTOR)
            .ok()
            .filter(|&x| x != UNUSED)
            .ok_or_else(|| Error::Invalid(format!("{}: the file would pass 2 TiB", path.display())))?;
        file.write_all_at(&vec![0u8; (bm_off - footer_at) as usize], footer_at).map_err(&io)?;
        file.write_all_at(&buf, bm_off).map_err(&io)?;
        footer_at = data_off + BLOCK_SIZE;
        file.write_all_at(&footer, footer_at).map_err(&io)?;
        sync(file, path, obs)?;
        file.write_all_at(&entry.to_be_bytes(), header.table_offset + 4 * i as u64).map_err(&io)?;
        sync(file, path, obs)?;
        bat[i] = entry;
    }

    // The new region, then the header that points at it.
    let mut all = bat;
    all.resize(entries as usize, UNUSED);
    file.write_all_at(&bat_bytes(&all, lay.bat_bytes), table).map_err(&io)?;
    let mut new_map = None;
    if with_batmap {
        let mut bits = vec![0u8; (lay.batmap_sectors * SECTOR) as usize];
        if let Some(b) = &m.batmap {
            let n = b.map.len().min(bits.len());
            bits[..n].copy_from_slice(&b.map[..n]);
        }
        let bh = batmap_header(lay.batmap, &bits, m.footer.current_size, m.batmap.as_ref().map(|b| &b.header));
        file.write_all_at(&bh.encode(), lay.batmap_header).map_err(&io)?;
        file.write_all_at(&bits, lay.batmap).map_err(&io)?;
        new_map = Some((lay.batmap_header, lay.batmap, bits));
    }
    for (i, off, payload) in payloads {
        file.write_all_at(&payload, off).map_err(&io)?;
        header.locators[i].data_offset = off;
    }
    sync(file, path, obs)?;
    header.table_offset = table;
    header.max_bat_entries = entries as u32;
    file.write_all_at(&header.encode(), m.footer.data_offset).map_err(&io)?;
    sync(file, path, obs)?;
    Ok((footer_at, new_map))
}

pub(crate) fn coalesce(child: &Path) -> Result<u64> {
    let src = Inner::open(child, false)?;
    if src.layers.len() < 2 {
        return Err(Error::Invalid(format!("{} has no parent", child.display())));
    }
    let parent_path = src.layers[1].path.clone();
    if src.layers[1].kind == DiskType::Fixed {
        return Err(Error::Invalid(format!("{}: cannot coalesce into a fixed VHD", child.display())));
    }
    if src.layers[1].size < src.size {
        resize(&parent_path, src.size)?;
    }
    let dst = Inner::open(&parent_path, true)?;
    let layer = &src.layers[0];
    let bs = layer.block_size;
    let mut buf = vec![0u8; bs as usize];
    let mut copied = 0u64;
    let cio = io_err(child);
    for block in 0..layer.bat.len() {
        let e = layer.entry(block);
        if e == UNUSED {
            continue;
        }
        let bits =
            if layer.is_full(block) { [0xff; bitmap::BITMAP_SIZE] } else { layer.read_bitmap(e).map_err(&cio)? };
        let data = u64::from(e) * SECTOR + BITMAP_BYTES;
        let base = block as u64 * bs;
        let mut s = 0;
        while s < layer.spb {
            let (set, n) = bitmap::run(&bits, s, layer.spb);
            let start = base + s as u64 * SECTOR;
            let len = (n as u64 * SECTOR).min(src.size.saturating_sub(start));
            if set && len > 0 {
                let piece = &mut buf[..len as usize];
                layer.file.read_exact_at(piece, data + s as u64 * SECTOR).map_err(&cio)?;
                dst.write(piece, start).map_err(io_err(&parent_path))?;
                copied += len;
            }
            s += n;
        }
    }
    dst.flush().map_err(io_err(&parent_path))?;
    Ok(copied)
}

pub(crate) fn allocated_ranges(c: &Inner) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut off = 0;
    while off < c.size {
        let len = BLOCK_SIZE.min(c.size - off);
        if c.any_allocated(off, len) {
            match out.last_mut() {
                Some((s, l)) if *s + *l == off => *l += len,
                _ => out.push((off, len)),
            }
        }
        off += len;
    }
    out
}

/// `a` minus `b`, both sorted and merged.
fn subtract(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(s, l) in a {
        let mut cur = s;
        let end = s + l;
        for &(bs, bl) in b {
            let be = bs + bl;
            if be <= cur || bs >= end {
                continue;
            }
            if bs > cur {
                out.push((cur, bs - cur));
            }
            cur = cur.max(be);
        }
        if cur < end {
            out.push((cur, end - cur));
        }
    }
    out
}

pub(crate) fn copy_into(src: &Inner, dst: &Inner) -> Result<u64> {
    if !dst.writable() {
        return Err(Error::Invalid("the destination chain is read-only".into()));
    }
    if dst.size < src.size {
        return Err(Error::Invalid(format!(
            "the destination ({} bytes) is smaller than the source ({} bytes)",
            dst.size, src.size
        )));
    }
    let dpath = dst.layers[0].path.clone();
    let sranges = allocated_ranges(src);
    let stale = subtract(&allocated_ranges(dst), &sranges);
    let mut buf = vec![0u8; COPY_CHUNK as usize];
    let mut written = 0u64;
    for (start, len) in sranges {
        let mut pos = start;
        while pos < start + len {
            let n = COPY_CHUNK.min(start + len - pos) as usize;
            let chunk = &mut buf[..n];
            src.read(chunk, pos).map_err(io_err(&src.layers[0].path))?;
            if dst.any_allocated(pos, n as u64) {
                dst.write(chunk, pos).map_err(io_err(&dpath))?;
                written += n as u64;
            } else {
                // Skip all-zero sectors: the destination already reads zeros there.
                let mut s = 0;
                while s < n {
                    let zero = is_zero(&chunk[s..(s + SECTOR as usize).min(n)]);
                    let mut e = s;
                    while e < n && is_zero(&chunk[e..(e + SECTOR as usize).min(n)]) == zero {
                        e += SECTOR as usize;
                    }
                    let e = e.min(n);
                    if !zero {
                        dst.write(&chunk[s..e], pos + s as u64).map_err(io_err(&dpath))?;
                        written += (e - s) as u64;
                    }
                    s = e;
                }
            }
            pos += n as u64;
        }
    }
    for (start, len) in stale {
        write_zeroes(dst, start, len).map_err(io_err(&dpath))?;
        written += len;
    }
    dst.flush().map_err(io_err(&dpath))?;
    Ok(written)
}

fn is_zero(b: &[u8]) -> bool {
    let chunks = b.chunks_exact(16);
    let tail = chunks.remainder();
    let acc = chunks.fold(0u128, |acc, c| acc | u128::from_ne_bytes(c.try_into().unwrap_or([0; 16])));
    acc == 0 && tail.iter().all(|&x| x == 0)
}

pub(crate) fn write_zeroes(c: &Inner, offset: u64, len: u64) -> io::Result<()> {
    chain::check_range(c.size, offset, usize::try_from(len).unwrap_or(usize::MAX))?;
    if c.layers.len() == 1 && c.writable() {
        // No parent: whole sectors are cleared and punched; partial ones are written.
        let start = offset.div_ceil(SECTOR) * SECTOR;
        let end = (offset + len) / SECTOR * SECTOR;
        if start >= end {
            return c.write(&vec![0u8; len as usize], offset);
        }
        c.write(&vec![0u8; (start - offset) as usize], offset)?;
        c.clear_range(start, end - start)?;
        return c.write(&vec![0u8; (offset + len - end) as usize], end);
    }
    let zeros = vec![0u8; COPY_CHUNK.min(len) as usize];
    let mut pos = offset;
    let end = offset + len;
    while pos < end {
        let n = (BLOCK_SIZE - pos % BLOCK_SIZE).min(end - pos);
        if c.any_allocated(pos, n) {
            let mut done = 0;
            while done < n {
                let k = (n - done).min(zeros.len() as u64);
                c.write(&zeros[..k as usize], pos + done)?;
                done += k;
            }
        }
        pos += n;
    }
    Ok(())
}

/// The layers of `c` that `other` does not share (compared by device and inode).
fn own_layers<'a>(c: &'a Inner, other: &Inner) -> Vec<&'a chain::Layer> {
    let id = |l: &chain::Layer| l.file.metadata().map(|m| (m.dev(), m.ino())).ok();
    let theirs: Vec<_> = other.layers.iter().filter_map(id).collect();
    c.layers.iter().filter(|l| id(l).is_none_or(|i| !theirs.contains(&i))).collect()
}

/// True if `l` holds data in `[offset, offset + len)`.
fn layer_allocated(l: &chain::Layer, offset: u64, len: u64) -> bool {
    if offset >= l.size {
        return false;
    }
    if l.kind == DiskType::Fixed {
        return true;
    }
    let end = (offset + len).min(l.size);
    (offset / l.block_size..end.div_ceil(l.block_size)).any(|b| l.entry(b as usize) != UNUSED)
}

pub(crate) fn write_delta(src: &Inner, base: &Inner, dst: &Inner) -> Result<u64> {
    if !dst.writable() {
        return Err(Error::Invalid("the destination is read-only".into()));
    }
    if dst.size < src.size {
        return Err(Error::Invalid(format!(
            "the delta ({} bytes) is smaller than the disk ({} bytes)",
            dst.size, src.size
        )));
    }
    let dpath = dst.layers[0].path.clone();
    let mine = own_layers(src, base);
    let theirs = own_layers(base, src);
    let mut a = vec![0u8; BLOCK_SIZE as usize];
    let mut b = vec![0u8; BLOCK_SIZE as usize];
    let mut written = 0u64;
    let mut off = 0;
    while off < src.size {
        let len = BLOCK_SIZE.min(src.size - off);
        let n = len as usize;
        if mine.iter().chain(&theirs).any(|l| layer_allocated(l, off, len)) {
            src.read(&mut a[..n], off).map_err(io_err(&src.layers[0].path))?;
            let in_base = base.size.saturating_sub(off).min(len) as usize;
            b[..n].fill(0);
            if in_base > 0 {
                base.read(&mut b[..in_base], off).map_err(io_err(&base.layers[0].path))?;
            }
            if a[..n] != b[..n] {
                dst.write(&a[..n], off).map_err(io_err(&dpath))?;
                written += len;
            }
        }
        off += len;
    }
    dst.flush().map_err(io_err(&dpath))?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::BlockDevice;
    use crate::formats::vhd::{Chain, create_child, create_dynamic};
    use uuid::Uuid;

    const MIB: u64 = 1 << 20;

    /// Resizes `path` and checks the file at every fsync point: it opens, reads `content` (then zeros), and every
    /// state but the one between the two footer writes passes `check`.
    fn resize_is_valid_at_every_step(path: &Path, content: &[u8], new: u64) {
        let mut states = Vec::new();
        let mut observe = || states.push(std::fs::read(path).unwrap());
        resize_observed(path, new, &mut observe).unwrap();
        assert!(states.len() >= 4, "{} states", states.len());
        let saved = std::fs::read(path).unwrap();
        let n = states.len();
        for (i, st) in states.into_iter().enumerate() {
            std::fs::write(path, &st).unwrap();
            let info = super::super::read_info(path).unwrap_or_else(|e| panic!("state {i}: {e}"));
            assert!(info.virtual_size == content.len() as u64 || info.virtual_size == new, "state {i}");
            if i != n - 2 {
                check(path).unwrap_or_else(|e| panic!("state {i}: {e}"));
            }
            let c = Chain::open(path, false).unwrap();
            let mut buf = vec![1u8; content.len() + MIB as usize];
            let len = buf.len().min(c.size() as usize);
            c.read_at(&mut buf[..len], 0).unwrap();
            assert!(buf[..content.len()] == *content, "state {i}: content differs");
            assert!(buf[content.len()..len].iter().all(|&b| b == 0), "state {i}: tail not zero");
        }
        assert_eq!(std::fs::read(path).unwrap(), saved);
        assert_eq!(super::super::read_info(path).unwrap().virtual_size, new);
    }

    fn fill(path: &Path, size: u64, seed: u8) -> Vec<u8> {
        let c = Chain::open(path, true).unwrap();
        let mut content = vec![0u8; size as usize];
        for (i, b) in [0u64, 1, 3, 6].into_iter().enumerate() {
            let data: Vec<u8> = (0..2 * MIB).map(|x| (x as u8) ^ seed ^ i as u8).collect();
            c.write_at(&data, b * 2 * MIB).unwrap();
            content[(b * 2 * MIB) as usize..((b + 1) * 2 * MIB) as usize].copy_from_slice(&data);
        }
        c.write_at(&[seed; 700], 9 * MIB + 3).unwrap();
        content[(9 * MIB + 3) as usize..(9 * MIB + 703) as usize].fill(seed);
        c.flush().unwrap();
        content
    }

    #[test]
    fn resize_moving_metadata_is_valid_at_every_step() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.vhd");
        create_dynamic(&p, Uuid::new_v4(), 16 * MIB).unwrap();
        let content = fill(&p, 16 * MIB, 1);
        resize_is_valid_at_every_step(&p, &content, 2 << 30);
    }

    #[test]
    fn resize_of_a_child_is_valid_at_every_step() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.vhd");
        let child = dir.path().join("child.vhd");
        create_dynamic(&base, Uuid::new_v4(), 16 * MIB).unwrap();
        let mut content = fill(&base, 16 * MIB, 2);
        create_child(&child, Uuid::new_v4(), &base).unwrap();
        let overlay = fill(&child, 16 * MIB, 3);
        for (i, b) in [0u64, 1, 3, 6].into_iter().enumerate() {
            let _ = i;
            let r = (b * 2 * MIB) as usize..((b + 1) * 2 * MIB) as usize;
            content[r.clone()].copy_from_slice(&overlay[r]);
        }
        content[(9 * MIB + 3) as usize..(9 * MIB + 703) as usize].fill(3);
        resize_is_valid_at_every_step(&child, &content, 1 << 30);
    }

    #[test]
    fn resize_in_place_is_valid_at_every_step() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.vhd");
        create_dynamic(&p, Uuid::new_v4(), 16 * MIB).unwrap();
        let content = fill(&p, 16 * MIB, 4);
        resize_is_valid_at_every_step(&p, &content, 32 * MIB);
    }

    #[test]
    fn subtract_ranges() {
        assert_eq!(subtract(&[(0, 10)], &[(2, 3)]), vec![(0, 2), (5, 5)]);
        assert_eq!(subtract(&[(0, 10)], &[(0, 10)]), vec![]);
        assert_eq!(subtract(&[(0, 10), (20, 5)], &[(8, 14)]), vec![(0, 8), (22, 3)]);
        assert_eq!(subtract(&[(5, 5)], &[]), vec![(5, 5)]);
    }

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[0u8; 512]));
        let mut b = [0u8; 513];
        b[512] = 1;
        assert!(!is_zero(&b));
        b[512] = 0;
        b[17] = 1;
        assert!(!is_zero(&b));
    }
}
