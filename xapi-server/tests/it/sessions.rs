//! Session limits: a client that leaks sessions ends only its own oldest ones; a user at its limit is refused;
//! nobody else's session is ever ended for it. Logout is immediate, also for a waiting `event.from`.

use std::time::{Duration, Instant};

use xapi_types::Value;

use crate::support::{Daemon, PASSWORD, s};

fn login(d: &Daemon, originator: &str) -> Result<Value, Vec<String>> {
    d.xml("session.login_with_password", &[s("root"), s(PASSWORD), s("1.0"), s(originator)])
}

fn alive(d: &Daemon, session: &Value) -> bool {
    d.xml("session.get_uuid", &[session.clone(), session.clone()]).is_ok()
}

#[test]
fn a_leaking_client_ends_only_its_own_sessions() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(tmp.path(), &["--sessions-per-client", "5", "--sessions-per-user", "15"]);
    let console = login(&d, "XenCenter").unwrap();
    let leaked: Vec<Value> = (0..8).map(|_| login(&d, "leaky-script").unwrap()).collect();
    assert!(alive(&d, &console), "another client's session survives");
    let survivors = leaked.iter().filter(|l| alive(&d, l)).count();
    assert_eq!(survivors, 5);
    assert!(leaked[..3].iter().all(|l| !alive(&d, l)), "the oldest of the leaking client's sessions went");
    // Without an originator, a client is its address: the same rule.
    let anonymous: Vec<Value> = (0..7).map(|_| login(&d, "").unwrap()).collect();
    assert_eq!(anonymous.iter().filter(|l| alive(&d, l)).count(), 5);
    assert!(alive(&d, &console));
    // 1 + 5 + 5 root sessions: 4 more fit under 15, then logins are refused.
    let many: Vec<Value> = (0..4).map(|i| login(&d, &format!("tool-{i}")).unwrap()).collect();
    let refused = login(&d, "one-too-many").unwrap_err();
    assert_eq!(refused[0], "SESSION_AUTHORIZATION_FAILED", "{refused:?}");
    assert_eq!(refused[1], "root");
    assert!(alive(&d, &console) && many.iter().all(|m| alive(&d, m)), "a refused login ends nothing");
    // A logout makes room.
    d.xml("session.logout", &[many[0].clone()]).unwrap();
    login(&d, "one-too-many").unwrap();
}

#[test]
fn logout_ends_a_waiting_event_from_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path());
    let sess = login(&d, "watcher").unwrap();
    // A waiter from a fresh token (so that it blocks), which the logout must wake.
    let token = d
        .xml("event.from", &[sess.clone(), Value::Array(vec![s("vm")]), s(""), Value::Float(1.0)])
        .unwrap()
        .get("token")
        .cloned()
        .unwrap();
    let (addr, waiting) = (d.addr, sess.clone());
    let blocked = std::thread::spawn(move || {
        let started = Instant::now();
        let r = crate::support::xml_call(
            addr,
            "event.from",
            &[waiting, Value::Array(vec![s("vm")]), token, Value::Float(60.0)],
        );
        (started.elapsed(), r)
    });
    std::thread::sleep(Duration::from_millis(500));
    d.xml("session.logout", &[sess]).unwrap();
    let (took, r) = blocked.join().unwrap();
    assert!(took < Duration::from_secs(5), "the waiting call ended with the logout: {took:?}");
    assert_eq!(r.unwrap_err()[0], "SESSION_INVALID");
}
