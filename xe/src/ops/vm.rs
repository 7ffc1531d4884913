//! VM commands: the power operations, `vm-install`, `vm-clone`, `vm-copy`, `vm-snapshot`, `vm-destroy` and
//! `vm-uninstall` (which takes the VM's own disks along, as xe's does).

use xapi_types::Value;
use xapi_types::value::NULL_REF;

use super::{Special, VM_SELECTORS, call, call_op, class, field, list, refs, select_vms, uuid_line, vbd_records};
use crate::client::Client;
use crate::commands::{self, Args, Many};
use crate::error::XeError;

const VM_SELECTORS_FORCE: &[&str] = &["uuid", "vm", "<field>=<value>", "--multiple", "force"];

pub const SPECIALS: &[Special] = &[
    Special {
        name: "vm-clone",
        reqd: &["new-name-label"],
        optional: &["new-name-description", "uuid", "vm", "<field>=<value>"],
        description: "Clones the selected halted VM (or template), using storage-level fast disk clones, and \
                      prints the new VM's uuid.",
        run: vm_clone,
    },
    Special {
        name: "vm-copy",
        reqd: &["new-name-label"],
        optional: &["new-name-description", "sr-uuid", "uuid", "vm", "<field>=<value>"],
        description: "Copies the selected halted VM (or template) with full copies of its disks (on sr-uuid if \
                      given, else each on its own SR), not storage-level fast clones, and prints the new VM's uuid.",
        run: vm_copy,
    },
    Special {
        name: "vm-snapshot",
        reqd: &["new-name-label"],
        optional: &["new-name-description", "ignore-vdi-uuids", "uuid", "vm", "<field>=<value>", "--multiple"],
        description: "Snapshots the selected VMs, using storage-level fast disk snapshots (ignore-vdi-uuids: a \
                      comma-separated list of disks to leave out), and prints each snapshot's uuid.",
        run: vm_snapshot,
    },
    Special {
        name: "vm-uninstall",
        reqd: &[],
        optional: VM_SELECTORS_FORCE,
        description: "Uninstalls the selected VMs and their snapshots: each is shut down (forced) if it runs and \
                      destroyed, with the read-write disks no other VM uses (needs force=true or --force). To \
                      destroy only the VM record, use vm-destroy.",
        run: vm_uninstall,
    },
    Special {
        name: "vm-memory-limits-set",
        reqd: &["static-min", "static-max", "dynamic-min", "dynamic-max"],
        optional: super::VM_SELECTORS,
        description: "Sets the four memory limits of the selected halted VMs at once (sizes take xe's suffixes, \
                      e.g. 512MiB): static-min <= dynamic-min <= dynamic-max <= static-max.",
        run: memory_limits_set,
    },
    Special {
        name: "vm-destroy",
        reqd: &["uuid"],
        optional: &[],
        description: "Destroys the VM (it must be halted); its disks are kept.",
        run: vm_destroy,
    },
    Special {
        name: "vm-install",
        reqd: &["new-name-label"],
        optional: &["template", "template-uuid", "template-name-label"],
        description: "Installs a new VM from a template (VM.clone, then VM.provision) and prints its uuid.",
        run: vm_install,
    },
    Special {
        name: "vm-pause",
        reqd: &[],
        optional: VM_SELECTORS,
        description: "Pauses the selected VMs.",
        run: pause,
    },
    Special {
        name: "vm-reboot",
        reqd: &[],
        optional: VM_SELECTORS_FORCE,
        description: "Reboots the selected VMs (hard reboot with force=true or --force).",
        run: reboot,
    },
    Special {
        name: "vm-resume",
        reqd: &[],
        optional: &["uuid", "vm", "<field>=<value>", "--multiple", "force", "on"],
        description: "Resumes the selected VMs (on the host on=<name-label or uuid> if given); force=true (or \
                      --force) is passed to VM.resume.",
        run: resume,
    },
    Special {
        name: "vm-shutdown",
        reqd: &[],
        optional: VM_SELECTORS_FORCE,
        description: "Shuts the selected VMs down (hard shutdown with force=true or --force).",
        run: shutdown,
    },
    Special {
        name: "vm-start",
        reqd: &[],
        optional: &["uuid", "vm", "<field>=<value>", "--multiple", "force", "paused", "on"],
        description: "Starts the selected VMs (paused with paused=true; on the host on=<name-label or uuid> if \
                      given); force=true (or --force) is passed to VM.start.",
        run: start,
    },
    Special {
        name: "vm-suspend",
        reqd: &[],
        optional: VM_SELECTORS,
        description: "Suspends the selected VMs.",
        run: suspend,
    },
    Special {
        name: "vm-unpause",
        reqd: &[],
        optional: VM_SELECTORS,
        description: "Unpauses the selected VMs.",
        run: unpause,
    },
];

/// `force=<bool>` (read as xe reads booleans) or `--force`, which xe turns into `force=true`.
pub(super) fn forced(args: &Args) -> Result<bool, XeError> {
    Ok(args.force || args.bool("force", false)?)
}

/// The parameters of the power operations that are not selectors.
const POWER_OWN: &[&str] = &["force", "paused", "on"];

/// `method(vm, extra…)` on each selected VM.
fn each(client: &mut Client, args: &Args, method: &str, extra: Vec<Value>) -> Result<String, XeError> {
    let vms = commands::select_for_op(client, class("VM"), &args.other(POWER_OWN), Many::Multiple(args.multiple))?;
    for (r, _) in vms {
        let mut params = vec![Value::str(r)];
        params.extend(extra.iter().cloned());
        call_op(client, method, params)?;
    }
    Ok(String::new())
}

/// The host of `on=<name-label or uuid>`, if given (xe's `get_host_by_name_or_id`).
fn on_host(client: &mut Client, args: &Args) -> Result<Option<Value>, XeError> {
    let Some(on) = args.get("on") else { return Ok(None) };
    let hosts = commands::select_for_op(client, class("host"), &[("host".into(), on.into())], Many::One)?;
    Ok(hosts.into_iter().next().map(|(r, _)| Value::str(r)))
}

/// `vm-start [force=] [paused=] [on=]`: `VM.start(vm, paused, force)`, or `VM.start_on` the host `on`.
fn start(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let (paused, force) = (Value::Bool(args.bool("paused", false)?), Value::Bool(forced(args)?));
    match on_host(client, args)? {
        Some(host) => each(client, args, "VM.start_on", vec![host, paused, force]),
        None => each(client, args, "VM.start", vec![paused, force]),
    }
}

fn shutdown(client: &mut Client, args: &Args) -> Result<String, XeError> {
    each(client, args, if forced(args)? { "VM.hard_shutdown" } else { "VM.clean_shutdown" }, vec![])
}

fn reboot(client: &mut Client, args: &Args) -> Result<String, XeError> {
    each(client, args, if forced(args)? { "VM.hard_reboot" } else { "VM.clean_reboot" }, vec![])
}

fn suspend(client: &mut Client, args: &Args) -> Result<String, XeError> {
    each(client, args, "VM.suspend", vec![])
}

/// `vm-resume [force=] [on=]`: `VM.resume(vm, false, force)`, or `VM.resume_on` the host `on`.
fn resume(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let force = Value::Bool(forced(args)?);
    match on_host(client, args)? {
        Some(host) => each(client, args, "VM.resume_on", vec![host, Value::Bool(false), force]),
        None => each(client, args, "VM.resume", vec![Value::Bool(false), force]),
    }
}

fn pause(client: &mut Client, args: &Args) -> Result<String, XeError> {
    each(client, args, "VM.pause", vec![])
}

fn unpause(client: &mut Client, args: &Args) -> Result<String, XeError> {
    each(client, args, "VM.unpause", vec![])
}

/// `vm-memory-limits-set`: `VM.set_memory_limits(vm, static_min, static_max, dynamic_min, dynamic_max)`.
fn memory_limits_set(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let mut sizes = Vec::new();
    for p in MEMORY_LIMITS {
        sizes.push(Value::Int(crate::params::parse_size(p, args.require(p)?)?));
    }
    let vms = commands::select_for_op(client, class("VM"), &args.other(MEMORY_LIMITS), Many::Multiple(args.multiple))?;
    for (r, _) in vms {
        let mut params = vec![Value::str(r)];
        params.extend(sizes.iter().cloned());
        call_op(client, "VM.set_memory_limits", params)?;
    }
    Ok(String::new())
}

const MEMORY_LIMITS: &[&str] = &["static-min", "static-max", "dynamic-min", "dynamic-max"];

fn vm_destroy(client: &mut Client, args: &Args) -> Result<String, XeError> {
    each(client, args, "VM.destroy", vec![])
}

/// Sets the new VMs' description when `new-name-description` is given, and prints their uuids.
pub(super) fn print_new(client: &Client, args: &Args, new: &[Value]) -> Result<String, XeError> {
    let mut uuids = Vec::new();
    for vm in new {
        if let Some(d) = args.get("new-name-description") {
            call(client, "VM", "set_name_description", vec![("self", vm.clone()), ("value", Value::str(d))])?;
        }
        uuids.push(client.uuid_of("VM", vm)?);
    }
    Ok(list(args, &uuids))
}

/// `vm-clone <selectors> new-name-label= [new-name-description=]`: `VM.clone` of one VM or template.
fn vm_clone(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let name = args.require("new-name-label")?;
    let vms = select_vms(client, args, &["new-name-label", "new-name-description"], false, true)?;
    let vm = call(client, "VM", "clone", vec![("vm", Value::str(&vms[0].0)), ("new_name", Value::str(name))])?;
    print_new(client, args, &[vm])
}

/// `vm-copy <selectors> new-name-label= [new-name-description=] [sr-uuid=]`: `VM.copy` of one VM or template,
/// its disks fully copied onto `sr-uuid` (or each onto its own SR).
fn vm_copy(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let name = args.require("new-name-label")?;
    let sr = match args.get("sr-uuid") {
        Some(uuid) => client.by_uuid("SR", uuid)?,
        None => Value::str(NULL_REF),
    };
    let vms = select_vms(client, args, &["new-name-label", "new-name-description", "sr-uuid"], false, true)?;
    let named = vec![("vm", Value::str(&vms[0].0)), ("new_name", Value::str(name)), ("sr", sr)];
    let vm = call(client, "VM", "copy", named)?;
    print_new(client, args, &[vm])
}

/// `vm-snapshot <selectors> new-name-label= [new-name-description=] [ignore-vdi-uuids=a,b]`: `VM.snapshot` of each
/// selected VM.
fn vm_snapshot(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let name = args.require("new-name-label")?;
    let mut ignore = Vec::new();
    for uuid in args.get("ignore-vdi-uuids").unwrap_or_default().split(',').filter(|u| !u.is_empty()) {
        ignore.push(client.by_uuid("VDI", uuid)?);
    }
    let own = ["new-name-label", "new-name-description", "ignore-vdi-uuids"];
    let vms = select_vms(client, args, &own, true, false)?;
    let mut new = Vec::new();
    for (vm, _) in vms {
        let named =
            vec![("vm", Value::str(vm)), ("new_name", Value::str(name)), ("ignore_vdis", Value::Array(ignore.clone()))];
        new.push(call(client, "VM", "snapshot", named)?);
    }
    print_new(client, args, &new)
}

/// `vm-install template=<name-label or uuid> new-name-label=<name>`: the template is cloned and the clone
/// provisioned (which makes it a VM); prints the new VM's uuid, as xe does.
fn vm_install(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let name = args.require("new-name-label")?;
    let selector = match (args.get("template"), args.get("template-uuid"), args.get("template-name-label")) {
        (_, Some(uuid), _) => ("uuid".to_string(), uuid.to_string()),
        (_, _, Some(label)) => ("name-label".to_string(), label.to_string()),
        (Some(t), _, _) => ("vm".to_string(), t.to_string()),
        _ => return Err(XeError::missing("template")),
    };
    let selectors = [selector, ("is-a-template".to_string(), "true".to_string())];
    let templates = commands::select(client, class("VM"), &selectors)?;
    let template = match templates.as_slice() {
        [] => return Err(XeError::Usage("No matching template found".into())),
        [one] => one.0.clone(),
        _ => return Err(XeError::Usage("More than one template matches; use template-uuid=".into())),
    };
    let vm = call_op(client, "VM.clone", vec![Value::str(template), Value::str(name)])?;
    call_op(client, "VM.provision", vec![vm.clone()])?;
    uuid_line(client, "VM", &vm)
}

/// What `vm-uninstall` destroys of one VM: the VM and the VDIs of its read-write disk VBDs that no VM outside
/// `leaving` (the VMs being uninstalled) uses, and its suspend image.
struct Doomed {
    vm: String,
    power: String,
    line: String,
    vdis: Vec<(String, String)>,
}

fn doomed(client: &Client, vm: &str, record: &Value, leaving: &[String]) -> Result<Doomed, XeError> {
    let mut vdis: Vec<(String, String)> = Vec::new();
    for (vbd, b) in vbd_records(client, record)? {
        let owned = b.get("other_config").and_then(|m| m.get("owner")).is_some();
        if field(&b, "type") == "CD" || b.get("empty") == Some(&Value::Bool(true)) {
            continue;
        }
        if !owned && field(&b, "mode") != "RW" {
            continue;
        }
        let vdi = field(&b, "VDI").to_string();
        let Ok(d) = call(client, "VDI", "get_record", vec![("self", Value::str(&vdi))]) else { continue };
        if vdis.iter().any(|(v, _)| *v == vdi) {
            continue;
        }
        let mut shared = false;
        for other in refs(&d, "VBDs").iter().filter(|o| **o != vbd) {
            let user = call(client, "VBD", "get_VM", vec![("self", Value::str(other))]);
            if user.as_ref().ok().and_then(Value::as_str).is_some_and(|u| !leaving.iter().any(|l| l == u)) {
                shared = true;
            }
        }
        if !shared {
            vdis.push((vdi, format!("VDI: {} ({})", field(&d, "uuid"), field(&d, "name_label"))));
        }
    }
    let suspend = field(record, "suspend_VDI");
    if !suspend.is_empty()
        && suspend != NULL_REF
        && !vdis.iter().any(|(v, _)| v == suspend)
        && let Ok(d) = call(client, "VDI", "get_record", vec![("self", Value::str(suspend))])
    {
        vdis.push((suspend.to_string(), format!("VDI: {} ({})", field(&d, "uuid"), field(&d, "name_label"))));
    }
    Ok(Doomed {
        vm: vm.to_string(),
        power: field(record, "power_state").to_string(),
        line: format!("VM : {} ({})", field(record, "uuid"), field(record, "name_label")),
        vdis,
    })
}

/// `vm-uninstall <selectors> force=true`: as xe, the selected VMs and their snapshots, each hard shut down unless
/// halted, destroyed, then their own disks destroyed; prints what it destroys. (xe asks for confirmation on a
/// terminal; scripts pass `force=true`, which this xe requires.)
fn vm_uninstall(client: &mut Client, args: &Args) -> Result<String, XeError> {
    if !forced(args)? {
        return Err(XeError::Usage("vm-uninstall destroys the VM: add force=true (or --force) to confirm".to_string()));
    }
    let mut vms = select_vms(client, args, &["force"], true, false)?;
    for (_, record) in vms.clone() {
        for snap in refs(&record, "snapshots") {
            if !vms.iter().any(|(r, _)| *r == snap) {
                let rec = call(client, "VM", "get_record", vec![("self", Value::str(&snap))])?;
                vms.push((snap, rec));
            }
        }
    }
    uninstall(client, &vms)
}

/// Destroys `vms` and their own disks (see [`doomed`]), printing xe's list of what goes.
pub(super) fn uninstall(client: &Client, vms: &[(String, Value)]) -> Result<String, XeError> {
    let leaving: Vec<String> = vms.iter().map(|(r, _)| r.clone()).collect();
    let mut plan = Vec::new();
    for (r, record) in vms {
        plan.push(doomed(client, r, record, &leaving)?);
    }
    let mut out = String::from("The following items are about to be destroyed\n");
    for d in &plan {
        out.push_str(&format!("{}\n", d.line));
        for (_, line) in &d.vdis {
            out.push_str(&format!("{line}\n"));
        }
    }
    for d in &plan {
        if d.power != "Halted" {
            call_op(client, "VM.hard_shutdown", vec![Value::str(&d.vm)])?;
        }
        call_op(client, "VM.destroy", vec![Value::str(&d.vm)])?;
        for (vdi, _) in &d.vdis {
            match call(client, "VDI", "destroy", vec![("self", Value::str(vdi))]) {
                // Gone already: the daemon's collector can merge a snapshot's disk away while its siblings go.
                Err(XeError::Api(e)) if e.first().is_some_and(|c| c == "HANDLE_INVALID") => {}
                r => {
                    r?;
                }
            }
        }
    }
    out.push_str("All objects destroyed\n");
    Ok(out)
}
