//! The events benchmark: how long a committed write takes to reach `event.from` watchers, with 1, 100 and 1,000
//! of them while 1,000 writes/s are made, and what the daemon's memory does meanwhile. The real `xapi-server`
//! (built by Cargo in the bench profile, i.e. release) on loopback; each figure beside a baseline measured in the
//! same run.
//!
//! ```text
//! cargo bench -p xapi-server --bench events [-- --runs N] [--no-write] [--scale FACTOR] [--stalled N]
//! ```
//!
//! (`--scale` multiplies every phase's length, to see whether memory levels off; `--stalled N` sets the number of
//! stalled clients.)
//!
//! One run starts the daemon in a fresh data dir, creates VMs by `VM.create` (the template-like record of
//! `rpc.rs`, in `common/mod.rs`), and then goes through phases, each with a fresh set of watchers:
//!
//! * **writes alone** (the baseline): the writers and the probe below, no watcher;
//! * **1 watcher** and **100 watchers** subscribed to `*` (as Xen Orchestra; XenCenter lists every class), so that
//!   every write is an event for every watcher;
//! * **1,000 watchers**, each subscribed to one VM of its own (`vm/<ref>`): every write is an event for one watcher,
//!   but every commit wakes all of them;
//! * **stalled clients**: connections that send many `event.from` calls for everything (pipelined, token `""`, so
//!   every answer is every VM) and never read, beside one ordinary `*` watcher.
//!
//! In every phase the writers make `VM.set_name_label` calls at a fixed pace (1,000/s in all, spread over a few
//! keep-alive connections, VM after VM round the set); the name carries the write's sequence number (`w<seq>`), so a
//! watcher knows which write a snapshot shows. A write's *answer* arriving at its writer is after its commit; the
//! *latency* of an event is when the `event.from` answer carrying it arrived minus that answer (it can be negative:
//! the watcher may hear before the writer), and, as an upper bound, minus when the write was sent. Several writes
//! to one VM between two calls of a watcher are one event (the latest snapshot); they count as *coalesced*, and
//! only the write whose value the snapshot carries has a latency. Every watcher must see the last write to every
//! VM it watches; one it never sees counts as *lost*. A probe connection times `pool.get_name_label` every 10 ms:
//! its round trip in the writes-alone phase is the baseline of the latencies (a trivial call's answer, under the
//! same writes), and in the other phases shows what the watchers do to ordinary calls. The daemon's VmRSS is read
//! from `/proc/PID/status` every 250 ms; its CPU time from `/proc/PID/stat`.
//!
//! The client is the minimal HTTP/1.1 keep-alive client of `rpc.rs` (in `common/mod.rs`) over
//! `std::net::TcpStream`, JSON-RPC (as Xen Orchestra and XenCenter speak it), one thread per connection. Watchers
//! do not parse the answers: they take the token, count the events and read the `name_label`s from the bytes.
//!
//! The figures of every run, their medians and the verdict against the issue's targets are printed and written to
//! this bench's section of `docs/benchmarks.md` (between `<!-- events:begin -->` and `<!-- events:end -->`; the
//! rest of the file is left as it is). The bench reports; it does not fail when a target is missed. Run without
//! `--bench` (as `cargo test --benches` does) it makes one quick smoke run and writes nothing.

mod common;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use xapi_types::Value;
use xapi_types::wire::jsonrpc;

use common::{
    Conn, Daemon, JSON, MB, NewSection, PASSWORD, Received, SummaryRow, command_output, common_arg, load_avg, median,
    ms, per_run, percentile, s, thousands, vm_record, write_facts, write_section, write_summary,
};

/// The issue's target: p99 delivery latency at 100 watchers.
const TARGET_P99_MS: f64 = 20.0;
/// "Memory flat": VmRSS may grow at most this much from the end of the warm-up to the end of a phase. Bounded
/// one-time steps of a few MB (a new malloc arena for a thread, per-connection buffers) happen in any phase, writes
/// alone too; a leak of 5 bytes per event delivered would exceed this in the 100-watcher phase.
const FLAT_MB: f64 = 5.0;

/// What the watchers of a phase subscribe to.
#[derive(Clone, Copy, PartialEq)]
enum Watch {
    /// `["*"]`, as Xen Orchestra: every write is an event for every watcher.
    Everything,
    /// `["vm/<ref>", "pool"]`: one VM of its own (watcher `i` watches VM `i`), and the pool, which the bench
    /// writes once to end a phase.
    OwnVm,
}

impl Watch {
    fn text(self) -> &'static str {
        match self {
            Watch::Everything => "`*`",
            Watch::OwnVm => "`vm/<its own VM>`",
        }
    }
}

#[derive(Clone)]
struct PhaseSpec {
    name: String,
    watchers: usize,
    watch: Watch,
    /// Connections that pipeline `event.from` calls and never read.
    stalled: usize,
    window: Duration,
}

/// What one invocation does.
struct Plan {
    vms: usize,
    create_conns: usize,
    /// Writes per second, in all.
    rate: f64,
    writer_conns: usize,
    probe_every: Duration,
    /// Writes sent in the first `warm_up` of a phase are made (and checked) but not timed.
    warm_up: Duration,
    sample_every: Duration,
    phases: Vec<PhaseSpec>,
    /// `event.from` calls each stalled connection sends at once.
    pipelined: usize,
    runs: usize,
    write_doc: bool,
}

impl Plan {
    fn from_args() -> Plan {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let bench = args.iter().any(|a| a == "--bench");
        let phase = |watchers: usize, watch: Watch, stalled: usize, secs: f64| {
            let name = match (watchers, stalled) {
                (0, _) => "writes alone".to_string(),
                (w, 0) => format!("{} watcher{}", thousands(w as f64), if w == 1 { "" } else { "s" }),
                (w, s) => format!("{s} stalled clients + {w} watcher"),
            };
            PhaseSpec { name, watchers, watch, stalled, window: Duration::from_secs_f64(secs) }
        };
        let mut plan = if bench {
            Plan {
                vms: 1_000,
                create_conns: 4,
                rate: 1_000.0,
                writer_conns: 16,
                probe_every: Duration::from_millis(10),
                warm_up: Duration::from_secs(1),
                sample_every: Duration::from_millis(250),
                phases: vec![
                    phase(0, Watch::Everything, 0, 4.0),
                    phase(1, Watch::Everything, 0, 6.0),
                    phase(100, Watch::Everything, 0, 10.0),
                    phase(1_000, Watch::OwnVm, 0, 8.0),
                    phase(1, Watch::Everything, 50, 6.0),
                ],
                pipelined: 100,
                runs: 3,
                write_doc: true,
            }
        } else {
            println!("smoke run (pass --bench, as `cargo bench` does, for the real one)");
            Plan {
                vms: 20,
                create_conns: 2,
                rate: 200.0,
                writer_conns: 2,
                probe_every: Duration::from_millis(10),
                warm_up: Duration::from_millis(100),
                sample_every: Duration::from_millis(100),
                phases: vec![
                    phase(0, Watch::Everything, 0, 0.4),
                    phase(1, Watch::Everything, 0, 0.4),
                    phase(5, Watch::Everything, 0, 0.4),
                    phase(20, Watch::OwnVm, 0, 0.4),
                    phase(1, Watch::Everything, 3, 0.4),
                ],
                pipelined: 10,
                runs: 1,
                write_doc: false,
            }
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if common_arg(a, &mut it, &mut plan.runs, &mut plan.write_doc) {
                continue;
            }
            match a.as_str() {
                "--stalled" => {
                    let n: usize = it.next().and_then(|n| n.parse().ok()).expect("--stalled N");
                    for p in plan.phases.iter_mut().filter(|p| p.stalled > 0) {
                        p.stalled = n;
                        p.name = format!("{n} stalled clients + {} watcher", p.watchers);
                    }
                }
                "--scale" => {
                    let f: f64 = it.next().and_then(|n| n.parse().ok()).filter(|&f| f > 0.0).expect("--scale FACTOR");
                    for p in &mut plan.phases {
                        p.window = p.window.mul_f64(f);
                    }
                }
                other => eprintln!("ignoring argument {other:?}"),
            }
        }
        plan
    }

    /// The phase with the issue's latency target: the one with 100 watchers, if any.
    fn target_phase(&self) -> Option<usize> {
        self.phases.iter().position(|p| p.watchers == 100 && p.stalled == 0)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The client (`common::Conn`, over JSON-RPC) and the daemon under test (`common::Daemon`, with its PID and VmRSS).

impl Conn {
    /// One request and its response; answers when the request was sent.
    fn post(&mut self, body: &[u8]) -> (Instant, u16, Vec<u8>) {
        let req = self.request("/jsonrpc", JSON, body);
        let sent = self.send_raw(&req);
        let Received { status, body, .. } = self.receive();
        (sent, status, body)
    }

    /// One JSON-RPC call that must succeed.
    fn call(&mut self, method: &str, params: &[Value]) -> Value {
        let (_, status, body) = self.post(&json_call(method, params));
        assert_eq!(status, 200, "{method}: {}", String::from_utf8_lossy(&body));
        match jsonrpc::parse_response(&body).expect("a well-formed JSON-RPC response") {
            Ok(v) => v,
            Err(e) => panic!("{method} failed: {e:?}"),
        }
    }
}

fn json_call(method: &str, params: &[Value]) -> Vec<u8> {
    jsonrpc::write_call(method, params, jsonrpc::Version::V2, serde_json::json!(1))
}

impl Daemon {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn rss_kb(&self) -> u64 {
        rss_kb(self.pid()).expect("the daemon's VmRSS")
    }
}

fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// User + system CPU time of a process, in seconds (`self` for this one).
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces) in parentheses; utime and stime are fields 14, 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<f64> = rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse().ok()).collect();
    f.iter().sum::<f64>() / clock_ticks()
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| command_output("getconf", &["CLK_TCK"]).parse().unwrap_or(100.0))
}

/// Raises this process's soft limit of open files (the daemon inherits it) to `need` if it is lower, with
/// `prlimit` (no unsafe code here); fails if that is not possible.
fn ensure_open_files(need: u64) {
    let soft = || {
        std::fs::read_to_string("/proc/self/limits").ok().and_then(|l| {
            let line = l.lines().find(|l| l.starts_with("Max open files"))?.to_string();
            let mut f = line.split_whitespace().skip(3);
            Some((f.next()?.parse::<u64>().ok()?, f.next().and_then(|h| h.parse::<u64>().ok()).unwrap_or(u64::MAX)))
        })
    };
    let Some((have, hard)) = soft() else { return };
    if have >= need {
        return;
    }
    let want = need.min(hard);
    let _ = Command::new("prlimit")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg(format!("--nofile={want}:{hard}"))
        .status();
    let now = soft().map_or(0, |l| l.0);
    assert!(now >= need, "{need} open files are needed (soft limit {now}, hard {hard}); raise `ulimit -n`");
}

// ---------------------------------------------------------------------------------------------------------------
// Setting up.

/// Creates `n` VMs over `conns` connections; their refs, in creation order.
fn populate(addr: SocketAddr, session: &str, n: usize, conns: usize) -> Vec<String> {
    let next = AtomicUsize::new(0);
    let refs = Mutex::new(vec![String::new(); n]);
    std::thread::scope(|scope| {
        for _ in 0..conns {
            scope.spawn(|| {
                let mut conn = Conn::open(addr);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let r = conn.call("VM.create", &[s(session), vm_record(i)]);
                    refs.lock().expect("refs")[i] = r.as_str().expect("VM.create returns a ref").to_string();
                }
            });
        }
    });
    refs.into_inner().expect("refs")
}

// ---------------------------------------------------------------------------------------------------------------
// One phase.

/// What the whole run shares.
struct Setup<'a> {
    addr: SocketAddr,
    session: &'a str,
    pool: &'a str,
    vms: &'a [String],
}

/// One write: its sequence number, when it was sent, when its answer arrived.
type Written = (u32, Instant, Instant);

/// Writes `VM.set_name_label(vms[seq % n], "w<seq>")` for the sequence numbers `first, first + step, …` below
/// `total`, write `seq` not before `t0 + seq / rate` (at once if late), giving up at `give_up`.
fn writer(
    set: &Setup,
    first: usize,
    step: usize,
    total: usize,
    rate: f64,
    t0: Instant,
    give_up: Instant,
) -> Vec<Written> {
    let mut conn = Conn::open(set.addr);
    let mut out = Vec::with_capacity(total / step + 1);
    let mut seq = first;
    while seq < total {
        let at = t0 + Duration::from_secs_f64(seq as f64 / rate);
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        } else if now > give_up {
            break;
        }
        let body =
            json_call("VM.set_name_label", &[s(set.session), s(&set.vms[seq % set.vms.len()]), s(format!("w{seq}"))]);
        let (sent, status, reply) = conn.post(&body);
        let ack = Instant::now();
        assert!(
            status == 200 && matches!(jsonrpc::parse_response(&reply), Ok(Ok(_))),
            "VM.set_name_label: {}",
            String::from_utf8_lossy(&reply)
        );
        out.push((seq as u32, sent, ack));
        seq += step;
    }
    out
}

/// Times `pool.get_name_label` every `every` until `running` goes false; round trips in ms.
fn probe(set: &Setup, every: Duration, running: &AtomicBool) -> Vec<f64> {
    let mut conn = Conn::open(set.addr);
    let body = json_call("pool.get_name_label", &[s(set.session), s(set.pool)]);
    let mut out = Vec::new();
    let mut next = Instant::now();
    while running.load(Ordering::SeqCst) {
        let (sent, status, _) = conn.post(&body);
        out.push(ms(sent.elapsed()));
        assert_eq!(status, 200);
        next += every;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    out
}

/// What one watcher saw: the sequence numbers its events carried and when each answer arrived; its calls and the
/// events in them.
#[derive(Default)]
struct WatcherLog {
    got: Vec<(u32, Instant)>,
    calls: usize,
    events: usize,
}

/// The token of an `event.from` answer, its number of events, and the `w<seq>` names its snapshots carry, read from
/// the bytes (compact JSON, as the daemon writes it) without parsing the answer.
fn scan_batch(body: &[u8], mut seq: impl FnMut(u32)) -> (String, usize) {
    let text = std::str::from_utf8(body).expect("a UTF-8 answer");
    let token = text
        .rfind("\"token\":\"")
        .map(|i| &text[i + 9..])
        .and_then(|t| t.split_once('"'))
        .map(|(t, _)| t.to_string())
        .unwrap_or_else(|| panic!("no token in the event.from answer: {}", &text[..text.len().min(2000)]));
    let events = text.matches("\"operation\":\"").count();
    for (i, m) in text.match_indices("\"name_label\":\"w") {
        let digits = &text[i + m.len()..];
        let end = digits.find('"').expect("a closed string");
        if let Ok(n) = digits[..end].parse() {
            seq(n);
        }
    }
    (token, events)
}

/// One watcher: `event.from(classes, token, 30.0)` after `event.from` on its own connection, until `stop` is set
/// when an answer arrives. Counts itself `ready` once its first call is sent.
fn watcher(set: &Setup, classes: Vec<Value>, mut token: String, ready: &AtomicUsize, stop: &AtomicBool) -> WatcherLog {
    let mut conn = Conn::open(set.addr);
    let mut log = WatcherLog::default();
    loop {
        let req =
            json_call("event.from", &[s(set.session), Value::Array(classes.clone()), s(&token), Value::Float(30.0)]);
        let req = conn.request("/jsonrpc", JSON, &req);
        conn.send_raw(&req);
        if log.calls == 0 {
            ready.fetch_add(1, Ordering::SeqCst);
        }
        let Received { status, body, .. } = conn.receive();
        let rx = Instant::now();
        assert_eq!(status, 200, "event.from: {}", String::from_utf8_lossy(&body));
        let (next, events) = scan_batch(&body, |seq| log.got.push((seq, rx)));
        token = next;
        log.calls += 1;
        log.events += events;
        if stop.load(Ordering::SeqCst) {
            return log;
        }
    }
}

/// Everything one phase measured.
#[derive(Clone, Default)]
struct Phase {
    writes: usize,
    /// Writes per second achieved (writes / (last answer − first scheduled)).
    write_rate: f64,
    /// Sent → answer of the timed writes, ms.
    commit: Vec<f64>,
    /// `pool.get_name_label` round trips, ms.
    probe: Vec<f64>,
    /// Writes the watchers should have heard of (per watcher, summed), and how many of them arrived as themselves.
    expected: usize,
    delivered: usize,
    /// Writes whose VM's last write in the phase never reached a watcher that watches it.
    lost: usize,
    duplicates: usize,
    calls: usize,
    events: usize,
    /// Event latency from the write's answer and from its request, ms, of the timed writes.
    from_answer: Vec<f64>,
    from_request: Vec<f64>,
    /// VmRSS (MB): before the phase's clients connect, just before the writes, at the end of the warm-up, the
    /// highest while writing, at the end of the writes, and 0.5 s after every client has gone.
    rss_idle: f64,
    rss_start: f64,
    rss_warm: f64,
    rss_max: f64,
    rss_end: f64,
    rss_after: f64,
    /// CPU cores used while writing: the daemon's and this process's.
    daemon_cpu: f64,
    bench_cpu: f64,
    /// VmRSS (MB) samples while writing: seconds since the first write, MB.
    trace: Vec<(f64, f64)>,
}

impl Phase {
    fn coalesced(&self) -> usize {
        self.expected - self.delivered
    }

    fn growth(&self) -> f64 {
        self.rss_end - self.rss_warm
    }
}

fn signed_ms(later: Instant, earlier: Instant) -> f64 {
    match later.checked_duration_since(earlier) {
        Some(d) => ms(d),
        None => -ms(earlier - later),
    }
}

fn run_phase(d: &Daemon, set: &Setup, plan: &Plan, spec: &PhaseSpec, tag: usize) -> Phase {
    let rss_idle = d.rss_kb();
    let mut control = Conn::open(set.addr);
    // The current token, cheaply: the pool is one object.
    let start = control.call("event.from", &[s(set.session), Value::Array(vec![s("pool")]), s(""), Value::Float(0.0)]);
    let token = start.get("token").and_then(Value::as_str).expect("a token").to_string();
    let n = set.vms.len();
    let total = (plan.rate * spec.window.as_secs_f64()).round() as usize;
    let (stop, sampling, writing) = (AtomicBool::new(false), AtomicBool::new(true), AtomicBool::new(true));
    let ready = AtomicUsize::new(0);
    let pid = d.pid();

    std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut samples = Vec::new();
            while sampling.load(Ordering::SeqCst) {
                if let Some(kb) = rss_kb(pid) {
                    samples.push((Instant::now(), kb));
                }
                std::thread::sleep(plan.sample_every);
            }
            samples
        });
        let watchers: Vec<_> = (0..spec.watchers)
            .map(|i| {
                let classes = match spec.watch {
                    Watch::Everything => vec![s("*")],
                    Watch::OwnVm => vec![s(format!("vm/{}", set.vms[i % n])), s("pool")],
                };
                let (token, ready, stop) = (token.clone(), &ready, &stop);
                std::thread::Builder::new()
                    .stack_size(256 << 10)
                    .spawn_scoped(scope, move || watcher(set, classes, token, ready, stop))
                    .expect("a watcher thread")
            })
            .collect();
        // Stalled clients: many calls at once, each asking for everything (token "": every VM, as a client's first
        // call), never read.
        let stalled: Vec<Conn> = (0..spec.stalled)
            .map(|_| {
                let mut c = Conn::open(set.addr);
                let call =
                    json_call("event.from", &[s(set.session), Value::Array(vec![s("vm")]), s(""), Value::Float(30.0)]);
                let one = c.request("/jsonrpc", JSON, &call);
                c.send_raw(&one.repeat(plan.pipelined));
                c
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        while ready.load(Ordering::SeqCst) < spec.watchers {
            assert!(Instant::now() < deadline, "the watchers did not start within 60 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(300)); // every first call is waiting in the daemon

        let rss_start = d.rss_kb();
        let (cpu_daemon, cpu_bench) = (cpu_secs(&pid.to_string()), cpu_secs("self"));
        let t0 = Instant::now() + Duration::from_millis(5);
        let give_up = t0 + spec.window * 2;
        let prober = scope.spawn(|| probe(set, plan.probe_every, &writing));
        let writers: Vec<_> = (0..plan.writer_conns)
            .map(|w| scope.spawn(move || writer(set, w, plan.writer_conns, total, plan.rate, t0, give_up)))
            .collect();
        let mut written: Vec<Written> = writers.into_iter().flat_map(|w| w.join().expect("a writer")).collect();
        let write_end = Instant::now();
        let daemon_cpu = (cpu_secs(&pid.to_string()) - cpu_daemon) / (write_end - t0).as_secs_f64();
        let bench_cpu = (cpu_secs("self") - cpu_bench) / (write_end - t0).as_secs_f64();
        let rss_end = d.rss_kb();
        writing.store(false, Ordering::SeqCst);
        let probe_ms = prober.join().expect("the probe");

        // End the watchers: each is answered by this write (or has already seen `stop` set).
        stop.store(true, Ordering::SeqCst);
        control.call("pool.set_name_label", &[s(set.session), s(set.pool), s(format!("stop-{tag}"))]);
        let logs: Vec<WatcherLog> = watchers.into_iter().map(|w| w.join().expect("a watcher")).collect();
        drop(stalled);
        std::thread::sleep(Duration::from_millis(500));
        let rss_after = d.rss_kb();
        sampling.store(false, Ordering::SeqCst);
        let samples = sampler.join().expect("the sampler");

        // The accounting.
        written.sort_by_key(|w| w.0);
        let size = written.last().map_or(0, |w| w.0 as usize + 1);
        let mut by_seq: Vec<Option<(Instant, Instant)>> = vec![None; size];
        for &(seq, sent, ack) in &written {
            by_seq[seq as usize] = Some((sent, ack));
        }
        let mut last = vec![None; n];
        for &(seq, _, _) in &written {
            last[seq as usize % n] = Some(seq as usize);
        }
        let timed_from = t0 + plan.warm_up;
        let mut p = Phase {
            writes: written.len(),
            write_rate: written.len() as f64
                / written.iter().map(|w| w.2).max().map_or(1.0, |e| (e - t0).as_secs_f64()),
            commit: written.iter().filter(|w| w.1 >= timed_from).map(|w| ms(w.2 - w.1)).collect(),
            probe: probe_ms,
            daemon_cpu,
            bench_cpu,
            ..Phase::default()
        };
        for (i, log) in logs.iter().enumerate() {
            let watches = |seq: usize| spec.watch == Watch::Everything || seq % n == i % n;
            let mut seen = vec![false; size];
            for &(seq, rx) in &log.got {
                let Some((sent, ack)) = by_seq.get(seq as usize).copied().flatten() else {
                    panic!("watcher {i} got write {seq}, which was not made in this phase");
                };
                if std::mem::replace(&mut seen[seq as usize], true) {
                    p.duplicates += 1;
                    continue;
                }
                if sent >= timed_from {
                    p.from_answer.push(signed_ms(rx, ack));
                    p.from_request.push(signed_ms(rx, sent));
                }
            }
            p.expected += written.iter().filter(|w| watches(w.0 as usize)).count();
            p.delivered += seen.iter().filter(|&&x| x).count();
            p.lost += last.iter().flatten().filter(|&&seq| watches(seq) && !seen[seq]).count();
            p.calls += log.calls;
            p.events += log.events;
        }
        let mb = |kb: u64| kb as f64 * 1024.0 / MB;
        p.rss_idle = mb(rss_idle);
        p.rss_start = mb(rss_start);
        p.rss_end = mb(rss_end);
        p.rss_after = mb(rss_after);
        p.rss_max =
            samples.iter().filter(|(t, _)| *t >= t0 && *t <= write_end).map(|s| mb(s.1)).fold(p.rss_end, f64::max);
        p.trace = samples
            .iter()
            .filter(|(t, _)| *t >= t0 && *t <= write_end)
            .map(|(t, kb)| ((*t - t0).as_secs_f64(), mb(*kb)))
            .collect();
        p.rss_warm = samples.iter().find(|(t, _)| *t >= timed_from).map_or(p.rss_start, |s| mb(s.1));
        p
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Statistics and reporting.

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

fn fmt_ms(v: f64) -> String {
    if v.abs() < 10.0 { format!("{v:.2} ms") } else { format!("{v:.1} ms") }
}

/// Everything one run measured.
struct Run {
    phases: Vec<Phase>,
    /// The bytes of `event.from(["vm"], "", 0)`: every VM, as a client's first call gets them.
    everything_bytes: usize,
    load: (String, String),
}

fn one_run(plan: &Plan, index: usize) -> Run {
    let load_before = load_avg();
    let d = Daemon::start("xapi-bench-events-");
    println!("run {index}: xapi-server pid {} on {} (data in {})", d.pid(), d.addr, d.dir.path().display());
    let mut control = Conn::open(d.addr);
    let session = control.call("session.login_with_password", &[s("root"), s(PASSWORD)]);
    let session = session.as_str().expect("a session ref").to_string();
    let pools = control.call("pool.get_all", &[s(&session)]);
    let pool = pools.as_array().and_then(|p| p.first()).and_then(Value::as_str).expect("a pool").to_string();
    let start = Instant::now();
    let vms = populate(d.addr, &session, plan.vms, plan.create_conns);
    println!("  created {} VMs in {:.1} s", vms.len(), start.elapsed().as_secs_f64());
    let everything = json_call("event.from", &[s(&session), Value::Array(vec![s("vm")]), s(""), Value::Float(0.0)]);
    let (_, status, body) = control.post(&everything);
    assert_eq!(status, 200, "event.from: {}", String::from_utf8_lossy(&body));
    let everything_bytes = body.len();
    let set = Setup { addr: d.addr, session: &session, pool: &pool, vms: &vms };
    let mut phases = Vec::new();
    for (tag, spec) in plan.phases.iter().enumerate() {
        println!("  phase {:?} ({} s) starting", spec.name, spec.window.as_secs_f64());
        let p = run_phase(&d, &set, plan, spec, tag);
        println!(
            "  {}: {} writes at {:.0}/s (commit p50 {}, p99 {}); {} events in {} calls, {} coalesced, {} lost, {} dup; \
             latency from answer p50 {} p99 {} max {}, from request p99 {}; get_name_label p50 {} p99 {}; \
             daemon CPU {:.2}, bench CPU {:.2}; RSS {:.1} → {:.1} (max {:.1}) → {:.1} MB, after {:.1} MB",
            spec.name,
            p.writes,
            p.write_rate,
            fmt_ms(median(&p.commit)),
            fmt_ms(percentile(&p.commit, 99.0)),
            p.events,
            p.calls,
            p.coalesced(),
            p.lost,
            p.duplicates,
            fmt_ms(median(&p.from_answer)),
            fmt_ms(percentile(&p.from_answer, 99.0)),
            fmt_ms(max(&p.from_answer)),
            fmt_ms(percentile(&p.from_request, 99.0)),
            fmt_ms(median(&p.probe)),
            fmt_ms(percentile(&p.probe, 99.0)),
            p.daemon_cpu,
            p.bench_cpu,
            p.rss_start,
            p.rss_warm,
            p.rss_max,
            p.rss_end,
            p.rss_after
        );
        let mut trace = String::new();
        let mut next = 0.0;
        for &(t, mb) in &p.trace {
            if t >= next {
                let _ = write!(trace, " {t:.0}s:{mb:.1}");
                next = t.floor() + 1.0;
            }
        }
        println!("    VmRSS (MB) while writing:{trace}");
        phases.push(p);
    }
    drop(d);
    Run { phases, everything_bytes, load: (load_before, load_avg()) }
}

#[derive(Clone, Copy)]
enum Target {
    AtMost(f64),
}

/// One row of the summary: a figure from every run, with its baseline from the same runs.
struct Figure {
    name: String,
    megabytes: bool,
    ours: Vec<f64>,
    base: Vec<f64>,
    base_name: &'static str,
    target: Option<Target>,
}

impl Figure {
    fn fmt(&self, v: f64) -> String {
        if self.megabytes { format!("{v:+.1} MB") } else { fmt_ms(v) }
    }

    fn verdict(&self) -> &'static str {
        match self.target {
            None => "—",
            Some(Target::AtMost(t)) if median(&self.ours) <= t => "pass",
            Some(_) => "**MISS**",
        }
    }

    fn target_text(&self) -> String {
        match self.target {
            None => "—".into(),
            Some(Target::AtMost(t)) if self.megabytes => format!("flat (≤ {t:+.1} MB)"),
            Some(Target::AtMost(t)) => format!("≤ {}", fmt_ms(t)),
        }
    }

    fn ratio(&self) -> String {
        if self.megabytes {
            return "—".into();
        }
        let ratios: Vec<f64> = self.ours.iter().zip(&self.base).map(|(o, b)| o / b).collect();
        // A latency below zero (the watcher heard before the writer) has no meaningful ratio.
        if self.ours.iter().any(|&o| o <= 0.0) { "—".into() } else { format!("{:.1}×", median(&ratios)) }
    }
}

fn figures(runs: &[Run], plan: &Plan) -> Vec<Figure> {
    let col = |i: usize, f: &dyn Fn(&Phase) -> f64| runs.iter().map(|r| f(&r.phases[i])).collect::<Vec<f64>>();
    let alone = plan.phases.iter().position(|p| p.watchers == 0).expect("a writes-alone phase");
    let target = plan.target_phase();
    let mut out = Vec::new();
    for (i, spec) in plan.phases.iter().enumerate() {
        if spec.watchers == 0 || spec.stalled > 0 {
            continue;
        }
        let what = format!("{}, {}", spec.name, spec.watch.text());
        out.push(Figure {
            name: format!("delivery latency p50, {what}"),
            megabytes: false,
            ours: col(i, &|p| median(&p.from_answer)),
            base: col(alone, &|p| median(&p.probe)),
            base_name: "`pool.get_name_label` round trip p50, same writes, no watchers",
            target: None,
        });
        out.push(Figure {
            name: format!("delivery latency p99, {what}"),
            megabytes: false,
            ours: col(i, &|p| percentile(&p.from_answer, 99.0)),
            base: col(alone, &|p| percentile(&p.probe, 99.0)),
            base_name: "`pool.get_name_label` round trip p99, same writes, no watchers",
            target: (Some(i) == target).then_some(Target::AtMost(TARGET_P99_MS)),
        });
        out.push(Figure {
            name: format!("delivery latency p99 from the write's request (upper bound), {what}"),
            megabytes: false,
            ours: col(i, &|p| percentile(&p.from_request, 99.0)),
            base: col(alone, &|p| percentile(&p.commit, 99.0)),
            base_name: "the write's own round trip p99, writes alone",
            target: None,
        });
    }
    for (i, spec) in plan.phases.iter().enumerate() {
        if spec.watchers == 0 {
            continue;
        }
        out.push(Figure {
            name: format!("daemon VmRSS growth after the warm-up, {}", spec.name),
            megabytes: true,
            ours: col(i, &Phase::growth),
            base: col(alone, &Phase::growth),
            base_name: "the same, writes alone",
            target: Some(Target::AtMost(FLAT_MB)),
        });
    }
    for (i, spec) in plan.phases.iter().enumerate() {
        if spec.watchers == 0 {
            continue;
        }
        out.push(Figure {
            name: format!("daemon VmRSS added by the clients (idle → max), {}", spec.name),
            megabytes: true,
            ours: col(i, &|p| p.rss_max - p.rss_idle),
            base: col(alone, &|p| p.rss_max - p.rss_idle),
            base_name: "the same, writes alone",
            target: None,
        });
    }
    out
}

fn report(runs: &[Run], plan: &Plan, took: Duration) -> String {
    let figs = figures(runs, plan);
    let mut md = String::new();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let w = &mut md;
    let _ = writeln!(w, "## Events: delivery latency and memory\n");
    let _ = writeln!(
        w,
        "Written by `xapi-server/benches/events.rs` (this section only); regenerate (≈ {:.0} min for {} run{}) \
         with:\n\n```\ncargo bench -p xapi-server --bench events\n```\n",
        (took.as_secs_f64() / 60.0).ceil(),
        runs.len(),
        if runs.len() == 1 { "" } else { "s" }
    );
    write_facts(w, runs.iter().map(|r| &r.load));

    let _ = writeln!(w, "\n### Summary\n");
    let _ = writeln!(
        w,
        "{} VMs; {} `VM.set_name_label` writes/s (each a transaction committed with `synchronous=FULL` before it \
         answers) on {} keep-alive connections, VM after VM. *Delivery latency*: from the write's answer reaching \
         its writer to the `event.from` answer carrying it reaching the watcher, over every watcher and every timed \
         write (the first {} of each phase is warm-up). The commit happened between the write's request and its \
         answer, so the true latency lies between this figure (below zero when the watcher heard before the \
         writer) and the one *from the write's request*. Each figure is the median over {} runs (each a fresh \
         daemon and data dir); *per run* shows the spread; *ours/baseline* is the median of the runs' ratios. \
         Memory is *flat* when VmRSS grows by at most {FLAT_MB:.1} MB from the end of the warm-up to the end of the \
         phase: one-time steps of a few MB (a new malloc arena, per-connection buffers) happen even with writes \
         alone, while a leak of 5 bytes per event delivered would exceed it at 100 watchers; `--scale 15` runs \
         every phase 15 times longer, to tell a step from a trend.\n",
        thousands(plan.vms as f64),
        thousands(plan.rate),
        plan.writer_conns,
        fmt_secs(plan.warm_up),
        runs.len()
    );
    let rows: Vec<SummaryRow> = figs
        .iter()
        .map(|f| SummaryRow {
            name: &f.name,
            ours: f.fmt(median(&f.ours)),
            per_run: per_run(&f.ours, |x| f.fmt(x)),
            base: f.fmt(median(&f.base)),
            base_name: f.base_name,
            ratio: f.ratio(),
            target: f.target_text(),
            verdict: f.verdict(),
        })
        .collect();
    write_summary(w, &rows);

    let _ = writeln!(w, "\n### By phase\n");
    let _ = writeln!(
        w,
        "Medians over runs (per run in the second table). *Events* are the events the watchers received in all; \
         *coalesced* are writes a watcher never saw as themselves because a later write to the same VM came first \
         (it saw that one); *lost* are last writes to a VM that a watcher watching it never saw (must be 0). \
         *From request* is the latency from when the write was sent (an upper bound: the commit happened between \
         request and answer). *Commit* is the write's own round trip; *get_name_label* the probe's. CPU is in cores \
         (of {cores}), while writing.\n"
    );
    let _ = writeln!(
        w,
        "| phase | subscription | writes/s | commit p50 / p99 | events | calls | events/call | coalesced | lost | \
         latency p50 | p99 | max | p99 from request | get_name_label p50 / p99 | daemon CPU | bench CPU |"
    );
    let _ = writeln!(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, spec) in plan.phases.iter().enumerate() {
        let med = |f: &dyn Fn(&Phase) -> f64| median(&runs.iter().map(|r| f(&r.phases[i])).collect::<Vec<_>>());
        let watched = spec.watchers > 0;
        let dash = |v: String| if watched { v } else { "—".into() };
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} / {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {:.2} | {:.2} |",
            spec.name,
            if watched { spec.watch.text() } else { "—" },
            thousands(med(&|p| p.write_rate)),
            fmt_ms(med(&|p| median(&p.commit))),
            fmt_ms(med(&|p| percentile(&p.commit, 99.0))),
            dash(thousands(med(&|p| p.events as f64))),
            dash(thousands(med(&|p| p.calls as f64))),
            dash(format!("{:.1}", med(&|p| p.events as f64 / p.calls.max(1) as f64))),
            dash(thousands(med(&|p| p.coalesced() as f64))),
            dash(thousands(med(&|p| p.lost as f64))),
            dash(fmt_ms(med(&|p| median(&p.from_answer)))),
            dash(fmt_ms(med(&|p| percentile(&p.from_answer, 99.0)))),
            dash(fmt_ms(med(&|p| max(&p.from_answer)))),
            dash(fmt_ms(med(&|p| percentile(&p.from_request, 99.0)))),
            fmt_ms(med(&|p| median(&p.probe))),
            fmt_ms(med(&|p| percentile(&p.probe, 99.0))),
            med(&|p| p.daemon_cpu),
            med(&|p| p.bench_cpu),
        );
    }
    let _ = writeln!(w, "\nPer run (p50 / p99 of the delivery latency; writes/s):\n");
    let _ = writeln!(w, "| phase | latency p50 | latency p99 | writes/s | coalesced |");
    let _ = writeln!(w, "|---|---|---|---|---|");
    for (i, spec) in plan.phases.iter().enumerate().filter(|(_, p)| p.watchers > 0) {
        let col = |f: &dyn Fn(&Phase) -> f64| runs.iter().map(|r| f(&r.phases[i])).collect::<Vec<_>>();
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} |",
            spec.name,
            per_run(&col(&|p| median(&p.from_answer)), fmt_ms),
            per_run(&col(&|p| percentile(&p.from_answer, 99.0)), fmt_ms),
            per_run(&col(&|p| p.write_rate), thousands),
            per_run(&col(&|p| p.coalesced() as f64), thousands),
        );
    }

    let _ = writeln!(w, "\n### Daemon memory by phase\n");
    let _ = writeln!(
        w,
        "VmRSS from `/proc/PID/status` every {} ms (1 MB = 10⁶ bytes), medians over runs: before the phase's \
         clients connect (*idle*), just before the writes (*start*), at the end of the warm-up, the highest while \
         writing, at the end of the writes, and 0.5 s after the phase's clients have gone. *Growth* is end − \
         warm-up, per run.\n",
        plan.sample_every.as_millis()
    );
    let _ = writeln!(w, "| phase | idle | start | warm-up | max | end | after | growth (per run) |");
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---|");
    for (i, spec) in plan.phases.iter().enumerate() {
        let col = |f: &dyn Fn(&Phase) -> f64| runs.iter().map(|r| f(&r.phases[i])).collect::<Vec<_>>();
        let mb = |f: &dyn Fn(&Phase) -> f64| format!("{:.1} MB", median(&col(f)));
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            spec.name,
            mb(&|p| p.rss_idle),
            mb(&|p| p.rss_start),
            mb(&|p| p.rss_warm),
            mb(&|p| p.rss_max),
            mb(&|p| p.rss_end),
            mb(&|p| p.rss_after),
            per_run(&col(&Phase::growth), |x| format!("{x:+.1} MB")),
        );
    }

    let stalled = plan.phases.iter().find(|p| p.stalled > 0);
    let everything_mb = median(&runs.iter().map(|r| r.everything_bytes as f64 / MB).collect::<Vec<_>>());
    let _ = writeln!(w, "\n### Method\n");
    let _ = writeln!(
        w,
        "- The daemon is the real binary, started with `--data-dir`, `--http 127.0.0.1:PORT` and `--socket` in a \
         temporary directory under `target/tmp`, `RUST_LOG=warn`, and stopped by its PID at the end of each run. It \
         first gets {} VMs by `VM.create` (the template-like record of `rpc.rs`: a VM's snapshot is about {:.1} KB of \
         JSON).\n\
         - Phases, in this order, each {}: {}. Each phase has fresh watchers, which start from the current token \
         (taken by `event.from([\"pool\"], \"\", 0)`) and loop `event.from(classes, token, 30.0)` on their own \
         keep-alive connection, one thread each; the writes start 0.3 s after every watcher's first call is sent. \
         A phase ends with one `pool.set_name_label`, which every watcher hears.\n\
         - Writes: `VM.set_name_label(vm, \"w<seq>\")`, write `seq` to VM `seq mod {}` at `seq / {}` s from the \
         start of the phase, on {} connections taking turns (a write that falls behind is sent at once): each VM \
         is written every {}. With `*` every write is an event for every watcher, with its VM's whole snapshot \
         ({}); with `vm/<its own VM>` (VM `i mod {}` for watcher `i`) it is an event for one watcher, but every \
         commit wakes every waiting call.\n\
         - Stalled clients{}: each connection sends {} `event.from([\"vm\"], \"\", 30.0)` calls in one write \
         (a client's first call: every VM, about {:.1} MB, streamed) and never reads; the daemon answers until the \
         socket buffers are full, then must hold what it has not sent. One ordinary `*` watcher runs beside them. \
         *Idle* in the memory table is before the phase's clients connect.\n\
         - The client is a minimal HTTP/1.1 keep-alive client over `std::net::TcpStream` (`TCP_NODELAY`, one \
         `write` per request), JSON-RPC on `/jsonrpc`; watchers read the token, the number of events and the \
         `name_label`s from the answer's bytes without parsing it. A probe connection calls `pool.get_name_label` \
         every {} ms. Client and daemon share the machine's {cores} cores.",
        thousands(plan.vms as f64),
        everything_mb * 1000.0 / plan.vms as f64,
        plan.phases.iter().map(|p| fmt_secs(p.window)).collect::<Vec<_>>().join(" / "),
        plan.phases
            .iter()
            .map(|p| if p.watchers == 0 { p.name.clone() } else { format!("{} ({})", p.name, p.watch.text()) })
            .collect::<Vec<_>>()
            .join(", "),
        thousands(plan.vms as f64),
        thousands(plan.rate),
        plan.writer_conns,
        fmt_secs(Duration::from_secs_f64(plan.vms as f64 / plan.rate)),
        plan.phases
            .iter()
            .filter(|p| p.watchers > 0 && p.watch == Watch::Everything)
            .map(|p| format!("{} events/s with {}", thousands(p.watchers as f64 * plan.rate), p.name))
            .collect::<Vec<_>>()
            .join(", "),
        thousands(plan.vms as f64),
        stalled.map_or(String::new(), |p| format!(" ({} connections)", p.stalled)),
        plan.pipelined,
        everything_mb,
        plan.probe_every.as_millis(),
    );
    md
}

fn fmt_secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 { format!("{s:.0} s") } else { format!("{s:.1} s") }
}

fn main() {
    let plan = Plan::from_args();
    let most = plan.phases.iter().map(|p| p.watchers + p.stalled).max().unwrap_or(0);
    ensure_open_files(most as u64 + plan.writer_conns as u64 + 256);
    let started = Instant::now();
    let runs: Vec<Run> = (1..=plan.runs).map(|i| one_run(&plan, i)).collect();
    let md = report(&runs, &plan, started.elapsed());
    println!("\n{md}");
    if plan.write_doc {
        let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/benchmarks.md"));
        write_section(&path, "events", &md, NewSection::Last);
        println!("wrote the events section of {}", path.display());
    }
    println!("total {:.0} s", started.elapsed().as_secs_f64());
}
