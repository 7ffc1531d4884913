//! `vmdk::ingest`, a VMDK converted while it uploads: qemu-made monolithicSparse and streamOptimized images fed
//! in big and in 1–7-byte reads, with and without their length, compared byte for byte with the source (and no
//! write over an all-zero grain); hand-made files with their grains in reverse order or their tables after the
//! grains; hostile files (grains outside the upload, shared or over the directory, truncations, metadata past
//! the cap, descriptors) and a failing sink.

use std::io::Read;
use std::path::Path;

use storage_repo::Error;
use storage_repo::formats::ingest::{IngestInfo, IngestSink, MAX_METADATA};
use storage_repo::formats::vmdk;

use crate::util::{Rng, assert_same, qemu_img, tempdir};
use crate::vmdk::{make_raw, vmware_stream};

const MIB: usize = 1 << 20;
const GRAIN: usize = 64 << 10;

/// A sink into a `Vec` that checks the ingest's promises and records its writes.
#[derive(Default)]
struct VecSink {
    begun: u32,
    img: Vec<u8>,
    writes: Vec<(u64, usize)>,
    /// Fail the write after this many.
    fail_after: Option<usize>,
}

impl IngestSink for VecSink {
    fn begin(&mut self, info: &IngestInfo) -> std::io::Result<()> {
        assert_eq!(self.begun, 0, "begin once");
        self.begun += 1;
        assert_eq!((info.uuid, info.parent), (None, None));
        self.img = vec![0u8; info.capacity.expect("a capacity") as usize];
        Ok(())
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        assert_eq!(self.begun, 1, "begin before writes");
        if self.fail_after == Some(self.writes.len()) {
            return Err(std::io::Error::other("the disk is full"));
        }
        assert!(
            !data.is_empty() && data.len().is_multiple_of(512) && offset.is_multiple_of(512),
            "write of {} at {offset}",
            data.len()
        );
        let (a, b) = (offset as usize, offset as usize + data.len());
        assert!(b <= self.img.len(), "a write past the capacity");
        assert!(self.writes.iter().all(|&(o, l)| o as usize + l <= a || b <= o as usize), "overlapping writes");
        self.img[a..b].copy_from_slice(data);
        self.writes.push((offset, data.len()));
        Ok(())
    }
}

impl VecSink {
    /// Asserts every 64 KiB grain a write touched holds data in `want`.
    #[track_caller]
    fn only_data_written(&self, want: &[u8]) {
        for &(o, l) in &self.writes {
            for c in o as usize / GRAIN..(o as usize + l).div_ceil(GRAIN) {
                let chunk = &want[c * GRAIN..((c + 1) * GRAIN).min(want.len())];
                assert!(chunk.iter().any(|&x| x != 0), "a write covers the all-zero grain {c}");
            }
        }
    }
}

/// A reader returning 1 to 7 bytes per call.
struct Dribble<R>(R, Rng);

impl<R: Read> Read for Dribble<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(1 + self.1.below(7) as usize);
        self.0.read(&mut buf[..n])
    }
}

fn ingest(r: impl Read, length: Option<u64>) -> storage_repo::Result<VecSink> {
    let mut sink = VecSink::default();
    vmdk::ingest(r, length, &mut sink)?;
    Ok(sink)
}

/// Ingests `bytes` with and without its length, in big reads, and (when `dribble`) in tiny ones; each must
/// give `want`.
fn ingest_all_ways(bytes: &[u8], want: &[u8], dribble: bool) {
    let len = Some(bytes.len() as u64);
    let mut ways: Vec<(&str, VecSink)> = vec![
        ("slice with length", ingest(bytes, len).unwrap()),
        ("slice without length", ingest(bytes, None).unwrap()),
        ("1 MiB reads", ingest(std::io::BufReader::with_capacity(MIB, bytes), len).unwrap()),
    ];
    if dribble {
        ways.push(("tiny reads", ingest(Dribble(bytes, Rng::new(5)), len).unwrap()));
        ways.push(("tiny reads without length", ingest(Dribble(bytes, Rng::new(6)), None).unwrap()));
    }
    for (how, sink) in ways {
        assert_eq!(sink.img.len(), want.len(), "{how}");
        if sink.img != want {
            assert_same(&sink.img, want); // reports the first difference
        }
        sink.only_data_written(want);
        assert!(!sink.writes.is_empty(), "{how}");
    }
}

fn convert(raw: &Path, out: &Path, subformat: &str) -> Vec<u8> {
    let o = format!("subformat={subformat}");
    qemu_img(&["convert", "-f", "raw", "-O", "vmdk", "-o", &o, raw.to_str().unwrap(), out.to_str().unwrap()]);
    std::fs::read(out).unwrap()
}

#[test]
fn qemu_monolithic_sparse_ingests() {
    let dir = tempdir();
    let raw = dir.path().join("a.raw");
    let want = make_raw(&raw);
    let bytes = convert(&raw, &dir.path().join("a.vmdk"), "monolithicSparse");
    ingest_all_ways(&bytes, &want, true);
    // Runs adjacent in the file and the guest are written whole: far fewer writes than grains.
    let sink = ingest(&bytes[..], None).unwrap();
    let grains = want.chunks(GRAIN).filter(|c| c.iter().any(|&b| b != 0)).count();
    assert!(sink.writes.len() < grains, "{} writes for {grains} grains", sink.writes.len());
}

#[test]
fn qemu_stream_optimized_ingests() {
    let dir = tempdir();
    let raw = dir.path().join("a.raw");
    let want = make_raw(&raw);
    let bytes = convert(&raw, &dir.path().join("a.vmdk"), "streamOptimized");
    ingest_all_ways(&bytes, &want, true);
}

#[test]
fn a_vmware_style_stream_ingests_and_a_repeated_grain_is_refused() {
    let mut rng = Rng::new(4);
    let capacity = 2048 * 128 + 8;
    let grains = vec![(0, rng.bytes(GRAIN)), (1000 * 128, rng.bytes(GRAIN)), (2048 * 128, rng.bytes(4096))];
    let mut want = vec![0u8; capacity as usize * 512];
    for (lba, p) in &grains {
        want[*lba as usize * 512..][..p.len()].copy_from_slice(p);
    }
    ingest_all_ways(&vmware_stream(capacity, &grains), &want, true);
    let mut twice = grains.clone();
    twice.push((1000 * 128, rng.bytes(GRAIN)));
    assert_err(ingest(&vmware_stream(capacity, &twice)[..], None), "comes twice");
    // Cut before its end-of-stream marker, or shorter than its length.
    let b = vmware_stream(capacity, &grains);
    assert_err(ingest(&b[..b.len() - 512], None), "end-of-stream");
    assert_err(ingest(&b[..b.len() - 512], Some(b.len() as u64)), "<upload>: the upload ended early");
}

// ---- Hand-made monolithicSparse files ----

const CAPACITY: u64 = 2048 * 128 + 8; // 2048 grains and a 4 KiB one: five grain tables, a partial last grain

/// Where a hand-made file's parts are, in sectors.
struct Made {
    bytes: Vec<u8>,
    gd: usize,
    /// The first grain table.
    gt: usize,
    /// Each grain's sector, in the order given.
    at: Vec<usize>,
}

/// A monolithicSparse file of `CAPACITY` sectors holding `grains` (guest grain, payload) in the file in the
/// order given; its grain tables before the grains, or after them (`tables_last`).
fn hand_sparse(grains: &[(u64, Vec<u8>)], tables_last: bool) -> Made {
    let n_gts = CAPACITY.div_ceil(128).div_ceil(512) as usize;
    let mut h = vec![0u8; 512];
    h[..4].copy_from_slice(b"KDMV");
    h[4..8].copy_from_slice(&1u32.to_le_bytes());
    h[8..12].copy_from_slice(&1u32.to_le_bytes()); // newline test
    h[12..20].copy_from_slice(&CAPACITY.to_le_bytes());
    h[20..28].copy_from_slice(&128u64.to_le_bytes());
    h[28..36].copy_from_slice(&1u64.to_le_bytes()); // descriptor at sector 1, 2 sectors
    h[36..44].copy_from_slice(&2u64.to_le_bytes());
    h[44..48].copy_from_slice(&512u32.to_le_bytes());
    h[56..64].copy_from_slice(&3u64.to_le_bytes()); // GD at sector 3 (one sector)
    h[64..72].copy_from_slice(&128u64.to_le_bytes());
    h[73..77].copy_from_slice(b"\n \r\n");
    let mut f = h;
    let mut d = format!("createType=\"monolithicSparse\"\nRW {CAPACITY} SPARSE \"x.vmdk\"\n").into_bytes();
    d.resize(1024, 0);
    f.extend(d);
    f.resize(4 * 512, 0);
    let gt_bytes = n_gts * 2048;
    let (gt, first_grain) =
        if tables_last { (128 + grains.len() * 128, 128) } else { (4, (4 * 512 + gt_bytes).div_ceil(GRAIN) * 128) };
    let mut gts = vec![0u32; n_gts * 512];
    let mut at = Vec::new();
    for (k, (g, _)) in grains.iter().enumerate() {
        let s = first_grain + k * 128;
        gts[*g as usize] = s as u32;
        at.push(s);
    }
    for t in 0..n_gts {
        let e = (gt + 4 * t) as u32;
        f[3 * 512 + 4 * t..][..4].copy_from_slice(&e.to_le_bytes());
    }
    let end = (gt * 512 + gt_bytes).max((first_grain + grains.len() * 128) * 512);
    f.resize(end, 0);
    for (k, (_, p)) in grains.iter().enumerate() {
        f[at[k] * 512..][..p.len()].copy_from_slice(p);
    }
    f[gt * 512..][..gt_bytes].copy_from_slice(&gts.iter().flat_map(|e| e.to_le_bytes()).collect::<Vec<_>>());
    Made { bytes: f, gd: 3, gt, at }
}

fn want_of(grains: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut want = vec![0u8; CAPACITY as usize * 512];
    for (g, p) in grains {
        want[*g as usize * GRAIN..][..p.len()].copy_from_slice(p);
    }
    want
}

/// 40 grains: 0..20 and 600..620, the last one partial, one all zeros.
fn some_grains() -> Vec<(u64, Vec<u8>)> {
    let mut rng = Rng::new(8);
    let mut grains: Vec<(u64, Vec<u8>)> = (0..20).chain(600..619).map(|g| (g, rng.bytes(GRAIN))).collect();
    grains[7].1.fill(0);
    grains.push((2048, rng.bytes(4096)));
    grains
}

#[test]
fn grains_in_reverse_file_order_ingest() {
    let mut grains = some_grains();
    grains.reverse();
    let m = hand_sparse(&grains, false);
    assert_eq!(grains[0].0, 2048); // the last guest grain comes first in the file
    ingest_all_ways(&m.bytes, &want_of(&grains), true);
    // The same in guest order: adjacent runs become single writes (0..7, 8..20, 600..619, 2048), each cut at most
    // once more where the 2 MiB read buffer ends.
    grains.reverse();
    let m = hand_sparse(&grains, false);
    let sink = ingest(&m.bytes[..], None).unwrap();
    assert!(sink.img == want_of(&grains));
    assert!((4..=6).contains(&sink.writes.len()), "{:?}", sink.writes);
}

#[test]
fn grains_before_their_tables_come_from_the_head() {
    let grains = some_grains();
    let m = hand_sparse(&grains, true);
    assert!(m.gt > m.at[0]);
    ingest_all_ways(&m.bytes, &want_of(&grains), true);
}

#[track_caller]
fn assert_err(r: storage_repo::Result<VecSink>, what: &str) -> Error {
    match r {
        Ok(_) => panic!("accepted; expected an error mentioning {what:?}"),
        Err(e) => {
            assert!(e.to_string().contains(what), "{e} should mention {what:?}");
            e
        }
    }
}

#[track_caller]
fn assert_corrupt(r: storage_repo::Result<VecSink>, what: &str) {
    let e = assert_err(r, what);
    assert!(matches!(e, Error::Corrupt { .. }), "{e:?}");
    assert!(e.to_string().starts_with("<upload>: "), "{e}");
}

fn set_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn hostile_sparse_uploads_are_refused() {
    let grains = some_grains();
    let m = hand_sparse(&grains, false);
    let gte = |g: usize| m.gt * 512 + 4 * g;
    let len = Some(m.bytes.len() as u64);
    let edit = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = m.bytes.clone();
        f(&mut b);
        b
    };
    // A grain past the end of the upload: refused up front when the length is known, when the upload ends
    // before it otherwise.
    let b = edit(&|b| set_u32(b, gte(3), (m.bytes.len() / 512 + 1000) as u32));
    assert_corrupt(ingest(&b[..], Some(b.len() as u64)), "grain 3 (sector");
    assert_corrupt(ingest(&b[..], Some(b.len() as u64)), "outside the file");
    assert_corrupt(ingest(&b[..], None), "is past the end of the upload");
    assert_corrupt(ingest(Dribble(&b[..], Rng::new(1)), None), "is past the end of the upload");
    // Two entries on the same grain; a grain half over another.
    let b = edit(&|b| set_u32(b, gte(5), m.at[3] as u32));
    assert_corrupt(ingest(&b[..], len), "share data");
    let b = edit(&|b| set_u32(b, gte(5), m.at[3] as u32 + 64));
    assert_corrupt(ingest(&b[..], None), "share data");
    // A grain over the grain directory, over a grain table, over the header.
    for target in [m.gd, m.gt + 4, 2] {
        let b = edit(&|b| set_u32(b, gte(5), target as u32));
        assert_corrupt(ingest(&b[..], len), "overlaps");
    }
    // Two directory entries on the same table.
    let b = edit(&|b| set_u32(b, m.gd * 512 + 4, m.gt as u32));
    assert_corrupt(ingest(&b[..], None), "overlap");
    // Truncated in the header, the descriptor, the tables, the grains; with the full length or the cut one.
    for cut in [0, 3, 100, 511, 700, 3 * 512 + 2, m.gt * 512 + 100, m.at[10] * 512 + 5, m.at[39] * 512 + 2048] {
        let b = &m.bytes[..cut];
        assert!(matches!(ingest(b, len), Err(Error::Corrupt { .. })), "cut at {cut}, full length");
        assert!(matches!(ingest(b, Some(cut as u64)), Err(Error::Corrupt { .. })), "cut at {cut}, its length");
        assert!(matches!(ingest(b, None), Err(Error::Corrupt { .. })), "cut at {cut}, no length");
        assert!(ingest(Dribble(b, Rng::new(2)), None).is_err(), "cut at {cut}, tiny reads");
    }
    // A table past the metadata cap: too late to stream (when the upload is long enough to hold it).
    let far = (MAX_METADATA / 512 + 8) as u32;
    let b = edit(&|b| set_u32(b, m.gd * 512 + 4, far));
    let e = assert_err(ingest(&b[..], None), "64 MiB");
    assert!(matches!(e, Error::Invalid(_)), "{e:?}");
    let e = ingest(&b[..], Some(u64::MAX)).err().unwrap();
    assert!(matches!(e, Error::Invalid(_)), "{e:?}");
    assert_corrupt(ingest(&b[..], len), "outside the file");
    // An embedded descriptor of another type.
    let b = edit(&|b| {
        let at = b.windows(18).position(|w| w == b"\"monolithicSparse\"").unwrap();
        b[at..at + 18].copy_from_slice(b"\"monolithicFlat\"  ");
    });
    assert!(matches!(ingest(&b[..], None), Err(Error::Invalid(_))));
}

#[test]
fn a_descriptor_file_is_refused_as_invalid() {
    let flat = b"# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\nRW 128 FLAT \"d-flat.vmdk\" 0\n";
    let e = assert_err(ingest(&flat[..], Some(flat.len() as u64)), "d-flat.vmdk");
    assert!(matches!(e, Error::Invalid(_)), "{e:?}");
    assert!(e.to_string().contains("raw"), "{e}");
    let split = b"createType=\"twoGbMaxExtentSparse\"\nRW 128 SPARSE \"a-s001.vmdk\"\n";
    assert!(matches!(ingest(&split[..], None), Err(Error::Invalid(_))));
    assert!(matches!(ingest(&b"COWD and more"[..], None), Err(Error::Invalid(_))));
    assert_corrupt(ingest(&b"\x7fELF, not a disk"[..], None), "not a VMDK");
    assert_corrupt(ingest(&vec![b'#'; 65 << 10][..], None), "not a VMDK");
    assert_corrupt(ingest(&b""[..], None), "not a VMDK");
}

#[test]
fn a_failing_sink_stops_the_ingest() {
    let grains = some_grains();
    let m = hand_sparse(&grains, false);
    let q = qemu_stream_small();
    for bytes in [&m.bytes, &q] {
        let mut sink = VecSink { fail_after: Some(1), ..VecSink::default() };
        let e = vmdk::ingest(&bytes[..], None, &mut sink).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e:?}");
        assert_eq!(e.to_string(), "<destination>: the disk is full");
        assert_eq!(sink.writes.len(), 1);
    }
}

/// A qemu streamOptimized image of 8 MiB with 3 MiB of data.
fn qemu_stream_small() -> Vec<u8> {
    let dir = tempdir();
    let raw = dir.path().join("s.raw");
    let mut img = vec![0u8; 8 * MIB];
    img[MIB..4 * MIB].copy_from_slice(&Rng::new(3).bytes(3 * MIB));
    std::fs::write(&raw, &img).unwrap();
    convert(&raw, &dir.path().join("so.vmdk"), "streamOptimized")
}

#[test]
fn a_truncated_stream_is_refused() {
    let b = qemu_stream_small();
    for cut in [0, 100, 600, b.len() / 2, b.len() - 512] {
        let part = &b[..cut];
        assert!(ingest(part, Some(b.len() as u64)).is_err(), "cut at {cut}");
        assert!(ingest(Dribble(part, Rng::new(3)), Some(b.len() as u64)).is_err(), "cut at {cut}");
    }
    // qemu's stream has no end-of-stream marker: only the length tells a cut at a grain boundary.
    let sink = ingest(&b[..], Some(b.len() as u64)).unwrap();
    assert!(!sink.writes.is_empty());
}
