//! Deltas for `export_raw_vdi?base=`: `create_delta` + `write_delta` hold exactly the blocks that differ between
//! a disk and its base, and applying them onto the base's content gives the disk's.

use storage_repo::block::BlockDevice;
use storage_repo::formats::vhd::{self, Chain, DiskType};
use uuid::Uuid;

use crate::util::{Rng, read_all, tempdir, write_both};

const MIB: u64 = 1 << 20;

/// The delta's blocks applied onto `base` (a model of the base's content).
fn apply(delta: &std::path::Path, base: &[u8]) -> Vec<u8> {
    let d = Chain::open_alone(delta, false).unwrap();
    let mut out = base.to_vec();
    out.resize(d.size() as usize, 0);
    for (start, len) in d.allocated_ranges().unwrap() {
        d.read_at(&mut out[start as usize..(start + len) as usize], start).unwrap();
    }
    out
}

#[test]
fn a_delta_since_a_snapshot_holds_the_changed_blocks() {
    let dir = tempdir();
    let (leaf, base, snap) = (dir.path().join("leaf.vhd"), dir.path().join("base.vhd"), dir.path().join("snap.vhd"));
    let size = 64 * MIB;
    let mut model = vec![0u8; size as usize];
    let mut rng = Rng::new(7);
    vhd::create_dynamic(&leaf, Uuid::new_v4(), size).unwrap();
    {
        let c = Chain::open(&leaf, true).unwrap();
        for i in 0..10u64 {
            write_both(&c, &mut model, &rng.bytes(300_000), i * 5 * MIB + 4096);
        }
        c.flush().unwrap();
    }
    // A snapshot as the SR takes it: the leaf becomes the base, the snapshot and the new leaf are its children.
    std::fs::rename(&leaf, &base).unwrap();
    vhd::create_child(&leaf, Uuid::new_v4(), &base).unwrap();
    vhd::create_child(&snap, Uuid::new_v4(), &base).unwrap();
    let at_snapshot = model.clone();
    {
        let c = Chain::open(&leaf, true).unwrap();
        // Two blocks changed, one block rewritten with the same bytes, one block zeroed.
        write_both(&c, &mut model, &rng.bytes(8192), 20 * MIB + 512);
        write_both(&c, &mut model, &rng.bytes(4096), 40 * MIB);
        let same = model[(5 * MIB + 4096) as usize..(5 * MIB + 8192) as usize].to_vec();
        write_both(&c, &mut model, &same, 5 * MIB + 4096);
        write_both(&c, &mut model, &vec![0u8; 2 * MIB as usize], 10 * MIB);
        c.flush().unwrap();
    }
    let delta = dir.path().join("delta.vhd");
    let parent = Uuid::new_v4();
    vhd::create_delta(&delta, Uuid::new_v4(), size, parent, "snap.vhd").unwrap();
    let written = {
        let src = Chain::open(&leaf, false).unwrap();
        let b = Chain::open(&snap, false).unwrap();
        let d = Chain::open_alone(&delta, true).unwrap();
        vhd::write_delta(&src, &b, &d).unwrap()
    };
    // Blocks 10 (the 20 MiB write), 20 (40 MiB) and 5 (zeroed): not block 2 (same bytes).
    assert_eq!(written, 3 * 2 * MIB);
    let info = vhd::read_info(&delta).unwrap();
    assert_eq!(info.disk_type, DiskType::Differencing);
    assert_eq!(info.parent.as_ref().map(|p| p.uuid), Some(parent));
    assert_eq!(info.allocated_blocks, 3);
    assert_eq!(apply(&delta, &at_snapshot), model);
    assert_eq!(read_all(&leaf), model);
}

#[test]
fn a_delta_between_unrelated_disks_compares_content() {
    let dir = tempdir();
    let (a, b) = (dir.path().join("a.vhd"), dir.path().join("b.vhd"));
    let size = 16 * MIB;
    let (mut ma, mut mb) = (vec![0u8; size as usize], vec![0u8; size as usize]);
    let mut rng = Rng::new(9);
    vhd::create_dynamic(&a, Uuid::new_v4(), size).unwrap();
    vhd::create_dynamic(&b, Uuid::new_v4(), size).unwrap();
    let shared = rng.bytes(1 << 20);
    {
        let (ca, cb) = (Chain::open(&a, true).unwrap(), Chain::open(&b, true).unwrap());
        write_both(&ca, &mut ma, &shared, 0);
        write_both(&cb, &mut mb, &shared, 0);
        write_both(&ca, &mut ma, &rng.bytes(4096), 6 * MIB);
        write_both(&cb, &mut mb, &rng.bytes(4096), 12 * MIB);
        ca.flush().unwrap();
        cb.flush().unwrap();
    }
    let delta = dir.path().join("d.vhd");
    vhd::create_delta(&delta, Uuid::new_v4(), size, Uuid::new_v4(), "b.vhd").unwrap();
    let written = vhd::write_delta(
        &Chain::open(&a, false).unwrap(),
        &Chain::open(&b, false).unwrap(),
        &Chain::open_alone(&delta, true).unwrap(),
    )
    .unwrap();
    // Block 3 (6 MiB, only in a) and block 6 (12 MiB, only in b: a has zeros there); block 0 is equal.
    assert_eq!(written, 2 * 2 * MIB);
    assert_eq!(apply(&delta, &mb), ma);
}
