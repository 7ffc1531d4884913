//! `VDI` messages: create (a sparse VHD), destroy, snapshot and clone (differencing chains), copy, resize,
//! introduce, forget, update, get_nbd_info, and the setters the datamodel lists as messages. The file work is
//! `storage_repo::sr::FileSr`'s; a VDI being served to a running VM is paused around it (as XenServer pauses its
//! tapdisk).

use std::sync::Arc;

use storage_repo::sr::FileSr;
use uuid::Uuid;
use xapi_types::generated::errors as codes;
use xapi_types::value::NULL_REF;
use xapi_types::{Class, Message, Value};

use crate::db;
use crate::dispatch::{Ctx, Reply};
use crate::error::ApiError;
use crate::generic;
use crate::hv::rec::{Rec, class, set};
use crate::state::State;
use crate::storage::{self, Backend, sync};

type Args = Vec<Value>;

fn arg(args: &[Value], i: usize) -> &str {
    args.get(i).and_then(Value::as_str).unwrap_or_default()
}

/// The `ext` SR holding VDI `vdi` (and the VDI's file UUID); other SR types answer `SR_OPERATION_NOT_SUPPORTED`.
fn ext_of(state: &State, vdi: &str) -> Result<(Arc<FileSr>, Uuid, String), ApiError> {
    let (uuid, sr) = storage::vdi_uuid(state, vdi)?;
    match state.storage.backend(&sr)? {
        Backend::Ext(f) => Ok((f, uuid, sr)),
        Backend::Iso(_) => Err(ApiError::new(&codes::SR_OPERATION_NOT_SUPPORTED, [sr])),
    }
}

fn ext_sr(state: &State, sr: &str) -> Result<Arc<FileSr>, ApiError> {
    state.store.get(class("SR"), sr)?;
    match state.storage.backend(sr)? {
        Backend::Ext(f) => Ok(f),
        Backend::Iso(_) => Err(ApiError::new(&codes::SR_OPERATION_NOT_SUPPORTED, [sr])),
    }
}

/// `VDI_IN_USE [vdi, operation]` if a VBD has the VDI attached or an NBD export is reading it.
fn not_attached(state: &State, vdi: &str, operation: &str) -> Result<(), ApiError> {
    if storage::attached_vbds(state, vdi).next().is_some() || storage::exported(state, vdi) {
        return Err(ApiError::new(&codes::VDI_IN_USE, [vdi, operation]));
    }
    Ok(())
}

fn managed(state: &State, vdi: &str) -> Result<(), ApiError> {
    let vdi_c = class("VDI");
    if !Rec::new(vdi_c, &state.store.get(vdi_c, vdi)?.fields).bool("managed") {
        return Err(ApiError::new(&codes::VDI_NOT_MANAGED, [vdi]));
    }
    Ok(())
}

/// `VDI.create(record)`: a sparse VHD of `virtual_size` (rounded up to 2 MiB) in an `ext` SR.
pub fn create(ctx: &Ctx<'_>, c: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let (r, f) = generic::new_row(ctx, c, args)?;
    insert_new(ctx.state, r, f)
}

/// Makes the file of a new VDI record `f` (its `SR`, `virtual_size` and `uuid` set) and stores the record.
pub fn insert_new(state: &State, r: String, mut f: Vec<Value>) -> Result<Reply, ApiError> {
    let c = class("VDI");
    let sr = Rec::new(c, &f).str("SR").to_string();
    let size = Rec::new(c, &f).int("virtual_size");
    if size <= 0 {
        return Err(ApiError::invalid_value("virtual_size", &size.to_string()));
    }
    let fsr = ext_sr(state, &sr)?;
    let uuid = Uuid::parse_str(Rec::new(c, &f).str("uuid")).map_err(ApiError::internal)?;
    state.storage.with_srs(&[&sr], || {
        let file = fsr.create_vdi(uuid, size as u64)?;
        set(c, &mut f, "location", uuid.to_string());
        set(c, &mut f, "virtual_size", file.virtual_size as i64);
        set(c, &mut f, "physical_utilisation", file.physical_utilisation as i64);
        set(c, &mut f, "managed", true);
        let result = state.store.transaction(|tx| tx.insert(c, &r, f));
        if let Err(e) = result {
            let _ = fsr.destroy_vdi(&uuid);
            return Err(e.into());
        }
        sync::sr_held(state, &sr)
    })?;
    Ok(Reply::Value(Value::Str(r)))
}

/// Deletes a VDI made by a failed multi-disk operation (file and record).
pub fn destroy_ref(state: &State, vdi: &str) -> Result<(), ApiError> {
    let (fsr, uuid, sr) = ext_of(state, vdi)?;
    state.storage.with_srs(&[&sr], || {
        fsr.destroy_vdi(&uuid)?;
        state.store.transaction(|tx| storage::delete_vdi_record(tx, state, vdi))?;
        sync::sr_held(state, &sr)
    })?;
    state.storage.gc.kick();
    Ok(())
}

/// `VDI.destroy`: the file and the record go (with the VDI's detached VBDs); its chain's parents are left to the
/// collector.
pub fn destroy(ctx: &Ctx<'_>, c: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let vdi = arg(&args, 0);
    let row = ctx.state.store.get(c, vdi)?;
    let sr = Rec::new(c, &row.fields).str("SR").to_string();
    not_attached(ctx.state, vdi, "destroy")?;
    managed(ctx.state, vdi)?;
    let (fsr, uuid, _) = ext_of(ctx.state, vdi)?;
    ctx.state.storage.with_srs(&[&sr], || {
        // Checked again under the lock: a concurrent destroy or rescan may have removed it.
        ctx.state.store.get(c, vdi)?;
        fsr.destroy_vdi(&uuid)?;
        ctx.state.store.transaction(|tx| storage::delete_vdi_record(tx, ctx.state, vdi))?;
        sync::sr_held(ctx.state, &sr)
    })?;
    ctx.state.storage.gc.kick();
    Ok(Reply::void())
}

/// Snapshot or clone: the file operation (the VDI's block server paused around it), then a record for the new
/// VDI; the base copy's record comes from the rescan.
pub fn snapshot_or_clone(state: &State, vdi: &str, snapshot: bool) -> Result<String, ApiError> {
    managed(state, vdi)?;
    let (fsr, uuid, sr) = ext_of(state, vdi)?;
    state.storage.with_srs(&[&sr], || snapshot_held(state, vdi, snapshot, &fsr, uuid, &sr))
}

fn snapshot_held(
    state: &State,
    vdi: &str,
    snapshot: bool,
    fsr: &FileSr,
    uuid: Uuid,
    sr: &str,
) -> Result<String, ApiError> {
    let c = class("VDI");
    let (new, base) = (Uuid::new_v4(), Uuid::new_v4());
    {
        let _paused = state.storage.tapdisks.pause(&uuid)?;
        fsr.snapshot(&uuid, new, base)?;
    }
    let src = state.store.get(c, vdi)?;
    let mut f = copied_fields(Rec::new(c, &src.fields));
    set(c, &mut f, "uuid", new.to_string());
    set(c, &mut f, "SR", sr);
    set(c, &mut f, "location", new.to_string());
    set(c, &mut f, "is_a_snapshot", snapshot);
    set(c, &mut f, "snapshot_of", if snapshot { vdi } else { NULL_REF });
    if snapshot {
        set(c, &mut f, "snapshot_time", sync::now());
    }
    let r = db::new_ref();
    state.store.transaction(|tx| tx.insert(c, &r, f))?;
    sync::sr_held(state, sr)?;
    Ok(r)
}

/// A new VDI record with the user-visible fields of `src` (names, type, configuration, size).
fn copied_fields(src: Rec<'_>) -> Vec<Value> {
    let c = class("VDI");
    let mut f = db::default_row(c);
    for field in [
        "name_label",
        "name_description",
        "type",
        "sharable",
        "other_config",
        "xenstore_data",
        "tags",
        "on_boot",
        "allow_caching",
        "virtual_size",
    ] {
        set(c, &mut f, field, src.get(field).clone());
    }
    set(c, &mut f, "managed", true);
    f
}

/// A sparse full copy of `vdi` as a new VDI of `sr`.
pub fn copy_to_sr(state: &State, vdi: &str, sr: &str) -> Result<String, ApiError> {
    let c = class("VDI");
    if storage::attached_vbds(state, vdi).any(|(_, rw)| rw) {
        return Err(ApiError::new(&codes::VDI_IN_USE, [vdi, "copy"]));
    }
    let (src_sr, src_uuid, src_sr_ref) = ext_of(state, vdi)?;
    let dst_sr = ext_sr(state, sr)?;
    state.storage.with_srs(&[&src_sr_ref, sr], || {
        let new = Uuid::new_v4();
        let file = src_sr.copy_vdi(&src_uuid, &dst_sr, new)?;
        let src = state.store.get(c, vdi)?;
        let mut f = copied_fields(Rec::new(c, &src.fields));
        set(c, &mut f, "uuid", new.to_string());
        set(c, &mut f, "SR", sr);
        set(c, &mut f, "location", new.to_string());
        set(c, &mut f, "virtual_size", file.virtual_size as i64);
        set(c, &mut f, "physical_utilisation", file.physical_utilisation as i64);
        let r = db::new_ref();
        state.store.transaction(|tx| tx.insert(c, &r, f))?;
        sync::sr_held(state, sr)?;
        Ok(r)
    })
}

pub fn snapshot(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    Ok(Reply::Value(Value::Str(snapshot_or_clone(ctx.state, arg(&args, 0), true)?)))
}

pub fn clone(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    Ok(Reply::Value(Value::Str(snapshot_or_clone(ctx.state, arg(&args, 0), false)?)))
}

/// `VDI.copy(vdi, sr, base_vdi, into_vdi)`: a sparse full copy into a new VDI of `sr`, or over `into_vdi`.
/// (`base_vdi` only lets xapi copy less; the result is the same, so it is accepted and not used.)
pub fn copy(ctx: &Ctx<'_>, c: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let (vdi, sr, into) = (arg(&args, 0), arg(&args, 1), arg(&args, 3));
    let base = arg(&args, 2);
    if !base.is_empty() && base != NULL_REF {
        ctx.state.store.get(c, base)?;
    }
    if into.is_empty() || into == NULL_REF {
        return Ok(Reply::Value(Value::Str(copy_to_sr(ctx.state, vdi, sr)?)));
    }
    if storage::attached_vbds(ctx.state, vdi).any(|(_, rw)| rw) {
        return Err(ApiError::new(&codes::VDI_IN_USE, [vdi, "copy"]));
    }
    let (src_sr, src_uuid, src_sr_ref) = ext_of(ctx.state, vdi)?;
    let (dst_sr, dst_uuid, dst_sr_ref) = ext_of(ctx.state, into)?;
    ctx.state.storage.with_srs(&[&src_sr_ref, &dst_sr_ref], || {
        not_attached(ctx.state, into, "copy")?;
        let (src_size, dst_size) = (
            Rec::new(c, &ctx.state.store.get(c, vdi)?.fields).int("virtual_size"),
            Rec::new(c, &ctx.state.store.get(c, into)?.fields).int("virtual_size"),
        );
        if dst_size < src_size {
            return Err(ApiError::new(&codes::VDI_TOO_SMALL, [into.to_string(), src_size.to_string()]));
        }
        src_sr.copy_into_vdi(&src_uuid, &dst_sr, &dst_uuid)?;
        sync::sr_held(ctx.state, &dst_sr_ref)
    })?;
    Ok(Reply::Value(Value::Str(into.to_string())))
}

/// `VDI.resize`: grows a detached VDI.
pub fn resize(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let vdi = arg(&args, 0);
    let size = match args.get(1) {
        Some(Value::Int(i)) => *i,
        _ => return Err(ApiError::field_type("size")),
    };
    managed(ctx.state, vdi)?;
    not_attached(ctx.state, vdi, "resize")?;
    let (fsr, uuid, sr) = ext_of(ctx.state, vdi)?;
    if size <= 0 {
        return Err(ApiError::invalid_value("size", &size.to_string()));
    }
    ctx.state.storage.with_srs(&[&sr], || {
        fsr.resize_vdi(&uuid, size as u64)?;
        sync::sr_held(ctx.state, &sr)
    })?;
    Ok(Reply::void())
}

/// `VDI.resize_online`: `ext` SRs cannot resize a disk a VM is using (as on XenServer).
pub fn resize_online(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let vdi = arg(&args, 0);
    let (_, sr) = storage::vdi_uuid(ctx.state, vdi)?;
    Err(ApiError::new(&codes::SR_OPERATION_NOT_SUPPORTED, [sr]))
}

/// `VDI.introduce(uuid, name_label, name_description, SR, type, sharable, read_only, other_config, location, …)`:
/// a record for a file the SR holds (`location`: the VHD's UUID, or an ISO's file name).
pub fn introduce(ctx: &Ctx<'_>, c: &'static Class, m: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let sr = arg(&args, 3).to_string();
    ctx.state.storage.with_srs(&[&sr], || introduce_held(ctx, c, m, args))
}

fn introduce_held(ctx: &Ctx<'_>, c: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let (uuid, name, description, sr, ty) = (arg(&args, 0), arg(&args, 1), arg(&args, 2), arg(&args, 3), arg(&args, 4));
    let location = arg(&args, 8).to_string();
    ctx.state.store.get(class("SR"), sr)?;
    let backend = ctx.state.storage.backend(sr)?;
    let (uuid, location) = match &backend {
        Backend::Ext(fsr) => {
            let u = Uuid::parse_str(&location)
                .map_err(|_| ApiError::new(&codes::VDI_LOCATION_MISSING, [sr.to_string(), location.clone()]))?;
            if !fsr.path(&u).exists() {
                return Err(ApiError::new(&codes::VDI_LOCATION_MISSING, [sr.to_string(), location.clone()]));
            }
            (u.to_string(), u.to_string())
        }
        Backend::Iso(iso) => {
            iso.path(&location)
                .map_err(|_| ApiError::new(&codes::VDI_LOCATION_MISSING, [sr.to_string(), location.clone()]))?;
            (if uuid.is_empty() { db::new_uuid() } else { uuid.to_string() }, location)
        }
    };
    let li = c.field("location").expect("VDI.location").0;
    let si = c.field("SR").expect("VDI.SR").0;
    if let Some((r, _)) = ctx
        .state
        .store
        .filter(c, |row| row.fields[si].as_str() == Some(sr) && row.fields[li].as_str() == Some(&location))
        .into_iter()
        .next()
    {
        // The scan already made a record for the file: it takes the names given.
        ctx.state.store.transaction(|tx| {
            tx.update(c, &r, |f| {
                set(c, f, "name_label", name);
                set(c, f, "name_description", description);
            })
        })?;
        return Ok(Reply::Value(Value::Str(r.to_string())));
    }
    let mut f = db::default_row(c);
    set(c, &mut f, "uuid", uuid);
    set(c, &mut f, "name_label", name);
    set(c, &mut f, "name_description", description);
    set(c, &mut f, "SR", sr);
    set(c, &mut f, "type", if ty.is_empty() { "user" } else { ty });
    set(c, &mut f, "location", location);
    set(c, &mut f, "managed", true);
    for (i, field) in [(5, "sharable"), (6, "read_only")] {
        if let Some(v @ Value::Bool(_)) = args.get(i) {
            set(c, &mut f, field, v.clone());
        }
    }
    if let Some(v @ Value::Struct(_)) = args.get(7) {
        set(c, &mut f, "other_config", v.clone());
    }
    let r = db::new_ref();
    ctx.state.store.transaction(|tx| tx.insert(c, &r, f))?;
    sync::sr_held(ctx.state, sr)?;
    Ok(Reply::Value(Value::Str(r)))
}

/// `VDI.forget`: the record goes, the file stays (a scan brings it back).
pub fn forget(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let vdi = arg(&args, 0);
    let (_, sr) = storage::vdi_uuid(ctx.state, vdi)?;
    ctx.state.storage.with_srs(&[&sr], || {
        not_attached(ctx.state, vdi, "forget")?;
        ctx.state.store.transaction(|tx| storage::delete_vdi_record(tx, ctx.state, vdi))?;
        Ok::<_, ApiError>(())
    })?;
    Ok(Reply::void())
}

/// `VDI.update`: the record follows its file.
pub fn update(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let (_, sr) = storage::vdi_uuid(ctx.state, arg(&args, 0))?;
    sync::sr(ctx.state, &sr)?;
    Ok(Reply::void())
}

/// `VDI.get_nbd_info`: where an NBD client reads the VDI (`storage::nbd_export`): one `vdi_nbd_server_info`
/// record, with the caller's session in the export name; `[]` without an NBD export (`--nbd none`, as XenServer
/// without an NBD network) or while the VDI's SR is not attached (as xapi: no host has its PBD plugged). TLS is
/// not offered yet: `cert` and `subject` are empty.
pub fn get_nbd_info(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let vdi = arg(&args, 0);
    let found = storage::nbd_export::exportable(ctx.state, vdi)?;
    let (Some((address, port)), Some((uuid, _))) = (&ctx.state.settings.nbd, found) else {
        return Ok(Reply::Value(Value::Array(vec![])));
    };
    let info = Value::Struct(vec![
        ("exportname".into(), Value::Str(storage::nbd_export::export_name(&uuid.to_string(), ctx.session()))),
        ("address".into(), Value::Str(address.clone())),
        ("port".into(), Value::Int(i64::from(*port))),
        ("cert".into(), Value::Str(String::new())),
        ("subject".into(), Value::Str(String::new())),
    ]);
    Ok(Reply::Value(Value::Array(vec![info])))
}

macro_rules! setters {
    ($($name:ident => $field:literal),* $(,)?) => {
        $(
            pub fn $name(ctx: &Ctx<'_>, c: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
                super::sr::set_field(ctx, c, &args, $field)
            }
        )*
    };
}

setters! {
    set_name_label => "name_label",
    set_name_description => "name_description",
    set_read_only => "read_only",
    set_sharable => "sharable",
    set_on_boot => "on_boot",
    set_allow_caching => "allow_caching",
}
