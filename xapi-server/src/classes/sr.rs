//! `SR` messages: create, introduce, forget, destroy, scan, probe, update, and the setters the datamodel lists as
//! messages. What an SR holds is in `storage`; this module keeps the records.

use std::path::PathBuf;

use storage_repo::sr::FileSr;
use xapi_types::generated::errors as codes;
use xapi_types::{Class, Message, Value};

use crate::db::{self, DbError};
use crate::dispatch::{Ctx, Reply};
use crate::error::ApiError;
use crate::hv::rec::{Rec, class, set};
use crate::storage::{self, Backend, sm};

type Args = Vec<Value>;

fn s(args: &[Value], i: usize) -> &str {
    args.get(i).and_then(Value::as_str).unwrap_or_default()
}

/// Sets one field of the object in `args[0]` to `args[1]`.
pub fn set_field(ctx: &Ctx<'_>, c: &'static Class, args: &[Value], field: &str) -> Result<Reply, ApiError> {
    let r = s(args, 0);
    let v = args.get(1).cloned().unwrap_or(Value::Str(String::new()));
    ctx.state.store.transaction(|tx| {
        tx.update(c, r, |f| {
            set(c, f, field, v);
        })
    })?;
    Ok(Reply::void())
}

pub fn set_name_label(ctx: &Ctx<'_>, c: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    set_field(ctx, c, &args, "name_label")
}

pub fn set_name_description(
    ctx: &Ctx<'_>,
    c: &'static Class,
    _: &'static Message,
    args: Args,
) -> Result<Reply, ApiError> {
    set_field(ctx, c, &args, "name_description")
}

pub fn set_shared(ctx: &Ctx<'_>, c: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    set_field(ctx, c, &args, "shared")
}

pub fn set_physical_size(ctx: &Ctx<'_>, c: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    set_field(ctx, c, &args, "physical_size")
}

fn driver_of(ty: &str) -> Result<&'static sm::Driver, ApiError> {
    sm::driver(ty).ok_or_else(|| ApiError::new(&codes::SR_UNKNOWN_DRIVER, [ty]))
}

/// A new SR record (not stored).
fn sr_row(
    uuid: &str,
    name: &str,
    description: &str,
    ty: &str,
    content_type: &str,
    shared: bool,
    smc: &Value,
) -> Vec<Value> {
    let sr_c = class("SR");
    let mut f = db::default_row(sr_c);
    set(sr_c, &mut f, "uuid", uuid);
    set(sr_c, &mut f, "name_label", name);
    set(sr_c, &mut f, "name_description", description);
    set(sr_c, &mut f, "type", ty);
    set(sr_c, &mut f, "content_type", if content_type.is_empty() && ty == "iso" { "iso" } else { content_type });
    set(sr_c, &mut f, "shared", shared);
    set(sr_c, &mut f, "sm_config", smc.clone());
    set(sr_c, &mut f, "allowed_operations", allowed(ty));
    f
}

/// What an SR of this type allows.
pub fn allowed(ty: &str) -> Value {
    let ops: &[&str] = match ty {
        "ext" => &[
            "scan",
            "destroy",
            "forget",
            "plug",
            "unplug",
            "update",
            "vdi_create",
            "vdi_introduce",
            "vdi_destroy",
            "vdi_resize",
            "vdi_clone",
            "vdi_snapshot",
            "vdi_copy",
            "vdi_forget",
            "vdi_update",
            "pbd_create",
            "pbd_destroy",
        ],
        _ => &[
            "scan",
            "destroy",
            "forget",
            "plug",
            "unplug",
            "update",
            "vdi_introduce",
            "vdi_forget",
            "pbd_create",
            "pbd_destroy",
        ],
    };
    Value::Array(ops.iter().map(|o| Value::str(*o)).collect())
}

/// `SR.create(host, device_config, physical_size, name_label, name_description, type, content_type, shared,
/// sm_config)`: makes the SR on disk, its record and this host's PBD, and plugs it.
pub fn create(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let state = ctx.state;
    let host = s(&args, 0);
    state.store.get(class("host"), host)?;
    let device_config = args.get(1).cloned().unwrap_or(Value::Struct(vec![]));
    let (name, description, ty, content_type) = (s(&args, 3), s(&args, 4), s(&args, 5), s(&args, 6));
    let shared = matches!(args.get(7), Some(Value::Bool(true)));
    let smc = args.get(8).cloned().unwrap_or(Value::Struct(vec![]));
    driver_of(ty)?;
    let uuid = db::new_uuid();
    let location = match device_config.get("location").and_then(Value::as_str) {
        Some(l) if !l.is_empty() => PathBuf::from(l),
        _ if ty == "ext" => state.storage.sr_root.join(&uuid),
        _ => {
            return Err(ApiError::new(
                &codes::SR_BACKEND_FAILURE,
                ["CONFIGURATION_MISSING".into(), "device-config:location is required".into(), String::new()],
            ));
        }
    };
    if ty == "ext" {
        FileSr::create(&location, &uuid)?;
    } else {
        storage_repo::sr::IsoSr::attach(&location)?;
    }
    let mut dc: Vec<(String, Value)> =
        device_config.as_struct().unwrap_or_default().iter().filter(|(k, _)| k != "location").cloned().collect();
    dc.push(("location".into(), Value::str(location.to_string_lossy())));
    let (sr, pbd) = (db::new_ref(), db::new_ref());
    let pbd_c = class("PBD");
    state.store.transaction(|tx| {
        tx.insert(class("SR"), &sr, sr_row(&uuid, name, description, ty, content_type, shared, &smc))?;
        let mut p = db::default_row(pbd_c);
        set(pbd_c, &mut p, "uuid", db::new_uuid());
        set(pbd_c, &mut p, "host", host);
        set(pbd_c, &mut p, "SR", sr.clone());
        set(pbd_c, &mut p, "device_config", Value::Struct(dc));
        tx.insert(pbd_c, &pbd, p)
    })?;
    storage::plug(state, &pbd)?;
    Ok(Reply::Value(Value::Str(sr)))
}

/// `SR.introduce(uuid, name_label, name_description, type, content_type, shared, sm_config)`: a record for an SR
/// that exists on disk; a PBD and `PBD.plug` attach it.
pub fn introduce(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let (uuid, name, description, ty, content_type) = (s(&args, 0), s(&args, 1), s(&args, 2), s(&args, 3), s(&args, 4));
    let shared = matches!(args.get(5), Some(Value::Bool(true)));
    let smc = args.get(6).cloned().unwrap_or(Value::Struct(vec![]));
    driver_of(ty)?;
    let uuid = if uuid.is_empty() { db::new_uuid() } else { uuid.to_string() };
    if uuid::Uuid::parse_str(&uuid).is_err() {
        return Err(ApiError::uuid_invalid("SR", &uuid));
    }
    let sr = db::new_ref();
    ctx.state.store.transaction(|tx| {
        tx.insert(class("SR"), &sr, sr_row(&uuid, name, description, ty, content_type, shared, &smc))
    })?;
    Ok(Reply::Value(Value::Str(sr)))
}

fn attached_pbd(ctx: &Ctx<'_>, sr: &str) -> Result<(), ApiError> {
    let (sr_c, pbd_c) = (class("SR"), class("PBD"));
    let row = ctx.state.store.get(sr_c, sr)?;
    for p in Rec::new(sr_c, &row.fields).refs("PBDs") {
        if ctx.state.store.get(pbd_c, p).is_ok_and(|r| Rec::new(pbd_c, &r.fields).bool("currently_attached")) {
            return Err(ApiError::new(&codes::SR_HAS_PBD, [sr]));
        }
    }
    Ok(())
}

/// Deletes the records of an SR: its PBDs, its VDIs and their VBDs, the SR.
fn drop_records(ctx: &Ctx<'_>, sr: &str) -> Result<(), ApiError> {
    let (sr_c, pbd_c, vdi_c, pool_c) = (class("SR"), class("PBD"), class("VDI"), class("pool"));
    let row = ctx.state.store.get(sr_c, sr)?;
    let rec = Rec::new(sr_c, &row.fields);
    let pbds: Vec<String> = rec.refs("PBDs").into_iter().map(str::to_string).collect();
    let vdis: Vec<String> = rec.refs("VDIs").into_iter().map(str::to_string).collect();
    ctx.state.storage.set_backend(sr, None);
    ctx.state.store.transaction(|tx| {
        for p in &pbds {
            if ctx.state.store.exists(pbd_c, p) {
                tx.delete(pbd_c, p)?;
            }
        }
        for v in &vdis {
            if ctx.state.store.exists(vdi_c, v) {
                storage::delete_vdi_record(tx, ctx.state, v)?;
            }
        }
        tx.update(pool_c, &ctx.state.pool, |f| {
            for field in ["default_SR", "suspend_image_SR", "crash_dump_SR"] {
                if Rec::new(pool_c, f).str(field) == sr {
                    set(pool_c, f, field, xapi_types::value::NULL_REF);
                }
            }
        })?;
        tx.delete(sr_c, sr)?;
        Ok::<_, DbError>(())
    })?;
    Ok(())
}

/// `SR.forget`: the records go, the data stays.
pub fn forget(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let sr = s(&args, 0);
    attached_pbd(ctx, sr)?;
    drop_records(ctx, sr)?;
    Ok(Reply::void())
}

/// `SR.destroy`: an `ext` SR's files are deleted (it must hold no VDIs, as sm's FileSR requires); an `iso` SR's
/// images are left alone.
pub fn destroy(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let sr = s(&args, 0);
    attached_pbd(ctx, sr)?;
    let (sr_c, pbd_c) = (class("SR"), class("PBD"));
    let row = ctx.state.store.get(sr_c, sr)?;
    let rec = Rec::new(sr_c, &row.fields);
    if rec.str("type") == "ext" {
        let Some(pbd) = rec.refs("PBDs").first().map(|p| p.to_string()) else {
            return Err(ApiError::new(&codes::SR_HAS_NO_PBDS, [sr]));
        };
        let prow = ctx.state.store.get(pbd_c, &pbd)?;
        let backend = storage::open_backend(ctx.state, sr, Rec::new(pbd_c, &prow.fields).get("device_config"))?;
        if let Backend::Ext(fsr) = backend {
            let (files, _) = fsr.scan()?;
            if files.iter().any(|f| !f.hidden) {
                return Err(ApiError::new(&codes::SR_NOT_EMPTY, Vec::<String>::new()));
            }
            fsr.destroy_all()?;
        }
    }
    drop_records(ctx, sr)?;
    Ok(Reply::void())
}

/// `SR.scan`: the store follows the files.
pub fn scan(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    storage::sync::sr(ctx.state, s(&args, 0))?;
    Ok(Reply::void())
}

/// `SR.update`: refreshes the space figures (a scan does that and more).
pub fn update(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    storage::sync::sr(ctx.state, s(&args, 0))?;
    Ok(Reply::void())
}

/// `SR.probe(host, device_config, type, sm_config)`: the SRs found at `device-config:location`, in sm's XML.
pub fn probe(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    ctx.state.store.get(class("host"), s(&args, 0))?;
    let dc = args.get(1).cloned().unwrap_or(Value::Struct(vec![]));
    let ty = s(&args, 2);
    driver_of(ty)?;
    let Some(location) = dc.get("location").and_then(Value::as_str).filter(|l| !l.is_empty()) else {
        return Err(ApiError::new(
            &codes::SR_BACKEND_FAILURE,
            ["CONFIGURATION_MISSING".into(), "device-config:location is required".into(), String::new()],
        ));
    };
    let mut xml = String::from("<?xml version=\"1.0\" ?>\n<SRlist>\n");
    if ty == "ext"
        && let Some(uuid) = FileSr::probe(std::path::Path::new(location))?
    {
        xml.push_str(&format!("\t<SR>\n\t\t<UUID>{uuid}</UUID>\n\t</SR>\n"));
    }
    xml.push_str("</SRlist>\n");
    Ok(Reply::Value(Value::Str(xml)))
}

pub fn get_supported_types(_: &Ctx<'_>, _: &'static Class, _: &'static Message, _: Args) -> Result<Reply, ApiError> {
    Ok(Reply::Value(Value::Array(sm::DRIVERS.iter().map(|d| Value::str(d.ty)).collect())))
}
