//! The shape of the XenAPI datamodel.
//!
//! The tables of type [`Class`], [`EnumDef`] and [`ErrorCode`] live in [`crate::generated`], produced by
//! `cargo xtask codegen` from `xapi-types/model/datamodel.json`. Everything generic in the daemon — dispatch,
//! record encoding, SQLite columns, `system.listMethods` — walks these tables.

use crate::generated;

/// A XenAPI type, as the datamodel spells it (`"VM ref set"`, `"(string -> string) map"`, …).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ty {
    String,
    Int,
    Float,
    Bool,
    DateTime,
    /// `"<class> ref"`; the class name as the datamodel spells it (`"VM"`, `"host"`).
    Ref(&'static str),
    Enum(&'static EnumDef),
    Set(&'static Ty),
    Map(&'static Ty, &'static Ty),
    /// `"<class> record"`.
    Record(&'static str),
    Option(&'static Ty),
    /// The result of `event.from`: `{events, valid_ref_counts, token}`.
    EventBatch,
}

impl Ty {
    /// The datamodel's own spelling of this type.
    pub fn spelling(&self) -> String {
        match self {
            Ty::String => "string".into(),
            Ty::Int => "int".into(),
            Ty::Float => "float".into(),
            Ty::Bool => "bool".into(),
            Ty::DateTime => "datetime".into(),
            Ty::Ref(c) => format!("{c} ref"),
            Ty::Enum(e) => format!("enum {}", e.name),
            Ty::Set(t) => format!("{} set", t.spelling()),
            Ty::Map(k, v) => format!("({} -> {}) map", k.spelling(), v.spelling()),
            Ty::Record(c) => format!("{c} record"),
            Ty::Option(t) => format!("{} option", t.spelling()),
            Ty::EventBatch => "an event batch".into(),
        }
    }
}

/// Lifecycle state of a class, field or message in the current release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Published,
    Prototyped,
    Deprecated,
    Removed,
}

/// Who may write a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qualifier {
    /// Read-write: a public setter exists.
    Rw,
    /// Set once, by the constructor.
    RoConstructor,
    /// Maintained by the server.
    RoRuntime,
}

/// A literal from the datamodel (field defaults), in a form that can live in a `static`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Lit {
    Str(&'static str),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Already in xapi's wire form, `19700101T00:00:00Z`.
    DateTime(&'static str),
    Set(&'static [Lit]),
    Map(&'static [(Lit, Lit)]),
}

#[derive(Debug, PartialEq)]
pub struct EnumDef {
    pub name: &'static str,
    pub values: &'static [&'static str],
}

#[derive(Debug, PartialEq)]
pub struct Field {
    /// Flattened name, as on the wire (`name_label`, `PV_bootloader`).
    pub name: &'static str,
    pub ty: Ty,
    pub qualifier: Qualifier,
    /// The datamodel default; `None` means the type's empty value (see `Value::empty_of`).
    pub default: Option<Lit>,
    pub lifecycle: Lifecycle,
}

#[derive(Debug, PartialEq)]
pub struct Param {
    pub name: &'static str,
    pub ty: Ty,
    /// `false` for trailing parameters a client may leave out (e.g. `login_with_password`'s version, originator).
    pub required: bool,
}

/// What a message does, as far as the generic machinery is concerned. Field indices are into `Class::fields`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgKind {
    GetRecord,
    GetByUuid,
    GetByNameLabel,
    GetAll,
    GetAllRecords,
    /// Hidden in the docs, callable on every class with `get_all_records` (added by the generator).
    GetAllWhere,
    GetAllRecordsWhere,
    Create,
    Destroy,
    /// `get_<field>`
    Get(u16),
    /// `set_<field>`
    Set(u16),
    /// `add_to_<map field>(self, key, value)`
    MapAdd(u16),
    /// `remove_from_<map field>(self, key)`
    MapRemove(u16),
    /// `add_<set field>` / `add_to_<set field>`(self, value)
    SetAdd(u16),
    /// `remove_<set field>` / `remove_from_<set field>`(self, value)
    SetRemove(u16),
    /// Behaviour of its own, implemented (or not yet) by hand in the daemon.
    Custom,
}

/// A role bit set: which of the XenAPI roles may call a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles(pub u8);

impl Roles {
    /// Role names in bit order.
    pub const NAMES: [&'static str; 7] =
        ["pool-admin", "pool-operator", "vm-power-admin", "vm-admin", "vm-operator", "read-only", "client-cert"];

    pub fn contains(&self, role: &str) -> bool {
        Self::NAMES.iter().position(|n| *n == role).is_some_and(|i| self.0 & (1 << i) != 0)
    }
}

#[derive(Debug, PartialEq)]
pub struct Message {
    pub name: &'static str,
    pub params: &'static [Param],
    /// `None` for `void`.
    pub result: Option<Ty>,
    /// Error codes the datamodel documents for this message.
    pub errors: &'static [&'static str],
    pub roles: Roles,
    pub lifecycle: Lifecycle,
    /// `true` for messages the datamodel derives (getters, setters, …), `false` for custom ones.
    pub implicit: bool,
    /// `true` for messages the datamodel hides from its docs (added by our generator).
    pub hidden: bool,
    pub kind: MsgKind,
}

impl Message {
    /// Whether the first parameter is the caller's session.
    pub fn takes_session(&self) -> bool {
        self.params.first().is_some_and(|p| p.name == "session_id" && p.ty == Ty::Ref("session"))
    }
}

#[derive(Debug, PartialEq)]
pub struct Class {
    /// As the datamodel spells it (`"VM"`, `"host"`, `"Cluster_host"`).
    pub name: &'static str,
    pub fields: &'static [Field],
    pub messages: &'static [Message],
    pub enums: &'static [&'static EnumDef],
    pub lifecycle: Lifecycle,
    /// Objects of this class are stored (the class has refs, a `uuid` and `get_record`).
    pub persistent: bool,
}

impl Class {
    pub fn field(&self, name: &str) -> Option<(usize, &'static Field)> {
        self.fields.iter().enumerate().find(|(_, f)| f.name == name)
    }

    pub fn message(&self, name: &str) -> Option<&'static Message> {
        self.messages.iter().find(|m| m.name == name)
    }

    pub fn has_get_all_records(&self) -> bool {
        self.messages.iter().any(|m| m.kind == MsgKind::GetAllRecords)
    }
}

/// An error code with the names of its parameters.
#[derive(Debug, PartialEq, Eq)]
pub struct ErrorCode {
    pub name: &'static str,
    pub params: &'static [&'static str],
}

/// Every class of the datamodel.
pub fn classes() -> &'static [&'static Class] {
    generated::CLASSES
}

/// A class by its exact name; wire names are case-sensitive (`VM`, not `vm`).
pub fn class(name: &str) -> Option<&'static Class> {
    generated::CLASSES.iter().copied().find(|c| c.name == name)
}

/// A class by its name in any case, as `event.from` subscriptions and event records spell it.
pub fn class_ci(name: &str) -> Option<&'static Class> {
    generated::CLASSES.iter().copied().find(|c| c.name.eq_ignore_ascii_case(name))
}

pub fn enum_def(name: &str) -> Option<&'static EnumDef> {
    generated::ENUMS.iter().copied().find(|e| e.name == name)
}

pub fn error_code(name: &str) -> Option<&'static ErrorCode> {
    generated::ERRORS.iter().copied().find(|e| e.name == name)
}

/// A one-to-many relation: `many_class.many_field` (a read-only `ref set`) lists the objects of `one_class` whose
/// `one_field` points back at it (`VM.VBDs` ↔ `VBD.VM`). The store keeps the set side true on every write, as xapi
/// does for its datamodel's relations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relation {
    pub many_class: &'static str,
    pub many_field: &'static str,
    pub one_class: &'static str,
    pub one_field: &'static str,
}

/// The pointer behind a set field where the pointed-to class has several fields of the right type (xapi's
/// `relations` list names them; the JSON datamodel does not).
const AMBIGUOUS: &[(&str, &str, &str)] = &[
    ("VM", "snapshots", "snapshot_of"),
    ("VM", "children", "parent"),
    ("VM", "VTPMs", "VM"),
    ("host", "resident_VMs", "resident_on"),
    ("PIF", "bond_master_of", "master"),
    ("PIF", "VLAN_slave_of", "tagged_PIF"),
    ("PIF", "tunnel_access_PIF_of", "access_PIF"),
    ("PIF", "tunnel_transport_PIF_of", "transport_PIF"),
    ("PIF", "sriov_physical_PIF_of", "physical_PIF"),
    ("PIF", "sriov_logical_PIF_of", "logical_PIF"),
    ("VDI", "snapshots", "snapshot_of"),
    ("PGPU", "resident_VGPUs", "resident_on"),
];

/// Every relation, inferred from the datamodel: a read-only `X ref set` field of class `A` pairs with the one field
/// of `X` of type `A ref` (or, where `X` has several, the one [`AMBIGUOUS`] names).
pub fn relations() -> &'static [Relation] {
    static RELATIONS: std::sync::OnceLock<Vec<Relation>> = std::sync::OnceLock::new();
    RELATIONS.get_or_init(|| {
        let mut out = Vec::new();
        for a in classes() {
            for f in a.fields {
                let (Ty::Set(Ty::Ref(x)), Qualifier::RoRuntime) = (&f.ty, f.qualifier) else { continue };
                let Some(xc) = class(x) else { continue };
                let cands: Vec<&str> = xc.fields.iter().filter(|g| g.ty == Ty::Ref(a.name)).map(|g| g.name).collect();
                let one = match cands.as_slice() {
                    [only] => Some(*only),
                    [] => None,
                    _ => AMBIGUOUS.iter().find(|(c, s, _)| *c == a.name && *s == f.name).map(|(_, _, p)| *p),
                };
                if let Some(one_field) = one {
                    out.push(Relation { many_class: a.name, many_field: f.name, one_class: xc.name, one_field });
                }
            }
        }
        out
    })
}
