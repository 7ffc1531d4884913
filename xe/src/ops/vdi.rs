//! VDIs: `vdi-create`, `vdi-destroy`, `vdi-forget`, `vdi-update`, `vdi-introduce`, `vdi-resize`, `vdi-copy`,
//! `vdi-clone`, `vdi-snapshot`.

use xapi_types::Value;
use xapi_types::value::NULL_REF;

use super::{Special, by_uuid_param, call, uuid_line};
use crate::client::Client;
use crate::commands::Args;
use crate::error::XeError;
use crate::params::{create_record, parse_size};

pub const SPECIALS: &[Special] = &[
    Special {
        name: "vdi-create",
        reqd: &["sr-uuid", "name-label", "virtual-size"],
        optional: &["type", "sharable", "read-only", "sm-config:", "tags:"],
        description: "Creates a VDI of virtual-size (bytes, or with a suffix KiB, MiB, GiB, TiB) on the SR and \
                      prints its uuid. Type is 'system', 'user' (the default), 'suspend' or 'crashdump'.",
        run: vdi_create,
    },
    Special { name: "vdi-destroy", reqd: &["uuid"], optional: &[], description: "Destroys the VDI.", run: vdi_destroy },
    Special {
        name: "vdi-forget",
        reqd: &["uuid"],
        optional: &[],
        description: "Forgets the VDI: its record goes, its contents stay (an sr-scan brings it back).",
        run: vdi_forget,
    },
    Special {
        name: "vdi-update",
        reqd: &["uuid"],
        optional: &[],
        description: "Refreshes the VDI's fields in the database.",
        run: vdi_update,
    },
    Special {
        name: "vdi-introduce",
        reqd: &["uuid", "sr-uuid", "type", "location"],
        optional: &[
            "name-label",
            "name-description",
            "sharable",
            "read-only",
            "managed",
            "other-config:",
            "xenstore-data:",
            "sm-config:",
        ],
        description: "Creates a VDI record for a disk that exists on the SR (location: the VHD's uuid on an ext \
                      SR, the file name on an iso SR) and prints its uuid.",
        run: vdi_introduce,
    },
    Special {
        name: "vdi-resize",
        reqd: &["uuid", "disk-size"],
        optional: &["online"],
        description: "Resizes the VDI to disk-size (bytes, or with a suffix KiB, MiB, GiB, TiB); online=true for \
                      a disk a running VM uses.",
        run: vdi_resize,
    },
    Special {
        name: "vdi-copy",
        reqd: &["uuid"],
        optional: &["sr-uuid", "base-vdi-uuid", "into-vdi-uuid"],
        description: "Copies the VDI, either into a fresh VDI on sr-uuid or into the existing VDI into-vdi-uuid, \
                      and prints the uuid of the copy.",
        run: vdi_copy,
    },
    Special {
        name: "vdi-clone",
        reqd: &["uuid"],
        optional: &["new-name-label", "new-name-description", "driver-params:"],
        description: "Clones the VDI and prints the clone's uuid.",
        run: vdi_clone,
    },
    Special {
        name: "vdi-snapshot",
        reqd: &["uuid"],
        optional: &["driver-params:"],
        description: "Snapshots the VDI and prints the snapshot's uuid.",
        run: vdi_snapshot,
    },
];

/// A VDI type as xe reads it.
fn vdi_type(s: &str) -> Result<Value, XeError> {
    match s {
        "system" | "user" | "suspend" | "crashdump" => Ok(Value::str(s)),
        _ => Err(XeError::Failure(format!("Unknown vdi type: {s}"))),
    }
}

/// The members of the `<name>:key=value` pairs given, as a set (`tags:x=` adds the tag `x`).
fn set_of(args: &Args, name: &str) -> Value {
    let Value::Struct(members) = args.map(name) else { return Value::Array(vec![]) };
    Value::Array(members.into_iter().map(|(k, _)| Value::str(k)).collect())
}

fn vdi_create(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let sr = by_uuid_param(client, args, "sr-uuid", "SR")?;
    let size = parse_size("virtual-size", args.require("virtual-size")?)?;
    let record = create_record(
        "VDI",
        vec![
            ("name_label", Value::str(args.require("name-label")?)),
            ("name_description", Value::str("")),
            ("SR", sr),
            ("virtual_size", Value::Int(size)),
            ("type", vdi_type(args.get("type").unwrap_or("user"))?),
            ("sharable", Value::Bool(args.bool("sharable", false)?)),
            ("read_only", Value::Bool(args.bool("read-only", false)?)),
            ("other_config", Value::Struct(vec![])),
            ("xenstore_data", Value::Struct(vec![])),
            ("sm_config", args.map("sm-config")),
            ("tags", set_of(args, "tags")),
        ],
    )?;
    let vdi = call(client, "VDI", "create", vec![("args", record)])?;
    uuid_line(client, "VDI", &vdi)
}

/// `VDI.<message>(<param>)` on the VDI `uuid=`.
fn on_vdi(client: &Client, args: &Args, message: &str, param: &str) -> Result<String, XeError> {
    let vdi = by_uuid_param(client, args, "uuid", "VDI")?;
    call(client, "VDI", message, vec![(param, vdi)])?;
    Ok(String::new())
}

fn vdi_destroy(client: &mut Client, args: &Args) -> Result<String, XeError> {
    on_vdi(client, args, "destroy", "self")
}

fn vdi_forget(client: &mut Client, args: &Args) -> Result<String, XeError> {
    on_vdi(client, args, "forget", "vdi")
}

fn vdi_update(client: &mut Client, args: &Args) -> Result<String, XeError> {
    on_vdi(client, args, "update", "vdi")
}

fn vdi_introduce(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let named = vec![
        ("uuid", Value::str(args.require("uuid")?)),
        ("name_label", Value::str(args.get("name-label").unwrap_or_default())),
        ("name_description", Value::str(args.get("name-description").unwrap_or_default())),
        ("SR", by_uuid_param(client, args, "sr-uuid", "SR")?),
        ("type", vdi_type(args.require("type")?)?),
        ("sharable", Value::Bool(args.bool("sharable", false)?)),
        ("read_only", Value::Bool(args.bool("read-only", false)?)),
        ("other_config", args.map("other-config")),
        ("location", Value::str(args.require("location")?)),
        ("xenstore_data", args.map("xenstore-data")),
        ("sm_config", args.map("sm-config")),
        ("managed", Value::Bool(args.bool("managed", true)?)),
    ];
    let vdi = call(client, "VDI", "introduce", named)?;
    uuid_line(client, "VDI", &vdi)
}

fn vdi_resize(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let vdi = by_uuid_param(client, args, "uuid", "VDI")?;
    let size = parse_size("disk-size", args.require("disk-size")?)?;
    let message = if args.get("online") == Some("true") { "resize_online" } else { "resize" };
    call(client, "VDI", message, vec![("vdi", vdi), ("size", Value::Int(size))])?;
    Ok(String::new())
}

fn vdi_copy(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let vdi = by_uuid_param(client, args, "uuid", "VDI")?;
    let null = || Value::str(NULL_REF);
    let base = match args.get("base-vdi-uuid") {
        Some(uuid) => client.by_uuid("VDI", uuid)?,
        None => null(),
    };
    let (sr, into) = match (args.get("sr-uuid"), args.get("into-vdi-uuid")) {
        (Some(sr), None) => (client.by_uuid("SR", sr)?, null()),
        (None, Some(into)) => (null(), client.by_uuid("VDI", into)?),
        _ => {
            return Err(XeError::Failure(
                "Please specify one but not both of: a destination sr-uuid (I will create a fresh VDI); or a \
                 destination into-vdi-uuid (I will copy the blocks into this VDI)"
                    .into(),
            ));
        }
    };
    let named = vec![("vdi", vdi), ("sr", sr), ("base_vdi", base), ("into_vdi", into)];
    let new = call(client, "VDI", "copy", named)?;
    uuid_line(client, "VDI", &new)
}

fn vdi_clone(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let vdi = by_uuid_param(client, args, "uuid", "VDI")?;
    let new = call(client, "VDI", "clone", vec![("vdi", vdi), ("driver_params", args.map("driver-params"))])?;
    if let Some(name) = args.get("new-name-label") {
        call(client, "VDI", "set_name_label", vec![("self", new.clone()), ("value", Value::str(name))])?;
    }
    if let Some(d) = args.get("new-name-description") {
        call(client, "VDI", "set_name_description", vec![("self", new.clone()), ("value", Value::str(d))])?;
    }
    uuid_line(client, "VDI", &new)
}

fn vdi_snapshot(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let vdi = by_uuid_param(client, args, "uuid", "VDI")?;
    let new = call(client, "VDI", "snapshot", vec![("vdi", vdi), ("driver_params", args.map("driver-params"))])?;
    uuid_line(client, "VDI", &new)
}
