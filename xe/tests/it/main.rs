//! End to end: the real `xapi-server` in a temporary data dir, driven by the real `xe` binary over TCP with a
//! password and, when the test runs as root, over the unix socket without one.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod lists;
mod storage;
mod tls;
mod users;
mod vdi_io;

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
    /// Over HTTPS (`-s localhost`: xe never uses TLS for `127.0.0.1`), accepting any certificate as xe does.
    https: bool,
}

impl Xe {
    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_xe"));
        if self.tcp {
            let host = if self.https { "localhost" } else { "127.0.0.1" };
            cmd.args(["-s", host, "-p", &self.port.to_string(), "-u", "root", "-pw", PASSWORD]);
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

    /// Runs `xe`, insists on success, and returns its stdout without the final newline (as `$(xe …)` does).
    fn val(&self, args: &[&str]) -> String {
        self.ok(args).trim_end_matches('\n').to_string()
    }

    /// Runs `xe`, insists on failure (exit 1), and returns its stderr.
    fn err(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(out.status.code(), Some(1), "xe {args:?} did not fail: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8(out.stderr).unwrap()
    }
}

pub(crate) fn exercise(xe: &Xe, new_name: &str) {
    let vms = xe.ok(&["vm-list", "--minimal"]);
    let dom0 = vms.trim();
    assert_eq!(dom0.len(), 36, "one VM, the control domain: {vms:?}");
    assert_eq!(xe.ok(&["vm-param-get", &format!("uuid={dom0}"), "param-name=power-state"]), "running\n");
    let listed = xe.ok(&["vm-list", "power-state=running"]);
    assert!(listed.starts_with(&format!("uuid ( RO)           : {dom0}\n")), "{listed}");
    assert!(listed.ends_with("    power-state ( RO): running\n\n"), "xe's default columns of vm-list: {listed}");
    assert!(xe.ok(&["vm-list", "power-state=halted", "--minimal"]).trim().is_empty());

    let pool = xe.ok(&["pool-list", "--minimal"]).trim().to_string();
    xe.ok(&["pool-param-set", &format!("uuid={pool}"), &format!("name-label={new_name}")]);
    assert_eq!(xe.ok(&["pool-list", "params=name-label"]), format!("name-label ( RW)    : {new_name}\n\n"));
    xe.ok(&["pool-param-set", &format!("uuid={pool}"), "other-config:xe-test=yes"]);
    let got = xe.ok(&["pool-param-get", &format!("uuid={pool}"), "param-name=other-config", "param-key=xe-test"]);
    assert_eq!(got, "yes\n");
    let all = xe.ok(&["vm-param-list", &format!("uuid={dom0}")]);
    assert!(all.contains("other-config (MRW): "), "{all}");

    // -param-add / -param-remove / -param-clear, on a map and on a set.
    let on_pool = format!("uuid={pool}");
    xe.ok(&["pool-param-add", &on_pool, "param-name=other-config", "a=1", "b=2"]);
    let get_oc = ["pool-param-get", on_pool.as_str(), "param-name=other-config"];
    assert_eq!(xe.ok(&get_oc), "xe-test: yes; a: 1; b: 2\n");
    xe.ok(&["pool-param-remove", &on_pool, "param-name=other-config", "param-key=a"]);
    assert_eq!(xe.ok(&get_oc), "xe-test: yes; b: 2\n");
    xe.ok(&["pool-param-clear", &on_pool, "param-name=other-config"]);
    assert_eq!(xe.ok(&get_oc), "\n");
    let on_dom0 = format!("uuid={dom0}");
    xe.ok(&["vm-param-add", &on_dom0, "param-name=tags", "param-key=t1"]);
    xe.ok(&["vm-param-add", &format!("vm={dom0}"), "param-name=tags", "param-key=t2"]);
    assert_eq!(xe.ok(&["vm-param-get", &on_dom0, "param-name=tags"]), "t1; t2\n");
    xe.ok(&["vm-param-remove", &on_dom0, "param-name=tags", "param-key=t1"]);
    assert_eq!(xe.ok(&["vm-param-get", &on_dom0, "param-name=tags"]), "t2\n");
    xe.ok(&["vm-param-clear", &on_dom0, "param-name=tags"]);
    assert_eq!(xe.ok(&["vm-param-get", &on_dom0, "param-name=tags"]), "\n");
    let ro = xe.run(&["vm-param-clear", &on_dom0, "param-name=allowed-operations"]);
    assert_eq!(String::from_utf8_lossy(&ro.stderr), "Parameter 'allowed-operations' is not a writable set.\n");

    // Selectors: <class>=<name-label or uuid>, filters, no match.
    let dom0_name = xe.ok(&["vm-param-get", &on_dom0, "param-name=name-label"]);
    let by_name = format!("vm={}", dom0_name.trim_end());
    assert_eq!(xe.ok(&["vm-param-get", &by_name, "param-name=uuid"]), format!("{dom0}\n"));
    assert_eq!(xe.ok(&["pool-list", &format!("pool={new_name}"), "--minimal"]), format!("{pool}\n"));
    let none = xe.run(&["vm-start", "power-state=halted"]);
    assert_eq!(
        (none.status.code(), String::from_utf8_lossy(&none.stderr).as_ref()),
        (Some(1), "Error: No matching VMs found\n")
    );
    let none = xe.run(&["task-cancel", "uuid-free-filter=x"]);
    assert_eq!(String::from_utf8_lossy(&none.stderr), "Unknown field 'uuid-free-filter' for class task.\n");

    // The control domain cannot be started (it runs) nor shut down; templates are not VMs to xe.
    let start = xe.run(&["vm-start", &on_dom0]);
    assert_eq!(start.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&start.stderr);
    assert!(stderr.contains("not in an appropriate power state") && stderr.contains("expected: halted"), "{stderr}");
    let stop = xe.run(&["vm-shutdown", "power-state=running", "force=true"]);
    let stderr = String::from_utf8_lossy(&stop.stderr);
    assert!(stderr.contains("control domain"), "{stderr}");
    let templates = xe.ok(&["vm-list", "is-a-template=true", "--minimal"]);
    assert_eq!(templates.trim().split(',').count(), 2, "the default templates: {templates}");

    // vm-install: clone + provision; the new VM is halted and listed; it needs a hypervisor to start.
    let uuid = xe.ok(&["vm-install", "template=Generic Linux (direct kernel boot)", "new-name-label=xe-vm"]);
    let uuid = uuid.trim();
    assert_eq!(uuid.len(), 36, "{uuid:?}");
    assert_eq!(xe.ok(&["vm-param-get", &format!("uuid={uuid}"), "param-name=power-state"]), "halted\n");
    assert_eq!(xe.ok(&["vm-list", "name-label=xe-vm", "--minimal"]), format!("{uuid}\n"));
    let start = xe.run(&["vm-start", "vm=xe-vm"]);
    assert!(String::from_utf8_lossy(&start.stderr).contains("without a hypervisor"), "{start:?}");
    // force= (or --force) goes to VM.start/VM.resume; paused= and on= are xe's too.
    for force in [&["force=true"][..], &["--force"], &["force=yes", "paused=true"], &["on=" as &str]] {
        let host = xe.ok(&["host-list", "--minimal"]);
        let on = format!("on={}", host.trim());
        let force: Vec<&str> = force.iter().map(|f| if *f == "on=" { on.as_str() } else { f }).collect();
        let start = xe.run(&[&["vm-start", "vm=xe-vm"], &force[..]].concat());
        assert!(String::from_utf8_lossy(&start.stderr).contains("without a hypervisor"), "{force:?}: {start:?}");
    }
    let resume = xe.run(&["vm-resume", "vm=xe-vm", "--force"]);
    assert!(String::from_utf8_lossy(&resume.stderr).contains("expected: suspended"), "{resume:?}");
    let bad = xe.err(&["vm-start", "vm=xe-vm", "force=maybe"]);
    assert_eq!(
        bad,
        "Error: Failed to parse parameter 'force': Expected 'true','t','yes','y','1','false','f','no','n','0' got maybe\n"
    );
    assert_eq!(xe.err(&["vm-start", "vm=xe-vm", "on=no-such-host"]), "Error: No matching hosts found\n");
    xe.ok(&["vm-destroy", &format!("uuid={uuid}")]);

    // event-wait: blocks until the pool is renamed, and times out otherwise.
    let waiting = std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let started = Instant::now();
            let out = xe.run(&["event-wait", "class=pool", &format!("name-label={new_name}-waited")]);
            (out, started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(500));
        xe.ok(&["pool-param-set", &on_pool, &format!("name-label={new_name}-waited")]);
        waiter.join().unwrap()
    });
    assert_eq!(waiting.0.status.code(), Some(0), "{}", String::from_utf8_lossy(&waiting.0.stderr));
    assert!(waiting.1 < Duration::from_secs(5), "event-wait took {:?}", waiting.1);
    let timed_out = xe.run(&["event-wait", "class=pool", "name-label=never", "timeout=0.5"]);
    assert_eq!(timed_out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&timed_out.stderr), "Timed out waiting for the condition.\n");
    xe.ok(&["pool-param-set", &on_pool, &format!("name-label={new_name}")]);

    // event-wait with xe's not-equal conditions, field=/=value: at once when an object already differs, else
    // when one comes to differ.
    xe.ok(&["event-wait", "class=vm", "is-control-domain=true", "power-state=/=halted", "timeout=5"]);
    let unchanged = xe.run(&["event-wait", "class=pool", &format!("name-label=/={new_name}"), "timeout=0.5"]);
    assert_eq!(String::from_utf8_lossy(&unchanged.stderr), "Timed out waiting for the condition.\n");
    let waiting = std::thread::scope(|s| {
        let waiter =
            s.spawn(|| xe.run(&["event-wait", "class=pool", &format!("name-label=/={new_name}"), "timeout=20"]));
        std::thread::sleep(Duration::from_millis(500));
        xe.ok(&["pool-param-set", &on_pool, &format!("name-label={new_name}-changed")]);
        waiter.join().unwrap()
    });
    assert_eq!(waiting.status.code(), Some(0), "{}", String::from_utf8_lossy(&waiting.stderr));
    xe.ok(&["pool-param-set", &on_pool, "other-config:state=a"]);
    xe.ok(&["event-wait", "class=pool", "other-config:state=/=b", "timeout=5"]);
    xe.ok(&["pool-param-remove", &on_pool, "param-name=other-config", "param-key=state"]);
    xe.ok(&["pool-param-set", &on_pool, &format!("name-label={new_name}")]);

    let bad = xe.run(&["vm-list", "uuid=00000000-0000-0000-0000-000000000000"]);
    assert_eq!(bad.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr),
        "The uuid you supplied was invalid.\ntype: VM\nuuid: 00000000-0000-0000-0000-000000000000\n"
    );
}

/// Starts the daemon (without a hypervisor) in `dir`, listening on a free loopback port and on `dir/xapi`; an
/// `xe` that talks to it over TCP with the root password.
fn start_daemon(dir: &Path) -> (Daemon, Xe) {
    start_daemon_on(dir, false)
}

/// The daemon on a free loopback port (plain HTTP, or with `https` HTTPS only) and its unix socket, once both
/// listen.
fn start_daemon_on(dir: &Path, https: bool) -> (Daemon, Xe) {
    let socket = dir.join("xapi");
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let addr_arg = addr.to_string();
    let listen = if https { vec!["--http", "none", "--https", &addr_arg] } else { vec!["--http", &addr_arg] };
    let daemon = Daemon(
        Command::new(xapi_server_binary())
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(listen)
            .args(["--libvirt-uri", "none"])
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
    (daemon, Xe { socket, port, tcp: true, https })
}

#[test]
fn xe_against_the_real_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let (_daemon, tcp) = start_daemon(dir.path());
    let (socket, port) = (tcp.socket.clone(), tcp.port);
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
        exercise(&Xe { socket, port, tcp: false, https: false }, "over-the-socket");
    } else {
        eprintln!("not root: the unix-socket half (root without a password) was not run");
    }
}

/// The bash completion script, driven as bash drives it: `COMP_WORDS` are `words` (the last one the word being
/// completed) and `_xe` is run with the `xe` binary on the `PATH`; what it leaves in `COMPREPLY`, space-separated.
fn complete(words: &[&str]) -> String {
    let dir = Path::new(env!("CARGO_BIN_EXE_xe")).parent().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/completion/xe.bash");
    let quoted: Vec<String> = words.iter().map(|w| format!("'{}'", w.replace('\'', r"'\''"))).collect();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {script}; COMP_WORDS=({}); COMP_CWORD={}; _xe; echo \"${{COMPREPLY[*]}}\"",
            quoted.join(" "),
            words.len() - 1
        ))
        .env("PATH", format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default()))
        .output()
        .expect("run bash");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "completion is silent: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim_end_matches('\n').to_string()
}

/// The bash completion script against the real binary, for what needs no daemon.
#[test]
fn bash_completion_completes_commands_and_parameters() {
    let complete = |words: &str| complete(&words.split(' ').collect::<Vec<_>>());
    assert_eq!(complete("xe vm-param-g"), "vm-param-get");
    assert_eq!(complete("xe vm-param-get par"), "param-name= param-key=");
    assert_eq!(complete("xe pool-param-set other-c"), "other-config:");
    assert_eq!(complete("xe vm-shutdown --mu"), "--multiple");
    assert_eq!(complete("xe sr-create device-c"), "device-config:");
    assert_eq!(complete("xe vdi-cr"), "vdi-create");
    assert_eq!(complete("xe snapshot-param-g"), "snapshot-param-get");
    // Values that need no daemon.
    assert_eq!(complete("xe vdi-import format="), "format=raw format=vhd format=vmdk");
    assert_eq!(complete("xe vdi-export format=v"), "format=vhd format=vmdk");
    assert_eq!(complete("xe vm-shutdown force="), "force=true force=false");
    assert_eq!(complete("xe vdi-param-get param-name=virtual"), "param-name=virtual-size");
    assert_eq!(complete("xe vm-param-get param-name=power"), "param-name=power-state");
    assert_eq!(complete("xe host-cpu-list params=uuid,vend"), "params=uuid,vendor");
    assert_eq!(complete("xe vdi-list params=al"), "params=all params=allowed-operations params=allow-caching");
    assert_eq!(complete("xe event-wait class=vd"), "class=vdi");
    // bash splits `param=value` at `=` by default: `param` `=` `value`.
    assert_eq!(complete("xe vdi-import format = vh"), "vhd");
    assert_eq!(complete("xe vm-reboot force ="), "=true =false");
    // Map keys are not completed; without a daemon, uuids complete to nothing, silently.
    assert_eq!(complete("xe pool-param-set other-config:k="), "");
    assert_eq!(complete("xe -s 127.0.0.1 -p 1 vm-param-get uuid="), "");
}
