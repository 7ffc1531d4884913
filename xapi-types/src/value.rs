//! The dynamic value that every call parameter, result and stored field is made of.
//!
//! It mirrors what the wire can say rather than the datamodel's types: the dispatcher checks a [`Value`] against
//! a [`Ty`] at the edge (see the daemon's `coerce`), so the middle only ever sees well-typed values.

use crate::model::{Lit, Ty};

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Strings, refs, enum values; on XML-RPC a bare `<value>text</value>`.
    Str(String),
    /// XenAPI `int` (int64); a bare value on XML-RPC (as xapi writes it), a number on JSON-RPC.
    Int(i64),
    /// An XML-RPC `<i4>`; xapi uses it only for `event.from`'s `valid_ref_counts`.
    I32(i32),
    Float(f64),
    Bool(bool),
    /// In xapi's wire form, `20250319T04:16:24Z`.
    DateTime(String),
    Array(Vec<Value>),
    /// Records and maps (map keys are always strings on the wire). Order is kept.
    Struct(Vec<(String, Value)>),
    Nil,
}

/// The epoch, as xapi writes a datetime that was never set.
pub const EPOCH: &str = "19700101T00:00:00Z";
pub const NULL_REF: &str = "OpaqueRef:NULL";

impl Value {
    pub fn str(s: impl Into<String>) -> Value {
        Value::Str(s.into())
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_struct(&self) -> Option<&[(String, Value)]> {
        match self {
            Value::Struct(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// A member of a struct by key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_struct()?.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The value a field of type `ty` has when the datamodel gives no default.
    pub fn empty_of(ty: &Ty) -> Value {
        match ty {
            Ty::String => Value::Str(String::new()),
            Ty::Int => Value::Int(0),
            Ty::Float => Value::Float(0.0),
            Ty::Bool => Value::Bool(false),
            Ty::DateTime => Value::DateTime(EPOCH.into()),
            Ty::Ref(_) => Value::Str(NULL_REF.into()),
            Ty::Enum(e) => Value::Str(e.values.first().copied().unwrap_or_default().into()),
            Ty::Set(_) => Value::Array(Vec::new()),
            Ty::Map(..) | Ty::Record(_) | Ty::EventBatch => Value::Struct(Vec::new()),
            Ty::Option(_) => Value::Nil,
        }
    }
}

impl From<&Lit> for Value {
    fn from(lit: &Lit) -> Value {
        match *lit {
            Lit::Str(s) => Value::Str(s.into()),
            Lit::Int(i) => Value::Int(i),
            Lit::Float(f) => Value::Float(f),
            Lit::Bool(b) => Value::Bool(b),
            Lit::DateTime(d) => Value::DateTime(d.into()),
            Lit::Set(items) => Value::Array(items.iter().map(Value::from).collect()),
            Lit::Map(pairs) => {
                Value::Struct(pairs.iter().map(|(k, v)| (Value::from(k).into_key(), Value::from(v))).collect())
            }
        }
    }
}

impl Value {
    /// The string form of a map key: xapi stringifies non-string keys.
    pub fn into_key(self) -> String {
        match self {
            Value::Str(s) | Value::DateTime(s) => s,
            Value::Int(i) => i.to_string(),
            Value::I32(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Bool(b) => b.to_string(),
            other => format!("{other:?}"),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.into())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Int(i)
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Value {
        Value::Float(f)
    }
}
