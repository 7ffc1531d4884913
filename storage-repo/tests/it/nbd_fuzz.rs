//! The NBD fuzz target's entry point over a small corpus, so that CI exercises it without nightly Rust: a valid
//! session (handshake, GO, writes, reads, flush, trim, write-zeroes, requests past the end, a huge length,
//! disconnect), then 300 mutations of it (bit flips, byte changes, truncations). None may panic, hang or change the
//! disk's size. The seeds are also written to `fuzz/seeds/nbd_session/` for `cargo fuzz`.

use storage_repo::nbd::fuzzing;

use crate::util::{Rng, tempdir};

const IHAVEOPT: u64 = 0x4948_4156_454F_5054;
const REQUEST_MAGIC: u32 = 0x2560_9513;

fn option(out: &mut Vec<u8>, opt: u32, data: &[u8]) {
    out.extend_from_slice(&IHAVEOPT.to_be_bytes());
    out.extend_from_slice(&opt.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
}

fn request(out: &mut Vec<u8>, ty: u16, offset: u64, len: u32, payload: bool) {
    out.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&ty.to_be_bytes());
    out.extend_from_slice(&(offset ^ 0x5a).to_be_bytes()); // cookie
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    if payload {
        out.extend(std::iter::repeat_n(0xabu8, len as usize));
    }
}

/// A well-formed session.
fn valid_session() -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(&3u32.to_be_bytes()); // FIXED_NEWSTYLE | NO_ZEROES
    let mut info = Vec::new();
    info.extend_from_slice(&4u32.to_be_bytes());
    info.extend_from_slice(b"fuzz");
    info.extend_from_slice(&1u16.to_be_bytes());
    info.extend_from_slice(&3u16.to_be_bytes()); // NBD_INFO_BLOCK_SIZE
    option(&mut s, 6, &info); // INFO
    option(&mut s, 3, &[]); // LIST
    option(&mut s, 8, &[]); // STRUCTURED_REPLY (unsupported)
    option(&mut s, 7, &info); // GO
    request(&mut s, 1, 0, 4096, true); // WRITE
    request(&mut s, 0, 0, 4096, false); // READ
    request(&mut s, 3, 0, 0, false); // FLUSH
    request(&mut s, 4, 8192, 4096, false); // TRIM
    request(&mut s, 6, 16384, 8192, false); // WRITE_ZEROES
    request(&mut s, 0, fuzzing::DISK_SIZE - 512, 4096, false); // READ past the end
    request(&mut s, 1, fuzzing::DISK_SIZE, 512, true); // WRITE past the end
    request(&mut s, 0, 0, u32::MAX, false); // absurd length
    request(&mut s, 2, 0, 0, false); // DISC
    s
}

fn seeds() -> Vec<Vec<u8>> {
    let valid = valid_session();
    let mut export_name = Vec::new();
    export_name.extend_from_slice(&3u32.to_be_bytes());
    option(&mut export_name, 1, b"fuzz"); // EXPORT_NAME
    request(&mut export_name, 1, 4096, 512, true);
    request(&mut export_name, 2, 0, 0, false);
    let mut wrong_export = Vec::new();
    wrong_export.extend_from_slice(&3u32.to_be_bytes());
    option(&mut wrong_export, 1, b"other");
    vec![valid, export_name, wrong_export, Vec::new(), vec![0xff; 64]]
}

#[test]
fn the_nbd_fuzz_entry_survives_its_corpus_and_mutations() {
    let dir = tempdir();
    let seed_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/nbd_session");
    std::fs::create_dir_all(&seed_dir).unwrap();
    let seeds = seeds();
    for (i, s) in seeds.iter().enumerate() {
        std::fs::write(seed_dir.join(format!("seed-{i}")), s).unwrap();
        assert_eq!(fuzzing::session(dir.path(), s), fuzzing::DISK_SIZE, "seed {i}");
    }
    let mut rng = Rng::new(2026);
    let valid = &seeds[0];
    for n in 0..300 {
        let mut m = valid.clone();
        match n % 3 {
            0 => {
                let i = rng.below(m.len() as u64) as usize;
                m[i] ^= 1 << rng.below(8);
            }
            1 => {
                for _ in 0..4 {
                    let i = rng.below(m.len() as u64) as usize;
                    m[i] = rng.next() as u8;
                }
            }
            _ => m.truncate(rng.below(m.len() as u64) as usize),
        }
        assert_eq!(fuzzing::session(dir.path(), &m), fuzzing::DISK_SIZE, "mutation {n}");
    }
}
