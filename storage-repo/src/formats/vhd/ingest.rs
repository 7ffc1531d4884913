//! A VHD upload converted while it arrives ([`crate::formats::ingest`]): the stream is read once, front to back.
//!
//! Dynamic and differencing disks start with the footer copy: the head (footer copy, header, BAT) is buffered
//! until the BAT has arrived, validated with the file reader's rules (`meta`), then the allocated blocks are
//! taken in file order as their bytes pass, and the sectors their bitmaps mark are handed to the sink straight
//! from the read buffer. Fixed disks are the data then one footer: the data is streamed as a raw image while the
//! last 512 bytes are held back, and the footer is checked at the end.

use std::io::{self, Read};

use super::bitmap;
use super::footer::{self, COOKIE, FOOTER_SIZE, Footer};
use super::header::{HEADER_SIZE, Header};
use super::meta::{self, Mode};
use super::{DiskType, SECTOR};
use crate::formats::ingest::{IngestInfo, IngestSink, MAX_METADATA, UPLOAD, sink_error, upload_error};
use crate::{Error, Result};

/// The largest block size an upload may have (we write 2 MiB; the sink gets guest offsets, so any size works).
pub(crate) const MAX_BLOCK: u64 = 256 << 20;
/// The read buffer's size once the upload has shown it sends more than a small buffer holds.
const CHUNK: usize = 4 << 20;
/// The read buffer's first size (small uploads, and fuzzing, need no more).
const FIRST_CHUNK: usize = 64 << 10;
/// All-zero runs of this many bytes (aligned in the guest) are not written where zeros need not be written.
const ZERO_RUN: u64 = 64 << 10;
const SECTOR_USIZE: usize = SECTOR as usize;

fn corrupt(what: String) -> Error {
    Error::corrupt(UPLOAD, what)
}

/// The upload with a window of buffered bytes: `buf[start..end]` is the upload from offset `pos`.
struct Stream<R> {
    r: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    pos: u64,
    eof: bool,
    /// The last read filled the buffer: the next one may use a larger one.
    filled: bool,
}

impl<R: Read> Stream<R> {
    fn new(r: R) -> Stream<R> {
        Stream { r, buf: vec![0; FIRST_CHUNK], start: 0, end: 0, pos: 0, eof: false, filled: false }
    }

    fn avail(&self) -> usize {
        self.end - self.start
    }

    fn window(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.avail());
        self.start += n;
        self.pos += n as u64;
    }

    /// Reads until at least `min` bytes are buffered or the upload ends; returns how many are buffered. Each read
    /// asks for as much as the buffer holds. The buffer grows past its usual size only as bytes arrive.
    fn fill(&mut self, min: usize, what: &str) -> Result<usize> {
        while self.avail() < min && !self.eof {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
                if self.end == 0 && self.buf.len() > CHUNK {
                    self.buf = vec![0; CHUNK];
                }
            }
            // Grow by doubling: up to `min` (a head), or up to CHUNK while the reads fill the buffer.
            if self.end == self.buf.len() || (self.filled && self.buf.len() < CHUNK) {
                let grown = (self.buf.len() * 2).min(min.max(CHUNK)).max(self.buf.len() + 1);
                self.buf.resize(grown, 0);
            }
            match self.r.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.end += n;
                    self.filled = self.end == self.buf.len();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(upload_error(e, what)),
            }
        }
        Ok(self.avail())
    }

    /// Drops the bytes up to upload offset `to` (not before `pos`). False if the upload ends first.
    fn skip_to(&mut self, to: u64, what: &str) -> Result<bool> {
        while self.pos < to {
            if self.avail() == 0 && self.fill(1, what)? == 0 {
                return Ok(false);
            }
            let n = (to - self.pos).min(self.avail() as u64) as usize;
            self.consume(n);
        }
        Ok(true)
    }

    /// Buffers the head of the upload up to offset `to` (nothing has been consumed yet).
    fn head(&mut self, to: u64, what: &str) -> Result<&[u8]> {
        debug_assert_eq!(self.pos, 0);
        let to = usize::try_from(to).expect("checked against MAX_METADATA");
        if self.fill(to, what)? < to {
            return Err(upload_error(io::ErrorKind::UnexpectedEof.into(), what));
        }
        Ok(&self.window()[..to])
    }
}

/// See [`super::ingest`].
pub(crate) fn ingest<R: Read>(r: R, length: Option<u64>, sink: &mut dyn IngestSink) -> Result<()> {
    let mut s = Stream::new(r.take(length.unwrap_or(u64::MAX)));
    if s.fill(FOOTER_SIZE, "the footer copy")? >= FOOTER_SIZE && s.window()[..8] == *COOKIE {
        let mut copy = [0u8; FOOTER_SIZE];
        copy.copy_from_slice(&s.window()[..FOOTER_SIZE]);
        let f =
            Footer::decode(&copy).map_err(|why| corrupt(format!("the footer copy at offset 0 is invalid ({why})")))?;
        // A valid fixed footer at 0 is a fixed disk's first sector that happens to look like one.
        if f.disk_type != footer::TYPE_FIXED {
            return sparse(s, length, f, copy, sink);
        }
    }
    fixed(s, length, sink)
}

/// A dynamic or differencing disk whose footer copy `copy` (decoded: `footer`) is buffered at the stream's start.
fn sparse<R: Read>(
    mut s: Stream<R>,
    length: Option<u64>,
    footer: Footer,
    copy: [u8; FOOTER_SIZE],
    sink: &mut dyn IngestSink,
) -> Result<()> {
    let limit = length.unwrap_or(u64::MAX);
    meta::check_footer(&footer, Mode::Read).map_err(corrupt)?;
    let kind = footer.kind().ok_or_else(|| corrupt(format!("unknown disk type {}", footer.disk_type)))?;
    let size = footer.current_size;

    let hoff = footer.data_offset;
    meta::check_header_offset(hoff, limit, "the upload").map_err(corrupt)?;
    let header_end = hoff + HEADER_SIZE as u64;
    held_in_memory(header_end)?;
    let raw: &[u8; HEADER_SIZE] =
        s.head(header_end, "the dynamic header")?[hoff as usize..].try_into().expect("HEADER_SIZE bytes");
    let header = Header::decode(raw).map_err(|w| corrupt(w.into()))?;
    let lay = meta::check_header(&header, hoff, size, limit, MAX_BLOCK, "the upload").map_err(corrupt)?;
    let parent = match kind {
        DiskType::Differencing if header.parent_uuid.is_nil() => {
            return Err(corrupt("differencing disk without a parent UUID (raw parents are not supported)".into()));
        }
        DiskType::Differencing => Some(header.parent_uuid),
        _ => None,
    };

    // In memory from here: the head up to the BAT's end, and the allocated entries (8 bytes each).
    let toff = lay.table_offset;
    let bat_end = toff + lay.blocks * 4;
    held_in_memory(bat_end.max(header_end).saturating_add(8 * lay.blocks))?;
    let bat = meta::decode_bat(&s.head(bat_end.max(header_end), "the BAT")?[toff as usize..bat_end as usize]);
    let bs = lay.block_size;
    let bitmap_bytes = meta::bitmap_bytes(bs);
    let span = bitmap_bytes + bs;
    let metadata = [(0, FOOTER_SIZE as u64), (hoff, header_end), (toff, toff + lay.bat_bytes)];
    let used = meta::check_bat(&bat, span, &metadata, limit, "the upload").map_err(corrupt)?;
    drop(bat);

    sink.begin(&IngestInfo { capacity: Some(size), uuid: Some(footer.uuid), parent }).map_err(sink_error)?;

    let mut map = vec![0u8; bitmap_bytes as usize];
    let sectors = (bs / SECTOR) as usize;
    for &(sector, block) in &used {
        let past = || corrupt(format!("block {block} at sector {sector} is past the end of the upload"));
        let what = "a block";
        // Bytes between blocks (the batmap, parent locators, padding) are not looked at.
        if !s.skip_to(u64::from(sector) * SECTOR, what)? || s.fill(map.len(), what)? < map.len() {
            return Err(past());
        }
        let bm = map.len();
        map.copy_from_slice(&s.window()[..bm]);
        s.consume(bm);
        let base = u64::from(block) * bs;
        // The last block may reach past the size: its sectors there are read and dropped.
        let inside = ((size - base).min(bs) / SECTOR) as usize;
        let mut i = 0;
        while i < sectors {
            if s.fill(SECTOR_USIZE, what)? < SECTOR_USIZE {
                return Err(past());
            }
            let n = (s.avail() / SECTOR_USIZE).min(sectors - i);
            let data = &s.window()[..n * SECTOR_USIZE];
            let mut j = i;
            while j < (i + n).min(inside) {
                let (set, run) = bitmap::run(&map, j, (i + n).min(inside));
                if set {
                    let piece = &data[(j - i) * SECTOR_USIZE..(j - i + run) * SECTOR_USIZE];
                    let at = base + j as u64 * SECTOR;
                    if parent.is_some() {
                        // A delta: zeros overwrite the base.
                        sink.write(at, piece).map_err(sink_error)?;
                    } else {
                        write_nonzero(sink, at, piece)?;
                    }
                }
                j += run;
            }
            s.consume(n * SECTOR_USIZE);
            i += n;
        }
    }

    // What follows the last block: nothing we read, then the trailing footer (the last 512 bytes) if present.
    loop {
        s.fill(FOOTER_SIZE + 1, "the trailing footer")?;
        if s.avail() <= FOOTER_SIZE {
            break;
        }
        s.consume(s.avail() - FOOTER_SIZE);
    }
    check_length(&s, length)?;
    if s.avail() == FOOTER_SIZE && s.window()[..8] == *COOKIE && s.window() != copy {
        return Err(corrupt("the footer at the end differs from its copy at offset 0".into()));
    }
    Ok(())
}

/// A fixed disk: the data, then the footer.
fn fixed<R: Read>(mut s: Stream<R>, length: Option<u64>, sink: &mut dyn IngestSink) -> Result<()> {
    let data_len = match length {
        Some(l) if l < FOOTER_SIZE as u64 => {
            return Err(corrupt(format!("no VHD footer: the upload is {l} bytes, less than a footer")));
        }
        Some(l) if !l.is_multiple_of(SECTOR) => {
            return Err(corrupt(format!("the upload is {l} bytes, not a whole number of sectors")));
        }
        Some(l) => Some(l - FOOTER_SIZE as u64),
        None => None,
    };
    sink.begin(&IngestInfo { capacity: data_len, uuid: None, parent: None }).map_err(sink_error)?;
    let what = "a fixed disk's data";
    loop {
        let n = match data_len {
            Some(d) => {
                if s.pos == d {
                    break;
                }
                if s.fill(SECTOR_USIZE, what)? < SECTOR_USIZE {
                    return Err(upload_error(io::ErrorKind::UnexpectedEof.into(), what));
                }
                (s.avail() / SECTOR_USIZE * SECTOR_USIZE).min((d - s.pos) as usize)
            }
            // The footer is whatever the last 512 bytes turn out to be: keep them back.
            None => {
                if s.fill(FOOTER_SIZE + SECTOR_USIZE, what)? < FOOTER_SIZE + SECTOR_USIZE {
                    break;
                }
                (s.avail() - FOOTER_SIZE) / SECTOR_USIZE * SECTOR_USIZE
            }
        };
        write_nonzero(sink, s.pos, &s.window()[..n])?;
        s.consume(n);
    }

    s.fill(FOOTER_SIZE + 1, "the footer")?;
    check_length(&s, length)?;
    let total = s.pos + s.avail() as u64;
    if total < FOOTER_SIZE as u64 {
        return Err(corrupt(format!("no VHD footer: the upload is {total} bytes, less than a footer")));
    }
    if s.avail() != FOOTER_SIZE {
        return Err(corrupt(format!("the upload is {total} bytes, not a whole number of sectors")));
    }
    let raw: &[u8; FOOTER_SIZE] = s.window().try_into().expect("FOOTER_SIZE bytes");
    let f = Footer::decode(raw).map_err(|why| corrupt(format!("no VHD footer: {why}")))?;
    meta::check_footer(&f, Mode::Read).map_err(corrupt)?;
    if f.kind() != Some(DiskType::Fixed) {
        return Err(corrupt(format!(
            "the footer at the end is of disk type {}, but the upload does not start with a footer copy",
            f.disk_type
        )));
    }
    if f.current_size != s.pos {
        return Err(corrupt(format!(
            "the footer says {} bytes, the upload holds {} bytes of data",
            f.current_size, s.pos
        )));
    }
    Ok(())
}

/// Refuses metadata that would hold more than [`MAX_METADATA`] bytes in memory.
fn held_in_memory(bytes: u64) -> Result<()> {
    if bytes > MAX_METADATA as u64 {
        return Err(Error::Invalid(format!(
            "{UPLOAD}: the VHD's head needs {bytes} bytes in memory, more than the {MAX_METADATA} an upload may use"
        )));
    }
    Ok(())
}

/// At the end of the upload (everything is buffered): the upload ended where its length said.
fn check_length<R: Read>(s: &Stream<R>, length: Option<u64>) -> Result<()> {
    match length {
        Some(l) if s.pos + (s.avail() as u64) < l => {
            Err(upload_error(io::ErrorKind::UnexpectedEof.into(), "the trailing footer"))
        }
        _ => Ok(()),
    }
}

/// Writes `data` (guest offset `at`) except its all-zero [`ZERO_RUN`]s, in as few writes as possible.
fn write_nonzero(sink: &mut dyn IngestSink, at: u64, data: &[u8]) -> Result<()> {
    let mut pending: Option<usize> = None;
    let mut i = 0;
    while i < data.len() {
        let next = ((at + i as u64) / ZERO_RUN + 1) * ZERO_RUN;
        let j = ((next - at) as usize).min(data.len());
        if is_zero(&data[i..j]) {
            if let Some(p) = pending.take() {
                sink.write(at + p as u64, &data[p..i]).map_err(sink_error)?;
            }
        } else if pending.is_none() {
            pending = Some(i);
        }
        i = j;
    }
    if let Some(p) = pending {
        sink.write(at + p as u64, &data[p..]).map_err(sink_error)?;
    }
    Ok(())
}

/// True if `b` is all zeros (an OR-fold that vectorises, stopping at the first non-zero 4 KiB).
fn is_zero(b: &[u8]) -> bool {
    b.chunks(4096).all(|c| c.iter().fold(0u8, |a, &x| a | x) == 0)
}
