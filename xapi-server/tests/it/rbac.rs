//! RBAC: for each of the six roles, a local user holding it calls a sample of messages from every class and is
//! allowed or denied (`RBAC_PERMISSION_DENIED`) exactly as the datamodel's role lists say; logins without a role
//! are refused; `session.get_rbac_permissions` says the same; the disk handlers are checked too.

use xapi_types::model::{self, MsgKind, Roles, Ty};
use xapi_types::{Message, Value};

use crate::support::{Api, s, xml_call};

const ROLES: [&str; 6] = ["pool-admin", "pool-operator", "vm-power-admin", "vm-admin", "vm-operator", "read-only"];

/// A user holding `role`, logged in over TCP: its session.
fn user_with(api: &Api, role: &str) -> Value {
    let name = format!("user-{role}");
    let other = Value::Struct(vec![("subject-name".into(), s(&name)), ("password".into(), s("pw"))]);
    let subject = api.ok("subject.create", &[Value::Struct(vec![("other_config".into(), other)])]);
    let r = api.ok("role.get_by_name_label", &[s(role)]);
    let r = r.as_array().and_then(|a| a.first()).cloned().expect("the role exists");
    api.ok("subject.add_to_roles", &[subject, r]);
    xml_call(api.d.addr, "session.login_with_password", &[s(&name), s("pw"), s("1.0"), s("rbac-test")]).unwrap()
}

/// Arguments of the right count, all empty strings (the RBAC check comes before the types are looked at).
fn dummy_args(session: &Value, m: &Message) -> Vec<Value> {
    let mut args = vec![session.clone()];
    args.extend(m.params.iter().skip(1).map(|_| s("")));
    args
}

/// Messages to try: of every class, `get_all_records`, the first setter and the first custom message on an
/// object (a bogus one: nothing happens whatever the answer).
fn sample() -> Vec<(&'static str, &'static Message)> {
    let mut out = Vec::new();
    for c in model::classes().iter().filter(|c| !matches!(c.name, "session" | "event")) {
        let live = |m: &&Message| m.lifecycle != model::Lifecycle::Removed && m.takes_session();
        let ms: Vec<&Message> = c.messages.iter().filter(live).collect();
        if let Some(m) = ms.iter().find(|m| m.kind == MsgKind::GetAllRecords) {
            out.push((c.name, *m));
        }
        if let Some(m) = ms.iter().find(|m| matches!(m.kind, MsgKind::Set(_))) {
            out.push((c.name, *m));
        }
        let on_object =
            |m: &&&Message| m.kind == MsgKind::Custom && matches!(m.params.get(1).map(|p| &p.ty), Some(Ty::Ref(_)));
        if let Some(m) = ms.iter().find(on_object) {
            out.push((c.name, *m));
        }
    }
    out
}

#[test]
fn each_role_may_call_exactly_what_the_datamodel_says() {
    let tmp = tempfile::tempdir().unwrap();
    let api = Api::start(tmp.path(), &["--libvirt-uri", "none"]);
    let messages = sample();
    assert!(messages.len() > 150, "a sample from every class: {}", messages.len());
    let mut denied_somewhere = 0;
    for role in ROLES {
        let sess = user_with(&api, role);
        let bit = Roles::NAMES.iter().position(|n| *n == role).unwrap();
        let mut wrong = Vec::new();
        for (class, m) in &messages {
            let method = format!("{class}.{}", m.name);
            let expected = m.roles.0 & (1 << bit) != 0;
            let got = match xml_call(api.d.addr, &method, &dummy_args(&sess, m)) {
                Err(e) if e[0] == "RBAC_PERMISSION_DENIED" => {
                    assert_eq!(e[1], method.to_lowercase(), "the permission's name");
                    false
                }
                Err(e) if e[0] == "SESSION_INVALID" => panic!("{role}: {method} ended the session: {e:?}"),
                _ => true,
            };
            if got != expected {
                wrong.push(format!("{method}: expected {}", if expected { "allowed" } else { "denied" }));
            }
            denied_somewhere += usize::from(!got);
        }
        assert!(wrong.is_empty(), "{role}: {wrong:#?}");
        // The session's permissions: the same list.
        let perms = xml_call(api.d.addr, "session.get_rbac_permissions", &[sess.clone(), sess.clone()]).unwrap();
        let perms: Vec<&str> = perms.as_array().unwrap().iter().filter_map(Value::as_str).collect();
        for (class, m) in &messages {
            let p = format!("{class}.{}", m.name).to_lowercase();
            assert_eq!(perms.contains(&p.as_str()), m.roles.0 & (1 << bit) != 0, "{role}: {p}");
        }
    }
    assert!(denied_somewhere > 100, "the sample exercises denials: {denied_somewhere}");
}

#[test]
fn users_without_a_role_and_the_disk_handlers() {
    let tmp = tempfile::tempdir().unwrap();
    let api = Api::start(tmp.path(), &["--libvirt-uri", "none"]);
    let other = Value::Struct(vec![("subject-name".into(), s("nobody")), ("password".into(), s("pw"))]);
    let subject = api.ok("subject.create", &[Value::Struct(vec![("other_config".into(), other)])]);
    // The password is not kept in the record.
    let rec = api.ok("subject.get_record", &[subject.clone()]);
    assert!(rec.get("other_config").unwrap().get("password").is_none(), "{rec:?}");
    assert_eq!(rec.get("subject_identifier"), Some(&s("local:nobody")));
    let refused = xml_call(api.d.addr, "session.login_with_password", &[s("nobody"), s("pw")]).unwrap_err();
    assert_eq!(refused[0], "SESSION_AUTHORIZATION_FAILED");
    let wrong = xml_call(api.d.addr, "session.login_with_password", &[s("nobody"), s("nope")]).unwrap_err();
    assert_eq!(wrong[0], "SESSION_AUTHENTICATION_FAILED");
    assert_eq!(
        api.call("subject.create", &[Value::Struct(vec![("subject_identifier".into(), s("local:nobody"))])])
            .unwrap_err()[0],
        "SUBJECT_ALREADY_EXISTS"
    );

    // A read-only user may export but not import; a vm-admin may import.
    let reader = user_with(&api, "read-only");
    let admin = user_with(&api, "vm-admin");
    let sr = api.ok("pool.get_default_SR", &[api.ok("pool.get_all", &[]).as_array().unwrap()[0].clone()]);
    let rec = Value::Struct(vec![
        ("SR".into(), sr),
        ("virtual_size".into(), s("2097152")),
        ("type".into(), s("user")),
        ("name_label".into(), s("d")),
        ("sharable".into(), Value::Bool(false)),
        ("read_only".into(), Value::Bool(false)),
        ("other_config".into(), Value::Struct(vec![])),
    ]);
    let vdi = api.ok("VDI.create", &[rec]);
    let put = |sess: &Value| {
        let target = format!("/import_raw_vdi?session_id={}&vdi={}", sess.as_str().unwrap(), vdi.as_str().unwrap());
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut r = agent.put(&format!("http://{}{target}", api.d.addr)).send(&[1u8; 4096][..]).unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default())
    };
    let (status, body) = put(&reader);
    assert_eq!(status, 403, "{body}");
    assert!(body.starts_with("RBAC_PERMISSION_DENIED http/put_import_raw_vdi"), "{body}");
    assert_eq!(put(&admin).0, 200);
    let get = |sess: &Value| {
        let target = format!("/export_raw_vdi?session_id={}&vdi={}", sess.as_str().unwrap(), vdi.as_str().unwrap());
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        agent.get(&format!("http://{}{target}", api.d.addr)).call().unwrap().status().as_u16()
    };
    assert_eq!(get(&admin), 200);
    // Removing the role takes effect at the next call.
    let r = api.ok("role.get_by_name_label", &[s("vm-admin")]).as_array().unwrap()[0].clone();
    let subject = api
        .ok("subject.get_all", &[])
        .as_array()
        .unwrap()
        .iter()
        .find(|x| api.ok("subject.get_subject_identifier", &[(*x).clone()]) == s("local:user-vm-admin"))
        .cloned()
        .unwrap();
    api.ok("subject.remove_from_roles", &[subject, r]);
    let denied = xml_call(api.d.addr, "VM.get_all", &[admin.clone()]).unwrap_err();
    assert_eq!(denied[0], "RBAC_PERMISSION_DENIED");
}

#[test]
fn map_keys_xapi_decides_per_key() {
    let tmp = tempfile::tempdir().unwrap();
    let api = Api::start(tmp.path(), &["--libvirt-uri", "none"]);
    let pool = api.ok("pool.get_all", &[]).as_array().unwrap()[0].clone();
    let vm = api.ok("VM.create", &[Value::Struct(vec![("name_label".into(), s("v"))])]);
    let operator = user_with(&api, "vm-operator");
    let admin = user_with(&api, "vm-admin");
    let call = |sess: &Value, m: &str, args: &[Value]| {
        let mut all = vec![sess.clone()];
        all.extend_from_slice(args);
        xml_call(api.d.addr, m, &all)
    };
    // XenCenter's folders: a vm-operator may file the pool into one, not write other keys.
    call(&operator, "pool.add_to_other_config", &[pool.clone(), s("folder"), s("/lab")]).unwrap();
    call(&operator, "pool.add_to_other_config", &[pool.clone(), s("XenCenter.CustomFields.owner"), s("me")]).unwrap();
    let e = call(&operator, "pool.add_to_other_config", &[pool.clone(), s("other"), s("x")]).unwrap_err();
    assert_eq!((e[0].as_str(), e[1].as_str()), ("RBAC_PERMISSION_DENIED", "pool.add_to_other_config"));
    // The refusal is in the audit log, with who it was.
    let log = std::fs::read_to_string(tmp.path().join("audit.log")).unwrap();
    let refused = log.lines().rev().find(|l| l.contains("pool.add_to_other_config")).unwrap();
    assert!(
        refused.contains("\"user\":\"user-vm-operator\"") && refused.contains("RBAC_PERMISSION_DENIED"),
        "{refused}"
    );
    // A VM's pci key is pool-admin's alone, although a vm-admin writes the rest of the map.
    call(&admin, "VM.add_to_other_config", &[vm.clone(), s("note"), s("x")]).unwrap();
    let e = call(&admin, "VM.add_to_other_config", &[vm.clone(), s("pci"), s("0/0000:00:02.0")]).unwrap_err();
    assert_eq!((e[0].as_str(), e[1].as_str()), ("RBAC_PERMISSION_DENIED", "vm.add_to_other_config/key:pci"));
    let e = call(&admin, "VM.remove_from_other_config", &[vm.clone(), s("pci")]).unwrap_err();
    assert_eq!(e[0], "RBAC_PERMISSION_DENIED");
    api.ok("VM.add_to_other_config", &[vm, s("pci"), s("0/0000:00:02.0")]);
}
