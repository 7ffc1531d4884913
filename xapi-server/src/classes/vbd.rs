//! `VBD` messages: create (with xapi's checks), destroy, plug and unplug (hot-plug on a running VM), insert and
//! eject (CD drives), and `set_mode`.

use std::sync::Arc;
use std::time::Duration;

use xapi_types::generated::errors as codes;
use xapi_types::value::NULL_REF;
use xapi_types::{Class, Message, Value};

use crate::dispatch::{Ctx, Reply};
use crate::error::ApiError;
use crate::generic;
use crate::hv::agent_error;
use crate::hv::rec::{Rec, class, set};
use crate::state::State;
use crate::storage;

type Args = Vec<Value>;

/// How long an unplug waits for the guest to let the device go.
const DETACH_TIMEOUT: Duration = Duration::from_secs(30);

fn vbd_arg(args: &[Value]) -> &str {
    args.first().and_then(Value::as_str).unwrap_or_default()
}

/// What a VBD allows, given its VM's power state.
fn allowed(vbd: Rec<'_>, vm_power: &str) -> Value {
    let mut ops: Vec<&str> = Vec::new();
    let running = vm_power == "Running";
    if vbd.str("type") == "CD" {
        ops.push(if vbd.bool("empty") { "insert" } else { "eject" });
    }
    if running {
        ops.push(if vbd.bool("currently_attached") { "unplug" } else { "plug" });
        if vbd.bool("currently_attached") {
            ops.push("unplug_force");
        }
    } else if vm_power == "Halted" {
        ops.push("attach");
    }
    Value::Array(ops.into_iter().map(Value::str).collect())
}

fn vm_power(state: &State, vm: &str) -> String {
    let vm_c = class("VM");
    state.store.get(vm_c, vm).map(|r| Rec::new(vm_c, &r.fields).str("power_state").to_string()).unwrap_or_default()
}

/// Writes `currently_attached` (and what depends on it) for VBD `vbd`.
pub fn set_attached(state: &State, vbd: &str, attached: bool) -> Result<(), ApiError> {
    let c = class("VBD");
    let row = state.store.get(c, vbd)?;
    let power = vm_power(state, Rec::new(c, &row.fields).str("VM"));
    state.store.transaction(|tx| {
        tx.update(c, vbd, |f| {
            set(c, f, "currently_attached", attached);
            let a = allowed(Rec::new(c, f), &power);
            set(c, f, "allowed_operations", a);
        })
    })?;
    Ok(())
}

/// `VBD.create(record)`.
pub fn create(ctx: &Ctx<'_>, c: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let (r, mut f) = generic::new_row(ctx, c, args)?;
    let state = ctx.state;
    let rec = Rec::new(c, &f);
    let vm = rec.str("VM").to_string();
    let vm_row = state.store.get(class("VM"), &vm)?;
    let cd = rec.str("type") == "CD";
    if rec.bool("empty") && !cd {
        return Err(ApiError::new(&codes::VBD_NOT_REMOVABLE_MEDIA, [r.as_str()]));
    }
    if cd && rec.str("mode") == "RW" {
        return Err(ApiError::new(&codes::VBD_CDS_MUST_BE_READONLY, Vec::<String>::new()));
    }
    if !rec.bool("empty") {
        let Some(vdi) = rec.reference("VDI") else {
            return Err(ApiError::handle_invalid("VDI", rec.str("VDI")));
        };
        let vdi_row = state.store.get(class("VDI"), vdi)?;
        if Rec::new(class("VDI"), &vdi_row.fields).bool("read_only") && rec.str("mode") == "RW" && !cd {
            return Err(ApiError::new(&codes::VDI_READONLY, [vdi]));
        }
    } else {
        set(c, &mut f, "VDI", NULL_REF);
    }
    // userdevice: a number unique among the VM's VBDs; "autodetect" (or empty) takes the lowest free one.
    let taken: Vec<u32> = Rec::new(class("VM"), &vm_row.fields)
        .refs("VBDs")
        .into_iter()
        .filter_map(|b| state.store.get(c, b).ok())
        .filter_map(|b| Rec::new(c, &b.fields).str("userdevice").parse().ok())
        .collect();
    let wanted = Rec::new(c, &f).str("userdevice").to_string();
    let device = match wanted.as_str() {
        "" | "autodetect" => (0..).find(|n| !taken.contains(n)).unwrap_or(0),
        s => {
            let n: u32 = s.parse().map_err(|_| ApiError::new(&codes::INVALID_DEVICE, [s]))?;
            if taken.contains(&n) {
                return Err(ApiError::new(&codes::DEVICE_ALREADY_EXISTS, [s]));
            }
            n
        }
    };
    set(c, &mut f, "userdevice", device.to_string());
    set(c, &mut f, "currently_attached", false);
    let power = Rec::new(class("VM"), &vm_row.fields).str("power_state").to_string();
    let a = allowed(Rec::new(c, &f), &power);
    set(c, &mut f, "allowed_operations", a);
    state.store.transaction(|tx| tx.insert(c, &r, f))?;
    Ok(Reply::Value(Value::Str(r)))
}

/// `VBD.destroy`: not while attached.
pub fn destroy(ctx: &Ctx<'_>, c: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let r = vbd_arg(&args);
    let row = ctx.state.store.get(c, r)?;
    if Rec::new(c, &row.fields).bool("currently_attached") {
        return Err(ApiError::new(&codes::OPERATION_NOT_ALLOWED, ["VBD currently attached to a running VM"]));
    }
    ctx.state.store.transaction(|tx| tx.delete(c, r))?;
    Ok(Reply::void())
}

/// The VM of a VBD, which must be running; its UUID.
fn running_vm(state: &State, vbd: Rec<'_>) -> Result<(String, String), ApiError> {
    let vm_c = class("VM");
    let vm = vbd.str("VM").to_string();
    let row = state.store.get(vm_c, &vm)?;
    let rec = Rec::new(vm_c, &row.fields);
    let power = rec.str("power_state");
    if power != "Running" {
        return Err(ApiError::new(&codes::VM_BAD_POWER_STATE, [vm.clone(), "running".into(), power.to_lowercase()]));
    }
    Ok((vm, rec.str("uuid").to_string()))
}

/// `VBD.plug`: hot-plugs the disk into the running VM.
pub fn plug(ctx: &Ctx<'_>, c: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let r = vbd_arg(&args);
    let state = ctx.state;
    let row = state.store.get(c, r)?;
    let vbd = Rec::new(c, &row.fields);
    let (vm, uuid) = running_vm(state, vbd)?;
    if vbd.bool("currently_attached") {
        return Err(ApiError::new(&codes::DEVICE_ALREADY_ATTACHED, [r]));
    }
    if vbd.str("type") == "CD" {
        return Err(ApiError::new(
            &codes::OPERATION_NOT_ALLOWED,
            ["CD drives are emulated devices: add them while the VM is halted, then insert and eject discs"],
        ));
    }
    let agent = state.hv.agent(state)?;
    let disk = storage::vbd_disk(state, &vm, r)?;
    if let Err(e) = agent.attach_disk(&uuid, &disk) {
        storage::release_unused(state);
        return Err(agent_error(e));
    }
    set_attached(state, r, true)?;
    Ok(Reply::void())
}

fn unplug_common(ctx: &Ctx<'_>, c: &'static Class, args: &[Value], force: bool) -> Result<Reply, ApiError> {
    let r = vbd_arg(args);
    let state = ctx.state;
    let row = state.store.get(c, r)?;
    let vbd = Rec::new(c, &row.fields);
    let (_, uuid) = running_vm(state, vbd)?;
    if !vbd.bool("currently_attached") {
        return Err(ApiError::new(&codes::DEVICE_ALREADY_DETACHED, [r]));
    }
    if !force && !vbd.bool("unpluggable") {
        return Err(ApiError::new(&codes::VBD_NOT_UNPLUGGABLE, [r]));
    }
    if vbd.str("type") == "CD" {
        return Err(ApiError::new(&codes::OPERATION_NOT_ALLOWED, ["CD drives cannot be unplugged: eject the disc"]));
    }
    let position: u32 = vbd.str("userdevice").parse().unwrap_or(0);
    let agent = state.hv.agent(state)?;
    let timeout = if force { DETACH_TIMEOUT / 3 } else { DETACH_TIMEOUT };
    agent.detach_disk(&uuid, position, host_agent::spec::DiskKind::Disk, timeout).map_err(|e| {
        ApiError::new(&codes::DEVICE_DETACH_REJECTED, ["VBD".to_string(), r.to_string(), e.to_string()])
    })?;
    set_attached(state, r, false)?;
    storage::release_unused(state);
    Ok(Reply::void())
}

pub fn unplug(ctx: &Ctx<'_>, c: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    unplug_common(ctx, c, &args, false)
}

pub fn unplug_force(ctx: &Ctx<'_>, c: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    unplug_common(ctx, c, &args, true)
}

/// `VBD.insert(vbd, vdi)`: a disc into an empty CD drive (live, if the VM runs: only ISO images then).
pub fn insert(ctx: &Ctx<'_>, c: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let vdi = args.get(1).and_then(Value::as_str).unwrap_or_default();
    ctx.state.store.get(class("VDI"), vdi)?;
    change_disc(ctx.state, c, vbd_arg(&args), Some(vdi))
}

/// `VBD.eject`: the disc out of a CD drive.
pub fn eject(ctx: &Ctx<'_>, c: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    change_disc(ctx.state, c, vbd_arg(&args), None)
}

/// Puts `vdi` into CD drive `r` (or takes the disc out): in the running guest first, then in the record.
fn change_disc(state: &Arc<State>, c: &'static Class, r: &str, vdi: Option<&str>) -> Result<Reply, ApiError> {
    let row = state.store.get(c, r)?;
    let vbd = Rec::new(c, &row.fields);
    if vbd.str("type") != "CD" {
        return Err(ApiError::new(&codes::VBD_NOT_REMOVABLE_MEDIA, [r]));
    }
    match vdi {
        Some(_) if !vbd.bool("empty") => return Err(ApiError::new(&codes::VBD_NOT_EMPTY, [r])),
        None if vbd.bool("empty") => return Err(ApiError::new(&codes::VBD_IS_EMPTY, [r])),
        _ => {}
    }
    let power = vm_power(state, vbd.str("VM"));
    if power == "Running" && vbd.bool("currently_attached") {
        let (_, uuid) = running_vm(state, vbd)?;
        let media = match vdi {
            Some(vdi) => match storage::disk_source(state, vdi, false)? {
                p @ host_agent::spec::DiskSource::File(_) => p,
                _ => return Err(ApiError::new(&codes::VDI_IS_NOT_ISO, [vdi, "VHD"])),
            },
            None => host_agent::spec::DiskSource::Empty,
        };
        let position: u32 = vbd.str("userdevice").parse().unwrap_or(0);
        state.hv.agent(state)?.change_media(&uuid, position, &media).map_err(agent_error)?;
    }
    state.store.transaction(|tx| {
        tx.update(c, r, |f| {
            set(c, f, "VDI", vdi.unwrap_or(NULL_REF));
            set(c, f, "empty", vdi.is_none());
            let a = allowed(Rec::new(c, f), &power);
            set(c, f, "allowed_operations", a);
        })
    })?;
    Ok(Reply::void())
}

/// `VBD.assert_attachable`: the VDI's SR is attached and the sharing rule allows it.
pub fn assert_attachable(ctx: &Ctx<'_>, c: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let r = vbd_arg(&args);
    let row = ctx.state.store.get(c, r)?;
    let vbd = Rec::new(c, &row.fields);
    if let Some(vdi) = vbd.reference("VDI") {
        let (_, sr) = storage::vdi_uuid(ctx.state, vdi)?;
        ctx.state.storage.backend(&sr)?;
        storage::check_sharing(ctx.state, vdi, r, vbd.str("mode") == "RW" && vbd.str("type") != "CD")?;
    }
    Ok(Reply::void())
}

pub fn set_mode(ctx: &Ctx<'_>, c: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    super::sr::set_field(ctx, c, &args, "mode")
}
