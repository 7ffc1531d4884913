//! Dynamic disks: creation in vhd-util's layout, I/O through `Chain` checked against a model and against qemu's
//! `vpc` reader, batmap upkeep, zeroing, concurrency and interrupted allocations.

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use storage_repo::Error;
use storage_repo::block::BlockDevice;
use storage_repo::formats::vhd::{self, Chain, DiskType};
use uuid::Uuid;

use crate::util::{Rng, assert_same, qemu_img, qemu_raw, read_all, tempdir, write_both};

const MIB: u64 = 1 << 20;

#[test]
fn create_matches_vhd_util_and_qemu_reads_it() {
    let dir = tempdir();
    let p = dir.path().join("a.vhd");
    let id = Uuid::new_v4();
    let info = vhd::create_dynamic(&p, id, 4 << 30).unwrap();
    assert_eq!(info.uuid, id);
    assert_eq!(info.disk_type, DiskType::Dynamic);
    assert_eq!(info.virtual_size, 4 << 30);
    assert_eq!(info.file_size, 11264, "vhd-util create -s 4096 makes an 11 264-byte file");
    assert_eq!(info.creator, *b"tap\0");
    assert_eq!(info.block_size, 2 << 20);
    assert_eq!(info.allocated_blocks, 0);
    assert!(!info.hidden && info.parent.is_none());
    assert_eq!(vhd::check(&p).unwrap(), info);
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(&bytes[10240 - 512..10240 - 504], b"tdbatmap", "batmap header right after the BAT");
    assert_eq!(&bytes[..512], &bytes[bytes.len() - 512..], "footer copy at 0");

    let json = qemu_img(&["info", "--output=json", p.to_str().unwrap()]);
    assert!(json.contains("\"format\": \"vpc\""), "{json}");
    assert!(json.contains("\"virtual-size\": 4294967296"), "{json}");
}

#[test]
fn create_rounds_and_refuses() {
    let dir = tempdir();
    let p = dir.path().join("a.vhd");
    let info = vhd::create_dynamic(&p, Uuid::new_v4(), 5 * MIB + 1).unwrap();
    assert_eq!(info.virtual_size, 6 * MIB);
    assert!(matches!(vhd::create_dynamic(&p, Uuid::new_v4(), MIB), Err(Error::Invalid(_))), "exists");
    let q = dir.path().join("b.vhd");
    assert!(matches!(vhd::create_dynamic(&q, Uuid::new_v4(), 0), Err(Error::Invalid(_))));
    assert!(matches!(vhd::create_dynamic(&q, Uuid::new_v4(), vhd::MAX_SIZE + 1), Err(Error::Invalid(_))));
    assert!(!q.exists());
    // The largest size works and stays small on disk.
    let info = vhd::create_dynamic(&q, Uuid::new_v4(), vhd::MAX_SIZE).unwrap();
    assert_eq!(info.virtual_size, vhd::MAX_SIZE);
    assert!(info.file_size < 5 * MIB);
    vhd::check(&q).unwrap();
}

/// Random writes (aligned and not, crossing blocks) through a chain match a model, our reader and qemu's.
#[test]
fn writes_match_the_model_and_qemu() {
    let dir = tempdir();
    let p = dir.path().join("a.vhd");
    let size = 64 * MIB;
    vhd::create_dynamic(&p, Uuid::new_v4(), size).unwrap();
    let mut model = vec![0u8; size as usize];
    let mut rng = Rng::new(1);
    {
        let c = Chain::open(&p, true).unwrap();
        assert_eq!(c.size(), size);
        assert!(!c.read_only());
        for i in 0..200 {
            let len = match i % 4 {
                0 => 512 * (1 + rng.below(16)),
                1 => 1 + rng.below(5000),
                2 => 2 * MIB,
                _ => rng.below(3 * MIB) + 1,
            };
            let off = if i % 4 == 2 { rng.below(size / (2 * MIB)) * 2 * MIB } else { rng.below(size - len) };
            let data = rng.bytes(len as usize);
            write_both(&c, &mut model, &data, off);
        }
        // Reads of every shape agree with the model while the chain is open.
        for _ in 0..100 {
            let len = 1 + rng.below(3 * MIB);
            let off = rng.below(size - len);
            let mut buf = vec![0u8; len as usize];
            c.read_at(&mut buf, off).unwrap();
            assert_same(&buf, &model[off as usize..(off + len) as usize]);
        }
        c.flush().unwrap();
    }
    vhd::check(&p).unwrap();
    assert_same(&read_all(&p), &model);
    assert_same(&qemu_raw(&p), &model);
}

#[test]
fn writes_past_the_end_and_to_read_only_chains_fail() {
    let dir = tempdir();
    let p = dir.path().join("a.vhd");
    vhd::create_dynamic(&p, Uuid::new_v4(), 4 * MIB).unwrap();
    let c = Chain::open(&p, true).unwrap();
    assert!(c.write_at(&[1; 512], 4 * MIB - 256).is_err());
    let mut b = [0u8; 2];
    assert!(c.read_at(&mut b, 4 * MIB - 1).is_err());
    assert!(c.read_at(&mut b, u64::MAX).is_err());
    drop(c);
    let r = Chain::open(&p, false).unwrap();
    assert!(r.read_only());
    assert!(r.write_at(&[1; 512], 0).is_err());
}

#[test]
fn a_second_writer_is_refused() {
    let dir = tempdir();
    let p = dir.path().join("a.vhd");
    vhd::create_dynamic(&p, Uuid::new_v4(), 4 * MIB).unwrap();
    let _w = Chain::open(&p, true).unwrap();
    assert!(matches!(Chain::open(&p, true), Err(Error::Busy(_))));
    assert!(matches!(vhd::set_hidden(&p, true), Err(Error::Busy(_))));
    Chain::open(&p, false).unwrap();
}

/// A fully written block gets its batmap bit; the file stays valid for vhd-util's rules.
#[test]
fn full_blocks_are_marked_in_the_batmap() {
    let dir = tempdir();
    let p = dir.path().join("a.vhd");
    vhd::create_dynamic(&p, Uuid::new_v4(), 64 * MIB).unwrap();
    {
        let c = Chain::open(&p, true).unwrap();
        c.write_at(&vec![7u8; 2 * MIB as usize], 0).unwrap(); // block 0 in one write
        for i in 0..4 {
            c.write_at(&vec![8u8; 512 * 1024], 2 * MIB + i * 512 * 1024).unwrap(); // block 1 in four
        }
        c.write_at(&[9u8; 512], 4 * MIB).unwrap(); // block 2 partly
        c.flush().unwrap();
    }
    vhd::check(&p).unwrap();
    let f = std::fs::File::open(&p).unwrap();
    // 32 entries: the BAT is one sector at 1536, the batmap header at 2048, the map at 2560.
    let mut map = [0u8; 1];
    f.read_exact_at(&mut map, 2560).unwrap();
    assert_eq!(map[0], 0b1100_0000);
    let mut want = vec![0u8; 64 * MIB as usize];
    want[..2 * MIB as usize].fill(7);
    want[2 * MIB as usize..4 * MIB as usize].fill(8);
    want[4 * MIB as usize..4 * MIB as usize + 512].fill(9);
    assert_same(&read_all(&p), &want);
    assert_same(&qemu_raw(&p), &want);
}

#[test]
fn discard_and_write_zeroes_read_as_zeros() {
    let dir = tempdir();
    let p = dir.path().join("a.vhd");
    vhd::create_dynamic(&p, Uuid::new_v4(), 16 * MIB).unwrap();
    let mut model = vec![0u8; 16 * MIB as usize];
    {
        let c = Chain::open(&p, true).unwrap();
        let mut rng = Rng::new(2);
        let data = rng.bytes(8 * MIB as usize);
        write_both(&c, &mut model, &data, MIB);
        c.discard(2 * MIB + 100, MIB).unwrap();
        // Whole sectors inside the range are zeroed; the partial ones keep their data.
        let (a, b) = ((2 * MIB + 512) as usize, (3 * MIB + 100) / 512 * 512);
        model[a..b as usize].fill(0);
        c.write_zeroes(5 * MIB + 7, 3 * MIB).unwrap();
        model[(5 * MIB + 7) as usize..(8 * MIB + 7) as usize].fill(0);
        c.write_zeroes(12 * MIB, 4 * MIB).unwrap(); // unallocated: nothing to do
        c.flush().unwrap();
        assert_eq!(c.allocated_ranges().unwrap(), vec![(0, 10 * MIB)]);
    }
    vhd::check(&p).unwrap();
    assert_same(&read_all(&p), &model);
    assert_same(&qemu_raw(&p), &model);
}

#[test]
fn concurrent_readers_and_writers() {
    let dir = tempdir();
    let p = dir.path().join("a.vhd");
    let size = 32 * MIB;
    vhd::create_dynamic(&p, Uuid::new_v4(), size).unwrap();
    let c = Arc::new(Chain::open(&p, true).unwrap());
    // Each writer owns interleaved 64 KiB stripes, so the final content is known.
    let stripe = 64 * 1024u64;
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let c = c.clone();
            std::thread::spawn(move || {
                let mut rng = Rng::new(10 + t);
                for round in 0..3u8 {
                    let mut off = t * stripe;
                    while off < size {
                        let len = 512 * (1 + rng.below(stripe / 512));
                        c.write_at(&vec![round * 16 + t as u8 + 1; len as usize], off).unwrap();
                        let mut buf = vec![0u8; 4096];
                        c.read_at(&mut buf, rng.below(size - 4096)).unwrap();
                        off += 4 * stripe;
                    }
                }
                // Last round: whole stripes.
                let mut off = t * stripe;
                while off < size {
                    c.write_at(&vec![0xa0 + t as u8; stripe as usize], off).unwrap();
                    off += 4 * stripe;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    c.flush().unwrap();
    drop(c);
    vhd::check(&p).unwrap();
    let got = read_all(&p);
    for (i, chunk) in got.chunks(stripe as usize).enumerate() {
        assert!(chunk.iter().all(|&b| b == 0xa0 + (i % 4) as u8), "stripe {i}");
    }
    assert_same(&qemu_raw(&p), &got);
}

/// Allocation writes the block and the footer, fsyncs, then the BAT entry. Every prefix of that (the file cut
/// anywhere after the old end, the BAT entry not yet written) opens with the old content, and a writable open
/// repairs the footer so the file checks clean.
#[test]
fn an_interrupted_allocation_leaves_the_old_content() {
    let dir = tempdir();
    let p = dir.path().join("a.vhd");
    vhd::create_dynamic(&p, Uuid::new_v4(), 16 * MIB).unwrap();
    {
        let c = Chain::open(&p, true).unwrap();
        c.write_at(&vec![1u8; 3 * MIB as usize], 0).unwrap();
        c.flush().unwrap();
    }
    let before = std::fs::read(&p).unwrap();
    let old_content = read_all(&p);
    {
        let c = Chain::open(&p, true).unwrap();
        c.write_at(&vec![2u8; 4096], 8 * MIB).unwrap(); // allocates block 4
        c.flush().unwrap();
    }
    let after = std::fs::read(&p).unwrap();
    assert!(after.len() > before.len());
    for cut in [before.len(), before.len() + 1, before.len() + 4096, before.len() + 1_000_000, after.len() - 512] {
        let q = dir.path().join(format!("cut-{cut}.vhd"));
        let mut bytes = after[..cut].to_vec();
        bytes[1536..1536 + 64].copy_from_slice(&before[1536..1536 + 64]); // the BAT entry was not written yet
        std::fs::write(&q, &bytes).unwrap();
        assert_same(&read_all(&q), &old_content);
        assert!(matches!(vhd::check(&q), Err(Error::Corrupt { .. })), "cut {cut}: the footer is missing");
        drop(Chain::open(&q, true).unwrap()); // repairs
        vhd::check(&q).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        assert_same(&read_all(&q), &old_content);
        // And it takes new writes.
        let c = Chain::open(&q, true).unwrap();
        c.write_at(&[3u8; 512], 10 * MIB).unwrap();
        c.flush().unwrap();
        drop(c);
        vhd::check(&q).unwrap();
    }
    // Once the BAT entry is written the block counts; cutting into it is refused cleanly.
    let q = dir.path().join("cut-block.vhd");
    std::fs::write(&q, &after[..after.len() - MIB as usize]).unwrap();
    let e = Chain::open(&q, false).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("past the end"), "{e}");
}

/// Until a flush, new blocks are not in the on-disk BAT: a copy of the file taken then (a crash image with every
/// write applied) is valid and holds the old content; after the flush it holds the new.
#[test]
fn unflushed_allocations_are_invisible_on_disk() {
    let dir = tempdir();
    let p = dir.path().join("a.vhd");
    let q = dir.path().join("crash.vhd");
    vhd::create_dynamic(&p, Uuid::new_v4(), 16 * MIB).unwrap();
    let c = Chain::open(&p, true).unwrap();
    c.write_at(&[1u8; 4096], 0).unwrap();
    c.flush().unwrap();
    let old = read_all(&p);
    c.write_at(&vec![2u8; 5 * MIB as usize], 3 * MIB).unwrap();
    c.write_at(&[3u8; 512], MIB).unwrap(); // a new sector in an existing block: a bitmap change
    std::fs::copy(&p, &q).unwrap();
    vhd::check(&q).unwrap();
    assert_same(&read_all(&q), &old);
    c.flush().unwrap();
    std::fs::copy(&p, &q).unwrap();
    vhd::check(&q).unwrap();
    let mut want = old.clone();
    want[3 * MIB as usize..8 * MIB as usize].fill(2);
    want[MIB as usize..MIB as usize + 512].fill(3);
    assert_same(&read_all(&q), &want);
}
