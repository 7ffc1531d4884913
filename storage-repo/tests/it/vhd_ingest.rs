//! Streaming ingest of VHD uploads (`vhd::ingest`): images made by our code, by qemu-img and by hand, read whole
//! and in tiny pieces, with and without their length, compared byte for byte with their source; hostile heads,
//! tables and truncations; the fuzz entry point over mutated images and the committed seeds.

use std::io::{self, Read};
use std::path::Path;

use storage_repo::Error;
use storage_repo::block::BlockDevice;
use storage_repo::formats::ingest::{IngestInfo, IngestSink, MAX_METADATA};
use storage_repo::formats::vhd::{self, Chain, fuzzing};
use uuid::Uuid;

use crate::util::{Rng, assert_same, fix_footer, fix_header, qemu_img, qemu_raw, read_all, tempdir, write_both};

const MIB: u64 = 1 << 20;

/// A sink that writes into memory and records which sectors were written.
#[derive(Default)]
struct RawSink {
    info: Option<IngestInfo>,
    data: Vec<u8>,
    written: Vec<bool>,
    writes: usize,
    fail_after: Option<usize>,
}

impl IngestSink for RawSink {
    fn begin(&mut self, info: &IngestInfo) -> io::Result<()> {
        assert!(self.info.is_none(), "begin twice");
        self.info = Some(info.clone());
        if let Some(c) = info.capacity {
            self.data = vec![0; c as usize];
            self.written = vec![false; (c / 512) as usize];
        }
        Ok(())
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let info = self.info.as_ref().expect("begin first");
        if self.fail_after == Some(self.writes) {
            return Err(io::Error::other("the disk is full"));
        }
        self.writes += 1;
        assert!(offset.is_multiple_of(512) && data.len().is_multiple_of(512) && !data.is_empty());
        let end = (offset as usize) + data.len();
        if let Some(c) = info.capacity {
            assert!(end as u64 <= c, "write past the capacity");
        } else if self.data.len() < end {
            self.data.resize(end, 0);
            self.written.resize(end / 512, false);
        }
        self.data[offset as usize..end].copy_from_slice(data);
        for s in &mut self.written[offset as usize / 512..end / 512] {
            assert!(!*s, "a sector written twice");
            *s = true;
        }
        Ok(())
    }
}

/// Reads at most `n` bytes per call.
struct Pieces<'a>(&'a [u8], usize);

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.1.min(buf.len()).min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

/// Reads 1 to 7 bytes per call, varying.
struct Tiny<'a>(&'a [u8], usize);

impl Read for Tiny<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.1 = self.1 % 7 + 1;
        let n = self.1.min(buf.len()).min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

fn ingest(bytes: &[u8], length: Option<u64>, piece: usize) -> storage_repo::Result<RawSink> {
    let mut sink = RawSink::default();
    vhd::ingest(Pieces(bytes, piece), length, &mut sink)?;
    Ok(sink)
}

/// Ingests `bytes` with and without length, in big, odd and tiny pieces, and checks the content against `want`
/// (what the disk reads as) each time; returns the last sink.
fn ingest_all_ways(bytes: &[u8], want: &[u8], tiny: bool) -> RawSink {
    let mut last = None;
    for length in [Some(bytes.len() as u64), None] {
        for piece in [usize::MAX, 1 << 20, 65_537, 4093] {
            let mut sink = ingest(bytes, length, piece).unwrap();
            sink.data.resize(want.len(), 0);
            assert_same(&sink.data, want);
            last = Some(sink);
        }
        if tiny {
            let mut sink = RawSink::default();
            vhd::ingest(Tiny(bytes, 0), length, &mut sink).unwrap();
            sink.data.resize(want.len(), 0);
            assert_same(&sink.data, want);
        }
    }
    last.unwrap()
}

#[track_caller]
fn refused(bytes: &[u8], length: Option<u64>, what: &str) {
    match ingest(bytes, length, 1 << 20) {
        Err(Error::Corrupt { path, what: w }) => {
            assert_eq!(path, Path::new("<upload>"));
            assert!(w.contains(what), "{w:?} does not say {what:?}");
        }
        Err(e) => panic!("{e} is not Corrupt ({what})"),
        Ok(_) => panic!("accepted, expected {what:?}"),
    }
}

#[track_caller]
fn invalid(bytes: &[u8], length: Option<u64>) {
    match ingest(bytes, length, 1 << 20) {
        Err(Error::Invalid(w)) => assert!(w.contains("<upload>"), "{w}"),
        Err(e) => panic!("{e} is not Invalid"),
        Ok(_) => panic!("accepted"),
    }
}

/// A dynamic disk of ours with full, partial and zero-written blocks; its bytes and its content.
fn ours(dir: &Path, size: u64) -> (Vec<u8>, Vec<u8>, Uuid) {
    let p = dir.join(format!("ours-{size}.vhd"));
    let id = Uuid::new_v4();
    vhd::create_dynamic(&p, id, size).unwrap();
    let mut model = vec![0u8; size as usize];
    let mut rng = Rng::new(11);
    {
        let c = Chain::open(&p, true).unwrap();
        write_both(&c, &mut model, &rng.bytes(2 * MIB as usize), 0);
        write_both(&c, &mut model, &rng.bytes(1536), 2 * MIB + 512);
        write_both(&c, &mut model, &vec![0u8; 8192], 3 * MIB);
        write_both(&c, &mut model, &rng.bytes(100_000), size - 100_000);
        write_both(&c, &mut model, &rng.bytes(70_000), size / 2 + 12_345);
        c.flush().unwrap();
    }
    assert_same(&read_all(&p), &model);
    (std::fs::read(&p).unwrap(), model, id)
}

#[test]
fn our_dynamic_disks_arrive_whole() {
    let dir = tempdir();
    let (bytes, model, id) = ours(dir.path(), 20 * MIB);
    let sink = ingest_all_ways(&bytes, &model, false);
    assert_eq!(sink.info, Some(IngestInfo { capacity: Some(20 * MIB), uuid: Some(id), parent: None }));
    // All-zero data is not written in a disk without parent.
    assert!(!sink.written[(3 * MIB / 512) as usize]);
    assert!(sink.written[0]);

    let (small, model, _) = ours(dir.path(), 6 * MIB);
    ingest_all_ways(&small, &model, true);
}

#[test]
fn qemu_dynamic_and_fixed_disks_arrive_whole() {
    let dir = tempdir();
    let raw = dir.path().join("src.raw");
    let size = 9 * MIB + 4096;
    let mut content = vec![0u8; size as usize];
    let mut rng = Rng::new(5);
    for (at, len) in [(0usize, 4096usize), (MIB as usize + 17 * 512, 300_000), (5 * MIB as usize, 2 * MIB as usize)] {
        content[at..at + len].copy_from_slice(&rng.bytes(len));
    }
    let tail = content.len() - 512;
    content[tail..].fill(0xab);
    std::fs::write(&raw, &content).unwrap();
    for sub in ["dynamic", "fixed"] {
        let vhd = dir.path().join(format!("{sub}.vhd"));
        qemu_img(&[
            "convert",
            "-f",
            "raw",
            "-O",
            "vpc",
            "-o",
            &format!("subformat={sub}"),
            raw.to_str().unwrap(),
            vhd.to_str().unwrap(),
        ]);
        let want = qemu_raw(&vhd);
        let bytes = std::fs::read(&vhd).unwrap();
        ingest_all_ways(&bytes, &want, sub == "fixed");
        let sink = ingest(&bytes, Some(bytes.len() as u64), 1 << 20).unwrap();
        let info = sink.info.unwrap();
        assert_eq!(info.capacity, Some(want.len() as u64), "{sub}");
        assert_eq!(info.parent, None);
        assert_same(&sink.data[..content.len()], &content);
        if sub == "fixed" {
            // Without the length the capacity is known only at the end.
            let s = ingest(&bytes, None, 1 << 20).unwrap();
            assert_eq!(s.info.unwrap().capacity, None);
            assert!(s.data.len() >= content.len() && s.data.len() <= want.len(), "{}", s.data.len());
        }
    }
}

#[test]
fn a_differencing_disk_writes_exactly_its_sectors_zeros_included() {
    let dir = tempdir();
    let parent = dir.path().join("p.vhd");
    let child = dir.path().join("c.vhd");
    let pid = Uuid::new_v4();
    vhd::create_dynamic(&parent, pid, 8 * MIB).unwrap();
    {
        let c = Chain::open(&parent, true).unwrap();
        c.write_at(&vec![7u8; 4 * MIB as usize], 0).unwrap();
        c.flush().unwrap();
    }
    let cid = Uuid::new_v4();
    vhd::create_child(&child, cid, &parent).unwrap();
    let mut expect = vec![false; (8 * MIB / 512) as usize];
    {
        let c = Chain::open(&child, true).unwrap();
        for (at, data) in [
            (512u64, vec![0u8; 1024]),
            (MIB, vec![9u8; 4096]),
            (6 * MIB, vec![0u8; 2 * MIB as usize]),
            (2 * MIB, vec![1u8; 512]),
        ] {
            c.write_at(&data, at).unwrap();
            expect[(at / 512) as usize..((at + data.len() as u64) / 512) as usize].fill(true);
        }
        c.flush().unwrap();
    }
    let seen = read_all(&child);
    let bytes = std::fs::read(&child).unwrap();
    for length in [Some(bytes.len() as u64), None] {
        let sink = ingest(&bytes, length, 100_000).unwrap();
        assert_eq!(sink.info, Some(IngestInfo { capacity: Some(8 * MIB), uuid: Some(cid), parent: Some(pid) }));
        assert_eq!(sink.written, expect, "exactly the child's sectors, zeros included");
        for (i, _) in expect.iter().enumerate().filter(|&(_, &e)| e) {
            assert_same(&sink.data[i * 512..(i + 1) * 512], &seen[i * 512..(i + 1) * 512]);
        }
    }
}

// ---- hand-made images ----

/// A dynamic VHD by hand: footer copy, header at 512 (table at `bat_at`, `max` entries), blocks of `bs` bytes at
/// the given file sectors with the given bitmap bytes and data, the trailing footer after everything. Returns the
/// bytes and the disk's content.
struct Craft {
    size: u64,
    bs: u64,
    bat_at: u64,
    max: u32,
    /// (block, file sector, sector-bitmap fill byte)
    blocks: Vec<(u32, u32, u8)>,
    /// A differencing disk's parent.
    parent: Option<Uuid>,
}

impl Craft {
    fn new(size: u64, bs: u64) -> Craft {
        Craft { size, bs, bat_at: 1536, max: size.div_ceil(bs) as u32, blocks: Vec::new(), parent: None }
    }

    fn bitmap_bytes(&self) -> u64 {
        (self.bs / 512 / 8).div_ceil(512).max(1) * 512
    }

    /// The bytes and the content (blocks hold their number + 1 in every byte).
    fn build(&self) -> (Vec<u8>, Vec<u8>) {
        let span = self.bitmap_bytes() + self.bs;
        let bat_bytes = (u64::from(self.max) * 4).div_ceil(512) * 512;
        let mut end = (self.bat_at + bat_bytes).max(1536);
        for &(_, s, _) in &self.blocks {
            end = end.max(u64::from(s) * 512 + span);
        }
        let mut b = vec![0u8; end as usize + 512];
        let mut f = [0u8; 512];
        f[0..8].copy_from_slice(b"conectix");
        f[8..12].copy_from_slice(&2u32.to_be_bytes());
        f[12..16].copy_from_slice(&0x1_0000u32.to_be_bytes());
        f[16..24].copy_from_slice(&512u64.to_be_bytes());
        f[28..32].copy_from_slice(b"test");
        f[40..48].copy_from_slice(&self.size.to_be_bytes());
        f[48..56].copy_from_slice(&self.size.to_be_bytes());
        f[60..64].copy_from_slice(&(if self.parent.is_some() { 4u32 } else { 3 }).to_be_bytes());
        f[68..84].copy_from_slice(Uuid::from_u128(42).as_bytes());
        b[..512].copy_from_slice(&f);
        fix_footer(&mut b, 0);
        let h = &mut b[512..1536];
        h[0..8].copy_from_slice(b"cxsparse");
        h[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
        h[16..24].copy_from_slice(&self.bat_at.to_be_bytes());
        h[24..28].copy_from_slice(&0x1_0000u32.to_be_bytes());
        h[28..32].copy_from_slice(&self.max.to_be_bytes());
        h[32..36].copy_from_slice(&(self.bs as u32).to_be_bytes());
        h[40..56].copy_from_slice(self.parent.unwrap_or_default().as_bytes());
        fix_header(&mut b);
        let bat = self.bat_at as usize;
        b[bat..bat + bat_bytes as usize].fill(0xff);
        let mut content = vec![0u8; self.size as usize];
        for &(block, sector, map) in &self.blocks {
            let at = bat + 4 * block as usize;
            b[at..at + 4].copy_from_slice(&sector.to_be_bytes());
            let off = sector as usize * 512;
            let bm = self.bitmap_bytes() as usize;
            b[off..off + bm].fill(map);
            b[off + bm..off + bm + self.bs as usize].fill(block as u8 + 1);
            let base = block as u64 * self.bs;
            for s in 0..self.bs / 512 {
                let g = base + s * 512;
                let bit = map & (0x80 >> (s % 8)) != 0;
                if bit && g < self.size {
                    content[g as usize..g as usize + 512].fill(block as u8 + 1);
                }
            }
        }
        let tail = b.len() - 512;
        let copy = b[..512].to_vec();
        b[tail..].copy_from_slice(&copy);
        (b, content)
    }
}

#[test]
fn blocks_in_any_file_order_and_any_block_size() {
    // Blocks in reverse file order against the BAT.
    let mut c = Craft::new(8 * MIB, 2 * MIB);
    let span = (512 + 2 * MIB) as u32 / 512;
    c.blocks = vec![(0, 4 + 3 * span, 0xff), (1, 4 + 2 * span, 0xa5), (2, 4 + span, 0xff), (3, 4, 0x0f)];
    let (bytes, content) = c.build();
    ingest_all_ways(&bytes, &content, false);

    // The BAT after the blocks: the blocks are served from the buffered head.
    let mut c = Craft::new(4 * MIB, 2 * MIB);
    let span = (512 + 2 * MIB) / 512;
    c.blocks = vec![(1, 3, 0xff), (0, 3 + span as u32, 0x81)];
    c.bat_at = (3 + 2 * span) * 512;
    let (bytes, content) = c.build();
    ingest_all_ways(&bytes, &content, false);

    // Other block sizes, and a last block that passes the size.
    for bs in [512, 4096, 512 << 10, 8 * MIB, 16 * MIB] {
        let size = if bs >= 8 * MIB { bs + 3 * 512 } else { 5 * bs + 1024 };
        let mut c = Craft::new(size, bs);
        let span = (c.bitmap_bytes() + bs) / 512;
        let last = (size.div_ceil(bs) - 1) as u32;
        c.blocks = vec![(last, 4, 0xff), (0, 4 + span as u32, 0x5a)];
        let (bytes, content) = c.build();
        let sink = ingest(&bytes, Some(bytes.len() as u64), 1 << 20).unwrap();
        assert_same(&sink.data, &content);
        let sink = ingest(&bytes, None, 12_345).unwrap();
        assert_same(&sink.data, &content);
    }
    let (bytes, _) = Craft::new(8 * MIB, 512 * MIB).build();
    refused(&bytes, None, "block size 536870912 is not supported");
    let (bytes, _) = Craft::new(8 * MIB, 3 * MIB).build();
    refused(&bytes, None, "block size 3145728 is not supported");
}

#[test]
fn hostile_tables_are_refused() {
    let mut c = Craft::new(8 * MIB, 2 * MIB);
    let span = (512 + 2 * MIB) as u32 / 512;
    c.blocks = vec![(0, 4, 0xff), (1, 4 + span, 0xff)];
    let (good, _) = c.build();
    let len = Some(good.len() as u64);
    let set = |b: &mut Vec<u8>, i: usize, v: u32| b[1536 + 4 * i..1540 + 4 * i].copy_from_slice(&v.to_be_bytes());

    // Past the end: with the length known at once, without it when the upload ends.
    let mut b = good.clone();
    set(&mut b, 3, 0x10_0000);
    refused(&b, len, "BAT entry 3 (offset 536870912) points past the end of the upload");
    refused(&b, None, "block 3 at sector 1048576 is past the end of the upload");
    // Two entries on one block, an entry over the header or the BAT.
    let mut b = good.clone();
    set(&mut b, 2, 4 + span);
    refused(&b, None, "BAT entries 1 and 2 overlap");
    let mut b = good.clone();
    set(&mut b, 2, 2);
    refused(&b, len, "BAT entry 2 (offset 1024) points into the metadata (512..1536)");
    let mut b = good.clone();
    set(&mut b, 2, 3);
    refused(&b, None, "points into the metadata (1536..2048)");

    // Truncated in the head and inside a block.
    for cut in [0, 100, 511, 512, 1000, 1536, 1540] {
        for length in [Some(cut as u64), None] {
            assert!(matches!(ingest(&good[..cut], length, 1 << 20), Err(Error::Corrupt { .. })), "{cut}");
        }
    }
    refused(&good[..1540], None, "ended early, in the BAT");
    let cut = 2048 + 512 + 1000;
    refused(&good[..cut], None, "block 0 at sector 4 is past the end of the upload");
    // A length the upload does not reach.
    refused(&good[..cut], Some(good.len() as u64), "block 0 at sector 4 is past the end of the upload");
    refused(&good[..good.len() - 100], len, "ended early");

    // Absurd tables: refused before any large allocation.
    let mut b = good.clone();
    b[512 + 28..512 + 32].copy_from_slice(&u32::MAX.to_be_bytes());
    fix_header(&mut b);
    refused(&b, len, "does not fit in the upload");
    let mut b = good.clone();
    b[512 + 16..512 + 24].copy_from_slice(&(1u64 << 40).to_be_bytes());
    fix_header(&mut b);
    invalid(&b, None);
    refused(&b, len, "does not fit in the upload");
    let mut b = good.clone();
    b[512 + 16..512 + 24].copy_from_slice(&((u64::MAX >> 9 << 9) - MIB).to_be_bytes());
    fix_header(&mut b);
    invalid(&b, None);
    let mut b = good.clone();
    b[512 + 28..512 + 32].copy_from_slice(&1u32.to_be_bytes());
    fix_header(&mut b);
    refused(&b, None, "the BAT has 1 entries, fewer than the 4 blocks");
    // A 2000 GiB disk of 4 KiB blocks: a BAT of 2 GiB.
    let mut b = good.clone();
    for at in [40, 48] {
        b[at..at + 8].copy_from_slice(&(2000u64 << 30).to_be_bytes());
    }
    fix_footer(&mut b, 0);
    b[512 + 28..512 + 32].copy_from_slice(&u32::MAX.to_be_bytes());
    b[512 + 32..512 + 36].copy_from_slice(&4096u32.to_be_bytes());
    fix_header(&mut b);
    invalid(&b, None);
    const { assert!(MAX_METADATA < 1 << 30) };

    // Bad checksums, cookies, an unknown type, a trailing footer that differs.
    let mut b = good.clone();
    b[20] ^= 1;
    refused(&b, None, "the footer copy at offset 0 is invalid (bad footer checksum)");
    let mut b = good.clone();
    b[513] = b'X';
    refused(&b, None, "bad dynamic header cookie");
    let mut b = good.clone();
    b[60..64].copy_from_slice(&9u32.to_be_bytes());
    fix_footer(&mut b, 0);
    refused(&b, None, "unknown disk type 9");
    let mut b = good.clone();
    let end = b.len() - 512;
    b[end + 85] = 1;
    fix_footer(&mut b, end);
    refused(&b, len, "the footer at the end differs from its copy at offset 0");
    // No trailing footer at all is accepted (the data is all there).
    ingest(&good[..good.len() - 512], None, 1 << 20).unwrap();
    // A differencing disk needs a parent UUID.
    let mut b = good.clone();
    b[60..64].copy_from_slice(&4u32.to_be_bytes());
    fix_footer(&mut b, 0);
    refused(&b, None, "without a parent UUID");
}

#[test]
fn fixed_disks_are_checked_at_the_end() {
    let dir = tempdir();
    let raw = dir.path().join("src.raw");
    let mut content = Rng::new(3).bytes(3 * MIB as usize);
    content[MIB as usize..2 * MIB as usize].fill(0);
    std::fs::write(&raw, &content).unwrap();
    let vhd = dir.path().join("f.vhd");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vpc",
        "-o",
        "subformat=fixed",
        raw.to_str().unwrap(),
        vhd.to_str().unwrap(),
    ]);
    let good = std::fs::read(&vhd).unwrap();
    let data = good.len() - 512;
    let len = Some(good.len() as u64);
    let sink = ingest(&good, len, 1 << 20).unwrap();
    assert!(!sink.written[(MIB / 512) as usize], "zeros skipped");

    // The footer's size disagrees with the data.
    let mut b = good.clone();
    let sz = u64::from_be_bytes(b[data + 48..data + 56].try_into().unwrap());
    b[data + 48..data + 56].copy_from_slice(&(sz - 512).to_be_bytes());
    fix_footer(&mut b, data);
    refused(&b, len, "the footer says");
    refused(&b, None, "the footer says");
    // One sector more or less of data.
    let mut b = good[..data - 512].to_vec();
    b.extend_from_slice(&good[data..]);
    refused(&b, None, "the footer says");
    // Not a VHD at all; a dynamic footer at the end of data that did not start with its copy.
    refused(&content, Some(content.len() as u64), "no VHD footer: bad footer cookie");
    refused(&content, None, "no VHD footer");
    refused(&content[..1000], None, "not a whole number of sectors");
    refused(&content[..1000], Some(1000), "not a whole number of sectors");
    refused(&content[..100], None, "no VHD footer");
    refused(&[], None, "no VHD footer");
    let mut b = good.clone();
    b[data + 60..data + 64].copy_from_slice(&3u32.to_be_bytes());
    fix_footer(&mut b, data);
    refused(&b, len, "disk type 3");
    // Ended before its length.
    refused(&good[..good.len() - 1024], len, "ended early");
}

/// A sink error stops the ingest and names the destination.
#[test]
fn sink_errors_name_the_destination() {
    let dir = tempdir();
    let (bytes, _, _) = ours(dir.path(), 8 * MIB);
    let mut sink = RawSink { fail_after: Some(1), ..RawSink::default() };
    let e = vhd::ingest(&bytes[..], None, &mut sink).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    assert_eq!(e.to_string(), "<destination>: the disk is full");

    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("connection reset"))
        }
    }
    let e = vhd::ingest(Broken, None, &mut RawSink::default()).unwrap_err();
    assert_eq!(e.to_string(), "<upload>: connection reset");
}

// ---- fuzzing ----

/// Small images the fuzz target starts from (also committed under `fuzz/seeds/vhd_ingest/`).
fn seeds(dir: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let p = dir.join("empty.vhd");
    vhd::create_dynamic(&p, Uuid::new_v4(), 4 * MIB).unwrap();
    let empty = std::fs::read(&p).unwrap();
    let child = dir.join("child.vhd");
    vhd::create_child(&child, Uuid::new_v4(), &p).unwrap();
    let empty_child = std::fs::read(&child).unwrap();
    let mut c = Craft::new(12 * 1024, 4096);
    c.blocks = vec![(2, 4, 0xf0), (0, 4 + 9, 0xff)];
    let (small, _) = c.build();
    c.parent = Some(Uuid::from_u128(7));
    c.blocks = vec![(1, 4, 0x3c)];
    let (small_child, _) = c.build();
    let raw = dir.join("f.raw");
    let fixed = dir.join("f.vhd");
    std::fs::write(&raw, [[0u8; 512], [3u8; 512]].concat()).unwrap();
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vpc",
        "-o",
        "subformat=fixed",
        raw.to_str().unwrap(),
        fixed.to_str().unwrap(),
    ]);
    let fixed = std::fs::read(&fixed).unwrap();
    vec![
        ("empty.vhd", empty),
        ("empty-child.vhd", empty_child),
        ("small-blocks.vhd", small),
        ("small-blocks-child.vhd", small_child),
        ("fixed.vhd", fixed),
    ]
}

/// Larger images with data, mutated here but not committed as seeds.
fn with_data(dir: &Path) -> Vec<Vec<u8>> {
    let p = dir.join("data.vhd");
    vhd::create_dynamic(&p, Uuid::new_v4(), 4 * MIB).unwrap();
    {
        let c = Chain::open(&p, true).unwrap();
        c.write_at(&[1u8; 1536], 512).unwrap();
        c.write_at(&[2u8; 512], 4 * MIB - 512).unwrap();
        c.flush().unwrap();
    }
    let child = dir.join("data-child.vhd");
    vhd::create_child(&child, Uuid::new_v4(), &p).unwrap();
    {
        let c = Chain::open(&child, true).unwrap();
        c.write_at(&[0u8; 1024], MIB).unwrap();
        c.flush().unwrap();
    }
    vec![std::fs::read(&p).unwrap(), std::fs::read(&child).unwrap()]
}

#[test]
fn the_ingest_target_survives_mutated_uploads() {
    let dir = tempdir();
    let seed_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/vhd_ingest");
    std::fs::create_dir_all(&seed_dir).unwrap();
    let seeds = seeds(dir.path());
    for (name, seed) in &seeds {
        // Keep the committed seeds (their UUIDs and times change with each run): only add missing ones.
        let at = seed_dir.join(name);
        if !at.exists() {
            std::fs::write(&at, seed).unwrap();
        }
    }
    let mut rng = Rng::new(99);
    for seed in seeds.into_iter().map(|(_, s)| s).chain(with_data(dir.path())) {
        fuzzing::ingest_one(&seed);
        for _ in 0..150 {
            let mut b = seed.clone();
            let len = b.len();
            let regions = [(0, 512), (512, 1536), (1536, 3584.min(len)), (len - 512, len), (0, len)];
            let (start, end) = regions[rng.below(regions.len() as u64) as usize];
            let at = start + rng.below((end - start) as u64) as usize;
            match rng.below(5) {
                0 | 1 => b[at] ^= 1 << rng.below(8),
                2 => b[at] = rng.next() as u8,
                3 => b.truncate(at),
                _ => b[at] = 0xff,
            }
            fuzzing::ingest_one(&b);
        }
    }
    // Whatever else `cargo fuzz` found and was committed.
    for e in std::fs::read_dir(&seed_dir).unwrap() {
        fuzzing::ingest_one(&std::fs::read(e.unwrap().path()).unwrap());
    }
}
