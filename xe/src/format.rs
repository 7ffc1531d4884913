//! xe's spelling of fields and values, and its record layout — all derived from the datamodel.
//!
//! * Field names: the datamodel's with `_` → `-` (`name_label` → `name-label`); class names lower-cased too
//!   (`VM_metrics` → `vm-metrics`).
//! * Markers: `( RO)`/`( RW)` for scalars, `(SRO)`/`(SRW)` for sets, `(MRO)`/`(MRW)` for maps (RW when the
//!   field is read-write or the datamodel has a setter, `add_to_…` or `add_…` for it, as `VDI.set_name_label`).
//! * Values: sets joined with `; `, maps as `key: value; key2: value2`, enums lower-case, bools `true`/`false`,
//!   references as the uuid of the object they name (`<not in database>` for none).
//! * A record: the first line's name padded on the right, the others on the left, to 4 + the longest name, each
//!   `name: value`, and a blank line after the block (xapi's `Cli_printer.multi_line_record`).

use xapi_types::model::{Class, Field, MsgKind, Qualifier, Ty};
use xapi_types::{Value, model};

/// Turns a reference into what xe prints for it.
pub trait RefNamer {
    fn name_ref(&mut self, class: &str, r: &str) -> String;

    /// The field `field` (wire name) of the `class` object `r`, for xe's computed fields (`vm-name-label`); `None`
    /// when it cannot be read.
    fn lookup(&mut self, _class: &str, _r: &str, _field: &str) -> Option<Value> {
        None
    }
}

/// xe's name for a datamodel name.
pub fn xe_name(name: &str) -> String {
    name.replace('_', "-")
}

/// xe's name for a class (`vm`, `host-cpu`).
pub fn xe_class_name(class: &Class) -> String {
    xe_name(&class.name.to_lowercase())
}

/// The classes xe has generic commands for: those with `get_all_records`.
pub fn listable_classes() -> impl Iterator<Item = &'static Class> {
    model::classes().iter().copied().filter(|c| c.has_get_all_records())
}

/// A field by its xe name. As in xe's records, a reference field `F` can also be named `<f>-uuid` (`sr-uuid` for a
/// VDI's `SR`, `vm-uuid` for a VBD's `VM`): its value is printed as the uuid anyway.
pub fn field_by_xe_name(class: &Class, name: &str) -> Option<(usize, &'static Field)> {
    let fields = || class.fields.iter().enumerate();
    fields().find(|(_, f)| xe_name(f.name) == name).or_else(|| {
        let target = name.strip_suffix("-uuid")?;
        fields().find(|(_, f)| matches!(f.ty, Ty::Ref(_)) && xe_name(f.name).eq_ignore_ascii_case(target))
    })
}

fn has(class: &Class, kind: MsgKind) -> bool {
    class.messages.iter().any(|m| m.kind == kind)
}

/// The three-letter marker xe prints after a field name.
pub fn marker(class: &Class, index: usize, field: &Field) -> &'static str {
    let i = index as u16;
    let rw = field.qualifier == Qualifier::Rw;
    match field.ty {
        Ty::Set(_) if rw || has(class, MsgKind::SetAdd(i)) => "SRW",
        Ty::Set(_) => "SRO",
        Ty::Map(..) if rw || has(class, MsgKind::MapAdd(i)) => "MRW",
        Ty::Map(..) => "MRO",
        _ if rw || has(class, MsgKind::Set(i)) => " RW",
        _ => " RO",
    }
}

/// `name-label ( RW)`.
pub fn label(class: &Class, index: usize, field: &Field) -> String {
    format!("{} ({})", xe_name(field.name), marker(class, index, field))
}

/// A value of type `ty` as xe prints it.
pub fn value_string(ty: &Ty, v: &Value, refs: &mut dyn RefNamer) -> String {
    match (ty, v) {
        (Ty::Set(t), Value::Array(items)) => {
            items.iter().map(|i| value_string(t, i, refs)).collect::<Vec<_>>().join("; ")
        }
        (Ty::Map(k, t), Value::Struct(members)) => members
            .iter()
            .map(|(key, val)| format!("{}: {}", value_string(k, &Value::str(key), refs), value_string(t, val, refs)))
            .collect::<Vec<_>>()
            .join("; "),
        (Ty::Enum(_), Value::Str(s)) => s.to_lowercase(),
        (Ty::Ref(class), Value::Str(r)) => refs.name_ref(class, r),
        (Ty::Option(t), v) if *v != Value::Nil => value_string(t, v, refs),
        (_, v) => scalar_string(v),
    }
}

fn scalar_string(v: &Value) -> String {
    match v {
        Value::Str(s) | Value::DateTime(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::I32(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) => items.iter().map(scalar_string).collect::<Vec<_>>().join("; "),
        Value::Struct(members) => {
            members.iter().map(|(k, v)| format!("{k}: {}", scalar_string(v))).collect::<Vec<_>>().join("; ")
        }
        Value::Nil => String::new(),
    }
}

/// The `(label, value)` rows of `record` for the fields at `indices` that it has, in that order.
pub fn rows(class: &Class, record: &Value, indices: &[usize], refs: &mut dyn RefNamer) -> Vec<(String, String)> {
    indices
        .iter()
        .filter_map(|&i| {
            let field = &class.fields[i];
            let v = record.get(field.name)?;
            Some((label(class, i, field), value_string(&field.ty, v, refs)))
        })
        .collect()
}

/// One record block, blank line included.
pub fn block(rows: &[(String, String)]) -> String {
    let width = 4 + rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (n, (k, v)) in rows.iter().enumerate() {
        if n == 0 {
            out.push_str(&format!("{k:<width$}: {v}\n"));
        } else {
            out.push_str(&format!("{k:>width$}: {v}\n"));
        }
    }
    out.push('\n');
    out
}

/// `--minimal`: the first value of every record, commas escaped, on one line.
pub fn minimal(values: &[String]) -> String {
    let escaped: Vec<String> = values.iter().map(|v| v.replace('\\', "\\\\").replace(',', "\\,")).collect();
    format!("{}\n", escaped.join(","))
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    /// Names references `OpaqueRef:x` as `uuid-of-x`.
    struct FakeRefs;

    impl RefNamer for FakeRefs {
        fn name_ref(&mut self, _class: &str, r: &str) -> String {
            match r.strip_prefix("OpaqueRef:") {
                Some("NULL") | None => "<not in database>".into(),
                Some(x) => format!("uuid-of-{x}"),
            }
        }
    }

    fn vm() -> &'static Class {
        model::class("VM").unwrap()
    }

    fn vm_record() -> Value {
        Value::Struct(vec![
            ("uuid".into(), Value::str("7b1aa3d1-8f4e-4a8e-9c1a-0e2d7f1c2b3a")),
            ("name_label".into(), Value::str("Control domain on host: xs1")),
            ("name_description".into(), Value::str("The domain which manages physical devices")),
            ("power_state".into(), Value::str("Running")),
            ("is_a_template".into(), Value::Bool(false)),
            ("memory_static_max".into(), Value::Int(4294967296)),
            ("resident_on".into(), Value::str("OpaqueRef:host1")),
            ("affinity".into(), Value::str("OpaqueRef:NULL")),
            ("VBDs".into(), Value::Array(vec![Value::str("OpaqueRef:vbd1"), Value::str("OpaqueRef:vbd2")])),
            ("tags".into(), Value::Array(vec![Value::str("prod"), Value::str("db")])),
            (
                "other_config".into(),
                Value::Struct(vec![("foo".into(), Value::str("bar")), ("perfmon".into(), Value::str("x"))]),
            ),
            ("allowed_operations".into(), Value::Array(vec![Value::str("clean_shutdown"), Value::str("pause")])),
            ("blocked_operations".into(), Value::Struct(vec![("start".into(), Value::str("locked"))])),
        ])
    }

    fn indices(class: &Class, names: &[&str]) -> Vec<usize> {
        names.iter().map(|n| class.field(n).unwrap().0).collect()
    }

    #[test]
    fn names_and_markers_follow_the_datamodel() {
        let vm = vm();
        let marked: Vec<String> = ["uuid", "name_label", "power_state", "VBDs", "tags", "other_config"]
            .iter()
            .map(|n| {
                let (i, f) = vm.field(n).unwrap();
                label(vm, i, f)
            })
            .collect();
        expect![[r#"["uuid ( RO)", "name-label ( RW)", "power-state ( RO)", "VBDs (SRO)", "tags (SRW)", "other-config (MRW)"]"#]]
            .assert_eq(&format!("{marked:?}"));
        let names: Vec<String> = ["VM", "host", "VM_metrics", "host_cpu", "PIF"]
            .iter()
            .map(|n| xe_class_name(model::class(n).unwrap()))
            .collect();
        expect![[r#"["vm", "host", "vm-metrics", "host-cpu", "pif"]"#]].assert_eq(&format!("{names:?}"));
    }

    #[test]
    fn list_block_aligns_on_the_longest_name() {
        let vm = vm();
        let rows = rows(vm, &vm_record(), &indices(vm, &["uuid", "name_label", "name_description"]), &mut FakeRefs);
        expect![[r#"
            uuid ( RO)                : 7b1aa3d1-8f4e-4a8e-9c1a-0e2d7f1c2b3a
                      name-label ( RW): Control domain on host: xs1
                name-description ( RW): The domain which manages physical devices

        "#]]
        .assert_eq(&block(&rows));
    }

    #[test]
    fn param_list_shows_every_field_the_record_has_with_markers() {
        let vm = vm();
        let all: Vec<usize> = (0..vm.fields.len()).collect();
        let rows = rows(vm, &vm_record(), &all, &mut FakeRefs);
        expect![[r#"
            uuid ( RO)                  : 7b1aa3d1-8f4e-4a8e-9c1a-0e2d7f1c2b3a
                allowed-operations (SRO): clean_shutdown; pause
                        name-label ( RW): Control domain on host: xs1
                  name-description ( RW): The domain which manages physical devices
                       power-state ( RO): running
                     is-a-template ( RW): false
                       resident-on ( RO): uuid-of-host1
                          affinity ( RW): <not in database>
                 memory-static-max ( RW): 4294967296
                              VBDs (SRO): uuid-of-vbd1; uuid-of-vbd2
                      other-config (MRW): foo: bar; perfmon: x
                              tags (SRW): prod; db
                blocked-operations (MRW): start: locked

        "#]]
        .assert_eq(&block(&rows));
    }

    #[test]
    fn reference_fields_answer_to_their_uuid_name() {
        let vdi = model::class("VDI").unwrap();
        assert_eq!(field_by_xe_name(vdi, "sr-uuid").map(|(_, f)| f.name), Some("SR"));
        assert_eq!(field_by_xe_name(vdi, "SR").map(|(_, f)| f.name), Some("SR"));
        let vbd = model::class("VBD").unwrap();
        assert_eq!(field_by_xe_name(vbd, "vm-uuid").map(|(_, f)| f.name), Some("VM"));
        assert_eq!(field_by_xe_name(vbd, "vdi-uuid").map(|(_, f)| f.name), Some("VDI"));
        assert!(field_by_xe_name(vdi, "name-label-uuid").is_none(), "only references have a -uuid name");
        assert_eq!(field_by_xe_name(vdi, "uuid").map(|(_, f)| f.name), Some("uuid"));
    }

    #[test]
    fn minimal_joins_and_escapes() {
        expect![[r#"
            a,b\,c,d\\e
        "#]]
        .assert_eq(&minimal(&["a".into(), "b,c".into(), "d\\e".into()]));
        assert_eq!(minimal(&[]), "\n");
    }

    #[test]
    fn sets_and_maps() {
        let ty = Ty::Map(&Ty::String, &Ty::String);
        let map = Value::Struct(vec![("a".into(), Value::str("1")), ("b".into(), Value::str("2"))]);
        assert_eq!(value_string(&ty, &map, &mut FakeRefs), "a: 1; b: 2");
        assert_eq!(value_string(&ty, &Value::Struct(vec![]), &mut FakeRefs), "");
        let set = Value::Array(vec![Value::str("x"), Value::str("y")]);
        assert_eq!(value_string(&Ty::Set(&Ty::String), &set, &mut FakeRefs), "x; y");
        assert_eq!(value_string(&Ty::Bool, &Value::Bool(true), &mut FakeRefs), "true");
    }
}
