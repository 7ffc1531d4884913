//! The columns a listing shows: `<class>-list`'s defaults per class, as xe has them, and the fields named in
//! `params=a,b`.
//!
//! A column is a datamodel field, named as xe names it (`name-label`; a reference field also as `<field>-uuid`,
//! `sr-uuid` for a VDI's `SR`), or one of xe's computed record fields:
//!
//! * `<field>-name-label` for a reference field: the name-label of the object it names (`vm-name-label` of a VBD,
//!   `sr-name-label` of a VDI), `<not in database>` for none;
//! * an SR's `host`: the name-label of the host of its one PBD, `<shared>` when it has several, `<not in database>`
//!   when it has none.
//!
//! [`DEFAULTS`] says which columns `<class>-list` shows without `params=`: xapi's `Cli_operations.gen_cmds`
//! lists, each written in the order xe prints them (the order of the fields in its `Records.<class>_record`), and
//! reduced to the names xe's records have (xe lists `snapshot_of` and `snapshot_time` for `snapshot-list`, which
//! name no field of its record and so are not shown; the same for `host-crashdump`'s `host`, `cluster-host`'s `pif`,
//! `repository`'s `up-to-date` and `vtpm`'s `profile`). An empty list means every field, as xe shows for
//! `message-list` and `secret-list`. A class without an entry shows uuid, name-label and name-description.

use xapi_types::Value;
use xapi_types::model::{Class, Ty};

use crate::client::NOT_IN_DATABASE;
use crate::format::{self, RefNamer};

/// xe's default columns of `<noun>-list`, in xe's order.
pub const DEFAULTS: &[(&str, &[&str])] = &[
    ("pool", &["uuid", "name-label", "name-description", "master", "default-SR"]),
    ("pif", &["uuid", "device", "MAC", "currently-attached", "VLAN", "network-uuid", "host-uuid"]),
    ("bond", &["uuid", "master", "slaves"]),
    ("vlan", &["uuid", "tagged-PIF", "untagged-PIF", "tag"]),
    ("tunnel", &["uuid", "access-PIF", "transport-PIF", "status"]),
    ("vif", &["uuid", "vm-uuid", "device", "network-uuid"]),
    ("network", &["uuid", "name-label", "name-description", "bridge"]),
    ("console", &["uuid", "vm-uuid", "vm-name-label", "protocol", "location"]),
    ("vm", &["uuid", "name-label", "power-state"]),
    ("template", &["uuid", "name-label", "name-description"]),
    ("snapshot", &["uuid", "name-label", "name-description", "is-vmss-snapshot"]),
    ("host", &["uuid", "name-label", "name-description"]),
    ("host-cpu", &["uuid", "number", "vendor", "speed", "utilisation"]),
    ("host-crashdump", &["uuid", "timestamp", "size"]),
    ("vdi", &["uuid", "name-label", "name-description", "sr-uuid", "virtual-size", "sharable", "read-only"]),
    ("vbd", &["uuid", "vm-uuid", "vm-name-label", "vdi-uuid", "empty", "device"]),
    ("sr", &["uuid", "name-label", "name-description", "host", "type", "content-type"]),
    ("sm", &["uuid", "name-label", "name-description", "type", "vendor", "copyright", "configuration"]),
    ("pbd", &["uuid", "host-uuid", "sr-uuid", "device-config", "currently-attached"]),
    ("task", &["uuid", "name-label", "name-description", "status", "progress"]),
    ("subject", &["uuid", "subject-identifier", "other-config", "roles"]),
    (
        "vmss",
        &[
            "uuid",
            "name-label",
            "name-description",
            "enabled",
            "type",
            "retained-snapshots",
            "frequency",
            "schedule",
            "last-run-time",
            "VMs",
        ],
    ),
    ("message", &[]),
    ("secret", &[]),
    ("gpu-group", &["uuid", "name-label", "name-description"]),
    ("vgpu", &["uuid", "vm-uuid", "device", "gpu-group-uuid"]),
    ("feature", &["uuid", "name-label", "name-description", "enabled", "experimental", "version", "host-uuid"]),
    ("sdn-controller", &["uuid", "protocol", "address", "port"]),
    (
        "pusb",
        &[
            "uuid",
            "path",
            "vendor-id",
            "vendor-desc",
            "product-id",
            "product-desc",
            "serial",
            "version",
            "description",
            "speed",
        ],
    ),
    ("usb-group", &["uuid", "name-label", "name-description"]),
    ("vusb", &["uuid", "vm-uuid", "usb-group-uuid"]),
    (
        "cluster",
        &[
            "uuid",
            "cluster-hosts",
            "cluster-token",
            "cluster-stack",
            "allowed-operations",
            "current-operations",
            "pool-auto-join",
            "cluster-config",
            "other-config",
        ],
    ),
    (
        "cluster-host",
        &["uuid", "cluster", "host", "enabled", "allowed-operations", "current-operations", "other-config"],
    ),
    ("certificate", &["uuid", "type", "name", "host", "not-before", "not-after", "fingerprint", "purpose"]),
    (
        "repository",
        &[
            "uuid",
            "name-label",
            "name-description",
            "binary-url",
            "source-url",
            "update",
            "hash",
            "gpgkey-path",
            "origin",
        ],
    ),
    ("vtpm", &["uuid", "vm-uuid"]),
];

/// Where a column's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The field at this index.
    Field(usize),
    /// The name-label of the object the reference field at this index names.
    RefNameLabel(usize),
    /// An SR's `host`.
    SrHost,
}

/// One column: the name xe prints and where its value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub source: Source,
}

/// The reference field that `<prefix>` names, case-insensitively (`vm` → `VM`, `sr` → `SR`).
fn ref_field(class: &Class, prefix: &str) -> Option<usize> {
    class.fields.iter().position(|f| matches!(f.ty, Ty::Ref(_)) && format::xe_name(f.name).eq_ignore_ascii_case(prefix))
}

/// The column xe calls `name`, if the class has it.
pub fn column(class: &Class, name: &str) -> Option<Column> {
    if let Some((i, _)) = format::field_by_xe_name(class, name) {
        return Some(Column { name: name.to_string(), source: Source::Field(i) });
    }
    if let Some(i) = name.strip_suffix("-name-label").and_then(|p| ref_field(class, p)) {
        return Some(Column { name: name.to_string(), source: Source::RefNameLabel(i) });
    }
    (class.name == "SR" && name == "host").then(|| Column { name: name.to_string(), source: Source::SrHost })
}

/// Every field, in the datamodel's order (`params=all`, `-param-list`).
pub fn all(class: &Class) -> Vec<Column> {
    class
        .fields
        .iter()
        .enumerate()
        .map(|(i, f)| Column { name: format::xe_name(f.name), source: Source::Field(i) })
        .collect()
}

/// The columns `<noun>-list` shows without `params=`.
pub fn defaults(noun: &str, class: &Class) -> Vec<Column> {
    let names: &[&str] = match DEFAULTS.iter().find(|(n, _)| *n == noun) {
        Some((_, [])) => return all(class),
        Some((_, names)) => names,
        None => &["uuid", "name-label", "name-description"],
    };
    names.iter().filter_map(|n| column(class, n)).collect()
}

/// The `(label, value)` rows of `record` for `columns`; a field the record lacks is left out.
pub fn rows(class: &Class, record: &Value, columns: &[Column], refs: &mut dyn RefNamer) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(columns.len());
    for c in columns {
        match c.source {
            Source::Field(i) => {
                let f = &class.fields[i];
                let Some(v) = record.get(f.name) else { continue };
                // A reference asked for by its `-uuid` name is xe's read-only computed field.
                let marker = if format::xe_name(f.name) == c.name { format::marker(class, i, f) } else { " RO" };
                out.push((format!("{} ({marker})", c.name), format::value_string(&f.ty, v, refs)));
            }
            Source::RefNameLabel(i) => {
                let f = &class.fields[i];
                let Ty::Ref(target) = f.ty else { continue };
                let r = record.get(f.name).and_then(Value::as_str).unwrap_or_default();
                out.push((format!("{} ( RO)", c.name), name_label(refs, target, r)));
            }
            Source::SrHost => {
                let pbds = record.get("PBDs").and_then(Value::as_array).unwrap_or_default();
                let host = match pbds {
                    [pbd] => match refs.lookup("PBD", pbd.as_str().unwrap_or_default(), "host") {
                        Some(Value::Str(host)) => name_label(refs, "host", &host),
                        _ => NOT_IN_DATABASE.to_string(),
                    },
                    [] => NOT_IN_DATABASE.to_string(),
                    _ => "<shared>".to_string(),
                };
                out.push((format!("{} ( RO)", c.name), host));
            }
        }
    }
    out
}

/// The name-label of the `class` object `r`, `<not in database>` when there is none.
fn name_label(refs: &mut dyn RefNamer, class: &str, r: &str) -> String {
    match refs.lookup(class, r, "name_label") {
        Some(Value::Str(name)) => name,
        _ => NOT_IN_DATABASE.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;
    use xapi_types::model;

    use super::*;
    use crate::commands;

    /// References `OpaqueRef:x` named `uuid-of-x`, their name-labels `name-of-x`; PBD `p1`'s host is `h1`.
    struct FakeRefs;

    impl RefNamer for FakeRefs {
        fn name_ref(&mut self, _class: &str, r: &str) -> String {
            match r.strip_prefix("OpaqueRef:") {
                Some("NULL") | None => NOT_IN_DATABASE.into(),
                Some(x) => format!("uuid-of-{x}"),
            }
        }

        fn lookup(&mut self, class: &str, r: &str, field: &str) -> Option<Value> {
            let x = r.strip_prefix("OpaqueRef:").filter(|x| *x != "NULL")?;
            match (class, field) {
                ("PBD", "host") => Some(Value::str("OpaqueRef:h1")),
                (_, "name_label") => Some(Value::str(format!("name-of-{x}"))),
                _ => None,
            }
        }
    }

    fn class(name: &str) -> &'static Class {
        model::class(name).unwrap()
    }

    /// `<noun>-list` of `record` with the default columns.
    fn listed(noun: &str, record: Value) -> String {
        let (subject, _) = commands::resolve(&format!("{noun}-list")).unwrap();
        let rows = rows(subject.class, &record, &defaults(noun, subject.class), &mut FakeRefs);
        format::block(&rows)
    }

    fn record(members: &[(&str, Value)]) -> Value {
        Value::Struct(members.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
    }

    #[test]
    fn every_default_column_is_a_field_or_a_computed_one() {
        for (noun, names) in DEFAULTS {
            let (subject, _) = commands::resolve(&format!("{noun}-list"))
                .unwrap_or_else(|| panic!("{noun}-list is not a command of this xe"));
            for name in *names {
                assert!(column(subject.class, name).is_some(), "{noun}-list: {name} names nothing");
            }
            let shown = defaults(noun, subject.class);
            assert_eq!(shown.len(), if names.is_empty() { subject.class.fields.len() } else { names.len() });
            assert_eq!(shown[0].name, "uuid", "--minimal prints the first column: {noun}");
        }
        let mut nouns: Vec<&str> = DEFAULTS.iter().map(|(n, _)| *n).collect();
        nouns.sort();
        nouns.dedup();
        assert_eq!(nouns.len(), DEFAULTS.len(), "a class is in the table twice");
    }

    #[test]
    fn computed_columns() {
        let vbd = class("VBD");
        assert_eq!(
            column(vbd, "vm-name-label").map(|c| c.source),
            Some(Source::RefNameLabel(vbd.field("VM").unwrap().0))
        );
        assert_eq!(column(vbd, "vdi-uuid").map(|c| c.source), Some(Source::Field(vbd.field("VDI").unwrap().0)));
        assert_eq!(column(class("SR"), "host").map(|c| c.source), Some(Source::SrHost));
        assert!(column(class("VDI"), "host").is_none());
        assert!(column(vbd, "device-name-label").is_none(), "only references have a name-label");
        assert!(column(vbd, "nothing").is_none());
    }

    #[test]
    fn vm_list_shows_uuid_name_label_and_power_state() {
        let vm = record(&[
            ("uuid", Value::str("u-vm")),
            ("name_label", Value::str("web1")),
            ("name_description", Value::str("not shown")),
            ("power_state", Value::str("Running")),
        ]);
        expect![[r#"
            uuid ( RO)           : u-vm
                 name-label ( RW): web1
                power-state ( RO): running

        "#]]
        .assert_eq(&listed("vm", vm.clone()));
        expect![[r#"
            uuid ( RO)                : u-vm
                      name-label ( RW): web1
                name-description ( RW): not shown

        "#]]
        .assert_eq(&listed("template", vm));
    }

    #[test]
    fn storage_lists_show_xe_columns() {
        let sr = record(&[
            ("uuid", Value::str("u-sr")),
            ("name_label", Value::str("Local storage")),
            ("name_description", Value::str("")),
            ("PBDs", Value::Array(vec![Value::str("OpaqueRef:p1")])),
            ("type", Value::str("ext")),
            ("content_type", Value::str("user")),
        ]);
        expect![[r#"
            uuid ( RO)                : u-sr
                      name-label ( RW): Local storage
                name-description ( RW): 
                            host ( RO): name-of-h1
                            type ( RO): ext
                    content-type ( RO): user

        "#]]
        .assert_eq(&listed("sr", sr));
        let shared = record(&[("PBDs", Value::Array(vec![Value::str("OpaqueRef:p1"), Value::str("OpaqueRef:p2")]))]);
        assert_eq!(listed("sr", shared), "host ( RO)    : <shared>\n\n");
        assert_eq!(listed("sr", record(&[("PBDs", Value::Array(vec![]))])), "host ( RO)    : <not in database>\n\n");
        let vdi = record(&[
            ("uuid", Value::str("u-vdi")),
            ("name_label", Value::str("disk")),
            ("name_description", Value::str("d")),
            ("SR", Value::str("OpaqueRef:sr1")),
            ("virtual_size", Value::Int(67108864)),
            ("sharable", Value::Bool(false)),
            ("read_only", Value::Bool(true)),
        ]);
        expect![[r#"
            uuid ( RO)                : u-vdi
                      name-label ( RW): disk
                name-description ( RW): d
                         sr-uuid ( RO): uuid-of-sr1
                    virtual-size ( RO): 67108864
                        sharable ( RW): false
                       read-only ( RW): true

        "#]]
        .assert_eq(&listed("vdi", vdi));
        let vbd = record(&[
            ("uuid", Value::str("u-vbd")),
            ("VM", Value::str("OpaqueRef:vm1")),
            ("VDI", Value::str("OpaqueRef:NULL")),
            ("device", Value::str("xvdd")),
            ("empty", Value::Bool(true)),
        ]);
        expect![[r#"
            uuid ( RO)             : u-vbd
                      vm-uuid ( RO): uuid-of-vm1
                vm-name-label ( RO): name-of-vm1
                     vdi-uuid ( RO): <not in database>
                        empty ( RO): true
                       device ( RO): xvdd

        "#]]
        .assert_eq(&listed("vbd", vbd));
        let pbd = record(&[
            ("uuid", Value::str("u-pbd")),
            ("host", Value::str("OpaqueRef:h1")),
            ("SR", Value::str("OpaqueRef:sr1")),
            ("device_config", Value::Struct(vec![("location".into(), Value::str("/srv"))])),
            ("currently_attached", Value::Bool(true)),
        ]);
        expect![[r#"
            uuid ( RO)                  : u-pbd
                         host-uuid ( RO): uuid-of-h1
                           sr-uuid ( RO): uuid-of-sr1
                     device-config (MRO): location: /srv
                currently-attached ( RO): true

        "#]]
        .assert_eq(&listed("pbd", pbd));
    }

    #[test]
    fn other_lists_show_xe_columns() {
        let vif = record(&[
            ("uuid", Value::str("u-vif")),
            ("device", Value::str("0")),
            ("network", Value::str("OpaqueRef:n1")),
            ("VM", Value::str("OpaqueRef:vm1")),
        ]);
        expect![[r#"
            uuid ( RO)            : u-vif
                     vm-uuid ( RO): uuid-of-vm1
                      device ( RO): 0
                network-uuid ( RO): uuid-of-n1

        "#]]
        .assert_eq(&listed("vif", vif));
        let pool = record(&[
            ("uuid", Value::str("u-pool")),
            ("name_label", Value::str("")),
            ("name_description", Value::str("")),
            ("master", Value::str("OpaqueRef:h1")),
            ("default_SR", Value::str("OpaqueRef:sr1")),
        ]);
        expect![[r#"
            uuid ( RO)                : u-pool
                      name-label ( RW): 
                name-description ( RW): 
                          master ( RO): uuid-of-h1
                      default-SR ( RW): uuid-of-sr1

        "#]]
        .assert_eq(&listed("pool", pool));
        let task = record(&[
            ("uuid", Value::str("u-task")),
            ("name_label", Value::str("VM.start")),
            ("name_description", Value::str("")),
            ("status", Value::str("pending")),
            ("progress", Value::Float(0.5)),
        ]);
        expect![[r#"
            uuid ( RO)                : u-task
                      name-label ( RO): VM.start
                name-description ( RO): 
                          status ( RW): pending
                        progress ( RW): 0.5

        "#]]
        .assert_eq(&listed("task", task));
    }
}
