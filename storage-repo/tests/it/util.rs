//! Helpers: temporary directories under the target's tmp folder, a deterministic byte generator, qemu-img.

use std::path::{Path, PathBuf};
use std::process::Command;

use storage_repo::block::BlockDevice;
use storage_repo::formats::vhd::Chain;

/// A fresh directory under `target/tmp` (removed when dropped).
pub fn tempdir() -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).unwrap();
    tempfile::Builder::new().prefix("vhd-").tempdir_in(base).unwrap()
}

/// Deterministic pseudo-random bytes (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(n);
        out
    }
}

/// Runs `qemu-img` with `args`; panics (the test fails) if it is missing or fails.
pub fn qemu_img(args: &[&str]) -> String {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("qemu-img is required for this test and could not be run: {e}"));
    assert!(
        out.status.success(),
        "qemu-img {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The whole content of a chain.
pub fn read_all(path: &Path) -> Vec<u8> {
    let c = Chain::open(path, false).unwrap();
    let mut buf = vec![0u8; c.size() as usize];
    c.read_at(&mut buf, 0).unwrap();
    buf
}

/// `qemu-img convert -f vpc -O raw` of `vhd`, read back.
pub fn qemu_raw(vhd: &Path) -> Vec<u8> {
    let raw = vhd.with_extension("qemu.raw");
    qemu_img(&["convert", "-f", "vpc", "-O", "raw", vhd.to_str().unwrap(), raw.to_str().unwrap()]);
    let data = std::fs::read(&raw).unwrap();
    std::fs::remove_file(&raw).unwrap();
    data
}

/// Writes `data` at `offset` into a writable chain and into the `model`.
pub fn write_both(c: &Chain, model: &mut [u8], data: &[u8], offset: u64) {
    c.write_at(data, offset).unwrap();
    model[offset as usize..offset as usize + data.len()].copy_from_slice(data);
}

/// Asserts two byte slices are equal, reporting the first difference rather than dumping megabytes.
#[track_caller]
pub fn assert_same(got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "lengths differ");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("first difference at byte {i}: got {:#04x}, want {:#04x}", got[i], want[i]);
    }
}

/// One's complement of the byte sum of `b`, skipping the 4-byte field at `skip`.
fn vhd_checksum(b: &[u8], skip: usize) -> u32 {
    !b.iter()
        .enumerate()
        .filter(|(i, _)| !(skip..skip + 4).contains(i))
        .fold(0u32, |s, (_, &x)| s.wrapping_add(x.into()))
}

/// Recomputes the checksum of the footer at `at`.
pub fn fix_footer(bytes: &mut [u8], at: usize) {
    let sum = vhd_checksum(&bytes[at..at + 512], 64);
    bytes[at + 64..at + 68].copy_from_slice(&sum.to_be_bytes());
}

/// Recomputes the checksum of the header at 512.
pub fn fix_header(bytes: &mut [u8]) {
    let sum = vhd_checksum(&bytes[512..1536], 36);
    bytes[512 + 36..512 + 40].copy_from_slice(&sum.to_be_bytes());
}

/// Edits both footers of a dynamic file with `f` and fixes their checksums.
pub fn patch_footers(path: &Path, f: impl Fn(&mut [u8])) {
    let mut b = std::fs::read(path).unwrap();
    let end = b.len() - 512;
    f(&mut b[..512]);
    f(&mut b[end..]);
    fix_footer(&mut b, 0);
    fix_footer(&mut b, end);
    std::fs::write(path, b).unwrap();
}

/// Edits the header (the 1024 bytes at 512) with `f` and fixes its checksum.
pub fn patch_header(path: &Path, f: impl Fn(&mut [u8])) {
    let mut b = std::fs::read(path).unwrap();
    f(&mut b[512..1536]);
    fix_header(&mut b);
    std::fs::write(path, b).unwrap();
}

/// Rewrites the three locators of a child made by `create_child` so they hold `target` (a path as a hostile
/// file would store it), with the lengths in the header fixed.
pub fn set_locator_paths(path: &Path, target: &str) {
    let mut b = std::fs::read(path).unwrap();
    for i in 0..3 {
        let entry = 512 + 576 + 24 * i;
        let code = &b[entry..entry + 4];
        let payload: Vec<u8> = if code == b"MacX" {
            format!("file://{target}").into_bytes()
        } else {
            target.replace('/', "\\").encode_utf16().flat_map(u16::to_le_bytes).collect()
        };
        let off = u64::from_be_bytes(b[entry + 16..entry + 24].try_into().unwrap()) as usize;
        b[off..off + 512].fill(0);
        b[off..off + payload.len()].copy_from_slice(&payload);
        b[entry + 8..entry + 12].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    }
    fix_header(&mut b);
    std::fs::write(path, b).unwrap();
}
