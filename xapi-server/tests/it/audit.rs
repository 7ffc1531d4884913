//! The audit log (`DATA_DIR/audit.log`): one JSON line per state-changing call, with who, what, on which object
//! and the result; plain reads are not in it, and no secret (a session ref, a password) ever is.

use xapi_types::Value;

use crate::support::{Api, PASSWORD, s};

fn lines(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("audit.log")).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect()
}

#[test]
fn state_changing_calls_are_audited() {
    let tmp = tempfile::tempdir().unwrap();
    let api = Api::start(tmp.path(), &[]);
    let rec = Value::Struct(vec![("name_label".into(), s("audited"))]);
    let vm = api.ok("VM.create", &[rec]);
    let uuid = api.ok("VM.get_uuid", &[vm.clone()]);
    api.ok("VM.set_name_label", &[vm.clone(), s("renamed")]);
    api.ok("VM.get_record", &[vm.clone()]);
    let bogus = s("OpaqueRef:00000000-dead-beef-0000-000000000000");
    assert!(api.call("VM.destroy", &[bogus]).is_err());
    api.ok("VM.destroy", &[vm.clone()]);
    let session_uuid = api.ok("session.get_uuid", &[api.sess.clone()]);
    api.ok("session.logout", &[]);

    let log = lines(tmp.path());
    let calls: Vec<&str> = log.iter().map(|l| l["call"].as_str().unwrap()).collect();
    // The login (by the test harness) first; no reads.
    assert_eq!(
        calls,
        ["session.login_with_password", "VM.create", "VM.set_name_label", "VM.destroy", "VM.destroy", "session.logout"],
        "{log:#?}"
    );
    assert_eq!(log[0]["user"], "root");
    assert_eq!(log[0]["result"], "ok");
    for l in &log[1..] {
        assert_eq!(l["user"], "root", "{l}");
        assert_eq!(l["session"], session_uuid.as_str().unwrap(), "{l}");
        assert!(l["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{l}");
    }
    assert_eq!(log[2]["class"], "VM");
    assert_eq!(log[2]["object"], uuid.as_str().unwrap());
    assert_eq!(log[3]["result"], "error");
    assert_eq!(log[3]["error"][0], "HANDLE_INVALID");
    // The destroyed VM is named by the UUID it had.
    assert_eq!((log[4]["object"].as_str(), log[4]["result"].as_str()), (uuid.as_str(), Some("ok")));
    let text = std::fs::read_to_string(tmp.path().join("audit.log")).unwrap();
    assert!(!text.contains(api.sess.as_str().unwrap()), "a session ref is a secret");
    assert!(!text.contains(PASSWORD));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(tmp.path().join("audit.log")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}
