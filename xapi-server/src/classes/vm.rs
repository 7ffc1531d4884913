//! `VM` messages beyond the generic ones: the lifecycle (in `hv::ops`), clone and provision, memory questions,
//! and the bookkeeping xapi does on create and destroy.

use std::sync::Arc;

use xapi_types::generated::errors as codes;
use xapi_types::value::NULL_REF;
use xapi_types::{Class, Message, Value};

use crate::db::{self, DbError};
use crate::dispatch::{Ctx, Reply};
use crate::error::ApiError;
use crate::generic;
use crate::hv::ops::{self, Op};
use crate::hv::rec::{Rec, class, idx, set};
use crate::hv::{memory, spec};
use crate::state::State;
use crate::storage;

type Args = Vec<Value>;

fn vm_arg(args: &[Value]) -> &str {
    args[0].as_str().unwrap_or_default()
}

fn flag(args: &[Value], i: usize) -> bool {
    matches!(args.get(i), Some(Value::Bool(true)))
}

fn task<'a>(ctx: &'a Ctx<'_>) -> Option<&'a str> {
    ctx.task.map(|t| &**t.task())
}

/// Runs a lifecycle operation of `hv::ops`.
fn op(ctx: &Ctx<'_>, f: impl FnOnce(&Arc<State>, Option<&str>) -> Result<(), ApiError>) -> Result<Reply, ApiError> {
    f(ctx.state, task(ctx))?;
    Ok(Reply::void())
}

/// The host argument of `*_on` messages: it must be this host.
fn this_host(ctx: &Ctx<'_>, host: &str) -> Result<(), ApiError> {
    ctx.state.store.get(class("host"), host)?;
    Ok(())
}

pub fn start(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let (vm, paused) = (vm_arg(&args).to_string(), flag(&args, 1));
    op(ctx, |st, t| ops::start(st, &vm, paused, Op::Start, t))
}

pub fn start_on(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    this_host(ctx, args[1].as_str().unwrap_or_default())?;
    let (vm, paused) = (vm_arg(&args).to_string(), flag(&args, 2));
    op(ctx, |st, t| ops::start(st, &vm, paused, Op::StartOn, t))
}

pub fn clean_shutdown(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let vm = vm_arg(&args).to_string();
    op(ctx, |st, t| ops::clean_shutdown(st, &vm, t))
}

pub fn hard_shutdown(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let vm = vm_arg(&args).to_string();
    op(ctx, |st, t| ops::hard_shutdown(st, &vm, t, Op::HardShutdown))
}

pub fn shutdown(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let vm = vm_arg(&args).to_string();
    op(ctx, |st, t| ops::shutdown(st, &vm, t))
}

pub fn clean_reboot(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let vm = vm_arg(&args).to_string();
    op(ctx, |st, t| ops::reboot(st, &vm, true, t))
}

pub fn hard_reboot(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let vm = vm_arg(&args).to_string();
    op(ctx, |st, t| ops::reboot(st, &vm, false, t))
}

pub fn suspend(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let vm = vm_arg(&args).to_string();
    op(ctx, |st, t| ops::suspend(st, &vm, t))
}

pub fn resume(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let (vm, paused) = (vm_arg(&args).to_string(), flag(&args, 1));
    op(ctx, |st, t| ops::resume(st, &vm, paused, Op::Resume, t))
}

pub fn resume_on(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    this_host(ctx, args[1].as_str().unwrap_or_default())?;
    let (vm, paused) = (vm_arg(&args).to_string(), flag(&args, 2));
    op(ctx, |st, t| ops::resume(st, &vm, paused, Op::ResumeOn, t))
}

pub fn pause(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let vm = vm_arg(&args).to_string();
    op(ctx, |st, t| ops::pause(st, &vm, true, t))
}

pub fn unpause(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let vm = vm_arg(&args).to_string();
    op(ctx, |st, t| ops::pause(st, &vm, false, t))
}

/// `VM.create`: the generic constructor, plus what xapi adds, in the same transaction: a `VM_metrics` object, a
/// halted power state and the allowed operations.
pub fn create(ctx: &Ctx<'_>, c: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let (vm, mut f) = generic::new_row(ctx, c, args)?;
    let metrics_c = class("VM_metrics");
    let metrics = db::new_ref();
    let mut mf = db::default_row(metrics_c);
    set(metrics_c, &mut mf, "uuid", db::new_uuid());
    set(c, &mut f, "metrics", metrics.clone());
    set(c, &mut f, "power_state", "Halted");
    set(c, &mut f, "domid", -1i64);
    let allowed = ops::allowed(Rec::new(c, &f));
    set(c, &mut f, "allowed_operations", allowed);
    ctx.state.store.transaction(|tx| {
        tx.insert(metrics_c, &metrics, mf)?;
        tx.insert(c, &vm, f)
    })?;
    Ok(Reply::Value(Value::Str(vm)))
}

/// `VM.destroy`: only a halted VM (or a template); its metrics, consoles, VIFs and VBDs go with it (its disks stay).
pub fn destroy(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let vm = vm_arg(&args).to_string();
    let running = ops::begin(ctx.state, &vm, Op::Destroy, task(ctx))?;
    let vm_c = class("VM");
    let row = ctx.state.store.get(vm_c, &vm)?;
    let rec = Rec::new(vm_c, &row.fields);
    let mut owned: Vec<(&str, String)> = Vec::new();
    for (field, cls) in [("metrics", "VM_metrics"), ("guest_metrics", "VM_guest_metrics")] {
        if let Some(r) = rec.reference(field) {
            owned.push((cls, r.to_string()));
        }
    }
    for (field, cls) in [("consoles", "console"), ("VIFs", "VIF"), ("VBDs", "VBD")] {
        owned.extend(rec.refs(field).into_iter().map(|r| (cls, r.to_string())));
    }
    ctx.state.store.transaction(|tx| {
        for (cls, r) in &owned {
            if ctx.state.store.exists(class(cls), r) {
                tx.delete(class(cls), r)?;
            }
        }
        tx.delete(vm_c, &vm)
    })?;
    drop(running);
    Ok(Reply::void())
}

/// `VM.clone`: a new halted VM (or template) with the same configuration, copies of its VIFs, and its disks
/// cloned (`VDI.clone`: a differencing child on each disk's SR); CD drives keep their disc.
pub fn clone(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let new_name = args[1].as_str().unwrap_or_default().to_string();
    duplicate(ctx, vm_arg(&args), &new_name, Disks::Clone)
}

/// `VM.copy(vm, new_name, sr)`: as clone, but each disk is a full, independent copy (on `sr`, or on the disk's own
/// SR when `sr` is the null ref).
pub fn copy(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let new_name = args[1].as_str().unwrap_or_default().to_string();
    let sr = args.get(2).and_then(Value::as_str).filter(|s| !s.is_empty() && *s != NULL_REF).map(str::to_string);
    if let Some(sr) = &sr {
        ctx.state.store.get(class("SR"), sr)?;
    }
    duplicate(ctx, vm_arg(&args), &new_name, Disks::Copy(sr))
}

/// `VM.snapshot(vm, new_name, ignore_vdis)`: a snapshot VM (a template with `is_a_snapshot`, `snapshot_of`,
/// `snapshot_time`) whose disks are `VDI.snapshot`s of the VM's, taken while it runs if it does (the disks' block
/// servers are paused for each one: crash-consistent).
pub fn snapshot(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let new_name = args[1].as_str().unwrap_or_default().to_string();
    let ignore: Vec<String> = args
        .get(2)
        .and_then(Value::as_array)
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    duplicate(ctx, vm_arg(&args), &new_name, Disks::Snapshot(ignore))
}

/// What a duplicate does with the source's disks.
enum Disks {
    Clone,
    Copy(Option<String>),
    /// VDIs listed are left out.
    Snapshot(Vec<String>),
}

fn duplicate(ctx: &Ctx<'_>, vm: &str, new_name: &str, disks: Disks) -> Result<Reply, ApiError> {
    let op = match disks {
        Disks::Clone => Op::Clone,
        Disks::Copy(_) => Op::Copy,
        Disks::Snapshot(_) => Op::Snapshot,
    };
    let running = ops::begin(ctx.state, vm, op, task(ctx))?;
    let (vm_c, vif_c, vbd_c, metrics_c) = (class("VM"), class("VIF"), class("VBD"), class("VM_metrics"));
    let row = ctx.state.store.get(vm_c, vm)?;
    let src = Rec::new(vm_c, &row.fields);
    let store = &ctx.state.store;
    let (new, metrics) = (db::new_ref(), db::new_ref());

    // The disks first: if one fails, the new ones made so far are deleted and nothing else was written.
    let mut vbds: Vec<(String, Vec<Value>)> = Vec::new();
    let mut made: Vec<String> = Vec::new();
    let result = (|| {
        for b in src.refs("VBDs") {
            let Ok(brow) = store.get(vbd_c, b) else { continue };
            let vbd = Rec::new(vbd_c, &brow.fields);
            let mut bf = brow.fields.clone();
            if let Some(vdi) = vbd.reference("VDI").filter(|_| vbd.str("type") != "CD") {
                let new_vdi = match &disks {
                    Disks::Clone => super::vdi::snapshot_or_clone(ctx.state, vdi, false)?,
                    Disks::Snapshot(ignore) if ignore.iter().any(|i| i == vdi) => continue,
                    Disks::Snapshot(_) => super::vdi::snapshot_or_clone(ctx.state, vdi, true)?,
                    Disks::Copy(sr) => {
                        let sr = match sr {
                            Some(sr) => sr.clone(),
                            None => Rec::new(class("VDI"), &store.get(class("VDI"), vdi)?.fields).str("SR").to_string(),
                        };
                        super::vdi::copy_to_sr(ctx.state, vdi, &sr)?
                    }
                };
                made.push(new_vdi.clone());
                set(vbd_c, &mut bf, "VDI", new_vdi);
            }
            set(vbd_c, &mut bf, "uuid", db::new_uuid());
            set(vbd_c, &mut bf, "VM", new.clone());
            set(vbd_c, &mut bf, "currently_attached", false);
            set(vbd_c, &mut bf, "metrics", NULL_REF);
            vbds.push((db::new_ref(), bf));
        }
        Ok::<_, ApiError>(())
    })();
    if let Err(e) = result {
        for v in &made {
            let _ = super::vdi::destroy_ref(ctx.state, v);
        }
        return Err(e);
    }

    let mut f = row.fields.clone();
    set(vm_c, &mut f, "uuid", db::new_uuid());
    set(vm_c, &mut f, "name_label", new_name);
    set(vm_c, &mut f, "is_default_template", false);
    set(vm_c, &mut f, "power_state", "Halted");
    set(vm_c, &mut f, "resident_on", NULL_REF);
    set(vm_c, &mut f, "domid", -1i64);
    set(vm_c, &mut f, "current_operations", Value::Struct(vec![]));
    set(vm_c, &mut f, "consoles", Value::Array(vec![]));
    set(vm_c, &mut f, "VBDs", Value::Array(vec![]));
    set(vm_c, &mut f, "VIFs", Value::Array(vec![]));
    set(vm_c, &mut f, "snapshots", Value::Array(vec![]));
    set(vm_c, &mut f, "metrics", metrics.clone());
    set(vm_c, &mut f, "guest_metrics", NULL_REF);
    set(vm_c, &mut f, "memory_overhead", 0i64);
    if let Disks::Snapshot(_) = disks {
        // xapi's snapshots are templates that remember what they were taken of, and when.
        set(vm_c, &mut f, "is_a_template", true);
        set(vm_c, &mut f, "is_a_snapshot", true);
        set(vm_c, &mut f, "snapshot_of", vm);
        set(vm_c, &mut f, "snapshot_time", storage::sync::now());
    } else {
        set(vm_c, &mut f, "is_a_snapshot", false);
        set(vm_c, &mut f, "snapshot_of", NULL_REF);
    }
    let mut vifs = Vec::new();
    for v in src.refs("VIFs") {
        let Ok(vrow) = store.get(vif_c, v) else { continue };
        let mut vf = vrow.fields.clone();
        set(vif_c, &mut vf, "uuid", db::new_uuid());
        set(vif_c, &mut vf, "VM", new.clone());
        set(vif_c, &mut vf, "currently_attached", false);
        if Rec::new(vif_c, &vrow.fields).bool("MAC_autogenerated") && !matches!(disks, Disks::Snapshot(_)) {
            set(vif_c, &mut vf, "MAC", random_mac());
        }
        vifs.push((db::new_ref(), vf));
    }
    let allowed = ops::allowed(Rec::new(vm_c, &f));
    f[idx(vm_c, "allowed_operations")] = allowed;
    let mut mf = db::default_row(metrics_c);
    set(metrics_c, &mut mf, "uuid", db::new_uuid());
    store.transaction(|tx| {
        tx.insert(metrics_c, &metrics, mf)?;
        tx.insert(vm_c, &new, f)?;
        for (r, vf) in vifs {
            tx.insert(vif_c, &r, vf)?;
        }
        for (r, bf) in vbds {
            tx.insert(vbd_c, &r, bf)?;
        }
        Ok::<_, DbError>(())
    })?;
    drop(running);
    Ok(Reply::Value(Value::Str(new)))
}

fn random_mac() -> String {
    let b = uuid::Uuid::new_v4().into_bytes();
    // Locally administered, unicast.
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", (b[0] & 0xfe) | 0x02, b[1], b[2], b[3], b[4], b[5])
}

/// `VM.get_allowed_VBD_devices`: the disk positions not taken by the VM's VBDs (xapi offers 0–15 for HVM and
/// PV guests alike on this host's machine types; CD drives sit on the IDE bus at 0–3, disks on virtio).
pub fn get_allowed_vbd_devices(
    ctx: &Ctx<'_>,
    _: &'static Class,
    _: &'static Message,
    args: Args,
) -> Result<Reply, ApiError> {
    let (vm_c, vbd_c) = (class("VM"), class("VBD"));
    let row = ctx.state.store.get(vm_c, vm_arg(&args))?;
    let taken: Vec<String> = Rec::new(vm_c, &row.fields)
        .refs("VBDs")
        .into_iter()
        .filter_map(|b| ctx.state.store.get(vbd_c, b).ok())
        .map(|b| Rec::new(vbd_c, &b.fields).str("userdevice").to_string())
        .collect();
    let free = (0..16).map(|n: u32| n.to_string()).filter(|d| !taken.contains(d)).map(Value::Str).collect();
    Ok(Reply::Value(Value::Array(free)))
}

/// `VM.provision`: a template becomes a VM; the disks of its provision spec (`other_config:disks`) are created on
/// their SR (or the pool's default SR: `DEFAULT_SR_NOT_FOUND` without one), each with a VBD the VM owns.
pub fn provision(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let vm = vm_arg(&args).to_string();
    let running = ops::begin(ctx.state, &vm, Op::Provision, task(ctx))?;
    let vm_c = class("VM");
    let row = ctx.state.store.get(vm_c, &vm)?;
    let rec = Rec::new(vm_c, &row.fields);
    let disks = parse_provision(rec.map_get("other_config", "disks").unwrap_or_default())?;
    let name = rec.str("name_label").to_string();
    // Each disk of the spec: a VDI in its SR (or the pool's default SR) and a VBD, as xapi's template install.
    for d in &disks {
        let sr = if d.sr.is_empty() {
            let pool_c = class("pool");
            let pool = ctx.state.store.get(pool_c, &ctx.state.pool)?;
            let sr = Rec::new(pool_c, &pool.fields).str("default_SR").to_string();
            if !ctx.state.store.exists(class("SR"), &sr) {
                return Err(ApiError::new(&codes::DEFAULT_SR_NOT_FOUND, [sr]));
            }
            sr
        } else {
            ctx.state.store.by_uuid(class("SR"), &d.sr).map_err(|_| ApiError::uuid_invalid("SR", &d.sr))?.to_string()
        };
        let vdi_c = class("VDI");
        let mut f = db::default_row(vdi_c);
        set(vdi_c, &mut f, "uuid", db::new_uuid());
        set(vdi_c, &mut f, "name_label", format!("{name} {}", d.device));
        set(vdi_c, &mut f, "name_description", "Created by template provisioner");
        set(vdi_c, &mut f, "SR", sr);
        set(vdi_c, &mut f, "virtual_size", d.size);
        set(vdi_c, &mut f, "type", d.ty.clone());
        let Reply::Value(Value::Str(vdi)) = super::vdi::insert_new(ctx.state, db::new_ref(), f)? else {
            return Err(ApiError::internal("VDI creation answered no ref"));
        };
        let vbd_c = class("VBD");
        let mut b = db::default_row(vbd_c);
        set(vbd_c, &mut b, "uuid", db::new_uuid());
        set(vbd_c, &mut b, "VM", vm.clone());
        set(vbd_c, &mut b, "VDI", vdi);
        set(vbd_c, &mut b, "userdevice", d.device.clone());
        set(vbd_c, &mut b, "bootable", d.bootable);
        set(vbd_c, &mut b, "mode", "RW");
        set(vbd_c, &mut b, "type", "Disk");
        set(vbd_c, &mut b, "unpluggable", true);
        // xapi marks the disks a template's install made as the VM's own (xe vm-uninstall deletes those).
        set(vbd_c, &mut b, "other_config", Value::Struct(vec![("owner".into(), Value::str("true"))]));
        ctx.state.store.transaction(|tx| tx.insert(vbd_c, &db::new_ref(), b))?;
    }
    ctx.state.store.transaction(|tx| {
        tx.update(vm_c, &vm, |f| {
            set(vm_c, f, "is_a_template", false);
            set(vm_c, f, "is_default_template", false);
            let i = idx(vm_c, "other_config");
            if let Value::Struct(m) = &mut f[i] {
                m.retain(|(k, _)| k != "disks");
            }
        })
    })?;
    drop(running);
    Ok(Reply::void())
}

/// One `<disk>` of a template's provision spec (`other_config:disks`).
#[derive(Debug, PartialEq)]
struct ProvisionDisk {
    device: String,
    size: i64,
    sr: String,
    bootable: bool,
    ty: String,
}

/// `<provision><disk device="0" size="…" sr="" bootable="true" type="system"/>…</provision>`; anything else is
/// `INVALID_VALUE`.
fn parse_provision(xml: &str) -> Result<Vec<ProvisionDisk>, ApiError> {
    use quick_xml::events::Event;
    let bad = || ApiError::invalid_value("other_config:disks", xml);
    let mut out = Vec::new();
    if xml.trim().is_empty() {
        return Ok(out);
    }
    let mut reader = quick_xml::Reader::from_str(xml);
    loop {
        match reader.read_event().map_err(|_| bad())? {
            Event::Eof => break,
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == "disk" => {
                let mut d = ProvisionDisk {
                    device: String::new(),
                    size: 0,
                    sr: String::new(),
                    bootable: false,
                    ty: "user".into(),
                };
                for a in e.attributes() {
                    let a = a.map_err(|_| bad())?;
                    let v = a.normalized_value(quick_xml::XmlVersion::Implicit1_0).map_err(|_| bad())?.to_string();
                    match a.key.as_ref() {
                        "device" => d.device = v,
                        "size" => d.size = v.parse().map_err(|_| bad())?,
                        "sr" => d.sr = v,
                        "bootable" => d.bootable = v == "true",
                        "type" => d.ty = v,
                        _ => {}
                    }
                }
                if d.device.parse::<u32>().is_err() || d.size <= 0 {
                    return Err(bad());
                }
                out.push(d);
            }
            _ => {}
        }
    }
    Ok(out)
}

pub fn compute_memory_overhead(
    ctx: &Ctx<'_>,
    _: &'static Class,
    _: &'static Message,
    args: Args,
) -> Result<Reply, ApiError> {
    let vm_c = class("VM");
    let row = ctx.state.store.get(vm_c, vm_arg(&args))?;
    let vm = Rec::new(vm_c, &row.fields);
    Ok(Reply::Value(Value::Int(memory::overhead(vm.int("memory_static_max"), vm.int("VCPUs_max")))))
}

/// What `VM.start` would refuse on this host, without starting.
fn can_boot_here(ctx: &Ctx<'_>, vm_ref: &str) -> Result<(), ApiError> {
    let vm_c = class("VM");
    let row = ctx.state.store.get(vm_c, vm_ref)?;
    let vm = Rec::new(vm_c, &row.fields);
    if vm.bool("is_a_template") {
        return Err(ApiError::new(&codes::VM_IS_TEMPLATE, [vm_ref]));
    }
    spec::build(ctx.state, vm_ref, vm)?;
    if memory::is_resident(vm) {
        return Ok(());
    }
    let (needed, available) = (memory::need(vm), memory::free(ctx.state));
    if needed > available {
        return Err(ApiError::new(
            &codes::HOST_NOT_ENOUGH_FREE_MEMORY,
            [needed.to_string(), available.max(0).to_string()],
        ));
    }
    Ok(())
}

pub fn assert_can_boot_here(
    ctx: &Ctx<'_>,
    _: &'static Class,
    _: &'static Message,
    args: Args,
) -> Result<Reply, ApiError> {
    this_host(ctx, args[1].as_str().unwrap_or_default())?;
    can_boot_here(ctx, vm_arg(&args))?;
    Ok(Reply::void())
}

pub fn get_possible_hosts(
    ctx: &Ctx<'_>,
    _: &'static Class,
    _: &'static Message,
    args: Args,
) -> Result<Reply, ApiError> {
    let hosts = match can_boot_here(ctx, vm_arg(&args)) {
        Ok(()) => vec![Value::str(&*ctx.state.host)],
        Err(e) if e.code == "HANDLE_INVALID" => return Err(e),
        Err(_) => vec![],
    };
    Ok(Reply::Value(Value::Array(hosts)))
}

/// `VM.set_memory_limits(self, static_min, static_max, dynamic_min, dynamic_max)`: all four at once, for a halted
/// VM (a running one's memory is what its domain was given), checked as xapi checks them
/// (`static_min ≤ dynamic_min ≤ dynamic_max ≤ static_max`: `MEMORY_CONSTRAINT_VIOLATION`).
pub fn set_memory_limits(ctx: &Ctx<'_>, c: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let vm = vm_arg(&args).to_string();
    let int = |i: usize| match args.get(i) {
        Some(Value::Int(v)) => *v,
        _ => 0,
    };
    let (smin, smax, dmin, dmax) = (int(1), int(2), int(3), int(4));
    if !(0 <= smin && smin <= dmin && dmin <= dmax && dmax <= smax) {
        return Err(ApiError::new(
            &codes::MEMORY_CONSTRAINT_VIOLATION,
            ["Memory limits must satisfy: static_min <= dynamic_min <= dynamic_max <= static_max".to_string()],
        ));
    }
    ctx.state.store.transaction(|tx| {
        let row = tx.get(c, &vm)?;
        let rec = Rec::new(c, &row);
        if rec.str("power_state") != "Halted" {
            return Err(ApiError::new(
                &codes::VM_BAD_POWER_STATE,
                [vm.clone(), "halted".to_string(), rec.str("power_state").to_lowercase()],
            ));
        }
        tx.update(c, &vm, |f| {
            set(c, f, "memory_static_min", smin);
            set(c, f, "memory_static_max", smax);
            set(c, f, "memory_dynamic_min", dmin);
            set(c, f, "memory_dynamic_max", dmax);
        })?;
        Ok(())
    })?;
    Ok(Reply::void())
}
