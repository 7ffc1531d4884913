//! Staleness and sanity tests for the datamodel generator.
//!
//! * The committed Rust tables and SQL are exactly what `cargo xtask codegen` would write from the committed
//!   `xapi-types/model/datamodel.json`.
//! * When the upstream data (`../shared/xenapi`) is present, deriving from it gives the committed data file byte
//!   for byte; without it, only the committed data file is checked.
//! * The data file holds the whole XenAPI: the counts below are those of the upstream JSON.

use std::collections::BTreeSet;

use xtask::classify::Kind;
use xtask::codegen::{self, generate};
use xtask::datamodel::Datamodel;
use xtask::types::{Type, parse_default};
use xtask::{derive, stale_files, upstream_available, upstream_dir, workspace_root};

fn committed() -> (Datamodel, String) {
    codegen::load_committed(&workspace_root()).expect("the committed datamodel.json loads")
}

#[test]
fn generated_files_are_up_to_date() {
    let (dm, _) = committed();
    let output = generate(&dm).expect("the committed datamodel generates");
    let stale = stale_files(&workspace_root(), &output.files).unwrap();
    assert!(
        stale.is_empty(),
        "generated files are out of date with xapi-types/model/datamodel.json:\n  {}\nrun `cargo xtask codegen`",
        stale.join("\n  ")
    );
}

#[test]
fn datamodel_json_is_canonical_and_up_to_date() {
    let (dm, text) = committed();
    assert!(
        dm.to_json() == text,
        "xapi-types/model/datamodel.json is not in its canonical layout: run `cargo xtask codegen`"
    );
    let root = workspace_root();
    if upstream_available(&root) {
        let derived = derive::derive_from_dir(&upstream_dir(&root)).expect("the upstream data derives");
        assert!(
            derived.to_json() == text,
            "xapi-types/model/datamodel.json is out of date with {}: run `cargo xtask codegen`",
            upstream_dir(&root).display()
        );
    } else {
        println!(
            "{} not found: checked only the committed xapi-types/model/datamodel.json",
            upstream_dir(&root).display()
        );
    }
}

#[test]
fn counts() {
    let (dm, _) = committed();
    assert_eq!(dm.classes.len(), 72);
    assert_eq!(dm.classes.iter().map(|c| c.fields.len()).sum::<usize>(), 922);
    let messages = || dm.classes.iter().flat_map(|c| &c.messages);
    assert_eq!(messages().filter(|m| !m.hidden).count(), 2007);
    assert_eq!(messages().filter(|m| !m.hidden && m.implicit).count(), 1456);
    assert_eq!(
        messages().filter(|m| m.hidden).count(),
        63 + 62,
        "get_all_where everywhere, get_all_records_where but on message"
    );
    assert_eq!(dm.enums.len(), 73);
    assert_eq!(dm.errors.iter().filter(|e| e.documented).count(), 603);
    assert_eq!(dm.errors.iter().filter(|e| !e.documented).count(), 31);
    assert_eq!((dm.api_version.major, dm.api_version.minor), (2, 21));

    let non_persistent: BTreeSet<&str> = dm.classes.iter().filter(|c| !c.persistent).map(|c| c.name.as_str()).collect();
    let expected = ["auth", "data_source", "event", "probe_result", "sr_stat", "vdi_nbd_server_info"];
    assert_eq!(non_persistent, expected.into_iter().collect());
}

#[test]
fn every_type_and_default_parses() {
    let (dm, _) = committed();
    let enum_values = |name: &str| dm.enums.iter().find(|e| e.name == name).map(|e| e.values.clone());
    let mut defaults = 0;
    for c in &dm.classes {
        for f in &c.fields {
            let ty = Type::parse(&f.ty).unwrap_or_else(|e| panic!("{}.{}: {e:#}", c.name, f.name));
            if let Some(d) = &f.default {
                parse_default(d, &ty, &enum_values).unwrap_or_else(|e| panic!("{}.{}: {e:#}", c.name, f.name));
                defaults += 1;
            }
        }
        for m in &c.messages {
            for p in &m.params {
                Type::parse(&p.ty).unwrap_or_else(|e| panic!("{}.{}({}): {e:#}", c.name, m.name, p.name));
            }
            if m.result != "void" {
                Type::parse(&m.result).unwrap_or_else(|e| panic!("{}.{} result: {e:#}", c.name, m.name));
            }
        }
    }
    assert_eq!(defaults, 539);
}

#[test]
fn message_kinds() {
    let (dm, _) = committed();
    let output = generate(&dm).unwrap();
    let kinds = &output.stats.kinds;
    assert_eq!(kinds["GetRecord"], 66);
    assert_eq!(kinds["GetAllRecords"], 63);
    assert_eq!(kinds["GetAllWhere"], 63);
    assert_eq!(kinds["GetAllRecordsWhere"], 63);
    assert_eq!(kinds["Create"], 18);
    assert_eq!(kinds["Destroy"], 18);
    assert_eq!(kinds.values().sum::<usize>(), 2007 + 125);

    let vm = dm.classes.iter().find(|c| c.name == "VM").unwrap();
    let kind = |name: &str| {
        let m = vm.messages.iter().find(|m| m.name == name).unwrap();
        xtask::classify::classify(vm, m).unwrap()
    };
    let field = |name: &str| u16::try_from(vm.fields.iter().position(|f| f.name == name).unwrap()).unwrap();
    assert_eq!(kind("get_record"), Kind::GetRecord);
    assert_eq!(kind("get_power_state"), Kind::Get(field("power_state")));
    assert_eq!(kind("set_name_label"), Kind::Set(field("name_label")));
    assert_eq!(kind("add_tags"), Kind::SetAdd(field("tags")));
    assert_eq!(kind("remove_tags"), Kind::SetRemove(field("tags")));
    assert_eq!(kind("add_to_other_config"), Kind::MapAdd(field("other_config")));
    assert_eq!(kind("remove_from_other_config"), Kind::MapRemove(field("other_config")));
    assert_eq!(kind("start"), Kind::Custom);

    // Custom constructors and destructors need real behaviour.
    let sr = dm.classes.iter().find(|c| c.name == "SR").unwrap();
    for name in ["create", "destroy"] {
        let m = sr.messages.iter().find(|m| m.name == name).unwrap();
        assert_eq!(xtask::classify::classify(sr, m).unwrap(), Kind::Custom, "SR.{name}");
    }
}

#[test]
fn every_generated_file_has_the_header() {
    let (dm, _) = committed();
    for (path, text) in generate(&dm).unwrap().files {
        let marker = if path.ends_with(".sql") { "--" } else { "//!" };
        assert!(
            text.starts_with(&format!("{marker} {}\n", codegen::HEADER)),
            "{path} does not start with the generated-file header"
        );
    }
}
