//! What a block server needs from a disk: positioned reads and writes, flush and discard, callable from several
//! threads at once. [`RawFile`] is the plain-file implementation (tests and benchmarks use it as the baseline);
//! `formats::vhd::Chain` serves a VHD chain.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// A virtual disk of `size()` bytes. Offsets and lengths are in bytes; callers keep them within `size()`.
pub trait BlockDevice: Send + Sync {
    /// The guest-visible size, bytes.
    fn size(&self) -> u64;
    /// True if writes, discards and flushes are refused.
    fn read_only(&self) -> bool;
    /// Fills `buf` from `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every completed write durable.
    fn flush(&self) -> io::Result<()>;
    /// The guest no longer needs this range; its content is unspecified afterwards.
    fn discard(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Makes the range read as zeros.
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        const CHUNK: u64 = 1 << 20;
        let zeros = vec![0u8; CHUNK.min(len) as usize];
        let mut done = 0;
        while done < len {
            let n = CHUNK.min(len - done) as usize;
            self.write_at(&zeros[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }
}

/// A raw image file.
#[derive(Debug)]
pub struct RawFile {
    file: File,
    size: u64,
    read_only: bool,
}

impl RawFile {
    pub fn open(path: &Path, writable: bool) -> io::Result<RawFile> {
        let file = OpenOptions::new().read(true).write(writable).open(path)?;
        let size = file.metadata()?.len();
        Ok(RawFile { file, size, read_only: !writable })
    }
}

impl BlockDevice for RawFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn discard(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
}
