//! Test factories: a daemon on port 0 in a temporary data dir, and small clients for both protocols.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use xapi_types::Value;
use xapi_types::wire::{jsonrpc, xmlrpc};

pub const PASSWORD: &str = "test-root-password";

/// A response as the client saw it.
pub struct Http {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

pub fn post(addr: SocketAddr, path: &str, content_type: &str, body: &[u8]) -> Http {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut resp = agent
        .post(&format!("http://{addr}{path}"))
        .header("Content-Type", content_type)
        .send(body)
        .expect("the daemon answers");
    let content_type = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    Http { status: resp.status().as_u16(), content_type, body: resp.body_mut().read_to_string().unwrap() }
}

/// libvirt's test driver on a host of our own (8 GiB, 4 CPUs): private to the connection that opens it.
pub fn test_driver_uri() -> String {
    format!("test://{}/tests/data/testdriver-node.xml", env!("CARGO_MANIFEST_DIR"))
}

/// The real `xapi-server` binary, started on a free loopback port with its own data dir.
pub struct Daemon {
    pub addr: SocketAddr,
    child: Child,
    data_dir: std::path::PathBuf,
    /// Set by `kill9`: the block servers outlive the daemon, as they would a crash.
    crashed: bool,
}

impl Daemon {
    pub fn start(data_dir: &Path) -> Daemon {
        Daemon::start_with(data_dir, &[])
    }

    pub fn start_with(data_dir: &Path, extra_args: &[&str]) -> Daemon {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        // A private libvirt test-driver host per daemon (fresh and empty on every start), unless the test says.
        let mut hypervisor = vec!["--libvirt-uri".to_string(), test_driver_uri(), "--accel".into(), "tcg".into()];
        if extra_args.contains(&"--libvirt-uri") {
            hypervisor.clear();
        }
        let child = Command::new(env!("CARGO_BIN_EXE_xapi-server"))
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--http")
            .arg(addr.to_string())
            .args(&hypervisor)
            .args(extra_args)
            .env("XAPI_ROOT_PASSWORD", PASSWORD)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start xapi-server");
        let d = Daemon { addr, child, data_dir: data_dir.to_path_buf(), crashed: false };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "xapi-server did not start listening on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    /// SIGTERM, and the exit status once the daemon has stopped.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }

    /// `kill -9`: no chance to flush anything.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.crashed = true;
    }

    /// Whether the daemon process is still running (it has not exited or crashed).
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("the daemon's status").is_none()
    }

    pub fn xml(&self, method: &str, params: &[Value]) -> Result<Value, Vec<String>> {
        xml_call(self.addr, method, params)
    }

    pub fn login(&self) -> String {
        let r = self.xml("session.login_with_password", &[Value::str("root"), Value::str(PASSWORD)]);
        r.expect("login").as_str().unwrap().to_string()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.crashed {
            // The block servers this daemon started (their image paths are in its data dir) do not outlive a
            // test, whatever state it ended in.
            for pid in block_servers_under(&self.data_dir) {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
        }
    }
}

/// Block servers (`xapi-server tapdisk …`) whose arguments name a path under `dir`.
pub fn block_servers_under(dir: &Path) -> Vec<u32> {
    let dir = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else { return vec![] };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = String::from_utf8_lossy(&std::fs::read(e.path().join("cmdline")).ok()?).replace('\0', " ");
            (cmdline.contains(" tapdisk ") && cmdline.contains(&dir)).then_some(pid)
        })
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One XML-RPC call; `Err` carries the `ErrorDescription`.
pub fn xml_call(addr: SocketAddr, method: &str, params: &[Value]) -> Result<Value, Vec<String>> {
    let r = post(addr, "/", "text/xml", &xmlrpc::write_call(method, params));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.content_type, "text/xml");
    xmlrpc::parse_result(r.body.as_bytes()).expect("a well-formed response")
}

/// One JSON-RPC 2.0 call.
pub fn json_call(addr: SocketAddr, method: &str, params: &[Value]) -> Result<Value, Vec<String>> {
    let body = jsonrpc::write_call(method, params, jsonrpc::Version::V2, serde_json::json!(7));
    let r = post(addr, "/jsonrpc", "application/json", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.content_type, "application/json");
    jsonrpc::parse_response(r.body.as_bytes()).expect("a well-formed response")
}

pub fn err(code: &str, params: &[&str]) -> Result<Value, Vec<String>> {
    Err(std::iter::once(code).chain(params.iter().copied()).map(String::from).collect())
}

pub fn s(v: &str) -> Value {
    Value::str(v)
}

/// A daemon and a logged-in root session.
pub struct Api {
    pub d: Daemon,
    pub sess: Value,
}

impl Api {
    pub fn start(dir: &Path, extra: &[&str]) -> Api {
        let d = Daemon::start_with(dir, extra);
        let sess = s(&d.login());
        Api { d, sess }
    }

    pub fn call(&self, method: &str, args: &[Value]) -> Result<Value, Vec<String>> {
        let mut params = vec![self.sess.clone()];
        params.extend_from_slice(args);
        self.d.xml(method, &params)
    }

    pub fn ok(&self, method: &str, args: &[Value]) -> Value {
        self.call(method, args).unwrap_or_else(|e| panic!("{method}: {e:?}"))
    }
}
