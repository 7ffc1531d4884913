//! Storage: the SR, PBD, VDI and VBD classes mapped onto `storage-repo`.
//!
//! - [`Storage`] holds the attached SRs (one backend per plugged PBD) and the block servers ([`tapdisk`]).
//! - [`sm`] describes the SR types (`ext`, `iso`) as `SM` objects, and creates "Local storage" on first start.
//! - [`sync`] makes the store follow the files: `SR.scan` and every operation that changes files end with it.
//! - [`gc`] runs the collector in the background: deleted snapshots are merged out of their chains.
//! - [`nbd_export`] serves VDIs over NBD on TCP to backup tools (`VDI.get_nbd_info`), through their block servers.
//!
//! **The files are the truth for what a VDI holds; the store for what it is called.** A VDI record of an `ext` SR
//! exists for every `<uuid>.vhd` file (base copies as `managed=false`), and a file removed by hand takes its record
//! with it at the next scan.

pub mod gc;
pub mod nbd_export;
pub mod sm;
pub mod sync;
pub mod tapdisk;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use host_agent::spec::DiskSource;
use storage_repo::sr::{FileSr, IsoSr};
use uuid::Uuid;
use xapi_types::generated::errors as codes;

use crate::error::ApiError;
use crate::hv::rec::{Rec, class};
use crate::state::State;

/// An attached SR.
#[derive(Debug, Clone)]
pub enum Backend {
    Ext(Arc<FileSr>),
    Iso(Arc<IsoSr>),
}

pub struct Storage {
    /// Where new `ext` SRs go unless `device-config:location` says otherwise.
    pub sr_root: PathBuf,
    pub tapdisks: tapdisk::Tapdisks,
    /// Attached SRs by SR ref.
    backends: Mutex<HashMap<String, Backend>>,
    /// One lock per SR: an operation's file work, its records and the rescan that follows happen under it, so
    /// that no rescan (nor the collector) sees the files and the records of an operation half-way.
    sr_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    pub gc: gc::Kick,
}

impl Storage {
    pub fn new(data_dir: &Path, run_dir: &Path) -> Storage {
        Storage {
            sr_root: data_dir.join("sr"),
            tapdisks: tapdisk::Tapdisks::new(data_dir, run_dir),
            backends: Mutex::default(),
            sr_locks: Mutex::default(),
            gc: gc::Kick::default(),
        }
    }

    fn backends(&self) -> std::sync::MutexGuard<'_, HashMap<String, Backend>> {
        self.backends.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The backend of an attached SR; `SR_NOT_ATTACHED` otherwise.
    pub fn backend(&self, sr: &str) -> Result<Backend, ApiError> {
        self.backends().get(sr).cloned().ok_or_else(|| ApiError::new(&codes::SR_NOT_ATTACHED, [sr]))
    }

    /// Runs `f` holding the locks of SRs `srs` (taken in a fixed order, so that two operations on the same two
    /// SRs cannot deadlock).
    pub fn with_srs<T>(&self, srs: &[&str], f: impl FnOnce() -> T) -> T {
        let mut names: Vec<&str> = srs.to_vec();
        names.sort_unstable();
        names.dedup();
        let locks: Vec<Arc<Mutex<()>>> = {
            let mut map = self.sr_locks.lock().unwrap_or_else(|e| e.into_inner());
            names.iter().map(|n| map.entry(n.to_string()).or_default().clone()).collect()
        };
        let _guards: Vec<_> = locks.iter().map(|l| l.lock().unwrap_or_else(|e| e.into_inner())).collect();
        f()
    }

    pub fn attached(&self) -> Vec<(String, Backend)> {
        self.backends().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    pub fn set_backend(&self, sr: &str, b: Option<Backend>) {
        match b {
            Some(b) => self.backends().insert(sr.to_string(), b),
            None => self.backends().remove(sr),
        };
    }
}

/// A VDI's file-name UUID (its record's `uuid`).
pub fn vdi_uuid(state: &State, vdi: &str) -> Result<(Uuid, String), ApiError> {
    let vdi_c = class("VDI");
    let row = state.store.get(vdi_c, vdi)?;
    let rec = Rec::new(vdi_c, &row.fields);
    let u = Uuid::parse_str(rec.str("uuid")).map_err(|_| ApiError::uuid_invalid("VDI", rec.str("uuid")))?;
    Ok((u, rec.str("SR").to_string()))
}

/// How a guest reaches VDI `vdi`: an ISO image is opened by QEMU itself; a VHD chain is served by its block server
/// (started if it is not running).
pub fn disk_source(state: &State, vdi: &str, writable: bool) -> Result<DiskSource, ApiError> {
    let vdi_c = class("VDI");
    let row = state.store.get(vdi_c, vdi)?;
    let rec = Rec::new(vdi_c, &row.fields);
    match state.storage.backend(rec.str("SR"))? {
        Backend::Iso(iso) => Ok(DiskSource::File(iso.path(rec.str("location"))?)),
        Backend::Ext(sr) => {
            let (uuid, _) = vdi_uuid(state, vdi)?;
            if !rec.bool("managed") {
                return Err(ApiError::new(&codes::VDI_NOT_MANAGED, [vdi]));
            }
            let (socket, export) = state.storage.tapdisks.ensure(&uuid, &sr.path(&uuid), writable)?;
            Ok(DiskSource::Nbd { socket, export })
        }
    }
}

/// Whether an NBD export connection is reading VDI `vdi` (its block server is held).
pub fn exported(state: &State, vdi: &str) -> bool {
    let vdi_c = class("VDI");
    state.store.get(vdi_c, vdi).is_ok_and(|row| state.storage.tapdisks.held(Rec::new(vdi_c, &row.fields).str("uuid")))
}

/// Releases an NBD export connection's hold on VDI `uuid`'s block server `pid`: the server stops unless an
/// attached VBD or another export connection uses it.
pub fn release_export(state: &State, uuid: &str, pid: u32) {
    if state.storage.tapdisks.release(uuid, pid) {
        release_unused(state);
    } else {
        state.storage.gc.kick();
    }
}

/// Stops the block servers whose VDIs no attached VBD uses any more (and no NBD export holds), and wakes the
/// collector.
pub fn release_unused(state: &State) {
    if state.storage.tapdisks.none() {
        return;
    }
    let (vbd_c, vdi_c) = (class("VBD"), class("VDI"));
    let mut used = Vec::new();
    for (_, row) in state.store.all(vbd_c) {
        let vbd = Rec::new(vbd_c, &row.fields);
        if vbd.bool("currently_attached")
            && let Some(vdi) = vbd.reference("VDI")
            && let Ok(v) = state.store.get(vdi_c, vdi)
        {
            used.push(Rec::new(vdi_c, &v.fields).str("uuid").to_string());
        }
    }
    let stopped = state.storage.tapdisks.stop_all_but(&used);
    if stopped > 0 {
        state.storage.gc.kick();
    }
}

impl From<storage_repo::Error> for ApiError {
    fn from(e: storage_repo::Error) -> ApiError {
        use storage_repo::Error as E;
        match &e {
            E::Io { .. } | E::Corrupt { .. } => {
                tracing::warn!(error = %e, "storage I/O error");
                ApiError::new(&codes::VDI_IO_ERROR, [e.to_string()])
            }
            E::Invalid(_) => {
                ApiError::new(&codes::SR_BACKEND_FAILURE, ["INVALID_ARGUMENT".into(), e.to_string(), String::new()])
            }
            E::NotFound(_) => {
                ApiError::new(&codes::SR_BACKEND_FAILURE, ["NOT_FOUND".into(), e.to_string(), String::new()])
            }
            E::Busy(_) => ApiError::new(&codes::SR_BACKEND_FAILURE, ["BUSY".into(), e.to_string(), String::new()]),
        }
    }
}

/// `device-config:location` of a PBD, or for an `ext` SR without one, its default directory.
fn location(state: &State, sr_type: &str, sr_uuid: &str, device_config: &Value) -> Result<PathBuf, ApiError> {
    match device_config.get("location").and_then(Value::as_str) {
        Some(l) if !l.is_empty() => Ok(PathBuf::from(l)),
        _ if sr_type == "ext" => Ok(state.storage.sr_root.join(sr_uuid)),
        _ => Err(ApiError::new(
            &codes::SR_BACKEND_FAILURE,
            ["CONFIGURATION_MISSING".into(), "device-config:location is required".into(), String::new()],
        )),
    }
}

/// The backend for SR `sr` of `sr_type` as `device_config` describes it (attaching runs a crashed operation's
/// recovery).
pub fn open_backend(state: &State, sr: &str, device_config: &Value) -> Result<Backend, ApiError> {
    let sr_c = class("SR");
    let row = state.store.get(sr_c, sr)?;
    let rec = Rec::new(sr_c, &row.fields);
    let ty = rec.str("type");
    let loc = location(state, ty, rec.str("uuid"), device_config)?;
    match ty {
        "ext" => Ok(Backend::Ext(Arc::new(FileSr::attach(&loc)?))),
        "iso" => Ok(Backend::Iso(Arc::new(IsoSr::attach(&loc)?))),
        other => Err(ApiError::new(&codes::SR_UNKNOWN_DRIVER, [other])),
    }
}

/// `PBD.plug`: attaches the SR and scans it.
pub fn plug(state: &State, pbd: &str) -> Result<(), ApiError> {
    let pbd_c = class("PBD");
    let row = state.store.get(pbd_c, pbd)?;
    let rec = Rec::new(pbd_c, &row.fields);
    let sr = rec.str("SR").to_string();
    let backend = open_backend(state, &sr, rec.get("device_config"))?;
    state.storage.set_backend(&sr, Some(backend));
    state.store.transaction(|tx| {
        tx.update(pbd_c, pbd, |f| {
            crate::hv::rec::set(pbd_c, f, "currently_attached", true);
        })
    })?;
    sync::sr(state, &sr)
}

/// `PBD.unplug`: refused while a VM uses one of the SR's VDIs.
pub fn unplug(state: &State, pbd: &str) -> Result<(), ApiError> {
    let (pbd_c, vdi_c, vbd_c) = (class("PBD"), class("VDI"), class("VBD"));
    let row = state.store.get(pbd_c, pbd)?;
    let sr = Rec::new(pbd_c, &row.fields).str("SR").to_string();
    let si = vdi_c.field("SR").expect("VDI.SR").0;
    for (vdi, row) in state.store.filter(vdi_c, |r| r.fields[si].as_str() == Some(&sr)) {
        for vbd in Rec::new(vdi_c, &row.fields).refs("VBDs") {
            if state.store.get(vbd_c, vbd).is_ok_and(|b| Rec::new(vbd_c, &b.fields).bool("currently_attached")) {
                return Err(ApiError::new(&codes::VDI_IN_USE, [vdi.to_string(), "PBD.unplug".into()]));
            }
        }
        if state.storage.tapdisks.held(Rec::new(vdi_c, &row.fields).str("uuid")) {
            return Err(ApiError::new(&codes::VDI_IN_USE, [vdi.to_string(), "PBD.unplug".into()]));
        }
    }
    state.storage.set_backend(&sr, None);
    state.store.transaction(|tx| {
        tx.update(pbd_c, pbd, |f| {
            crate::hv::rec::set(pbd_c, f, "currently_attached", false);
        })
    })?;
    Ok(())
}

/// At start: the SM objects, "Local storage" on a first start, every SR of this host attached (as xapi plugs all
/// PBDs when a host boots; interrupted operations are recovered, the files rescanned), the block servers a previous
/// run left, and the collector.
pub fn start(state: &Arc<State>) -> anyhow::Result<()> {
    sm::ensure(&state.store)?;
    sm::ensure_local_sr(state)?;
    state.storage.tapdisks.adopt();
    let pbd_c = class("PBD");
    for (pbd, row) in state.store.all(pbd_c) {
        if Rec::new(pbd_c, &row.fields).str("host") != &*state.host {
            continue;
        }
        if let Err(e) = plug(state, &pbd) {
            tracing::error!(pbd = %pbd, error = %e.description().join(" "), "could not attach an SR at start");
            let _ = state.store.transaction(|tx| {
                tx.update(pbd_c, &pbd, |f| {
                    crate::hv::rec::set(pbd_c, f, "currently_attached", false);
                })
            });
        }
    }
    gc::spawn(state.clone());
    Ok(())
}

use xapi_types::Value;

/// Deletes VDI `vdi`'s record and its VBDs' in `tx` (the file is the caller's business).
pub fn delete_vdi_record(tx: &mut crate::db::Txn<'_>, state: &State, vdi: &str) -> Result<(), crate::db::DbError> {
    let (vdi_c, vbd_c) = (class("VDI"), class("VBD"));
    let f = tx.get(vdi_c, vdi)?;
    for b in Rec::new(vdi_c, &f).refs("VBDs") {
        if state.store.exists(vbd_c, b) {
            tx.delete(vbd_c, b)?;
        }
    }
    tx.delete(vdi_c, vdi)
}

/// The attached VBDs of VDI `vdi`, with whether each writes.
pub fn attached_vbds<'a>(state: &'a State, vdi: &str) -> impl Iterator<Item = (String, bool)> + 'a {
    let (vdi_c, vbd_c) = (class("VDI"), class("VBD"));
    let vbds: Vec<String> = state
        .store
        .get(vdi_c, vdi)
        .map(|row| Rec::new(vdi_c, &row.fields).refs("VBDs").into_iter().map(str::to_string).collect())
        .unwrap_or_default();
    vbds.into_iter().filter_map(move |v| {
        let row = state.store.get(vbd_c, &v).ok()?;
        let b = Rec::new(vbd_c, &row.fields);
        b.bool("currently_attached").then(|| (v.clone(), b.str("mode") == "RW"))
    })
}

/// xapi's sharing rule: a VDI attached read-write anywhere is attached nowhere else, unless it is `sharable`. An
/// NBD export reading a VDI from a read-only block server counts as a read-only attachment (xapi-nbd plugs a
/// read-only VBD into dom0 on XenServer).
pub fn check_sharing(state: &State, vdi: &str, vbd: &str, writable: bool) -> Result<(), ApiError> {
    let vdi_c = class("VDI");
    let rec = state.store.get(vdi_c, vdi)?;
    let rec = Rec::new(vdi_c, &rec.fields);
    if rec.bool("sharable") {
        return Ok(());
    }
    if writable && state.storage.tapdisks.held_read_only(rec.str("uuid")) {
        return Err(ApiError::new(&codes::VDI_IN_USE, [vdi.to_string(), "attach".into()]));
    }
    for (other, rw) in attached_vbds(state, vdi) {
        if other != vbd && (rw || writable) {
            return Err(ApiError::new(&codes::VDI_IN_USE, [vdi.to_string(), "attach".into()]));
        }
    }
    Ok(())
}

/// Makes sure the block servers of VM `vm`'s disks run (a resume restores a domain whose saved XML names their
/// sockets).
pub fn attach_vm_disks(state: &State, vm: &str) -> Result<(), ApiError> {
    let vm_c = class("VM");
    let row = state.store.get(vm_c, vm)?;
    for vbd in Rec::new(vm_c, &row.fields).refs("VBDs") {
        vbd_disk(state, vm, vbd)?;
    }
    Ok(())
}

/// The disk a VBD gives its VM: an empty CD drive, an ISO image, or a VHD chain through its block server (started
/// here). Checks the sharing rule; a VDI whose SR is not attached answers `VM_REQUIRES_SR`.
pub fn vbd_disk(state: &State, vm: &str, vbd: &str) -> Result<host_agent::spec::Disk, ApiError> {
    use host_agent::spec::{Disk, DiskFormat, DiskKind};
    let (vbd_c, vdi_c) = (class("VBD"), class("VDI"));
    let row = state.store.get(vbd_c, vbd)?;
    let b = Rec::new(vbd_c, &row.fields);
    let cdrom = b.str("type") == "CD";
    let position =
        b.str("userdevice").parse().map_err(|_| ApiError::new(&codes::INVALID_DEVICE, [b.str("userdevice")]))?;
    let kind = if cdrom { DiskKind::Cdrom } else { DiskKind::Disk };
    if b.bool("empty") {
        return Ok(Disk { position, source: DiskSource::Empty, format: DiskFormat::Raw, kind, readonly: true });
    }
    let Some(vdi) = b.reference("VDI") else {
        return Err(ApiError::handle_invalid("VDI", b.str("VDI")));
    };
    let vrow = state.store.get(vdi_c, vdi)?;
    let v = Rec::new(vdi_c, &vrow.fields);
    let readonly = cdrom || b.str("mode") == "RO" || v.bool("read_only");
    check_sharing(state, vdi, vbd, !readonly)?;
    let source = match disk_source(state, vdi, !readonly) {
        Err(e) if e.code == codes::SR_NOT_ATTACHED.name => {
            return Err(ApiError::new(&codes::VM_REQUIRES_SR, [vm.to_string(), v.str("SR").to_string()]));
        }
        other => other?,
    };
    Ok(Disk { position, source, format: DiskFormat::Raw, kind, readonly })
}
