//! The RPC benchmark: the real `xapi-server` (built by Cargo in the bench profile, i.e. release) on loopback,
//! each figure measured against a baseline that shows the ceiling, in the same run.
//!
//! ```text
//! cargo bench -p xapi-server --bench rpc [-- --runs N] [--no-write]
//! ```
//!
//! One run starts the daemon in a fresh data dir, fills it with VMs by `VM.create` over XML-RPC (several
//! connections), times `VM.get_all_records` at 1,000 and 10,000 VMs over XML-RPC and JSON-RPC, counts
//! `VM.get_record` calls/s on one and on four keep-alive connections, and reads the daemon's VmRSS and VmHWM from
//! `/proc/PID/status` after every phase. The baselines: for the RPCs, a trivial axum server in this process that
//! answers the same request with the bytes the daemon returned (captured first), driven by the same client at the
//! same concurrency, so that `ours/baseline` is what the daemon adds to HTTP, loopback and the client; for
//! `VM.create`, 4 KiB `write`+`fdatasync`s per second in the data dir (a commit cannot beat its fsync); for
//! memory, the RSS at start plus the store's size on disk. To tell encoding from transfer, the daemon's encoding of
//! each `get_all_records` answer is also timed alone, in this process, with the same codec.
//!
//! The client is a minimal HTTP/1.1 keep-alive client over `std::net::TcpStream` (one `write` per request, Nagle
//! off, the body read exactly by its `Content-Length` or chunked framing), so that as little client work as
//! possible is counted. It, the daemon's start and stop, the VM record, the statistics and the writing of the docs
//! section are shared with `events.rs`, in `common/mod.rs`.
//!
//! The figures of every run, their medians and the verdict against the issue's targets are printed and written
//! to this bench's section of `docs/benchmarks.md` (between `<!-- rpc:begin -->` and `<!-- rpc:end -->`; other
//! benches' sections are kept). The bench reports; it does not fail when a target is missed. Run without `--bench`
//! (as `cargo test --benches` does) it makes one quick smoke run over a few VMs and writes nothing.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, Uri, header};
use axum::response::Response;
use xapi_types::Value;
use xapi_types::wire::{Sink, jsonrpc, xmlrpc};

use common::{
    Conn, Daemon, JSON, MB, NewSection, PASSWORD, Received, SummaryRow, common_arg, load_avg, median, ms, per_run, s,
    thousands, vm_record, write_facts, write_section, write_summary,
};

const XML: &str = "text/xml";

/// What one invocation does.
struct Plan {
    /// Store sizes at which `get_all_records` is timed; `get_record` and the memory target use the last.
    sizes: Vec<usize>,
    /// Connections that create VMs concurrently.
    create_conns: usize,
    /// Connections of the concurrent `get_record` figure.
    read_conns: usize,
    warm_up: Duration,
    window: Duration,
    fsync_window: Duration,
    /// Timed `get_all_records` calls per store size and protocol (after one warm-up call).
    samples: usize,
    /// The last phase: this many connections each log in (and out) this many times, for the memory it leaves.
    logins: (usize, usize),
    runs: usize,
    write_doc: bool,
}

impl Plan {
    fn from_args() -> Plan {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let bench = args.iter().any(|a| a == "--bench");
        let mut plan = if bench {
            Plan {
                sizes: vec![1_000, 10_000],
                create_conns: 4,
                read_conns: 4,
                warm_up: Duration::from_millis(500),
                window: Duration::from_secs(5),
                fsync_window: Duration::from_secs(2),
                samples: 9,
                logins: (4, 4),
                runs: 3,
                write_doc: true,
            }
        } else {
            println!("smoke run (pass --bench, as `cargo bench` does, for the real one)");
            Plan {
                sizes: vec![20, 100],
                create_conns: 4,
                read_conns: 4,
                warm_up: Duration::from_millis(100),
                window: Duration::from_millis(300),
                fsync_window: Duration::from_millis(200),
                samples: 3,
                logins: (2, 2),
                runs: 1,
                write_doc: false,
            }
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if !common_arg(a, &mut it, &mut plan.runs, &mut plan.write_doc) {
                eprintln!("ignoring argument {a:?}");
            }
        }
        plan
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The client (`common::Conn`, timed) and the daemon under test (`common::Daemon`, with its memory and store).

struct Reply {
    status: u16,
    body: Vec<u8>,
    /// The sizes of the chunks of a chunked answer (`None`: the answer had a `Content-Length`).
    chunks: Option<Vec<usize>>,
    /// From the request's first byte sent to the response's first byte received.
    first_byte: Duration,
    /// From the request's first byte sent to the response's last byte received.
    total: Duration,
}

impl Conn {
    fn post(&mut self, path: &str, content_type: &str, body: &[u8]) -> Reply {
        let req = self.request(path, content_type, body);
        let start = self.send_raw(&req);
        self.first_byte();
        let first_byte = start.elapsed();
        let Received { status, body, chunks } = self.receive();
        Reply { status, body, chunks, first_byte, total: start.elapsed() }
    }

    /// One XML-RPC call that must succeed.
    fn xml(&mut self, method: &str, params: &[Value]) -> Value {
        let r = self.post("/", XML, &xmlrpc::write_call(method, params));
        assert_eq!(r.status, 200, "{method}: {}", String::from_utf8_lossy(&r.body));
        match xmlrpc::parse_result(&r.body).expect("a well-formed XML-RPC response") {
            Ok(v) => v,
            Err(e) => panic!("{method} failed: {e:?}"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Mem {
    rss_kb: u64,
    hwm_kb: u64,
}

impl Daemon {
    fn mem(&self) -> Mem {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("/proc/PID/status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("{name} in /proc/PID/status"))
        };
        Mem { rss_kb: field("VmRSS:"), hwm_kb: field("VmHWM:") }
    }

    /// The store's size on disk: the database file and its write-ahead log.
    fn store_bytes(&self) -> u64 {
        ["xapi.db", "xapi.db-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(self.dir.path().join("data").join(f)).ok())
            .map(|m| m.len())
            .sum()
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The baseline: a trivial axum server answering canned bytes.

/// Per path: the content type, the body, and the chunk sizes to send it in (`None`: one body with a length).
type Canned = Arc<RwLock<HashMap<String, (&'static str, Bytes, Option<Vec<usize>>)>>>;

struct Baseline {
    addr: SocketAddr,
    canned: Canned,
    _runtime: tokio::runtime::Runtime,
}

impl Baseline {
    /// On a multi-threaded runtime with one worker per core, as the daemon's `#[tokio::main]`.
    fn start() -> Baseline {
        let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
        let canned = Canned::default();
        let app = axum::Router::new().fallback(canned_answer).with_state(canned.clone());
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        runtime.spawn(async move { axum::serve(listener, app).await });
        Baseline { addr, canned, _runtime: runtime }
    }

    /// From now on, `POST path` answers what the daemon answered, framed as the daemon framed it.
    fn answer(&self, path: &str, content_type: &'static str, reply: &Reply) {
        let mut canned = self.canned.write().expect("canned answers");
        canned.insert(path.to_string(), (content_type, Bytes::copy_from_slice(&reply.body), reply.chunks.clone()));
    }
}

/// Reads the request body (as the daemon must) and answers the canned bytes with the daemon's headers, in one
/// body or streamed in the daemon's chunks (slices of the same buffer: no copying).
async fn canned_answer(State(canned): State<Canned>, uri: Uri, _body: Bytes) -> Response {
    let (content_type, bytes, chunks) = canned.read().expect("canned answers").get(uri.path()).cloned().unwrap_or((
        "text/plain",
        Bytes::from_static(b"no canned answer for this path\n"),
        None,
    ));
    let body = match chunks {
        None => Body::from(bytes),
        Some(sizes) => {
            let mut at = 0;
            let slices: Vec<Result<Bytes, Infallible>> = sizes
                .into_iter()
                .map(|n| {
                    at += n;
                    Ok(bytes.slice(at - n..at))
                })
                .collect();
            Body::from_stream(futures_util::stream::iter(slices))
        }
    };
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("X-Requested-With"));
    r
}

// ---------------------------------------------------------------------------------------------------------------
// Measurements.

/// Creates VMs `from..to` over `conns` concurrent XML-RPC connections; their refs and the wall time.
fn populate(addr: SocketAddr, session: &str, from: usize, to: usize, conns: usize) -> (Vec<String>, Duration) {
    let next = AtomicUsize::new(from);
    let refs = Mutex::new(Vec::with_capacity(to - from));
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..conns {
            scope.spawn(|| {
                let mut conn = Conn::open(addr);
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= to {
                        break;
                    }
                    let r = conn.xml("VM.create", &[s(session), vm_record(i)]);
                    mine.push(r.as_str().expect("VM.create returns a ref").to_string());
                }
                refs.lock().expect("refs").extend(mine);
            });
        }
    });
    (refs.into_inner().expect("refs"), start.elapsed())
}

/// 4 KiB appends, each followed by `fdatasync`, per second, in `dir`: the ceiling of one-commit-per-call writes.
fn fsync_rate(dir: &Path, window: Duration) -> f64 {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).expect("fsync probe");
    let block = [0x5au8; 4096];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < window {
        f.write_all(&block).expect("write");
        f.sync_data().expect("fdatasync");
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(path);
    rate
}

/// Calls per second of `POST path req` over `conns` keep-alive connections, each sending its next request when
/// the previous answer is in; calls completed in the `window` after `warm_up` count. Every answer must be a 200 of
/// `expect_len` bytes.
fn rate(addr: SocketAddr, path: &str, req: &[u8], conns: usize, plan: &Plan, expect_len: usize) -> f64 {
    let start = Instant::now();
    let (counted_from, end) = (start + plan.warm_up, start + plan.warm_up + plan.window);
    let total: u64 = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..conns)
            .map(|_| {
                scope.spawn(move || {
                    let mut conn = Conn::open(addr);
                    let mut n = 0u64;
                    loop {
                        let r = conn.post(path, XML, req);
                        assert!(r.status == 200 && r.body.len() == expect_len, "unexpected answer from {addr}");
                        let now = Instant::now();
                        if now >= end {
                            break n;
                        }
                        if now >= counted_from {
                            n += 1;
                        }
                    }
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("a client thread")).sum()
    });
    total as f64 / plan.window.as_secs_f64()
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

/// Calls that took at least 35 ms longer than the fastest of their series: the signature of a segment held back
/// by Nagle's algorithm until the client's delayed ACK (40 ms on Linux).
fn stalls(v: &[f64]) -> usize {
    let (lo, _) = min_max(v);
    v.iter().filter(|&&x| x - lo >= 35.0).count()
}

/// One store size and protocol of `get_all_records`.
#[derive(Clone)]
struct Gar {
    vms: usize,
    proto: &'static str,
    body_bytes: usize,
    /// How many chunks the daemon sent the body in (`None`: one body with a `Content-Length`).
    chunks: Option<usize>,
    records: usize,
    /// Milliseconds per timed call.
    ours: Vec<f64>,
    ours_first_byte: Vec<f64>,
    base: Vec<f64>,
    /// Our codec's time to parse the body, median of three.
    parse_ms: f64,
    /// Our codec's time to encode the parsed records again as the daemon does, median of three.
    encode_ms: f64,
    /// Whether that encoding gave the daemon's bytes exactly.
    encode_same: bool,
}

/// The daemon's encoding of a record set without the daemon: the response envelope, then record after record, a
/// chunk taken off whenever the buffer holds 256 KiB (as `xapi-server/src/rpc.rs` does; the chunks are dropped
/// here instead of sent). Returns the bytes (chunks concatenated) for comparison.
fn encode_like_daemon<S: Sink>(
    mut sink: S,
    buf: fn(&mut S) -> &mut Vec<u8>,
    records: &[(String, Value)],
    end: impl FnOnce(&mut Vec<u8>),
    keep: bool,
) -> Vec<u8> {
    const CHUNK: usize = 256 << 10;
    let mut all = Vec::new();
    sink.begin_struct();
    for (r, rec) in records {
        sink.key(r);
        rec.emit(&mut sink);
        if buf(&mut sink).len() >= CHUNK {
            let chunk = std::mem::replace(buf(&mut sink), Vec::with_capacity(CHUNK + CHUNK / 4));
            if keep {
                all.extend_from_slice(&chunk);
            }
        }
    }
    sink.end_struct();
    end(buf(&mut sink));
    all.extend_from_slice(buf(&mut sink));
    all
}

fn encode(json: bool, records: &[(String, Value)], keep: bool) -> Vec<u8> {
    if json {
        let env = jsonrpc::Envelope { version: jsonrpc::Version::V2, id: serde_json::json!(1) };
        let mut out = Vec::new();
        jsonrpc::begin_success(&mut out, &env);
        let end = |out: &mut Vec<u8>| jsonrpc::end_success(out, &env);
        encode_like_daemon(jsonrpc::JsonSink::with_buffer(out), |s| &mut s.out, records, end, keep)
    } else {
        let mut out = Vec::new();
        xmlrpc::begin_success(&mut out);
        encode_like_daemon(xmlrpc::XmlSink::with_buffer(out), |s| &mut s.out, records, xmlrpc::end_success, keep)
    }
}

/// Times `VM.get_all_records` against the daemon and against the baseline answering the same bytes, alternating.
fn time_get_all_records(d: &Daemon, base: &Baseline, session: &str, vms: usize, json: bool, plan: &Plan) -> Gar {
    let (path, ct, proto) = if json { ("/jsonrpc", JSON, "JSON-RPC") } else { ("/", XML, "XML-RPC") };
    let req = if json {
        jsonrpc::write_call("VM.get_all_records", &[s(session)], jsonrpc::Version::V2, serde_json::json!(1))
    } else {
        xmlrpc::write_call("VM.get_all_records", &[s(session)])
    };
    let mut ours_conn = Conn::open(d.addr);
    let captured = ours_conn.post(path, ct, &req); // also the warm-up
    assert_eq!(captured.status, 200);
    base.answer(path, ct, &captured);
    let chunks = captured.chunks.as_ref().map(Vec::len);
    let body = captured.body;
    let mut base_conn = Conn::open(base.addr);
    assert_eq!(base_conn.post(path, ct, &req).body.len(), body.len());

    let mut g = Gar {
        vms,
        proto,
        body_bytes: body.len(),
        chunks,
        records: 0,
        ours: Vec::new(),
        ours_first_byte: Vec::new(),
        base: Vec::new(),
        parse_ms: 0.0,
        encode_ms: 0.0,
        encode_same: false,
    };
    for _ in 0..plan.samples {
        let r = ours_conn.post(path, ct, &req);
        assert!(r.status == 200 && r.body.len() == body.len(), "get_all_records changed under the benchmark");
        g.ours.push(ms(r.total));
        g.ours_first_byte.push(ms(r.first_byte));
        let r = base_conn.post(path, ct, &req);
        assert_eq!(r.body.len(), body.len());
        g.base.push(ms(r.total));
    }
    let mut parse = Vec::new();
    let mut value = Value::Nil;
    for _ in 0..3 {
        let start = Instant::now();
        let v = if json { jsonrpc::parse_response(&body) } else { xmlrpc::parse_result(&body) };
        parse.push(ms(start.elapsed()));
        value = v.expect("a well-formed response").expect("get_all_records succeeds");
    }
    g.parse_ms = median(&parse);
    let records = value.as_struct().expect("a map of records");
    g.records = records.len();
    g.encode_same = encode(json, records, true) == body;
    let mut times = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        std::hint::black_box(encode(json, records, false));
        times.push(ms(start.elapsed()));
    }
    g.encode_ms = median(&times);
    assert!(g.records > vms, "{} records for {vms} VMs (and the control domain)", g.records);
    g
}

/// Everything one run measured.
struct Run {
    fsync_per_s: f64,
    /// (VMs before, VMs after, wall time).
    populate: Vec<(usize, usize, Duration)>,
    gar: Vec<Gar>,
    get_record_bytes: usize,
    /// (connections, ours, baseline) in calls/s.
    get_record: Vec<(usize, f64, f64)>,
    /// (phase, memory).
    mem: Vec<(String, Mem)>,
    /// Wall time of one `session.login_with_password` (+ `logout`) with several at a time.
    login_ms: f64,
    store_bytes: u64,
    load: (String, String),
}

fn one_run(plan: &Plan, base: &Baseline, index: usize) -> Run {
    let load_before = load_avg();
    let d = Daemon::start("xapi-bench-");
    println!("run {index}: xapi-server pid {} on {} (data in {})", d.child.id(), d.addr, d.dir.path().display());
    let mut mem = vec![("after start".to_string(), d.mem())];
    let fsync_per_s = fsync_rate(d.dir.path(), plan.fsync_window);

    let mut login = Conn::open(d.addr);
    let session = login.xml("session.login_with_password", &[s("root"), s(PASSWORD)]);
    let session = session.as_str().expect("a session ref").to_string();

    let mut populate_times = Vec::new();
    let mut gar = Vec::new();
    let mut refs = Vec::new();
    let mut have = 0;
    for &n in &plan.sizes {
        let (new, took) = populate(d.addr, &session, have, n, plan.create_conns);
        println!(
            "  created VMs {have}..{n} in {:.1} s ({:.0}/s)",
            took.as_secs_f64(),
            (n - have) as f64 / took.as_secs_f64()
        );
        populate_times.push((have, n, took));
        refs.extend(new);
        have = n;
        mem.push((format!("after creating {} VMs", thousands(n as f64)), d.mem()));
        for json in [false, true] {
            let g = time_get_all_records(&d, base, &session, n, json, plan);
            println!(
                "  get_all_records {n} VMs {}: {:.1} MB, ours {:.1} ms (first byte {:.1} ms), baseline {:.1} ms, \
                 encode {:.1} ms{}, parse {:.1} ms",
                g.proto,
                g.body_bytes as f64 / MB,
                median(&g.ours),
                median(&g.ours_first_byte),
                median(&g.base),
                g.encode_ms,
                if g.encode_same { "" } else { " (not the daemon's bytes)" },
                g.parse_ms
            );
            gar.push(g);
        }
        mem.push((format!("after get_all_records at {} VMs", thousands(n as f64)), d.mem()));
    }

    let vm = refs.first().expect("at least one VM").clone();
    let req = xmlrpc::write_call("VM.get_record", &[s(&session), s(vm)]);
    let captured = login.post("/", XML, &req);
    assert_eq!(captured.status, 200);
    xmlrpc::parse_result(&captured.body).expect("well-formed").expect("VM.get_record succeeds");
    base.answer("/", XML, &captured);
    let mut get_record = Vec::new();
    for conns in [1, plan.read_conns] {
        let ours = rate(d.addr, "/", &req, conns, plan, captured.body.len());
        let baseline = rate(base.addr, "/", &req, conns, plan, captured.body.len());
        println!("  get_record on {conns} connection(s): ours {ours:.0}/s, baseline {baseline:.0}/s");
        get_record.push((conns, ours, baseline));
    }
    mem.push(("after get_record".to_string(), d.mem()));

    // Clients log in: Xen Orchestra on every (re)connection, scripts on every run. Each login checks the
    // password with argon2; what that leaves in the daemon's memory is the last phase.
    let (conns, each) = plan.logins;
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..conns {
            scope.spawn(|| {
                let mut conn = Conn::open(d.addr);
                for _ in 0..each {
                    let session = conn.xml("session.login_with_password", &[s("root"), s(PASSWORD)]);
                    conn.xml("session.logout", &[session]);
                }
            });
        }
    });
    let login_s = start.elapsed().as_secs_f64() / each as f64;
    println!("  {} logins, {conns} at a time: {:.0} ms each", conns * each, login_s * 1000.0);
    mem.push((format!("after {} more logins, {conns} at a time", conns * each), d.mem()));
    let store_bytes = d.store_bytes();
    drop(d);
    Run {
        fsync_per_s,
        populate: populate_times,
        gar,
        get_record_bytes: captured.body.len(),
        get_record,
        mem,
        login_ms: login_s * 1000.0,
        store_bytes,
        load: (load_before, load_avg()),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Reporting.

#[derive(Clone, Copy)]
enum Target {
    AtLeast(f64),
    AtMost(f64),
}

#[derive(Clone, Copy)]
enum Unit {
    PerSecond,
    Millis,
    Megabytes,
}

impl Unit {
    fn fmt(self, v: f64) -> String {
        match self {
            Unit::PerSecond => format!("{}/s", thousands(v)),
            Unit::Millis if v < 10.0 => format!("{v:.2} ms"),
            Unit::Millis => format!("{v:.1} ms"),
            Unit::Megabytes => format!("{v:.1} MB"),
        }
    }
}

/// One row of the summary: a figure from every run.
struct Figure {
    name: String,
    unit: Unit,
    ours: Vec<f64>,
    base: Vec<f64>,
    base_name: &'static str,
    target: Option<Target>,
}

impl Figure {
    fn verdict(&self) -> &'static str {
        let v = median(&self.ours);
        match self.target {
            None => "—",
            Some(Target::AtLeast(t)) if v >= t => "pass",
            Some(Target::AtMost(t)) if v <= t => "pass",
            Some(_) => "**MISS**",
        }
    }

    fn target_text(&self) -> String {
        match self.target {
            None => "—".into(),
            Some(Target::AtLeast(t)) => format!("≥ {}", self.unit.fmt(t)),
            Some(Target::AtMost(t)) => format!("≤ {}", self.unit.fmt(t)),
        }
    }

    fn ratio(&self) -> f64 {
        let ratios: Vec<f64> = self.ours.iter().zip(&self.base).map(|(o, b)| o / b).collect();
        median(&ratios)
    }
}

fn figures(runs: &[Run], plan: &Plan) -> Vec<Figure> {
    let last = *plan.sizes.last().expect("a store size");
    let last_n = thousands(last as f64);
    let col = |f: &dyn Fn(&Run) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
    let mut out = vec![Figure {
        name: format!("`VM.create`, {} connections, 0 → {last_n} VMs (XML-RPC)", plan.create_conns),
        unit: Unit::PerSecond,
        ours: col(&|r| {
            let n: usize = r.populate.iter().map(|(a, b, _)| b - a).sum();
            n as f64 / r.populate.iter().map(|p| p.2.as_secs_f64()).sum::<f64>()
        }),
        base: col(&|r| r.fsync_per_s),
        base_name: "4 KiB write + fdatasync /s in the data dir",
        target: None,
    }];
    for (i, &(conns, _, _)) in runs[0].get_record.iter().enumerate() {
        out.push(Figure {
            name: format!(
                "`VM.get_record`, {conns} keep-alive connection{} (XML-RPC, {last_n} VMs)",
                if conns == 1 { "" } else { "s" }
            ),
            unit: Unit::PerSecond,
            ours: col(&|r| r.get_record[i].1),
            base: col(&|r| r.get_record[i].2),
            base_name: "trivial axum server, same bytes, same client",
            target: Some(Target::AtLeast(10_000.0)),
        });
    }
    for (i, g) in runs[0].gar.iter().enumerate() {
        let target = match (g.vms == last && last >= 10_000, g.proto) {
            (true, "XML-RPC") => Some(Target::AtMost(150.0)),
            (true, _) => Some(Target::AtMost(100.0)),
            _ => None,
        };
        out.push(Figure {
            name: format!("`VM.get_all_records`, {} VMs, {} (median)", thousands(g.vms as f64), g.proto),
            unit: Unit::Millis,
            ours: col(&|r| median(&r.gar[i].ours)),
            base: col(&|r| median(&r.gar[i].base)),
            base_name: "trivial axum server, same bytes, same client",
            target,
        });
    }
    let floor = |r: &Run| (r.mem[0].1.rss_kb as f64 * 1024.0 + r.store_bytes as f64) / MB;
    let after = |r: &Run| r.mem.iter().rev().find(|(p, _)| p.starts_with("after get_all_records")).expect("a phase").1;
    out.push(Figure {
        name: format!("daemon VmRSS, {last_n} VMs, after `get_all_records`"),
        unit: Unit::Megabytes,
        ours: col(&|r| after(r).rss_kb as f64 * 1024.0 / MB),
        base: col(&floor),
        base_name: "RSS at start + store size on disk",
        target: Some(Target::AtMost(100.0)),
    });
    out.push(Figure {
        name: format!("daemon VmHWM (peak RSS), {last_n} VMs, after `get_all_records`"),
        unit: Unit::Megabytes,
        ours: col(&|r| after(r).hwm_kb as f64 * 1024.0 / MB),
        base: col(&floor),
        base_name: "RSS at start + store size on disk",
        target: Some(Target::AtMost(100.0)),
    });
    let (conns, each) = plan.logins;
    out.push(Figure {
        name: format!(
            "daemon VmRSS, {last_n} VMs, after {} more logins, {conns} at a time (the same target, in steady use)",
            conns * each
        ),
        unit: Unit::Megabytes,
        ours: col(&|r| r.mem.last().expect("a phase").1.rss_kb as f64 * 1024.0 / MB),
        base: col(&floor),
        base_name: "RSS at start + store size on disk",
        target: Some(Target::AtMost(100.0)),
    });
    out
}

fn report(runs: &[Run], plan: &Plan, took: Duration) -> String {
    let figs = figures(runs, plan);
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "# Benchmarks\n");
    let _ = writeln!(
        w,
        "Written by `xapi-server/benches/rpc.rs`; regenerate (≈ {:.0} min for {} run{}) with:\n\n\
         ```\ncargo bench -p xapi-server --bench rpc\n```\n",
        (took.as_secs_f64() / 60.0).ceil(),
        runs.len(),
        if runs.len() == 1 { "" } else { "s" }
    );
    write_facts(w, runs.iter().map(|r| &r.load));
    let _ = writeln!(w, "\n## Summary\n");
    let _ = writeln!(
        w,
        "Each figure is the median over {} runs (each run: a fresh daemon and data dir); *per run* shows the spread. \
         *ours/baseline* is the median of the runs' ratios: for rates 1.00× means the daemon reaches the ceiling; \
         for times and memory it is how many times the baseline it takes.\n",
        runs.len()
    );
    let rows: Vec<SummaryRow> = figs
        .iter()
        .map(|f| SummaryRow {
            name: &f.name,
            ours: f.unit.fmt(median(&f.ours)),
            per_run: per_run(&f.ours, |x| f.unit.fmt(x)),
            base: f.unit.fmt(median(&f.base)),
            base_name: f.base_name,
            ratio: format!("{:.2}×", f.ratio()),
            target: f.target_text(),
            verdict: f.verdict(),
        })
        .collect();
    write_summary(w, &rows);

    let _ = writeln!(w, "\n## `VM.get_all_records` in detail\n");
    let _ = writeln!(
        w,
        "Time from the request's first byte sent to the response's last byte received, on one keep-alive connection, \
         {} timed calls per run after one warm-up, alternating with the baseline. *Framing* is how the daemon sent \
         the body (a length, or chunked transfer encoding and how many chunks); the baseline sends the same bytes in \
         the same chunks. *First byte* is when the daemon's first byte arrived (for a streamed answer, after the \
         first chunk is encoded). *Encode* is the daemon's encoding alone: the same codec, in the benchmark process, \
         writing the parsed records again record by record into 256 KiB chunks as `rpc.rs` does (no HTTP, no \
         store){}. *Parse* is our codec reading the body on the client. Neither is part of any server figure. \
         *40 ms stalls* counts calls at least 35 ms slower than the fastest of their run: a last partial TCP segment \
         held back by Nagle's algorithm until the client's delayed ACK (neither server sets `TCP_NODELAY`); at \
         10,000 VMs ordinary noise of that size is counted too. \
         Medians over runs of per-run medians; min–max over all calls of all runs.\n",
        plan.samples,
        if runs.iter().all(|r| r.gar.iter().all(|g| g.encode_same)) {
            "; it gives the daemon's bytes exactly"
        } else {
            "; **it did not give the daemon's bytes exactly**, so take it as an estimate"
        }
    );
    let _ = writeln!(
        w,
        "| VMs | protocol | records | body | framing | ours | min–max | 40 ms stalls | first byte | baseline | \
         baseline stalls | ours/baseline | encode | parse |"
    );
    let _ = writeln!(w, "|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, g) in runs[0].gar.iter().enumerate() {
        let all: Vec<f64> = runs.iter().flat_map(|r| r.gar[i].ours.iter().copied()).collect();
        let (lo, hi) = min_max(&all);
        let med = |f: &dyn Fn(&Gar) -> f64| median(&runs.iter().map(|r| f(&r.gar[i])).collect::<Vec<_>>());
        let ratio = med(&|g| median(&g.ours) / median(&g.base));
        let calls = runs.iter().map(|r| r.gar[i].ours.len()).sum::<usize>();
        let stalled = |f: &dyn Fn(&Gar) -> &Vec<f64>| runs.iter().map(|r| stalls(f(&r.gar[i]))).sum::<usize>();
        let _ = writeln!(
            w,
            "| {} | {} | {} | {:.1} MB | {} | {:.1} ms | {:.1}–{:.1} ms | {}/{calls} | {:.1} ms | {:.1} ms | \
             {}/{calls} | {:.2}× | {:.1} ms | {:.1} ms |",
            thousands(g.vms as f64),
            g.proto,
            thousands(g.records as f64),
            g.body_bytes as f64 / MB,
            g.chunks.map_or("length".to_string(), |n| format!("{n} chunk{}", if n == 1 { "" } else { "s" })),
            med(&|g| median(&g.ours)),
            lo,
            hi,
            stalled(&|g| &g.ours),
            med(&|g| median(&g.ours_first_byte)),
            med(&|g| median(&g.base)),
            stalled(&|g| &g.base),
            ratio,
            med(&|g| g.encode_ms),
            med(&|g| g.parse_ms),
        );
    }

    let _ = writeln!(w, "\n## Creating the VMs\n");
    let _ = writeln!(
        w,
        "`VM.create` over XML-RPC on {} concurrent connections, each call one SQLite transaction committed with \
         `synchronous=FULL` before it answers. The baseline is the data dir's fsync rate: one commit per call cannot \
         go faster.\n",
        plan.create_conns
    );
    let _ = writeln!(w, "| VMs | wall time | creates/s | per run |");
    let _ = writeln!(w, "|---|---:|---:|---|");
    for (i, &(a, b, _)) in runs[0].populate.iter().enumerate() {
        let secs: Vec<f64> = runs.iter().map(|r| r.populate[i].2.as_secs_f64()).collect();
        let rates: Vec<f64> = secs.iter().map(|t| (b - a) as f64 / t).collect();
        let _ = writeln!(
            w,
            "| {} → {} | {:.1} s | {} | {} |",
            thousands(a as f64),
            thousands(b as f64),
            median(&secs),
            Unit::PerSecond.fmt(median(&rates)),
            per_run(&rates, |x| Unit::PerSecond.fmt(x))
        );
    }
    let fsync: Vec<f64> = runs.iter().map(|r| r.fsync_per_s).collect();
    let _ = writeln!(
        w,
        "\nfdatasync baseline: {} ({}).",
        Unit::PerSecond.fmt(median(&fsync)),
        per_run(&fsync, |x| Unit::PerSecond.fmt(x))
    );

    let _ = writeln!(w, "\n## Daemon memory by phase\n");
    let _ = writeln!(
        w,
        "From `/proc/PID/status` (1 MB = 10⁶ bytes), medians over runs. The store on disk (`xapi.db` + WAL) was \
         {:.1} MB \
         at the end.\n",
        median(&runs.iter().map(|r| r.store_bytes as f64 / MB).collect::<Vec<_>>())
    );
    let _ = writeln!(w, "| phase | VmRSS | VmHWM |");
    let _ = writeln!(w, "|---|---:|---:|");
    for (i, (phase, _)) in runs[0].mem.iter().enumerate() {
        let rss: Vec<f64> = runs.iter().map(|r| r.mem[i].1.rss_kb as f64 * 1024.0 / MB).collect();
        let hwm: Vec<f64> = runs.iter().map(|r| r.mem[i].1.hwm_kb as f64 * 1024.0 / MB).collect();
        let _ = writeln!(w, "| {phase} | {:.1} MB | {:.1} MB |", median(&rss), median(&hwm));
    }

    let _ = writeln!(
        w,
        "\nOne `session.login_with_password` (argon2id) and `logout`, {} at a time: {:.0} ms ({}).",
        plan.logins.0,
        median(&runs.iter().map(|r| r.login_ms).collect::<Vec<_>>()),
        per_run(&runs.iter().map(|r| r.login_ms).collect::<Vec<_>>(), |x| Unit::Millis.fmt(x))
    );

    let _ = writeln!(w, "\n## Method\n");
    let _ = writeln!(
        w,
        "- The daemon is the real binary, started with `--data-dir`, `--http 127.0.0.1:PORT` and `--socket` in a \
         temporary directory under `target/tmp` (the same disk as the build), `RUST_LOG=warn`, and stopped by its \
         PID at the end of each run.\n\
         - The client is a minimal HTTP/1.1 keep-alive client over `std::net::TcpStream` (`TCP_NODELAY`, one `write` \
         per request, the body read exactly by its `Content-Length` or chunked framing; it does not parse \
         `get_record` answers, only checks their status and length), in the benchmark process; requests are \
         written by `xapi_types::wire`.\n\
         - The baseline server is axum on a multi-threaded tokio runtime with one worker per core, as the daemon's; it \
         reads the request body and answers the bytes the daemon gave for the same request, with the daemon's \
         headers. Client, daemon and baseline share the machine's {} cores.\n\
         - `VM.get_record` reads one of the created VMs ({} bytes of XML); calls/s count the calls completed in \
         {:.1} s \
         after {} ms of warm-up, on 1 and on {} connections.\n\
         - VMs are created with a template-like record: memory and vCPU settings, actions, HVM boot parameters, six \
         platform flags, the template's `recommendations` XML, three `other_config` keys and two tags.",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        runs[0].get_record_bytes,
        plan.window.as_secs_f64(),
        plan.warm_up.as_millis(),
        plan.read_conns
    );
    md
}

fn main() {
    let plan = Plan::from_args();
    let started = Instant::now();
    let base = Baseline::start();
    let runs: Vec<Run> = (1..=plan.runs).map(|i| one_run(&plan, &base, i)).collect();
    let md = report(&runs, &plan, started.elapsed());
    println!("\n{md}");
    if plan.write_doc {
        let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/benchmarks.md"));
        write_section(&path, "rpc", &md, NewSection::First);
        println!("wrote the rpc section of {}", path.display());
    }
    println!("total {:.0} s", started.elapsed().as_secs_f64());
}
