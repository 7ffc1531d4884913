//! The daemon through its wire protocols: exact bytes, every error code of the generic machinery, and records
//! with exactly the datamodel's fields for every class.

use expect_test::expect;
use xapi_types::model::{self, Lifecycle};
use xapi_types::{MsgKind, Value};

use crate::support::{Daemon, PASSWORD, err, json_call, post, xml_call};

fn daemon() -> (tempfile::TempDir, Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    (dir, d)
}

fn s(v: &str) -> Value {
    Value::str(v)
}

#[test]
fn first_start_describes_this_host() {
    let (_dir, d) = daemon();
    let session = d.login();
    let pools = d.xml("pool.get_all_records", &[s(&session)]).unwrap();
    let pools = pools.as_struct().unwrap();
    assert_eq!(pools.len(), 1);
    let master = pools[0].1.get("master").unwrap().as_str().unwrap().to_string();
    let host = d.xml("host.get_record", &[s(&session), s(&master)]).unwrap();
    // int64 travel as bare XML-RPC values, so clients see strings.
    assert_eq!(host.get("API_version_major"), Some(&s("2")));
    assert_eq!(host.get("API_version_minor"), Some(&s("21")));
    let sv = host.get("software_version").unwrap();
    for key in ["product_version", "product_brand", "platform_version", "xapi", "build_number", "hostname"] {
        assert!(sv.get(key).is_some(), "software_version has {key}");
    }
    let cpus = d.xml("host_cpu.get_all", &[s(&session)]).unwrap();
    assert_eq!(cpus.as_array().unwrap().len(), std::thread::available_parallelism().unwrap().get());
    let vms = d.xml("VM.get_all_records", &[s(&session)]).unwrap();
    let dom0: Vec<_> = vms
        .as_struct()
        .unwrap()
        .iter()
        .filter(|(_, r)| r.get("is_control_domain") == Some(&Value::Bool(true)))
        .collect();
    assert_eq!(dom0.len(), 1);
    assert_eq!(dom0[0].1.get("power_state"), Some(&s("Running")));
    assert_eq!(dom0[0].1.get("resident_on"), Some(&s(&master)));
    let roles = d.xml("role.get_all_records", &[s(&session)]).unwrap();
    let mut names: Vec<_> =
        roles.as_struct().unwrap().iter().map(|(_, r)| r.get("name_label").unwrap().clone()).collect();
    names.sort_by_key(|v| v.as_str().unwrap().to_string());
    let want = ["pool-admin", "pool-operator", "read-only", "vm-admin", "vm-operator", "vm-power-admin"];
    assert_eq!(names, want.map(s));
    let metrics = d.xml("host.get_metrics", &[s(&session), s(&master)]).unwrap();
    let live = d.xml("host_metrics.get_live", &[s(&session), metrics]).unwrap();
    assert_eq!(live, Value::Bool(true));
}

/// Every class with `get_all_records` answers it, over both protocols, and every record has exactly the
/// datamodel's field names — including records of classes made with the generic `create`.
#[test]
fn every_class_answers_get_all_records_with_the_datamodel_fields() {
    let (_dir, d) = daemon();
    let session = d.login();
    let mut created = 0;
    for class in model::classes()
        .iter()
        .filter(|c| c.message("create").is_some_and(|m| m.kind == MsgKind::Create && m.lifecycle != Lifecycle::Removed))
    {
        let r = d.xml(&format!("{}.create", class.name), &[s(&session), Value::Struct(vec![])]);
        match class.name {
            // Storage objects need what they stand on (an SR, a VM, a host); an empty record is refused.
            "VDI" => assert_eq!(r.unwrap_err()[0], "INVALID_VALUE", "VDI.create"),
            "VBD" | "PBD" => assert_eq!(r.unwrap_err()[0], "HANDLE_INVALID", "{}.create", class.name),
            // Subjects are local users: a name is needed.
            "subject" => assert_eq!(r.unwrap_err()[0], "AUTH_SERVICE_ERROR", "subject.create"),
            _ => assert!(r.is_ok(), "{}.create: {r:?}", class.name),
        }
        created += 1;
    }
    assert_eq!(created, 17, "classes with a generic, not removed, create");
    let mut classes = 0;
    for class in model::classes().iter().filter(|c| c.has_get_all_records()) {
        classes += 1;
        let want: Vec<&str> = class.fields.iter().map(|f| f.name).collect();
        for call in [xml_call, json_call] {
            let all = call(d.addr, &format!("{}.get_all_records", class.name), &[s(&session)]);
            let all = all.unwrap_or_else(|e| panic!("{}.get_all_records: {e:?}", class.name));
            for (r, record) in all.as_struct().unwrap() {
                let have: Vec<&str> = record.as_struct().unwrap().iter().map(|(k, _)| k.as_str()).collect();
                assert_eq!(have, want, "fields of {} {r}", class.name);
            }
        }
    }
    assert_eq!(classes, 63);
}

#[test]
fn generic_errors_are_xapis() {
    let (_dir, d) = daemon();
    let session = d.login();
    let sess = s(&session);
    let zero = "00000000-0000-0000-0000-000000000000";
    for call in [xml_call, json_call] {
        let a = d.addr;
        assert_eq!(call(a, "VM.get_by_uuid", &[sess.clone(), s(zero)]), err("UUID_INVALID", &["VM", zero]));
        assert_eq!(
            call(a, "VM.get_record", &[sess.clone(), s("OpaqueRef:nonsense")]),
            err("HANDLE_INVALID", &["VM", "OpaqueRef:nonsense"])
        );
        assert_eq!(call(a, "VM.no_such", &[sess.clone()]), err("MESSAGE_METHOD_UNKNOWN", &["VM.no_such"]));
        assert_eq!(call(a, "Nope.get_all", &[sess.clone()]), err("MESSAGE_METHOD_UNKNOWN", &["Nope.get_all"]));
        assert_eq!(
            call(a, "VM.get_name_label", &[sess.clone()]),
            err("MESSAGE_PARAMETER_COUNT_MISMATCH", &["VM.get_name_label", "2", "1"])
        );
        assert_eq!(call(a, "VM.get_all", &[s("OpaqueRef:bogus")]), err("SESSION_INVALID", &["OpaqueRef:bogus"]));
        assert_eq!(
            call(a, "session.login_with_password", &[s("root"), s("wrong")]),
            err("SESSION_AUTHENTICATION_FAILED", &[])
        );
        let pool = call(a, "pool.get_all", &[sess.clone()]).unwrap().as_array().unwrap()[0].clone();
        assert_eq!(
            call(a, "pool.set_ha_allow_overcommit", &[sess.clone(), pool.clone(), s("notabool")]),
            err("FIELD_TYPE_ERROR", &["value"])
        );
        assert_eq!(
            call(a, "pool.enable_ha", &[sess.clone(), Value::Array(vec![]), Value::Struct(vec![])]),
            err("NOT_IMPLEMENTED", &["pool.enable_ha"])
        );
    }
    let removed = model::classes()
        .iter()
        .find_map(|c| {
            c.messages
                .iter()
                .find(|m| m.lifecycle == Lifecycle::Removed && m.kind == MsgKind::Custom)
                .map(|m| format!("{}.{}", c.name, m.name))
        })
        .expect("the datamodel has removed messages");
    assert_eq!(xml_call(d.addr, &removed, &[sess.clone()]), err("MESSAGE_REMOVED", &[]));
}

#[test]
fn setters_maps_sets_and_where() {
    let (_dir, d) = daemon();
    let sess = s(&d.login());
    let dom0 = d.xml("VM.get_all_records_where", &[sess.clone(), s(r#"field "is_control_domain"="true""#)]).unwrap();
    let dom0 = dom0.as_struct().unwrap();
    assert_eq!(dom0.len(), 1);
    let (vm, record) = (s(&dom0[0].0), &dom0[0].1);
    let uuid = record.get("uuid").unwrap().as_str().unwrap().to_string();
    d.xml("VM.set_name_description", &[sess.clone(), vm.clone(), s("described")]).unwrap();
    assert_eq!(d.xml("VM.get_name_description", &[sess.clone(), vm.clone()]), Ok(s("described")));
    d.xml("VM.add_to_other_config", &[sess.clone(), vm.clone(), s("k"), s("v")]).unwrap();
    assert_eq!(
        d.xml("VM.add_to_other_config", &[sess.clone(), vm.clone(), s("k"), s("w")]),
        err("MAP_DUPLICATE_KEY", &["VM", "other_config", &uuid, "k"])
    );
    assert_eq!(
        d.xml("VM.get_other_config", &[sess.clone(), vm.clone()]),
        Ok(Value::Struct(vec![("k".into(), s("v"))]))
    );
    d.xml("VM.remove_from_other_config", &[sess.clone(), vm.clone(), s("k")]).unwrap();
    assert_eq!(d.xml("VM.get_other_config", &[sess.clone(), vm.clone()]), Ok(Value::Struct(vec![])));
    d.xml("VM.add_tags", &[sess.clone(), vm.clone(), s("web")]).unwrap();
    d.xml("VM.add_tags", &[sess.clone(), vm.clone(), s("web")]).unwrap();
    assert_eq!(d.xml("VM.get_tags", &[sess.clone(), vm.clone()]), Ok(Value::Array(vec![s("web")])));
    d.xml("VM.remove_tags", &[sess.clone(), vm.clone(), s("web")]).unwrap();
    assert_eq!(d.xml("VM.get_tags", &[sess.clone(), vm.clone()]), Ok(Value::Array(vec![])));
    assert_eq!(
        d.xml("VM.get_all_where", &[sess.clone(), s(r#"field "name__description"="described""#)]),
        Ok(Value::Array(vec![vm.clone()]))
    );
    assert_eq!(d.xml("VM.get_by_uuid", &[sess.clone(), s(&uuid)]), Ok(vm.clone()));
    let label = d.xml("VM.get_name_label", &[sess.clone(), vm.clone()]).unwrap();
    assert_eq!(d.xml("VM.get_by_name_label", &[sess.clone(), label]), Ok(Value::Array(vec![vm.clone()])));
    assert!(matches!(
        d.xml("VM.get_all_records_where", &[sess.clone(), s("field \"nope\"=\"x\"")]),
        Err(e) if e[0] == "INVALID_VALUE"
    ));
    // A created VM takes the datamodel's defaults and the constructor fields it was given.
    let rec = Value::Struct(vec![("name_label".into(), s("new")), ("memory_static_max".into(), s("1073741824"))]);
    let new = d.xml("VM.create", &[sess.clone(), rec]).unwrap();
    let got = d.xml("VM.get_record", &[sess.clone(), new.clone()]).unwrap();
    assert_eq!(got.get("name_label"), Some(&s("new")));
    assert_eq!(got.get("memory_static_max"), Some(&s("1073741824")));
    assert_eq!(got.get("power_state"), Some(&s("Halted")));
    assert_eq!(json_call(d.addr, "VM.get_memory_static_max", &[sess.clone(), new]), Ok(Value::Int(1 << 30)));
}

#[test]
fn wire_bytes_are_xapis() {
    let (_dir, d) = daemon();
    let r = post(
        d.addr,
        "/RPC2",
        "text/xml",
        b"<?xml version='1.0'?>\n<methodCall>\n<methodName>VM.get_all</methodName>\n<params>\n<param>\n\
          <value><string>OpaqueRef:bad</string></value>\n</param>\n</params>\n</methodCall>\n",
    );
    assert_eq!((r.status, r.content_type.as_str()), (200, "text/xml"));
    expect![[r#"<?xml version="1.0"?><methodResponse><params><param><value><struct><member><name>Status</name><value>Failure</value></member><member><name>ErrorDescription</name><value><array><data><value>SESSION_INVALID</value><value>OpaqueRef:bad</value></data></array></value></member></struct></value></param></params></methodResponse>"#]]
    .assert_eq(&r.body);
    // Xen Orchestra's style: bare strings, no whitespace, to /xmlrpc.
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><methodCall><methodName>session.login_with_password</methodName>\
         <params><param><value>root</value></param><param><value>{PASSWORD}</value></param></params></methodCall>"
    );
    let r = post(d.addr, "/xmlrpc", "text/xml", body.as_bytes());
    assert!(r.body.contains("<value>Success</value>") && r.body.contains("OpaqueRef:"), "{}", r.body);
    let r = post(
        d.addr,
        "/jsonrpc",
        "application/json",
        br#"{"jsonrpc":"2.0","method":"VM.get_all","params":["x"],"id":0}"#,
    );
    assert_eq!((r.status, r.content_type.as_str()), (200, "application/json"));
    expect![[r#"{"jsonrpc":"2.0","error":{"code":1,"message":"SESSION_INVALID","data":["x"]},"id":0}"#]]
        .assert_eq(&r.body);
    let r = post(d.addr, "/jsonrpc", "application/json", br#"{"method":"VM.get_all","params":["x"],"id":"a"}"#);
    expect![[r#"{"result":null,"error":["SESSION_INVALID","x"],"id":"a"}"#]].assert_eq(&r.body);
    let r = post(
        d.addr,
        "/jsonrpc",
        "application/json",
        format!(r#"{{"jsonrpc":"2.0","method":"session.login_with_password","params":["root","{PASSWORD}"],"id":1}}"#)
            .as_bytes(),
    );
    assert!(r.body.starts_with(r#"{"jsonrpc":"2.0","result":"OpaqueRef:"#) && !r.body.contains("error"), "{}", r.body);
    // system.listMethods is not wrapped in Status/Value.
    let r = post(
        d.addr,
        "/",
        "text/xml",
        b"<?xml version=\"1.0\"?><methodCall><methodName>system.listMethods</methodName><params/></methodCall>",
    );
    assert!(r.body.starts_with(
        "<?xml version=\"1.0\"?><methodResponse><params><param><value><array><data><value>system.listMethods</value>"
    ), "{}", &r.body[..200]);
    assert!(r.body.contains("<value>VM.get_all_records</value>"));
    // Malformed requests get a failure in the protocol's own form, not an HTML page.
    let r = post(d.addr, "/", "text/xml", b"<methodCall><methodName>VM.get_all</methodName><params><param>");
    assert_eq!((r.status, r.content_type.as_str()), (200, "text/xml"));
    assert!(r.body.contains("<value>XMLRPC_UNMARSHAL_FAILURE</value>"), "{}", r.body);
    let r = post(d.addr, "/jsonrpc", "application/json", b"{\"method\":");
    assert_eq!((r.status, r.content_type.as_str()), (200, "application/json"));
    assert!(r.body.contains("XMLRPC_UNMARSHAL_FAILURE"), "{}", r.body);
}

#[test]
fn sessions_log_out_and_passwords_change() {
    let (_dir, d) = daemon();
    let session = d.login();
    let sess = s(&session);
    assert_eq!(d.xml("session.get_is_local_superuser", &[sess.clone(), sess.clone()]), Ok(Value::Bool(true)));
    let perms = d.xml("session.get_rbac_permissions", &[sess.clone(), sess.clone()]).unwrap();
    assert!(perms.as_array().unwrap().contains(&s("vm.get_all_records")));
    let host = d.xml("session.get_this_host", &[sess.clone(), sess.clone()]).unwrap();
    assert!(d.xml("host.get_servertime", &[sess.clone(), host]).is_ok());
    // Four parameters, as the Python SDK sends them.
    let other = d.xml("session.login_with_password", &[s("root"), s(PASSWORD), s("2.21"), s("tests")]).unwrap();
    assert_eq!(d.xml("session.get_originator", &[other.clone(), other.clone()]), Ok(s("tests")));
    d.xml("session.change_password", &[sess.clone(), s(PASSWORD), s("new-password")]).unwrap();
    assert!(d.xml("session.login_with_password", &[s("root"), s("new-password")]).is_ok());
    assert_eq!(
        d.xml("session.login_with_password", &[s("root"), s(PASSWORD)]),
        err("SESSION_AUTHENTICATION_FAILED", &[])
    );
    d.xml("session.logout", &[sess.clone()]).unwrap();
    assert_eq!(d.xml("VM.get_all", &[sess.clone()]), err("SESSION_INVALID", &[&session]));
    assert!(d.xml("VM.get_all", &[other]).is_ok(), "other sessions live on");
}

/// On the unix socket, root (peer uid 0) logs in without a password, as on XenServer; anyone else needs one.
#[test]
fn local_root_needs_no_password_on_the_unix_socket() {
    use std::io::{Read, Write};
    use std::os::unix::fs::MetadataExt;

    let (dir, d) = daemon();
    let body = xapi_types::wire::xmlrpc::write_call("session.login_with_password", &[s("root"), s("not-the-password")]);
    let mut stream = std::os::unix::net::UnixStream::connect(dir.path().join("xapi")).unwrap();
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: _var_lib_xcp_xapi\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(&body).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    let result = xapi_types::wire::xmlrpc::parse_result(body.as_bytes()).unwrap();
    // /proc/self belongs to the effective uid of this process.
    let root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
    if root {
        assert!(result.is_ok_and(|r| r.as_str().unwrap().starts_with("OpaqueRef:")));
    } else {
        assert_eq!(result, err("SESSION_AUTHENTICATION_FAILED", &[]));
    }
    // Over TCP the password is always checked.
    assert_eq!(
        xml_call(d.addr, "session.login_with_password", &[s("root"), s("not-the-password")]),
        err("SESSION_AUTHENTICATION_FAILED", &[])
    );
}

/// Large record sets are streamed in chunks; what arrives is the same as the records one by one.
#[test]
fn large_get_all_records_streams_whole_records() {
    let (_dir, d) = daemon();
    let sess = s(&d.login());
    let other_config = Value::Struct(vec![("padding".into(), s(&"x".repeat(4000)))]);
    for i in 0..150 {
        let rec = Value::Struct(vec![
            ("name_label".into(), s(&format!("vm {i}"))),
            ("other_config".into(), other_config.clone()),
        ]);
        d.xml("VM.create", &[sess.clone(), rec]).unwrap();
    }
    for call in [xml_call, json_call] {
        let all = call(d.addr, "VM.get_all_records", &[sess.clone()]).unwrap();
        let all = all.as_struct().unwrap();
        assert_eq!(all.len(), 153, "150, the control domain and the two default templates");
        for (r, record) in all.iter().step_by(37) {
            assert_eq!(call(d.addr, "VM.get_record", &[sess.clone(), s(r)]).as_ref(), Ok(record));
        }
    }
}

#[test]
fn idle_sessions_expire() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(dir.path(), &["--session-idle-timeout", "1"]);
    let idle = d.login();
    let busy = d.login();
    for _ in 0..6 {
        std::thread::sleep(std::time::Duration::from_millis(500));
        assert!(d.xml("pool.get_all", &[s(&busy)]).is_ok(), "a session in use stays alive");
    }
    assert_eq!(d.xml("pool.get_all", &[s(&idle)]), err("SESSION_INVALID", &[&idle]));
}
