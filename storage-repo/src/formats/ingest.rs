//! Converting an upload while it arrives: a disk image read once, front to back, from a [`Read`] that never
//! seeks (an HTTP body), its guest-visible data handed to an [`IngestSink`] (a new VHD).
//!
//! Each format's `ingest(r: impl Read, length: Option<u64>, sink: &mut dyn IngestSink) -> Result<()>`
//! (`vmdk::ingest`, `vhd::ingest`; `length` is the upload's size when known, e.g. its `Content-Length`) reads the
//! image's head, calls
//! [`IngestSink::begin`] once with what the head says, then [`IngestSink::write`] for the data the image holds,
//! in the order it arrives (not necessarily guest order; ranges never overlap). Nothing that the image does not
//! allocate is written; a sink may still skip all-zero data of a full image (`parent` is `None`), which reads as
//! zeros anyway, but must write everything of a delta (`parent` is `Some`): there, zeros overwrite the base.
//!
//! Memory is bounded whatever the image says: metadata read into memory is capped ([`MAX_METADATA`]); an image
//! whose metadata is larger, or whose data comes before its tables in a way that would need buffering more, is
//! refused with [`crate::Error::Invalid`] (the caller may spool it to a file and use the file readers instead).
//! The upload ending early is [`crate::Error::Corrupt`] naming [`UPLOAD`]; an error from `r` itself is
//! [`crate::Error::Io`] naming [`UPLOAD`]; an error from the sink is [`crate::Error::Io`] naming [`DESTINATION`].

use std::path::Path;

use uuid::Uuid;

/// The name errors about the upload carry.
pub const UPLOAD: &str = "<upload>";
/// The name errors from the sink carry.
pub const DESTINATION: &str = "<destination>";
/// The most metadata (tables, directories, bitmaps) an ingest holds in memory at once, bytes.
pub const MAX_METADATA: usize = 64 << 20;

/// What an image's head says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestInfo {
    /// The guest-visible size, bytes (a multiple of 512). `None` only where the format says it at the end and
    /// the upload's length is unknown (a fixed VHD sent chunked): the sink then checks each write against its own
    /// size, and the ingest checks at the end that the data matched what the footer says.
    pub capacity: Option<u64>,
    /// The image's own identity where the format has one (a VHD footer's UUID).
    pub uuid: Option<Uuid>,
    /// A differencing VHD's parent (its header's parent UUID): the data is a delta onto that disk.
    pub parent: Option<Uuid>,
}

/// Where an ingest puts the data.
pub trait IngestSink {
    /// Called once, before any write. An error stops the ingest (reported as an I/O error on [`DESTINATION`]).
    fn begin(&mut self, info: &IngestInfo) -> std::io::Result<()>;
    /// Guest data at byte `offset`: `offset` and `data.len()` are multiples of 512 and `offset + data.len()` is
    /// at most the capacity given to `begin` (when it gave one).
    fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()>;
}

/// An error of the sink, as ingests report it.
pub fn sink_error(e: std::io::Error) -> crate::Error {
    crate::Error::io(Path::new(DESTINATION), e)
}

/// An error of the upload's reader, as ingests report it (`UnexpectedEof` becomes a `Corrupt` "ended early").
pub fn upload_error(e: std::io::Error, what: &str) -> crate::Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        crate::Error::corrupt(Path::new(UPLOAD), format!("the upload ended early, in {what}"))
    } else {
        crate::Error::io(Path::new(UPLOAD), e)
    }
}
