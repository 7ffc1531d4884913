//! Commands on xe's pseudo-classes `template` and `snapshot` (VMs that are templates, or snapshots):
//! `template-uninstall`, `snapshot-uninstall`, `snapshot-destroy`, `snapshot-disk-list`, `snapshot-clone`,
//! `snapshot-copy`. Their `-list` and `-param-…` commands are generic (`commands::PSEUDO`).

use xapi_types::Value;
use xapi_types::value::NULL_REF;

use super::vm::{forced, print_new, uninstall};
use super::vm_storage::disk_list_of;
use super::{Special, call, call_op, field};
use crate::client::Client;
use crate::commands::Args;
use crate::error::XeError;

pub const SPECIALS: &[Special] = &[
    Special {
        name: "template-uninstall",
        reqd: &["template-uuid"],
        optional: &["force"],
        description: "Uninstalls a custom template: destroys it and the disks it owns (needs force=true or \
                      --force).",
        run: template_uninstall,
    },
    Special {
        name: "snapshot-uninstall",
        reqd: &[],
        optional: &["uuid", "snapshot-uuid", "force"],
        description: "Uninstalls a snapshot: destroys it and the read-write disks no other VM uses (needs \
                      force=true or --force). To destroy only the snapshot's record, use snapshot-destroy.",
        run: snapshot_uninstall,
    },
    Special {
        name: "snapshot-destroy",
        reqd: &[],
        optional: &["uuid", "snapshot-uuid"],
        description: "Destroys a snapshot, leaving its disks intact. To delete them too, use snapshot-uninstall.",
        run: snapshot_destroy,
    },
    Special {
        name: "snapshot-disk-list",
        reqd: &[],
        optional: &["uuid", "snapshot-uuid", "vbd-params", "vdi-params"],
        description: "Lists the disks of a snapshot: each disk's VBD and VDI.",
        run: snapshot_disk_list,
    },
    Special {
        name: "snapshot-clone",
        reqd: &["new-name-label"],
        optional: &["uuid", "snapshot-uuid", "new-name-description"],
        description: "Creates a new template by cloning a snapshot, using storage-level fast disk clones, and \
                      prints its uuid.",
        run: snapshot_clone,
    },
    Special {
        name: "snapshot-copy",
        reqd: &["new-name-label"],
        optional: &["uuid", "snapshot-uuid", "new-name-description", "sr-uuid"],
        description: "Creates a new template by copying a snapshot with full copies of its disks (on sr-uuid if \
                      given) and prints its uuid.",
        run: snapshot_copy,
    },
];

/// The VM `uuid` as `(ref, record)`, which must have `flag` set (`is_a_snapshot`, `is_a_template`).
fn vm_with(client: &Client, uuid: &str, flag: &str, what: &str) -> Result<(String, Value), XeError> {
    let r = client.by_uuid("VM", uuid)?;
    let record = call(client, "VM", "get_record", vec![("self", r.clone())])?;
    if record.get(flag) != Some(&Value::Bool(true)) {
        return Err(XeError::Failure(format!(
            "This operation can only be performed on a VM {what}. {uuid} is not a VM {what}."
        )));
    }
    Ok((r.as_str().unwrap_or_default().to_string(), record))
}

/// The snapshot named by `snapshot-uuid=` or `uuid=`.
fn snapshot(client: &Client, args: &Args) -> Result<(String, Value), XeError> {
    let uuid = args
        .get("snapshot-uuid")
        .or_else(|| args.get("uuid"))
        .ok_or_else(|| XeError::Failure("Required parameter not found: snapshot-uuid or uuid.".into()))?;
    vm_with(client, uuid, "is_a_snapshot", "snapshot")
}

fn confirm(args: &Args, command: &str) -> Result<(), XeError> {
    if forced(args)? {
        return Ok(());
    }
    Err(XeError::Usage(format!("{command} destroys the VM: add force=true (or --force) to confirm")))
}

fn template_uninstall(client: &mut Client, args: &Args) -> Result<String, XeError> {
    confirm(args, "template-uninstall")?;
    let template = vm_with(client, args.require("template-uuid")?, "is_a_template", "template")?;
    uninstall(client, &[template])
}

fn snapshot_uninstall(client: &mut Client, args: &Args) -> Result<String, XeError> {
    confirm(args, "snapshot-uninstall")?;
    let snap = snapshot(client, args)?;
    uninstall(client, &[snap])
}

fn snapshot_destroy(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let (r, record) = snapshot(client, args)?;
    if field(&record, "power_state") != "Halted" {
        call_op(client, "VM.hard_shutdown", vec![Value::str(&r)])?;
    }
    call_op(client, "VM.destroy", vec![Value::str(r)])?;
    Ok(String::new())
}

fn snapshot_disk_list(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let snap = snapshot(client, args)?;
    disk_list_of(client, args, &[snap], false)
}

fn snapshot_clone(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let (r, _) = snapshot(client, args)?;
    let name = Value::str(args.require("new-name-label")?);
    let new = call(client, "VM", "clone", vec![("vm", Value::str(r)), ("new_name", name)])?;
    print_new(client, args, &[new])
}

fn snapshot_copy(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let (r, _) = snapshot(client, args)?;
    let sr = match args.get("sr-uuid") {
        Some(uuid) => client.by_uuid("SR", uuid)?,
        None => Value::str(NULL_REF),
    };
    let name = Value::str(args.require("new-name-label")?);
    let new = call(client, "VM", "copy", vec![("vm", Value::str(r)), ("new_name", name), ("sr", sr)])?;
    print_new(client, args, &[new])
}
