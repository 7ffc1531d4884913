//! A leaf and its ancestors opened for I/O.
//!
//! **Reads** resolve each sector through the chain: a BAT entry, then (unless the block is known to be full) the
//! sector bitmap from a bounded cache, then one `pread` per run of sectors held by the same file. Nothing takes a
//! chain-wide lock; BATs and "block is full" bits are atomics.
//!
//! **Writes** go to the leaf only. Allocating a block appends `[zero gap][bitmap][data]` where the footer was (the
//! data starts on a 4 KiB boundary, as tapdisk does) and writes the footer at the new end; the BAT entry is
//! written by the next `flush` (at the latest after 64 allocations), after an fdatasync: a crash leaves either the
//! old file or the new blocks, never a BAT entry past the end. Sector-bitmap changes are likewise kept in memory
//! (dirty entries are pinned in the cache) and written by `flush` after the fdatasync, so a bit never reaches the
//! disk before its data. The batmap follows the bitmaps.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::batmap::BatmapHeader;
use super::bitmap::{self, SectorBitmap};
use super::cache::BitmapCache;
use super::create::batmap_header;
use super::footer::FOOTER_SIZE;
use super::meta::{self, BITMAP_BYTES, Meta, Mode, UNUSED};
use super::{BLOCK_SIZE, DiskType, MAX_CHAIN_DEPTH, SECTOR};
use crate::{Error, Result};

const STRIPES: usize = 64;
/// Dirty bitmaps (512 bytes each) held before a write forces a flush.
const MAX_DIRTY: usize = 16384;
const LEAF_CACHE: usize = 8192;
const PARENT_CACHE: usize = 2048;
const DATA_ALIGN: u64 = 4096;
/// Blocks allocated before a write forces a flush (bounds what a crash can lose and leave behind).
const MAX_NEW_BLOCKS: usize = 64;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug)]
pub(crate) struct Layer {
    pub path: PathBuf,
    pub file: File,
    pub meta: Meta,
    pub kind: DiskType,
    pub size: u64,
    pub block_size: u64,
    /// Sectors per block.
    pub spb: usize,
    pub bat: Box<[AtomicU32]>,
    full: Box<[AtomicU64]>,
    cache: BitmapCache,
}

impl Layer {
    fn new(file: File, meta: Meta, cache: usize) -> Layer {
        let bat: Box<[AtomicU32]> = meta.bat.iter().map(|&e| AtomicU32::new(e)).collect();
        let full: Box<[AtomicU64]> = (0..bat.len().div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        for i in 0..bat.len() {
            if meta.batmap_test(i) {
                full[i / 64].fetch_or(1 << (i % 64), Ordering::Relaxed);
            }
        }
        Layer {
            path: meta.path.clone(),
            file,
            kind: meta.kind,
            size: meta.footer.current_size,
            block_size: meta.block_size,
            spb: (meta.block_size / SECTOR) as usize,
            bat,
            full,
            cache: BitmapCache::new(cache),
            meta,
        }
    }

    pub fn is_full(&self, block: usize) -> bool {
        self.full[block / 64].load(Ordering::Acquire) & (1 << (block % 64)) != 0
    }

    fn set_full(&self, block: usize, on: bool) {
        if on {
            self.full[block / 64].fetch_or(1 << (block % 64), Ordering::Release);
        } else {
            self.full[block / 64].fetch_and(!(1 << (block % 64)), Ordering::Release);
        }
    }

    pub fn entry(&self, block: usize) -> u32 {
        self.bat[block].load(Ordering::Acquire)
    }

    /// The on-disk sector bitmap of an allocated block.
    pub fn read_bitmap(&self, entry: u32) -> io::Result<SectorBitmap> {
        let mut b = [0u8; bitmap::BITMAP_SIZE];
        self.file.read_exact_at(&mut b, u64::from(entry) * SECTOR)?;
        Ok(b)
    }
}

#[derive(Debug)]
struct LeafBatmap {
    header_offset: u64,
    offset: u64,
    map: Vec<u8>,
    dirty: bool,
    /// The header as opened: its marker and keyhash are written back unchanged.
    kept: BatmapHeader,
}

/// What only a writable leaf needs.
#[derive(Debug)]
struct Leaf {
    /// Offset of the trailing footer: where the next block goes.
    alloc: Mutex<u64>,
    stripes: Box<[Mutex<()>]>,
    footer: [u8; FOOTER_SIZE],
    table_offset: u64,
    batmap: Option<Mutex<LeafBatmap>>,
    dirty: AtomicUsize,
    /// Blocks allocated since the last flush: their BAT entries are written by `flush`, after an fdatasync.
    new_blocks: Mutex<Vec<u32>>,
    /// New blocks that force a flush ([`MAX_NEW_BLOCKS`]; unbounded for a scratch file).
    max_new_blocks: AtomicUsize,
    flush_lock: Mutex<()>,
}

impl Leaf {
    fn stripe(&self, block: usize) -> MutexGuard<'_, ()> {
        lock(&self.stripes[block % STRIPES])
    }
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub layers: Vec<Layer>,
    leaf: Option<Leaf>,
    pub size: u64,
}

fn open_file(path: &Path, writable: bool) -> Result<File> {
    let file = OpenOptions::new().read(true).write(writable).open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::NotFound(path.display().to_string()),
        _ => Error::io(path, e),
    })?;
    if writable {
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Busy(format!("{} is open for writing elsewhere", path.display())));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(path, e)),
        }
    }
    Ok(file)
}

/// Opens `path` for writing (locked) and repairs what an interrupted operation can leave: a damaged trailing
/// footer (rewritten after the last block) and differing footer copies (the trailing one wins).
pub(crate) fn open_writable(path: &Path) -> Result<(File, Meta)> {
    let file = open_file(path, true)?;
    let mut m = meta::read(&file, path, Mode::Read)?;
    if m.kind == DiskType::Fixed {
        return Err(Error::Invalid(format!("{}: fixed VHDs are opened read-only", path.display())));
    }
    if m.block_size != BLOCK_SIZE {
        return Err(Error::Invalid(format!(
            "{}: block size {} is read-only here (only 2 MiB blocks are written)",
            path.display(),
            m.block_size
        )));
    }
    let io = |e| Error::io(path, e);
    if !m.trailing_ok || !m.copies_match {
        let f = m.footer.encode();
        if !m.trailing_ok {
            let at = m.end_of_data;
            file.write_all_at(&f, at).map_err(io)?;
            file.set_len(at + FOOTER_SIZE as u64).map_err(io)?;
        } else {
            file.write_all_at(&f, 0).map_err(io)?;
        }
        file.sync_all().map_err(io)?;
        m = meta::read(&file, path, Mode::Read)?;
    }
    Ok((file, m))
}

impl Inner {
    pub fn open(leaf: &Path, writable: bool) -> Result<Inner> {
        Inner::open_with(leaf, writable, true)
    }

    /// `parents: false` opens `leaf` alone: a differencing file's unwritten sectors then read as zeros.
    pub fn open_with(leaf: &Path, writable: bool, parents: bool) -> Result<Inner> {
        let (file, m) = if writable {
            open_writable(leaf)?
        } else {
            let f = open_file(leaf, false)?;
            let m = meta::read(&f, leaf, Mode::Read)?;
            (f, m)
        };
        let dir = match leaf.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let st = file.metadata().map_err(|e| Error::io(leaf, e))?;
        let mut seen = vec![(st.dev(), st.ino())];
        let size = m.footer.current_size;
        let leaf_state = if writable { Some(leaf_state(&m)) } else { None };
        let mut layers = vec![Layer::new(file, m, LEAF_CACHE)];
        loop {
            let cur = &layers[layers.len() - 1].meta;
            let Some(p) = cur.parent.clone().filter(|_| parents) else { break };
            let child = cur.path.clone();
            if layers.len() >= MAX_CHAIN_DEPTH {
                return Err(Error::corrupt(leaf, format!("the chain is deeper than {MAX_CHAIN_DEPTH} files")));
            }
            let ppath = dir.join(&p.file_name);
            let lst = std::fs::symlink_metadata(&ppath)
                .map_err(|e| Error::corrupt(&child, format!("parent {:?} cannot be opened: {e}", p.file_name)))?;
            if !lst.is_file() {
                return Err(Error::corrupt(&child, format!("parent {:?} is not a regular file", p.file_name)));
            }
            if seen.contains(&(lst.dev(), lst.ino())) {
                return Err(Error::corrupt(&child, format!("the chain loops back to {:?}", p.file_name)));
            }
            seen.push((lst.dev(), lst.ino()));
            let pf = open_file(&ppath, false)?;
            let pst = pf.metadata().map_err(|e| Error::io(&ppath, e))?;
            if (pst.dev(), pst.ino()) != (lst.dev(), lst.ino()) {
                return Err(Error::corrupt(&child, format!("parent {:?} changed while it was opened", p.file_name)));
            }
            let pm = meta::read(&pf, &ppath, Mode::Read)?;
            if pm.footer.uuid != p.uuid {
                return Err(Error::corrupt(
                    &child,
                    format!("parent {:?} has UUID {}, the header expects {}", p.file_name, pm.footer.uuid, p.uuid),
                ));
            }
            layers.push(Layer::new(pf, pm, PARENT_CACHE));
        }
        Ok(Inner { layers, leaf: leaf_state, size })
    }

    pub fn writable(&self) -> bool {
        self.leaf.is_some()
    }

    /// No flush is forced by new blocks: for a file nobody uses before it is flushed.
    pub fn set_scratch(&self) {
        if let Some(l) = &self.leaf {
            l.max_new_blocks.store(usize::MAX, Ordering::Relaxed);
        }
    }

    // ---- reads ----

    pub fn read(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(self.size, offset, buf.len())?;
        self.read_from(0, buf, offset)
    }

    /// Reads `buf` at `off` as seen from layer `li` downwards.
    fn read_from(&self, li: usize, buf: &mut [u8], off: u64) -> io::Result<()> {
        let Some(layer) = self.layers.get(li) else {
            buf.fill(0);
            return Ok(());
        };
        if buf.is_empty() {
            return Ok(());
        }
        if off >= layer.size {
            return self.read_from(li + 1, buf, off);
        }
        if off + buf.len() as u64 > layer.size {
            let (a, b) = buf.split_at_mut((layer.size - off) as usize);
            self.read_from(li, a, off)?;
            return self.read_from(li + 1, b, layer.size);
        }
        if layer.kind == DiskType::Fixed {
            return layer.file.read_exact_at(buf, off);
        }
        let bs = layer.block_size;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = off + done as u64;
            let within = pos % bs;
            let n = ((bs - within) as usize).min(buf.len() - done);
            self.read_block(li, layer, (pos / bs) as usize, within, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    fn read_block(&self, li: usize, layer: &Layer, block: usize, within: u64, piece: &mut [u8]) -> io::Result<()> {
        let e = layer.entry(block);
        let block_start = block as u64 * layer.block_size;
        if e == UNUSED {
            return self.read_from(li + 1, piece, block_start + within);
        }
        let data = u64::from(e) * SECTOR + BITMAP_BYTES;
        if layer.is_full(block) {
            return layer.file.read_exact_at(piece, data + within);
        }
        let bits = self.bitmap(li, layer, block, e)?;
        let len = piece.len() as u64;
        let first = (within / SECTOR) as usize;
        let last = (within + len).div_ceil(SECTOR) as usize;
        let mut s = first;
        while s < last {
            let (set, n) = bitmap::run(&bits, s, last);
            let a = (s as u64 * SECTOR).max(within);
            let b = ((s + n) as u64 * SECTOR).min(within + len);
            let sub = &mut piece[(a - within) as usize..(b - within) as usize];
            if set {
                layer.file.read_exact_at(sub, data + a)?;
            } else {
                self.read_from(li + 1, sub, block_start + a)?;
            }
            s += n;
        }
        Ok(())
    }

    /// The sector bitmap of an allocated block, from the cache or the file.
    fn bitmap(&self, li: usize, layer: &Layer, block: usize, e: u32) -> io::Result<SectorBitmap> {
        let mut bits = [0u8; bitmap::BITMAP_SIZE];
        if layer.cache.get(block as u32, &mut bits) {
            return Ok(bits);
        }
        // The leaf's bitmaps change under writers: load them under the block's stripe lock.
        let _g = match (&self.leaf, li) {
            (Some(l), 0) => Some(l.stripe(block)),
            _ => None,
        };
        if layer.cache.get(block as u32, &mut bits) {
            return Ok(bits);
        }
        if layer.is_full(block) {
            return Ok([0xff; bitmap::BITMAP_SIZE]);
        }
        bits = layer.read_bitmap(e)?;
        if bitmap::all_set(&bits, layer.spb) {
            layer.set_full(block, true);
        } else {
            layer.cache.insert(block as u32, &bits);
        }
        Ok(bits)
    }

    // ---- writes ----

    fn leaf(&self) -> io::Result<&Leaf> {
        self.leaf.as_ref().ok_or_else(|| io::Error::new(io::ErrorKind::PermissionDenied, "the chain is read-only"))
    }

    pub fn write(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.leaf()?;
        check_range(self.size, offset, buf.len())?;
        let mut off = offset;
        let mut rest = buf;
        // A partial head or tail sector is read through the chain, patched and written whole.
        while !rest.is_empty() {
            let within = (off % SECTOR) as usize;
            if within != 0 || rest.len() < SECTOR as usize {
                let n = (SECTOR as usize - within).min(rest.len());
                let sector = off - within as u64;
                let mut s = [0u8; SECTOR as usize];
                self.read_from(0, &mut s, sector)?;
                s[within..within + n].copy_from_slice(&rest[..n]);
                self.write_aligned(&s, sector)?;
                off += n as u64;
                rest = &rest[n..];
                continue;
            }
            let whole = rest.len() / SECTOR as usize * SECTOR as usize;
            self.write_aligned(&rest[..whole], off)?;
            off += whole as u64;
            rest = &rest[whole..];
        }
        Ok(())
    }

    /// Writes sector-aligned `buf` at sector-aligned `off`.
    fn write_aligned(&self, buf: &[u8], off: u64) -> io::Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let pos = off + done as u64;
            let within = pos % BLOCK_SIZE;
            let n = ((BLOCK_SIZE - within) as usize).min(buf.len() - done);
            self.write_block((pos / BLOCK_SIZE) as usize, within, &buf[done..done + n])?;
            done += n;
        }
        let leaf = self.leaf()?;
        if leaf.dirty.load(Ordering::Relaxed) > MAX_DIRTY {
            self.flush()?;
        }
        Ok(())
    }

    fn write_block(&self, block: usize, within: u64, data: &[u8]) -> io::Result<()> {
        let leaf = self.leaf()?;
        let layer = &self.layers[0];
        let mut e = layer.entry(block);
        if e == UNUSED {
            let g = leaf.stripe(block);
            e = layer.entry(block);
            if e == UNUSED {
                let pending = self.allocate(leaf, block, within, data)?;
                drop(g);
                if pending >= leaf.max_new_blocks.load(Ordering::Relaxed) {
                    self.flush()?;
                }
                return Ok(());
            }
        }
        let base = u64::from(e) * SECTOR;
        layer.file.write_all_at(data, base + BITMAP_BYTES + within)?;
        if layer.is_full(block) {
            return Ok(());
        }
        let first = (within / SECTOR) as usize;
        let n = data.len() / SECTOR as usize;
        self.update_bits(leaf, block, e, |m| bitmap::set_range(m, first, n))
    }

    /// Changes the leaf's in-memory bitmap of allocated `block` with `f` and keeps the full bit and the batmap
    /// in step.
    fn update_bits(
        &self,
        leaf: &Leaf,
        block: usize,
        e: u32,
        f: impl FnOnce(&mut SectorBitmap) -> bool,
    ) -> io::Result<()> {
        let layer = &self.layers[0];
        let _g = leaf.stripe(block);
        let loaded = if layer.cache.contains(block as u32) {
            None
        } else if layer.is_full(block) {
            Some([0xff; bitmap::BITMAP_SIZE])
        } else {
            Some(layer.read_bitmap(e)?)
        };
        let Some((_, newly_dirty, full)) = layer.cache.update(block as u32, loaded.as_ref(), f, layer.spb) else {
            return Err(io::Error::other("bitmap cache lost an entry"));
        };
        if newly_dirty {
            leaf.dirty.fetch_add(1, Ordering::Relaxed);
        }
        if full != layer.is_full(block) {
            layer.set_full(block, full);
            if let Some(bm) = &leaf.batmap {
                let mut g = lock(bm);
                if full {
                    bitmap::set(&mut g.map, block);
                } else {
                    bitmap::clear(&mut g.map, block);
                }
                g.dirty = true;
            }
        }
        Ok(())
    }

    /// Appends a block for `block` holding `data` at `within` (caller holds the block's stripe lock). Returns how
    /// many new blocks await their BAT entries.
    fn allocate(&self, leaf: &Leaf, block: usize, within: u64, data: &[u8]) -> io::Result<usize> {
        let layer = &self.layers[0];
        let whole = within == 0 && data.len() as u64 == BLOCK_SIZE;
        let mut pos = lock(&leaf.alloc);
        let start = *pos;
        let data_off = (start + BITMAP_BYTES).div_ceil(DATA_ALIGN) * DATA_ALIGN;
        let bm_off = data_off - BITMAP_BYTES;
        let new_footer = data_off + BLOCK_SIZE;
        let entry = u32::try_from(bm_off / SECTOR)
            .ok()
            .filter(|&e| e != UNUSED)
            .ok_or_else(|| io::Error::new(io::ErrorKind::StorageFull, "the VHD file would pass 2 TiB"))?;
        let mut head = vec![0u8; (data_off - start) as usize];
        if whole {
            let n = head.len();
            head[n - BITMAP_BYTES as usize..].fill(0xff);
        }
        layer.file.write_all_at(&head, start)?;
        layer.file.write_all_at(data, data_off + within)?;
        layer.file.write_all_at(&leaf.footer, new_footer)?;
        // Publish the bits before the BAT entry: a reader that sees the entry finds them.
        if whole {
            layer.set_full(block, true);
            if let Some(bm) = &leaf.batmap {
                let mut g = lock(bm);
                bitmap::set(&mut g.map, block);
                g.dirty = true;
            }
        } else {
            let mut bits = [0u8; bitmap::BITMAP_SIZE];
            bitmap::set_range(&mut bits, (within / SECTOR) as usize, data.len() / SECTOR as usize);
            let zero = [0u8; bitmap::BITMAP_SIZE];
            if let Some((_, true, _)) = layer.cache.update(
                block as u32,
                Some(&zero),
                |m| {
                    *m = bits;
                    true
                },
                layer.spb,
            ) {
                leaf.dirty.fetch_add(1, Ordering::Relaxed);
            }
        }
        layer.bat[block].store(entry, Ordering::Release);
        *pos = new_footer;
        drop(pos);
        let mut n = lock(&leaf.new_blocks);
        n.push(block as u32);
        Ok(n.len())
    }

    /// Makes whole sectors read as zeros in a leaf without parent: clears their bits and punches the data out.
    /// Unallocated blocks already read as zeros. Returns false if the leaf has a parent (nothing done).
    pub fn clear_range(&self, offset: u64, len: u64) -> io::Result<bool> {
        let leaf = self.leaf()?;
        if self.layers.len() > 1 {
            return Ok(false);
        }
        let layer = &self.layers[0];
        let start = offset.div_ceil(SECTOR) * SECTOR;
        let end = (offset + len) / SECTOR * SECTOR;
        let mut pos = start;
        while pos < end {
            let block = (pos / BLOCK_SIZE) as usize;
            let within = pos % BLOCK_SIZE;
            let n = (BLOCK_SIZE - within).min(end - pos);
            let e = layer.entry(block);
            if e != UNUSED {
                let data = u64::from(e) * SECTOR + BITMAP_BYTES + within;
                zero_file_range(&layer.file, data, n)?;
                let (first, count) = ((within / SECTOR) as usize, (n / SECTOR) as usize);
                self.update_bits(leaf, block, e, |m| bitmap::clear_range(m, first, count))?;
            }
            pos += n;
        }
        Ok(true)
    }

    /// True if some file of the chain holds data in `[offset, offset + len)`.
    pub fn any_allocated(&self, offset: u64, len: u64) -> bool {
        self.layers.iter().any(|l| {
            if offset >= l.size {
                return false;
            }
            if l.kind == DiskType::Fixed {
                return true;
            }
            let end = (offset + len).min(l.size);
            let first = offset / l.block_size;
            let last = end.div_ceil(l.block_size);
            (first..last).any(|b| l.entry(b as usize) != UNUSED)
        })
    }

    pub fn flush(&self) -> io::Result<()> {
        let Some(leaf) = &self.leaf else { return Ok(()) };
        let _f = lock(&leaf.flush_lock);
        // Blocks allocated from here on wait for the next flush: their data may miss this fdatasync.
        let new_blocks = std::mem::take(&mut *lock(&leaf.new_blocks));
        let r = self.flush_with(leaf, &new_blocks);
        if r.is_err() {
            lock(&leaf.new_blocks).extend(new_blocks);
        }
        r
    }

    fn flush_with(&self, leaf: &Leaf, new_blocks: &[u32]) -> io::Result<()> {
        let layer = &self.layers[0];
        layer.file.sync_data()?;
        // The new blocks and their footers are durable: now their BAT entries may be.
        for &b in new_blocks {
            let e = layer.entry(b as usize);
            layer.file.write_all_at(&e.to_be_bytes(), leaf.table_offset + 4 * u64::from(b))?;
        }
        let written = layer.cache.write_dirty(|block, bits| {
            let e = layer.entry(block as usize);
            layer.file.write_all_at(bits, u64::from(e) * SECTOR)
        })?;
        leaf.dirty.fetch_sub(written.min(leaf.dirty.load(Ordering::Relaxed)), Ordering::Relaxed);
        let mut wrote_batmap = false;
        if let Some(bm) = &leaf.batmap {
            let mut g = lock(bm);
            if g.dirty {
                let h = batmap_header(g.offset, &g.map, self.size, Some(&g.kept));
                layer.file.write_all_at(&g.map, g.offset)?;
                layer.file.write_all_at(&h.encode(), g.header_offset)?;
                g.dirty = false;
                wrote_batmap = true;
            }
        }
        if written > 0 || wrote_batmap || !new_blocks.is_empty() {
            layer.file.sync_data()?;
        }
        Ok(())
    }
}

fn leaf_state(m: &Meta) -> Leaf {
    let header = m.header.as_ref().expect("dynamic disks have a header");
    Leaf {
        alloc: Mutex::new(m.file_len - FOOTER_SIZE as u64),
        stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        footer: m.footer.encode(),
        table_offset: header.table_offset,
        batmap: m.batmap.as_ref().map(|b| {
            Mutex::new(LeafBatmap {
                header_offset: b.header_offset,
                offset: b.header.offset,
                map: b.map.clone(),
                dirty: false,
                kept: b.header.clone(),
            })
        }),
        dirty: AtomicUsize::new(0),
        new_blocks: Mutex::new(Vec::new()),
        max_new_blocks: AtomicUsize::new(MAX_NEW_BLOCKS),
        flush_lock: Mutex::new(()),
    }
}

pub(crate) fn check_range(size: u64, offset: u64, len: usize) -> io::Result<()> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("range of {len} bytes at {offset} is outside the disk ({size} bytes)"),
        )),
    }
}

/// Zeroes `[offset, offset + len)` of `file`: punches a hole, or writes zeros where that is not supported.
pub(crate) fn zero_file_range(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use rustix::fs::{FallocateFlags, fallocate};
    if fallocate(file, FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE, offset, len).is_ok() {
        return Ok(());
    }
    let zeros = vec![0u8; len.min(1 << 20) as usize];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(zeros.len() as u64);
        file.write_all_at(&zeros[..n as usize], offset + done)?;
        done += n;
    }
    Ok(())
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::vhd::footer::Footer;
    use crate::formats::vhd::header::Header;

    /// A foreign dynamic disk with 512 KiB blocks (creator `test`, no batmap): read-only, sectors resolved per
    /// its bitmaps.
    #[test]
    fn reads_foreign_small_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("small.vhd");
        let bs = 512 * 1024u64;
        let mut footer = Footer::new(DiskType::Dynamic, 2 << 20, uuid::Uuid::from_u128(7));
        footer.creator_app = *b"test";
        let header = Header::new(1536, 4, bs as u32);
        // Footer copy, header, BAT (one sector), block 2 at sector 5: bitmap + 512 KiB, footer.
        let block_at = 2560u64;
        let mut img = vec![0u8; (block_at + 512 + bs + 512) as usize];
        img[..512].copy_from_slice(&footer.encode());
        img[512..1536].copy_from_slice(&header.encode());
        for i in 0..4u32 {
            let e = if i == 2 { (block_at / 512) as u32 } else { UNUSED };
            img[1536 + 4 * i as usize..1540 + 4 * i as usize].copy_from_slice(&e.to_be_bytes());
        }
        img[block_at as usize] = 0b0100_0000; // sector 1 of the block only
        img[(block_at + 512) as usize..(block_at + 512 + bs) as usize].fill(0x77);
        let n = img.len();
        img[n - 512..].copy_from_slice(&footer.encode());
        std::fs::write(&p, &img).unwrap();

        let c = Inner::open(&p, false).unwrap();
        let mut buf = vec![1u8; 2 << 20];
        c.read(&mut buf, 0).unwrap();
        let start = (2 * bs + 512) as usize;
        assert!(buf[..start].iter().all(|&b| b == 0));
        assert!(buf[start..start + 512].iter().all(|&b| b == 0x77));
        assert!(buf[start + 512..].iter().all(|&b| b == 0));
        drop(c);
        assert!(matches!(Inner::open(&p, true), Err(Error::Invalid(_))));
    }
}
