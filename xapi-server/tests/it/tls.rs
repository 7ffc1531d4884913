//! HTTPS: the daemon generates its certificate on first start, serves XML-RPC and JSON-RPC over TLS with it (or
//! with the administrator's), shrugs off garbage and plain HTTP on the TLS port, and `--http none` turns plain HTTP
//! off.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use xapi_types::Value;
use xapi_types::wire::{jsonrpc, xmlrpc};

use crate::support::PASSWORD;

/// A daemon with an HTTPS listener (and the given `--http`), killed when dropped.
struct TlsDaemon {
    https: SocketAddr,
    child: Child,
    log: PathBuf,
}

impl Drop for TlsDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TlsDaemon {
    fn start(dir: &Path, http: &str, extra: &[&str]) -> TlsDaemon {
        let https: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = dir.join("daemon.log");
        // The daemon logs on stdout.
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_xapi-server"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--http", http, "--https", &https.to_string(), "--libvirt-uri", "none"])
            .args(extra)
            .env("XAPI_ROOT_PASSWORD", PASSWORD)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start xapi-server");
        let mut d = TlsDaemon { https, child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(https).is_err() {
            assert!(d.child.try_wait().unwrap().is_none(), "xapi-server exited: {}", d.log_text());
            assert!(Instant::now() < deadline, "xapi-server did not start listening on {https}");
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn client_config(roots: &[CertificateDer<'static>]) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for c in roots {
        store.add(c.clone()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(store)
            .with_no_client_auth(),
    )
}

fn certs_of(pem_file: &Path) -> Vec<CertificateDer<'static>> {
    let pem = std::fs::read(pem_file).unwrap();
    CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>().unwrap()
}

/// What one HTTPS request brought back.
struct Answer {
    status: u16,
    content_type: String,
    body: String,
    /// The certificate the server presented.
    leaf: Vec<u8>,
}

/// One `POST` over TLS, checking the server's certificate against `roots` for `name`.
fn https_post(
    addr: SocketAddr,
    roots: &[CertificateDer<'static>],
    name: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> Result<Answer, std::io::Error> {
    let name = ServerName::try_from(name.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(client_config(roots), name).unwrap();
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes())?;
    tls.write_all(body)?;
    tls.flush()?;
    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        // The daemon closes without close_notify after `Connection: close`; what came is whole (Content-Length).
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e),
    }
    let leaf = tls.conn.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case("content-type")))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    Ok(Answer { status, content_type, body: body.to_string(), leaf })
}

fn xml_over_tls(
    addr: SocketAddr,
    roots: &[CertificateDer<'static>],
    name: &str,
    method: &str,
    params: &[Value],
) -> Result<Value, Vec<String>> {
    let a = https_post(addr, roots, name, "/", "text/xml", &xmlrpc::write_call(method, params)).expect("an answer");
    assert_eq!((a.status, a.content_type.as_str()), (200, "text/xml"), "{}", a.body);
    xmlrpc::parse_result(a.body.as_bytes()).expect("a well-formed response")
}

fn login_args(password: &str) -> [Value; 2] {
    [Value::str("root"), Value::str(password)]
}

#[test]
fn https_serves_both_protocols_with_a_generated_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut d = TlsDaemon::start(dir.path(), &http.to_string(), &[]);
    let pem = dir.path().join("data/xapi-ssl.pem");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&pem).unwrap().permissions().mode() & 0o777, 0o600);
    let roots = certs_of(&pem);
    assert_eq!(roots.len(), 1);
    let log = d.log_text();
    let fingerprint = log.lines().find(|l| l.contains("generated a self-signed certificate")).expect("logged");
    let sha256 = fingerprint.split("sha256=").nth(1).unwrap().trim();
    assert_eq!(sha256.len(), 95, "{fingerprint}");

    // XML-RPC, checked against the certificate's SAN 127.0.0.1, and JSON-RPC for the name localhost.
    let session = xml_over_tls(d.https, &roots, "127.0.0.1", "session.login_with_password", &login_args(PASSWORD))
        .expect("login over TLS");
    let session = session.as_str().unwrap().to_string();
    let body = jsonrpc::write_call("pool.get_all", &[Value::str(&session)], jsonrpc::Version::V2, 7.into());
    let a = https_post(d.https, &roots, "localhost", "/jsonrpc", "application/json", &body).unwrap();
    assert_eq!((a.status, a.content_type.as_str()), (200, "application/json"), "{}", a.body);
    let pools = jsonrpc::parse_response(a.body.as_bytes()).unwrap().unwrap();
    assert_eq!(pools.as_array().map(|p| p.len()), Some(1), "{pools:?}");
    assert_eq!(a.leaf, roots[0].to_vec());

    // A TLS client on this host is not local root: a wrong password is refused.
    let wrong = xml_over_tls(d.https, &roots, "127.0.0.1", "session.login_with_password", &login_args("wrong"));
    assert_eq!(wrong.unwrap_err()[0], "SESSION_AUTHENTICATION_FAILED");

    // A name the certificate is not for, and a client that trusts nothing, fail their handshake.
    let e = https_post(d.https, &roots, "example.invalid", "/", "text/xml", b"").err().expect("refused");
    assert!(e.to_string().contains("certificate"), "{e}");
    let e = https_post(d.https, &[], "127.0.0.1", "/", "text/xml", b"").err().expect("refused");
    assert!(e.to_string().contains("certificate"), "{e}");

    // Garbage, then plain HTTP, on the TLS port: the connection is dropped (plain HTTP told why), nothing else.
    let mut s = TcpStream::connect(d.https).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0, 1, 2, 3, 4, 5, 6, 7]).unwrap();
    let _ = s.read_to_end(&mut Vec::new());
    let mut s = TcpStream::connect(d.https).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer:?}");
    assert!(answer.contains("HTTPS"), "{answer:?}");
    // A client that connects and says nothing holds up nobody.
    let _idle = TcpStream::connect(d.https).unwrap();
    assert!(d.alive());
    let again = xml_over_tls(d.https, &roots, "127.0.0.1", "session.get_this_host", &[s_(&session), s_(&session)]);
    assert!(again.is_ok(), "{again:?}");

    // Plain HTTP beside it still serves, and the session is the same.
    let host = crate::support::xml_call(http, "session.get_this_host", &[s_(&session), s_(&session)]);
    assert_eq!(host, again);
}

fn s_(v: &str) -> Value {
    Value::str(v)
}

#[test]
fn an_administrators_certificate_is_served_reloaded_on_sighup_and_a_bad_one_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mine = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let file = data.join("xapi-ssl.pem");
    std::fs::write(&file, format!("{}{}", mine.cert.pem(), mine.signing_key.serialize_pem())).unwrap();
    let roots = vec![mine.cert.der().clone()];
    {
        let d = TlsDaemon::start(dir.path(), "none", &[]);
        let a = https_post(
            d.https,
            &roots,
            "127.0.0.1",
            "/",
            "text/xml",
            &xmlrpc::write_call("session.login_with_password", &login_args(PASSWORD)),
        )
        .expect("the administrator's certificate is trusted");
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.leaf, mine.cert.der().to_vec());
        assert!(d.log_text().contains("loaded the certificate"), "{}", d.log_text());

        // Another one, and SIGHUP: new connections get it.
        let next = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(&file, format!("{}{}", next.signing_key.serialize_pem(), next.cert.pem())).unwrap();
        Command::new("kill").args(["-HUP", &d.child.id().to_string()]).status().unwrap();
        let next_roots = vec![next.cert.der().clone()];
        let deadline = Instant::now() + Duration::from_secs(30);
        let body = xmlrpc::write_call("session.login_with_password", &login_args(PASSWORD));
        while https_post(d.https, &next_roots, "localhost", "/", "text/xml", &body).is_err() {
            assert!(Instant::now() < deadline, "the certificate was not reloaded: {}", d.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(d.log_text().contains("reloaded the certificate"), "{}", d.log_text());
        // A bad file on SIGHUP: the certificate in use stays.
        std::fs::write(&file, "garbage").unwrap();
        Command::new("kill").args(["-HUP", &d.child.id().to_string()]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !d.log_text().contains("kept the certificate in use") {
            assert!(Instant::now() < deadline, "no warning: {}", d.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        let a = https_post(d.https, &next_roots, "localhost", "/", "text/xml", &body).unwrap();
        assert_eq!(a.leaf, next.cert.der().to_vec());
        std::fs::write(&file, format!("{}{}", mine.cert.pem(), mine.signing_key.serialize_pem())).unwrap();
    }
    // The file was only read.
    assert_eq!(certs_of(&file), roots);

    // --cert elsewhere: a file without a key is a clear start-up error naming it.
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, mine.cert.pem()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xapi-server"))
        .arg("--data-dir")
        .arg(&data)
        .args(["--http", "none", "--https", "127.0.0.1:0", "--libvirt-uri", "none", "--cert"])
        .arg(&bad)
        .env("XAPI_ROOT_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.pem") && err.contains("no private key"), "{err}");
}

#[test]
fn http_none_turns_plain_http_off() {
    let dir = tempfile::tempdir().unwrap();
    let d = TlsDaemon::start(dir.path(), "none", &[]);
    let roots = certs_of(&dir.path().join("data/xapi-ssl.pem"));
    xml_over_tls(d.https, &roots, "localhost", "session.login_with_password", &login_args(PASSWORD)).unwrap();
    let log = d.log_text();
    assert!(log.contains("serving XenAPI over HTTPS"), "{log}");
    assert!(!log.contains("serving XenAPI over HTTP "), "{log}");
    assert!(log.contains("on the unix socket"), "{log}");
}
