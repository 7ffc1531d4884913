//! The generic commands every class with `get_all_records` has: `<class>-list`, `-param-list`, `-param-get`,
//! `-param-set`. Fields, markers and setters all come from the datamodel.

use xapi_types::Value;
use xapi_types::model::{Class, MsgKind, Ty};

use crate::client::Client;
use crate::error::XeError;
use crate::format;

/// The generic operations, in the order `xe help` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    List,
    ParamList,
    ParamGet,
    ParamSet,
}

impl Op {
    pub const ALL: [Op; 4] = [Op::List, Op::ParamList, Op::ParamGet, Op::ParamSet];

    /// Longest first, so that `vm-param-list` is not taken for `<vm-param>-list`.
    const BY_SUFFIX: [(&'static str, Op); 4] = [
        ("-param-list", Op::ParamList),
        ("-param-get", Op::ParamGet),
        ("-param-set", Op::ParamSet),
        ("-list", Op::List),
    ];

    pub fn suffix(self) -> &'static str {
        match self {
            Op::List => "-list",
            Op::ParamList => "-param-list",
            Op::ParamGet => "-param-get",
            Op::ParamSet => "-param-set",
        }
    }
}

/// A command name resolved to a class and an operation.
pub fn resolve(command: &str) -> Option<(&'static Class, Op)> {
    Op::BY_SUFFIX.iter().find_map(|(suffix, op)| {
        let prefix = command.strip_suffix(suffix)?;
        format::listable_classes().find(|c| format::xe_class_name(c) == prefix).map(|c| (c, *op))
    })
}

/// Every generic command name, sorted.
pub fn all_commands() -> Vec<String> {
    let mut names: Vec<String> = format::listable_classes()
        .flat_map(|c| Op::ALL.map(|op| format!("{}{}", format::xe_class_name(c), op.suffix())))
        .collect();
    names.sort();
    names
}

/// What a command was given on its command line.
#[derive(Debug, Default)]
pub struct Args {
    pub params: Vec<(String, String)>,
    pub minimal: bool,
}

impl Args {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn require(&self, name: &str) -> Result<&str, XeError> {
        self.get(name).ok_or_else(|| XeError::Usage(format!("Required parameter not found: {name}")))
    }
}

pub fn run(client: &mut Client, class: &'static Class, op: Op, args: &Args) -> Result<String, XeError> {
    match op {
        Op::List => list(client, class, args),
        Op::ParamList => {
            let (_, record) = by_uuid(client, class, args.require("uuid")?)?;
            let all: Vec<usize> = (0..class.fields.len()).collect();
            Ok(format::block(&format::rows(class, &record, &all, client)))
        }
        Op::ParamGet => param_get(client, class, args),
        Op::ParamSet => param_set(client, class, args),
    }
}

fn unknown_field(class: &Class, name: &str) -> XeError {
    XeError::Usage(format!("Unknown field '{name}' for class {}.", format::xe_class_name(class)))
}

fn field(class: &'static Class, name: &str) -> Result<(usize, &'static xapi_types::Field), XeError> {
    format::field_by_xe_name(class, name).ok_or_else(|| unknown_field(class, name))
}

/// `(ref, record)` of the object with this uuid.
fn by_uuid(client: &Client, class: &Class, uuid: &str) -> Result<(String, Value), XeError> {
    let r = client.call(&format!("{}.get_by_uuid", class.name), vec![Value::str(uuid)])?;
    let record = client.call(&format!("{}.get_record", class.name), vec![r.clone()])?;
    Ok((r.as_str().unwrap_or_default().to_string(), record))
}

/// Whether `record` passes a filter `name=value` or `map:key=value`, comparing xe string forms.
fn matches(
    client: &mut Client,
    class: &'static Class,
    record: &Value,
    name: &str,
    want: &str,
) -> Result<bool, XeError> {
    if let Some((map, key)) = name.split_once(':') {
        let (_, f) = field(class, map)?;
        let Ty::Map(_, vty) = f.ty else { return Err(unknown_field(class, name)) };
        let got = record.get(f.name).and_then(|m| m.get(key)).map(|v| format::value_string(vty, v, client));
        return Ok(got.as_deref() == Some(want));
    }
    let (_, f) = field(class, name)?;
    Ok(record.get(f.name).is_some_and(|v| format::value_string(&f.ty, v, client) == want))
}

fn list(client: &mut Client, class: &'static Class, args: &Args) -> Result<String, XeError> {
    let records: Vec<Value> = match args.get("uuid") {
        Some(uuid) => vec![by_uuid(client, class, uuid)?.1],
        None => match client.call(&format!("{}.get_all_records", class.name), Vec::new())? {
            Value::Struct(members) => members.into_iter().map(|(_, r)| r).collect(),
            other => return Err(XeError::Transport(format!("get_all_records returned {other:?}"))),
        },
    };
    let selected: Vec<usize> = match args.get("params") {
        Some("all") => (0..class.fields.len()).collect(),
        Some(names) => names.split(',').map(|n| field(class, n.trim()).map(|(i, _)| i)).collect::<Result<_, _>>()?,
        None => {
            ["uuid", "name_label", "name_description"].iter().filter_map(|n| class.field(n)).map(|(i, _)| i).collect()
        }
    };
    let filters: Vec<&(String, String)> = args.params.iter().filter(|(k, _)| k != "params" && k != "uuid").collect();
    let mut out = String::new();
    let mut firsts = Vec::new();
    for record in &records {
        let mut keep = true;
        for (name, want) in &filters {
            if !matches(client, class, record, name, want)? {
                keep = false;
                break;
            }
        }
        if !keep {
            continue;
        }
        let rows = format::rows(class, record, &selected, client);
        if args.minimal {
            firsts.push(rows.into_iter().next().map(|(_, v)| v).unwrap_or_default());
        } else {
            out.push_str(&format::block(&rows));
        }
    }
    Ok(if args.minimal { format::minimal(&firsts) } else { out })
}

fn param_get(client: &mut Client, class: &'static Class, args: &Args) -> Result<String, XeError> {
    let (_, record) = by_uuid(client, class, args.require("uuid")?)?;
    let name = args.require("param-name")?;
    let (_, f) = field(class, name)?;
    let v = record.get(f.name).cloned().unwrap_or(Value::Nil);
    let text = match (args.get("param-key"), &f.ty) {
        (None, ty) => format::value_string(ty, &v, client),
        (Some(key), Ty::Map(_, vty)) => match v.get(key) {
            Some(x) => format::value_string(vty, x, client),
            None => return Err(XeError::Usage(format!("Key {key} not found in map"))),
        },
        (Some(_), _) => return Err(XeError::Usage(format!("Parameter '{name}' is not a map."))),
    };
    Ok(format!("{text}\n"))
}

fn message_for(class: &Class, kind: MsgKind) -> Option<&'static str> {
    class.messages.iter().find(|m| m.kind == kind).map(|m| m.name)
}

fn param_set(client: &mut Client, class: &'static Class, args: &Args) -> Result<String, XeError> {
    let (r, _) = by_uuid(client, class, args.require("uuid")?)?;
    let r = Value::str(r);
    for (name, value) in args.params.iter().filter(|(k, _)| k != "uuid") {
        if let Some((map, key)) = name.split_once(':') {
            let (i, f) = field(class, map)?;
            let i = i as u16;
            let (Some(add), Some(remove)) =
                (message_for(class, MsgKind::MapAdd(i)), message_for(class, MsgKind::MapRemove(i)))
            else {
                return Err(XeError::Usage(format!("Parameter '{map}' is not a writable map.")));
            };
            let Ty::Map(_, vty) = f.ty else { unreachable!("add_to_ exists only for maps") };
            let v = parse_value(client, vty, value)?;
            client.call(&format!("{}.{remove}", class.name), vec![r.clone(), Value::str(key)])?;
            client.call(&format!("{}.{add}", class.name), vec![r.clone(), Value::str(key), v])?;
            continue;
        }
        let (i, f) = field(class, name)?;
        let Some(set) = message_for(class, MsgKind::Set(i as u16)) else {
            return Err(XeError::Usage(format!("Parameter '{name}' is read-only.")));
        };
        let v = parse_value(client, &f.ty, value)?;
        client.call(&format!("{}.{set}", class.name), vec![r.clone(), v])?;
    }
    Ok(String::new())
}

/// A command-line string as a value of type `ty`.
fn parse_value(client: &mut Client, ty: &Ty, s: &str) -> Result<Value, XeError> {
    let bad = |what: &str| XeError::Usage(format!("Failed to parse parameter value '{s}': expecting {what}"));
    Ok(match ty {
        Ty::String => Value::str(s),
        Ty::Int => Value::Int(s.parse().map_err(|_| bad("an integer"))?),
        Ty::Float => Value::Float(s.parse().map_err(|_| bad("a number"))?),
        Ty::Bool => Value::Bool(match s.to_ascii_lowercase().as_str() {
            "true" | "t" | "1" => true,
            "false" | "f" | "0" => false,
            _ => return Err(bad("'true' or 'false'")),
        }),
        Ty::DateTime => Value::DateTime(s.into()),
        Ty::Enum(e) => match e.values.iter().find(|v| v.eq_ignore_ascii_case(s)) {
            Some(v) => Value::str(*v),
            None => {
                let lower: Vec<String> = e.values.iter().map(|v| v.to_lowercase()).collect();
                return Err(bad(&format!("one of {}", lower.join(", "))));
            }
        },
        Ty::Ref(class) => {
            if s.is_empty() || s == crate::client::NOT_IN_DATABASE {
                Value::str(xapi_types::value::NULL_REF)
            } else {
                client.call(&format!("{class}.get_by_uuid"), vec![Value::str(s)])?
            }
        }
        Ty::Option(t) => parse_value(client, t, s)?,
        Ty::Set(_) | Ty::Map(..) | Ty::Record(_) | Ty::EventBatch => {
            return Err(bad("a single value (sets and maps are changed key by key, e.g. other-config:key=value)"));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_resolve_to_classes_and_operations() {
        let (c, op) = resolve("vm-param-list").unwrap();
        assert_eq!((c.name, op), ("VM", Op::ParamList));
        let (c, op) = resolve("host-cpu-list").unwrap();
        assert_eq!((c.name, op), ("host_cpu", Op::List));
        let (c, op) = resolve("vm-metrics-param-get").unwrap();
        assert_eq!((c.name, op), ("VM_metrics", Op::ParamGet));
        assert!(resolve("foo-list").is_none());
        assert!(resolve("vm-start").is_none());
        assert!(all_commands().contains(&"pool-param-set".to_string()));
    }
}
