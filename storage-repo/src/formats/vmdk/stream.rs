//! streamOptimized from a reader without seeking (an upload): the header and descriptor at the start, then
//! sector-aligned grain markers (each carrying its LBA) and metadata markers (grain tables, grain directory,
//! footer) up to the end-of-stream marker. Metadata is skipped with its size checked against the header.

use std::io::{ErrorKind, Read};

use super::descriptor;
use super::grain::{Inflater, is_zero};
use super::header::{GD_AT_END, MARKER_EOS, MARKER_FOOTER, MARKER_GD, MARKER_GT, Marker, SECTOR, SparseHeader};
use super::{MAX_EXTENT, VmdkInfo};
use crate::{Error, Result};

/// The name errors carry (a stream has no path).
pub(crate) const STREAM: &str = "<vmdk stream>";

fn corrupt(what: impl Into<String>) -> Error {
    Error::corrupt(STREAM, what)
}

pub(crate) struct Stream<R> {
    r: R,
    h: SparseHeader,
    /// Bytes consumed so far.
    pos: u64,
    done: bool,
    /// A grain read past the end of the last extent: `(guest offset, bytes)` at the start of `held_buf`.
    held: Option<(u64, usize)>,
    held_buf: Vec<u8>,
    buf: Vec<u8>,
    cbuf: Vec<u8>,
    inflater: Inflater,
}

impl<R> std::fmt::Debug for Stream<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("pos", &self.pos).field("done", &self.done).finish_non_exhaustive()
    }
}

impl<R: Read> Stream<R> {
    /// Reads exactly `buf.len()` bytes; `Ok(false)` if the stream ended before the first byte.
    fn fill(&mut self, at: usize, len: usize, what: &str) -> Result<bool> {
        let mut got = 0;
        while got < len {
            match self.r.read(&mut self.cbuf[at + got..at + len]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => return Err(corrupt(format!("the stream ends in the middle of {what} (byte {})", self.pos))),
                Ok(n) => {
                    got += n;
                    self.pos += n as u64;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(STREAM, e)),
            }
        }
        Ok(true)
    }

    fn need(&mut self, at: usize, len: usize, what: &str) -> Result<()> {
        if self.fill(at, len, what)? {
            Ok(())
        } else {
            Err(corrupt(format!("the stream ends before {what} (byte {})", self.pos)))
        }
    }

    /// Skips `sectors` of metadata.
    fn skip(&mut self, mut sectors: u64, what: &str) -> Result<()> {
        let chunk = (self.cbuf.len() as u64 / SECTOR).max(1);
        while sectors > 0 {
            let n = sectors.min(chunk);
            self.need(0, (n * SECTOR) as usize, what)?;
            sectors -= n;
        }
        Ok(())
    }

    pub fn open(r: R) -> Result<(Stream<R>, VmdkInfo)> {
        let mut s = Stream {
            r,
            h: placeholder(),
            pos: 0,
            done: false,
            held: None,
            held_buf: Vec::new(),
            buf: Vec::new(),
            cbuf: vec![0u8; 64 << 10],
            inflater: Inflater::new(),
        };
        s.need(0, 512, "the header")?;
        let hb: [u8; 512] = s.cbuf[..512].try_into().expect("512 bytes");
        let h = SparseHeader::decode(&hb).map_err(corrupt)?;
        if !h.compressed() {
            return Err(Error::Invalid("only a streamOptimized VMDK can be read as a stream".into()));
        }
        if h.overhead == 0 {
            return Err(corrupt("the header says grains start inside the header (overhead 0)"));
        }
        let mut create_type = "streamOptimized".to_string();
        if h.descriptor_size > 0 {
            let end = h.descriptor_offset.checked_add(h.descriptor_size).filter(|&e| e <= h.overhead);
            end.ok_or_else(|| corrupt("the embedded descriptor extends past the start of the grains"))?;
            s.skip(h.descriptor_offset - 1, "the descriptor")?;
            let len = (h.descriptor_size * SECTOR) as usize;
            s.need(0, len, "the descriptor")?;
            let d = descriptor::parse(&s.cbuf[..len]).map_err(|e| corrupt(format!("embedded descriptor: {e}")))?;
            if d.create_type != "streamOptimized" {
                return Err(Error::Invalid(format!("createType {} cannot be read as a stream", d.create_type)));
            }
            create_type = d.create_type;
            s.skip(h.overhead - h.descriptor_offset - h.descriptor_size, "the metadata before the grains")?;
        } else {
            s.skip(h.overhead - 1, "the metadata before the grains")?;
        }
        let grain = h.grain_bytes() as usize;
        let clen = (12 + h.max_compressed() as usize).next_multiple_of(512);
        if s.cbuf.len() < clen {
            s.cbuf.resize(clen, 0);
        }
        s.buf = vec![0u8; MAX_EXTENT + grain + 1];
        s.held_buf = vec![0u8; grain];
        let info = VmdkInfo { capacity: h.capacity * SECTOR, create_type, grain_size: h.grain_bytes() };
        s.h = h;
        Ok((s, info))
    }

    /// Reads markers up to the next grain with data and inflates it into `self.buf[fill..]`: `(offset, len)`,
    /// or `None` at the end of the stream. All-zero grains are skipped.
    fn next_grain(&mut self, fill: usize) -> Result<Option<(u64, usize)>> {
        loop {
            if self.done {
                return Ok(None);
            }
            if !self.fill(0, 512, "a marker")? {
                // qemu-img writes no footer or end-of-stream marker (its directory is at the start); VMware
                // (directory at the end) always does.
                if self.h.gd_offset == GD_AT_END {
                    return Err(corrupt(format!(
                        "the stream ends without an end-of-stream marker (byte {})",
                        self.pos
                    )));
                }
                self.done = true;
                return Ok(None);
            }
            match Marker::decode(&self.cbuf[..16]) {
                Marker::Grain { lba, size } => {
                    let h = self.h.clone();
                    if lba >= h.capacity || lba % h.grain_size != 0 {
                        return Err(corrupt(format!("a grain at LBA {lba} is not a grain inside the capacity")));
                    }
                    if u64::from(size) > h.max_compressed() {
                        return Err(corrupt(format!(
                            "a compressed grain of {size} bytes is larger than a grain can be"
                        )));
                    }
                    let total = (12 + size as usize).next_multiple_of(512);
                    self.need(512, total - 512, "a compressed grain")?;
                    let off = lba * SECTOR;
                    let len = (h.grain_bytes()).min(h.capacity * SECTOR - off) as usize;
                    let out = &mut self.buf[fill..fill + len + 1];
                    let got = self
                        .inflater
                        .inflate(&self.cbuf[12..12 + size as usize], out)
                        .map_err(|e| corrupt(format!("grain at LBA {lba}: {e}")))?;
                    out[got..len].fill(0);
                    if is_zero(&out[..len]) {
                        continue;
                    }
                    return Ok(Some((off, len)));
                }
                Marker::Meta { sectors, kind } => {
                    let (want, what) = match kind {
                        MARKER_EOS => (0, "end of stream"),
                        MARKER_GT => (self.h.gt_sectors(), "grain table"),
                        MARKER_GD => (self.h.gd_sectors(), "grain directory"),
                        MARKER_FOOTER => (1, "footer"),
                        _ => return Err(corrupt(format!("unknown marker type {kind} at byte {}", self.pos - 512))),
                    };
                    if sectors != want {
                        return Err(corrupt(format!("a {what} marker says {sectors} sectors, not {want}")));
                    }
                    if kind == MARKER_EOS {
                        self.done = true;
                        return Ok(None);
                    }
                    self.skip(sectors, what)?;
                }
            }
        }
    }

    pub fn next_data(&mut self) -> Result<Option<(u64, &[u8])>> {
        let mut fill = 0;
        let mut start = 0;
        if let Some((off, len)) = self.held.take() {
            self.buf[..len].copy_from_slice(&self.held_buf[..len]);
            (start, fill) = (off, len);
        }
        while fill < MAX_EXTENT {
            let Some((off, len)) = self.next_grain(fill)? else { break };
            if fill == 0 {
                start = off;
            } else if off != start + fill as u64 {
                self.held_buf[..len].copy_from_slice(&self.buf[fill..fill + len]);
                self.held = Some((off, len));
                break;
            }
            fill += len;
        }
        Ok((fill > 0).then(|| (start, &self.buf[..fill])))
    }
}

/// A header used only until the real one is read.
fn placeholder() -> SparseHeader {
    SparseHeader {
        version: 3,
        flags: 0,
        capacity: 0,
        grain_size: 1,
        descriptor_offset: 0,
        descriptor_size: 0,
        gtes_per_gt: 1,
        rgd_offset: 0,
        gd_offset: 0,
        overhead: 1,
        compress_algorithm: 0,
    }
}
