//! The collector killed at random moments (SIGKILL of `sr-tool collect`, 40 times): after each kill the SR is
//! attached again (which recovers from its journal), every VHD file checks, and the VDI reads exactly what it held
//! before. Then an uninterrupted run finishes the merge, with the same content.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use storage_repo::block::BlockDevice;
use storage_repo::formats::vhd::{self, Chain};
use storage_repo::sr::FileSr;
use uuid::Uuid;

use crate::util::{Rng, read_all, tempdir};

const MIB: u64 = 1 << 20;

/// An SR whose VDI `x` is a child of a hidden base with no other child: the collector's leaf-coalesce case, with
/// `size` bytes of data in each of the two files.
fn build(dir: &Path, x: Uuid) -> Vec<u8> {
    let sr = FileSr::create(dir, "00000000-0000-4000-8000-00000000000a").unwrap();
    sr.create_vdi(x, 256 * MIB).unwrap();
    let mut rng = Rng::new(7);
    {
        let c = Chain::open(&sr.path(&x), true).unwrap();
        for i in 0..48u64 {
            c.write_at(&rng.bytes(MIB as usize), (i * 5 % 256) * MIB).unwrap();
        }
        c.flush().unwrap();
    }
    let (snap, base) = (Uuid::new_v4(), Uuid::new_v4());
    sr.snapshot(&x, snap, base).unwrap();
    {
        let c = Chain::open(&sr.path(&x), true).unwrap();
        for i in 0..40u64 {
            // Whole blocks and pieces of blocks, over old data and over holes.
            let off = rng.below(256 * MIB - MIB) & !511;
            let len = (rng.below(MIB) as usize + 512) & !511;
            c.write_at(&rng.bytes(len), off).unwrap();
            c.write_at(&rng.bytes(4096), i * 6 * MIB).unwrap();
        }
        c.flush().unwrap();
    }
    sr.destroy_vdi(&snap).unwrap();
    read_all(&sr.path(&x))
}

fn check_sr(dir: &Path, x: Uuid, want: &[u8], what: &str) {
    let sr = FileSr::attach(dir).unwrap_or_else(|e| panic!("{what}: attach (recovery) failed: {e}"));
    let (files, bad) = sr.scan().unwrap();
    assert!(bad.is_empty(), "{what}: unreadable files {bad:?}");
    for f in &files {
        vhd::check(&sr.path(&f.uuid)).unwrap_or_else(|e| panic!("{what}: {} does not check: {e}", f.uuid));
    }
    let got = read_all(&sr.path(&x));
    assert!(got == want, "{what}: the VDI's content changed");
}

#[test]
fn killing_the_collector_at_any_moment_loses_nothing() {
    let tmp = tempdir();
    let dir = tmp.path().join("sr");
    let x = Uuid::new_v4();
    let want = build(&dir, x);
    let tool = env!("CARGO_BIN_EXE_sr-tool");

    // How long an uninterrupted collection takes, on a copy.
    let probe = tmp.path().join("probe");
    copy_dir(&dir, &probe);
    let t = Instant::now();
    assert!(Command::new(tool).arg("collect").arg(&probe).stdout(Stdio::null()).status().unwrap().success());
    let full = t.elapsed().max(Duration::from_millis(20));
    check_sr(&probe, x, &want, "after an uninterrupted collection");
    assert!(FileSr::attach(&probe).unwrap().info(&x).unwrap().parent.is_none(), "the chain was merged");

    let mut rng = Rng::new(99);
    let mut finished = 0;
    for i in 0..40 {
        let mut child = Command::new(tool).arg("collect").arg(&dir).stdout(Stdio::null()).spawn().unwrap();
        let delay = Duration::from_micros(rng.below(full.as_micros() as u64 * 3 / 4 + 1));
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.success() {
            finished += 1;
        }
        check_sr(&dir, x, &want, &format!("kill {i} after {delay:?} (of ~{full:?})"));
        if FileSr::attach(&dir).unwrap().info(&x).unwrap().parent.is_none() {
            // Merged: start again from the unmerged state, so that every kill lands inside a collection.
            std::fs::remove_dir_all(&dir).unwrap();
            build_again(&dir, x, &want);
        }
    }
    eprintln!("collections killed: {} of 40 (one collection takes {full:?})", 40 - finished);
    assert!(finished < 40, "no kill landed inside a collection");
}

/// `build` again (the same seed gives the same files' content).
fn build_again(dir: &Path, x: Uuid, want: &[u8]) {
    let got = build(dir, x);
    assert!(got == want);
}

fn copy_dir(from: &Path, to: &Path) {
    let st = Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
    assert!(st.success());
}

#[test]
fn attaching_removes_the_temporary_files_a_crash_left() {
    let tmp = tempdir();
    let dir = tmp.path().join("sr");
    let sr = FileSr::create(&dir, "00000000-0000-4000-8000-00000000000b").unwrap();
    let x = Uuid::new_v4();
    sr.create_vdi(x, 4 * MIB).unwrap();
    let leftovers = [
        format!("{x}.vhd.copy"),
        format!("{x}.vhd.import"),
        format!("{x}.vhd.export-0123abcd"),
        format!(".{x}.upload"),
    ];
    for l in &leftovers {
        std::fs::write(dir.join(l), b"partial").unwrap();
    }
    std::fs::write(dir.join("notes.txt"), b"the administrator's").unwrap();
    FileSr::attach(&dir).unwrap();
    for l in &leftovers {
        assert!(!dir.join(l).exists(), "{l} is still there");
    }
    assert!(dir.join("notes.txt").exists(), "files that are not ours stay");
    assert!(sr.path(&x).exists(), "the VDI stays");
}
