//! A VM's disks and CD drives: `vm-disk-add`, `vm-disk-list`, `vm-disk-remove`, `vm-cd-add`, `vm-cd-list`,
//! `vm-cd-insert`, `vm-cd-eject`, `vm-cd-remove` — xe's `cli_operations.ml` call for call.

use xapi_types::Value;
use xapi_types::value::NULL_REF;

use super::{Special, VM_SELECTORS, call, class, field, select_vms, vbd_records};
use crate::client::Client;
use crate::columns;
use crate::commands::Args;
use crate::error::XeError;
use crate::format;
use crate::params::{create_record, parse_size};

const DISK_LIST_OPTIONAL: &[&str] = &["vbd-params", "vdi-params", "uuid", "vm", "<field>=<value>", "--multiple"];

pub const SPECIALS: &[Special] = &[
    Special {
        name: "vm-disk-add",
        reqd: &["disk-size"],
        optional: &["device", "sr-uuid", "uuid", "vm", "<field>=<value>", "--multiple"],
        description: "Adds a new disk to the selected VMs: a VDI of disk-size (bytes, or with a suffix KiB, MiB, \
                      GiB, TiB) on sr-uuid (default: the pool's default SR) and a VBD at device (a free device \
                      number; default: the lowest free one), hot-plugged if the VM runs.",
        run: vm_disk_add,
    },
    Special {
        name: "vm-disk-list",
        reqd: &[],
        optional: DISK_LIST_OPTIONAL,
        description: "Lists the disks of the selected VMs: each disk's VBD and VDI (the fields in vbd-params and \
                      vdi-params, or all).",
        run: vm_disk_list,
    },
    Special {
        name: "vm-disk-remove",
        reqd: &["device"],
        optional: VM_SELECTORS,
        description: "Removes the disk at device from the selected VM and destroys it.",
        run: vm_disk_remove,
    },
    Special {
        name: "vm-cd-add",
        reqd: &["cd-name", "device"],
        optional: VM_SELECTORS,
        description: "Adds a CD drive holding the ISO named cd-name (a VDI of an iso SR) to the selected VMs, at \
                      device (a free device number).",
        run: vm_cd_add,
    },
    Special {
        name: "vm-cd-list",
        reqd: &[],
        optional: DISK_LIST_OPTIONAL,
        description: "Lists the CD drives of the selected VMs and the discs in them.",
        run: vm_cd_list,
    },
    Special {
        name: "vm-cd-insert",
        reqd: &["cd-name"],
        optional: VM_SELECTORS,
        description: "Inserts the ISO named cd-name into the VM's empty CD drive. This works only when there is \
                      one and only one empty CD drive; otherwise use vbd-insert with the uuids of the VBD and VDI.",
        run: vm_cd_insert,
    },
    Special {
        name: "vm-cd-eject",
        reqd: &[],
        optional: VM_SELECTORS,
        description: "Ejects the disc from the VM's CD drive. This works only when the VM has one and only one \
                      CD drive; otherwise use vbd-eject with the uuid of the VBD.",
        run: vm_cd_eject,
    },
    Special {
        name: "vm-cd-remove",
        reqd: &["cd-name"],
        optional: VM_SELECTORS,
        description: "Removes the CD drive holding the ISO named cd-name (<EMPTY> for an empty drive) from the \
                      selected VMs.",
        run: vm_cd_remove,
    },
];

fn failure(msg: impl Into<String>) -> XeError {
    XeError::Failure(msg.into())
}

/// The reference of the pool's default SR, if it names one.
fn default_sr(client: &Client) -> Result<Option<Value>, XeError> {
    let pools = call(client, "pool", "get_all", vec![])?;
    let Some(pool) = pools.as_array().and_then(|p| p.first()).cloned() else { return Ok(None) };
    let sr = call(client, "pool", "get_default_SR", vec![("self", pool)])?;
    let valid = sr.as_str().is_some_and(|s| s != NULL_REF)
        && call(client, "SR", "get_uuid", vec![("self", sr.clone())]).is_ok();
    Ok(valid.then_some(sr))
}

/// Creates a VBD and, if its VM runs, hot-plugs it (a refused plug leaves the VBD for the next boot, as in xe).
fn create_vbd_and_plug(client: &Client, record: Value, vm_running: bool) -> Result<Value, XeError> {
    let vbd = call(client, "VBD", "create", vec![("args", record)])?;
    if vm_running {
        let _ = call(client, "VBD", "plug", vec![("self", vbd.clone())]);
    }
    Ok(vbd)
}

fn running(record: &Value) -> bool {
    field(record, "power_state") == "Running"
}

/// `vm-disk-add <selectors> disk-size= [device=] [sr-uuid=]`: per VM a VDI "Created by xe" and an owner VBD; the
/// VDI goes again if the VBD cannot be made.
fn vm_disk_add(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let size = parse_size("disk-size", args.require("disk-size")?)?;
    let device = args.get("device").unwrap_or("autodetect");
    let sr = match args.get("sr-uuid") {
        Some(uuid) => client.by_uuid("SR", uuid)?,
        None => default_sr(client)?
            .ok_or_else(|| failure("No default Pool SR set; you must specify an SR on the commandline"))?,
    };
    let vms = select_vms(client, args, &["disk-size", "device", "sr-uuid"], true, false)?;
    for (vm, record) in vms {
        let hint = Value::Struct(vec![("vmhint".into(), Value::str(field(&record, "uuid")))]);
        let vdi_record = create_record(
            "VDI",
            vec![
                ("name_label", Value::str("Created by xe")),
                ("name_description", Value::str("Created by xe")),
                ("SR", sr.clone()),
                ("virtual_size", Value::Int(size)),
                ("type", Value::str("user")),
                ("sm_config", hint),
            ],
        )?;
        let vdi = call(client, "VDI", "create", vec![("args", vdi_record)])?;
        let vbd_record = create_record(
            "VBD",
            vec![
                ("VM", Value::str(&vm)),
                ("VDI", vdi.clone()),
                ("userdevice", Value::str(device)),
                ("bootable", Value::Bool(false)),
                ("mode", Value::str("RW")),
                ("type", Value::str("Disk")),
                ("unpluggable", Value::Bool(true)),
                ("empty", Value::Bool(false)),
                ("other_config", Value::Struct(vec![("owner".into(), Value::str(""))])),
            ],
        )?;
        if let Err(e) = create_vbd_and_plug(client, vbd_record, running(&record)) {
            let _ = call(client, "VDI", "destroy", vec![("self", vdi)]);
            return Err(e);
        }
    }
    Ok(String::new())
}

/// The VBDs of a VM (of one type, `Disk` or `CD`, if given), with their records, by device number.
fn vbds_of(client: &Client, vm: &Value, ty: Option<&str>) -> Result<Vec<(String, Value)>, XeError> {
    let all = vbd_records(client, vm)?;
    Ok(all.into_iter().filter(|(_, b)| ty.is_none_or(|ty| field(b, "type") == ty)).collect())
}

/// The rows of `record` for the xe field names `names` (or every field for `all`), xe's computed fields
/// (`vm-name-label` of a VBD, `sr-name-label` of a VDI) included ([`columns`]).
fn rows(
    client: &mut Client,
    class_name: &str,
    record: &Value,
    names: &[&str],
) -> Result<Vec<(String, String)>, XeError> {
    let c = class(class_name);
    let selected = if names == ["all"] {
        columns::all(c)
    } else {
        names
            .iter()
            .map(|name| {
                columns::column(c, name).ok_or_else(|| {
                    XeError::Usage(format!("Unknown field '{name}' for class {}.", format::xe_class_name(c)))
                })
            })
            .collect::<Result<_, _>>()?
    };
    Ok(columns::rows(c, record, &selected, client))
}

/// `vm-disk-list` / `vm-cd-list`: for each disk, `Disk N VBD:` and its VBD's fields, then (unless the drive is
/// empty) `Disk N VDI:` and its VDI's; with `--minimal` the first field of each, comma-separated.
fn disk_list(client: &mut Client, args: &Args, cd: bool) -> Result<String, XeError> {
    let vms = select_vms(client, args, &["vbd-params", "vdi-params"], true, false)?;
    disk_list_of(client, args, &vms, cd)
}

/// [`disk_list`] of the VMs `vms`.
pub(super) fn disk_list_of(
    client: &mut Client,
    args: &Args,
    vms: &[(String, Value)],
    cd: bool,
) -> Result<String, XeError> {
    let vbd_default: &[&str] =
        if cd { &["uuid", "vm-name-label", "userdevice", "empty"] } else { &["uuid", "vm-name-label", "userdevice"] };
    let vdi_default: &[&str] = &["uuid", "name-label", "virtual-size", "sr-name-label"];
    let split = |p: Option<&str>, default: &[&str]| -> Vec<String> {
        p.map_or_else(
            || default.iter().map(|s| s.to_string()).collect(),
            |p| p.split(',').map(|s| s.trim().to_string()).collect(),
        )
    };
    let vbd_fields = split(args.get("vbd-params"), vbd_default);
    let vdi_fields = split(args.get("vdi-params"), vdi_default);
    let vbd_fields: Vec<&str> = vbd_fields.iter().map(String::as_str).collect();
    let vdi_fields: Vec<&str> = vdi_fields.iter().map(String::as_str).collect();
    let (mut out, mut firsts) = (String::new(), Vec::new());
    let what = if cd { "CD" } else { "Disk" };
    for (_, vm) in vms {
        for (n, (_, vbd)) in vbds_of(client, vm, Some(what))?.into_iter().enumerate() {
            let mut tables = vec![(format!("{what} {n} VBD:"), rows(client, "VBD", &vbd, &vbd_fields)?)];
            if vbd.get("empty") != Some(&Value::Bool(true)) {
                let vdi = call(client, "VDI", "get_record", vec![("self", Value::str(field(&vbd, "VDI")))])?;
                tables.push((format!("{what} {n} VDI:"), rows(client, "VDI", &vdi, &vdi_fields)?));
            }
            for (title, rows) in tables {
                firsts.push(rows.first().map(|(_, v)| v.clone()).unwrap_or_default());
                out.push_str(&format!("{title}\n"));
                out.push_str(&format::block(&rows));
            }
        }
    }
    Ok(if args.minimal { format::minimal(&firsts) } else { out })
}

fn vm_disk_list(client: &mut Client, args: &Args) -> Result<String, XeError> {
    disk_list(client, args, false)
}

fn vm_cd_list(client: &mut Client, args: &Args) -> Result<String, XeError> {
    disk_list(client, args, true)
}

/// `vm-disk-remove <selectors> device=`: the VBD at `device` and its VDI destroyed.
fn vm_disk_remove(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let device = args.require("device")?;
    let vms = select_vms(client, args, &["device"], true, false)?;
    for (_, vm) in vms {
        let (vbd, record) = vbds_of(client, &vm, None)?
            .into_iter()
            .find(|(_, b)| field(b, "userdevice") == device)
            .ok_or_else(|| failure("Disk not found"))?;
        call(client, "VBD", "destroy", vec![("self", Value::str(vbd))])?;
        call(client, "VDI", "destroy", vec![("self", Value::str(field(&record, "VDI")))])?;
    }
    Ok(String::new())
}

/// Whether VDI `vdi` is on an SR whose content type is `iso`.
fn on_iso_sr(client: &Client, vdi: &Value) -> bool {
    call(client, "VDI", "get_SR", vec![("self", vdi.clone())])
        .and_then(|sr| call(client, "SR", "get_content_type", vec![("self", sr)]))
        .is_ok_and(|t| t.as_str() == Some("iso"))
}

/// The VDIs named `name` on ISO SRs.
fn isos_named(client: &Client, name: &str) -> Result<Vec<Value>, XeError> {
    let vdis = call(client, "VDI", "get_by_name_label", vec![("label", Value::str(name))])?;
    Ok(vdis.as_array().unwrap_or_default().iter().filter(|v| on_iso_sr(client, v)).cloned().collect())
}

/// `vm-cd-add <selectors> cd-name= device=`: a read-only CD VBD holding the first ISO named `cd-name`.
fn vm_cd_add(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let name = args.require("cd-name")?;
    let device = args.require("device")?;
    let vdi = isos_named(client, name)?.into_iter().next().ok_or_else(|| failure(format!("CD {name} not found!")))?;
    let vms = select_vms(client, args, &["cd-name", "device", "cd-location"], true, false)?;
    for (vm, record) in vms {
        let vbd = create_record(
            "VBD",
            vec![
                ("VM", Value::str(vm)),
                ("VDI", vdi.clone()),
                ("userdevice", Value::str(device)),
                ("bootable", Value::Bool(false)),
                ("mode", Value::str("RO")),
                ("type", Value::str("CD")),
                ("unpluggable", Value::Bool(true)),
                ("empty", Value::Bool(false)),
            ],
        )?;
        create_vbd_and_plug(client, vbd, running(&record))?;
    }
    Ok(String::new())
}

/// `vm-cd-insert <selectors> cd-name=`: the one ISO of that name into the VM's one empty CD drive.
fn vm_cd_insert(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let name = args.require("cd-name")?;
    let vdi = match isos_named(client, name)?.as_slice() {
        [] => return Err(failure(format!("CD {name} not found"))),
        [one] => one.clone(),
        _ => return Err(failure(format!("Multiple CDs named {name} found. Please use vbd-insert and specify uuids"))),
    };
    let vms = select_vms(client, args, &["cd-name"], true, false)?;
    for (vm, record) in vms {
        let empty: Vec<String> = vbds_of(client, &record, Some("CD"))?
            .into_iter()
            .filter(|(_, b)| b.get("empty") == Some(&Value::Bool(true)))
            .map(|(r, _)| r)
            .collect();
        let vbd = match empty.as_slice() {
            [] => return Err(XeError::Api(vec!["VM_NO_EMPTY_CD_VBD".into(), vm])),
            [one] => one.clone(),
            _ => return Err(failure("Two or more empty CD devices found. Please use vbd-insert")),
        };
        call(client, "VBD", "insert", vec![("vbd", Value::str(vbd)), ("vdi", vdi.clone())])?;
    }
    Ok(String::new())
}

/// `vm-cd-eject <selectors>`: the disc out of the VM's one CD drive.
fn vm_cd_eject(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let vms = select_vms(client, args, &[], true, false)?;
    for (_, record) in vms {
        let cds = vbds_of(client, &record, Some("CD"))?;
        let vbd = match cds.as_slice() {
            [] => return Err(failure("No CDs found")),
            [(one, _)] => one.clone(),
            _ => return Err(failure("Two or more CDs found. Please use vbd-eject")),
        };
        call(client, "VBD", "eject", vec![("vbd", Value::str(vbd))])?;
    }
    Ok(String::new())
}

/// `vm-cd-remove <selectors> cd-name=`: the first CD drive holding the ISO `cd-name` (or, for `<EMPTY>`, the first
/// empty drive) destroyed.
fn vm_cd_remove(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let name = args.require("cd-name")?;
    let vms = select_vms(client, args, &["cd-name"], true, false)?;
    for (_, record) in vms {
        let mut found = None;
        for (vbd, b) in vbds_of(client, &record, None)? {
            let holds = if b.get("empty") == Some(&Value::Bool(true)) {
                name == "<EMPTY>"
            } else {
                let vdi = Value::str(field(&b, "VDI"));
                on_iso_sr(client, &vdi)
                    && call(client, "VDI", "get_name_label", vec![("self", vdi)])
                        .is_ok_and(|n| n.as_str() == Some(name))
            };
            if holds {
                found = Some(vbd);
                break;
            }
        }
        let vbd = found.ok_or_else(|| failure("Disk not found"))?;
        call(client, "VBD", "destroy", vec![("self", Value::str(vbd))])?;
    }
    Ok(String::new())
}
