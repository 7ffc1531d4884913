//! Connection limits: a client address past `--connections-per-client` gets `429` and a closed connection, never
//! a hang; closing a connection makes room; the unix socket is not counted.

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
    let held: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(d.addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
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
