//! Differencing chains: snapshots as sm takes them, reads merged through the chain, hidden flags, reparenting,
//! coalesce, copy and allocated ranges.

use std::path::Path;

use storage_repo::Error;
use storage_repo::block::BlockDevice;
use storage_repo::formats::vhd::{self, Chain, DiskType, ParentRef};
use uuid::Uuid;

use crate::util::{Rng, assert_same, read_all, tempdir, write_both};

const MIB: u64 = 1 << 20;

/// Writes `n` random extents into `path` (opened writable) and the model.
fn scribble(path: &Path, model: &mut [u8], seed: u64, n: usize) {
    let c = Chain::open(path, true).unwrap();
    let mut rng = Rng::new(seed);
    let size = model.len() as u64;
    for _ in 0..n {
        let len = 1 + rng.below(600_000);
        let off = rng.below(size - len);
        write_both(&c, model, &rng.bytes(len as usize), off);
    }
    c.flush().unwrap();
}

#[test]
fn a_child_reads_through_to_its_parent() {
    let dir = tempdir();
    let base = dir.path().join("base.vhd");
    let child = dir.path().join("child.vhd");
    let size = 32 * MIB;
    let b = vhd::create_dynamic(&base, Uuid::new_v4(), size).unwrap();
    let mut model = vec![0u8; size as usize];
    scribble(&base, &mut model, 1, 40);
    let base_content = model.clone();

    let c = vhd::create_child(&child, Uuid::new_v4(), &base).unwrap();
    assert_eq!(c.disk_type, DiskType::Differencing);
    assert_eq!(c.virtual_size, size);
    assert_eq!(c.parent, Some(ParentRef { uuid: b.uuid, file_name: "base.vhd".into() }));
    assert_eq!(c.file_size, 512 + 1024 + 512 + 512 + 512 + 3 * 512 + 512, "three one-sector locators");
    vhd::check(&child).unwrap();
    assert_same(&read_all(&child), &model);

    scribble(&child, &mut model, 2, 40);
    assert_eq!(Chain::open(&child, false).unwrap().depth(), 2);
    vhd::check(&child).unwrap();
    vhd::check(&base).unwrap();
    assert_same(&read_all(&child), &model);
    assert_same(&read_all(&base), &base_content);

    // The locators are blktap's: MacX "file://./base.vhd", W2ku and W2ru ".\base.vhd" in UTF-16LE.
    let bytes = std::fs::read(&child).unwrap();
    let find = |needle: &[u8]| bytes.windows(needle.len()).filter(|w| *w == needle).count();
    assert_eq!(find(b"file://./base.vhd"), 1);
    let w: Vec<u8> = ".\\base.vhd".encode_utf16().flat_map(u16::to_le_bytes).collect();
    assert_eq!(find(&w), 2);
}

/// sm's snapshot: the leaf becomes a hidden base copy and a new leaf takes its name; the content never changes.
#[test]
fn snapshot_sequences_keep_content() {
    let dir = tempdir();
    let leaf = dir.path().join("vdi.vhd");
    let size = 16 * MIB;
    vhd::create_dynamic(&leaf, Uuid::new_v4(), size).unwrap();
    let mut model = vec![0u8; size as usize];
    let mut snapshots = Vec::new();
    for i in 0..5u64 {
        scribble(&leaf, &mut model, 100 + i, 20);
        let base = dir.path().join(format!("base{i}.vhd"));
        std::fs::rename(&leaf, &base).unwrap();
        vhd::set_hidden(&base, true).unwrap();
        assert!(vhd::read_info(&base).unwrap().hidden);
        vhd::check(&base).unwrap();
        vhd::create_child(&leaf, Uuid::new_v4(), &base).unwrap();
        // A clone/snapshot child of the same base sees the content at snapshot time.
        let snap = dir.path().join(format!("snap{i}.vhd"));
        vhd::create_child(&snap, Uuid::new_v4(), &base).unwrap();
        snapshots.push((snap, model.clone()));
    }
    scribble(&leaf, &mut model, 200, 20);
    assert_eq!(Chain::open(&leaf, false).unwrap().depth(), 6);
    assert_same(&read_all(&leaf), &model);
    for (snap, content) in &snapshots {
        vhd::check(snap).unwrap();
        assert_same(&read_all(snap), content);
    }
    vhd::set_hidden(&dir.path().join("base0.vhd"), false).unwrap();
    assert!(!vhd::read_info(&dir.path().join("base0.vhd")).unwrap().hidden);
}

#[test]
fn create_child_refuses_bad_parents() {
    let dir = tempdir();
    let other = tempdir();
    let base = other.path().join("base.vhd");
    vhd::create_dynamic(&base, Uuid::new_v4(), 4 * MIB).unwrap();
    let child = dir.path().join("child.vhd");
    assert!(matches!(vhd::create_child(&child, Uuid::new_v4(), &base), Err(Error::Invalid(_))));
    assert!(!child.exists());
    let missing = dir.path().join("missing.vhd");
    assert!(vhd::create_child(&child, Uuid::new_v4(), &missing).is_err());
    assert!(!child.exists());
}

#[test]
fn chains_are_at_most_30_deep() {
    let dir = tempdir();
    let mut parent = dir.path().join("0.vhd");
    vhd::create_dynamic(&parent, Uuid::new_v4(), 4 * MIB).unwrap();
    for i in 1..vhd::MAX_CHAIN_DEPTH {
        let child = dir.path().join(format!("{i}.vhd"));
        vhd::create_child(&child, Uuid::new_v4(), &parent).unwrap();
        parent = child;
    }
    assert_eq!(Chain::open(&parent, false).unwrap().depth(), vhd::MAX_CHAIN_DEPTH);
    let too_deep = dir.path().join("31.vhd");
    let e = vhd::create_child(&too_deep, Uuid::new_v4(), &parent).unwrap_err();
    assert!(matches!(e, Error::Invalid(_)), "{e}");
    assert!(!too_deep.exists());
}

#[test]
fn set_parent_points_at_an_identical_copy() {
    let dir = tempdir();
    let base = dir.path().join("base.vhd");
    let child = dir.path().join("child.vhd");
    let size = 16 * MIB;
    vhd::create_dynamic(&base, Uuid::new_v4(), size).unwrap();
    let mut model = vec![0u8; size as usize];
    scribble(&base, &mut model, 3, 20);
    vhd::create_child(&child, Uuid::new_v4(), &base).unwrap();
    scribble(&child, &mut model, 4, 20);

    // A copy of the base under a longer name, then the child moves over to it.
    let copy = dir.path().join("0b6e9d8e-6ec5-4bb4-9a4c-2e7f1ad5b1a5.vhd");
    let cinfo = vhd::create_dynamic(&copy, Uuid::new_v4(), size).unwrap();
    {
        let src = Chain::open(&base, false).unwrap();
        let dst = Chain::open(&copy, true).unwrap();
        vhd::copy_into(&src, &dst).unwrap();
    }
    vhd::set_parent(&child, &copy).unwrap();
    let info = vhd::check(&child).unwrap();
    assert_eq!(
        info.parent.unwrap(),
        ParentRef { uuid: cinfo.uuid, file_name: copy.file_name().unwrap().to_str().unwrap().into() }
    );
    std::fs::remove_file(&base).unwrap();
    assert_same(&read_all(&child), &model);

    // No loops: a file cannot become its own parent or its descendant's child.
    assert!(matches!(vhd::set_parent(&child, &child), Err(Error::Invalid(_))));
    let grandchild = dir.path().join("gc.vhd");
    vhd::create_child(&grandchild, Uuid::new_v4(), &child).unwrap();
    assert!(matches!(vhd::set_parent(&child, &grandchild), Err(Error::Invalid(_))));
    // Dynamic disks have no parent to change.
    assert!(matches!(vhd::set_parent(&copy, &child), Err(Error::Invalid(_))));
}

/// sm's GC: coalesce a hidden middle node into its parent, reparent the grandchild, delete the node.
#[test]
fn coalesce_keeps_what_the_grandchild_sees() {
    let dir = tempdir();
    let base = dir.path().join("base.vhd");
    let mid = dir.path().join("mid.vhd");
    let leaf = dir.path().join("leaf.vhd");
    let size = 32 * MIB;
    vhd::create_dynamic(&base, Uuid::new_v4(), size).unwrap();
    let mut model = vec![0u8; size as usize];
    scribble(&base, &mut model, 5, 30);
    vhd::create_child(&mid, Uuid::new_v4(), &base).unwrap();
    scribble(&mid, &mut model, 6, 30);
    // Whole blocks too, so the batmap path of coalesce is used.
    {
        let c = Chain::open(&mid, true).unwrap();
        write_both(&c, &mut model, &vec![0x5a; 4 * MIB as usize], 10 * MIB);
        c.flush().unwrap();
    }
    let mid_view = model.clone();
    vhd::create_child(&leaf, Uuid::new_v4(), &mid).unwrap();
    scribble(&leaf, &mut model, 7, 30);

    let copied = vhd::coalesce(&mid).unwrap();
    assert!(copied >= 4 * MIB, "{copied}");
    vhd::check(&base).unwrap();
    assert_same(&read_all(&leaf), &model);
    assert_same(&read_all(&base), &mid_view);
    // Idempotent.
    assert_eq!(vhd::coalesce(&mid).unwrap(), copied);
    assert_same(&read_all(&base), &mid_view);

    vhd::set_parent(&leaf, &base).unwrap();
    std::fs::remove_file(&mid).unwrap();
    vhd::check(&leaf).unwrap();
    assert_eq!(Chain::open(&leaf, false).unwrap().depth(), 2);
    assert_same(&read_all(&leaf), &model);
    assert!(matches!(vhd::coalesce(&base), Err(Error::Invalid(_))), "no parent");
}

/// A child grown past its parent: coalesce grows the parent first.
#[test]
fn coalesce_grows_a_smaller_parent() {
    let dir = tempdir();
    let base = dir.path().join("base.vhd");
    let child = dir.path().join("child.vhd");
    vhd::create_dynamic(&base, Uuid::new_v4(), 4 * MIB).unwrap();
    let mut model = vec![0u8; 4 * MIB as usize];
    scribble(&base, &mut model, 8, 5);
    vhd::create_child(&child, Uuid::new_v4(), &base).unwrap();
    vhd::resize(&child, 6 * MIB).unwrap();
    model.resize(6 * MIB as usize, 0);
    scribble(&child, &mut model, 9, 10);
    assert_same(&read_all(&child), &model);
    vhd::coalesce(&child).unwrap();
    assert_eq!(vhd::read_info(&base).unwrap().virtual_size, 6 * MIB);
    vhd::check(&base).unwrap();
    assert_same(&read_all(&base), &model);
}

#[test]
fn copy_into_makes_the_destination_identical() {
    let dir = tempdir();
    let base = dir.path().join("base.vhd");
    let child = dir.path().join("child.vhd");
    let dst = dir.path().join("dst.vhd");
    let size = 32 * MIB;
    vhd::create_dynamic(&base, Uuid::new_v4(), size).unwrap();
    let mut model = vec![0u8; size as usize];
    scribble(&base, &mut model, 10, 10);
    vhd::create_child(&child, Uuid::new_v4(), &base).unwrap();
    scribble(&child, &mut model, 11, 10);
    // Zeros written over data must come through as zeros.
    {
        let c = Chain::open(&child, true).unwrap();
        write_both(&c, &mut model, &vec![0u8; MIB as usize], 3 * MIB);
        c.flush().unwrap();
    }
    // The destination holds stale data where the source has nothing.
    vhd::create_dynamic(&dst, Uuid::new_v4(), size).unwrap();
    let src_ranges = Chain::open(&child, false).unwrap().allocated_ranges().unwrap();
    let hole =
        (0..size / (2 * MIB)).map(|b| b * 2 * MIB).find(|o| !src_ranges.iter().any(|(s, l)| o >= s && *o < s + l));
    {
        let d = Chain::open(&dst, true).unwrap();
        d.write_at(&vec![0xee; 3 * MIB as usize], 20 * MIB).unwrap();
        if let Some(h) = hole {
            d.write_at(&[0xdd; 4096], h).unwrap();
        }
        d.flush().unwrap();
    }
    let written = {
        let s = Chain::open(&child, false).unwrap();
        let d = Chain::open(&dst, true).unwrap();
        vhd::copy_into(&s, &d).unwrap()
    };
    assert!(written > 0);
    vhd::check(&dst).unwrap();
    assert_same(&read_all(&dst), &model);

    // A smaller destination is refused.
    let small = dir.path().join("small.vhd");
    vhd::create_dynamic(&small, Uuid::new_v4(), size / 2).unwrap();
    let s = Chain::open(&child, false).unwrap();
    let d = Chain::open(&small, true).unwrap();
    assert!(matches!(vhd::copy_into(&s, &d), Err(Error::Invalid(_))));
}

#[test]
fn allocated_ranges_merge_the_chain() {
    let dir = tempdir();
    let base = dir.path().join("base.vhd");
    let child = dir.path().join("child.vhd");
    vhd::create_dynamic(&base, Uuid::new_v4(), 32 * MIB).unwrap();
    {
        let c = Chain::open(&base, true).unwrap();
        c.write_at(&[1; 512], 0).unwrap();
        c.write_at(&[1; 512], 8 * MIB + 5).unwrap();
    }
    vhd::create_child(&child, Uuid::new_v4(), &base).unwrap();
    let c = Chain::open(&child, true).unwrap();
    assert_eq!(c.allocated_ranges().unwrap(), vec![(0, 2 * MIB), (8 * MIB, 2 * MIB)]);
    c.write_at(&[2; 512], 2 * MIB).unwrap();
    c.write_at(&[2; 512], 31 * MIB).unwrap();
    assert_eq!(c.allocated_ranges().unwrap(), vec![(0, 4 * MIB), (8 * MIB, 2 * MIB), (30 * MIB, 2 * MIB)]);
    // In a child, zeroing writes zeros (the parent's data must not show through) and discard does nothing.
    c.write_zeroes(0, 512).unwrap();
    c.discard(8 * MIB, 2 * MIB).unwrap();
    let mut b = [9u8; 512];
    c.read_at(&mut b, 0).unwrap();
    assert_eq!(b, [0; 512]);
    c.read_at(&mut b, 8 * MIB + 5).unwrap();
    assert_eq!(b, [1; 512]);
}
