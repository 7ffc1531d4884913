//! `xe -s HOST` over HTTPS against the real daemon: any certificate by default (as XenServer's xe), the daemon's
//! own with `--cacert`, a certificate from another CA refused; `--nossl` and `-s 127.0.0.1` stay plain HTTP.

use std::path::Path;
use std::process::Command;

use crate::{Daemon, PASSWORD, Xe, exercise, start_daemon_on};

/// The daemon with HTTPS only (and its unix socket) on a free loopback port.
fn start_https_daemon(dir: &Path) -> (Daemon, Xe) {
    start_daemon_on(dir, true)
}

fn xe(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xe")).args(args).output().expect("run xe")
}

#[test]
fn xe_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let (_daemon, tls) = start_https_daemon(dir.path());
    exercise(&tls, "over-https");
    let port = tls.port.to_string();
    let ca = dir.path().join("data/xapi-ssl.pem");
    let ca = ca.to_str().unwrap();
    let login = ["-u", "root", "-pw", PASSWORD];

    // No certificate check by default, and nothing said about it.
    let out = xe(&[&["-s", "localhost", "-p", &port][..], &login, &["host-list", "--minimal"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let host = String::from_utf8(out.stdout).unwrap();
    assert_eq!(host.trim().len(), 36, "{host}");

    // With the daemon's certificate as the CA, for its names 127.0.0.1 (--cacert asks for TLS there too) and
    // localhost.
    for name in ["127.0.0.1", "localhost"] {
        let out = xe(&[&["-s", name, "-p", &port, "--cacert", ca][..], &login, &["host-list", "--minimal"]].concat());
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8(out.stdout).unwrap(), host);
    }

    // Another CA: refused, saying why.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, other.cert.pem()).unwrap();
    let out =
        xe(&[&["-s", "localhost", "-p", &port, "--cacert", other_ca.to_str().unwrap()][..], &login, &["host-list"]]
            .concat());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("certificate"), "{err}");

    // Plain HTTP to the HTTPS port (--nossl, or -s 127.0.0.1 as xe does on the host): the daemon says no.
    for args in [&["-s", "localhost", "--nossl"][..], &["-s", "127.0.0.1"]] {
        let out = xe(&[args, &["-p", &port][..], &login, &["host-list"]].concat());
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("400"), "{args:?}: {err}");
    }
}
