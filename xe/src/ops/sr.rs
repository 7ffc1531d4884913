//! SRs and PBDs: `sr-create`, `sr-introduce`, `sr-forget`, `sr-destroy`, `sr-scan`, `sr-update`, `sr-probe`,
//! `pbd-create`, `pbd-plug`, `pbd-unplug`, `pbd-destroy`.

use xapi_types::Value;

use super::{Special, by_uuid_param, call, uuid_line};
use crate::client::Client;
use crate::commands::Args;
use crate::error::XeError;
use crate::params::{create_record, parse_size};

pub const SPECIALS: &[Special] = &[
    Special {
        name: "sr-create",
        reqd: &["name-label", "type"],
        optional: &[
            "name-description",
            "host-uuid",
            "device-config:",
            "shared",
            "physical-size",
            "content-type",
            "sm-config:",
        ],
        description: "Creates an SR (type ext or iso) and its PBD on the host (default: the only host, or the \
                      pool's master), plugs it and prints its uuid. The SR's place is given as \
                      device-config:location=<directory>.",
        run: sr_create,
    },
    Special {
        name: "sr-introduce",
        reqd: &["name-label", "type", "uuid"],
        optional: &["name-description", "shared", "content-type", "sm-config:"],
        description: "Introduces an SR that exists on storage (but creates no PBD: pbd-create and pbd-plug \
                      attach it) and prints its uuid.",
        run: sr_introduce,
    },
    Special {
        name: "sr-forget",
        reqd: &["uuid"],
        optional: &[],
        description: "Forgets the SR: its records go (the PBDs must be unplugged), its contents stay.",
        run: sr_forget,
    },
    Special {
        name: "sr-destroy",
        reqd: &["uuid"],
        optional: &[],
        description: "Destroys the SR and its contents on storage (the PBDs must be unplugged).",
        run: sr_destroy,
    },
    Special {
        name: "sr-scan",
        reqd: &["uuid"],
        optional: &[],
        description: "Scans the SR, bringing the database in line with the VDIs on storage.",
        run: sr_scan,
    },
    Special {
        name: "sr-update",
        reqd: &["uuid"],
        optional: &[],
        description: "Refreshes the SR's fields (sizes, VDIs) in the database.",
        run: sr_update,
    },
    Special {
        name: "sr-probe",
        reqd: &["type"],
        optional: &["host-uuid", "device-config:", "sm-config:"],
        description: "Probes for an SR of the type at device-config:location=<directory> and prints what the \
                      storage backend says (XML).",
        run: sr_probe,
    },
    Special {
        name: "pbd-create",
        reqd: &["host-uuid", "sr-uuid"],
        optional: &["device-config:"],
        description: "Creates a PBD connecting the SR to the host, with device-config:key=value pairs (read-only \
                      afterwards), and prints its uuid.",
        run: pbd_create,
    },
    Special {
        name: "pbd-destroy",
        reqd: &["uuid"],
        optional: &[],
        description: "Destroys the PBD (it must be unplugged).",
        run: pbd_destroy,
    },
    Special {
        name: "pbd-plug",
        reqd: &["uuid"],
        optional: &[],
        description: "Plugs the PBD into its host: its SR (and the VDIs in it) becomes visible to the host.",
        run: pbd_plug,
    },
    Special {
        name: "pbd-unplug",
        reqd: &["uuid"],
        optional: &[],
        description: "Unplugs the PBD from its host: its SR (and the VDIs in it) is no longer visible to the host.",
        run: pbd_unplug,
    },
];

/// The host a command means: `host-uuid=`, else the only host, else (when `master_by_default`) the pool's master.
fn host(client: &Client, args: &Args, master_by_default: bool) -> Result<Value, XeError> {
    if let Some(uuid) = args.get("host-uuid") {
        return client.by_uuid("host", uuid);
    }
    let hosts = call(client, "host", "get_all", vec![])?;
    let hosts = hosts.as_array().unwrap_or_default();
    if let [one] = hosts {
        return Ok(one.clone());
    }
    if !master_by_default {
        return Err(XeError::Failure("Required parameter not found: host-uuid".into()));
    }
    let pools = call(client, "pool", "get_all", vec![])?;
    let pool = pools.as_array().and_then(|p| p.first()).cloned().unwrap_or(Value::str(""));
    call(client, "pool", "get_master", vec![("self", pool)])
}

fn sr_create(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let shared = args.bool("shared", false)?;
    let host = host(client, args, shared)?;
    let physical_size = args.get("physical-size").and_then(|s| parse_size("physical-size", s).ok()).unwrap_or(0);
    let named = vec![
        ("host", host),
        ("device_config", args.map("device-config")),
        ("physical_size", Value::Int(physical_size)),
        ("name_label", Value::str(args.require("name-label")?)),
        ("name_description", Value::str(args.get("name-description").unwrap_or_default())),
        ("type", Value::str(args.require("type")?)),
        ("content_type", Value::str(args.get("content-type").unwrap_or_default())),
        ("shared", Value::Bool(shared)),
        ("sm_config", args.map("sm-config")),
    ];
    let sr = call(client, "SR", "create", named)?;
    uuid_line(client, "SR", &sr)
}

/// `sr-introduce`: prints the uuid it was given, as xe does.
fn sr_introduce(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let uuid = args.require("uuid")?;
    let named = vec![
        ("uuid", Value::str(uuid)),
        ("name_label", Value::str(args.require("name-label")?)),
        ("name_description", Value::str(args.get("name-description").unwrap_or_default())),
        ("type", Value::str(args.require("type")?)),
        ("content_type", Value::str(args.get("content-type").unwrap_or_default())),
        ("shared", Value::Bool(args.bool("shared", false)?)),
        ("sm_config", args.map("sm-config")),
    ];
    call(client, "SR", "introduce", named)?;
    Ok(format!("{uuid}\n"))
}

/// `SR.<message>(sr)` on the SR `uuid=`.
fn on_sr(client: &Client, args: &Args, message: &str) -> Result<String, XeError> {
    let sr = by_uuid_param(client, args, "uuid", "SR")?;
    call(client, "SR", message, vec![("sr", sr)])?;
    Ok(String::new())
}

fn sr_forget(client: &mut Client, args: &Args) -> Result<String, XeError> {
    on_sr(client, args, "forget")
}

fn sr_destroy(client: &mut Client, args: &Args) -> Result<String, XeError> {
    on_sr(client, args, "destroy")
}

fn sr_scan(client: &mut Client, args: &Args) -> Result<String, XeError> {
    on_sr(client, args, "scan")
}

fn sr_update(client: &mut Client, args: &Args) -> Result<String, XeError> {
    on_sr(client, args, "update")
}

fn sr_probe(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let named = vec![
        ("host", host(client, args, true)?),
        ("device_config", args.map("device-config")),
        ("type", Value::str(args.require("type")?)),
        ("sm_config", args.map("sm-config")),
    ];
    let text = call(client, "SR", "probe", named)?;
    let text = text.as_str().unwrap_or_default();
    Ok(if text.ends_with('\n') { text.to_string() } else { format!("{text}\n") })
}

fn pbd_create(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let record = create_record(
        "PBD",
        vec![
            ("host", by_uuid_param(client, args, "host-uuid", "host")?),
            ("SR", by_uuid_param(client, args, "sr-uuid", "SR")?),
            ("device_config", args.map("device-config")),
            ("other_config", Value::Struct(vec![])),
        ],
    )?;
    let pbd = call(client, "PBD", "create", vec![("args", record)])?;
    uuid_line(client, "PBD", &pbd)
}

/// `PBD.<message>(self)` on the PBD `uuid=`.
fn on_pbd(client: &Client, args: &Args, message: &str) -> Result<String, XeError> {
    let pbd = by_uuid_param(client, args, "uuid", "PBD")?;
    call(client, "PBD", message, vec![("self", pbd)])?;
    Ok(String::new())
}

fn pbd_destroy(client: &mut Client, args: &Args) -> Result<String, XeError> {
    on_pbd(client, args, "destroy")
}

fn pbd_plug(client: &mut Client, args: &Args) -> Result<String, XeError> {
    on_pbd(client, args, "plug")
}

fn pbd_unplug(client: &mut Client, args: &Args) -> Result<String, XeError> {
    on_pbd(client, args, "unplug")
}
