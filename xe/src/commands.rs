//! The generic commands every class with `get_all_records` has: `<class>-list`, `-param-list`, `-param-get`,
//! `-param-set`, `-param-add`, `-param-remove`, `-param-clear`. Fields, markers, setters, adders and removers all
//! come from the datamodel (`MsgKind`). Objects are chosen by xe's selectors ([`select`]).

use xapi_types::Value;
use xapi_types::model::{Class, MsgKind, Ty};

use crate::client::Client;
use crate::columns;
use crate::error::XeError;
use crate::format;

/// The generic operations, in the order `xe help` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    List,
    ParamList,
    ParamGet,
    ParamSet,
    ParamAdd,
    ParamRemove,
    ParamClear,
}

impl Op {
    pub const ALL: [Op; 7] =
        [Op::List, Op::ParamList, Op::ParamGet, Op::ParamSet, Op::ParamAdd, Op::ParamRemove, Op::ParamClear];

    /// Longest first, so that `vm-param-list` is not taken for `<vm-param>-list`.
    const BY_SUFFIX: [(&'static str, Op); 7] = [
        ("-param-remove", Op::ParamRemove),
        ("-param-clear", Op::ParamClear),
        ("-param-list", Op::ParamList),
        ("-param-get", Op::ParamGet),
        ("-param-set", Op::ParamSet),
        ("-param-add", Op::ParamAdd),
        ("-list", Op::List),
    ];

    pub fn suffix(self) -> &'static str {
        match self {
            Op::List => "-list",
            Op::ParamList => "-param-list",
            Op::ParamGet => "-param-get",
            Op::ParamSet => "-param-set",
            Op::ParamAdd => "-param-add",
            Op::ParamRemove => "-param-remove",
            Op::ParamClear => "-param-clear",
        }
    }
}

/// xe's pseudo-classes: VMs seen through a filter (`template-list`, `snapshot-param-get`, …), as xapi's
/// `Cli_operations.gen_cmds` makes them.
pub struct Pseudo {
    pub name: &'static str,
    pub class: &'static str,
    /// The selectors every command of the pseudo-class implies.
    pub scope: &'static [(&'static str, &'static str)],
}

pub const PSEUDO: [Pseudo; 2] = [
    Pseudo { name: "template", class: "VM", scope: &[("is-a-template", "true"), ("is-a-snapshot", "false")] },
    Pseudo { name: "snapshot", class: "VM", scope: &[("is-a-snapshot", "true")] },
];

/// What a generic command is about: a class, or a pseudo-class of it.
#[derive(Debug, Clone)]
pub struct Subject {
    pub class: &'static Class,
    /// The command's prefix (`vm`, `host-cpu`, `template`).
    pub noun: String,
    pub scope: &'static [(&'static str, &'static str)],
}

/// Every class and pseudo-class with generic commands.
fn subjects() -> impl Iterator<Item = Subject> {
    let classes = format::listable_classes().map(|c| Subject { class: c, noun: format::xe_class_name(c), scope: &[] });
    let pseudo = PSEUDO.iter().filter_map(|p| {
        let class = xapi_types::model::class(p.class).filter(|c| c.has_get_all_records())?;
        Some(Subject { class, noun: p.name.to_string(), scope: p.scope })
    });
    classes.chain(pseudo)
}

/// A command name resolved to what it is about and an operation.
pub fn resolve(command: &str) -> Option<(Subject, Op)> {
    Op::BY_SUFFIX.iter().find_map(|(suffix, op)| {
        let prefix = command.strip_suffix(suffix)?;
        subjects().find(|s| s.noun == prefix).map(|s| (s, *op))
    })
}

/// Every generic command name, sorted.
pub fn all_commands() -> Vec<String> {
    let mut names: Vec<String> =
        subjects().flat_map(|s| Op::ALL.map(|op| format!("{}{}", s.noun, op.suffix()))).collect();
    names.sort();
    names
}

/// What a command was given on its command line.
#[derive(Debug, Default, Clone)]
pub struct Args {
    pub params: Vec<(String, String)>,
    /// Selectors the command implies (a pseudo-class's); with them VM templates can be chosen.
    pub scope: Vec<(String, String)>,
    pub minimal: bool,
    /// `--multiple`: a selector may choose more than one object.
    pub multiple: bool,
    /// `--force`.
    pub force: bool,
    /// `--progress`: a progress bar on stderr even when it is not a terminal.
    pub progress: bool,
}

impl Args {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn require(&self, name: &str) -> Result<&str, XeError> {
        self.get(name).ok_or_else(|| XeError::missing(name))
    }

    /// The parameters other than those named in `except`.
    pub fn other(&self, except: &[&str]) -> Vec<(String, String)> {
        self.params.iter().filter(|(k, _)| !except.contains(&k.as_str())).cloned().collect()
    }
}

pub fn run(client: &mut Client, subject: &Subject, op: Op, args: &Args) -> Result<String, XeError> {
    let class = subject.class;
    // `template=<name or uuid>` is the pseudo-class's own selector, as `vm=` is the class's.
    let own = format::xe_class_name(class);
    let mut args = args.clone();
    for (k, _) in args.params.iter_mut().filter(|(k, _)| *k == subject.noun) {
        k.clone_from(&own);
    }
    args.scope.extend(subject.scope.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let args = &args;
    match op {
        Op::List => list(client, subject, args),
        Op::ParamList => {
            let (_, record) = select_one(client, class, args)?;
            let all: Vec<usize> = (0..class.fields.len()).collect();
            Ok(format::block(&format::rows(class, &record, &all, client)))
        }
        Op::ParamGet => param_get(client, class, args),
        Op::ParamSet => param_set(client, class, args),
        Op::ParamAdd => param_add(client, class, args),
        Op::ParamRemove => param_remove(client, class, args),
        Op::ParamClear => param_clear(client, class, args),
    }
}

/// Every object of `class` as `(ref, record)`.
fn all_records(client: &Client, class: &Class) -> Result<Vec<(String, Value)>, XeError> {
    match client.call(&format!("{}.get_all_records", class.name), Vec::new())? {
        Value::Struct(members) => Ok(members),
        other => Err(XeError::Transport(format!("get_all_records returned {other:?}"))),
    }
}

/// The objects xe's selectors choose: `uuid=`, `<class>=<name-label or uuid>` (`vm=web1`), and any
/// `field=value` or `map:key=value` filter, all of which must hold.
pub fn select(
    client: &mut Client,
    class: &'static Class,
    selectors: &[(String, String)],
) -> Result<Vec<(String, Value)>, XeError> {
    select_where(client, class, selectors, false)
}

/// [`select`], with `templates` saying whether VM templates (and snapshots, which are templates) are chosen too
/// without an explicit `is-a-template=` (as xe's `vm-clone` and `vm-copy` choose them).
pub fn select_where(
    client: &mut Client,
    class: &'static Class,
    selectors: &[(String, String)],
    templates: bool,
) -> Result<Vec<(String, Value)>, XeError> {
    let own = format::xe_class_name(class);
    for (name, _) in selectors.iter().filter(|(k, _)| k != "uuid" && *k != own) {
        field(class, name.split_once(':').map_or(name.as_str(), |(map, _)| map))?;
    }
    let mut objects = match selectors.iter().find(|(k, _)| k == "uuid") {
        Some((_, uuid)) => vec![by_uuid(client, class, uuid)?],
        None => all_records(client, class)?,
    };
    // As in xe, the VM commands leave templates and snapshots out unless asked for them (or given a uuid).
    let mut selectors = selectors.to_vec();
    if class.name == "VM" && !selectors.iter().any(|(k, _)| k == "uuid") {
        let hidden: &[&str] = if templates { &[] } else { &["is-a-template", "is-a-snapshot"] };
        for &hidden in hidden {
            if !selectors.iter().any(|(k, _)| k == hidden) {
                selectors.push((hidden.to_string(), "false".to_string()));
            }
        }
    }
    for (name, want) in selectors.iter().filter(|(k, _)| k != "uuid") {
        let mut kept = Vec::with_capacity(objects.len());
        for (r, record) in objects {
            let keep = if *name == own && format::field_by_xe_name(class, name).is_none() {
                ["uuid", "name_label"].iter().any(|f| record.get(f).and_then(Value::as_str) == Some(want))
            } else {
                matches(client, class, &record, name, want)?
            };
            if keep {
                kept.push((r, record));
            }
        }
        objects = kept;
    }
    Ok(objects)
}

/// How many objects an operation may work on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Many {
    /// One at a time (`vm-clone`, `vm-copy`, the `-param-…` commands).
    One,
    /// Several when `--multiple` was given (the `bool`).
    Multiple(bool),
}

/// [`select`] for an operation: no match is an error, and so are several unless allowed.
pub fn select_for_op(
    client: &mut Client,
    class: &'static Class,
    selectors: &[(String, String)],
    many: Many,
) -> Result<Vec<(String, Value)>, XeError> {
    let objects = select(client, class, selectors)?;
    check_count(class, objects.len(), many)?;
    Ok(objects)
}

/// No match is an error, and so are several unless allowed, in xe's words (`do_vm_op`, `do_host_op`; xe writes
/// "matches VMs" where it writes "matching hosts").
pub fn check_count(class: &Class, n: usize, many: Many) -> Result<(), XeError> {
    let (what, one) = match class.name {
        "VM" => ("matches VMs".to_string(), "VM".to_string()),
        name => (format!("matching {name}s"), name.to_string()),
    };
    match (n, many) {
        (0, _) => Err(XeError::Failure(format!("No matching {}s found", class.name))),
        (1, _) | (_, Many::Multiple(true)) => Ok(()),
        (_, Many::Multiple(false)) => {
            Err(XeError::Failure(format!("Multiple {what} found. --multiple required to complete the operation")))
        }
        (_, Many::One) => Err(XeError::Failure(format!(
            "Multiple {what} found. Operation can only be performed on one {one} at a time"
        ))),
    }
}

/// The one object a `-param-…` command works on: `uuid=` or `<class>=<name-label or uuid>`.
fn select_one(client: &mut Client, class: &'static Class, args: &Args) -> Result<(String, Value), XeError> {
    let own = format::xe_class_name(class);
    let selectors: Vec<(String, String)> =
        args.params.iter().filter(|(k, _)| k == "uuid" || *k == own).cloned().collect();
    if selectors.is_empty() {
        return Err(XeError::missing("uuid"));
    }
    let selectors = [selectors, args.scope.clone()].concat();
    let objects = select_where(client, class, &selectors, !args.scope.is_empty())?;
    check_count(class, objects.len(), Many::One)?;
    Ok(objects.into_iter().next().expect("one object"))
}

/// The parameters a `-param-…` command does not take as its own: neither selectors nor `param-…`.
fn is_param_command_own(class: &Class, name: &str) -> bool {
    name == "uuid" || name == format::xe_class_name(class) || name.starts_with("param-")
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
pub fn matches(
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

/// `<class>-list`: the selected objects, each with the columns of `params=` (`all`: every field), else xe's
/// defaults for the class ([`columns::defaults`]).
fn list(client: &mut Client, subject: &Subject, args: &Args) -> Result<String, XeError> {
    let class = subject.class;
    let selectors = [args.other(&["params"]), args.scope.clone()].concat();
    let records: Vec<Value> =
        select_where(client, class, &selectors, !args.scope.is_empty())?.into_iter().map(|(_, r)| r).collect();
    let selected: Vec<columns::Column> = match args.get("params") {
        Some("all") => columns::all(class),
        Some(names) => names
            .split(',')
            .map(|n| columns::column(class, n.trim()).ok_or_else(|| unknown_field(class, n.trim())))
            .collect::<Result<_, _>>()?,
        None => columns::defaults(&subject.noun, class),
    };
    let mut out = String::new();
    let mut firsts = Vec::new();
    for record in &records {
        let rows = columns::rows(class, record, &selected, client);
        if args.minimal {
            firsts.push(rows.into_iter().next().map(|(_, v)| v).unwrap_or_default());
        } else {
            out.push_str(&format::block(&rows));
        }
    }
    Ok(if args.minimal { format::minimal(&firsts) } else { out })
}

fn param_get(client: &mut Client, class: &'static Class, args: &Args) -> Result<String, XeError> {
    let (_, record) = select_one(client, class, args)?;
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
    let (r, _) = select_one(client, class, args)?;
    let r = Value::str(r);
    let own = format::xe_class_name(class);
    for (name, value) in args.params.iter().filter(|(k, _)| k != "uuid" && *k != own) {
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

fn not_a(what: &str, name: &str) -> XeError {
    XeError::Usage(format!("Parameter '{name}' is not {what}."))
}

fn call_on(client: &Client, class: &Class, message: &str, params: Vec<Value>) -> Result<Value, XeError> {
    client.call(&format!("{}.{message}", class.name), params)
}

/// `-param-add param-name=<set> param-key=<value>` or `param-name=<map> key=value…`.
fn param_add(client: &mut Client, class: &'static Class, args: &Args) -> Result<String, XeError> {
    let (r, _) = select_one(client, class, args)?;
    let r = Value::str(r);
    let name = args.require("param-name")?;
    let (i, f) = field(class, name)?;
    match f.ty {
        Ty::Map(_, vty) => {
            let add = message_for(class, MsgKind::MapAdd(i as u16)).ok_or_else(|| not_a("a writable map", name))?;
            let pairs: Vec<&(String, String)> =
                args.params.iter().filter(|(k, _)| !is_param_command_own(class, k)).collect();
            if pairs.is_empty() {
                return Err(XeError::Usage("Required parameter not found: key=value pairs to add".into()));
            }
            for (key, value) in pairs {
                let v = parse_value(client, vty, value)?;
                call_on(client, class, add, vec![r.clone(), Value::str(key), v])?;
            }
        }
        Ty::Set(ety) => {
            let add = message_for(class, MsgKind::SetAdd(i as u16)).ok_or_else(|| not_a("a writable set", name))?;
            let v = parse_value(client, ety, args.require("param-key")?)?;
            call_on(client, class, add, vec![r, v])?;
        }
        _ => return Err(not_a("a set or a map", name)),
    }
    Ok(String::new())
}

/// `-param-remove param-name= param-key=`: a key from a map, or a member from a set.
fn param_remove(client: &mut Client, class: &'static Class, args: &Args) -> Result<String, XeError> {
    let (r, _) = select_one(client, class, args)?;
    let r = Value::str(r);
    let name = args.require("param-name")?;
    let key = args.require("param-key")?;
    let (i, f) = field(class, name)?;
    match f.ty {
        Ty::Map(..) => {
            let remove =
                message_for(class, MsgKind::MapRemove(i as u16)).ok_or_else(|| not_a("a writable map", name))?;
            call_on(client, class, remove, vec![r, Value::str(key)])?;
        }
        Ty::Set(ety) => {
            let remove =
                message_for(class, MsgKind::SetRemove(i as u16)).ok_or_else(|| not_a("a writable set", name))?;
            let v = parse_value(client, ety, key)?;
            call_on(client, class, remove, vec![r, v])?;
        }
        _ => return Err(not_a("a set or a map", name)),
    }
    Ok(String::new())
}

/// `-param-clear param-name=`: the whole map or set emptied, with `set_<field>` when there is one, else key by key.
fn param_clear(client: &mut Client, class: &'static Class, args: &Args) -> Result<String, XeError> {
    let (r, record) = select_one(client, class, args)?;
    let r = Value::str(r);
    let name = args.require("param-name")?;
    let (i, f) = field(class, name)?;
    let i = i as u16;
    if let Some(set) = message_for(class, MsgKind::Set(i)) {
        let empty = match f.ty {
            Ty::Map(..) => Value::Struct(Vec::new()),
            Ty::Set(_) => Value::Array(Vec::new()),
            _ => return Err(not_a("a set or a map", name)),
        };
        call_on(client, class, set, vec![r, empty])?;
        return Ok(String::new());
    }
    let current = record.get(f.name).cloned().unwrap_or(Value::Nil);
    match (f.ty, current) {
        (Ty::Map(..), Value::Struct(members)) => {
            let remove = message_for(class, MsgKind::MapRemove(i)).ok_or_else(|| not_a("a writable map", name))?;
            for (key, _) in members {
                call_on(client, class, remove, vec![r.clone(), Value::str(key)])?;
            }
        }
        (Ty::Set(_), Value::Array(items)) => {
            let remove = message_for(class, MsgKind::SetRemove(i)).ok_or_else(|| not_a("a writable set", name))?;
            for item in items {
                call_on(client, class, remove, vec![r.clone(), item])?;
            }
        }
        (Ty::Map(..) | Ty::Set(_), _) => return Err(not_a("a writable set or map", name)),
        _ => return Err(not_a("a set or a map", name)),
    }
    Ok(String::new())
}

/// A command-line string as a value of type `ty`.
pub fn parse_value(client: &mut Client, ty: &Ty, s: &str) -> Result<Value, XeError> {
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
    fn selectors_need_a_match_and_multiple_for_several() {
        let vm = xapi_types::model::class("VM").unwrap();
        let render = |n, many| check_count(vm, n, many).map_err(|e| e.render());
        expect_test::expect![[r#"
            Err(
                "Error: No matching VMs found\n",
            )
        "#]]
        .assert_debug_eq(&render(0, Many::Multiple(true)));
        assert_eq!(render(1, Many::One), Ok(()));
        assert_eq!(render(3, Many::Multiple(true)), Ok(()));
        expect_test::expect![[r#"
            Err(
                "Error: Multiple matches VMs found. --multiple required to complete the operation\n",
            )
        "#]]
        .assert_debug_eq(&render(2, Many::Multiple(false)));
        expect_test::expect![[r#"
            Err(
                "Error: Multiple matching hosts found. Operation can only be performed on one host at a time\n",
            )
        "#]]
        .assert_debug_eq(&check_count(xapi_types::model::class("host").unwrap(), 2, Many::One).map_err(|e| e.render()));
    }

    #[test]
    fn commands_resolve_to_classes_and_operations() {
        let (c, op) = resolve("vm-param-list").unwrap();
        assert_eq!((c.class.name, op), ("VM", Op::ParamList));
        let (c, op) = resolve("template-list").unwrap();
        assert_eq!((c.class.name, c.noun.as_str(), op), ("VM", "template", Op::List));
        assert_eq!(resolve("snapshot-param-get").unwrap().0.scope, [("is-a-snapshot", "true")]);
        assert!(all_commands().contains(&"snapshot-param-clear".to_string()));
        let (c, op) = resolve("host-cpu-list").unwrap();
        assert_eq!((c.class.name, op), ("host_cpu", Op::List));
        let (c, op) = resolve("vm-metrics-param-get").unwrap();
        assert_eq!((c.class.name, op), ("VM_metrics", Op::ParamGet));
        assert!(resolve("foo-list").is_none());
        assert!(resolve("vm-start").is_none());
        assert!(all_commands().contains(&"pool-param-set".to_string()));
        let (c, op) = resolve("vm-param-remove").unwrap();
        assert_eq!((c.class.name, op), ("VM", Op::ParamRemove));
        let (c, op) = resolve("pool-param-clear").unwrap();
        assert_eq!((c.class.name, op), ("pool", Op::ParamClear));
        assert_eq!(resolve("sr-param-add").unwrap().1, Op::ParamAdd);
    }
}
