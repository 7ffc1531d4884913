//! What the benchmarks `rpc.rs` and `events.rs` share: the minimal keep-alive HTTP/1.1 client over
//! `std::net::TcpStream`, the daemon under test (started in a fresh data dir, stopped by its PID), the template-like
//! VM record, the statistics (milliseconds, percentiles, medians), the machine facts and the writer of a bench's
//! section of `docs/benchmarks.md`.
//!
//! Each bench declares it with `mod common;` (Cargo does not take `benches/common/` for a bench of its own) and keeps
//! its own workload and report; the methods of [`Conn`] and [`Daemon`] that only one bench needs are in that bench.
//! The `xe` crate's bench includes it too (`#[path]`), so nothing here may need the xapi-server package's own build
//! environment: [`daemon_binary`] finds the daemon either way.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use xapi_types::Value;

pub const PASSWORD: &str = "bench-root-password";
pub const JSON: &str = "application/json";
pub const MB: f64 = 1_000_000.0;

/// Handles the options both benches take: `--bench` (which `cargo bench` passes; without it a bench makes a quick
/// smoke run), `--runs N` (taking `N` from `rest`) and `--no-write`. Answers whether `arg` was one of them.
pub fn common_arg<'a>(
    arg: &str,
    rest: &mut impl Iterator<Item = &'a String>,
    runs: &mut usize,
    write_doc: &mut bool,
) -> bool {
    match arg {
        "--bench" => {}
        "--runs" => *runs = rest.next().and_then(|n| n.parse().ok()).filter(|&n| n > 0).expect("--runs N"),
        "--no-write" => *write_doc = false,
        _ => return false,
    }
    true
}

// ---------------------------------------------------------------------------------------------------------------
// A minimal keep-alive HTTP/1.1 client: one `write` per request, Nagle off, the body read exactly by its
// `Content-Length` or chunked framing. Sending and receiving are apart, for pipelining.

pub struct Conn {
    stream: TcpStream,
    host: String,
    /// Bytes read; those before `pos` are consumed.
    buf: Vec<u8>,
    pos: usize,
}

/// One response as [`Conn::receive`] read it.
pub struct Received {
    pub status: u16,
    pub body: Vec<u8>,
    /// The sizes of the chunks of a chunked answer (`None`: the answer had a `Content-Length`).
    #[allow(dead_code)] // `rpc.rs` replays the daemon's chunks; `events.rs` does not look at them
    pub chunks: Option<Vec<usize>>,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        stream.set_nodelay(true).expect("TCP_NODELAY");
        stream.set_read_timeout(Some(Duration::from_secs(120))).expect("read timeout");
        Conn { stream, host: addr.to_string(), buf: Vec::with_capacity(16 << 10), pos: 0 }
    }

    /// Reads what the socket has (at least one byte) after the unconsumed bytes.
    fn fill(&mut self) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + (16 << 10), 0);
        let n = self.stream.read(&mut self.buf[len..]).expect("reading the response");
        self.buf.truncate(len + n);
        assert!(n > 0, "the server closed the connection");
    }

    /// Consumes bytes up to and including the next `delim`; returns them without it.
    fn until(&mut self, delim: &[u8]) -> Vec<u8> {
        let mut from = self.pos;
        loop {
            if let Some(i) = self.buf[from..].windows(delim.len()).position(|w| w == delim) {
                let end = from + i;
                let out = self.buf[self.pos..end].to_vec();
                self.pos = end + delim.len();
                return out;
            }
            from = self.buf.len().saturating_sub(delim.len() - 1).max(self.pos);
            let consumed = self.pos;
            self.fill();
            from -= consumed;
        }
    }

    /// Appends the next `n` bytes to `out`, reading straight into it what is not buffered yet.
    fn take(&mut self, n: usize, out: &mut Vec<u8>) {
        let have = n.min(self.buf.len() - self.pos);
        out.extend_from_slice(&self.buf[self.pos..self.pos + have]);
        self.pos += have;
        if have < n {
            let want = out.len() + (n - have);
            out.reserve(n - have);
            (&mut self.stream).take((n - have) as u64).read_to_end(out).expect("reading the body");
            assert_eq!(out.len(), want, "the body was cut short");
        }
    }

    /// The bytes of `POST path` with `body`.
    pub fn request(&self, path: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
        let mut req = Vec::with_capacity(body.len() + 160);
        write!(
            req,
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        )
        .expect("writing to a Vec");
        req.extend_from_slice(body);
        req
    }

    /// Sends bytes in one `write`; answers when it started.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Instant {
        let start = Instant::now();
        self.stream.write_all(bytes).expect("sending the request");
        start
    }

    /// Waits for the next response's first byte, unless some of it is buffered already.
    #[allow(dead_code)] // `rpc.rs` times the first byte; `events.rs` does not
    pub fn first_byte(&mut self) {
        if self.pos == self.buf.len() {
            self.fill();
        }
    }

    /// Reads one response: its status, body and (if chunked) chunk sizes.
    pub fn receive(&mut self) -> Received {
        let head = self.until(b"\r\n\r\n");
        let head = String::from_utf8(head).expect("an ASCII response head");
        let mut lines = head.split("\r\n");
        let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).expect("status");
        let (mut len, mut chunked) = (None, false);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else { continue };
            if name.eq_ignore_ascii_case("content-length") {
                len = value.trim().parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.trim().eq_ignore_ascii_case("chunked");
            }
        }
        let mut out = Vec::new();
        let chunks = if chunked {
            let mut sizes = Vec::new();
            loop {
                let line = self.until(b"\r\n");
                let size = std::str::from_utf8(&line).ok().and_then(|l| l.split(';').next());
                let size = size.and_then(|s| usize::from_str_radix(s.trim(), 16).ok()).expect("a chunk size");
                if size == 0 {
                    while !self.until(b"\r\n").is_empty() {} // trailers
                    break Some(sizes);
                }
                self.take(size, &mut out);
                assert!(self.until(b"\r\n").is_empty(), "a chunk ends with CRLF");
                sizes.push(size);
            }
        } else {
            let len = len.expect("a Content-Length or chunked encoding");
            out.reserve_exact(len);
            self.take(len, &mut out);
            None
        };
        Received { status, body: out, chunks }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The daemon under test.

/// The daemon binary: the xapi-server package's own (for its benches), else the workspace's release build (which a
/// bench of another crate builds first).
pub fn daemon_binary() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_xapi-server") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/xapi-server"),
    }
}

pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl Daemon {
    /// The real `xapi-server` in a fresh data dir (a temporary directory named `prefix…` under `target/tmp`), on a
    /// free loopback port, once it listens.
    pub fn start(prefix: &str) -> Daemon {
        Daemon::start_with(prefix, &["--libvirt-uri", "none"])
    }

    /// [`Daemon::start`] with more command-line arguments.
    pub fn start_with(prefix: &str, extra_args: &[&str]) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("a temporary data dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = std::fs::File::create(dir.path().join("daemon.log")).expect("daemon log");
        let child = Command::new(daemon_binary())
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--http")
            .arg(addr.to_string())
            .args(extra_args)
            .arg("--socket")
            .arg(dir.path().join("xapi"))
            .env("XAPI_ROOT_PASSWORD", PASSWORD)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting xapi-server");
        let mut d = Daemon { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(addr).is_err() || !d.socket().exists() {
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("xapi-server exited ({status}) before listening:\n{}", d.log());
            }
            assert!(Instant::now() < deadline, "xapi-server did not listen on {addr} within 60 s:\n{}", d.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    /// The daemon's unix socket, where root needs no password.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("xapi")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }
}

impl Drop for Daemon {
    /// SIGTERM to the daemon we started (by its PID), SIGKILL if it has not stopped within 10 s.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The VMs.

pub fn s(v: impl Into<String>) -> Value {
    Value::Str(v.into())
}

fn map(pairs: &[(&str, &str)]) -> Value {
    Value::Struct(pairs.iter().map(|(k, v)| (k.to_string(), s(*v))).collect())
}

/// A VM as a client creating one from a template would send it: memory, vCPUs, actions, HVM boot, platform flags,
/// the template's recommendations (XML, so escaped on the wire), three `other_config` keys and two tags.
pub fn vm_record(i: usize) -> Value {
    let fields = vec![
        ("name_label", s(format!("vm-{i}"))),
        ("name_description", s(format!("benchmark VM number {i}"))),
        ("user_version", s("1")),
        ("is_a_template", Value::Bool(false)),
        ("affinity", s("OpaqueRef:NULL")),
        ("memory_static_max", s("2147483648")),
        ("memory_dynamic_max", s("2147483648")),
        ("memory_dynamic_min", s("1073741824")),
        ("memory_static_min", s("536870912")),
        ("VCPUs_params", map(&[("weight", "256")])),
        ("VCPUs_max", s("2")),
        ("VCPUs_at_startup", s("2")),
        ("actions_after_shutdown", s("destroy")),
        ("actions_after_reboot", s("restart")),
        ("actions_after_crash", s("restart")),
        ("PV_bootloader", s("")),
        ("PV_kernel", s("")),
        ("PV_ramdisk", s("")),
        ("PV_args", s("")),
        ("PV_bootloader_args", s("")),
        ("PV_legacy_args", s("")),
        ("HVM_boot_policy", s("BIOS order")),
        ("HVM_boot_params", map(&[("order", "cdn"), ("firmware", "bios")])),
        (
            "platform",
            map(&[
                ("acpi", "1"),
                ("apic", "true"),
                ("pae", "true"),
                ("nx", "true"),
                ("viridian", "false"),
                ("device-model", "qemu-upstream-compat"),
            ]),
        ),
        ("PCI_bus", s("")),
        (
            "other_config",
            Value::Struct(vec![
                ("owner".into(), s("bench")),
                ("folder".into(), s(format!("/bench/folder-{}", i % 16))),
                ("base_template_name".into(), s("Debian Bookworm 12")),
            ]),
        ),
        (
            "recommendations",
            s("<restrictions><restriction field=\"memory-static-max\" max=\"137438953472\"/>\
               <restriction field=\"vcpus-max\" max=\"32\"/></restrictions>"),
        ),
        ("ha_always_run", Value::Bool(false)),
        ("ha_restart_priority", s("")),
        ("tags", Value::Array(vec![s("bench"), s(format!("group-{}", i % 7))])),
        ("domain_type", s("hvm")),
    ];
    Value::Struct(fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

// ---------------------------------------------------------------------------------------------------------------
// Statistics.

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The median: the middle value, or the mean of the two middle values (NaN of nothing).
pub fn median(v: &[f64]) -> f64 {
    percentile(v, 50.0)
}

/// The nearest-rank percentile, but for the median of an even number of values (NaN of nothing).
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if p == 50.0 && v.len().is_multiple_of(2) {
        return (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

// ---------------------------------------------------------------------------------------------------------------
// Reporting.

pub fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Per run, ` / `-separated.
pub fn per_run(v: &[f64], f: impl Fn(f64) -> String) -> String {
    v.iter().map(|&x| f(x)).collect::<Vec<_>>().join(" / ")
}

/// The load average (1/5/15 min).
pub fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').take(3).collect::<Vec<_>>().join(" ")
}

/// What `cmd args` printed (trimmed), run in this crate's directory; `?` if it failed.
pub fn command_output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into())
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_string()))
        .unwrap_or_else(|| "?".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores ({model}), {:.1} GiB RAM, Linux {}, {}",
        mem_kb / 1024.0 / 1024.0,
        kernel.trim(),
        command_output("rustc", &["--version"])
    )
}

/// The facts of a report: date, commit, machine, daemon, and the load average before and after each run
/// (`loads`, one `(before, after)` a run).
pub fn write_facts<'a>(w: &mut String, loads: impl Iterator<Item = &'a (String, String)>) {
    let commit = command_output("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = command_output("git", &["status", "--porcelain", "--untracked-files=no"]);
    let dirty = if dirty.is_empty() { "" } else { " (working tree has uncommitted changes)" };
    let _ = writeln!(w, "- **Date:** {}", command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]));
    let _ = writeln!(w, "- **Commit:** `{commit}`{dirty}");
    let _ = writeln!(w, "- **Machine:** {}", machine());
    let _ = writeln!(w, "- **Daemon:** `{}` (bench profile = release, `debug = 1`)", daemon_binary().display());
    let _ = writeln!(
        w,
        "- **Load average (1/5/15 min) before / after each run:** {}",
        loads.map(|(before, after)| format!("{before} → {after}")).collect::<Vec<_>>().join("; ")
    );
}

/// One row of a summary table: a figure, formatted.
pub struct SummaryRow<'a> {
    pub name: &'a str,
    pub ours: String,
    pub per_run: String,
    pub base: String,
    pub base_name: &'a str,
    pub ratio: String,
    pub target: String,
    pub verdict: &'static str,
}

/// The summary table, then the line that says that all targets were met, or which figures missed theirs.
pub fn write_summary(w: &mut String, rows: &[SummaryRow]) {
    let _ = writeln!(w, "| figure | ours | per run | baseline | ours/baseline | target | result |");
    let _ = writeln!(w, "|---|---:|---|---:|---:|---|---|");
    for r in rows {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} ({}) | {} | {} | {} |",
            r.name, r.ours, r.per_run, r.base, r.base_name, r.ratio, r.target, r.verdict
        );
    }
    let misses: Vec<&str> = rows.iter().filter(|r| r.verdict == "**MISS**").map(|r| r.name).collect();
    let _ = writeln!(
        w,
        "\n{}",
        if misses.is_empty() { "All targets met.".to_string() } else { format!("**Missed:** {}.", misses.join("; ")) }
    );
}

/// Where [`write_section`] puts a section the file does not have yet.
#[allow(dead_code)] // each bench uses one of them
pub enum NewSection {
    /// Before everything else.
    First,
    /// After everything else.
    Last,
}

/// Replaces this bench's section of `path` (between `<!-- NAME:begin -->` and `<!-- NAME:end -->`) with `md`,
/// keeping everything else (other benches write their own sections); puts the section where `new` says if the file
/// has none.
pub fn write_section(path: &Path, name: &str, md: &str, new: NewSection) {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let (begin, end) = (format!("<!-- {name}:begin -->"), format!("<!-- {name}:end -->"));
    let section = format!("{begin}\n{}\n{end}\n", md.trim_end());
    let text = match (old.find(&begin), old.find(&end)) {
        (Some(b), Some(e)) if b < e => {
            let rest = old[e + end.len()..].trim_start_matches('\n');
            format!("{}{section}{}{rest}", &old[..b], if rest.is_empty() { "" } else { "\n" })
        }
        _ if old.trim().is_empty() => section,
        _ => match new {
            NewSection::First => format!("{section}\n{}", old.trim_start()),
            NewSection::Last => format!("{}\n\n{section}", old.trim_end()),
        },
    };
    std::fs::create_dir_all(path.parent().expect("docs/")).expect("docs/");
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}
