//! Connection limits: a client address past `--connections-per-client` gets `429` and a closed connection, never
//! a hang; closing a connection makes room; the unix socket is not counted. `Async.` calls past
//! `--max-pending-tasks` get `TOO_MANY_PENDING_TASKS` and make no task; requests past
//! `--max-concurrent-requests` get `429`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::{Daemon, xml_call};

#[test]
fn a_client_past_its_connection_limit_gets_429() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(tmp.path(), &["--connections-per-client", "3"]);
    let login = || {
        xml_call(
            d.addr,
            "session.login_with_password",
            &[crate::support::s("root"), crate::support::s(crate::support::PASSWORD)],
        )
    };
    // Serving (the listener is bound before the daemon has started).
    assert!(login().is_ok());
    // The login's connection counts until the daemon has seen it close.
    std::thread::sleep(Duration::from_millis(700));
    let held: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(d.addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    for mut h in &held {
        // Accepted and waiting for a request: nothing to read (a refused one would read a 429).
        h.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut b = [0u8; 16];
        assert!(h.read(&mut b).is_err(), "a held connection was answered");
    }
    let mut extra = TcpStream::connect(d.addr).unwrap();
    extra.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = extra.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    let mut answer = String::new();
    let _ = extra.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 429 "), "{answer}");
    assert!(answer.contains("TOO_MANY_CONNECTIONS"), "{answer}");
    // One closed: room for a call.
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    let login = xml_call(
        d.addr,
        "session.login_with_password",
        &[crate::support::s("root"), crate::support::s(crate::support::PASSWORD)],
    );
    assert!(login.is_ok(), "{login:?}");
}

#[test]
fn async_calls_past_the_bound_get_too_many_pending_tasks() {
    use xapi_types::Value;
    let tmp = tempfile::tempdir().unwrap();
    let api = crate::support::Api::start(tmp.path(), &["--max-pending-tasks", "1", "--libvirt-uri", "none"]);
    let sr = api.ok("pool.get_default_SR", &[api.ok("pool.get_all", &[]).as_array().unwrap()[0].clone()]);
    let rec = Value::Struct(vec![
        ("SR".into(), sr.clone()),
        ("virtual_size".into(), crate::support::s(&(512u64 << 20).to_string())),
        ("type".into(), crate::support::s("user")),
        ("name_label".into(), crate::support::s("big")),
    ]);
    let vdi = api.ok("VDI.create", &[rec]);
    // 256 MiB of data, so that a copy takes a while.
    let data: Vec<u8> = (0..256u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let target = format!("/import_raw_vdi?session_id={}&vdi={}", api.sess.as_str().unwrap(), vdi.as_str().unwrap());
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    assert_eq!(agent.put(&format!("http://{}{target}", api.d.addr)).send(&data[..]).unwrap().status().as_u16(), 200);
    let tasks_before = api.ok("task.get_all", &[]).as_array().unwrap().len();
    let null = crate::support::s("OpaqueRef:NULL");
    let answers: Vec<_> =
        (0..4).map(|_| api.call("Async.VDI.copy", &[vdi.clone(), sr.clone(), null.clone(), null.clone()])).collect();
    let refused = answers.iter().filter(|a| matches!(a, Err(e) if e[0] == "TOO_MANY_PENDING_TASKS")).count();
    let started = answers.iter().filter(|a| a.is_ok()).count();
    assert!(started >= 1 && refused >= 1, "{answers:?}");
    // A refused call made no task.
    assert_eq!(api.ok("task.get_all", &[]).as_array().unwrap().len(), tasks_before + started);
}

#[test]
fn requests_past_the_concurrency_bound_get_429() {
    use xapi_types::Value;
    let tmp = tempfile::tempdir().unwrap();
    let api = crate::support::Api::start(tmp.path(), &["--max-concurrent-requests", "2", "--libvirt-uri", "none"]);
    let token = api
        .ok("event.from", &[Value::Array(vec![crate::support::s("pool")]), crate::support::s(""), Value::Float(0.0)]);
    let token = token.get("token").cloned().unwrap();
    // Two calls waiting in event.from hold both places.
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let (addr, sess, token) = (api.d.addr, api.sess.clone(), token.clone());
            std::thread::spawn(move || {
                xml_call(
                    addr,
                    "event.from",
                    &[sess, Value::Array(vec![crate::support::s("pool")]), token, Value::Float(3.0)],
                )
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    let mut c = TcpStream::connect(api.d.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = "<?xml version=\"1.0\"?><methodCall><methodName>pool.get_all</methodName><params></params></methodCall>";
    write!(c, "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len())
        .unwrap();
    let mut answer = String::new();
    let _ = c.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 429 "), "{answer}");
    assert!(answer.contains("TOO_MANY_REQUESTS"), "{answer}");
    for w in waiters {
        assert!(w.join().unwrap().is_ok());
    }
    assert!(api.call("pool.get_all", &[]).is_ok(), "room again once they answered");
}
