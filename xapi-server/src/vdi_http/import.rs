//! `PUT /import_raw_vdi` (or `POST`): an upload replaces a VDI's content.
//!
//! The body (with a `Content-Length` or chunked) is received in 1 MiB pieces and handed to one blocking writer
//! through a channel of a few pieces. `format=raw` is written into a new sparse VHD `<uuid>.vhd.import`, all-zero
//! 64 KiB runs skipped; `format=vhd` (and `format=vmdk`, converted by `storage_repo::formats::vmdk`) is spooled to `.<uuid>.upload`, checked as hostile input, and its allocated
//! ranges copied into the new VHD. Only when all is written and flushed does the new file replace `<uuid>.vhd`,
//! under the SR's lock, followed by a rescan. Every failure (bad data, too long, truncated, disconnected,
//! cancelled) deletes the temporary files and leaves the VDI as it was.
//!
//! One import at a time per VDI; temporary files that no running import owns are a crash's leftovers, removed
//! by the next import of that VDI.
//!
//! Refused: a VDI in use (attached, exported, its block server running), and one with a parent or children
//! (a snapshot chain; replacing the leaf's file would cut it off).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State as AxState};
use axum::http::header;
use axum::response::Response;
use futures_util::StreamExt;
use storage_repo::block::BlockDevice;
use storage_repo::formats::vhd::{self, Chain, DiskType};
use uuid::Uuid;
use xapi_types::generated::errors as codes;

use super::{Format, PIECE, Target, check_unused, conclude};
use crate::error::ApiError;
use crate::state::{Peer, State};
use crate::storage::sync;

/// All-zero runs of this size (aligned) are not written: the new file is sparse, so they read as zeros.
const ZERO_RUN: usize = 64 << 10;
/// The receiver's error when the writer has stopped (the writer's own error is the one to report).
const WRITER_GONE: &str = "the writer stopped";
/// Pieces in flight between the receiver and the writer.
const IN_FLIGHT: usize = 4;

pub async fn import(
    AxState(state): AxState<Arc<State>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    req: Request,
) -> Response {
    let query = req.uri().query().unwrap_or_default().to_string();
    let mut t = match super::prelude(&state, &peer, &query, req.headers()).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let length = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let task = t.task.take();
    let outcome = receive(&state, t, req, length, task.as_ref()).await;
    conclude(task, outcome)
}

/// The VDIs (file UUIDs) an import is writing: one import at a time per VDI. Temporary files of a VDI not in
/// here are a crash's leftovers (only this daemon writes them), removed by the next import.
static IMPORTING: Mutex<BTreeSet<Uuid>> = Mutex::new(BTreeSet::new());

fn importing() -> std::sync::MutexGuard<'static, BTreeSet<Uuid>> {
    IMPORTING.lock().unwrap_or_else(|e| e.into_inner())
}

/// An import's claim on its VDI and its temporary files: when dropped, whatever happened (errors, a dropped
/// handler), the files are deleted and the claim released.
struct Temps {
    uuid: Uuid,
    files: Vec<PathBuf>,
}

impl Temps {
    /// Claims VDI `t` for an import; `VDI_IN_USE` if another import has it.
    fn claim(t: &Target) -> Result<Temps, ApiError> {
        if !importing().insert(t.uuid) {
            return Err(ApiError::new(&codes::VDI_IN_USE, [t.vdi.as_str(), "import"]));
        }
        Ok(Temps { uuid: t.uuid, files: Vec::new() })
    }
}

impl Drop for Temps {
    fn drop(&mut self) {
        for p in &self.files {
            match std::fs::remove_file(p) {
                Ok(()) => tracing::debug!(file = %p.display(), "temporary file removed"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(file = %p.display(), error = %e, "temporary file not removed"),
            }
        }
        importing().remove(&self.uuid);
    }
}

/// Where the upload goes.
enum Sink {
    Raw { chain: Box<Chain>, offset: u64 },
    Spool { file: File },
}

enum Piece {
    Data(Bytes),
    End,
}

/// The new file's path, next to the VDI's.
fn import_path(t: &Target) -> PathBuf {
    t.fsr.path(&t.uuid).with_extension("vhd.import")
}

fn spool_path(t: &Target) -> PathBuf {
    t.fsr.root().join(format!(".{}.upload", t.uuid))
}

/// `IMPORT_ERROR [msg]` unless the VDI's file is a disk of its own (no parent, no children, not a base copy).
fn check_standalone(t: &Target) -> Result<(), ApiError> {
    let info = t.fsr.info(&t.uuid)?;
    let why = if info.hidden {
        Some("is a base copy")
    } else if info.parent.is_some() {
        Some("has a parent (it is a snapshot or a clone, or has snapshots)")
    } else if t.fsr.scan()?.0.iter().any(|f| f.parent == Some(t.uuid)) {
        Some("is the parent of other disks")
    } else {
        None
    };
    match why {
        Some(w) => {
            Err(ApiError::new(&codes::IMPORT_ERROR, [format!("VDI {} {w}: an import replaces a whole disk", t.vdi)]))
        }
        None => Ok(()),
    }
}

/// Checks the target, creates the new file (and the spool), then receives the body into them and swaps the new
/// file in.
async fn receive(
    state: &Arc<State>,
    t: Target,
    req: Request,
    length: Option<u64>,
    task: Option<&super::TaskGuard>,
) -> Result<String, ApiError> {
    let t = Arc::new(t);
    // Setting up: checks and new files (blocking file work).
    let (st, tt) = (state.clone(), t.clone());
    let (sink, temps, size) = tokio::task::spawn_blocking(move || -> Result<(Sink, Temps, u64), ApiError> {
        check_unused(&st, &tt, "import")?;
        check_standalone(&tt)?;
        let current = vhd::read_info(&tt.fsr.path(&tt.uuid))?;
        let mut temps = Temps::claim(&tt)?;
        let (new, spool) = (import_path(&tt), spool_path(&tt));
        // Left by a crash in the middle of an import, if there.
        for p in [&new, &spool] {
            temps.files.push(p.clone());
            let _ = std::fs::remove_file(p);
        }
        vhd::create_dynamic(&new, current.uuid, current.virtual_size)?;
        let sink = match tt.format {
            Format::Raw => Sink::Raw { chain: Box::new(Chain::open(&new, true)?), offset: 0 },
            Format::Vhd | Format::Vmdk => {
                let file = File::options()
                    .write(true)
                    .create_new(true)
                    .open(&spool)
                    .map_err(|e| ApiError::new(&codes::VDI_IO_ERROR, [format!("{}: {e}", spool.display())]))?;
                Sink::Spool { file }
            }
        };
        Ok((sink, temps, current.virtual_size))
    })
    .await
    .map_err(ApiError::internal)??;

    // Receiving: pieces go to one blocking writer.
    let (tx, rx) = tokio::sync::mpsc::channel::<Piece>(IN_FLIGHT);
    let vdi = t.vdi.clone();
    let writer = tokio::task::spawn_blocking(move || write_all(sink, rx, size, vdi));
    let received = pump(req, tx, length, task).await;
    let sink = writer.await.map_err(ApiError::internal)?;
    // When the writer stopped first, its error is the cause (e.g. too long); otherwise the receiver's is (a
    // truncated body, a cancelled task).
    let sink = match (received, sink) {
        (Ok(()), Ok(s)) => s,
        (Err(e), Err(w)) if e.params.first().map(String::as_str) == Some(WRITER_GONE) => return Err(w),
        (Err(e), _) => return Err(e),
        (Ok(()), Err(w)) => return Err(w),
    };

    // Finishing: convert, flush, swap in, rescan. Blocking; the temporary files go with it whatever happens.
    let st = state.clone();
    tokio::task::spawn_blocking(move || {
        let temps = temps;
        let new = import_path(&t);
        match sink {
            Sink::Raw { chain, .. } => {
                chain.flush().map_err(|e| ApiError::new(&codes::VDI_IO_ERROR, [e.to_string()]))?;
            }
            Sink::Spool { file } => {
                drop(file);
                match t.format {
                    Format::Vmdk => copy_vmdk(&t, &spool_path(&t), &new, size)?,
                    _ => copy_vhd(&t, &spool_path(&t), &new, size)?,
                }
            }
        }
        st.storage.with_srs(&[&t.sr], || {
            check_unused(&st, &t, "import")?;
            check_standalone(&t)?;
            let path = t.fsr.path(&t.uuid);
            std::fs::rename(&new, &path)
                .map_err(|e| ApiError::new(&codes::VDI_IO_ERROR, [format!("{}: {e}", path.display())]))?;
            sync_dir(t.fsr.root());
            drop(temps);
            sync::sr_held(&st, &t.sr)
        })?;
        // The task's result is the XML-RPC value of the VDI's ref, as for an `Async.` call returning it.
        Ok(format!("<value>{}</value>", t.vdi))
    })
    .await
    .map_err(ApiError::internal)?
}

fn sync_dir(dir: &Path) {
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), error = %e, "directory not synced");
    }
}

/// Reads the body into 1 MiB pieces for the writer; reports progress and stops on cancellation.
async fn pump(
    req: Request,
    tx: tokio::sync::mpsc::Sender<Piece>,
    length: Option<u64>,
    task: Option<&super::TaskGuard>,
) -> Result<(), ApiError> {
    let mut body = req.into_body().into_data_stream();
    let mut piece = Vec::with_capacity(PIECE);
    let mut total = 0u64;
    let writer_gone = || ApiError::new(&codes::VDI_IO_ERROR, [WRITER_GONE]);
    while let Some(frame) = body.next().await {
        let mut frame = frame.map_err(|e| {
            ApiError::new(&codes::VDI_IO_ERROR, [format!("the upload stopped after {total} bytes: {e}")])
        })?;
        total += frame.len() as u64;
        while !frame.is_empty() {
            let n = frame.len().min(PIECE - piece.len());
            piece.extend_from_slice(&frame.split_to(n));
            if piece.len() == PIECE {
                let full = std::mem::replace(&mut piece, Vec::with_capacity(PIECE));
                tx.send(Piece::Data(full.into())).await.map_err(|_| writer_gone())?;
            }
        }
        if let Some(t) = task {
            t.check_cancelled()?;
            if let Some(l) = length.filter(|l| *l > 0) {
                t.progress(0.99 * total as f64 / l as f64);
            }
        }
    }
    if !piece.is_empty() {
        tx.send(Piece::Data(piece.into())).await.map_err(|_| writer_gone())?;
    }
    tx.send(Piece::End).await.map_err(|_| writer_gone())
}

/// The writer: pieces into the sink until `End` (the channel closing first means the upload failed).
fn write_all(
    mut sink: Sink,
    mut rx: tokio::sync::mpsc::Receiver<Piece>,
    size: u64,
    vdi: String,
) -> Result<Sink, ApiError> {
    let io = |e: std::io::Error| ApiError::new(&codes::VDI_IO_ERROR, [e.to_string()]);
    loop {
        match rx.blocking_recv() {
            None => return Err(ApiError::new(&codes::VDI_IO_ERROR, ["the upload stopped"])),
            Some(Piece::End) => return Ok(sink),
            Some(Piece::Data(data)) => match &mut sink {
                Sink::Spool { file } => file.write_all(&data).map_err(io)?,
                Sink::Raw { chain, offset } => {
                    if *offset + data.len() as u64 > size {
                        return Err(ApiError::new(
                            &codes::VDI_TOO_SMALL,
                            [vdi.clone(), (*offset + data.len() as u64).to_string()],
                        ));
                    }
                    write_nonzero(chain, &data, *offset).map_err(io)?;
                    *offset += data.len() as u64;
                }
            },
        }
    }
}

/// Writes `data` at `offset`, leaving out all-zero runs of [`ZERO_RUN`].
fn write_nonzero(chain: &Chain, data: &[u8], offset: u64) -> std::io::Result<()> {
    let mut start: Option<usize> = None;
    let mut i = 0;
    while i < data.len() {
        let end = (i + ZERO_RUN).min(data.len());
        // An OR over the run (no early exit) is vectorised: far faster than `all` on mostly-zero data.
        let zero = data[i..end].iter().fold(0u8, |a, b| a | b) == 0;
        match (zero, start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                chain.write_at(&data[s..i], offset + s as u64)?;
                start = None;
            }
            _ => {}
        }
        i = end;
    }
    if let Some(s) = start {
        chain.write_at(&data[s..], offset + s as u64)?;
    }
    Ok(())
}

/// Copies an uploaded VHD (`spool`, untrusted) into the new file `new` of `size` bytes.
fn copy_vhd(t: &Target, spool: &Path, new: &Path, size: u64) -> Result<(), ApiError> {
    let bad = |e: storage_repo::Error| match e {
        storage_repo::Error::Io { .. } => ApiError::from(e),
        other => ApiError::new(&codes::IMPORT_ERROR, [format!("the uploaded VHD is not valid: {other}")]),
    };
    // Read its metadata alone first: a differencing disk's parent must never be looked for in the SR.
    let info = vhd::read_info(spool).map_err(bad)?;
    if info.disk_type == DiskType::Differencing || info.parent.is_some() {
        return Err(ApiError::new(
            &codes::IMPORT_ERROR,
            ["the uploaded VHD is a differencing disk; upload a dynamic or fixed VHD (or a raw image)".to_string()],
        ));
    }
    if info.virtual_size > size {
        return Err(ApiError::new(&codes::VDI_TOO_SMALL, [t.vdi.clone(), info.virtual_size.to_string()]));
    }
    let src = Chain::open(spool, false).map_err(bad)?;
    let dst = Chain::open(new, true)?;
    vhd::copy_into(&src, &dst).map_err(bad)?;
    Ok(())
}

/// Converts an uploaded VMDK (`spool`, untrusted: monolithicSparse or streamOptimized) into the new file `new` of
/// `size` bytes: only its allocated, non-zero grains are written.
fn copy_vmdk(t: &Target, spool: &Path, new: &Path, size: u64) -> Result<(), ApiError> {
    use storage_repo::formats::vmdk;
    let bad = |e: storage_repo::Error| match e {
        storage_repo::Error::Io { .. } => ApiError::from(e),
        other => ApiError::new(&codes::IMPORT_ERROR, [format!("the uploaded VMDK is not valid: {other}")]),
    };
    let mut reader = vmdk::open(spool).map_err(bad)?;
    let capacity = reader.info().capacity;
    if capacity > size {
        return Err(ApiError::new(&codes::VDI_TOO_SMALL, [t.vdi.clone(), capacity.to_string()]));
    }
    let dst = Chain::open(new, true)?;
    let io = |e: std::io::Error| ApiError::new(&codes::VDI_IO_ERROR, [e.to_string()]);
    while let Some((offset, data)) = reader.next_data().map_err(bad)? {
        write_nonzero(&dst, data, offset).map_err(io)?;
    }
    dst.flush().map_err(io)?;
    Ok(())
}
