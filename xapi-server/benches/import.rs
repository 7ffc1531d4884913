//! The disk-image import benchmark (issue 6): a VMDK uploaded to `PUT /import_raw_vdi` and converted by the daemon
//! into a VHD in its SR, against `qemu-img convert -O vpc` of the same file; a raw upload against `dd`. Same run,
//! same input, both sides durable (fsync) and verified identical to the source with `qemu-img compare`.
//!
//! ```text
//! cargo bench -p xapi-server --bench import -- [--runs N] [--size-gib G] [--data-gib D] [--no-write]
//! ```
//!
//! **Input** (made once, cached in `target/import-bench/<parameters>/`): a sparse raw image of `--size-gib`
//! (default 4) holding about `--data-gib` (default 1) of data in an ext4-like layout, from a seeded xorshift PRNG:
//! 128 MiB block groups, each starting with metadata (a superblock and descriptors in some groups, two bitmaps, the
//! used part of an inode table), then files of 4 KiB … 8 MiB (mostly small, a few large) scattered through the
//! groups with gaps between them, half of the bytes incompressible (PRNG bytes) and half text-like (compressible).
//! `qemu-img convert -O vmdk` makes a monolithicSparse VMDK of it, `-o subformat=streamOptimized` a
//! streamOptimized one.
//!
//! **One run**, each pair in the same run (ours first in odd runs, the baseline first in even ones):
//! - monolithicSparse VMDK: `qemu-img convert -O vpc -o force_size=on src.vmdk out.vhd` + fsync of `out.vhd`,
//!   timed together, vs uploading `src.vmdk` (`format=vmdk`, a `Content-Length`, 1 MiB writes over a plain TCP
//!   connection) into a fresh VDI of the image's size, timed from connect to the `200` answer (which the daemon
//!   gives once the data is durable and swapped in);
//! - the same with the streamOptimized VMDK;
//! - raw: `dd if=src.raw of=out.raw bs=1M conv=sparse,fsync` vs a `format=raw` upload of `src.raw` (the whole
//!   virtual size, mostly zeros, as the body). With data scattered as in a file system, nearly every MiB holds
//!   some, so `dd bs=1M` writes most of the virtual size (zeros included) while we skip all-zero 4 KiB runs:
//!   `dd bs=64K conv=sparse,fsync` is timed too and printed beside it, informative, without a target.
//!
//! Every result is checked with `qemu-img compare` against `src.raw` (outside the timing). Caches are not dropped
//! (that needs root and disturbs the other users of the machine): every input is read once before each run, so
//! both sides read it from the page cache. While each upload runs, a thread samples the daemon's `VmRSS` every
//! 5 ms; the figure is the peak less the RSS just before the upload.
//!
//! Figures: medians over the runs (min–max beside them); ratio = baseline time / our time, so above 1.00× we are
//! faster; MB/s are of the image's data (its non-zero bytes), not of its virtual size. Written to this bench's
//! section of `docs/benchmarks.md` (`<!-- import:begin -->` … `<!-- import:end -->`) unless `--no-write`. Without
//! `--bench` (as `cargo test --benches` runs it) it does nothing: it takes minutes and gigabytes.

// `&[vdi.clone()]` reads better than `std::slice::from_ref(&vdi)` in call lists.
#![allow(clippy::cloned_ref_to_slice_refs)]

#[allow(dead_code)] // the helpers are shared with the other benches; this one uses some
mod common;

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Conn, Daemon, MB, PASSWORD, median, s};
use xapi_types::Value;
use xapi_types::wire::xmlrpc;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;
/// An ext4 block group with 4 KiB blocks.
const GROUP: u64 = 128 * MIB;
/// The start of each group kept for its metadata (superblock, descriptors, bitmaps, inode table); no file there.
const META_AREA: u64 = MIB;
const BLOCK: u64 = 4 * KIB;
/// Bump when the generated image changes, so that cached inputs are remade.
const LAYOUT_VERSION: u32 = 1;
const SEED: u64 = 0x5eed_1a9e_2026_0006;

// ---------------------------------------------------------------------------------------------------------------
// The input image.

struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        // splitmix64 of the seed, so that near seeds give unrelated streams (and never 0).
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        XorShift((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `0..n` (n > 0; the modulo bias does not matter here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    /// A superblock and group descriptors.
    Super,
    /// A block or inode bitmap.
    Bitmap,
    /// The used part of an inode table: 256-byte inodes.
    Inodes,
    /// File content of PRNG bytes.
    Random,
    /// File content of words and lines.
    Text,
}

#[derive(Clone, Copy, Debug)]
struct Extent {
    offset: u64,
    len: u64,
    kind: Kind,
}

/// Groups that hold a backup superblock with `sparse_super` (0, 1 and powers of 3, 5, 7).
fn has_super(g: u64) -> bool {
    if g <= 1 {
        return true;
    }
    [3u64, 5, 7].iter().any(|&b| {
        let mut p = b;
        while p < g {
            p *= b;
        }
        p == g
    })
}

/// A file size: 4 KiB … 8 MiB, in 4 KiB blocks; mostly small, a few large.
fn file_size(rng: &mut XorShift) -> u64 {
    let (lo, hi) = match rng.below(100) {
        0..60 => (4 * KIB, 16 * KIB),
        60..85 => (16 * KIB, 128 * KIB),
        85..97 => (128 * KIB, MIB),
        _ => (MIB, 8 * MIB),
    };
    (lo + rng.below(hi - lo + 1)) / BLOCK * BLOCK
}

/// Where the data of the image is: sorted, non-overlapping, in 4 KiB blocks; deterministic for its arguments.
fn layout(size: u64, data: u64) -> Vec<Extent> {
    let mut rng = XorShift::new(SEED);
    let groups = size.div_ceil(GROUP);
    let group_len = |g: u64| GROUP.min(size - g * GROUP);
    let capacity = |g: u64| group_len(g).saturating_sub(META_AREA);
    let total_capacity: u64 = (0..groups).map(capacity).sum();
    assert!(data <= total_capacity * 9 / 10, "--data-gib must be at most 90% of what the block groups hold");

    // The files, each given to a random group that still has room.
    let mut per_group: Vec<Vec<(u64, Kind)>> = vec![Vec::new(); groups as usize];
    let mut used = vec![0u64; groups as usize];
    let (mut random_bytes, mut text_bytes) = (0u64, 0u64);
    let meta_guess = groups * 64 * KIB;
    while random_bytes + text_bytes + meta_guess < data {
        let len = file_size(&mut rng);
        // Half of the bytes of each kind, interleaved.
        let kind = if random_bytes <= text_bytes { Kind::Random } else { Kind::Text };
        let mut g = rng.below(groups);
        let mut tries = 0;
        while used[g as usize] + len > capacity(g) * 95 / 100 {
            g = (g + 1) % groups;
            tries += 1;
            assert!(tries <= groups, "no room for a file of {len} bytes");
        }
        used[g as usize] += len;
        per_group[g as usize].push((len, kind));
        match kind {
            Kind::Random => random_bytes += len,
            _ => text_bytes += len,
        }
    }

    let mut out = Vec::new();
    for g in 0..groups {
        let base = g * GROUP;
        let files = &mut per_group[g as usize];
        // Metadata: superblock + descriptors (some groups), block and inode bitmaps, the used inodes.
        if has_super(g) {
            out.push(Extent { offset: base, len: 2 * BLOCK, kind: Kind::Super });
        }
        if group_len(g) < META_AREA {
            continue;
        }
        out.push(Extent { offset: base + 2 * BLOCK, len: BLOCK, kind: Kind::Bitmap });
        out.push(Extent { offset: base + 3 * BLOCK, len: BLOCK, kind: Kind::Bitmap });
        let inodes = (files.len() as u64 + 16) * 256;
        out.push(Extent { offset: base + 4 * BLOCK, len: inodes.div_ceil(BLOCK).min(200) * BLOCK, kind: Kind::Inodes });
        // The files in a random order, with random gaps sharing the free space.
        for i in (1..files.len()).rev() {
            files.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let free = capacity(g) - used[g as usize];
        let weights: Vec<u64> = (0..=files.len()).map(|_| 1 + rng.below(1000)).collect();
        let sum: u64 = weights.iter().sum();
        let mut at = base + META_AREA;
        for (&(len, kind), &w) in files.iter().zip(&weights) {
            at += (free as u128 * w as u128 / sum as u128) as u64 / BLOCK * BLOCK;
            out.push(Extent { offset: at, len, kind });
            at += len;
        }
        assert!(at <= base + group_len(g), "the files overflow group {g}");
    }
    out.sort_by_key(|e| e.offset);
    out
}

/// The vocabulary of the text-like files, split at spaces.
const WORDS: &str = "the of and to in is that for it as was with be by on not he this are or his from at which but have \
     an had they you were their one all we can her has there been if more when will would who so no \
     config return value struct kernel module package install error warning /usr/lib /etc/default 0x7f3a \
     2026-11-26 version license function static include";

/// The bytes of one extent, deterministic for its offset and kind.
fn fill(e: &Extent, buf: &mut Vec<u8>) {
    buf.clear();
    buf.resize(e.len as usize, 0);
    let mut rng = XorShift::new(SEED ^ e.offset ^ ((e.kind as u64) << 56));
    let words: Vec<&[u8]> = WORDS.split(' ').map(str::as_bytes).collect();
    match e.kind {
        Kind::Random => {
            for w in buf.chunks_mut(8) {
                w.copy_from_slice(&rng.next().to_le_bytes()[..w.len()]);
            }
        }
        Kind::Text => {
            let mut i = 0;
            let mut col = 0;
            while i < buf.len() {
                let word = words[rng.below(words.len() as u64) as usize];
                let r = rng.below(16);
                for &b in word.iter().chain(if r == 0 || col > 72 { b"\n" } else { b" " }) {
                    if i == buf.len() {
                        break;
                    }
                    buf[i] = b;
                    i += 1;
                }
                col = if r == 0 || col > 72 { 0 } else { col + word.len() + 1 };
            }
        }
        Kind::Super => {
            // A superblock at 1 KiB (magic 0xEF53 at its offset 56), then descriptors of 64 bytes.
            for b in &mut buf[1024..1024 + 256] {
                *b = rng.below(256) as u8;
            }
            buf[1024 + 56..1024 + 58].copy_from_slice(&0xef53u16.to_le_bytes());
            for d in buf[BLOCK as usize..].chunks_mut(64).take(64) {
                for b in &mut d[..32] {
                    *b = rng.below(256) as u8;
                }
            }
        }
        Kind::Bitmap => {
            // The used blocks first, then a sparse tail.
            let full = rng.below(buf.len() as u64 / 2) as usize;
            buf[..full].fill(0xff);
            for _ in 0..64 {
                let i = full + rng.below((buf.len() - full) as u64) as usize;
                buf[i] |= 1 << rng.below(8);
            }
        }
        Kind::Inodes => {
            // 256-byte inodes: mode, ids, size, times, an extent header and one extent; the rest zero.
            for inode in buf.chunks_mut(256) {
                inode[0..2].copy_from_slice(&(0o100644u16).to_le_bytes());
                inode[4..8].copy_from_slice(&(rng.below(8 << 20) as u32).to_le_bytes());
                let t = 1_700_000_000 + rng.below(30_000_000) as u32;
                for at in [8, 12, 16] {
                    inode[at..at + 4].copy_from_slice(&t.to_le_bytes());
                }
                inode[40..42].copy_from_slice(&0xf30au16.to_le_bytes());
                inode[42..44].copy_from_slice(&1u16.to_le_bytes());
                inode[44..48].copy_from_slice(&4u16.to_le_bytes().repeat(2));
                inode[52..64].copy_from_slice(&rng.next().to_le_bytes().repeat(2)[..12]);
                inode[128..132].copy_from_slice(&32u32.to_le_bytes());
            }
        }
    }
}

struct Input {
    dir: PathBuf,
    raw: PathBuf,
    vmdk: PathBuf,
    vmdk_so: PathBuf,
    size: u64,
    /// `--data-gib`, in bytes (rounded to MiB).
    data_arg: u64,
    /// The bytes of data (all extents).
    data: u64,
    extents: usize,
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

fn run_ok(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd} (qemu-img: Debian's qemu-utils): {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd} {args:?}: {text}");
    text
}

/// The input, made unless cached.
fn prepare_input(size: u64, data: u64) -> Input {
    let dir =
        target_dir().join("import-bench").join(format!("v{LAYOUT_VERSION}-size{}m-data{}m", size / MIB, data / MIB));
    fs::create_dir_all(&dir).expect("the bench's work dir");
    let extents = layout(size, data);
    let input = Input {
        raw: dir.join("src.raw"),
        vmdk: dir.join("src.vmdk"),
        vmdk_so: dir.join("src-so.vmdk"),
        size,
        data_arg: data,
        data: extents.iter().map(|e| e.len).sum(),
        extents: extents.len(),
        dir,
    };
    let ready = input.dir.join("ready");
    if ready.exists() {
        println!("input: cached in {}", input.dir.display());
        return input;
    }
    let t = Instant::now();
    println!(
        "input: making {} ({} MiB, {} MiB of data in {} extents)",
        input.raw.display(),
        size / MIB,
        input.data / MIB,
        extents.len()
    );
    let _ = fs::remove_file(&input.raw);
    let f = File::create(&input.raw).expect("src.raw");
    f.set_len(size).expect("sizing src.raw");
    let mut buf = Vec::with_capacity(8 * MIB as usize);
    for e in &extents {
        fill(e, &mut buf);
        f.write_all_at(&buf, e.offset).expect("writing src.raw");
    }
    f.sync_all().expect("syncing src.raw");
    drop(f);
    let raw = input.raw.to_str().unwrap();
    println!("input: qemu-img convert -O vmdk (monolithicSparse, streamOptimized)");
    run_ok("qemu-img", &["convert", "-f", "raw", "-O", "vmdk", raw, input.vmdk.to_str().unwrap()]);
    run_ok(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
            raw,
            input.vmdk_so.to_str().unwrap(),
        ],
    );
    fs::write(&ready, format!("{}\n", input.data)).unwrap();
    println!("input: ready in {:.1} s", t.elapsed().as_secs_f64());
    input
}

/// Reads a file to its end, so that it is in the page cache.
fn warm(path: &Path) {
    let mut f = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut buf = vec![0u8; 4 * MIB as usize];
    while f.read(&mut buf).expect("reading an input") > 0 {}
}

// ---------------------------------------------------------------------------------------------------------------
// The daemon: XML-RPC calls, VDIs, uploads, memory.

struct Api {
    conn: Conn,
    session: String,
}

impl Api {
    fn login(addr: SocketAddr) -> Api {
        let mut api = Api { conn: Conn::open(addr), session: String::new() };
        let v = api.raw("session.login_with_password", &[s("root"), s(PASSWORD)]);
        api.session = v.as_str().expect("a session").to_string();
        api
    }

    fn raw(&mut self, method: &str, params: &[Value]) -> Value {
        let req = self.conn.request("/", "text/xml", &xmlrpc::write_call(method, params));
        self.conn.send_raw(&req);
        let r = self.conn.receive();
        match xmlrpc::parse_result(&r.body).expect("an XML-RPC answer") {
            Ok(v) => v,
            Err(e) => panic!("{method}: {e:?}"),
        }
    }

    fn call(&mut self, method: &str, params: &[Value]) -> Value {
        let mut all = vec![s(self.session.clone())];
        all.extend_from_slice(params);
        self.raw(method, &all)
    }

    /// The default SR ("Local storage") and its directory.
    fn default_sr(&mut self) -> (Value, PathBuf) {
        let pool = self.call("pool.get_all", &[]);
        let pool = pool.as_array().and_then(|a| a.first()).expect("a pool").clone();
        let sr = self.call("pool.get_default_SR", &[pool]);
        let pbds = self.call("SR.get_PBDs", &[sr.clone()]);
        let pbd = pbds.as_array().and_then(|a| a.first()).expect("the SR's PBD").clone();
        let dc = self.call("PBD.get_device_config", &[pbd]);
        let dir = dc.get("location").and_then(Value::as_str).expect("the SR's location").to_string();
        (sr, PathBuf::from(dir))
    }
}

/// A VDI for one upload, destroyed when dropped (unless the daemon is gone: then its data dir goes with it).
struct Vdi<'a> {
    api: &'a mut Api,
    vdi: Value,
    uuid: String,
}

impl<'a> Vdi<'a> {
    fn create(api: &'a mut Api, sr: &Value, size: u64) -> Vdi<'a> {
        let rec = Value::Struct(vec![
            ("name_label".into(), s("import bench")),
            ("SR".into(), sr.clone()),
            ("virtual_size".into(), Value::Int(size as i64)),
            ("type".into(), s("user")),
            ("sharable".into(), Value::Bool(false)),
            ("read_only".into(), Value::Bool(false)),
            ("other_config".into(), Value::Struct(vec![])),
        ]);
        let vdi = api.call("VDI.create", &[rec]);
        let uuid = api.call("VDI.get_uuid", &[vdi.clone()]).as_str().expect("a VDI uuid").to_string();
        Vdi { api, vdi, uuid }
    }
}

impl Drop for Vdi<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.api.call("VDI.destroy", &[self.vdi.clone()]);
        }
    }
}

fn rss_kb(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Samples a process's RSS every 5 ms until stopped; answers the peak (kB).
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let (stop, peak) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(rss_kb(pid))));
        let thread = {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_kb(pid), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(5));
                }
                peak.fetch_max(rss_kb(pid), Ordering::Relaxed);
            })
        };
        RssSampler { stop, peak, thread: Some(thread) }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("the RSS sampler");
        }
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `PUT /import_raw_vdi` of `file` with a `Content-Length`, written in 1 MiB pieces; answers the time from connect
/// to the whole answer, and the answer's status line and body.
fn upload(addr: SocketAddr, session: &str, vdi: &str, format: &str, file: &Path) -> (Duration, String) {
    let mut f = File::open(file).expect("the upload's input");
    let len = f.metadata().expect("its size").len();
    let t = Instant::now();
    let mut conn = TcpStream::connect(addr).expect("connecting for the upload");
    conn.set_read_timeout(Some(Duration::from_secs(600))).expect("a read timeout");
    let head = format!(
        "PUT /import_raw_vdi?session_id={session}&vdi={vdi}&format={format} HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).expect("sending the request head");
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let n = f.read(&mut buf).expect("reading the upload's input");
        if n == 0 {
            break;
        }
        // The daemon may answer (an error) and close before the end: its answer says why.
        if conn.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    // The answer: its head, then a Content-Length body (small: empty or one error line).
    let mut answer = Vec::new();
    let mut piece = [0u8; 4096];
    loop {
        let n = conn.read(&mut piece).unwrap_or(0);
        answer.extend_from_slice(&piece[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some(end) = text.find("\r\n\r\n") {
            let body_len = text[..end]
                .lines()
                .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if answer.len() >= end + 4 + body_len || n == 0 {
                break;
            }
        } else if n == 0 {
            break;
        }
    }
    let took = t.elapsed();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.lines().next().unwrap_or("(no answer)").to_string();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.trim()).unwrap_or("");
    (took, if body.is_empty() { status } else { format!("{status}: {body}") })
}

// ---------------------------------------------------------------------------------------------------------------
// Measurements.

/// One timed side: seconds, and whether its result was identical to the source.
#[derive(Clone, Copy)]
struct Timed {
    secs: f64,
    identical: bool,
    /// The disk space of the output (MiB).
    alloc_mib: u64,
}

/// Our side: seconds, identical, and the daemon's RSS growth (MB).
#[derive(Clone, Copy)]
struct Ours {
    timed: Timed,
    rss_mb: f64,
}

#[derive(Clone, Copy)]
struct Pair {
    base: Timed,
    ours: Ours,
}

/// `qemu-img compare` of `src.raw` with `image` (of `format`): identical?
fn compare(src: &Path, format: &str, image: &Path) -> bool {
    let out = Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", format])
        .arg(src)
        .arg(image)
        .stdin(Stdio::null())
        .output()
        .expect("qemu-img compare");
    if !out.status.success() {
        println!(
            "  qemu-img compare {} {}: {}{}",
            src.display(),
            image.display(),
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    out.status.success()
}

/// Deletes the baseline's output file when dropped.
struct OutFile(PathBuf);

impl Drop for OutFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// A baseline command writing `out`, then an fsync of `out`, timed together; then `qemu-img compare`.
fn baseline(input: &Input, cmd: &str, args: &[&str], out: &Path, out_format: &str) -> Timed {
    let _ = fs::remove_file(out);
    let guard = OutFile(out.to_path_buf());
    let t = Instant::now();
    let status = Command::new(cmd).args(args).stdin(Stdio::null()).status().expect("running the baseline");
    assert!(status.success(), "{cmd} {args:?}: {status}");
    File::open(out).and_then(|f| f.sync_all()).expect("fsync of the baseline's output");
    let secs = t.elapsed().as_secs_f64();
    let alloc_mib = fs::metadata(out).map(|m| m.blocks() * 512 / MIB).unwrap_or(0);
    let identical = compare(&input.raw, out_format, out);
    drop(guard);
    Timed { secs, identical, alloc_mib }
}

/// Our upload of `file` into a fresh VDI of the image's size; then `qemu-img compare` of its VHD; the VDI is
/// destroyed.
fn ours(d: &Daemon, api: &mut Api, sr: &(Value, PathBuf), input: &Input, format: &str, file: &Path) -> Ours {
    let session = api.session.clone();
    let vdi = Vdi::create(api, &sr.0, input.size);
    let pid = d.child.id();
    let before = rss_kb(pid);
    let sampler = RssSampler::start(pid);
    let (took, answer) = upload(d.addr, &session, &vdi.uuid, format, file);
    let peak = sampler.finish();
    assert!(answer.starts_with("HTTP/1.1 200"), "upload of {} ({format}): {answer}", file.display());
    let vhd = sr.1.join(format!("{}.vhd", vdi.uuid));
    let alloc_mib = fs::metadata(&vhd).map(|m| m.blocks() * 512 / MIB).unwrap_or(0);
    let identical = compare(&input.raw, "vpc", &vhd);
    drop(vdi);
    Ours {
        timed: Timed { secs: took.as_secs_f64(), identical, alloc_mib },
        rss_mb: peak.saturating_sub(before) as f64 * 1024.0 / MB,
    }
}

struct Run {
    sparse: Pair,
    stream: Pair,
    raw: Pair,
    /// Our raw upload again (the same figures), against `dd bs=64K`: informative, no target.
    raw64: Pair,
}

fn one_run(run: usize, d: &Daemon, api: &mut Api, sr: &(Value, PathBuf), input: &Input) -> Run {
    for p in [&input.raw, &input.vmdk, &input.vmdk_so] {
        warm(p);
    }
    let ours_first = run % 2 == 1;
    let pair = |api: &mut Api, base: &dyn Fn() -> Timed, format: &str, file: &Path| {
        if ours_first {
            let o = ours(d, api, sr, input, format, file);
            Pair { ours: o, base: base() }
        } else {
            let b = base();
            Pair { base: b, ours: ours(d, api, sr, input, format, file) }
        }
    };
    let raw = input.raw.to_str().unwrap();
    let out_vhd = input.dir.join("out.vhd");
    let qemu = |src: &Path| {
        let args = ["convert", "-O", "vpc", "-o", "force_size=on", src.to_str().unwrap(), out_vhd.to_str().unwrap()];
        baseline(input, "qemu-img", &args, &out_vhd, "vpc")
    };
    let sparse = pair(api, &|| qemu(&input.vmdk), "vmdk", &input.vmdk);
    let stream = pair(api, &|| qemu(&input.vmdk_so), "vmdk", &input.vmdk_so);
    let out_raw = input.dir.join("out.raw");
    let (if_, of) = (format!("if={raw}"), format!("of={}", out_raw.display()));
    let dd_args = [if_.as_str(), of.as_str(), "bs=1M", "conv=sparse,fsync", "status=none"];
    let raw = pair(api, &|| baseline(input, "dd", &dd_args, &out_raw, "raw"), "raw", &input.raw);
    // `dd bs=1M conv=sparse` writes every MiB that holds any data; we skip all-zero 4 KiB runs; dd bs=64K is closer.
    let dd64_args = [if_.as_str(), of.as_str(), "bs=64K", "conv=sparse,fsync", "status=none"];
    let raw64 = Pair { base: baseline(input, "dd", &dd64_args, &out_raw, "raw"), ours: raw.ours };
    Run { sparse, stream, raw, raw64 }
}

// ---------------------------------------------------------------------------------------------------------------
// The report.

fn gib_arg(v: Option<&String>, what: &str) -> u64 {
    let g: f64 = v.and_then(|v| v.parse().ok()).filter(|&g: &f64| g > 0.0).unwrap_or_else(|| panic!("{what} G"));
    ((g * GIB as f64) as u64).div_ceil(MIB) * MIB
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut runs, mut write_doc, mut bench) = (3, true, false);
    let (mut size, mut data) = (4 * GIB, GIB);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--size-gib" => size = gib_arg(it.next(), "--size-gib"),
            "--data-gib" => data = gib_arg(it.next(), "--data-gib"),
            "--bench" => bench = true,
            _ => {
                common::common_arg(a, &mut it, &mut runs, &mut write_doc);
            }
        }
    }
    if !bench {
        println!(
            "import: takes minutes and gigabytes; run it with `cargo bench -p xapi-server --bench import -- --runs 3`"
        );
        return;
    }
    let qemu_version = run_ok("qemu-img", &["--version"]).lines().next().unwrap_or("?").to_string();
    let started = Instant::now();
    let input = prepare_input(size, data);
    let size_of = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    println!(
        "input: {} MiB virtual, {} MiB of data in {} extents; monolithicSparse VMDK {} MiB, streamOptimized {} MiB",
        input.size / MIB,
        input.data / MIB,
        input.extents,
        size_of(&input.vmdk) / MIB,
        size_of(&input.vmdk_so) / MIB
    );

    let d = Daemon::start("import-bench");
    let mut api = Api::login(d.addr);
    let sr = api.default_sr();
    let same_disk = fs::metadata(&sr.1).map(|m| m.dev()).ok() == fs::metadata(&input.dir).map(|m| m.dev()).ok();
    println!(
        "daemon: pid {}, SR {} ({} the inputs' disk)",
        d.child.id(),
        sr.1.display(),
        if same_disk { "on" } else { "NOT on" }
    );

    let mut all = Vec::new();
    let mut loads = Vec::new();
    for run in 1..=runs {
        let before = common::load_avg();
        let r = one_run(run, &d, &mut api, &sr, &input);
        loads.push((before, common::load_avg()));
        let line = |name: &str, base: &str, p: &Pair| {
            format!(
                "{name} ours {:.2} s{} vs {base} {:.2} s{} ({:.2}×, +{:.0} MB RSS)",
                p.ours.timed.secs,
                if p.ours.timed.identical { "" } else { " NOT IDENTICAL" },
                p.base.secs,
                if p.base.identical { "" } else { " NOT IDENTICAL" },
                p.base.secs / p.ours.timed.secs,
                p.ours.rss_mb
            )
        };
        println!(
            "run {run}: {}; {}; {}; dd bs=64K {:.2} s",
            line("monolithicSparse", "qemu-img", &r.sparse),
            line("streamOptimized", "qemu-img", &r.stream),
            line("raw", "dd", &r.raw),
            r.raw64.base.secs
        );
        all.push(r);
    }
    drop(api);
    drop(d);

    let md = report(&input, &all, &loads, runs, &qemu_version, same_disk);
    println!("\n{md}");
    println!("(took {:.0} s)", started.elapsed().as_secs_f64());
    if write_doc {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks.md");
        common::write_section(&path, "import", &md, common::NewSection::Last);
    }
}

fn report(
    input: &Input,
    all: &[Run],
    loads: &[(String, String)],
    runs: usize,
    qemu_version: &str,
    same_disk: bool,
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "## Disk-image import: `/import_raw_vdi` vs `qemu-img convert` and `dd`\n");
    let mut cmd = format!("cargo bench -p xapi-server --bench import -- --runs {runs}");
    if input.size != 4 * GIB {
        let _ = write!(cmd, " --size-gib {}", input.size as f64 / GIB as f64);
    }
    if input.data_arg != GIB {
        let _ = write!(cmd, " --data-gib {}", input.data_arg as f64 / GIB as f64);
    }
    let _ = writeln!(md, "Written by `xapi-server/benches/import.rs`; regenerate with:\n\n```\n{cmd}\n```\n");
    common::write_facts(&mut md, loads.iter());
    let _ = writeln!(md, "- **Baseline:** {qemu_version}; GNU `dd`");
    let _ = writeln!(
        md,
        "- **Input:** a sparse raw image of {} MiB holding {} MiB of data in {} extents (ext4-like: 128 MiB block \
         groups with metadata at their start, files of 4 KiB … 8 MiB scattered through them, half the bytes \
         random, half text); monolithicSparse VMDK {} MiB, streamOptimized {} MiB (`qemu-img convert -O vmdk`). \
         The inputs are read before each run (page cache for both sides; caches are not dropped); outputs on the \
         same disk ({}).\n",
        input.size / MIB,
        input.data / MIB,
        input.extents,
        fs::metadata(&input.vmdk).map(|m| m.len() / MIB).unwrap_or(0),
        fs::metadata(&input.vmdk_so).map(|m| m.len() / MIB).unwrap_or(0),
        if same_disk { "checked" } else { "**not** the same disk" }
    );
    let mb_s = |secs: f64| input.data as f64 / MB / secs;
    let _ = writeln!(
        md,
        "| import | ours | min–max | baseline | min–max | baseline/ours | target | result | daemon RSS growth \
         (max) | identical |"
    );
    let _ = writeln!(md, "|---|---:|---|---:|---|---:|---|---|---:|---|");
    let mut misses = Vec::new();
    type Row = (&'static str, &'static str, fn(&Run) -> &Pair, f64);
    let rows: [Row; 4] = [
        ("monolithicSparse VMDK → VHD", "`qemu-img convert -O vpc`", |r| &r.sparse, 1.0),
        ("streamOptimized VMDK → VHD", "`qemu-img convert -O vpc`", |r| &r.stream, 1.0),
        ("raw upload", "`dd bs=1M conv=sparse,fsync`", |r| &r.raw, 0.8),
        ("raw upload (informative)", "`dd bs=64K conv=sparse,fsync`", |r| &r.raw64, 0.0),
    ];
    let mut peak_rss: f64 = 0.0;
    for (name, base_name, pick, target) in rows {
        let ours: Vec<f64> = all.iter().map(|r| pick(r).ours.timed.secs).collect();
        let base: Vec<f64> = all.iter().map(|r| pick(r).base.secs).collect();
        let rss = all.iter().map(|r| pick(r).ours.rss_mb).fold(0.0, f64::max);
        peak_rss = peak_rss.max(rss);
        let identical = all.iter().all(|r| pick(r).ours.timed.identical && pick(r).base.identical);
        let (mo, mb) = (median(&ours), median(&base));
        let ratio = mb / mo;
        let met = ratio >= target && identical;
        if !met {
            misses.push(name);
        }
        let (target, verdict) = match (target > 0.0, met) {
            (false, _) => ("—".to_string(), "—"),
            (true, true) => (format!("≥ {target:.1}×"), "met"),
            (true, false) => (format!("≥ {target:.1}×"), "**MISS**"),
        };
        let ((olo, ohi), (blo, bhi)) = (min_max(&ours), min_max(&base));
        let _ = writeln!(
            md,
            "| {name} | {mo:.2} s ({:.0} MB/s) | {olo:.2}–{ohi:.2} s | {mb:.2} s ({:.0} MB/s), {base_name} | \
             {blo:.2}–{bhi:.2} s | {ratio:.2}× | {target} | {verdict} | {rss:.0} MB | {} |",
            mb_s(mo),
            mb_s(mb),
            if identical { "yes" } else { "**NO**" }
        );
    }
    let alloc = |pick: fn(&Run) -> &Pair| {
        let r = &all[all.len() - 1];
        (pick(r).ours.timed.alloc_mib, pick(r).base.alloc_mib)
    };
    let ((sparse_ours, sparse_qemu), (_, stream_qemu), (raw_ours, dd1m), (_, dd64)) =
        (alloc(|r| &r.sparse), alloc(|r| &r.stream), alloc(|r| &r.raw), alloc(|r| &r.raw64));
    let _ = writeln!(
        md,
        "\nDisk space of the outputs (last run): our VHD {sparse_ours} MiB from a VMDK, {raw_ours} MiB from the raw \
         image; `qemu-img`'s VHD {sparse_qemu} MiB (from the streamOptimized VMDK: {stream_qemu} MiB); `dd bs=1M \
         conv=sparse` {dd1m} MiB (it writes every MiB that holds any data, zeros included), `dd bs=64K` {dd64} MiB."
    );
    let rss_met = peak_rss <= 64.0;
    if !rss_met {
        misses.push("memory");
    }
    let _ = writeln!(
        md,
        "\nMemory: the daemon's RSS grew by at most {peak_rss:.0} MB during an upload (target ≤ 64 MB): {}.",
        if rss_met { "met" } else { "**MISS**" }
    );
    let _ = writeln!(
        md,
        "\n{}",
        if misses.is_empty() { "All targets met.".to_string() } else { format!("**Missed:** {}.", misses.join("; ")) }
    );
    let _ = writeln!(
        md,
        "\nHow it is measured: times are medians over {runs} runs (min–max beside them), ratio = baseline time / our \
         time (above 1.00× we are faster); MB/s are of the {} MiB of data, not of the virtual size. Baseline: \
         `qemu-img convert -O vpc -o force_size=on src.vmdk out.vhd` (or `dd if=src.raw of=out.raw bs=1M \
         conv=sparse,fsync`) then an fsync of the output, timed together. Ours: `PUT \
         /import_raw_vdi?format=vmdk|raw` of the same file with a `Content-Length` (1 MiB writes over a plain TCP \
         connection to the release daemon on loopback), into a fresh VDI of the image's size in Local storage, \
         timed from connect to the `200` answer (given once the data is fdatasync'd and swapped in). Ours first in \
         odd runs, the baseline first in even ones. Every output is checked with `qemu-img compare` against \
         `src.raw`, outside the timing. RSS: the daemon's `VmRSS` sampled every 5 ms during each upload, peak less \
         the value just before it.",
        input.data / MIB
    );
    md
}
