//! Classifies each message into a `MsgKind` (see `xapi-types/src/model.rs`) from its name and shape.
//!
//! The shape is positional, by type: the first parameter is `session_id: session ref`, the object is a
//! `<class> ref`, setter values have the field's type, and so on. Parameter names other than `session_id` do not
//! matter (they never travel on the wire), so e.g. `SR.set_name_label(session_id, sr, value)` is a `Set` like
//! any other setter. `create` and `destroy` become `Create`/`Destroy` only when implicit (the generic record
//! constructor and destructor); custom constructors and destructors (`SR.create`) are `Custom`.

use std::fmt;

use anyhow::Result;

use crate::datamodel::{ClassDef, MessageDef};
use crate::types::Type;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    GetRecord,
    GetByUuid,
    GetByNameLabel,
    GetAll,
    GetAllRecords,
    GetAllWhere,
    GetAllRecordsWhere,
    Create,
    Destroy,
    Get(u16),
    Set(u16),
    MapAdd(u16),
    MapRemove(u16),
    SetAdd(u16),
    SetRemove(u16),
    Custom,
}

impl Kind {
    /// The variant's name without its field index, for counting.
    pub fn label(&self) -> &'static str {
        match self {
            Kind::GetRecord => "GetRecord",
            Kind::GetByUuid => "GetByUuid",
            Kind::GetByNameLabel => "GetByNameLabel",
            Kind::GetAll => "GetAll",
            Kind::GetAllRecords => "GetAllRecords",
            Kind::GetAllWhere => "GetAllWhere",
            Kind::GetAllRecordsWhere => "GetAllRecordsWhere",
            Kind::Create => "Create",
            Kind::Destroy => "Destroy",
            Kind::Get(_) => "Get",
            Kind::Set(_) => "Set",
            Kind::MapAdd(_) => "MapAdd",
            Kind::MapRemove(_) => "MapRemove",
            Kind::SetAdd(_) => "SetAdd",
            Kind::SetRemove(_) => "SetRemove",
            Kind::Custom => "Custom",
        }
    }

    /// The index of the field the message is about, if any.
    pub fn field(&self) -> Option<u16> {
        match *self {
            Kind::Get(i)
            | Kind::Set(i)
            | Kind::MapAdd(i)
            | Kind::MapRemove(i)
            | Kind::SetAdd(i)
            | Kind::SetRemove(i) => Some(i),
            _ => None,
        }
    }
}

/// Rust syntax: `MsgKind::Get(3)`.
impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field() {
            Some(i) => write!(f, "MsgKind::{}({i})", self.label()),
            None => write!(f, "MsgKind::{}", self.label()),
        }
    }
}

/// Classifies `msg`, a message of `class`.
pub fn classify(class: &ClassDef, msg: &MessageDef) -> Result<Kind> {
    let params = msg.params.iter().map(|p| Type::parse(&p.ty)).collect::<Result<Vec<_>>>()?;
    let result = match msg.result.as_str() {
        "void" => None,
        r => Some(Type::parse(r)?),
    };
    let takes_session = msg.params.first().is_some_and(|p| p.name == "session_id")
        && params.first() == Some(&Type::Ref("session".into()));
    if !takes_session {
        return Ok(Kind::Custom);
    }
    let args = &params[1..];
    let c = &class.name;
    let this = Type::Ref(c.clone());
    let refs = Type::Set(Box::new(this.clone()));
    let records = Type::Map(Box::new(this.clone()), Box::new(Type::Record(c.clone())));
    let is = |want_args: &[&Type], want_result: Option<&Type>| {
        args.len() == want_args.len()
            && args.iter().zip(want_args).all(|(a, w)| a == *w)
            && result.as_ref() == want_result
    };

    let fixed = match msg.name.as_str() {
        "get_record" => is(&[&this], Some(&Type::Record(c.clone()))).then_some(Kind::GetRecord),
        "get_by_uuid" => is(&[&Type::String], Some(&this)).then_some(Kind::GetByUuid),
        "get_by_name_label" => is(&[&Type::String], Some(&refs)).then_some(Kind::GetByNameLabel),
        "get_all" => is(&[], Some(&refs)).then_some(Kind::GetAll),
        "get_all_records" => is(&[], Some(&records)).then_some(Kind::GetAllRecords),
        "get_all_where" => is(&[&Type::String], Some(&refs)).then_some(Kind::GetAllWhere),
        "get_all_records_where" => is(&[&Type::String], Some(&records)).then_some(Kind::GetAllRecordsWhere),
        "create" => (msg.implicit && is(&[&Type::Record(c.clone())], Some(&this))).then_some(Kind::Create),
        "destroy" => (msg.implicit && is(&[&this], None)).then_some(Kind::Destroy),
        _ => None,
    };
    if let Some(kind) = fixed {
        return Ok(kind);
    }

    let field = |name: &str| -> Result<Option<(u16, Type)>> {
        match class.fields.iter().position(|f| f.name == name) {
            Some(i) => Ok(Some((u16::try_from(i)?, Type::parse(&class.fields[i].ty)?))),
            None => Ok(None),
        }
    };
    let n = msg.name.as_str();
    if let Some((i, ty)) = n.strip_prefix("get_").map(field).transpose()?.flatten()
        && is(&[&this], Some(&ty))
    {
        return Ok(Kind::Get(i));
    }
    if let Some((i, ty)) = n.strip_prefix("set_").map(field).transpose()?.flatten()
        && is(&[&this, &ty], None)
    {
        return Ok(Kind::Set(i));
    }
    for (prefix, adds) in [("add_to_", true), ("remove_from_", false), ("add_", true), ("remove_", false)] {
        let Some((i, ty)) = n.strip_prefix(prefix).map(field).transpose()?.flatten() else {
            continue;
        };
        let kind = match (&ty, adds) {
            (Type::Map(k, v), true) if prefix == "add_to_" && is(&[&this, k, v], None) => Kind::MapAdd(i),
            (Type::Map(k, _), false) if prefix == "remove_from_" && is(&[&this, k], None) => Kind::MapRemove(i),
            (Type::Set(e), true) if is(&[&this, e], None) => Kind::SetAdd(i),
            (Type::Set(e), false) if is(&[&this, e], None) => Kind::SetRemove(i),
            _ => continue,
        };
        return Ok(kind);
    }
    Ok(Kind::Custom)
}
