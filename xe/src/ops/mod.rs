//! The commands that are not generic, one table per subject: `misc` (`event-wait`, `task-cancel`,
//! `host-compute-free-memory`), `vm` (power operations, install, clone, copy, snapshot, uninstall), `vm_storage`
//! (`vm-disk-*`, `vm-cd-*`), `snapshot` (`template-*`, `snapshot-*`), `sr` (`sr-*`, `pbd-*`), `vdi` (`vdi-*`), `vdi_io` (`vdi-import`, `vdi-export`),
//! `vbd` (`vbd-*`) and `subject` (`subject-add`, `subject-role-add`, …). Each command is a row — name, parameters, what `xe help` says, and the function that runs it —
//! and each runs as xe's `cli_operations.ml` does: the same XenAPI calls, the same output. A call the daemon does
//! not implement yet (`NOT_IMPLEMENTED`) is said so plainly.

mod misc;
mod snapshot;
mod sr;
mod subject;
mod vbd;
mod vdi;
mod vdi_io;
mod vm;
mod vm_storage;

use xapi_types::model::{self, Class};
use xapi_types::{Value, model::Ty};

use crate::client::Client;
use crate::commands::{self, Args, Many};
use crate::error::XeError;
use crate::format;

/// Runs a hand-written command; its stdout on success.
pub type Runner = fn(&mut Client, &Args) -> Result<String, XeError>;

/// A hand-written command: its name, parameters, what `xe help` says about it, and what runs it.
#[derive(Debug)]
pub struct Special {
    pub name: &'static str,
    /// Checked before xe connects (`Required parameter not found: …`).
    pub reqd: &'static [&'static str],
    /// `<field>=<value>` stands for selectors, `name:` for `name:key=value` maps.
    pub optional: &'static [&'static str],
    pub description: &'static str,
    pub run: Runner,
}

/// The selectors a command on VMs takes.
pub const VM_SELECTORS: &[&str] = &["uuid", "vm", "<field>=<value>", "--multiple"];

const TABLES: [&[Special]; 9] = [
    misc::SPECIALS,
    vm::SPECIALS,
    vm_storage::SPECIALS,
    snapshot::SPECIALS,
    sr::SPECIALS,
    vdi::SPECIALS,
    vdi_io::SPECIALS,
    vbd::SPECIALS,
    subject::SPECIALS,
];

/// Every hand-written command.
pub fn specials() -> impl Iterator<Item = &'static Special> {
    TABLES.iter().flat_map(|t| t.iter())
}

pub fn special(name: &str) -> Option<&'static Special> {
    specials().find(|s| s.name == name)
}

/// The first required parameter missing from `args`, as xe reports it before doing anything.
pub fn check_required(special: &Special, args: &Args) -> Result<(), XeError> {
    match special.reqd.iter().find(|p| args.get(p).is_none()) {
        Some(p) => Err(XeError::missing(p)),
        None => Ok(()),
    }
}

pub fn run(client: &mut Client, special: &Special, args: &Args) -> Result<String, XeError> {
    (special.run)(client, args)
}

/// What xe says when the daemon does not implement `method` yet.
pub fn unavailable(method: &str) -> XeError {
    XeError::Usage(format!("This operation is not available in this version of the xapi-rs daemon: {method}"))
}

/// `NOT_IMPLEMENTED` (and an unknown method) turned into [`unavailable`].
fn implemented(method: &str, e: XeError) -> XeError {
    match &e {
        XeError::Api(d)
            if matches!(d.first().map(String::as_str), Some("NOT_IMPLEMENTED" | "MESSAGE_METHOD_UNKNOWN")) =>
        {
            unavailable(method)
        }
        _ => e,
    }
}

/// `client.call`, with `NOT_IMPLEMENTED` said plainly.
pub fn call_op(client: &Client, method: &str, params: Vec<Value>) -> Result<Value, XeError> {
    client.call(method, params).map_err(|e| implemented(method, e))
}

/// `client.call_msg` (parameters by name), with `NOT_IMPLEMENTED` said plainly.
pub fn call(client: &Client, class: &str, message: &str, named: Vec<(&str, Value)>) -> Result<Value, XeError> {
    client.call_msg(class, message, named).map_err(|e| implemented(&format!("{class}.{message}"), e))
}

pub fn class(name: &str) -> &'static Class {
    model::class(name).expect("the datamodel has this class")
}

/// The reference of the `class` object whose uuid is the parameter `param`.
pub fn by_uuid_param(client: &Client, args: &Args, param: &str, class: &str) -> Result<Value, XeError> {
    client.by_uuid(class, args.require(param)?)
}

/// What a creator prints: the new object's uuid on a line.
pub fn uuid_line(client: &Client, class: &str, r: &Value) -> Result<String, XeError> {
    Ok(format!("{}\n", client.uuid_of(class, r)?))
}

/// A list as xe prints it: a line each, or comma-separated with `--minimal`.
pub fn list(args: &Args, items: &[String]) -> String {
    if args.minimal { format::minimal(items) } else { items.iter().map(|i| format!("{i}\n")).collect() }
}

/// The VMs chosen by the selectors among `args` (all but the command's own parameters `own`); several need
/// `--multiple` when `multiple` is allowed, and are refused otherwise.
pub fn select_vms(
    client: &mut Client,
    args: &Args,
    own: &[&str],
    multiple: bool,
    templates: bool,
) -> Result<Vec<(String, Value)>, XeError> {
    let vms = commands::select_where(client, class("VM"), &args.other(own), templates)?;
    let many = if multiple { Many::Multiple(args.multiple) } else { Many::One };
    commands::check_count(class("VM"), vms.len(), many)?;
    Ok(vms)
}

/// A string field of a record.
pub fn field<'a>(record: &'a Value, name: &str) -> &'a str {
    record.get(name).and_then(Value::as_str).unwrap_or_default()
}

/// A set-of-references field of a record.
pub fn refs(record: &Value, name: &str) -> Vec<String> {
    record
        .get(name)
        .and_then(Value::as_array)
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

/// The VBDs of a VM record with their records, by device number (the order of the VM's `VBDs` set is the store's;
/// xe lists a VM's disks in that order, this xe by device so that a listing reads the same every time).
pub fn vbd_records(client: &Client, vm: &Value) -> Result<Vec<(String, Value)>, XeError> {
    let mut out = Vec::new();
    for vbd in refs(vm, "VBDs") {
        let record = call(client, "VBD", "get_record", vec![("self", Value::str(&vbd))])?;
        out.push((vbd, record));
    }
    out.sort_by_key(|(_, b)| {
        let device = field(b, "userdevice");
        (device.parse::<u64>().unwrap_or(u64::MAX), device.to_string())
    });
    Ok(out)
}

/// The parameters `xe help <command>` shows for a generic command, from the datamodel.
pub fn generic_params(subject: &commands::Subject, op: commands::Op) -> (Vec<String>, Vec<String>) {
    use commands::Op;
    let (class, own) = (subject.class, subject.noun.clone());
    let names = |pred: &dyn Fn(usize, &model::Field) -> bool| -> Vec<String> {
        class.fields.iter().enumerate().filter(|(i, f)| pred(*i, f)).map(|(_, f)| format::xe_name(f.name)).collect()
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let has = |kind| class.messages.iter().any(|m| m.kind == kind);
    match op {
        Op::List => {
            let mut opt = s(&["params", &own]);
            opt.extend(names(&|_, _| true));
            (vec![], opt)
        }
        Op::ParamList => (s(&["uuid"]), vec![]),
        Op::ParamGet => (s(&["uuid", "param-name"]), s(&["param-key"])),
        Op::ParamSet => {
            let mut opt =
                names(&|i, f| !matches!(f.ty, Ty::Map(..) | Ty::Set(_)) && has(model::MsgKind::Set(i as u16)));
            opt.extend(
                names(&|i, f| matches!(f.ty, Ty::Map(..)) && has(model::MsgKind::MapAdd(i as u16)))
                    .into_iter()
                    .map(|n| format!("{n}:")),
            );
            (s(&["uuid"]), opt)
        }
        Op::ParamAdd => (s(&["uuid", "param-name"]), s(&["param-key"])),
        Op::ParamRemove => (s(&["uuid", "param-name", "param-key"]), vec![]),
        Op::ParamClear => (s(&["uuid", "param-name"]), vec![]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_names_are_unique_and_described() {
        let mut names: Vec<&str> = specials().map(|s| s.name).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "a command is in two tables");
        for s in specials() {
            assert!(s.description.ends_with('.'), "{}: {}", s.name, s.description);
            assert!(commands::resolve(s.name).is_none(), "{} hides a generic command", s.name);
        }
    }
}
