//! Commands that are not generic: `task-cancel`, `event-wait`, and the VM power operations. Each is one XenAPI
//! call per selected object; a call the daemon does not implement yet (`NOT_IMPLEMENTED`) is said so plainly.

use std::time::{Duration, Instant};

use xapi_types::model::{self, Class};
use xapi_types::{Value, model::Ty};

use crate::client::Client;
use crate::commands::{self, Args};
use crate::error::XeError;
use crate::format;

/// A hand-written command: its name, parameters and what `xe help` says about it.
#[derive(Debug)]
pub struct Special {
    pub name: &'static str,
    pub reqd: &'static [&'static str],
    pub optional: &'static [&'static str],
    pub description: &'static str,
}

const VM_SELECTORS: &[&str] = &["uuid", "vm", "<field>=<value>", "--multiple"];

pub const SPECIALS: &[Special] = &[
    Special {
        name: "event-wait",
        reqd: &["class"],
        optional: &["<field>=<value>", "timeout"],
        description: "Blocks until an object of the class satisfies every condition field=value (the latest \
                      value of each field, in xe's spelling); exits 1 when the optional timeout (seconds) passes.",
    },
    Special {
        name: "task-cancel",
        reqd: &[],
        optional: &["uuid", "task", "<field>=<value>", "--multiple"],
        description: "Asks the selected tasks to cancel.",
    },
    Special {
        name: "host-compute-free-memory",
        reqd: &[],
        optional: &["uuid", "host", "<field>=<value>"],
        description: "Prints the memory (bytes) a new VM could have on the host.",
    },
    Special {
        name: "vm-clone",
        reqd: &["new-name-label"],
        optional: &["uuid", "vm", "<field>=<value>"],
        description: "Clones the selected halted VM (or template) and prints the new VM's uuid.",
    },
    Special {
        name: "vm-uninstall",
        reqd: &[],
        optional: &["uuid", "vm", "<field>=<value>", "--multiple", "force"],
        description: "Destroys the selected VMs, shutting them down first (needs force=true or --force).",
    },
    Special {
        name: "vm-destroy",
        reqd: &["uuid"],
        optional: &[],
        description: "Destroys the VM (it must be halted); its disks are kept.",
    },
    Special {
        name: "vm-install",
        reqd: &["new-name-label"],
        optional: &["template", "template-uuid", "template-name-label"],
        description: "Installs a new VM from a template (VM.clone, then VM.provision) and prints its uuid.",
    },
    Special { name: "vm-pause", reqd: &[], optional: VM_SELECTORS, description: "Pauses the selected VMs." },
    Special {
        name: "vm-reboot",
        reqd: &[],
        optional: &["uuid", "vm", "<field>=<value>", "--multiple", "force"],
        description: "Reboots the selected VMs (hard reboot with force=true or --force).",
    },
    Special { name: "vm-resume", reqd: &[], optional: VM_SELECTORS, description: "Resumes the selected VMs." },
    Special {
        name: "vm-shutdown",
        reqd: &[],
        optional: &["uuid", "vm", "<field>=<value>", "--multiple", "force"],
        description: "Shuts the selected VMs down (hard shutdown with force=true or --force).",
    },
    Special { name: "vm-start", reqd: &[], optional: VM_SELECTORS, description: "Starts the selected VMs." },
    Special { name: "vm-suspend", reqd: &[], optional: VM_SELECTORS, description: "Suspends the selected VMs." },
    Special { name: "vm-unpause", reqd: &[], optional: VM_SELECTORS, description: "Unpauses the selected VMs." },
];

pub fn special(name: &str) -> Option<&'static Special> {
    SPECIALS.iter().find(|s| s.name == name)
}

/// What xe says when the daemon does not implement `method` yet.
pub fn unavailable(method: &str) -> XeError {
    XeError::Usage(format!("This operation is not available in this version of the xapi-rs daemon: {method}"))
}

/// `client.call`, with `NOT_IMPLEMENTED` (and an unknown method) turned into [`unavailable`].
fn call_op(client: &Client, method: &str, params: Vec<Value>) -> Result<Value, XeError> {
    client.call(method, params).map_err(|e| match &e {
        XeError::Api(d)
            if matches!(d.first().map(String::as_str), Some("NOT_IMPLEMENTED" | "MESSAGE_METHOD_UNKNOWN")) =>
        {
            unavailable(method)
        }
        _ => e,
    })
}

fn class(name: &str) -> &'static Class {
    model::class(name).expect("the datamodel has this class")
}

pub fn run(client: &mut Client, special: &Special, args: &Args) -> Result<String, XeError> {
    let force = args.force || args.get("force").is_some_and(|f| f.eq_ignore_ascii_case("true"));
    let (method, extra): (&str, Vec<Value>) = match special.name {
        "event-wait" => return event_wait(client, args),
        "task-cancel" => {
            let tasks = commands::select_for_op(client, class("task"), &args.params, args.multiple)?;
            for (r, _) in tasks {
                call_op(client, "task.cancel", vec![Value::str(r)])?;
            }
            return Ok(String::new());
        }
        "vm-install" => return vm_install(client, args),
        "host-compute-free-memory" => {
            let hosts = commands::select_for_op(client, class("host"), &args.params, false)?;
            let free = call_op(client, "host.compute_free_memory", vec![Value::str(hosts[0].0.clone())])?;
            return Ok(format!("{}\n", format::value_string(&Ty::Int, &free, client)));
        }
        "vm-clone" => {
            let name = args.require("new-name-label")?;
            let vms = commands::select_for_op(client, class("VM"), &args.other(&["new-name-label"]), false)?;
            let vm = call_op(client, "VM.clone", vec![Value::str(vms[0].0.clone()), Value::str(name)])?;
            let uuid = client.call("VM.get_uuid", vec![vm])?;
            return Ok(format!("{}\n", uuid.as_str().unwrap_or_default()));
        }
        "vm-uninstall" => return vm_uninstall(client, args, force),
        "vm-destroy" => ("VM.destroy", vec![]),
        "vm-start" => ("VM.start", vec![Value::Bool(false), Value::Bool(false)]),
        "vm-shutdown" if force => ("VM.hard_shutdown", vec![]),
        "vm-shutdown" => ("VM.clean_shutdown", vec![]),
        "vm-reboot" if force => ("VM.hard_reboot", vec![]),
        "vm-reboot" => ("VM.clean_reboot", vec![]),
        "vm-suspend" => ("VM.suspend", vec![]),
        "vm-resume" => ("VM.resume", vec![Value::Bool(false), Value::Bool(false)]),
        "vm-pause" => ("VM.pause", vec![]),
        "vm-unpause" => ("VM.unpause", vec![]),
        other => unreachable!("{other} is in SPECIALS but has no implementation"),
    };
    let vms = commands::select_for_op(client, class("VM"), &args.other(&["force"]), args.multiple)?;
    for (r, _) in vms {
        let mut params = vec![Value::str(r)];
        params.extend(extra.iter().cloned());
        call_op(client, method, params)?;
    }
    Ok(String::new())
}

/// `vm-install template=<name-label or uuid> new-name-label=<name>`: the template is cloned and the clone
/// provisioned (which makes it a VM); prints the new VM's uuid, as xe does.
fn vm_install(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let name = args.require("new-name-label")?;
    let selector = match (args.get("template"), args.get("template-uuid"), args.get("template-name-label")) {
        (_, Some(uuid), _) => ("uuid".to_string(), uuid.to_string()),
        (_, _, Some(label)) => ("name-label".to_string(), label.to_string()),
        (Some(t), _, _) => ("vm".to_string(), t.to_string()),
        _ => return Err(XeError::Usage("Required parameter not found: template".into())),
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
    let uuid = client.call("VM.get_uuid", vec![vm])?;
    Ok(format!("{}\n", uuid.as_str().unwrap_or_default()))
}

/// `vm-uninstall <selectors> force=true`: each selected VM is hard shut down unless halted, then destroyed. (xe
/// asks for confirmation on a terminal; scripts pass `force=true`, which this xe requires.)
fn vm_uninstall(client: &mut Client, args: &Args, force: bool) -> Result<String, XeError> {
    if !force {
        return Err(XeError::Usage("vm-uninstall destroys the VM: add force=true (or --force) to confirm".to_string()));
    }
    let vms = commands::select_for_op(client, class("VM"), &args.other(&["force"]), args.multiple)?;
    for (r, record) in vms {
        if record.get("power_state").and_then(Value::as_str) != Some("Halted") {
            call_op(client, "VM.hard_shutdown", vec![Value::str(r.clone())])?;
        }
        call_op(client, "VM.destroy", vec![Value::str(r)])?;
    }
    Ok(String::new())
}

/// `event-wait class= [field=value …] [timeout=]`: follows `event.from` from an empty token (which reports every
/// object first) until one event's snapshot satisfies all conditions.
fn event_wait(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let name = args.require("class")?;
    let class = format::listable_classes()
        .find(|c| format::xe_class_name(c) == name)
        .or_else(|| model::class_ci(name))
        .filter(|c| c.persistent)
        .ok_or_else(|| XeError::Usage(format!("Unknown class: {name}")))?;
    let deadline = match args.get("timeout") {
        Some(t) => {
            let secs: f64 = t.parse().map_err(|_| XeError::Usage(format!("Invalid timeout: {t}")))?;
            Some(Instant::now() + Duration::from_secs_f64(secs.max(0.0)))
        }
        None => None,
    };
    let conditions = args.other(&["class", "timeout"]);
    for (k, _) in &conditions {
        let field = k.split_once(':').map_or(k.as_str(), |(m, _)| m);
        if format::field_by_xe_name(class, field).is_none() {
            return Err(XeError::Usage(format!("Unknown field '{k}' for class {name}.")));
        }
    }
    let mut token = String::new();
    loop {
        let wait = deadline.map_or(30.0, |d| d.saturating_duration_since(Instant::now()).as_secs_f64().min(30.0));
        let batch = client.call(
            "event.from",
            vec![Value::Array(vec![Value::str(class.name)]), Value::str(&token), Value::Float(wait)],
        )?;
        token = batch.get("token").and_then(Value::as_str).unwrap_or_default().to_string();
        for event in batch.get("events").and_then(Value::as_array).unwrap_or_default() {
            if event.get("operation").and_then(Value::as_str) == Some("del") {
                continue;
            }
            let Some(snapshot) = event.get("snapshot") else { continue };
            let mut all = true;
            for (k, want) in &conditions {
                if !commands::matches(client, class, snapshot, k, want)? {
                    all = false;
                    break;
                }
            }
            if all {
                return Ok(String::new());
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(XeError::Usage("Timed out waiting for the condition.".into()));
        }
    }
}

/// The parameters `xe help <command>` shows for a generic command, from the datamodel.
pub fn generic_params(class: &'static Class, op: commands::Op) -> (Vec<String>, Vec<String>) {
    use commands::Op;
    let own = format::xe_class_name(class);
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
