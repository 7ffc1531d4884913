//! The project's own datamodel file, `xapi-types/model/datamodel.json`: its shape, and its one canonical layout.
//!
//! The file is derived from the upstream XenAPI JSON (see [`crate::derive`]) and committed, so that the project
//! builds without the upstream data. It keeps what the daemon needs and nothing else: names, type strings
//! (spelled as the datamodel spells them), qualifiers, raw default strings, parameters, result types, error
//! names, roles, lifecycle states and the `implicit`/`hidden` flags — no documentation prose.
//!
//! [`Datamodel::to_json`] writes one field, message, enum or error per line, so that diffs stay readable, and
//! is deterministic: the same model always gives the same bytes.

use std::io;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The whole datamodel, as committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Datamodel {
    pub api_version: ApiVersion,
    /// In upstream order.
    pub classes: Vec<ClassDef>,
    /// Every enum once, in order of first appearance in `classes`.
    pub enums: Vec<EnumDef>,
    /// Documented codes in upstream order, then the codes that have no doc entry.
    pub errors: Vec<ErrorDef>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiVersion {
    pub major: i64,
    pub minor: i64,
}

/// Lifecycle state in the current release (the upstream `Published_s` etc., without the history).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    Published,
    Prototyped,
    Deprecated,
    Removed,
}

/// A field's qualifier, spelled as upstream spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Qualifier {
    #[serde(rename = "RW")]
    Rw,
    #[serde(rename = "RO/constructor")]
    RoConstructor,
    #[serde(rename = "RO/runtime")]
    RoRuntime,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassDef {
    pub name: String,
    pub lifecycle: Lifecycle,
    /// Objects of the class are stored: it has a `uuid` field and a `get_record` message.
    pub persistent: bool,
    /// Names of the enums the class declares (see [`Datamodel::enums`]).
    pub enums: Vec<String>,
    pub fields: Vec<FieldDef>,
    pub messages: Vec<MessageDef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDef {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub qualifier: Qualifier,
    pub lifecycle: Lifecycle,
    /// The raw default, as upstream writes it (`"{}"`, `"\"UTC\""`, `"OpaqueRef:NULL"`, `"Halted"`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageDef {
    pub name: String,
    pub params: Vec<ParamDef>,
    /// The result type, or `"void"`.
    pub result: String,
    /// Names of the error codes the datamodel documents for this message.
    pub errors: Vec<String>,
    pub roles: Vec<String>,
    pub lifecycle: Lifecycle,
    pub implicit: bool,
    /// Not in the upstream docs; added by [`crate::derive`] (`get_all_where`, `get_all_records_where`).
    pub hidden: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamDef {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub required: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnumDef {
    pub name: String,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorDef {
    pub name: String,
    pub params: Vec<String>,
    /// `false` for codes xapi defines without a doc entry (their parameter names are unknown).
    pub documented: bool,
}

impl Datamodel {
    pub fn from_json(text: &str) -> Result<Datamodel> {
        serde_json::from_str(text).context("datamodel.json does not have the expected shape")
    }

    /// The canonical layout: one field, message, enum or error per line; `\n` line ends; a final newline.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{\n");
        out.push_str(&format!("  \"api_version\": {},\n", one_line(&self.api_version)));
        out.push_str("  \"classes\": [\n");
        for (i, c) in self.classes.iter().enumerate() {
            out.push_str("    {\n");
            out.push_str(&format!("      \"name\": {},\n", one_line(&c.name)));
            out.push_str(&format!("      \"lifecycle\": {},\n", one_line(&c.lifecycle)));
            out.push_str(&format!("      \"persistent\": {},\n", one_line(&c.persistent)));
            out.push_str(&format!("      \"enums\": {},\n", one_line(&c.enums)));
            push_list(&mut out, "      ", "fields", &c.fields, true);
            push_list(&mut out, "      ", "messages", &c.messages, false);
            out.push_str(if i + 1 == self.classes.len() { "    }\n" } else { "    },\n" });
        }
        out.push_str("  ],\n");
        push_list(&mut out, "  ", "enums", &self.enums, true);
        push_list(&mut out, "  ", "errors", &self.errors, false);
        out.push_str("}\n");
        out
    }
}

/// `"<key>": [` then one item per line, then `]`.
fn push_list<T: Serialize>(out: &mut String, indent: &str, key: &str, items: &[T], comma: bool) {
    let end = if comma { ",\n" } else { "\n" };
    if items.is_empty() {
        out.push_str(&format!("{indent}\"{key}\": []{end}"));
        return;
    }
    out.push_str(&format!("{indent}\"{key}\": [\n"));
    for (i, item) in items.iter().enumerate() {
        let sep = if i + 1 == items.len() { "\n" } else { ",\n" };
        out.push_str(&format!("{indent}  {}{sep}", one_line(item)));
    }
    out.push_str(&format!("{indent}]{end}"));
}

/// Compact JSON with a space after each `:` and `,`, e.g. `{"name": "uuid", "type": "string"}`.
fn one_line<T: Serialize + ?Sized>(value: &T) -> String {
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, Spaced);
    value.serialize(&mut ser).expect("serialising plain data to memory cannot fail");
    String::from_utf8(buf).expect("serde_json writes UTF-8")
}

struct Spaced;

impl serde_json::ser::Formatter for Spaced {
    fn begin_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
}
