//! SR operations on a 2 GiB VDI full of data: snapshot and clone latency, and the collector's merge throughput
//! against this disk's own sequential write speed, same run.
//!
//! ```text
//! cargo bench -p storage-repo --bench sr [-- --runs N]
//! ```
//!
//! Each run makes an `ext` SR in `target/sr-bench/`, a 2 GiB VDI with every block written (random bytes) and
//! flushed, then:
//! - **snapshot** and **clone**: `FileSr::snapshot` of the VDI (what `VDI.snapshot`/`VDI.clone` do on disk: a hard
//!   link, two new differencing files, the hidden flag, an fsynced journal), 10 times each; each new VDI is
//!   deleted and the chain merged again so that every measurement starts from the same one-file VDI;
//! - **merge**: 1 GiB written into the VDI after a snapshot, the snapshot deleted, then `FileSr::collect_all`
//!   (the leaf-coalesce: 1 GiB copied into the base, fsynced, the base renamed over the VDI), timed;
//! - **baseline**: 1 GiB written sequentially to a new file in the same directory with `fdatasync` at the end.
//!
//! Prints medians over the runs and writes them to `docs/benchmarks.md` between `<!-- sr:begin -->` and
//! `<!-- sr:end -->`; targets: snapshot and clone ≤ 50 ms; the merge is reported as a fraction of the baseline.
//! Without `--bench` (as `cargo test --benches` runs it) one quick run on 64 MiB, and nothing is written.

mod common;

use std::fmt::Write as _;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use storage_repo::block::BlockDevice;
use storage_repo::formats::vhd::Chain;
use storage_repo::sr::FileSr;
use uuid::Uuid;

const MIB: u64 = 1 << 20;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Fills `len` bytes from `offset` with pseudo-random data, 1 MiB at a time.
fn fill(c: &Chain, offset: u64, len: u64, seed: u64) {
    let mut x = seed | 1;
    let mut buf = vec![0u8; MIB as usize];
    for chunk in 0..len / MIB {
        for w in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        c.write_at(&buf, offset + chunk * MIB).unwrap();
    }
    c.flush().unwrap();
}

struct Run {
    snapshot: Vec<Duration>,
    clone: Vec<Duration>,
    merge: Duration,
    baseline: Duration,
}

fn one_run(dir: &Path, size: u64, merge_bytes: u64) -> Run {
    let _ = fs::remove_dir_all(dir);
    let sr = FileSr::create(dir, &Uuid::new_v4().to_string()).unwrap();
    let x = Uuid::new_v4();
    sr.create_vdi(x, size).unwrap();
    fill(&Chain::open(&sr.path(&x), true).unwrap(), 0, size, 1);
    let mut snapshot = Vec::new();
    let mut clone = Vec::new();
    for i in 0..20 {
        let (new, base) = (Uuid::new_v4(), Uuid::new_v4());
        let t = Instant::now();
        sr.snapshot(&x, new, base).unwrap();
        let dt = t.elapsed();
        // A snapshot and a clone are the same file operation; the toolstack only records them differently.
        if i % 2 == 0 {
            snapshot.push(dt)
        } else {
            clone.push(dt)
        }
        sr.destroy_vdi(&new).unwrap();
        sr.collect_all(&|_| false, 16).unwrap();
    }
    let (snap, base) = (Uuid::new_v4(), Uuid::new_v4());
    sr.snapshot(&x, snap, base).unwrap();
    fill(&Chain::open(&sr.path(&x), true).unwrap(), 0, merge_bytes, 2);
    sr.destroy_vdi(&snap).unwrap();
    let t = Instant::now();
    let steps = sr.collect_all(&|_| false, 16).unwrap();
    let merge = t.elapsed();
    assert!(!steps.is_empty() && sr.info(&x).unwrap().parent.is_none(), "the merge happened: {steps:?}");

    let path = dir.join("baseline.raw");
    let buf = vec![0x5au8; MIB as usize];
    let t = Instant::now();
    let mut f = fs::File::create(&path).unwrap();
    for _ in 0..merge_bytes / MIB {
        f.write_all(&buf).unwrap();
    }
    f.sync_data().unwrap();
    let baseline = t.elapsed();
    drop(f);
    let _ = fs::remove_dir_all(dir);
    Run { snapshot, clone, merge, baseline }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench");
    let runs =
        args.iter().position(|a| a == "--runs").and_then(|i| args.get(i + 1)).and_then(|n| n.parse().ok()).unwrap_or(3);
    let (size, merge_bytes, runs) = if bench { (2048 * MIB, 1024 * MIB, runs) } else { (64 * MIB, 32 * MIB, 1) };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").join("target/sr-bench");
    let started = Instant::now();
    let mut all = Vec::new();
    let mut loads = Vec::new();
    for r in 0..runs {
        let before = common::load_avg();
        let run = one_run(&dir, size, merge_bytes);
        println!(
            "run {r}: snapshot median {:.1} ms (max {:.1}), clone median {:.1} ms (max {:.1}), merge of {} MiB \
             {:.2} s ({:.0} MB/s), sequential write + fdatasync {:.2} s ({:.0} MB/s)",
            ms(median(run.snapshot.clone())),
            ms(*run.snapshot.iter().max().unwrap()),
            ms(median(run.clone.clone())),
            ms(*run.clone.iter().max().unwrap()),
            merge_bytes / MIB,
            run.merge.as_secs_f64(),
            merge_bytes as f64 / run.merge.as_secs_f64() / 1e6,
            run.baseline.as_secs_f64(),
            merge_bytes as f64 / run.baseline.as_secs_f64() / 1e6,
        );
        all.push(run);
        loads.push(format!("{before} → {}", common::load_avg()));
    }
    let snap = median(all.iter().flat_map(|r| r.snapshot.clone()).collect());
    let clone = median(all.iter().flat_map(|r| r.clone.clone()).collect());
    let merge = median(all.iter().map(|r| r.merge).collect());
    let base = median(all.iter().map(|r| r.baseline).collect());
    let mut ratios: Vec<f64> = all.iter().map(|r| r.baseline.as_secs_f64() / r.merge.as_secs_f64()).collect();
    ratios.sort_by(|a, b| a.total_cmp(b));
    let ratio = ratios[ratios.len() / 2];
    let rate = |d: Duration| merge_bytes as f64 / d.as_secs_f64() / 1e6;
    let per_run = |f: &dyn Fn(&Run) -> String| all.iter().map(f).collect::<Vec<_>>().join(" / ");
    let mut md = String::new();
    let _ = writeln!(md, "## SR operations: snapshot, clone and merge on a 2 GiB VDI\n");
    let _ = writeln!(
        md,
        "Written by `storage-repo/benches/sr.rs`; regenerate (≈ {:.0} s for {runs} runs) with:\n\n```\ncargo bench \
         -p storage-repo --bench sr -- --runs {runs}\n```\n",
        started.elapsed().as_secs_f64()
    );
    let _ = writeln!(md, "- **Date:** {}", common::command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]));
    let _ = writeln!(md, "- **Commit:** `{}`", common::command_output("git", &["rev-parse", "--short", "HEAD"]));
    let _ = writeln!(md, "- **Load average (1/5/15 min) before → after each run:** {}\n", loads.join("; "));
    let _ = writeln!(
        md,
        "A {} MiB VDI with every block written. Snapshot and clone are `FileSr::snapshot` (the file work of \
         `VDI.snapshot`/`VDI.clone`: an fsynced journal, a hard link, two new differencing files, the hidden flag), 10 \
         of each per run from the same one-file VDI. The merge is the collector's leaf-coalesce of a child holding {} \
         MiB (copied into the base, fsynced, renamed over the VDI); the baseline writes as much to a new file in the \
         same directory and fdatasyncs it.\n",
        size / MIB,
        merge_bytes / MIB
    );
    let _ = writeln!(md, "| figure | ours | per run | baseline | ours/baseline | target | result |");
    let _ = writeln!(md, "|---|---:|---|---:|---:|---|---|");
    let pass = |ok: bool| if ok { "pass" } else { "**MISS**" };
    let _ = writeln!(
        md,
        "| snapshot latency (median of {}) | {:.1} ms | {} | — | — | ≤ 50 ms | {} |",
        runs * 10,
        ms(snap),
        per_run(&|r| format!("{:.1} ms", ms(median(r.snapshot.clone())))),
        pass(ms(snap) <= 50.0)
    );
    let _ = writeln!(
        md,
        "| clone latency (median of {}) | {:.1} ms | {} | — | — | ≤ 50 ms | {} |",
        runs * 10,
        ms(clone),
        per_run(&|r| format!("{:.1} ms", ms(median(r.clone.clone())))),
        pass(ms(clone) <= 50.0)
    );
    let _ = writeln!(
        md,
        "| merge (coalesce) throughput | {:.0} MB/s | {} | {:.0} MB/s (sequential write + fdatasync) | {:.2}× | — | — |",
        rate(merge),
        per_run(&|r| format!("{:.0} MB/s", rate(r.merge))),
        rate(base),
        ratio
    );
    println!("\n{md}");
    if bench {
        let doc = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").join("docs/benchmarks.md");
        common::write_section(&doc, "sr", &md);
        println!("wrote the sr section of {}", doc.display());
    }
}
