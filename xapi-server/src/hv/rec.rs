//! Reading and writing stored rows by field name, for the hand-written VM logic.

use xapi_types::model::{self, Class};
use xapi_types::{Value, value::NULL_REF};

/// The class of this name (the datamodel is static, so a missing class is a bug).
pub fn class(name: &str) -> &'static Class {
    model::class(name).unwrap_or_else(|| panic!("class {name} in the datamodel"))
}

/// The index of a field.
pub fn idx(class: &Class, name: &str) -> usize {
    class.field(name).map(|(i, _)| i).unwrap_or_else(|| panic!("{} has no field {name}", class.name))
}

/// A read-only view of a row.
#[derive(Clone, Copy)]
pub struct Rec<'a> {
    pub class: &'static Class,
    pub fields: &'a [Value],
}

impl<'a> Rec<'a> {
    pub fn new(class: &'static Class, fields: &'a [Value]) -> Rec<'a> {
        Rec { class, fields }
    }

    pub fn get(&self, name: &str) -> &'a Value {
        &self.fields[idx(self.class, name)]
    }

    pub fn str(&self, name: &str) -> &'a str {
        self.get(name).as_str().unwrap_or_default()
    }

    /// A ref field, `None` when it is the null ref.
    pub fn reference(&self, name: &str) -> Option<&'a str> {
        Some(self.str(name)).filter(|r| !r.is_empty() && *r != NULL_REF)
    }

    pub fn int(&self, name: &str) -> i64 {
        match self.get(name) {
            Value::Int(i) => *i,
            Value::I32(i) => i64::from(*i),
            _ => 0,
        }
    }

    pub fn bool(&self, name: &str) -> bool {
        matches!(self.get(name), Value::Bool(true))
    }

    /// A value of a string map field.
    pub fn map_get(&self, name: &str, key: &str) -> Option<&'a str> {
        self.get(name).get(key).and_then(Value::as_str)
    }

    /// The refs of a set field.
    pub fn refs(&self, name: &str) -> Vec<&'a str> {
        self.get(name).as_array().unwrap_or_default().iter().filter_map(Value::as_str).collect()
    }
}

/// Sets `name` in `fields` of `class`; answers whether the value changed.
pub fn set(class: &Class, fields: &mut [Value], name: &str, v: impl Into<Value>) -> bool {
    let i = idx(class, name);
    let v = v.into();
    if fields[i] == v {
        return false;
    }
    fields[i] = v;
    true
}
