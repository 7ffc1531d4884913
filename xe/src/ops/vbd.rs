//! VBDs: `vbd-create`, `vbd-destroy`, `vbd-insert`, `vbd-eject`, `vbd-plug`, `vbd-unplug`.

use xapi_types::Value;
use xapi_types::value::NULL_REF;

use super::{Special, by_uuid_param, call, uuid_line};
use crate::client::Client;
use crate::commands::Args;
use crate::error::XeError;
use crate::params::create_record;

pub const SPECIALS: &[Special] = &[
    Special {
        name: "vbd-create",
        reqd: &["vm-uuid", "device"],
        optional: &["vdi-uuid", "bootable", "type", "mode", "unpluggable"],
        description: "Creates a VBD and prints its uuid. Device is a free device number of the VM, or autodetect \
                      (the lowest free one). Without vdi-uuid the VBD is an empty drive (type=CD only). Type is 'Disk' (the \
                      default) or 'CD', mode 'RW' (the default for disks) or 'RO' (the default for CDs).",
        run: vbd_create,
    },
    Special { name: "vbd-destroy", reqd: &["uuid"], optional: &[], description: "Destroys the VBD.", run: vbd_destroy },
    Special {
        name: "vbd-insert",
        reqd: &["uuid", "vdi-uuid"],
        optional: &[],
        description: "Inserts the VDI (a disc) into the empty CD drive of the VBD.",
        run: vbd_insert,
    },
    Special {
        name: "vbd-eject",
        reqd: &["uuid"],
        optional: &[],
        description: "Ejects the disc from the CD drive of the VBD.",
        run: vbd_eject,
    },
    Special {
        name: "vbd-plug",
        reqd: &["uuid"],
        optional: &[],
        description: "Attaches (hot-plugs) the VBD while its VM is running.",
        run: vbd_plug,
    },
    Special {
        name: "vbd-unplug",
        reqd: &["uuid"],
        optional: &["timeout", "force"],
        description: "Detaches (hot-unplugs) the VBD while its VM is running; force=true detaches it at once, \
                      without waiting for the guest. The daemon waits up to 30 s for the guest; timeout is \
                      accepted for xe's sake.",
        run: vbd_unplug,
    },
];

fn vbd_create(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let vm = by_uuid_param(client, args, "vm-uuid", "VM")?;
    let vdi = match args.get("vdi-uuid") {
        Some(uuid) => Some(client.by_uuid("VDI", uuid)?),
        None => None,
    };
    let ty = match args.get("type").map(str::to_ascii_lowercase).as_deref() {
        None | Some("disk") => "Disk",
        Some("cd") => "CD",
        Some("floppy") => "Floppy",
        Some(other) => {
            return Err(XeError::Failure(format!("Unknown type: {other} (should be \"cd\", \"disk\" or \"floppy\")")));
        }
    };
    let mode = match args.get("mode").map(str::to_ascii_lowercase).as_deref() {
        None if ty == "CD" => "RO",
        None | Some("rw") => "RW",
        Some("ro") => "RO",
        Some(other) => return Err(XeError::Failure(format!("Unknown mode: {other} (should be \"ro\" or \"rw\")"))),
    };
    if ty == "Disk" && vdi.is_none() {
        return Err(XeError::Failure("Empty VBDs can only be made for type=CD".into()));
    }
    let record = create_record(
        "VBD",
        vec![
            ("VM", vm),
            ("empty", Value::Bool(vdi.is_none())),
            ("VDI", vdi.unwrap_or_else(|| Value::str(NULL_REF))),
            ("userdevice", Value::str(args.require("device")?)),
            ("bootable", Value::Bool(args.bool("bootable", false)?)),
            ("mode", Value::str(mode)),
            ("type", Value::str(ty)),
            ("unpluggable", Value::Bool(args.bool("unpluggable", true)?)),
        ],
    )?;
    let vbd = call(client, "VBD", "create", vec![("args", record)])?;
    uuid_line(client, "VBD", &vbd)
}

/// `VBD.<message>(<param>)` on the VBD `uuid=`.
fn on_vbd(client: &Client, args: &Args, message: &str, param: &str) -> Result<String, XeError> {
    let vbd = by_uuid_param(client, args, "uuid", "VBD")?;
    call(client, "VBD", message, vec![(param, vbd)])?;
    Ok(String::new())
}

fn vbd_destroy(client: &mut Client, args: &Args) -> Result<String, XeError> {
    on_vbd(client, args, "destroy", "self")
}

fn vbd_insert(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let vbd = by_uuid_param(client, args, "uuid", "VBD")?;
    let vdi = by_uuid_param(client, args, "vdi-uuid", "VDI")?;
    call(client, "VBD", "insert", vec![("vbd", vbd), ("vdi", vdi)])?;
    Ok(String::new())
}

fn vbd_eject(client: &mut Client, args: &Args) -> Result<String, XeError> {
    on_vbd(client, args, "eject", "vbd")
}

fn vbd_plug(client: &mut Client, args: &Args) -> Result<String, XeError> {
    on_vbd(client, args, "plug", "self")
}

fn vbd_unplug(client: &mut Client, args: &Args) -> Result<String, XeError> {
    if let Some(t) = args.get("timeout") {
        t.parse::<f64>()
            .map_err(|_| XeError::Failure("Failed to parse parameter 'timeout': expecting a float".into()))?;
    }
    let forced = args.force || args.bool("force", false)?;
    on_vbd(client, args, if forced { "unplug_force" } else { "unplug" }, "self")
}
