//! The fuzz targets' entry points over a fixed corpus of mutated valid files (bit flips and byte changes in the
//! footers, header, BAT, batmap, locators and bitmaps; truncations), so CI exercises them without nightly.

use std::path::Path;

use storage_repo::block::BlockDevice;
use storage_repo::formats::vhd::{self, Chain, fuzzing};
use uuid::Uuid;

use crate::util::{Rng, tempdir};

const MIB: u64 = 1 << 20;

/// A small dynamic disk with a full block, a partial block and data at the end.
fn seed_dynamic(dir: &Path) -> Vec<u8> {
    let p = dir.join("seed.vhd");
    vhd::create_dynamic(&p, Uuid::new_v4(), 8 * MIB).unwrap();
    {
        let c = Chain::open(&p, true).unwrap();
        c.write_at(&vec![1u8; 2 * MIB as usize], 0).unwrap();
        c.write_at(&[2u8; 1536], 2 * MIB + 512).unwrap();
        c.write_at(&[3u8; 512], 8 * MIB - 512).unwrap();
        c.flush().unwrap();
    }
    let b = std::fs::read(&p).unwrap();
    std::fs::remove_file(&p).unwrap();
    b
}

/// A parent `p.vhd` and its child (bytes of both).
fn seed_chain(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let p = dir.join("p.vhd");
    let c = dir.join("c.vhd");
    std::fs::write(&p, seed_dynamic(dir)).unwrap();
    vhd::create_child(&c, Uuid::new_v4(), &p).unwrap();
    {
        let ch = Chain::open(&c, true).unwrap();
        ch.write_at(&[4u8; 4096], MIB).unwrap();
        ch.write_at(&vec![5u8; 2 * MIB as usize], 4 * MIB).unwrap();
        ch.flush().unwrap();
    }
    let out = (std::fs::read(&c).unwrap(), std::fs::read(&p).unwrap());
    std::fs::remove_file(&c).unwrap();
    std::fs::remove_file(&p).unwrap();
    out
}

/// One mutation: a bit flip, a byte set to 0, 0xff or random, or a truncation, in an interesting region.
fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut b = seed.to_vec();
    let len = b.len();
    let regions =
        [(0, 512), (len - 512, len), (512, 1536), (1536, 2560), (2560, 3584), (3584, len.min(16384)), (0, len)];
    let (start, end) = regions[rng.below(regions.len() as u64) as usize];
    let at = start + rng.below((end - start) as u64) as usize;
    match rng.below(6) {
        0 | 1 => b[at] ^= 1 << rng.below(8),
        2 => b[at] = 0,
        3 => b[at] = 0xff,
        4 => b[at] = rng.next() as u8,
        _ => b.truncate(at),
    }
    b
}

#[test]
fn the_open_target_survives_mutated_files() {
    let dir = tempdir();
    let seed = seed_dynamic(dir.path());
    fuzzing::open_one(dir.path(), &seed);
    let mut rng = Rng::new(2024);
    for _ in 0..300 {
        let m = mutate(&seed, &mut rng);
        fuzzing::open_one(dir.path(), &m);
    }
}

#[test]
fn the_chain_target_survives_mutated_chains() {
    let dir = tempdir();
    let (child, parent) = seed_chain(dir.path());
    fuzzing::open_chain(dir.path(), &child, &parent);
    let mut rng = Rng::new(7);
    for i in 0..150 {
        if i % 2 == 0 {
            fuzzing::open_chain(dir.path(), &mutate(&child, &mut rng), &parent);
        } else {
            fuzzing::open_chain(dir.path(), &child, &mutate(&parent, &mut rng));
        }
    }
}
