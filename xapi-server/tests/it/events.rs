//! `event.from`, `event.inject`, the legacy `event.next`, tasks and `Async.` calls, through real HTTP.

use std::time::{Duration, Instant};

use xapi_types::Value;
use xapi_types::model;

use crate::support::{Daemon, err, json_call, post, xml_call};

fn s(v: &str) -> Value {
    Value::str(v)
}

fn subs(classes: &[&str]) -> Value {
    Value::Array(classes.iter().map(|c| s(c)).collect())
}

fn daemon_with(args: &[&str]) -> (tempfile::TempDir, Daemon, Value) {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(dir.path(), args);
    let sess = s(&d.login());
    (dir, d, sess)
}

/// An event as (class, operation, ref, snapshot).
type Event = (String, String, String, Option<Value>);

/// `event.from` → (events, token).
fn from(d: &Daemon, sess: &Value, classes: &[&str], token: &str, timeout: f64) -> (Vec<Event>, String) {
    let batch = d.xml("event.from", &[sess.clone(), subs(classes), s(token), Value::Float(timeout)]).unwrap();
    let events = batch
        .get("events")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let f = |k: &str| e.get(k).unwrap().as_str().unwrap().to_string();
            (f("class"), f("operation"), f("ref"), e.get("snapshot").cloned())
        })
        .collect();
    (events, batch.get("token").unwrap().as_str().unwrap().to_string())
}

fn new_vm(d: &Daemon, sess: &Value, label: &str) -> Value {
    d.xml("VM.create", &[sess.clone(), Value::Struct(vec![("name_label".into(), s(label))])]).unwrap()
}

#[test]
fn an_empty_token_answers_every_object_as_add_in_one_batch() {
    let (_dir, d, sess) = daemon_with(&[]);
    let (events, token) = from(&d, &sess, &["*"], "", 30.0);
    assert!(events.iter().all(|e| e.1 == "add" && e.3.is_some()));
    let mut want = 0;
    for class in model::classes().iter().filter(|c| c.persistent && c.name != "session") {
        let n = events.iter().filter(|e| e.0 == class.name.to_lowercase()).count();
        if class.has_get_all_records() {
            let all = d.xml(&format!("{}.get_all", class.name), &[sess.clone()]).unwrap();
            assert_eq!(n, all.as_array().unwrap().len(), "{}", class.name);
        }
        want += n;
    }
    assert_eq!(events.len(), want);
    assert!(events.iter().any(|e| e.0 == "vm") && events.iter().any(|e| e.0 == "host_cpu"));
    // Snapshots are the records get_record gives.
    let (_, _, r, snap) = events.iter().find(|e| e.0 == "host").unwrap();
    assert_eq!(d.xml("host.get_record", &[sess.clone(), s(r)]).as_ref(), Ok(snap.as_ref().unwrap()));
    assert_eq!(token.len(), 41);
    assert_eq!(&token[20..], ",00000000000000000000");
    // valid_ref_counts covers every table, as <i4>.
    let body =
        xapi_types::wire::xmlrpc::write_call("event.from", &[sess.clone(), subs(&["vm"]), s(""), Value::Float(1.0)]);
    let raw = post(d.addr, "/", "text/xml", &body).body;
    assert!(raw.contains("<member><name>vm</name><value><i4>"), "{}", &raw[raw.len().saturating_sub(500)..]);
    assert!(raw.contains("<member><name>host_cpu</name><value><i4>"));
    assert!(raw.contains("<member><name>sr</name><value><i4>1</i4></value>"), "Local storage");
}

#[test]
fn changes_since_a_token_are_one_event_per_object_with_the_latest_record() {
    let (_dir, d, sess) = daemon_with(&[]);
    let (_, token) = from(&d, &sess, &["vm", "pool"], "", 0.0);
    let vm = new_vm(&d, &sess, "first");
    d.xml("VM.set_name_label", &[sess.clone(), vm.clone(), s("second")]).unwrap();
    d.xml("VM.set_name_label", &[sess.clone(), vm.clone(), s("third")]).unwrap();
    let pool = d.xml("pool.get_all", &[sess.clone()]).unwrap().as_array().unwrap()[0].clone();
    d.xml("pool.set_name_label", &[sess.clone(), pool.clone(), s("p")]).unwrap();
    let (events, token2) = from(&d, &sess, &["vm", "pool"], &token, 0.0);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!((events[0].0.as_str(), events[0].1.as_str()), ("vm", "add"));
    assert_eq!(events[0].3.as_ref().unwrap().get("name_label"), Some(&s("third")));
    assert_eq!((events[1].0.as_str(), events[1].1.as_str()), ("pool", "mod"));
    assert!(token2 > token);
    d.xml("VM.set_name_label", &[sess.clone(), vm.clone(), s("fourth")]).unwrap();
    d.xml("VM.destroy", &[sess.clone(), vm.clone()]).unwrap();
    let (events, token3) = from(&d, &sess, &["VM"], &token2, 0.0);
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].1.as_str(), events[0].2.as_str(), events[0].3.is_none()),
        ("del", vm.as_str().unwrap(), true)
    );
    // Nothing new: an empty batch at the timeout, with a token that does not go backwards.
    let t0 = Instant::now();
    let (events, token4) = from(&d, &sess, &["vm"], &token3, 0.3);
    let waited = t0.elapsed();
    assert!(events.is_empty());
    assert!(token4 >= token3);
    assert!(waited >= Duration::from_millis(280) && waited < Duration::from_millis(1500), "{waited:?}");
}

#[test]
fn a_blocked_call_answers_as_soon_as_a_matching_change_commits() {
    let (_dir, d, sess) = daemon_with(&[]);
    let (_, token) = from(&d, &sess, &["vm"], "", 0.0);
    let addr = d.addr;
    let sess2 = sess.clone();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        // A change to another class does not wake a VM watcher with an answer.
        let pool = xml_call(addr, "pool.get_all", &[sess2.clone()]).unwrap().as_array().unwrap()[0].clone();
        xml_call(addr, "pool.set_name_label", &[sess2.clone(), pool, s("x")]).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let vm = xml_call(addr, "VM.create", &[sess2.clone(), Value::Struct(vec![])]).unwrap();
        (Instant::now(), vm)
    });
    let (events, _) = from(&d, &sess, &["vm"], &token, 10.0);
    let answered = Instant::now();
    let (written, vm) = writer.join().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].2, vm.as_str().unwrap());
    assert!(answered.duration_since(written) < Duration::from_millis(500));
}

#[test]
fn one_object_subscriptions_and_bad_input() {
    let (_dir, d, sess) = daemon_with(&[]);
    let (a, b) = (new_vm(&d, &sess, "a"), new_vm(&d, &sess, "b"));
    let (_, token) = from(&d, &sess, &["vm"], "", 0.0);
    d.xml("VM.set_name_label", &[sess.clone(), a.clone(), s("a2")]).unwrap();
    d.xml("VM.set_name_label", &[sess.clone(), b.clone(), s("b2")]).unwrap();
    let one = format!("vm/{}", b.as_str().unwrap());
    let (events, _) = from(&d, &sess, &[&one], &token, 0.0);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].2, b.as_str().unwrap());
    for call in [xml_call, json_call] {
        assert_eq!(
            call(d.addr, "event.from", &[sess.clone(), subs(&["nonsense"]), s(""), Value::Float(0.0)]),
            err("EVENT_SUBSCRIPTION_PARSE_FAILURE", &["nonsense"])
        );
        assert_eq!(
            call(d.addr, "event.from", &[sess.clone(), subs(&["vm"]), s("junk"), Value::Float(0.0)]),
            err("EVENT_FROM_TOKEN_PARSE_FAILURE", &["junk"])
        );
    }
    // XO sends the timeout as a double, Python as an int or a double: both are floats to the datamodel.
    assert!(xml_call(d.addr, "event.from", &[sess.clone(), subs(&["vm"]), s(&token), Value::Int(0)]).is_ok());
}

#[test]
fn a_session_that_dies_while_blocked_gets_session_invalid() {
    let (_dir, d, sess) = daemon_with(&[]);
    let (_, token) = from(&d, &sess, &["vm"], "", 0.0);
    let addr = d.addr;
    let sess2 = sess.clone();
    let waiter = std::thread::spawn(move || {
        xml_call(addr, "event.from", &[sess2, subs(&["vm"]), s(&token), Value::Float(20.0)])
    });
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    d.xml("session.logout", &[sess.clone()]).unwrap();
    assert_eq!(waiter.join().unwrap(), err("SESSION_INVALID", &[sess.as_str().unwrap()]));
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[test]
fn deletions_are_never_silently_lost() {
    // More deletions than xapi keeps (256), all delivered.
    let (dir, d, sess) = daemon_with(&["--event-tombstones", "1000"]);
    let vms: Vec<Value> = (0..300).map(|i| new_vm(&d, &sess, &format!("vm{i}"))).collect();
    let (_, token) = from(&d, &sess, &["vm"], "", 0.0);
    for vm in &vms {
        d.xml("VM.destroy", &[sess.clone(), vm.clone()]).unwrap();
    }
    let (events, _) = from(&d, &sess, &["vm"], &token, 0.0);
    assert_eq!(events.iter().filter(|e| e.1 == "del").count(), 300);
    // Across a restart too: tokens, generations and tombstones are on disk.
    drop(d);
    let d = Daemon::start_with(dir.path(), &["--event-tombstones", "1000"]);
    let (events, _) = from(&d, &sess, &["vm"], &token, 0.0);
    assert_eq!(events.iter().filter(|e| e.1 == "del").count(), 300);

    // Past the documented retention, the client is told: EVENTS_LOST, not a gap.
    let (_dir, d, sess) = daemon_with(&["--event-tombstones", "5"]);
    let vms: Vec<Value> = (0..8).map(|i| new_vm(&d, &sess, &format!("vm{i}"))).collect();
    let (_, token) = from(&d, &sess, &["vm"], "", 0.0);
    for vm in &vms {
        d.xml("VM.destroy", &[sess.clone(), vm.clone()]).unwrap();
    }
    assert_eq!(
        d.xml("event.from", &[sess.clone(), subs(&["vm"]), s(&token), Value::Float(0.0)]),
        err("EVENTS_LOST", &[])
    );
    let (events, _) = from(&d, &sess, &["vm"], "", 0.0);
    assert!(events.iter().all(|e| e.1 == "add"), "a fresh start works");
}

#[test]
fn inject_gives_a_barrier_token_and_get_current_id_the_generation() {
    let (_dir, d, sess) = daemon_with(&[]);
    let pool = d.xml("pool.get_all", &[sess.clone()]).unwrap().as_array().unwrap()[0].clone();
    let token = d.xml("event.inject", &[sess.clone(), s("pool"), pool.clone()]).unwrap();
    let (events, _) = from(&d, &sess, &["pool"], token.as_str().unwrap(), 0.0);
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].1.as_str(), events[0].2.as_str()), ("mod", pool.as_str().unwrap()));
    let id = d.xml("event.get_current_id", &[sess.clone()]).unwrap();
    assert_eq!(format!("{:020},{:020}", id.as_str().unwrap().parse::<i64>().unwrap() - 1, 0), token.as_str().unwrap());
    assert_eq!(
        d.xml("event.inject", &[sess.clone(), s("pool"), s("OpaqueRef:nope")]),
        err("HANDLE_INVALID", &["pool", "OpaqueRef:nope"])
    );
}

#[test]
fn legacy_register_next_unregister() {
    let (_dir, d, sess) = daemon_with(&[]);
    assert_eq!(d.xml("event.next", &[sess.clone()]), err("SESSION_NOT_REGISTERED", &[sess.as_str().unwrap()]));
    d.xml("event.register", &[sess.clone(), subs(&["vm"])]).unwrap();
    let vm = new_vm(&d, &sess, "legacy");
    let events = d.xml("event.next", &[sess.clone()]).unwrap();
    let events = events.as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].get("operation"), Some(&s("add")));
    assert_eq!(events[0].get("ref"), Some(&vm));
    assert_eq!(events[0].get("class"), Some(&s("vm")));
    d.xml("event.unregister", &[sess.clone(), subs(&["vm"])]).unwrap();
    assert_eq!(d.xml("event.next", &[sess.clone()]), err("SESSION_NOT_REGISTERED", &[sess.as_str().unwrap()]));
}

fn wait_task(d: &Daemon, sess: &Value, task: &Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let record = d.xml("task.get_record", &[sess.clone(), task.clone()]).unwrap();
        if record.get("status") != Some(&s("pending")) {
            return record;
        }
        assert!(Instant::now() < deadline, "task still pending");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn async_calls_run_as_tasks() {
    let (_dir, d, sess) = daemon_with(&[]);
    let host = d.xml("host.get_all", &[sess.clone()]).unwrap().as_array().unwrap()[0].clone();
    for call in [xml_call, json_call] {
        let task = call(d.addr, "Async.host.get_servertime", &[sess.clone(), host.clone()]).unwrap();
        assert!(task.as_str().unwrap().starts_with("OpaqueRef:"));
        let record = wait_task(&d, &sess, &task);
        assert_eq!(record.get("status"), Some(&s("success")));
        assert_eq!(record.get("name_label"), Some(&s("Async.host.get_servertime")));
        // The result is the XML-RPC serialisation of the value, whatever protocol the call came in.
        let result = record.get("result").unwrap().as_str().unwrap();
        assert!(result.starts_with("<value><dateTime.iso8601>") && result.ends_with("Z</dateTime.iso8601></value>"));
        assert!(record.get("finished").unwrap() != &Value::DateTime(xapi_types::value::EPOCH.into()));
        let tasks = d.xml("session.get_tasks", &[sess.clone(), sess.clone()]).unwrap();
        assert!(tasks.as_array().unwrap().contains(&task));
        d.xml("task.destroy", &[sess.clone(), task.clone()]).unwrap();
        let tasks = d.xml("session.get_tasks", &[sess.clone(), sess.clone()]).unwrap();
        assert!(!tasks.as_array().unwrap().contains(&task));
    }
    // A failure is the task's, with the error in error_info.
    let pool = d.xml("pool.get_all", &[sess.clone()]).unwrap().as_array().unwrap()[0].clone();
    let task = d.xml("Async.pool.enable_ha", &[sess.clone(), Value::Array(vec![]), Value::Struct(vec![])]).unwrap();
    let record = wait_task(&d, &sess, &task);
    assert_eq!(record.get("status"), Some(&s("failure")));
    assert_eq!(record.get("error_info"), Some(&Value::Array(vec![s("NOT_IMPLEMENTED"), s("pool.enable_ha")])));
    // Checks that fail before any work answer at once, as the synchronous call would.
    assert_eq!(
        d.xml("Async.pool.enable_ha", &[sess.clone()]),
        err("MESSAGE_PARAMETER_COUNT_MISMATCH", &["pool.enable_ha", "3", "1"])
    );
    assert_eq!(
        d.xml("Async.VM.get_record", &[sess.clone(), pool.clone()]),
        err("MESSAGE_METHOD_UNKNOWN", &["Async.VM.get_record"])
    );
    assert_eq!(d.xml("Async.VM.nope", &[sess.clone()]), err("MESSAGE_METHOD_UNKNOWN", &["Async.VM.nope"]));
}

#[test]
fn client_tasks_cancel_and_no_ghosts_after_a_restart() {
    let (dir, d, sess) = daemon_with(&[]);
    let cancelled = d.xml("task.create", &[sess.clone(), s("upload"), s("an upload")]).unwrap();
    let pending = d.xml("task.create", &[sess.clone(), s("import"), s("")]).unwrap();
    assert_eq!(d.xml("task.get_status", &[sess.clone(), pending.clone()]), Ok(s("pending")));
    d.xml("task.cancel", &[sess.clone(), cancelled.clone()]).unwrap();
    assert_eq!(d.xml("task.get_status", &[sess.clone(), cancelled.clone()]), Ok(s("cancelled")));
    assert!(
        matches!(d.xml("task.cancel", &[sess.clone(), cancelled.clone()]), Err(e) if e[0] == "OPERATION_NOT_ALLOWED")
    );
    let (_, token) = from(&d, &sess, &["task"], "", 0.0);
    d.kill9();
    let d = Daemon::start(dir.path());
    let record = d.xml("task.get_record", &[sess.clone(), pending.clone()]).unwrap();
    assert_eq!(record.get("status"), Some(&s("failure")));
    assert_eq!(record.get("error_info").unwrap().as_array().unwrap()[0], s("INTERNAL_ERROR"));
    // ... and watchers learn it as an event.
    let (events, _) = from(&d, &sess, &["task"], &token, 0.0);
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].1.as_str(), events[0].2.as_str()), ("mod", pending.as_str().unwrap()));
}

#[test]
fn a_stopping_daemon_does_not_wait_for_blocked_event_calls() {
    let (_dir, d, sess) = daemon_with(&[]);
    let (_, token) = from(&d, &sess, &["vm"], "", 0.0);
    let addr = d.addr;
    let waiter = std::thread::spawn(move || {
        let body =
            xapi_types::wire::xmlrpc::write_call("event.from", &[sess, subs(&["vm"]), s(&token), Value::Float(60.0)]);
        post(addr, "/", "text/xml", &body).status
    });
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let status = d.terminate();
    assert!(status.success(), "{status:?}");
    assert!(t0.elapsed() < Duration::from_secs(3), "stopping took {:?}", t0.elapsed());
    assert_eq!(waiter.join().unwrap(), 200, "the waiting call got an answer");
}
