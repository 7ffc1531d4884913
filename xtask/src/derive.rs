//! Step 1 of `cargo xtask codegen`: upstream `xenapi.json` + `errors.json` → the project's [`Datamodel`].
//!
//! Besides dropping the documentation prose, this step
//! * lists every enum once (checking that classes sharing an enum agree on its values),
//! * adds the messages xapi has but the upstream JSON hides: `get_all_where` and `get_all_records_where` on
//!   every class with `get_all_records`,
//! * marks the classes whose objects are stored (`persistent`),
//! * merges the documented error codes with the ones that have no doc entry.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;

use crate::datamodel::{
    ApiVersion, ClassDef, Datamodel, EnumDef, ErrorDef, FieldDef, Lifecycle, MessageDef, ParamDef, Qualifier,
};

/// The API version xapi reports for the release the upstream JSON describes (the JSON does not carry it).
pub const API_VERSION: ApiVersion = ApiVersion { major: 2, minor: 21 };

/// Role names in the order of `Roles::NAMES` in `xapi-types/src/model.rs`.
pub const ROLE_NAMES: [&str; 7] =
    ["pool-admin", "pool-operator", "vm-power-admin", "vm-admin", "vm-operator", "read-only", "client-cert"];

#[derive(Deserialize)]
struct SrcClass {
    name: String,
    lifecycle: SrcLifecycle,
    enums: Vec<SrcEnum>,
    fields: Vec<SrcField>,
    messages: Vec<SrcMessage>,
}

#[derive(Deserialize)]
struct SrcLifecycle {
    state: String,
}

#[derive(Deserialize)]
struct SrcEnum {
    name: String,
    values: Vec<SrcNamed>,
}

#[derive(Deserialize)]
struct SrcNamed {
    name: String,
}

#[derive(Deserialize)]
struct SrcField {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    qualifier: Qualifier,
    lifecycle: SrcLifecycle,
    default: Option<String>,
}

#[derive(Deserialize)]
struct SrcMessage {
    name: String,
    result: Vec<String>,
    params: Vec<SrcParam>,
    errors: Vec<SrcNamed>,
    roles: Vec<String>,
    lifecycle: SrcLifecycle,
    implicit: bool,
}

#[derive(Deserialize)]
struct SrcParam {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    required: bool,
}

#[derive(Deserialize)]
struct SrcErrors {
    documented: Vec<SrcError>,
    codes_without_doc_entry: Vec<String>,
}

#[derive(Deserialize)]
struct SrcError {
    name: String,
    params: Vec<String>,
}

/// Reads `xenapi.json` and `errors.json` from `dir` (normally `../shared/xenapi`).
pub fn derive_from_dir(dir: &Path) -> Result<Datamodel> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    derive(&read("xenapi.json")?, &read("errors.json")?)
}

/// Derives the datamodel from the text of `xenapi.json` and `errors.json`.
pub fn derive(xenapi_json: &str, errors_json: &str) -> Result<Datamodel> {
    let src: Vec<SrcClass> = serde_json::from_str(xenapi_json).context("parsing xenapi.json")?;
    let src_errors: SrcErrors = serde_json::from_str(errors_json).context("parsing errors.json")?;

    // Enums: each name once, in order of first appearance; every class declaring it must agree.
    let mut enums: Vec<EnumDef> = Vec::new();
    for c in &src {
        for e in &c.enums {
            let values: Vec<String> = e.values.iter().map(|v| v.name.clone()).collect();
            match enums.iter().find(|d| d.name == e.name) {
                Some(d) => {
                    ensure!(d.values == values, "enum {} is declared with different values in class {}", e.name, c.name)
                }
                None => enums.push(EnumDef { name: e.name.clone(), values }),
            }
        }
    }

    let mut classes = Vec::with_capacity(src.len());
    for c in &src {
        let fields = c
            .fields
            .iter()
            .map(|f| {
                Ok(FieldDef {
                    name: f.name.clone(),
                    ty: f.ty.clone(),
                    qualifier: f.qualifier,
                    lifecycle: lifecycle(&f.lifecycle).with_context(|| format!("field {}.{}", c.name, f.name))?,
                    default: f.default.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut messages = c
            .messages
            .iter()
            .map(|m| message(m).with_context(|| format!("message {}.{}", c.name, m.name)))
            .collect::<Result<Vec<_>>>()?;
        add_hidden_messages(&c.name, &mut messages);
        let persistent = fields.iter().any(|f| f.name == "uuid") && messages.iter().any(|m| m.name == "get_record");
        classes.push(ClassDef {
            name: c.name.clone(),
            lifecycle: lifecycle(&c.lifecycle).with_context(|| format!("class {}", c.name))?,
            persistent,
            enums: c.enums.iter().map(|e| e.name.clone()).collect(),
            fields,
            messages,
        });
    }

    let mut errors: Vec<ErrorDef> = src_errors
        .documented
        .iter()
        .map(|e| ErrorDef { name: e.name.clone(), params: e.params.clone(), documented: true })
        .collect();
    errors.extend(src_errors.codes_without_doc_entry.iter().map(|name| ErrorDef {
        name: name.clone(),
        params: Vec::new(),
        documented: false,
    }));
    let mut seen = BTreeSet::new();
    for e in &errors {
        ensure!(seen.insert(e.name.as_str()), "error code {} is listed twice", e.name);
    }

    let dm = Datamodel { api_version: API_VERSION, classes, enums, errors };
    check_references(&dm)?;
    Ok(dm)
}

fn lifecycle(l: &SrcLifecycle) -> Result<Lifecycle> {
    Ok(match l.state.as_str() {
        "Published_s" => Lifecycle::Published,
        "Prototyped_s" => Lifecycle::Prototyped,
        "Deprecated_s" => Lifecycle::Deprecated,
        "Removed_s" => Lifecycle::Removed,
        other => bail!("unknown lifecycle state {other:?}"),
    })
}

fn message(m: &SrcMessage) -> Result<MessageDef> {
    let result = match m.result.first() {
        Some(t) => t.clone(),
        None => bail!("empty result"),
    };
    Ok(MessageDef {
        name: m.name.clone(),
        params: m
            .params
            .iter()
            .map(|p| ParamDef { name: p.name.clone(), ty: p.ty.clone(), required: p.required })
            .collect(),
        result,
        errors: m.errors.iter().map(|e| e.name.clone()).collect(),
        roles: m.roles.clone(),
        lifecycle: lifecycle(&m.lifecycle)?,
        implicit: m.implicit,
        hidden: false,
    })
}

/// `get_all_where(session_id, expr)` and `get_all_records_where(session_id, expr)`, callable in xapi on every
/// class with `get_all_records`, with that message's roles; appended unless the class already has them.
fn add_hidden_messages(class: &str, messages: &mut Vec<MessageDef>) {
    let Some(roles) = messages.iter().find(|m| m.name == "get_all_records").map(|m| m.roles.clone()) else {
        return;
    };
    let hidden = [
        ("get_all_where", format!("{class} ref set")),
        ("get_all_records_where", format!("({class} ref -> {class} record) map")),
    ];
    for (name, result) in hidden {
        if messages.iter().any(|m| m.name == name) {
            continue;
        }
        messages.push(MessageDef {
            name: name.to_owned(),
            params: vec![
                ParamDef { name: "session_id".into(), ty: "session ref".into(), required: true },
                ParamDef { name: "expr".into(), ty: "string".into(), required: true },
            ],
            result,
            errors: Vec::new(),
            roles: roles.clone(),
            lifecycle: Lifecycle::Published,
            implicit: true,
            hidden: true,
        });
    }
}

/// Names that must resolve: error codes of messages, roles, class enums.
fn check_references(dm: &Datamodel) -> Result<()> {
    let errors: BTreeSet<&str> = dm.errors.iter().map(|e| e.name.as_str()).collect();
    let enums: BTreeMap<&str, &EnumDef> = dm.enums.iter().map(|e| (e.name.as_str(), e)).collect();
    for c in &dm.classes {
        for e in &c.enums {
            ensure!(enums.contains_key(e.as_str()), "class {} declares unknown enum {e}", c.name);
        }
        for m in &c.messages {
            for e in &m.errors {
                ensure!(errors.contains(e.as_str()), "{}.{} names unknown error code {e}", c.name, m.name);
            }
            for r in &m.roles {
                ensure!(ROLE_NAMES.contains(&r.as_str()), "{}.{} names unknown role {r}", c.name, m.name);
            }
        }
    }
    Ok(())
}
