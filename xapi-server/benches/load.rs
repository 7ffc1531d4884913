//! The load test of issue 8: 1,000 concurrent sessions over TLS, each looping on a read and an `event.from`, for a
//! bounded time, on loopback; throughput, latency percentiles, errors and the daemon's resident memory over time.
//!
//! ```text
//! cargo bench -p xapi-server --bench load -- [--clients N] [--secs S] [--no-write]
//! ```
//!
//! The real `xapi-server` (release) is started with `--https` on a free loopback port and a fresh data dir. Each
//! client opens its own TLS connection (rustls, trusting the daemon's generated certificate), logs in as root with
//! its own session (`originator` `load-N`: the session limits count it as a client of its own), then loops until
//! the end: `VM.get_all_records` (the read), then `event.from(["vm"], token, 1.0)` (answered at once when
//! something changed, else after a second). A writer, on its own session, renames a VM every 200 ms, so every
//! `event.from` has something to carry and every commit wakes all the watchers. JSON-RPC, keep-alive, as Xen
//! Orchestra speaks it. The load generator runs at nice 19 on one thread (a tokio current-thread runtime), so
//! that it stands for remote clients rather than competing with the daemon for the two cores.
//!
//! Measured over the run (after all clients are logged in): calls per second (reads, events), the latency of the
//! reads (median, p99, max), errors (any answer that is not a success, or a broken connection: there must be
//! none), and the daemon's VmRSS every second; "memory flat" compares the first and last fifth of the run. The
//! figures go to the `load` section of `docs/reliability.md` unless `--no-write`. Without `--bench` (as
//! `cargo test --benches` runs it) it does nothing.

#[allow(dead_code)] // the helpers are shared with the other benches; this one uses some
mod common;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Daemon, PASSWORD, load_avg, percentile};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

struct Opts {
    clients: usize,
    secs: u64,
    write: bool,
}

fn opts() -> Option<Opts> {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("load: run with `cargo bench -p xapi-server --bench load` (it takes minutes); skipped");
        return None;
    }
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    Some(Opts {
        clients: value("--clients").map_or(1000, |v| v.parse().expect("--clients N")),
        secs: value("--secs").map_or(60, |v| v.parse().expect("--secs S")),
        write: !args.iter().any(|a| a == "--no-write"),
    })
}

/// One keep-alive HTTPS connection speaking JSON-RPC.
struct Conn {
    tls: TlsStream<tokio::net::TcpStream>,
    buf: Vec<u8>,
    id: u64,
}

impl Conn {
    async fn open(addr: SocketAddr, connector: &TlsConnector) -> std::io::Result<Conn> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("localhost").expect("a name");
        let tls = connector.connect(name, tcp).await?;
        Ok(Conn { tls, buf: Vec::with_capacity(64 << 10), id: 0 })
    }

    /// One call; its `result`, or the error as text.
    async fn call(&mut self, method: &str, params: serde_json::Value) -> Result<serde_json::Value, String> {
        self.id += 1;
        let body = serde_json::json!({"jsonrpc": "2.0", "method": method, "params": params, "id": self.id}).to_string();
        let head = format!(
            "POST /jsonrpc HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let io = |e: std::io::Error| format!("{method}: {e}");
        self.tls.write_all(head.as_bytes()).await.map_err(io)?;
        self.tls.write_all(body.as_bytes()).await.map_err(io)?;
        self.tls.flush().await.map_err(io)?;
        let answer = self.response().await.map_err(io)?;
        let v: serde_json::Value = serde_json::from_slice(&answer).map_err(|e| format!("{method}: {e}"))?;
        match v.get("error") {
            Some(e) if !e.is_null() => Err(format!("{method}: {e}")),
            _ => Ok(v.get("result").cloned().unwrap_or_default()),
        }
    }

    /// Reads one response's body (`Content-Length` or chunked).
    async fn response(&mut self) -> std::io::Result<Vec<u8>> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
        self.buf.drain(..head_end + 4);
        if !head.starts_with("http/1.1 200") {
            return Err(std::io::Error::other(head.lines().next().unwrap_or_default().to_string()));
        }
        let length = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok());
        match length {
            Some(n) => {
                while self.buf.len() < n {
                    self.fill().await?;
                }
                Ok(self.buf.drain(..n).collect())
            }
            None => {
                let mut body = Vec::new();
                loop {
                    let line_end = loop {
                        if let Some(i) = find(&self.buf, b"\r\n") {
                            break i;
                        }
                        self.fill().await?;
                    };
                    let size = usize::from_str_radix(String::from_utf8_lossy(&self.buf[..line_end]).trim(), 16)
                        .map_err(std::io::Error::other)?;
                    self.buf.drain(..line_end + 2);
                    while self.buf.len() < size + 2 {
                        self.fill().await?;
                    }
                    body.extend(self.buf.drain(..size));
                    self.buf.drain(..2);
                    if size == 0 {
                        return Ok(body);
                    }
                }
            }
        }
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 16 << 10];
        let n = self.tls.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the daemon closed the connection"));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[derive(Default)]
struct Counts {
    reads: AtomicU64,
    events: AtomicU64,
    events_carried: AtomicU64,
    errors: AtomicU64,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").trim().to_string()))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn client(
    n: usize,
    addr: SocketAddr,
    connector: TlsConnector,
    ready: Arc<tokio::sync::Barrier>,
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
) -> Vec<f64> {
    let mut latencies = Vec::new();
    let mut conn = Conn::open(addr, &connector).await.expect("a TLS connection");
    let session = conn
        .call("session.login_with_password", serde_json::json!(["root", PASSWORD, "1.0", format!("load-{n}")]))
        .await
        .expect("login");
    ready.wait().await;
    let mut token = serde_json::Value::from("");
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        match conn.call("VM.get_all_records", serde_json::json!([session])).await {
            Ok(_) => {
                latencies.push(t.elapsed().as_secs_f64() * 1e3);
                counts.reads.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                eprintln!("client {n}: {e}");
                counts.errors.fetch_add(1, Ordering::Relaxed);
                return latencies;
            }
        }
        match conn.call("event.from", serde_json::json!([session, ["vm"], token, 1.0])).await {
            Ok(r) => {
                counts.events.fetch_add(1, Ordering::Relaxed);
                let carried = r.get("events").and_then(|e| e.as_array()).map_or(0, |e| e.len());
                counts.events_carried.fetch_add(carried as u64, Ordering::Relaxed);
                token = r.get("token").cloned().unwrap_or_default();
            }
            Err(e) => {
                eprintln!("client {n}: {e}");
                counts.errors.fetch_add(1, Ordering::Relaxed);
                return latencies;
            }
        }
    }
    let _ = conn.call("session.logout", serde_json::json!([session])).await;
    latencies
}

fn main() {
    let Some(o) = opts() else { return };
    let _ = std::process::Command::new("renice").args(["-n", "19", "-p", &std::process::id().to_string()]).status();
    let https = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let d = Daemon::start_with(
        "load-",
        &[
            "--libvirt-uri",
            "none",
            "--https",
            &https.to_string(),
            "--sessions-per-user",
            &(o.clients + 100).to_string(),
        ],
    );
    let pem = std::fs::read(d.dir.path().join("data/xapi-ssl.pem")).expect("the generated certificate");
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.expect("a certificate")).expect("a root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = TlsConnector::from(Arc::new(config));
    let pid = d.child.id();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let (report, ok) = rt.block_on(async {
        let ready = Arc::new(tokio::sync::Barrier::new(o.clients + 1));
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let setup = Instant::now();
        let mut tasks = Vec::new();
        for n in 0..o.clients {
            tasks.push(tokio::spawn(client(n, https, connector.clone(), ready.clone(), stop.clone(), counts.clone())));
        }
        // The writer: one VM renamed every 200 ms.
        let mut w = Conn::open(https, &connector).await.expect("the writer's connection");
        let ws = w.call("session.login_with_password", serde_json::json!(["root", PASSWORD, "1.0", "load-writer"])).await.unwrap();
        let vm = w
            .call("VM.create", serde_json::json!([ws, {"name_label": "load", "memory_static_max": "268435456"}]))
            .await
            .unwrap();
        ready.wait().await;
        let logged_in = setup.elapsed();
        let rss_start = rss_kib(pid);
        let started = Instant::now();
        let mut rss = Vec::new();
        let mut i = 0u64;
        let mut next_sample = Instant::now();
        while started.elapsed() < Duration::from_secs(o.secs) {
            i += 1;
            if let Err(e) = w.call("VM.set_name_label", serde_json::json!([ws, vm, format!("load-{i}")])).await {
                eprintln!("writer: {e}");
                counts.errors.fetch_add(1, Ordering::Relaxed);
            }
            if Instant::now() >= next_sample {
                rss.push(rss_kib(pid));
                next_sample += Duration::from_secs(1);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let elapsed = started.elapsed().as_secs_f64();
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await.unwrap_or_default());
        }
        lat.sort_by(f64::total_cmp);
        let fifth = (rss.len() / 5).max(1);
        let avg = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64 / 1024.0;
        let (first, last) = (avg(&rss[..fifth.min(rss.len())]), avg(&rss[rss.len().saturating_sub(fifth)..]));
        let peak = rss.iter().copied().max().unwrap_or(0) as f64 / 1024.0;
        let errors = counts.errors.load(Ordering::Relaxed);
        let reads = counts.reads.load(Ordering::Relaxed);
        let events = counts.events.load(Ordering::Relaxed);
        let mut md = String::new();
        let _ = writeln!(md, "# Load: {} concurrent sessions over TLS\n", o.clients);
        let _ = writeln!(md, "```text\ncargo bench -p xapi-server --bench load -- --clients {} --secs {}\n```\n", o.clients, o.secs);
        let _ = writeln!(
            md,
            "{} clients, each with its own TLS connection and session, looping on `VM.get_all_records` then \
             `event.from([\"vm\"], token, 1.0)` for {:.0} s while a writer renames a VM every 200 ms (so every \
             commit wakes every watcher); JSON-RPC over HTTPS (rustls) on loopback, the load generator at nice 19 on \
             one thread. Logging all of them in took {:.1} s (argon2, one at a time). Load average before: {}.\n",
            o.clients,
            elapsed,
            logged_in.as_secs_f64(),
            load_avg()
        );
        let _ = writeln!(md, "| figure | value |\n|---|---|");
        let _ = writeln!(md, "| reads (`VM.get_all_records`) | {reads} ({:.0}/s) |", reads as f64 / elapsed);
        let _ = writeln!(
            md,
            "| `event.from` answers | {events} ({:.0}/s), carrying {} events |",
            events as f64 / elapsed,
            counts.events_carried.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            md,
            "| read latency median / p99 / max | {:.1} ms / {:.1} ms / {:.1} ms |",
            percentile(&lat, 50.0),
            percentile(&lat, 99.0),
            lat.last().copied().unwrap_or(0.0)
        );
        let _ = writeln!(md, "| errors | {errors} |");
        let _ = writeln!(
            md,
            "| daemon RSS: before the run / first fifth / last fifth / peak | {:.0} MB / {first:.0} MB / {last:.0} MB / {peak:.0} MB |",
            rss_start as f64 / 1024.0
        );
        let flat = last <= first * 1.10 + 2.0;
        let _ = writeln!(
            md,
            "\nNo errors: **{}**. Memory flat (last fifth within 10 % + 2 MB of the first): **{}**.",
            if errors == 0 { "yes" } else { "no" },
            if flat { "yes" } else { "no" }
        );
        (md, errors == 0 && flat)
    });
    println!("{report}");
    if o.write {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/reliability.md");
        common::write_section(&path, "load", &report, common::NewSection::Last);
        println!("written to {}", path.display());
    }
    drop(d);
    if !ok {
        std::process::exit(1);
    }
}
