//! The VMDK fuzz targets' entry points (`open_one`, `stream_one`, `ingest_one`) over a fixed corpus of mutated
//! valid files (bit flips and byte changes in the header, descriptor, grain directory and tables, grain markers and
//! zlib streams; truncations), so CI exercises them without nightly.

use storage_repo::formats::vmdk::fuzzing;

use crate::util::{Rng, qemu_img, tempdir};
use crate::vmdk::vmware_stream;

const GRAIN: usize = 64 << 10;

/// qemu's monolithicSparse and streamOptimized of a 1 MiB disk with three grains of data.
fn qemu_seeds() -> (Vec<u8>, Vec<u8>) {
    let dir = tempdir();
    let raw = dir.path().join("s.raw");
    let mut img = vec![0u8; 1 << 20];
    img[..GRAIN].copy_from_slice(&Rng::new(1).bytes(GRAIN));
    img[GRAIN..2 * GRAIN].fill(b'a');
    img[(1 << 20) - 4096..].fill(b'z');
    std::fs::write(&raw, &img).unwrap();
    let mut out = Vec::new();
    for sub in ["monolithicSparse", "streamOptimized"] {
        let v = dir.path().join(format!("{sub}.vmdk"));
        let o = format!("subformat={sub}");
        qemu_img(&["convert", "-f", "raw", "-O", "vmdk", "-o", &o, raw.to_str().unwrap(), v.to_str().unwrap()]);
        out.push(std::fs::read(&v).unwrap());
    }
    (out.remove(0), out.remove(0))
}

/// A VMware-style streamOptimized file (directory at the end).
fn vmware_seed() -> Vec<u8> {
    vmware_stream(4096, &[(0, vec![3u8; GRAIN]), (128, Rng::new(2).bytes(GRAIN)), (4000, vec![9u8; 48 << 10])])
}

const FLAT: &[u8] = b"# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\
    RW 128 FLAT \"a-flat.vmdk\" 0\nddb.adapterType = \"ide\"\n";

/// One mutation in the metadata (the first 64 KiB), near the end, anywhere, or a truncation.
fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut b = seed.to_vec();
    let len = b.len();
    let regions =
        [(0, 80.min(len)), (0, 512.min(len)), (0, len.min(64 << 10)), (len.saturating_sub(2048), len), (0, len)];
    let (start, end) = regions[rng.below(regions.len() as u64) as usize];
    if end <= start {
        return b;
    }
    let at = start + rng.below((end - start) as u64) as usize;
    match rng.below(7) {
        0 | 1 => b[at] ^= 1 << rng.below(8),
        2 => b[at] = 0,
        3 => b[at] = 0xff,
        4 => b[at] = rng.next() as u8,
        5 => {
            let v = rng.next() as u32 % 4096;
            let at = at.min(len.saturating_sub(4));
            b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        _ => b.truncate(at),
    }
    b
}

#[test]
fn the_open_stream_and_ingest_targets_survive_mutated_files() {
    let dir = tempdir();
    let (sparse, stream) = qemu_seeds();
    let seeds = [sparse, stream, vmware_seed(), FLAT.to_vec()];
    let mut rng = Rng::new(2026);
    for seed in &seeds {
        fuzzing::open_one(dir.path(), seed);
        fuzzing::stream_one(seed);
        fuzzing::ingest_one(seed);
        for _ in 0..250 {
            let m = mutate(seed, &mut rng);
            fuzzing::open_one(dir.path(), &m);
            fuzzing::stream_one(&m);
            fuzzing::ingest_one(&m);
        }
    }
}
