//! The generated datamodel tables, seen through the public `model` API only.

use xapi_types::model::{self, Lifecycle, Lit, MsgKind, Qualifier, Roles, Ty};

#[test]
fn counts() {
    let classes = model::classes();
    assert_eq!(classes.len(), 72);
    assert_eq!(classes.iter().map(|c| c.fields.len()).sum::<usize>(), 922);
    let messages = || classes.iter().flat_map(|c| c.messages.iter());
    assert_eq!(messages().filter(|m| !m.hidden).count(), 2007);
    assert_eq!(messages().filter(|m| m.hidden).count(), 125);
    assert_eq!(classes.iter().filter(|c| c.has_get_all_records()).count(), 63);
    assert_eq!(classes.iter().filter(|c| c.persistent).count(), 66);
    assert_eq!(xapi_types::generated::ENUMS.len(), 73);
    assert_eq!(xapi_types::generated::ERRORS.len(), 603 + 31);
    assert_eq!((xapi_types::generated::API_VERSION_MAJOR, xapi_types::generated::API_VERSION_MINOR), (2, 21));
}

#[test]
fn vm_power_state() {
    let vm = model::class("VM").expect("class VM");
    assert!(model::class("vm").is_none(), "wire names are case-sensitive");
    assert_eq!(model::class_ci("vm").map(|c| c.name), Some("VM"));
    assert!(vm.persistent);
    assert_eq!(vm.lifecycle, Lifecycle::Published);

    let (_, f) = vm.field("power_state").expect("VM.power_state");
    let Ty::Enum(e) = f.ty else { panic!("VM.power_state is {:?}", f.ty) };
    assert_eq!(e.name, "vm_power_state");
    assert_eq!(e, model::enum_def("vm_power_state").unwrap());
    assert!(e.values.contains(&"Halted") && e.values.contains(&"Running"));
    assert_eq!(f.default, Some(Lit::Str("Halted")));
    assert_eq!(f.qualifier, Qualifier::RoConstructor);
}

#[test]
fn vm_message_kinds() {
    let vm = model::class("VM").unwrap();
    let kind = |name: &str| vm.message(name).unwrap_or_else(|| panic!("VM.{name}")).kind;
    let field = |i: u16| vm.fields[usize::from(i)].name;

    assert_eq!(kind("get_record"), MsgKind::GetRecord);
    assert_eq!(kind("get_all_records"), MsgKind::GetAllRecords);
    let MsgKind::Set(i) = kind("set_name_label") else { panic!("VM.set_name_label is {:?}", kind("set_name_label")) };
    assert_eq!(field(i), "name_label");
    let MsgKind::SetAdd(i) = kind("add_tags") else { panic!("VM.add_tags is {:?}", kind("add_tags")) };
    assert_eq!(field(i), "tags");
    let MsgKind::MapAdd(i) = kind("add_to_other_config") else { panic!("VM.add_to_other_config") };
    assert_eq!(field(i), "other_config");
    assert_eq!(kind("start"), MsgKind::Custom);

    let where_ = vm.message("get_all_records_where").unwrap();
    assert!(where_.hidden && where_.implicit);
    assert_eq!(where_.kind, MsgKind::GetAllRecordsWhere);
    assert!(where_.takes_session());
    assert_eq!(where_.result.unwrap().spelling(), "(VM ref -> VM record) map");
}

#[test]
fn types_and_roles() {
    let vm = model::class("VM").unwrap();
    let start = vm.message("start").unwrap();
    assert_eq!(start.result, None);
    assert_eq!(start.params[1].ty, Ty::Ref("VM"));
    assert!(start.errors.contains(&"VM_BAD_POWER_STATE"));
    assert!(start.roles.contains("vm-operator") && !start.roles.contains("read-only"));
    assert!(vm.message("get_record").unwrap().roles.contains("read-only"));
    assert_eq!(Roles::NAMES.len(), 7);

    let (_, ops) = vm.field("current_operations").unwrap();
    assert_eq!(ops.ty.spelling(), "(string -> enum vm_operations) map");
    assert_eq!(ops.default, Some(Lit::Map(&[])));

    let login = model::class("session").unwrap().message("login_with_password").unwrap();
    assert!(!login.takes_session());
    assert_eq!(login.params.iter().filter(|p| !p.required).count(), 2);

    let from = model::class("event").unwrap().message("from").unwrap();
    assert_eq!(from.result, Some(Ty::EventBatch));
}

#[test]
fn error_codes() {
    let e = model::error_code("HANDLE_INVALID").expect("HANDLE_INVALID");
    assert_eq!(e.params, &["class", "handle"]);
    let undocumented = model::error_code("VM_IS_SNAPSHOT").expect("an undocumented code");
    assert!(undocumented.params.is_empty());
    for c in model::classes() {
        for m in c.messages {
            for e in m.errors {
                assert!(model::error_code(e).is_some(), "{}.{} names unknown error {e}", c.name, m.name);
            }
        }
    }
}

#[test]
fn relations_come_from_the_datamodel() {
    let rels = model::relations();
    let has = |many: &str, set: &str, one: &str, ptr: &str| {
        rels.iter().any(|r| r.many_class == many && r.many_field == set && r.one_class == one && r.one_field == ptr)
    };
    assert!(has("VM", "VBDs", "VBD", "VM"));
    assert!(has("SR", "VDIs", "VDI", "SR"));
    assert!(has("VDI", "VBDs", "VBD", "VDI"));
    assert!(has("VDI", "snapshots", "VDI", "snapshot_of"));
    assert!(has("VM", "snapshots", "VM", "snapshot_of"));
    assert!(has("VM", "children", "VM", "parent"));
    assert!(has("host", "resident_VMs", "VM", "resident_on"));
    assert!(has("host", "PBDs", "PBD", "host"));
    // Every pair is a read-only set whose pointer field points back at the set's class.
    for r in rels {
        let one = model::class(r.one_class).unwrap();
        let (_, ptr) = one.field(r.one_field).unwrap();
        assert_eq!(ptr.ty, Ty::Ref(r.many_class), "{r:?}");
    }
    assert_eq!(rels.len(), 53);
}
