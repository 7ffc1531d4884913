//! Local users and roles from xe: `subject-add`, `subject-role-add`, a login as that user over TCP, a call its
//! role does not allow, `subject-role-remove` and `subject-remove`; and `vm-memory-limits-set`.

use std::process::Command;

use super::start_daemon;

#[test]
fn a_user_with_a_role() {
    let dir = tempfile::tempdir().unwrap();
    let (_daemon, xe) = start_daemon(dir.path());
    let pwfile = dir.path().join("alice.pw");
    std::fs::write(&pwfile, "s3cret\n").unwrap();
    let alice = xe.val(&["subject-add", "subject-name=alice", &format!("password-file={}", pwfile.display())]);
    assert_eq!(alice.len(), 36, "{alice}");
    let as_alice = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_xe"))
            .args(["-s", "127.0.0.1", "-p", &xe.port.to_string(), "-u", "alice", "-pw", "s3cret"])
            .args(args)
            .output()
            .unwrap()
    };
    // No role yet: no login.
    let out = as_alice(&["vm-list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SESSION_AUTHORIZATION_FAILED"), "{out:?}");

    xe.ok(&["subject-role-add", &format!("uuid={alice}"), "role-name=read-only"]);
    let out = as_alice(&["vm-list", "--minimal"]);
    assert!(out.status.success(), "{out:?}");
    let pool = xe.val(&["pool-list", "--minimal"]);
    let out = as_alice(&["pool-param-set", &format!("uuid={pool}"), "name-label=mine"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("RBAC_PERMISSION_DENIED") && err.contains("pool.set_name_label"), "{err}");

    xe.ok(&["subject-role-add", &format!("uuid={alice}"), "role-name=pool-operator"]);
    assert!(as_alice(&["pool-param-set", &format!("uuid={pool}"), "name-label=mine"]).status.success());
    xe.ok(&["subject-role-remove", &format!("uuid={alice}"), "role-name=pool-operator"]);
    assert!(!as_alice(&["pool-param-set", &format!("uuid={pool}"), "name-label=again"]).status.success());
    let roles = xe.val(&["subject-param-get", &format!("uuid={alice}"), "param-name=roles"]);
    assert!(!roles.is_empty());
    xe.ok(&["subject-remove", &format!("subject-uuid={alice}")]);
    assert!(!as_alice(&["vm-list"]).status.success());
    assert!(xe.err(&["subject-role-add", &format!("uuid={alice}"), "role-name=read-only"]).contains("uuid"));
}

#[test]
fn vm_memory_limits_set() {
    let dir = tempfile::tempdir().unwrap();
    let (_daemon, xe) = start_daemon(dir.path());
    let vm = xe.val(&["vm-install", "template=Other install media", "new-name-label=mem"]);
    let on = format!("uuid={vm}");
    xe.ok(&[
        "vm-memory-limits-set",
        &on,
        "static-min=128MiB",
        "static-max=1GiB",
        "dynamic-min=256MiB",
        "dynamic-max=512MiB",
    ]);
    assert_eq!(xe.val(&["vm-param-get", &on, "param-name=memory-static-max"]), (1u64 << 30).to_string());
    assert_eq!(xe.val(&["vm-param-get", &on, "param-name=memory-dynamic-min"]), (256u64 << 20).to_string());
    let err = xe.err(&[
        "vm-memory-limits-set",
        &on,
        "static-min=1GiB",
        "static-max=512MiB",
        "dynamic-min=1GiB",
        "dynamic-max=1GiB",
    ]);
    assert!(err.contains("MEMORY_CONSTRAINT_VIOLATION") || err.contains("static_min <= dynamic_min"), "{err}");
    assert_eq!(xe.val(&["vm-param-get", &on, "param-name=memory-static-max"]), (1u64 << 30).to_string(), "unchanged");
}
