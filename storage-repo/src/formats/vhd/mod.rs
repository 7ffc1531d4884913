//! VHD as XenServer's blktap (`vhd-util`) writes it: dynamic and differencing disks with 2 MiB blocks, creator
//! `tap` 1.3, sizes rounded up to 2 MiB, the `tdbatmap`, the hidden flag in footer byte 85, and three parent
//! locators (`MacX`, `W2ku`, `W2ru`), all `./<parent file name>`. Fixed disks are read, never written.
//!
//! The public surface is what the SR layer and the block server use; parsing lives in private files.
//!
//! Files: `footer`, `header`, `batmap`, `bitmap`, `locator` encode and decode the on-disk structures; `meta`
//! validates one file; `create` writes new ones; `chain` does the I/O; `ops` holds the metadata operations;
//! `ingest` converts an upload as it arrives.

use std::io::{self, Read};
use std::path::Path;

use uuid::Uuid;

use crate::Result;
use crate::block::BlockDevice;
use crate::formats::ingest::IngestSink;

mod batmap;
mod bitmap;
mod cache;
mod chain;
mod create;
mod footer;
mod header;
mod ingest;
mod locator;
mod meta;
mod ops;

/// 512-byte sectors.
pub const SECTOR: u64 = 512;
/// The block size of every VHD we write (blktap's, and the only one sm accepts).
pub const BLOCK_SIZE: u64 = 2 << 20;
/// The largest virtual size (BAT entries are u32 sector offsets; sm and xapi enforce 2040 GiB).
pub const MAX_SIZE: u64 = 2040 << 30;
/// The deepest chain we create or open (sm's limit).
pub const MAX_CHAIN_DEPTH: usize = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskType {
    Fixed,
    Dynamic,
    Differencing,
}

/// A differencing disk's parent, as its header names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentRef {
    /// The parent footer's UUID, from the child's header.
    pub uuid: Uuid,
    /// The parent's file name in the same directory (from the relative locator, `./` stripped). Never contains `/`.
    pub file_name: String,
}

/// What one file's metadata says (no chain walk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The footer's UUID.
    pub uuid: Uuid,
    pub disk_type: DiskType,
    /// The guest-visible size (footer current size), bytes.
    pub virtual_size: u64,
    /// blktap's hidden flag (footer byte 85).
    pub hidden: bool,
    pub parent: Option<ParentRef>,
    /// The footer's creator application, e.g. `*b"tap\0"`.
    pub creator: [u8; 4],
    /// The file's length, bytes.
    pub file_size: u64,
    /// Blocks allocated in this file (BAT entries that are not `0xFFFFFFFF`).
    pub allocated_blocks: u64,
    pub block_size: u64,
}

/// Reads and validates one file's footer, header, BAT and locators.
pub fn read_info(path: &Path) -> Result<Info> {
    ops::read_meta(path, meta::Mode::Read).map(|m| m.info())
}

/// Creates a sparse dynamic VHD of `virtual_size` rounded up to 2 MiB (at most [`MAX_SIZE`]). Fails if `path`
/// exists. The file is durable (fsynced, and its directory) when this returns.
pub fn create_dynamic(path: &Path, uuid: Uuid, virtual_size: u64) -> Result<Info> {
    create::create_dynamic(path, uuid, virtual_size)
}

/// Creates an empty differencing VHD whose parent is `parent` (a file in the same directory), with the parent's
/// size. Fails if `path` exists or the chain would be deeper than [`MAX_CHAIN_DEPTH`]. Durable when it returns.
pub fn create_child(path: &Path, uuid: Uuid, parent: &Path) -> Result<Info> {
    create::create_child(path, uuid, parent)
}

/// Creates an empty differencing VHD of `virtual_size` whose header names a parent (`parent_uuid`, and
/// `parent_name` in its locators) without opening it: a delta to be filled through [`Chain::open_alone`] and
/// sent elsewhere (an export with `base=`). Fails if `path` exists. Durable when it returns.
pub fn create_delta(path: &Path, uuid: Uuid, virtual_size: u64, parent_uuid: Uuid, parent_name: &str) -> Result<Info> {
    create::create_delta(path, uuid, virtual_size, parent_uuid, parent_name)
}

/// Sets or clears blktap's hidden flag (both footer copies). Durable when it returns.
pub fn set_hidden(path: &Path, hidden: bool) -> Result<()> {
    ops::set_hidden(path, hidden)
}

/// Points a differencing disk at another parent in the same directory (header parent UUID, mtime, name and the
/// three locators). Durable when it returns.
pub fn set_parent(path: &Path, parent: &Path) -> Result<()> {
    ops::set_parent(path, parent)
}

/// Grows a dynamic or differencing disk to `new_size` rounded up to 2 MiB; refuses to shrink. Crash-safe: an
/// interrupted resize leaves the old size or the new, never a broken file.
pub fn resize(path: &Path, new_size: u64) -> Result<Info> {
    ops::resize(path, new_size)
}

/// Repairs what an interrupted write can leave in one file (a damaged trailing footer is rewritten after the last
/// block; differing footer copies are made equal): what a writable open does, without keeping the file open.
pub fn repair(path: &Path) -> Result<()> {
    chain::open_writable(path).map(|_| ())
}

/// Checks one file as `vhd-util check` does (footers, checksums, header, BAT entries inside the file and not
/// overlapping, batmap, locators). `Err(Corrupt)` names the first problem.
pub fn check(path: &Path) -> Result<Info> {
    ops::check(path)
}

/// Copies every sector allocated in `child` into its parent (growing the parent if it is smaller). Idempotent and
/// crash-safe: the parent's content, seen through the child, never changes. Returns the bytes copied.
pub fn coalesce(child: &Path) -> Result<u64> {
    ops::coalesce(child)
}

/// Converts a VHD upload while it arrives ([`crate::formats::ingest`]): `r` is read once, front to back, never
/// seeked; `length` is its size when known. Dynamic and differencing disks: the head (footer copy, header, BAT,
/// at most [`crate::formats::ingest::MAX_METADATA`] bytes with the list of allocated blocks) is buffered and
/// validated as [`read_info`] does, with block sizes up to 256 MiB; then each allocated block's present sectors
/// are written as the block passes (all-zero data is skipped in a dynamic disk, written in a differencing one,
/// whose `parent` is the header's parent UUID); the trailing footer must match the copy. Fixed disks: the data
/// is streamed as a raw image (all-zero 64 KiB runs skipped; `capacity` is `None` without `length`) and the last
/// 512 bytes must be a fixed footer whose size is the data's. On any error the caller discards what was written.
pub fn ingest<R: Read>(r: R, length: Option<u64>, sink: &mut dyn IngestSink) -> Result<()> {
    ingest::ingest(r, length, sink)
}

/// A leaf and its ancestors, opened for I/O. Parents are opened read-only and must be in the leaf's directory.
#[derive(Debug)]
pub struct Chain {
    inner: chain::Inner,
}

impl Chain {
    /// Opens `leaf` and walks its parents (UUIDs must match, no loops, at most [`MAX_CHAIN_DEPTH`] files).
    pub fn open(leaf: &Path, writable: bool) -> Result<Chain> {
        chain::Inner::open(leaf, writable).map(|inner| Chain { inner })
    }

    /// Opens a new file being built for writing, as a scratch file: new blocks do not force flushes (which bound
    /// what a crash can lose of a disk in use), so writing it never waits for the disk until [`BlockDevice::flush`].
    /// A crash leaves a file to throw away. For imports, copies and exports.
    pub fn open_scratch(path: &Path) -> Result<Chain> {
        let c = Chain::open(path, true)?;
        c.inner.set_scratch();
        Ok(c)
    }

    /// Opens `path` alone, without walking to its parents: a differencing file's unwritten sectors read as
    /// zeros. For filling a delta made by [`create_delta`].
    pub fn open_alone(path: &Path, writable: bool) -> Result<Chain> {
        let inner = chain::Inner::open_with(path, writable, false)?;
        inner.set_scratch();
        Ok(Chain { inner })
    }

    /// How many files the chain has (1 for a disk without parent).
    pub fn depth(&self) -> usize {
        self.inner.layers.len()
    }

    /// Byte ranges `(offset, len)` that are allocated in some file of the chain, in order, merged, at block
    /// granularity at most; everything else reads as zeros.
    pub fn allocated_ranges(&self) -> Result<Vec<(u64, u64)>> {
        Ok(ops::allocated_ranges(&self.inner))
    }

    /// The files of the chain, leaf first.
    pub fn paths(&self) -> Vec<&Path> {
        self.inner.layers.iter().map(|l| l.path.as_path()).collect()
    }

    /// The metadata of each file of the chain as it was when the chain was opened, leaf first.
    pub fn infos(&self) -> Vec<Info> {
        self.inner.layers.iter().map(|l| l.meta.info()).collect()
    }
}

/// Copies the content of `src` into `dst` (of at least the same size): ranges allocated in `src` are written
/// (all-zero sectors are skipped where `dst` is unallocated), and ranges that `dst` holds but `src` does not are
/// zeroed. Returns the bytes written. `dst` is flushed.
pub fn copy_into(src: &Chain, dst: &Chain) -> Result<u64> {
    ops::copy_into(&src.inner, &dst.inner)
}

/// Writes into `dst` (a delta opened with [`Chain::open_alone`]) every 2 MiB block of `src` whose content differs
/// from `base`'s: whole blocks, zeros included (they overwrite the base's data when the delta is applied).
/// Blocks only files of both chains hold cannot differ and are not read; the others are compared. Returns the
/// bytes written. `dst` is flushed.
pub fn write_delta(src: &Chain, base: &Chain, dst: &Chain) -> Result<u64> {
    ops::write_delta(&src.inner, &base.inner, &dst.inner)
}

impl BlockDevice for Chain {
    fn size(&self) -> u64 {
        self.inner.size
    }

    fn read_only(&self) -> bool {
        !self.inner.writable()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write(buf, offset)
    }

    fn flush(&self) -> io::Result<()> {
        self.inner.flush()
    }

    /// In a disk without parent, whole sectors of the range are cleared in their bitmaps and punched out of the
    /// file, so they read as zeros. With a parent nothing is done (clearing would expose the parent's data, and
    /// blocks are never deallocated).
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        chain::check_range(self.inner.size, offset, usize::try_from(len).unwrap_or(usize::MAX))?;
        self.inner.clear_range(offset, len).map(|_| ())
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        ops::write_zeroes(&self.inner, offset, len)
    }
}

/// The fuzz targets' entry points (`storage-repo/fuzz`), also run over a fixed corpus by the integration tests.
/// They must never panic, hang or allocate without bound, whatever the bytes.
#[doc(hidden)]
pub mod fuzzing {
    use std::path::Path;

    use super::{Chain, check, read_info};
    use crate::block::BlockDevice;

    /// Reads at most this many pieces of each disk.
    const MAX_READS: usize = 512;

    fn exercise(path: &Path) {
        let _ = read_info(path);
        let _ = check(path);
        let Ok(chain) = Chain::open(path, false) else { return };
        let size = chain.size();
        let mut buf = vec![0u8; 4096];
        let mut reads = 0;
        if let Ok(ranges) = chain.allocated_ranges() {
            'outer: for (start, len) in ranges {
                let mut off = start;
                while off < start + len {
                    let n = (start + len - off).min(buf.len() as u64) as usize;
                    let _ = chain.read_at(&mut buf[..n], off);
                    reads += 1;
                    if reads >= MAX_READS {
                        break 'outer;
                    }
                    off += super::BLOCK_SIZE;
                }
            }
        }
        if size > 0 {
            let n = size.min(buf.len() as u64) as usize;
            let _ = chain.read_at(&mut buf[..n], size - n as u64);
        }
        drop(chain);
        // A writable open repairs what it can; what it writes must read back.
        if let Ok(chain) = Chain::open(path, true)
            && size >= 4096
        {
            let data = [0x5au8; 1024];
            let at = size / 2 / 512 * 512 + 100;
            if chain.write_at(&data, at).is_ok() && chain.flush().is_ok() {
                let mut back = [0u8; 1024];
                chain.read_at(&mut back, at).expect("a written range reads back");
                assert_eq!(back, data, "a written range reads back");
            }
        }
    }

    /// `bytes` as the file `a.vhd` in `dir`, through every reader and a small write.
    pub fn open_one(dir: &Path, bytes: &[u8]) {
        let path = dir.join("a.vhd");
        if std::fs::write(&path, bytes).is_ok() {
            exercise(&path);
        }
        let _ = std::fs::remove_file(&path);
    }

    /// `child` as `c.vhd` and `parent` as `p.vhd` in `dir` (a child naming `p.vhd` forms a chain).
    pub fn open_chain(dir: &Path, child: &[u8], parent: &[u8]) {
        let c = dir.join("c.vhd");
        let p = dir.join("p.vhd");
        if std::fs::write(&c, child).is_ok() && std::fs::write(&p, parent).is_ok() {
            exercise(&c);
            let _ = super::coalesce(&c);
            exercise(&p);
        }
        let _ = std::fs::remove_file(&c);
        let _ = std::fs::remove_file(&p);
    }

    /// A sink that checks the [`IngestSink`] contract: `begin` first and once, writes 512-aligned, inside the
    /// capacity when one was given, and not overlapping one another.
    struct CheckingSink {
        capacity: Option<Option<u64>>,
        writes: Vec<(u64, u64)>,
    }

    impl crate::formats::ingest::IngestSink for CheckingSink {
        fn begin(&mut self, info: &crate::formats::ingest::IngestInfo) -> std::io::Result<()> {
            assert!(self.capacity.is_none(), "begin is called once");
            assert!(info.capacity.is_none_or(|c| c % 512 == 0), "the capacity is whole sectors");
            self.capacity = Some(info.capacity);
            Ok(())
        }

        fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            let Some(capacity) = self.capacity else { panic!("write before begin") };
            assert!(
                offset.is_multiple_of(512) && data.len().is_multiple_of(512) && !data.is_empty(),
                "writes are whole sectors"
            );
            let end = offset + data.len() as u64;
            assert!(capacity.is_none_or(|c| end <= c), "a write past the capacity");
            self.writes.push((offset, end));
            Ok(())
        }
    }

    /// Reads in pieces of 1 to 4096 bytes, varying.
    struct Pieces<'a>(&'a [u8], usize);

    impl std::io::Read for Pieces<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.1 = (self.1 * 7 + 3) % 4096 + 1;
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// `bytes` as an upload through [`super::ingest`], with and without its length, read whole and in pieces.
    pub fn ingest_one(bytes: &[u8]) {
        for (length, pieces) in [(Some(bytes.len() as u64), false), (None, true)] {
            let mut sink = CheckingSink { capacity: None, writes: Vec::new() };
            let r = if pieces {
                super::ingest(Pieces(bytes, 0), length, &mut sink)
            } else {
                super::ingest(bytes, length, &mut sink)
            };
            assert!(r.is_ok() || !matches!(r, Err(crate::Error::NotFound(_) | crate::Error::Busy(_))));
            sink.writes.sort_unstable();
            for w in sink.writes.windows(2) {
                assert!(w[0].1 <= w[1].0, "writes overlap: {:?} and {:?}", w[0], w[1]);
            }
        }
    }
}
