//! End to end: the real `xapi-server` in a temporary data dir, driven by the real `xe` binary over TCP with a
//! password and, when the test runs as root, over the unix socket without one.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "pw";

/// The daemon binary, built next to `xe` (same target dir and profile).
fn xapi_server_binary() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_xe")).parent().expect("xe lives in a directory").to_path_buf();
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).args(["build", "-q", "-p", "xapi-server"]);
    if dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build.status().expect("run cargo build -p xapi-server");
    assert!(status.success(), "cargo build -p xapi-server failed");
    dir.join("xapi-server")
}

/// Kills the daemon by its pid when the test ends, however it ends.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Xe {
    socket: PathBuf,
    port: u16,
    tcp: bool,
}

impl Xe {
    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_xe"));
        if self.tcp {
            cmd.args(["-s", "127.0.0.1", "-p", &self.port.to_string(), "-u", "root", "-pw", PASSWORD]);
        }
        cmd.args(args).env("XE_SOCKET", &self.socket).output().expect("run xe")
    }

    /// Runs `xe`, insists on success, and returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "xe {args:?} failed: {stderr}");
        String::from_utf8(out.stdout).unwrap()
    }
}

fn exercise(xe: &Xe, new_name: &str) {
    let vms = xe.ok(&["vm-list", "--minimal"]);
    let dom0 = vms.trim();
    assert_eq!(dom0.len(), 36, "one VM, the control domain: {vms:?}");
    assert_eq!(xe.ok(&["vm-param-get", &format!("uuid={dom0}"), "param-name=power-state"]), "running\n");
    let listed = xe.ok(&["vm-list", "power-state=running"]);
    assert!(listed.starts_with(&format!("uuid ( RO)                : {dom0}\n")), "{listed}");
    assert!(xe.ok(&["vm-list", "power-state=halted", "--minimal"]).trim().is_empty());

    let pool = xe.ok(&["pool-list", "--minimal"]).trim().to_string();
    xe.ok(&["pool-param-set", &format!("uuid={pool}"), &format!("name-label={new_name}")]);
    assert_eq!(xe.ok(&["pool-list", "params=name-label"]), format!("name-label ( RW)    : {new_name}\n\n"));
    xe.ok(&["pool-param-set", &format!("uuid={pool}"), "other-config:xe-test=yes"]);
    let got = xe.ok(&["pool-param-get", &format!("uuid={pool}"), "param-name=other-config", "param-key=xe-test"]);
    assert_eq!(got, "yes\n");
    let all = xe.ok(&["vm-param-list", &format!("uuid={dom0}")]);
    assert!(all.contains("other-config (MRW): "), "{all}");

    let bad = xe.run(&["vm-list", "uuid=00000000-0000-0000-0000-000000000000"]);
    assert_eq!(bad.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr),
        "The uuid you supplied was invalid.\ntype: VM\nuuid: 00000000-0000-0000-0000-000000000000\n"
    );
}

#[test]
fn xe_against_the_real_daemon() {
    let server = xapi_server_binary();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("xapi");
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let _daemon = Daemon(
        Command::new(server)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--http", &addr.to_string()])
            .arg("--socket")
            .arg(&socket)
            .env("XAPI_ROOT_PASSWORD", PASSWORD)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start xapi-server"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(addr).is_err() || !socket.exists() {
        assert!(Instant::now() < deadline, "xapi-server did not start listening on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }

    let tcp = Xe { socket: socket.clone(), port, tcp: true };
    exercise(&tcp, "over-tcp");
    let wrong = Command::new(env!("CARGO_BIN_EXE_xe"))
        .args(["-s", "127.0.0.1", "-p", &port.to_string(), "-u", "root", "-pw", "wrong", "vm-list"])
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&wrong.stderr), "Authentication failed\n");
    let unknown = tcp.run(&["foo"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&unknown.stderr), "Unknown command: foo\nFor usage run: 'xe help'\n");

    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if root {
        exercise(&Xe { socket, port, tcp: false }, "over-the-socket");
    } else {
        eprintln!("not root: the unix-socket half (root without a password) was not run");
    }
}
