//! Hostile and foreign files: every malformed structure is refused with `Corrupt` and a message naming the
//! problem, never a panic; foreign but valid files (qemu's dynamic and fixed VHDs) are read.

use std::path::Path;

use storage_repo::Error;
use storage_repo::block::BlockDevice;
use storage_repo::formats::vhd::{self, Chain, DiskType};
use uuid::Uuid;

use crate::util::{
    Rng, assert_same, patch_footers, patch_header, qemu_img, qemu_raw, read_all, set_locator_paths, tempdir,
};

const MIB: u64 = 1 << 20;

/// Every way in is refused with `Corrupt`; the readers' message contains `what` (check may name an earlier
/// problem, as vhd-util's does).
#[track_caller]
fn refused(path: &Path, what: &str) {
    for (how, r) in [
        ("read_info", vhd::read_info(path).map(|_| ())),
        ("check", vhd::check(path).map(|_| ())),
        ("open", Chain::open(path, false).map(|_| ())),
    ] {
        match r {
            Err(e @ Error::Corrupt { .. }) => {
                assert!(how == "check" || e.to_string().contains(what), "{how}: {e:?} lacks {what:?}")
            }
            other => panic!("{how}: expected Corrupt ({what}), got {other:?}"),
        }
    }
}

/// A 64 MiB dynamic disk with blocks 0 and 1 allocated.
fn sample(dir: &Path, name: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    vhd::create_dynamic(&p, Uuid::new_v4(), 64 * MIB).unwrap();
    let c = Chain::open(&p, true).unwrap();
    c.write_at(&[1u8; 4096], 0).unwrap();
    c.write_at(&[2u8; 4096], 2 * MIB).unwrap();
    c.flush().unwrap();
    p
}

fn bat_entry(path: &Path, i: usize) -> u32 {
    let b = std::fs::read(path).unwrap();
    u32::from_be_bytes(b[1536 + 4 * i..1536 + 4 * i + 4].try_into().unwrap())
}

fn set_bat_entry(path: &Path, i: usize, v: u32) {
    let mut b = std::fs::read(path).unwrap();
    b[1536 + 4 * i..1536 + 4 * i + 4].copy_from_slice(&v.to_be_bytes());
    std::fs::write(path, b).unwrap();
}

#[test]
fn truncated_files() {
    let dir = tempdir();
    let good = std::fs::read(sample(dir.path(), "good.vhd")).unwrap();
    let p = dir.path().join("t.vhd");
    for len in [0, 1, 511] {
        std::fs::write(&p, &good[..len]).unwrap();
        refused(&p, "shorter than a VHD footer");
    }
    for len in [512, 1000, 1536, 3000] {
        std::fs::write(&p, &good[..len]).unwrap();
        assert!(matches!(vhd::read_info(&p), Err(Error::Corrupt { .. })), "{len}");
        assert!(matches!(Chain::open(&p, true), Err(Error::Corrupt { .. })), "{len}");
    }
    // Cut inside the first block: its BAT entry now points past the end.
    std::fs::write(&p, &good[..6000]).unwrap();
    refused(&p, "past the end");
}

#[test]
fn bat_entries_past_the_end_into_metadata_or_overlapping() {
    let dir = tempdir();
    let p = sample(dir.path(), "a.vhd");
    let first = bat_entry(&p, 0);
    set_bat_entry(&p, 5, 0x7fff_0000);
    refused(&p, "BAT entry 5 (offset 1099478073344) points past the end of the file");
    set_bat_entry(&p, 5, 3);
    refused(&p, "points into the metadata");
    set_bat_entry(&p, 5, first + 8);
    refused(&p, "overlap");
    set_bat_entry(&p, 5, u32::MAX);
    vhd::check(&p).unwrap();
}

#[test]
fn bad_checksums_and_cookies() {
    let dir = tempdir();
    let p = sample(dir.path(), "a.vhd");
    let good = std::fs::read(&p).unwrap();
    let content = read_all(&p);
    let end = good.len() - 512;

    // The trailing footer damaged: readers use the copy at 0, check refuses, a writable open repairs.
    let mut b = good.clone();
    b[end + 70] ^= 0xff;
    std::fs::write(&p, &b).unwrap();
    assert_same(&read_all(&p), &content);
    assert!(vhd::check(&p).unwrap_err().to_string().contains("the footer at the end is invalid"));
    drop(Chain::open(&p, true).unwrap());
    vhd::check(&p).unwrap();
    assert_same(&read_all(&p), &content);

    // Both footers damaged.
    let mut b = good.clone();
    b[70] ^= 0xff;
    b[end + 70] ^= 0xff;
    std::fs::write(&p, &b).unwrap();
    refused(&p, "bad footer checksum");
    let mut b = good.clone();
    b[0] = b'X';
    b[end] = b'X';
    std::fs::write(&p, &b).unwrap();
    refused(&p, "bad footer cookie");

    // The header.
    let mut b = good.clone();
    b[512 + 40] ^= 1;
    std::fs::write(&p, &b).unwrap();
    refused(&p, "bad dynamic header checksum");
    let mut b = good.clone();
    b[512] = b'X';
    std::fs::write(&p, &b).unwrap();
    refused(&p, "bad dynamic header cookie");

    // The batmap is an accelerator: a damaged one is ignored by readers and refused by check.
    let mut b = good.clone();
    b[2560] = 0xff; // marks blocks 0-7 full, checksum now wrong
    std::fs::write(&p, &b).unwrap();
    assert_same(&read_all(&p), &content);
    assert!(vhd::check(&p).unwrap_err().to_string().contains("batmap"));
}

#[test]
fn absurd_sizes_and_offsets() {
    let dir = tempdir();
    let p = sample(dir.path(), "a.vhd");
    let good = std::fs::read(&p).unwrap();
    patch_footers(&p, |f| f[48..56].copy_from_slice(&(1u64 << 52).to_be_bytes()));
    refused(&p, "larger than the maximum");
    std::fs::write(&p, &good).unwrap();
    patch_footers(&p, |f| f[48..56].copy_from_slice(&(64 * MIB + 1).to_be_bytes()));
    refused(&p, "not a multiple of 512");
    std::fs::write(&p, &good).unwrap();
    patch_footers(&p, |f| f[48..56].copy_from_slice(&(2040u64 << 30).to_be_bytes()));
    refused(&p, "fewer than the");
    std::fs::write(&p, &good).unwrap();
    patch_footers(&p, |f| f[16..24].copy_from_slice(&(1u64 << 40).to_be_bytes()));
    refused(&p, "header offset");
    std::fs::write(&p, &good).unwrap();
    patch_footers(&p, |f| f[60..64].copy_from_slice(&7u32.to_be_bytes()));
    refused(&p, "unknown disk type");

    std::fs::write(&p, &good).unwrap();
    patch_header(&p, |h| h[28..32].copy_from_slice(&0x7fff_ffffu32.to_be_bytes()));
    refused(&p, "does not fit in the file");
    std::fs::write(&p, &good).unwrap();
    patch_header(&p, |h| h[28..32].copy_from_slice(&1u32.to_be_bytes()));
    refused(&p, "fewer than the 32 blocks");
    std::fs::write(&p, &good).unwrap();
    patch_header(&p, |h| h[16..24].copy_from_slice(&u64::MAX.to_be_bytes()));
    refused(&p, "does not fit in the file");
    std::fs::write(&p, &good).unwrap();
    patch_header(&p, |h| h[32..36].copy_from_slice(&(4u32 << 20).to_be_bytes()));
    refused(&p, "block size 4194304 is not supported");
    std::fs::write(&p, &good).unwrap();
    patch_header(&p, |h| h[32..36].copy_from_slice(&3000u32.to_be_bytes()));
    refused(&p, "block size 3000");
    std::fs::write(&p, &good).unwrap();
    patch_header(&p, |h| h[576..580].copy_from_slice(b"ABCD"));
    refused(&p, "unknown platform code");
}

fn child_of(dir: &Path, parent: &Path, name: &str) -> std::path::PathBuf {
    let c = dir.join(name);
    vhd::create_child(&c, Uuid::new_v4(), parent).unwrap();
    c
}

#[test]
fn locators_that_escape_the_directory() {
    let dir = tempdir();
    let base = sample(dir.path(), "base.vhd");
    let c = child_of(dir.path(), &base, "c.vhd");
    let good = std::fs::read(&c).unwrap();
    for (target, what) in [
        ("../x.vhd", "is not relative to the disk's directory"),
        ("./../x.vhd", "leaves the disk's directory"),
        ("./a/b.vhd", "leaves the disk's directory"),
        ("./..", "leaves the disk's directory"),
        ("/etc/passwd", "is not relative to the disk's directory"),
        ("base.vhd", "is not relative"),
    ] {
        std::fs::write(&c, &good).unwrap();
        set_locator_paths(&c, target);
        refused(&c, what);
    }
    // A locator whose length runs past the end of the file.
    std::fs::write(&c, &good).unwrap();
    patch_header(&c, |h| h[576 + 4..576 + 8].copy_from_slice(&(1u32 << 30).to_be_bytes()));
    refused(&c, "is outside the file");
    // A locator over the header (set_parent would overwrite it).
    std::fs::write(&c, &good).unwrap();
    patch_header(&c, |h| h[576 + 16..576 + 24].copy_from_slice(&1024u64.to_be_bytes()));
    refused(&c, "overlaps the footer copy, header, BAT or batmap");
    // Locators that disagree.
    std::fs::write(&c, &good).unwrap();
    let mut b = good.clone();
    let at = b.windows(17).position(|w| w == b"file://./base.vhd").unwrap();
    b[at + 9] = b'c';
    std::fs::write(&c, &b).unwrap();
    refused(&c, "disagree");
}

#[test]
fn loops_self_parents_and_wrong_uuids() {
    let dir = tempdir();
    let base = sample(dir.path(), "a.vhd");
    let b = child_of(dir.path(), &base, "b.vhd");
    let c = child_of(dir.path(), &b, "c.vhd");
    let b_uuid = vhd::read_info(&b).unwrap().uuid;
    let c_uuid = vhd::read_info(&c).unwrap().uuid;

    // A wrong parent UUID.
    let good_b = std::fs::read(&b).unwrap();
    patch_header(&b, |h| h[40..56].copy_from_slice(Uuid::new_v4().as_bytes()));
    let e = Chain::open(&b, false).unwrap_err();
    assert!(e.to_string().contains("the header expects"), "{e}");
    assert!(vhd::check(&b).unwrap_err().to_string().contains("the header expects"));
    std::fs::write(&b, &good_b).unwrap();

    // A -> A: a child that names itself with its own UUID.
    let good_c = std::fs::read(&c).unwrap();
    set_locator_paths(&c, "./c.vhd");
    patch_header(&c, |h| {
        h[40..56].copy_from_slice(c_uuid.as_bytes());
        let name: Vec<u8> = "c.vhd".encode_utf16().flat_map(u16::to_be_bytes).collect();
        h[64..64 + name.len()].copy_from_slice(&name);
    });
    let e = Chain::open(&c, false).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }) && e.to_string().contains("loops"), "{e}");
    std::fs::write(&c, &good_c).unwrap();

    // B -> C -> B: c.vhd renamed to a.vhd, and b's header pointed at its UUID.
    std::fs::rename(&c, &base).unwrap();
    patch_header(&b, |h| h[40..56].copy_from_slice(c_uuid.as_bytes()));
    let e = Chain::open(&b, false).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }) && e.to_string().contains("loops"), "{e}");
    let e = Chain::open(&base, false).unwrap_err();
    assert!(e.to_string().contains("loops"), "{e}");
    let _ = b_uuid;

    // A missing parent.
    std::fs::remove_file(&base).unwrap();
    let e = Chain::open(&b, false).unwrap_err();
    assert!(e.to_string().contains("cannot be opened"), "{e}");
}

#[test]
fn chains_deeper_than_30_are_refused() {
    let dir = tempdir();
    let mut parent = dir.path().join("0.vhd");
    vhd::create_dynamic(&parent, Uuid::new_v4(), 4 * MIB).unwrap();
    for i in 1..vhd::MAX_CHAIN_DEPTH {
        parent = child_of(dir.path(), &parent, &format!("{i}.vhd"));
    }
    // Made by hand (create_child refuses): a 31st file.
    let top = dir.path().join("top.vhd");
    let spare = child_of(dir.path(), &dir.path().join("0.vhd"), "spare.vhd");
    std::fs::rename(&spare, &top).unwrap();
    let p_uuid = vhd::read_info(&parent).unwrap().uuid;
    let name = parent.file_name().unwrap().to_str().unwrap().to_owned();
    set_locator_paths(&top, &format!("./{name}"));
    patch_header(&top, |h| {
        h[40..56].copy_from_slice(p_uuid.as_bytes());
        h[64..576].fill(0);
        let n: Vec<u8> = name.encode_utf16().flat_map(u16::to_be_bytes).collect();
        h[64..64 + n.len()].copy_from_slice(&n);
    });
    vhd::check(&top).unwrap();
    let e = Chain::open(&top, false).unwrap_err();
    assert!(e.to_string().contains("deeper than 30"), "{e}");
}

#[test]
fn random_garbage_never_panics() {
    let dir = tempdir();
    let mut rng = Rng::new(99);
    let p = dir.path().join("g.vhd");
    for len in [512usize, 1024, 1536, 2048, 4096, 12800, 70000] {
        for _ in 0..20 {
            let mut b = rng.bytes(len);
            // Often a real cookie, so parsing goes further.
            if rng.below(2) == 0 {
                b[len - 512..len - 504].copy_from_slice(b"conectix");
                b[0..8].copy_from_slice(b"conectix");
            }
            std::fs::write(&p, &b).unwrap();
            let _ = vhd::read_info(&p);
            let _ = vhd::check(&p);
            let _ = Chain::open(&p, false);
        }
    }
}

/// qemu's own VHDs (creator `qemu`, no batmap; fixed ones): read, and the dynamic one written.
#[test]
fn foreign_qemu_files() {
    let dir = tempdir();
    let raw = dir.path().join("src.raw");
    let mut data = vec![0u8; 8 * MIB as usize];
    let mut rng = Rng::new(5);
    for _ in 0..10 {
        let off = rng.below(7 * MIB) as usize;
        data[off..off + 300_000].copy_from_slice(&rng.bytes(300_000));
    }
    std::fs::write(&raw, &data).unwrap();
    let fixed = dir.path().join("fixed.vhd");
    let dynamic = dir.path().join("dyn.vhd");
    let r = raw.to_str().unwrap();
    qemu_img(&["convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed,force_size=on", r, fixed.to_str().unwrap()]);
    qemu_img(&["convert", "-f", "raw", "-O", "vpc", "-o", "force_size=on", r, dynamic.to_str().unwrap()]);

    let info = vhd::read_info(&fixed).unwrap();
    assert_eq!(info.disk_type, DiskType::Fixed);
    assert_eq!(info.virtual_size, 8 * MIB);
    assert_same(&read_all(&fixed), &data);
    assert!(matches!(Chain::open(&fixed, true), Err(Error::Invalid(_))));

    let info = vhd::read_info(&dynamic).unwrap();
    assert_eq!(info.disk_type, DiskType::Dynamic);
    assert_eq!(&info.creator, b"qem2");
    assert_same(&read_all(&dynamic), &data);
    {
        let c = Chain::open(&dynamic, true).unwrap();
        let patch = rng.bytes(3 * MIB as usize);
        c.write_at(&patch, MIB + 7).unwrap();
        data[MIB as usize + 7..MIB as usize + 7 + patch.len()].copy_from_slice(&patch);
        c.write_at(&[0xab; 512], 7 * MIB).unwrap();
        data[7 * MIB as usize..7 * MIB as usize + 512].fill(0xab);
        c.flush().unwrap();
    }
    assert_same(&read_all(&dynamic), &data);
    assert_same(&qemu_raw(&dynamic), &data);
}
