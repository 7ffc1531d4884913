//! VMDK, read only: the single-file formats VMware and qemu write (monolithicSparse, streamOptimized) and
//! monolithicFlat (a descriptor naming one flat extent in the same directory), read as a stream of data extents
//! for an import into a VHD.
//!
//! What is allocated is returned, in guest order where the format allows (a file read through its grain tables;
//! a stream in the order of its grains). Unallocated grains (GTE 0), zeroed grains (GTE 1) and grains whose data
//! is all zeros yield nothing; a flat extent's holes and all-zero 64 KiB runs are skipped. Adjacent grains are
//! merged into extents of at most [`MAX_EXTENT`] bytes.
//!
//! [`ingest`] converts an upload while it arrives (monolithicSparse and streamOptimized), without seeking.
//!
//! Files: `header` decodes the sparse header and markers, `descriptor` the text descriptor, `grain` inflates,
//! `layout` validates a sparse extent's header, directory and tables (for `sparse` and `ingest`); `sparse`,
//! `stream` and `flat` are the three readers, `ingest` the streaming conversion. See `docs/vmdk.md` for the
//! validation rules.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::formats::ingest::IngestSink;
use crate::{Error, Result};

mod descriptor;
mod flat;
mod grain;
mod header;
mod ingest;
mod layout;
mod sparse;
mod stream;

/// The largest extent returned, bytes.
pub const MAX_EXTENT: usize = 1 << 20;

/// Allocated data at a guest byte offset; `data.len()` is a multiple of 512.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub data: Vec<u8>,
}

/// What the header or descriptor says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmdkInfo {
    /// The guest-visible size, bytes (a multiple of 512, at most the VHD limit of 2040 GiB).
    pub capacity: u64,
    /// The descriptor's `createType` (`monolithicSparse`, `streamOptimized`, `monolithicFlat`, `vmfs`).
    pub create_type: String,
    /// The grain size, bytes (0 for a flat extent).
    pub grain_size: u64,
}

#[derive(Debug)]
enum Inner {
    Sparse(sparse::Sparse),
    Flat(flat::Flat),
}

/// A VMDK opened from a file; see [`open`].
#[derive(Debug)]
pub struct VmdkReader {
    info: VmdkInfo,
    inner: Inner,
}

/// Opens a VMDK file: a sparse extent (`KDMV`: monolithicSparse, or streamOptimized read through its grain
/// directory) or a descriptor of a monolithicFlat disk whose extent is in the same directory. Validates the
/// header, descriptor and grain directory and the location of every grain table; each grain table is checked
/// when it is reached.
pub fn open(path: &Path) -> Result<VmdkReader> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let md = file.metadata().map_err(|e| Error::io(path, e))?;
    if !md.file_type().is_file() {
        return Err(Error::Invalid(format!("{} is not a regular file", path.display())));
    }
    let size = md.len();
    let mut magic = [0u8; 4];
    if size >= 4 {
        file.read_exact_at(&mut magic, 0).map_err(|e| Error::io(path, e))?;
    }
    if &magic == header::MAGIC {
        let (s, info) = sparse::Sparse::open(path, file, size)?;
        return Ok(VmdkReader { info, inner: Inner::Sparse(s) });
    }
    if &magic == b"COWD" {
        return Err(Error::Invalid(format!("{}: ESX 'COWD' sparse extents are not supported", path.display())));
    }
    if size > header::MAX_DESCRIPTOR {
        return Err(Error::corrupt(path, "not a VMDK: no KDMV magic, and too large for a descriptor"));
    }
    let mut text = vec![0u8; size as usize];
    file.read_exact_at(&mut text, 0).map_err(|e| Error::io(path, e))?;
    let desc = descriptor::parse(&text).map_err(|e| Error::corrupt(path, format!("not a VMDK descriptor: {e}")))?;
    match desc.create_type.as_str() {
        "monolithicFlat" | "vmfs" => {
            let (f, info) = flat::Flat::open(path, desc)?;
            Ok(VmdkReader { info, inner: Inner::Flat(f) })
        }
        other => Err(Error::Invalid(format!(
            "{}: createType {other} is not supported (monolithicSparse, streamOptimized and monolithicFlat are)",
            path.display()
        ))),
    }
}

impl VmdkReader {
    pub fn info(&self) -> &VmdkInfo {
        &self.info
    }

    /// The next extent, borrowed from the reader's buffer (no copy): `(guest offset, data)`. `None` at the end.
    pub fn next_data(&mut self) -> Result<Option<(u64, &[u8])>> {
        match &mut self.inner {
            Inner::Sparse(s) => s.next_data(),
            Inner::Flat(f) => f.next_data(),
        }
    }

    /// The next extent, copied. `None` at the end.
    pub fn next_extent(&mut self) -> Result<Option<Extent>> {
        Ok(self.next_data()?.map(|(offset, d)| Extent { offset, data: d.to_vec() }))
    }
}

/// A streamOptimized VMDK read from a reader without seeking; see [`stream`].
#[derive(Debug)]
pub struct VmdkStream<R> {
    info: VmdkInfo,
    inner: stream::Stream<R>,
}

/// Starts reading a streamOptimized VMDK from `r` (an upload): reads the header and descriptor. Grains carry
/// their LBA; grain-table, grain-directory and footer markers are skipped with their sizes checked; the end is
/// the end-of-stream marker (or, for qemu's files, whose directory is at the start, the end of `r` at a marker).
/// Errors from a stream name the file `<vmdk stream>`.
pub fn stream<R: Read>(r: R) -> Result<VmdkStream<R>> {
    let (inner, info) = stream::Stream::open(r)?;
    Ok(VmdkStream { info, inner })
}

impl<R: Read> VmdkStream<R> {
    pub fn info(&self) -> &VmdkInfo {
        &self.info
    }

    /// The next extent (grains adjacent in the stream and the guest), borrowed. `None` at the end.
    pub fn next_data(&mut self) -> Result<Option<(u64, &[u8])>> {
        self.inner.next_data()
    }

    /// The next extent, copied. `None` at the end.
    pub fn next_extent(&mut self) -> Result<Option<Extent>> {
        Ok(self.next_data()?.map(|(offset, d)| Extent { offset, data: d.to_vec() }))
    }
}

/// Converts a VMDK upload while it arrives: reads `r` once, front to back, never seeking, and hands the guest
/// data to `sink` (`begin` with the capacity, then `write`s; see `crate::formats::ingest`). `length` is the
/// upload's size when known (its `Content-Length`): tables and grains must lie inside it, and the upload must not
/// end before it.
///
/// monolithicSparse (uncompressed): the header, descriptor, grain directory and every grain table must come in
/// the first [`MAX_METADATA`](crate::formats::ingest::MAX_METADATA) bytes (as qemu-img and VMware write them;
/// else `Error::Invalid`); they are validated as [`open`] does, and grains that overlap each other or the
/// metadata are refused. Grains may come in any order; each allocated grain must arrive (a grain past the end
/// of the upload is `Error::Corrupt`). Zeroed (GTE 1), unallocated and all-zero grains are not written; runs
/// adjacent in the upload and the guest are written in one call of up to 2 MiB.
///
/// streamOptimized: read as [`stream`] reads it, each extent written as it comes (a grain's LBA may come only
/// once). A descriptor file (monolithicFlat: its data is the flat extent, uploaded as raw) and other types are
/// `Error::Invalid`. Errors name `<upload>` (the input) or `<destination>` (the sink).
pub fn ingest<R: Read>(r: R, length: Option<u64>, sink: &mut dyn IngestSink) -> Result<()> {
    ingest::ingest(r, length, sink)
}

/// The fuzz targets' entry points (`storage-repo/fuzz`), also run over a fixed corpus by the integration tests.
/// They must never panic, hang or allocate without bound, whatever the bytes.
#[doc(hidden)]
pub mod fuzzing {
    use std::path::Path;

    /// Checks one extent against the capacity and the rules of the API.
    fn check(capacity: u64, offset: u64, data: &[u8], last_end: &mut u64, ordered: bool) {
        assert!(!data.is_empty() && data.len().is_multiple_of(512) && data.len() <= super::MAX_EXTENT);
        assert!(offset.is_multiple_of(512) && offset + data.len() as u64 <= capacity, "an extent inside the capacity");
        if ordered {
            assert!(offset >= *last_end, "extents in guest order, not overlapping");
        }
        *last_end = offset + data.len() as u64;
    }

    /// `bytes` as the file `a.vmdk` in `dir` (beside a flat extent `a-flat.vmdk` of 64 KiB), opened and read
    /// to the end.
    pub fn open_one(dir: &Path, bytes: &[u8]) {
        let path = dir.join("a.vmdk");
        let flat = dir.join("a-flat.vmdk");
        if std::fs::write(&path, bytes).is_ok()
            && std::fs::write(&flat, [1u8; 65536]).is_ok()
            && let Ok(mut r) = super::open(&path)
        {
            let cap = r.info().capacity;
            let mut last = 0;
            while let Ok(Some((off, d))) = r.next_data() {
                check(cap, off, d, &mut last, true);
            }
        }
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(&flat);
    }

    /// `bytes` as an upload (with and without its length) into a sink that checks the ingest's promises: `begin`
    /// first and once, every write non-empty, 512-aligned, inside the capacity, and not over an earlier one.
    pub fn ingest_one(bytes: &[u8]) {
        #[derive(Default)]
        struct Check {
            begun: u32,
            capacity: u64,
            written: std::collections::BTreeMap<u64, u64>,
        }
        impl crate::formats::ingest::IngestSink for Check {
            fn begin(&mut self, info: &crate::formats::ingest::IngestInfo) -> std::io::Result<()> {
                assert_eq!(self.begun, 0, "begin called once");
                self.begun += 1;
                let cap = info.capacity.expect("a VMDK says its capacity");
                assert!(cap.is_multiple_of(512));
                self.capacity = cap;
                Ok(())
            }
            fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
                assert_eq!(self.begun, 1, "begin before any write");
                let end = offset + data.len() as u64;
                assert!(!data.is_empty() && data.len().is_multiple_of(512) && offset.is_multiple_of(512));
                assert!(end <= self.capacity, "a write inside the capacity");
                if let Some((_, &e)) = self.written.range(..end).next_back() {
                    assert!(e <= offset, "writes do not overlap");
                }
                self.written.insert(offset, end);
                Ok(())
            }
        }
        for length in [Some(bytes.len() as u64), None] {
            let _ = super::ingest(bytes, length, &mut Check::default());
        }
    }

    /// `bytes` as a stream, read to the end.
    pub fn stream_one(bytes: &[u8]) {
        if let Ok(mut s) = super::stream(bytes) {
            let cap = s.info().capacity;
            let mut last = 0;
            while let Ok(Some((off, d))) = s.next_data() {
                check(cap, off, d, &mut last, false);
            }
        }
    }
}
