//! `event-wait`, `task-cancel` and `host-compute-free-memory`.

use std::time::{Duration, Instant};

use xapi_types::Value;
use xapi_types::model::{self, Ty};

use super::{Special, call_op, class};
use crate::client::Client;
use crate::commands::{self, Args, Many};
use crate::error::XeError;
use crate::format;

pub const SPECIALS: &[Special] = &[
    Special {
        name: "event-wait",
        reqd: &["class"],
        optional: &["<field>=<value>", "<field>=/=<value>", "timeout"],
        description: "Blocks until an object of the class satisfies every condition field=value (or \
                      field=/=value: the field is not value; the latest value of each field, in xe's spelling); \
                      exits 1 when the optional timeout (seconds) passes.",
        run: event_wait,
    },
    Special {
        name: "task-cancel",
        reqd: &[],
        optional: &["uuid", "task", "<field>=<value>", "--multiple"],
        description: "Asks the selected tasks to cancel.",
        run: task_cancel,
    },
    Special {
        name: "host-compute-free-memory",
        reqd: &[],
        optional: &["uuid", "host", "<field>=<value>"],
        description: "Prints the memory (bytes) a new VM could have on the host.",
        run: host_compute_free_memory,
    },
];

fn task_cancel(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let tasks = commands::select_for_op(client, class("task"), &args.params, Many::Multiple(args.multiple))?;
    for (r, _) in tasks {
        call_op(client, "task.cancel", vec![Value::str(r)])?;
    }
    Ok(String::new())
}

fn host_compute_free_memory(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let hosts = commands::select_for_op(client, class("host"), &args.params, Many::One)?;
    let free = call_op(client, "host.compute_free_memory", vec![Value::str(hosts[0].0.clone())])?;
    Ok(format!("{}\n", format::value_string(&Ty::Int, &free, client)))
}

/// `event-wait class= [field=value | field=/=value …] [timeout=]`: follows `event.from` from an empty token (which reports every
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
    // As in xe, `field=/=value` is the condition that the field is not `value`.
    let conditions: Vec<(String, String, bool)> = args
        .other(&["class", "timeout"])
        .into_iter()
        .map(|(k, v)| match v.strip_prefix("/=") {
            Some(v) => (k, v.to_string(), true),
            None => (k, v, false),
        })
        .collect();
    for (k, _, _) in &conditions {
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
            for (k, want, not) in &conditions {
                if commands::matches(client, class, snapshot, k, want)? == *not {
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
