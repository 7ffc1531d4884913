//! `PUT /import_raw_vdi` (or `POST`): an upload replaces a VDI's content.
//!
//! The body (with a `Content-Length` or chunked) is handed, frame by frame as hyper reads it (no copy), to one
//! blocking writer through a channel of a few dozen frames. `format=raw` is gathered into 1 MiB pieces and written
//! into a new sparse VHD `<uuid>.vhd.import`, all-zero 4 KiB runs skipped; `format=vhd` and `format=vmdk` are converted while they arrive
//! (`storage_repo::formats::{vhd,vmdk}::ingest`, which read the body once, front to back, as hostile input) into
//! the new VHD. Only when all is written and flushed does the new file replace `<uuid>.vhd`, under the SR's lock,
//! followed by a rescan. Every failure (bad data, too long, truncated, disconnected, cancelled) deletes the
//! temporary files and leaves the VDI as it was.
//!
//! A differencing VHD is a delta (`export_raw_vdi?base=`): it is applied onto a copy of the VDI's content if the
//! VDI holds the delta's base. What a VDI holds is known only from imports: a VHD import records the upload's
//! footer UUID (a VHD export's is the exported VDI's UUID; a delta's, the VDI it was taken from) with the new
//! file's modification time in `sm_config:vhd-content` ([`CONTENT_KEY`]); the record counts only while the file
//! is unchanged since (same mtime: a guest's write, a copy or a raw import changes it).
//!
//! With `sr_id=` (or `sr=`) instead of `vdi=`, the import makes the VDI: its size is the image's (the VHD or VMDK header, or a
//! raw upload's `Content-Length`, or `virtual_size=`), and it is destroyed again if the import fails.
//!
//! One import at a time per VDI; temporary files that no running import owns are a crash's leftovers, removed
//! by the next import of that VDI.
//!
//! Refused: a VDI in use (attached, exported, its block server running), and one with a parent or children
//! (a snapshot chain; replacing the leaf's file would cut it off).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State as AxState};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use storage_repo::block::BlockDevice;
use storage_repo::formats::ingest::{self, IngestInfo, IngestSink};
use storage_repo::formats::vhd::{self, Chain};
use uuid::Uuid;
use xapi_types::Value;
use xapi_types::generated::errors as codes;

use super::{Format, PIECE, Refusal, Target, check_unused, conclude, param};
use crate::db;
use crate::error::ApiError;
use crate::hv::rec::{class, set};
use crate::state::{Peer, State};
use crate::storage::sync;

/// All-zero runs of this size (aligned) are not written: the new file is sparse, so they read as zeros. (4 KiB,
/// the file system's block, as `qemu-img convert`'s default `-S`.)
const ZERO_RUN: usize = 4 << 10;
/// The receiver's error when the writer has stopped (the writer's own error is the one to report).
const WRITER_GONE: &str = "the writer stopped";
/// After this long without a byte of the body, the progress and a cancel are looked at anyway.
const QUIET: std::time::Duration = std::time::Duration::from_millis(500);
/// How much of a refused upload is still read (and dropped) before the answer, bytes.
const DRAIN_LIMIT: usize = 64 << 20;
/// How long a refused upload's body is still read.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);
/// Frames of the body in flight between the receiver and the writer (hyper's frames are at most ~400 KiB).
const IN_FLIGHT: usize = 32;
/// The `sm_config` key recording which disk's content a VDI holds: `<uuid> <file mtime in ns>`.
pub const CONTENT_KEY: &str = "vhd-content";

/// The file's modification time, ns since the epoch.
fn mtime_ns(path: &Path) -> Option<u128> {
    let m = std::fs::metadata(path).ok()?.modified().ok()?;
    Some(m.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos())
}

/// The disk whose content VDI `t` holds, if an import recorded it and the file has not changed since.
fn content_of(state: &State, t: &Target) -> Option<Uuid> {
    let vdi_c = class("VDI");
    let row = state.store.get(vdi_c, &t.vdi).ok()?;
    let v = crate::hv::rec::Rec::new(vdi_c, &row.fields).map_get("sm_config", CONTENT_KEY)?.to_string();
    let (uuid, stamp) = v.split_once(' ')?;
    (stamp.parse::<u128>().ok()? == mtime_ns(&t.fsr.path(&t.uuid))?).then(|| Uuid::parse_str(uuid).ok())?
}

/// Records (or, `None`, forgets) the disk whose content VDI `t` now holds.
fn set_content(state: &State, t: &Target, content: Option<Uuid>) -> Result<(), ApiError> {
    let vdi_c = class("VDI");
    let value = content.and_then(|u| Some(format!("{u} {}", mtime_ns(&t.fsr.path(&t.uuid))?)));
    state.store.transaction(|tx| {
        tx.update(vdi_c, &t.vdi, |f| {
            let mut smc: Vec<(String, Value)> = crate::hv::rec::Rec::new(vdi_c, f)
                .get("sm_config")
                .as_struct()
                .unwrap_or_default()
                .iter()
                .filter(|(k, _)| k != CONTENT_KEY)
                .cloned()
                .collect();
            if let Some(v) = &value {
                smc.push((CONTENT_KEY.into(), Value::str(v.clone())));
            }
            set(vdi_c, f, "sm_config", Value::Struct(smc));
        })
    })?;
    Ok(())
}

pub async fn import(
    AxState(state): AxState<Arc<State>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    req: Request,
) -> Response {
    let query = req.uri().query().unwrap_or_default().to_string();
    let creating = param(&query, "vdi").is_none() && sr_param(&query).is_some();
    let prepared = if creating {
        match super::authenticate(&state, &peer, &query, req.headers()).await {
            Ok(who) => new_target(&state, &query, who).map_err(|e| Box::new(Refusal::from(e).into_response())),
            Err(r) => Err(Box::new(r.into_response())),
        }
    } else {
        super::prelude(&state, &peer, &query, req.headers()).await.map(|t| (t, None)).map_err(Box::new)
    };
    let prepared = prepared.and_then(|(t, create)| match t.who.may(&state, "put_import_raw_vdi", "VDI", "create") {
        Ok(()) => Ok((t, create)),
        Err(e) => {
            let (who, uuid) = (&t.who, t.uuid.to_string());
            let (session, user) = (who.session.as_deref(), who.user.as_deref());
            crate::audit::http(&state, &peer, session, user, "PUT /import_raw_vdi", &uuid, Err(&e));
            Err(Box::new(super::conclude(t.task, Err(e))))
        }
    });
    let (mut t, create) = match prepared {
        Ok(p) => p,
        Err(r) => {
            drain(&mut req.into_body().into_data_stream()).await;
            return *r;
        }
    };
    let length = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let task = t.task.take();
    let (who, vdi_uuid) = (t.who.clone(), t.uuid.to_string());
    let outcome = receive(&state, t, create, req, length, task.as_ref()).await;
    crate::audit::http(
        &state,
        &peer,
        who.session.as_deref(),
        who.user.as_deref(),
        "PUT /import_raw_vdi",
        &vdi_uuid,
        outcome.as_ref().map(|_| ()),
    );
    // `sr=`: the new VDI's ref is the answer's body (the task's result too), for a script to go on with.
    let made = match (&outcome, creating) {
        (Ok(v), true) => Some(v.trim_start_matches("<value>").trim_end_matches("</value>").to_string()),
        _ => None,
    };
    let mut response = conclude(task, outcome);
    if let Some(vdi) = made {
        *response.body_mut() = axum::body::Body::from(format!("{vdi}\n"));
        response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain"));
    }
    response
}

/// What `sr=` asks for: a new VDI of the image's size.
struct NewVdi {
    name_label: String,
    name_description: String,
    /// `virtual_size=`, or a raw upload's `Content-Length` (filled in later).
    size: Option<u64>,
}

/// `sr_id=` (xapi's name) or `sr=`: the SR an import without `vdi=` makes its VDI in.
fn sr_param(query: &str) -> Option<String> {
    param(query, "sr_id").or_else(|| param(query, "sr"))
}

/// The target of an import that makes its VDI: the SR, a UUID chosen now (the VDI gets it when it is made).
fn new_target(state: &Arc<State>, query: &str, who: super::Who) -> Result<(Target, Option<NewVdi>), ApiError> {
    let sr_c = class("SR");
    let s = sr_param(query).unwrap_or_default();
    let sr = if state.store.get(sr_c, &s).is_ok() {
        s
    } else {
        state.store.by_uuid(sr_c, &s).map_err(|_| ApiError::handle_invalid("SR", &s))?.to_string()
    };
    let fsr = match state.storage.backend(&sr)? {
        crate::storage::Backend::Ext(f) => f,
        crate::storage::Backend::Iso(_) => {
            return Err(ApiError::new(&codes::SR_OPERATION_NOT_SUPPORTED, [sr.as_str()]));
        }
    };
    let format = super::format_of(query)?;
    let size = match param(query, "virtual_size") {
        None => None,
        Some(v) => {
            Some(v.parse::<u64>().ok().filter(|&v| v > 0).ok_or_else(|| ApiError::invalid_value("virtual_size", &v))?)
        }
    };
    let new = NewVdi {
        name_label: param(query, "name_label").unwrap_or_else(|| "Imported disk".into()),
        name_description: param(query, "name_description").unwrap_or_default(),
        size,
    };
    let task = super::task_of(state, query)?;
    Ok((Target { vdi: String::new(), uuid: Uuid::new_v4(), sr, fsr, format, task, who }, Some(new)))
}

/// Makes the VDI an `sr=` import asked for, of `size` bytes, with the UUID chosen for it; returns its ref.
fn make_vdi(state: &State, t: &Target, new: &NewVdi, size: u64) -> Result<String, ApiError> {
    let vdi_c = class("VDI");
    let mut f = db::default_row(vdi_c);
    set(vdi_c, &mut f, "uuid", t.uuid.to_string());
    set(vdi_c, &mut f, "name_label", new.name_label.clone());
    set(vdi_c, &mut f, "name_description", new.name_description.clone());
    set(vdi_c, &mut f, "SR", t.sr.clone());
    set(vdi_c, &mut f, "virtual_size", i64::try_from(size).unwrap_or(i64::MAX));
    set(vdi_c, &mut f, "type", "user");
    match crate::classes::vdi::insert_new(state, db::new_ref(), f)? {
        crate::dispatch::Reply::Value(Value::Str(r)) => Ok(r),
        _ => Err(ApiError::internal("VDI.create gave no ref")),
    }
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

enum Piece {
    Data(Bytes),
    End,
}

/// The new file's path, next to the VDI's.
fn import_path(t: &Target) -> PathBuf {
    t.fsr.path(&t.uuid).with_extension("vhd.import")
}

/// Where a spool went in earlier versions: removed if a crash left one.
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

/// Where the data goes: the new file, made when its size is known (at once for a raw upload into a VDI; when the
/// image's head has been read otherwise), and the VDI itself for an `sr=` import.
struct Writer {
    state: Arc<State>,
    t: Target,
    /// `sr=`: the VDI to make (taken when it is made).
    create: Option<NewVdi>,
    /// The VDI's size (known once it exists).
    size: u64,
    chain: Option<Chain>,
    /// A delta: every write goes in, zeros included.
    delta: bool,
    /// The VDI was made by this import (`sr=`): a failure destroys it.
    made: bool,
    /// The error behind a sink failure (the ingest reports it as an I/O error on its destination).
    failure: Option<ApiError>,
    temps: Temps,
    /// Bytes of a raw upload written so far.
    offset: u64,
    /// What the VDI will hold (a VHD upload's footer UUID), recorded in [`CONTENT_KEY`].
    content: Option<Uuid>,
}

fn io_error(e: std::io::Error) -> ApiError {
    ApiError::new(&codes::VDI_IO_ERROR, [e.to_string()])
}

impl Writer {
    /// Makes the VDI (`sr=`) or checks the size against it, then creates the new file: empty, or (a delta) a
    /// copy of the VDI's content.
    fn open(&mut self, info: &IngestInfo) -> Result<(), ApiError> {
        if let Some(new) = self.create.take() {
            let size = info.capacity.or(new.size).ok_or_else(|| {
                ApiError::new(
                    &codes::IMPORT_ERROR,
                    ["the image's size is not known until its end: give virtual_size= (or a Content-Length)"],
                )
            })?;
            if info.parent.is_some() {
                return Err(ApiError::new(
                    &codes::IMPORT_ERROR,
                    ["a delta (differencing VHD) is applied onto the VDI holding its base: give vdi=, not sr="],
                ));
            }
            self.t.vdi = make_vdi(&self.state, &self.t, &new, size)?;
            self.made = true;
            self.size = vhd::read_info(&self.t.fsr.path(&self.t.uuid))?.virtual_size;
        }
        if let Some(c) = info.capacity
            && c > self.size
        {
            return Err(ApiError::new(&codes::VDI_TOO_SMALL, [self.t.vdi.clone(), c.to_string()]));
        }
        let new = import_path(&self.t);
        let current = self.t.fsr.path(&self.t.uuid);
        if self.t.format == Format::Vhd {
            self.content = info.uuid;
        }
        if let Some(parent) = info.parent {
            let holds = content_of(&self.state, &self.t);
            if holds != Some(parent) {
                let holds = holds.map_or_else(
                    || "no known disk's content (it was not made by a VHD import, or has changed since)".to_string(),
                    |u| format!("disk {u}'s content"),
                );
                return Err(ApiError::new(
                    &codes::IMPORT_ERROR,
                    [format!(
                        "the uploaded VHD is a delta onto disk {parent}, but VDI {} holds {holds}: import the base \
                         first (a VHD export of it), or upload a dynamic or fixed VHD",
                        self.t.vdi
                    )],
                ));
            }
        }
        vhd::create_dynamic(&new, info.uuid.unwrap_or_else(Uuid::new_v4), self.size)?;
        let chain = Chain::open_scratch(&new)?;
        // A delta goes onto a copy of what the VDI holds.
        if info.parent.is_some() {
            vhd::copy_into(&Chain::open(&current, false)?, &chain)?;
            self.delta = true;
        }
        self.chain = Some(chain);
        Ok(())
    }

    fn put(&mut self, offset: u64, data: &[u8]) -> Result<(), ApiError> {
        let end = offset + data.len() as u64;
        if end > self.size {
            return Err(ApiError::new(&codes::VDI_TOO_SMALL, [self.t.vdi.clone(), end.to_string()]));
        }
        let chain = self.chain.as_ref().ok_or_else(|| ApiError::internal("a write before the file was made"))?;
        if self.delta { chain.write_at(data, offset) } else { write_nonzero(chain, data, offset) }.map_err(io_error)
    }

    /// Keeps `e` as the cause and gives the ingest an I/O error to stop on.
    fn fail(&mut self, e: ApiError) -> std::io::Error {
        let msg = e.description().join(" ");
        self.failure = Some(e);
        std::io::Error::other(msg)
    }
}

impl IngestSink for Writer {
    fn begin(&mut self, info: &IngestInfo) -> std::io::Result<()> {
        self.open(info).map_err(|e| self.fail(e))
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.put(offset, data).map_err(|e| self.fail(e))
    }
}

/// Checks the target and claims it, then receives the body into the new file and swaps it in.
async fn receive(
    state: &Arc<State>,
    t: Target,
    create: Option<NewVdi>,
    req: Request,
    length: Option<u64>,
    task: Option<&super::TaskGuard>,
) -> Result<String, ApiError> {
    // Setting up: checks, the claim, leftovers of a crash removed; a raw upload's file made at once.
    let st = state.clone();
    let setup = tokio::task::spawn_blocking(move || -> Result<Writer, ApiError> {
        let size = if create.is_none() {
            check_unused(&st, &t, "import")?;
            check_standalone(&t)?;
            vhd::read_info(&t.fsr.path(&t.uuid))?.virtual_size
        } else {
            0
        };
        let mut temps = Temps::claim(&t)?;
        for p in [import_path(&t), spool_path(&t)] {
            let _ = std::fs::remove_file(&p);
            temps.files.push(p);
        }
        let mut w = Writer {
            state: st,
            t,
            create,
            size,
            chain: None,
            delta: false,
            made: false,
            failure: None,
            temps,
            offset: 0,
            content: None,
        };
        if w.t.format == Format::Raw {
            if let Some(new) = w.create.as_mut() {
                new.size = new.size.or(length);
            }
            let capacity = if w.create.is_some() { None } else { Some(0) };
            w.open(&IngestInfo { capacity, uuid: None, parent: None })?;
        }
        Ok(w)
    })
    .await
    .map_err(ApiError::internal)
    .and_then(|r| r);
    let writer = match setup {
        Ok(w) => w,
        Err(e) => {
            drain(&mut req.into_body().into_data_stream()).await;
            return Err(e);
        }
    };

    // Receiving: pieces go to one blocking writer.
    let (tx, rx) = tokio::sync::mpsc::channel::<Piece>(IN_FLIGHT);
    let writing = tokio::task::spawn_blocking(move || write_all(writer, rx, length));
    let received = pump(req, tx, length, task).await;
    let written = writing.await.map_err(ApiError::internal)?;
    // When the writer stopped first, its error is the cause (e.g. too long); otherwise the receiver's is (a
    // truncated body, a cancelled task).
    let (writer, failed) = match (received, written) {
        (Ok(()), (w, Ok(()))) => (w, None),
        (Err(e), (w, Err(f))) if e.params.first().map(String::as_str) == Some(WRITER_GONE) => (w, Some(f)),
        (Err(e), (w, _)) | (Ok(()), (w, Err(e))) => (w, Some(e)),
    };

    // Finishing: flush, swap in, rescan; or undo (a VDI made for the import is destroyed). Blocking; the
    // temporary files go with it whatever happens.
    let st = state.clone();
    tokio::task::spawn_blocking(move || {
        let Writer { t, chain, temps, made, content, .. } = writer;
        let swapped = match (failed, chain) {
            (Some(e), _) => Err(e),
            (None, None) => Err(ApiError::new(&codes::IMPORT_ERROR, ["the upload held no image"])),
            (None, Some(chain)) => chain.flush().map_err(io_error).and_then(|()| {
                drop(chain);
                let new = import_path(&t);
                st.storage.with_srs(&[&t.sr], || {
                    check_unused(&st, &t, "import")?;
                    check_standalone(&t)?;
                    let path = t.fsr.path(&t.uuid);
                    std::fs::rename(&new, &path)
                        .map_err(|e| ApiError::new(&codes::VDI_IO_ERROR, [format!("{}: {e}", path.display())]))?;
                    sync_dir(t.fsr.root());
                    set_content(&st, &t, content)?;
                    sync::sr_held(&st, &t.sr)
                })
            }),
        };
        drop(temps);
        match swapped {
            // The task's result is the XML-RPC value of the VDI's ref, as for an `Async.` call returning it.
            Ok(()) => Ok(format!("<value>{}</value>", t.vdi)),
            Err(e) => {
                if made && let Err(d) = crate::classes::vdi::destroy_ref(&st, &t.vdi) {
                    tracing::warn!(vdi = %t.vdi, error = ?d.description(), "the VDI made for a failed import stays");
                }
                Err(e)
            }
        }
    })
    .await
    .map_err(ApiError::internal)?
}

fn sync_dir(dir: &Path) {
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), error = %e, "directory not synced");
    }
}

/// Hands the body's frames to the writer as they come (no copy); reports progress and stops on cancellation.
async fn pump(
    req: Request,
    tx: tokio::sync::mpsc::Sender<Piece>,
    length: Option<u64>,
    task: Option<&super::TaskGuard>,
) -> Result<(), ApiError> {
    let mut body = req.into_body().into_data_stream();
    let mut total = 0u64;
    let report = |total: u64| -> Result<(), ApiError> {
        if let Some(t) = task {
            t.check_cancelled()?;
            if let Some(l) = length.filter(|l| *l > 0) {
                t.progress(0.99 * total as f64 / l as f64);
            }
        }
        Ok(())
    };
    loop {
        // A client that pauses still sees the latest progress, and a cancel is noticed without waiting for bytes.
        let next = match tokio::time::timeout(QUIET, body.next()).await {
            Ok(next) => next,
            Err(_) => {
                report(total)?;
                continue;
            }
        };
        let Some(frame) = next else { break };
        let frame = frame.map_err(|e| {
            ApiError::new(&codes::VDI_IO_ERROR, [format!("the upload stopped after {total} bytes: {e}")])
        })?;
        total += frame.len() as u64;
        if !frame.is_empty() && tx.send(Piece::Data(frame)).await.is_err() {
            return Err(writer_gone(&mut body).await);
        }
        report(total)?;
    }
    if tx.send(Piece::End).await.is_err() {
        return Err(writer_gone(&mut body).await);
    }
    Ok(())
}

/// The writer stopped (refused the image): see [`drain`].
async fn writer_gone(body: &mut axum::body::BodyDataStream) -> ApiError {
    drain(body).await;
    ApiError::new(&codes::VDI_IO_ERROR, [WRITER_GONE])
}

/// Reads on, dropping, up to [`DRAIN_LIMIT`] bytes of a refused upload's body, so that a client still sending
/// sees the answer rather than a reset connection; for at most [`DRAIN_TIME`].
async fn drain(body: &mut axum::body::BodyDataStream) {
    let all = async {
        let mut drained = 0usize;
        while drained < DRAIN_LIMIT {
            match body.next().await {
                Some(Ok(f)) => drained += f.len(),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, all).await;
}

/// The body as a [`Read`] for the ingests: pieces from the channel; the channel closing before `End` is an error
/// (the upload failed).
struct Pieces {
    rx: tokio::sync::mpsc::Receiver<Piece>,
    cur: Bytes,
    ended: bool,
}

impl Read for Pieces {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if !self.cur.is_empty() {
                let n = buf.len().min(self.cur.len());
                buf[..n].copy_from_slice(&self.cur.split_to(n));
                return Ok(n);
            }
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                None => return Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the upload stopped")),
                Some(Piece::End) => self.ended = true,
                Some(Piece::Data(b)) => self.cur = b,
            }
        }
    }
}

/// The writer: the body into the new file until `End` (the channel closing first means the upload failed).
/// Returns the writer (whatever happened: it holds the claim and what to undo) and the outcome.
fn write_all(
    mut w: Writer,
    rx: tokio::sync::mpsc::Receiver<Piece>,
    length: Option<u64>,
) -> (Writer, Result<(), ApiError>) {
    let mut pieces = Pieces { rx, cur: Bytes::new(), ended: false };
    let outcome = match w.t.format {
        // Frames are gathered into 1 MiB pieces, so that writes are large and sector-aligned.
        Format::Raw => {
            let mut piece = Vec::with_capacity(PIECE);
            let put = |w: &mut Writer, piece: &mut Vec<u8>| -> Result<(), ApiError> {
                let at = w.offset;
                w.put(at, piece)?;
                w.offset += piece.len() as u64;
                piece.clear();
                Ok(())
            };
            loop {
                match pieces.rx.blocking_recv() {
                    None => break Err(ApiError::new(&codes::VDI_IO_ERROR, ["the upload stopped"])),
                    Some(Piece::End) => break if piece.is_empty() { Ok(()) } else { put(&mut w, &mut piece) },
                    Some(Piece::Data(mut data)) => {
                        let mut failed = None;
                        while !data.is_empty() {
                            let n = data.len().min(PIECE - piece.len());
                            piece.extend_from_slice(&data.split_to(n));
                            if piece.len() == PIECE
                                && let Err(e) = put(&mut w, &mut piece)
                            {
                                failed = Some(e);
                                break;
                            }
                        }
                        if let Some(e) = failed {
                            break Err(e);
                        }
                    }
                }
            }
        }
        Format::Vhd | Format::Vmdk => {
            let (what, r) = match w.t.format {
                Format::Vhd => ("VHD", run_ingest(Format::Vhd, &mut pieces, length, &mut w)),
                _ => ("VMDK", run_ingest(Format::Vmdk, &mut pieces, length, &mut w)),
            };
            match (r, w.failure.take()) {
                (Err(_), Some(f)) => Err(f),
                (Err(storage_repo::Error::Io { path, source }), None) if path == Path::new(ingest::UPLOAD) => {
                    Err(ApiError::new(&codes::VDI_IO_ERROR, [format!("the upload stopped: {source}")]))
                }
                (Err(e @ storage_repo::Error::Io { .. }), None) => Err(ApiError::from(e)),
                (Err(e), None) => {
                    Err(ApiError::new(&codes::IMPORT_ERROR, [format!("the uploaded {what} is not valid: {e}")]))
                }
                // Whatever follows the image (padding) is read and dropped, so that the receiver finishes.
                (Ok(()), _) => std::io::copy(&mut pieces, &mut std::io::sink())
                    .map(|_| ())
                    .map_err(|e| ApiError::new(&codes::VDI_IO_ERROR, [format!("the upload stopped: {e}")])),
            }
        }
    };
    (w, outcome)
}

/// The format's ingest (`storage_repo::formats::{vhd,vmdk}::ingest`).
fn run_ingest(
    format: Format,
    r: &mut Pieces,
    length: Option<u64>,
    sink: &mut dyn IngestSink,
) -> storage_repo::Result<()> {
    match format {
        Format::Vmdk => storage_repo::formats::vmdk::ingest(r, length, sink),
        Format::Vhd => vhd::ingest(r, length, sink),
        Format::Raw => Err(storage_repo::Error::Invalid("a raw image is not ingested".into())),
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
