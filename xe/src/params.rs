//! Reading a command's parameters as xe reads them (xapi's `Record_util` and `Cli_operations` helpers): sizes with
//! unit suffixes, booleans, `map:key=value` maps, and the record a `<class>.create` takes, built from the
//! datamodel.

use xapi_types::Value;
use xapi_types::model::{self, Qualifier};

use crate::commands::Args;
use crate::error::XeError;

/// A size as xe reads it (`Record_util.bytes_of_string`): a non-negative integer, then optionally (spaces
/// allowed between) a unit, case-insensitive: `bytes`/`b`, `KiB`/`KB`/`K`, `MiB`/`MB`/`M`, `GiB`/`GB`/`G`,
/// `TiB`/`TB`/`T` — all powers of 1024, as in xe.
pub fn parse_size(field: &str, s: &str) -> Result<i64, XeError> {
    let bad = || {
        XeError::Failure(format!(
            "Failed to parse field '{field}': expecting an integer (possibly with suffix KiB, MiB, GiB, TiB), got '{s}'"
        ))
    };
    let body = s.strip_prefix('+').unwrap_or(s);
    let digits = body.find(|c: char| !c.is_ascii_digit()).unwrap_or(body.len());
    let n: i64 = body[..digits].parse().map_err(|_| bad())?;
    let shift = match body[digits..].trim_start().to_ascii_lowercase().as_str() {
        "" | "b" | "bytes" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1i64 << shift).ok_or_else(bad)
}

impl Args {
    /// A boolean parameter as xe reads it (`true`/`t`/`yes`/`y`/`1`, `false`/`f`/`no`/`n`/`0`), or `default`.
    pub fn bool(&self, name: &str, default: bool) -> Result<bool, XeError> {
        let Some(v) = self.get(name) else { return Ok(default) };
        match v.to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "1" => Ok(true),
            "false" | "f" | "no" | "n" | "0" => Ok(false),
            _ => Err(XeError::Failure(format!(
                "Failed to parse parameter '{name}': Expected 'true','t','yes','y','1','false','f','no','n','0' got {v}"
            ))),
        }
    }

    /// The pairs given as `<name>:key=value`, as a map.
    pub fn map(&self, name: &str) -> Value {
        let prefix = format!("{name}:");
        Value::Struct(
            self.params
                .iter()
                .filter_map(|(k, v)| {
                    k.strip_prefix(&prefix).filter(|k| !k.is_empty()).map(|k| (k.to_string(), Value::str(v)))
                })
                .collect(),
        )
    }
}

/// The record `<class>.create` takes: every field a constructor sets (read-write and read-only-constructor ones),
/// at its datamodel default unless given in `given` (by wire name).
pub fn create_record(class: &str, given: Vec<(&str, Value)>) -> Result<Value, XeError> {
    let c = model::class(class).ok_or_else(|| XeError::Transport(format!("xe does not know the class {class}")))?;
    if let Some((unknown, _)) = given.iter().find(|(n, _)| c.field(n).is_none()) {
        return Err(XeError::Transport(format!("xe gives {class}.create a field it does not have: {unknown}")));
    }
    let mut given = given;
    let mut members = Vec::new();
    for f in c.fields.iter().filter(|f| f.qualifier != Qualifier::RoRuntime && f.name != "uuid") {
        let v = match given.iter().position(|(n, _)| *n == f.name) {
            Some(i) => given.swap_remove(i).1,
            None => f.default.as_ref().map(Value::from).unwrap_or_else(|| Value::empty_of(&f.ty)),
        };
        if v != Value::Nil {
            members.push((f.name.to_string(), v));
        }
    }
    // Fields the constructor does not take but the caller named (e.g. `currently_attached` where it is runtime).
    members.extend(given.into_iter().map(|(n, v)| (n.to_string(), v)));
    Ok(Value::Struct(members))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_xe_suffixes() {
        let size = |s| parse_size("virtual-size", s);
        assert_eq!(size("67108864"), Ok(67108864));
        assert_eq!(size("64MiB"), Ok(64 << 20));
        assert_eq!(size("64 MiB"), Ok(64 << 20));
        assert_eq!(size("64m"), Ok(64 << 20));
        assert_eq!(size("64MB"), Ok(64 << 20));
        assert_eq!(size("1G"), Ok(1 << 30));
        assert_eq!(size("2TiB"), Ok(2 << 40));
        assert_eq!(size("512KiB"), Ok(512 << 10));
        assert_eq!(size("10bytes"), Ok(10));
        assert_eq!(size("10 B"), Ok(10));
        for bad in ["", "MiB", "-1", "12XB", "1.5G", "8388608T", "1 G x", "0x10"] {
            assert!(size(bad).is_err(), "{bad:?}");
        }
        expect_test::expect![[r#"
            Error: Failed to parse field 'virtual-size': expecting an integer (possibly with suffix KiB, MiB, GiB, TiB), got '12XB'
        "#]]
        .assert_eq(&size("12XB").unwrap_err().render());
    }

    #[test]
    fn booleans_and_maps() {
        let args = Args {
            params: vec![
                ("shared".into(), "yes".into()),
                ("bad".into(), "maybe".into()),
                ("device-config:location".into(), "/srv".into()),
                ("device-config:".into(), "ignored".into()),
                ("name-label".into(), "x".into()),
            ],
            ..Args::default()
        };
        assert_eq!(args.bool("shared", false), Ok(true));
        assert_eq!(args.bool("absent", true), Ok(true));
        expect_test::expect![[r#"
            Error: Failed to parse parameter 'bad': Expected 'true','t','yes','y','1','false','f','no','n','0' got maybe
        "#]]
        .assert_eq(&args.bool("bad", false).unwrap_err().render());
        assert_eq!(args.map("device-config"), Value::Struct(vec![("location".into(), Value::str("/srv"))]));
    }

    #[test]
    fn create_records_follow_the_datamodel() {
        let r = create_record("VBD", vec![("userdevice", Value::str("3")), ("type", Value::str("CD"))]).unwrap();
        assert_eq!(r.get("userdevice"), Some(&Value::str("3")));
        assert_eq!(r.get("type"), Some(&Value::str("CD")));
        assert_eq!(r.get("VDI"), Some(&Value::str(xapi_types::value::NULL_REF)));
        assert!(r.get("uuid").is_none());
        assert!(create_record("VBD", vec![("no_such_field", Value::Bool(true))]).is_err());
    }
}
