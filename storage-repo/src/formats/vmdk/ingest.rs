//! A VMDK upload converted while it arrives (see `crate::formats::ingest`), read once, front to back.
//!
//! monolithicSparse: the head (header, descriptor, directories, every grain table) is buffered, up to
//! [`MAX_METADATA`], and validated by `layout` as the file reader does; the allocated grains are then sorted by
//! their place in the upload and handed to the sink as their bytes pass, runs adjacent in the upload and the guest
//! in one write straight from the read buffer. streamOptimized: the `stream` reader, its extents written as they
//! come. A descriptor (monolithicFlat) has no data to convert and is refused.

use std::io::{Cursor, ErrorKind, Read};
use std::path::Path;

use super::grain::is_zero;
use super::header::{MAGIC, MAX_DESCRIPTOR, SECTOR, SparseHeader};
use super::layout::{self, MetaSource};
use super::{descriptor, stream};
use crate::formats::ingest::{IngestInfo, IngestSink, MAX_METADATA, UPLOAD, sink_error, upload_error};
use crate::{Error, Result};

/// The read buffer of the data, bytes: large runs are written in one call; a grain (at most 1 MiB) cut at its end
/// is carried over to the next fill, which always has room for it. 2 MiB stays in cache and measured faster than
/// 4 MiB.
const BUF: usize = 2 << 20;

fn corrupt(what: impl Into<String>) -> Error {
    Error::corrupt(UPLOAD, what)
}

/// The upload: counts bytes, never reads past `length`, and reports an end before `length` as `UnexpectedEof`.
struct Upload<R> {
    r: R,
    pos: u64,
    length: Option<u64>,
}

impl<R: Read> Read for Upload<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let room = match self.length {
            Some(l) => (l.saturating_sub(self.pos)).min(buf.len() as u64) as usize,
            None => buf.len(),
        };
        if room == 0 {
            return Ok(0);
        }
        let n = self.r.read(&mut buf[..room])?;
        if n > room {
            return Err(std::io::Error::other("the reader returned more bytes than asked for"));
        }
        if n == 0 && self.length.is_some() {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Read> Upload<R> {
    /// Reads into `buf`; `Ok(0)` at the end of the upload (also when it ends before its `length`).
    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize> {
        loop {
            match self.read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(upload_error(e, "the upload")),
            }
        }
    }

    /// Reads into `buf` until it is full or the upload ends; returns the bytes read.
    fn read_full(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match self.read_some(&mut buf[got..])? {
                0 => break,
                n => got += n,
            }
        }
        Ok(got)
    }

    /// Reads the rest of the upload (after the last grain); an end before `length` is an error.
    fn drain(&mut self) -> Result<()> {
        let mut scratch = vec![0u8; 64 << 10];
        loop {
            match self.read(&mut scratch) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(upload_error(e, "the bytes after the last grain")),
            }
        }
    }
}

/// The first bytes of the upload, kept in memory: the metadata source of a sparse extent.
struct Head<'a, R> {
    up: &'a mut Upload<R>,
    /// `data[..filled]` is the head; the rest is room, zeroed once.
    data: Vec<u8>,
    filled: usize,
}

impl<R: Read> Head<'_, R> {
    fn bytes(&self) -> &[u8] {
        &self.data[..self.filled]
    }

    fn into_bytes(mut self) -> Vec<u8> {
        self.data.truncate(self.filled);
        self.data
    }

    /// Reads until the head holds `end` bytes or the upload ends (never past [`MAX_METADATA`]).
    fn fill_to(&mut self, end: usize) -> Result<()> {
        let end = end.min(MAX_METADATA);
        while self.filled < end {
            if self.filled == self.data.len() {
                // Double (from 64 KiB), never past the cap; grown as bytes arrive, not as the file claims.
                let len = (self.data.len() * 2).clamp(64 << 10, MAX_METADATA);
                self.data.reserve_exact(len - self.data.len());
                self.data.resize(len, 0);
            }
            let n = self.up.read_some(&mut self.data[self.filled..])?;
            if n == 0 {
                break;
            }
            self.filled += n;
        }
        Ok(())
    }

    /// Makes sure the head holds the bytes up to `end`: `Invalid` past [`MAX_METADATA`], `Corrupt` past the end.
    fn ensure(&mut self, end: u64, what: &str) -> Result<()> {
        if end > MAX_METADATA as u64 {
            return Err(Error::Invalid(format!(
                "{UPLOAD}: the VMDK's metadata ({what}) reaches past the first {} MiB of the upload: too large, or \
                 too late in the file, to convert while it arrives",
                MAX_METADATA >> 20
            )));
        }
        self.fill_to(end as usize)?;
        if (self.filled as u64) < end {
            return Err(corrupt(format!("the upload ended early, in {what} (byte {})", self.filled)));
        }
        Ok(())
    }
}

impl<R: Read> MetaSource for Head<'_, R> {
    fn read_meta(&mut self, at: u64, len: usize, what: &str) -> Result<Vec<u8>> {
        let end = at.saturating_add(len as u64);
        self.ensure(end, what)?;
        Ok(self.data[at as usize..end as usize].to_vec())
    }
}

/// Reads a VMDK upload from `r` (never seeking, once) and hands its data to `sink`; see the module and
/// `crate::formats::ingest`.
pub(crate) fn ingest<R: Read>(r: R, length: Option<u64>, sink: &mut dyn IngestSink) -> Result<()> {
    let mut up = Upload { r, pos: 0, length };
    let mut head = Head { up: &mut up, data: Vec::new(), filled: 0 };
    head.fill_to(512)?;
    let magic = head.bytes().get(..4);
    if magic == Some(&MAGIC[..]) {
        let compressed = head.bytes().get(..512).and_then(|b| SparseHeader::decode(b.try_into().ok()?).ok());
        if compressed.is_some_and(|h| h.compressed()) {
            return ingest_stream(head.into_bytes(), &mut up, sink);
        }
        ingest_sparse(head, length, sink)?;
        return up.drain();
    }
    if magic == Some(&b"COWD"[..]) {
        return Err(Error::Invalid(format!("{UPLOAD}: ESX 'COWD' sparse extents are not supported")));
    }
    head.fill_to(MAX_DESCRIPTOR as usize + 1)?;
    if head.filled as u64 > MAX_DESCRIPTOR {
        return Err(corrupt("not a VMDK: no KDMV magic, and too large for a descriptor"));
    }
    let desc = descriptor::parse(head.bytes()).map_err(|e| corrupt(format!("not a VMDK descriptor: {e}")))?;
    let flat = desc.extents.iter().find(|e| e.kind == "FLAT" || e.kind == "VMFS");
    Err(Error::Invalid(match flat {
        Some(e) => format!(
            "{UPLOAD}: a {} VMDK is only a descriptor; its data is the flat extent {:?}, which is uploaded as a raw \
             image",
            desc.create_type, e.file
        ),
        None => format!(
            "{UPLOAD}: a {} VMDK descriptor holds no data; only monolithicSparse and streamOptimized files can be \
             converted while they arrive",
            desc.create_type
        ),
    }))
}

/// A stream error renamed to name the upload.
fn renamed(e: Error) -> Error {
    match e {
        Error::Corrupt { path, what } if path == Path::new(stream::STREAM) => corrupt(what),
        Error::Io { path, source } if path == Path::new(stream::STREAM) => upload_error(source, "the stream"),
        e => e,
    }
}

/// streamOptimized: the stream reader over what the head already read and the rest of the upload.
fn ingest_stream<R: Read>(head: Vec<u8>, up: &mut Upload<R>, sink: &mut dyn IngestSink) -> Result<()> {
    let (mut s, info) = stream::Stream::open(Cursor::new(head).chain(&mut *up)).map_err(renamed)?;
    let gb = info.grain_size;
    let grains = info.capacity.div_ceil(gb);
    // One bit per grain: a grain written twice (its LBA repeated) would overlap an earlier write.
    if grains / 8 > MAX_METADATA as u64 {
        return Err(Error::Invalid(format!("{UPLOAD}: too many grains ({grains}) to convert while it arrives")));
    }
    let mut seen = vec![0u64; grains.div_ceil(64) as usize];
    sink.begin(&IngestInfo { capacity: Some(info.capacity), uuid: None, parent: None }).map_err(sink_error)?;
    while let Some((off, d)) = s.next_data().map_err(renamed)? {
        for g in off / gb..(off + d.len() as u64).div_ceil(gb) {
            let (w, bit) = ((g / 64) as usize, 1u64 << (g % 64));
            if seen[w] & bit != 0 {
                return Err(corrupt(format!("the grain at LBA {} comes twice in the stream", g * (gb / SECTOR))));
            }
            seen[w] |= bit;
        }
        sink.write(off, d).map_err(sink_error)?;
    }
    drop(s);
    up.drain()
}

/// The allocated grains of a monolithicSparse upload, sorted by their place in the upload.
struct Grains {
    h: SparseHeader,
    /// `sector << 32 | grain`, sorted: the upload's order.
    list: Vec<u64>,
    /// The next grain to deliver.
    next: usize,
}

fn unpack(e: u64) -> (u64, u64) {
    (e >> 32, e & 0xffff_ffff)
}

impl Grains {
    /// Writes every grain from `next` on that lies whole in `win` (the upload's bytes from `win_start`), runs
    /// adjacent in the upload and the guest in one call, all-zero grains skipped; stops at the first that does not.
    fn deliver(&mut self, win: &[u8], win_start: u64, sink: &mut dyn IngestSink) -> Result<()> {
        let win_end = win_start + win.len() as u64;
        let gb = self.h.grain_bytes();
        while let Some(&e) = self.list.get(self.next) {
            let (s, g) = unpack(e);
            let off = s * SECTOR;
            let mut run = layout::grain_len(&self.h, g);
            if off + run > win_end {
                break;
            }
            let mut k = self.next + 1;
            while let Some(&e2) = self.list.get(k) {
                let (s2, g2) = unpack(e2);
                let d = (k - self.next) as u64;
                if s2 != s + d * self.h.grain_size || g2 != g + d {
                    break;
                }
                let len2 = layout::grain_len(&self.h, g2);
                if off + run + len2 > win_end {
                    break;
                }
                run += len2;
                k += 1;
            }
            let a = (off - win_start) as usize;
            write_nonzero(&win[a..a + run as usize], g * gb, gb as usize, sink)?;
            self.next = k;
        }
        Ok(())
    }
}

/// Writes `data` (whole grains of `gb` bytes, the last maybe cut) at guest `offset`, without its all-zero grains.
fn write_nonzero(data: &[u8], offset: u64, gb: usize, sink: &mut dyn IngestSink) -> Result<()> {
    let grain = |i: usize| &data[i..(i + gb).min(data.len())];
    let mut i = 0;
    while i < data.len() {
        while i < data.len() && is_zero(grain(i)) {
            i += gb;
        }
        let from = i.min(data.len());
        while i < data.len() && !is_zero(grain(i)) {
            i += gb;
        }
        let to = i.min(data.len());
        if to > from {
            sink.write(offset + from as u64, &data[from..to]).map_err(sink_error)?;
        }
    }
    Ok(())
}

/// monolithicSparse: validate the head, list the grains, stream them.
fn ingest_sparse<R: Read>(mut head: Head<'_, R>, length: Option<u64>, sink: &mut dyn IngestSink) -> Result<()> {
    let size = length.unwrap_or(u64::MAX);
    let lay = layout::read_layout(&mut head, Path::new(UPLOAD), size)?;
    let h = lay.h.clone();
    let per = h.gtes_per_gt as usize;

    // Each table read once: tables may not share sectors (which would also make grains share data).
    let gt_sectors = h.gt_sectors();
    let mut starts: Vec<u64> = lay.tables.iter().map(|&(_, s)| s).collect();
    starts.sort_unstable();
    if let Some(w) = starts.windows(2).find(|w| w[0] + gt_sectors > w[1]) {
        return Err(corrupt(format!("the grain tables at sectors {} and {} overlap", w[0], w[1])));
    }
    // The whole head, up to the last table, in memory.
    if let Some(&(i, s)) = lay.tables.iter().max_by_key(|&&(_, s)| s) {
        head.ensure(s * SECTOR + per as u64 * 4, &format!("grain table {i} (sector {s})"))?;
    }

    // Every table checked, then the allocated grains listed (counted first, so the list is allocated once).
    let grains = h.grains();
    let table = |s: u64| -> Vec<u32> {
        let at = (s * SECTOR) as usize;
        head.data[at..at + per * 4].as_chunks::<4>().0.iter().map(|c| u32::from_le_bytes(*c)).collect()
    };
    let allocated = |i: usize, gt: Vec<u32>| {
        let first = (i * per) as u64;
        gt.into_iter().enumerate().map(move |(j, e)| (first + j as u64, e)).filter(move |&(g, e)| g < grains && e > 1)
    };
    let mut count = 0;
    for &(i, s) in &lay.tables {
        let gt = table(s);
        layout::check_gt(&h, &lay.meta, i as u64, &gt, size).map_err(corrupt)?;
        count += allocated(i, gt).count();
    }
    let mut list = Vec::with_capacity(count);
    for &(i, s) in &lay.tables {
        list.extend(allocated(i, table(s)).map(|(g, e)| u64::from(e) << 32 | g));
    }
    list.sort_unstable();
    for w in list.windows(2) {
        let ((s0, g0), (s1, g1)) = (unpack(w[0]), unpack(w[1]));
        if s0 + layout::grain_len(&h, g0).div_ceil(SECTOR) > s1 {
            return Err(corrupt(format!("grains {g0} and {g1} share data (sectors {s0} and {s1})")));
        }
    }
    drop(lay);

    sink.begin(&IngestInfo { capacity: Some(h.capacity * SECTOR), uuid: None, parent: None }).map_err(sink_error)?;
    let mut gs = Grains { h, list, next: 0 };
    let Head { up, data: mut head, filled } = head;
    head.truncate(filled);
    gs.deliver(&head, 0, sink)?;
    if gs.next == gs.list.len() {
        return Ok(());
    }

    // The rest as it arrives. `start` is the upload offset of `buf[0]`.
    let mut buf = vec![0u8; BUF];
    let mut start = head.len() as u64;
    let mut fill = 0;
    let first = unpack(gs.list[gs.next]).0 * SECTOR;
    if first < start {
        let part = &head[first as usize..];
        buf[..part.len()].copy_from_slice(part);
        (start, fill) = (first, part.len());
    }
    drop(head);
    loop {
        let n = up.read_full(&mut buf[fill..])?;
        fill += n;
        gs.deliver(&buf[..fill], start, sink)?;
        let Some(&e) = gs.list.get(gs.next) else { return Ok(()) };
        let (s, g) = unpack(e);
        if fill < BUF {
            return Err(corrupt(format!(
                "grain {g} (sector {s}) is past the end of the upload ({} bytes)",
                start + fill as u64
            )));
        }
        let at = s * SECTOR;
        if at < start + fill as u64 {
            let keep = (at - start) as usize;
            buf.copy_within(keep..fill, 0);
            (start, fill) = (at, fill - keep);
        } else {
            (start, fill) = (start + fill as u64, 0);
        }
    }
}
