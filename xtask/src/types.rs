//! The datamodel's type grammar and default literals, parsed strictly: anything unexpected is an error.
//!
//! Types: `string | int | float | bool | datetime | "<cls> ref" | "<t> set" | "(<k> -> <v>) map" |
//! "enum <name>" | "<cls> record" | "<t> option"`, plus `"an event batch"` (the result of `event.from`) and the
//! literal `"<class> record"` (the type of `event.snapshot`, a record of whichever class the event is about).
//!
//! Defaults are parsed against the field's type: `{}`, `""`, `"UTC"`, `false`, `0`, `0.`, `OpaqueRef:NULL`,
//! `Null` (a null ref), `19700101T00:00:00Z`, enum values, `{0}`, `{OpaqueRef:…}`, `{"k" -> "v", …}`.

use anyhow::{Result, bail, ensure};

/// A parsed type. Class and enum names are not resolved here (see [`Type::check_names`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Type {
    String,
    Int,
    Float,
    Bool,
    DateTime,
    Ref(String),
    Enum(String),
    Set(Box<Type>),
    Map(Box<Type>, Box<Type>),
    Record(String),
    Option(Box<Type>),
    /// `"an event batch"`.
    EventBatch,
    /// `"<class> record"`: a record of some class, known only at run time (`event.snapshot`).
    AnyRecord,
}

/// A parsed default.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    DateTime(String),
    Set(Vec<Literal>),
    Map(Vec<(Literal, Literal)>),
}

pub const NULL_REF: &str = "OpaqueRef:NULL";

impl Type {
    pub fn parse(s: &str) -> Result<Type> {
        parse_type(s).map_err(|e| e.context(format!("cannot parse type {s:?}")))
    }

    /// Checks that every class and enum the type names exists.
    pub fn check_names(&self, class_exists: &dyn Fn(&str) -> bool, enum_exists: &dyn Fn(&str) -> bool) -> Result<()> {
        match self {
            Type::Ref(c) | Type::Record(c) => ensure!(class_exists(c), "unknown class {c:?}"),
            Type::Enum(e) => ensure!(enum_exists(e), "unknown enum {e:?}"),
            Type::Set(t) | Type::Option(t) => t.check_names(class_exists, enum_exists)?,
            Type::Map(k, v) => {
                k.check_names(class_exists, enum_exists)?;
                v.check_names(class_exists, enum_exists)?;
            }
            Type::String | Type::Int | Type::Float | Type::Bool | Type::DateTime => {}
            Type::EventBatch | Type::AnyRecord => {}
        }
        Ok(())
    }
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_type(s: &str) -> Result<Type> {
    Ok(match s {
        "string" => Type::String,
        "int" => Type::Int,
        "float" => Type::Float,
        "bool" => Type::Bool,
        "datetime" => Type::DateTime,
        "an event batch" => Type::EventBatch,
        "<class> record" => Type::AnyRecord,
        _ => {
            if let Some(inner) = s.strip_suffix(" set") {
                Type::Set(Box::new(parse_type(inner)?))
            } else if let Some(inner) = s.strip_suffix(" option") {
                Type::Option(Box::new(parse_type(inner)?))
            } else if let Some(inner) = s.strip_suffix(" map") {
                let Some(kv) = inner.strip_prefix('(').and_then(|i| i.strip_suffix(')')) else {
                    bail!("a map type must be \"(K -> V) map\", got {s:?}");
                };
                let parts = split_top(kv, " -> ");
                ensure!(parts.len() == 2, "a map type needs exactly one top-level \" -> \", got {s:?}");
                Type::Map(Box::new(parse_type(parts[0])?), Box::new(parse_type(parts[1])?))
            } else if let Some(c) = s.strip_suffix(" ref") {
                ensure!(is_ident(c), "bad class name in {s:?}");
                Type::Ref(c.to_owned())
            } else if let Some(c) = s.strip_suffix(" record") {
                ensure!(is_ident(c), "bad class name in {s:?}");
                Type::Record(c.to_owned())
            } else if let Some(e) = s.strip_prefix("enum ") {
                ensure!(is_ident(e), "bad enum name in {s:?}");
                Type::Enum(e.to_owned())
            } else {
                bail!("unknown type {s:?}")
            }
        }
    })
}

/// Splits `s` at each `sep` that is outside quotes, parentheses and braces.
fn split_top<'a>(s: &'a str, sep: &str) -> Vec<&'a str> {
    let mut parts = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0);
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => quoted = !quoted,
            b'(' | b'{' if !quoted => depth += 1,
            b')' | b'}' if !quoted => depth -= 1,
            _ if !quoted && depth == 0 && s[i..].starts_with(sep) => {
                parts.push(&s[start..i]);
                i += sep.len();
                start = i;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(&s[start..]);
    parts
}

/// Parses a field default against the field's type. `enum_values` gives the members of an enum by name.
pub fn parse_default(s: &str, ty: &Type, enum_values: &dyn Fn(&str) -> Option<Vec<String>>) -> Result<Literal> {
    parse_lit(s, ty, enum_values).map_err(|e| e.context(format!("cannot parse default {s:?}")))
}

fn parse_lit(s: &str, ty: &Type, enum_values: &dyn Fn(&str) -> Option<Vec<String>>) -> Result<Literal> {
    Ok(match ty {
        Type::String => Literal::Str(unquote(s)?),
        Type::Int => match s.parse::<i64>() {
            Ok(i) => Literal::Int(i),
            Err(_) => bail!("not an int"),
        },
        Type::Float => match s.parse::<f64>() {
            Ok(f) if f.is_finite() && s.contains('.') => Literal::Float(f),
            _ => bail!("not a float (expected digits with a '.', as in \"0.\")"),
        },
        Type::Bool => match s {
            "true" => Literal::Bool(true),
            "false" => Literal::Bool(false),
            _ => bail!("not a bool"),
        },
        Type::DateTime => {
            let b = s.as_bytes();
            let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
            ensure!(
                b.len() == 18
                    && digits(0..8)
                    && b[8] == b'T'
                    && digits(9..11)
                    && b[11] == b':'
                    && digits(12..14)
                    && b[14] == b':'
                    && digits(15..17)
                    && b[17] == b'Z',
                "not a datetime in the form 19700101T00:00:00Z"
            );
            Literal::DateTime(s.to_owned())
        }
        Type::Ref(_) => match s {
            "Null" | NULL_REF => Literal::Str(NULL_REF.to_owned()),
            _ if s.starts_with("OpaqueRef:") && s.len() > "OpaqueRef:".len() => Literal::Str(s.to_owned()),
            _ => bail!("not a reference"),
        },
        Type::Enum(name) => {
            let Some(values) = enum_values(name) else { bail!("unknown enum {name:?}") };
            ensure!(values.iter().any(|v| v == s), "{s:?} is not a value of enum {name}");
            Literal::Str(s.to_owned())
        }
        Type::Set(elem) => {
            let items = braced_items(s)?;
            Literal::Set(items.iter().map(|i| parse_lit(i, elem, enum_values)).collect::<Result<_>>()?)
        }
        Type::Map(k, v) => {
            let items = braced_items(s)?;
            let mut entries = Vec::with_capacity(items.len());
            for item in items {
                let kv = split_top(item, " -> ");
                ensure!(kv.len() == 2, "map entry {item:?} is not \"K -> V\"");
                entries.push((parse_lit(kv[0], k, enum_values)?, parse_lit(kv[1], v, enum_values)?));
            }
            Literal::Map(entries)
        }
        Type::Record(_) | Type::Option(_) | Type::EventBatch | Type::AnyRecord => {
            bail!("no default literal is known for this type")
        }
    })
}

/// `"abc"` → `abc`; the datamodel's strings carry no escapes.
fn unquote(s: &str) -> Result<String> {
    match s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(inner) if !inner.contains(['"', '\\']) => Ok(inner.to_owned()),
        _ => bail!("not a quoted string"),
    }
}

/// `{}` → `[]`; `{a, b}` → `["a", "b"]`.
fn braced_items(s: &str) -> Result<Vec<&str>> {
    let Some(inner) = s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
        bail!("a set or map literal must be in braces")
    };
    if inner.is_empty() {
        return Ok(Vec::new());
    }
    let items = split_top(inner, ", ");
    ensure!(items.iter().all(|i| !i.is_empty() && i.trim() == *i), "malformed items in {s:?}");
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_enums(_: &str) -> Option<Vec<String>> {
        None
    }

    #[test]
    fn types() {
        assert_eq!(
            Type::parse("(VM ref -> (string -> string) map) map").unwrap(),
            Type::Map(
                Box::new(Type::Ref("VM".into())),
                Box::new(Type::Map(Box::new(Type::String), Box::new(Type::String)))
            )
        );
        assert_eq!(
            Type::parse("enum vm_operations set").unwrap(),
            Type::Set(Box::new(Type::Enum("vm_operations".into())))
        );
        assert_eq!(
            Type::parse("sr_stat record option").unwrap(),
            Type::Option(Box::new(Type::Record("sr_stat".into())))
        );
        assert!(Type::parse("VM refs").is_err());
        assert!(Type::parse("(string -> string map").is_err());
    }

    #[test]
    fn defaults() {
        let map = Type::parse("(string -> string) map").unwrap();
        assert_eq!(
            parse_default(r#"{"address" -> "localhost", "port" -> "27000"}"#, &map, &no_enums).unwrap(),
            Literal::Map(vec![
                (Literal::Str("address".into()), Literal::Str("localhost".into())),
                (Literal::Str("port".into()), Literal::Str("27000".into())),
            ])
        );
        assert_eq!(parse_default("{}", &map, &no_enums).unwrap(), Literal::Map(vec![]));
        assert_eq!(parse_default("0.", &Type::Float, &no_enums).unwrap(), Literal::Float(0.0));
        assert!(parse_default("0", &Type::Float, &no_enums).is_err());
        assert_eq!(parse_default("Null", &Type::Ref("VM".into()), &no_enums).unwrap(), Literal::Str(NULL_REF.into()));
        assert_eq!(
            parse_default("{0}", &Type::parse("int set").unwrap(), &no_enums).unwrap(),
            Literal::Set(vec![Literal::Int(0)])
        );
        assert!(parse_default("UTC", &Type::String, &no_enums).is_err());
        assert!(parse_default("19700101T00:00:00", &Type::DateTime, &no_enums).is_err());
    }
}
