//! A call that returned success is on disk: `kill -9` right after it loses nothing, and a restart keeps every
//! object and ref.

use std::os::unix::fs::PermissionsExt;

use xapi_types::Value;

use crate::support::{Daemon, PASSWORD};

fn s(v: &str) -> Value {
    Value::str(v)
}

#[test]
fn kill_9_after_a_setter_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let sess = s(&d.login());
    let pool = d.xml("pool.get_all", &[sess.clone()]).unwrap().as_array().unwrap()[0].clone();
    let before = d.xml("VM.get_all_records", &[sess.clone()]).unwrap();
    let mut labels = Vec::new();
    for i in 0..20 {
        let label = format!("label {i}");
        d.xml("pool.set_name_label", &[sess.clone(), pool.clone(), s(&label)]).unwrap();
        let vm = d.xml("VM.create", &[sess.clone(), Value::Struct(vec![("name_label".into(), s(&label))])]).unwrap();
        labels.push((vm, label));
    }
    d.xml("pool.add_to_other_config", &[sess.clone(), pool.clone(), s("k"), s("v")]).unwrap();
    d.kill9();

    let d = Daemon::start(dir.path());
    // The session survived too.
    assert_eq!(d.xml("pool.get_name_label", &[sess.clone(), pool.clone()]), Ok(s("label 19")));
    assert_eq!(
        d.xml("pool.get_other_config", &[sess.clone(), pool.clone()]),
        Ok(Value::Struct(vec![("k".into(), s("v"))]))
    );
    for (vm, label) in &labels {
        assert_eq!(d.xml("VM.get_name_label", &[sess.clone(), vm.clone()]), Ok(s(label)));
    }
    // Objects from the first start keep their refs and records.
    let after = d.xml("VM.get_all_records", &[sess.clone()]).unwrap();
    for (r, record) in before.as_struct().unwrap() {
        assert_eq!(after.get(r), Some(record), "VM {r} after restart");
    }
    assert_eq!(d.xml("pool.get_all", &[sess.clone()]).unwrap().as_array().unwrap().len(), 1);
}

#[test]
fn a_generated_root_password_is_written_0600_and_works() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_xapi-server"))
        .args(["--data-dir", dir.path().to_str().unwrap(), "--http", &addr])
        .env_remove("XAPI_ROOT_PASSWORD")
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let file = dir.path().join("root-password");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let password = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert!(password.len() >= 16);
    let ok = crate::support::xml_call(addr.parse().unwrap(), "session.login_with_password", &[s("root"), s(&password)]);
    assert!(ok.is_ok(), "{ok:?}");
    let bad = crate::support::xml_call(addr.parse().unwrap(), "session.login_with_password", &[s("root"), s(PASSWORD)]);
    assert!(bad.is_err());
    // The database never holds the password itself.
    child.kill().unwrap();
    child.wait().unwrap();
    let db = std::fs::read(dir.path().join("xapi.db")).unwrap();
    let wal = std::fs::read(dir.path().join("xapi.db-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        assert!(!bytes.windows(password.len()).any(|w| w == password.as_bytes()), "password stored in clear");
    }
}
