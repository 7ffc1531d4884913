//! Growing disks: in place when the BAT's last sector has room, otherwise by moving the metadata past the old
//! one (blocks in the way first go to the end). Content, qemu's view and vhd-util's rules must hold afterwards.

use storage_repo::Error;
use storage_repo::block::BlockDevice;
use storage_repo::formats::vhd::{self, Chain};
use uuid::Uuid;

use crate::util::{Rng, assert_same, qemu_raw, read_all, tempdir, write_both};

const MIB: u64 = 1 << 20;

#[test]
fn grows_in_place_when_the_bat_sector_has_room() {
    let dir = tempdir();
    let p = dir.path().join("a.vhd");
    vhd::create_dynamic(&p, Uuid::new_v4(), 20 * MIB).unwrap();
    let mut model = vec![0u8; 20 * MIB as usize];
    {
        let c = Chain::open(&p, true).unwrap();
        write_both(&c, &mut model, &Rng::new(1).bytes(5 * MIB as usize), MIB);
    }
    let before = vhd::read_info(&p).unwrap();
    let info = vhd::resize(&p, 22 * MIB).unwrap();
    assert_eq!(info.virtual_size, 22 * MIB);
    assert_eq!(info.file_size, before.file_size, "nothing moved");
    vhd::check(&p).unwrap();
    model.resize(22 * MIB as usize, 0);
    assert_same(&read_all(&p), &model);
    assert_same(&qemu_raw(&p), &model);
    assert!(matches!(vhd::resize(&p, 20 * MIB), Err(Error::Invalid(_))), "no shrinking");
    assert_eq!(vhd::resize(&p, 21 * MIB + 1).unwrap().virtual_size, 22 * MIB, "same size after rounding");
}

#[test]
fn grows_past_the_bat_moving_blocks_out_of_the_way() {
    let dir = tempdir();
    let p = dir.path().join("a.vhd");
    let size = 64 * MIB;
    vhd::create_dynamic(&p, Uuid::new_v4(), size).unwrap();
    let mut model = vec![0u8; size as usize];
    let mut rng = Rng::new(2);
    {
        let c = Chain::open(&p, true).unwrap();
        for b in [0u64, 5, 31, 7] {
            write_both(&c, &mut model, &rng.bytes(2 * MIB as usize), b * 2 * MIB);
        }
        write_both(&c, &mut model, &rng.bytes(7000), 20 * MIB + 3);
    }
    // 64 MiB -> 1 GiB: the BAT grows from one sector to four; the first blocks sit where it goes.
    let new = 1u64 << 30;
    let info = vhd::resize(&p, new).unwrap();
    assert_eq!(info.virtual_size, new);
    assert_eq!(info.allocated_blocks, 5);
    vhd::check(&p).unwrap();
    let c = Chain::open(&p, false).unwrap();
    assert_eq!(c.size(), new);
    let mut buf = vec![0u8; size as usize];
    c.read_at(&mut buf, 0).unwrap();
    assert_same(&buf, &model);
    let mut tail = vec![1u8; MIB as usize];
    c.read_at(&mut tail, new - MIB).unwrap();
    assert!(tail.iter().all(|&b| b == 0));
    drop(c);
    // Writes after the resize, at both ends, and qemu agrees on the first GiB.
    {
        let c = Chain::open(&p, true).unwrap();
        c.write_at(&[0x42; 4096], new - 4096).unwrap();
        c.write_at(&[0x43; 4096], 0).unwrap();
        model[..4096].fill(0x43);
    }
    vhd::check(&p).unwrap();
    let raw = qemu_raw(&p);
    assert_eq!(raw.len() as u64, new);
    assert_same(&raw[..size as usize], &model);
    assert!(raw[new as usize - 4096..].iter().all(|&b| b == 0x42));
}

#[test]
fn differencing_disks_keep_their_locators_when_grown() {
    let dir = tempdir();
    let base = dir.path().join("base.vhd");
    let child = dir.path().join("child.vhd");
    vhd::create_dynamic(&base, Uuid::new_v4(), 16 * MIB).unwrap();
    let mut model = vec![0u8; 16 * MIB as usize];
    {
        let c = Chain::open(&base, true).unwrap();
        write_both(&c, &mut model, &Rng::new(3).bytes(16 * MIB as usize), 0);
    }
    vhd::create_child(&child, Uuid::new_v4(), &base).unwrap();
    {
        let c = Chain::open(&child, true).unwrap();
        write_both(&c, &mut model, &Rng::new(4).bytes(3 * MIB as usize), MIB);
    }
    let parent = vhd::read_info(&child).unwrap().parent;
    let info = vhd::resize(&child, 4 << 30).unwrap();
    assert_eq!(info.parent, parent);
    vhd::check(&child).unwrap();
    let c = Chain::open(&child, false).unwrap();
    assert_eq!(c.depth(), 2);
    let mut buf = vec![0u8; 32 * MIB as usize];
    c.read_at(&mut buf, 0).unwrap();
    model.resize(32 * MIB as usize, 0);
    assert_same(&buf, &model);
    drop(c);
    // And it grows again.
    vhd::resize(&child, 5 << 30).unwrap();
    vhd::check(&child).unwrap();
    let c = Chain::open(&child, false).unwrap();
    c.read_at(&mut buf, 0).unwrap();
    assert_same(&buf, &model);
}

/// A qemu-made dynamic disk (no batmap, blocks right after the BAT) grows too (its BAT moves), and qemu still
/// reads it.
#[test]
fn grows_a_qemu_made_disk() {
    let dir = tempdir();
    let raw = dir.path().join("src.raw");
    let p = dir.path().join("q.vhd");
    let mut data = Rng::new(6).bytes(8 * MIB as usize);
    data[2 * MIB as usize..4 * MIB as usize].fill(0);
    std::fs::write(&raw, &data).unwrap();
    let (r, q) = (raw.to_str().unwrap(), p.to_str().unwrap());
    crate::util::qemu_img(&["convert", "-f", "raw", "-O", "vpc", "-o", "force_size=on", r, q]);
    // 130 entries need a second BAT sector: the metadata moves past the first blocks.
    let new = 260 * MIB;
    vhd::resize(&p, new).unwrap();
    vhd::check(&p).unwrap();
    let c = Chain::open(&p, false).unwrap();
    assert_eq!(c.size(), new);
    let mut buf = vec![1u8; 16 * MIB as usize];
    c.read_at(&mut buf, 0).unwrap();
    assert_same(&buf[..8 * MIB as usize], &data);
    assert!(buf[8 * MIB as usize..].iter().all(|&b| b == 0));
    drop(c);
    let theirs = qemu_raw(&p);
    assert_eq!(theirs.len() as u64, new);
    assert_same(&theirs[..8 * MIB as usize], &data);
    assert!(theirs[8 * MIB as usize..].iter().all(|&b| b == 0));
}
