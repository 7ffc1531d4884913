//! The VMDK reader against images made by `qemu-img convert -O vmdk` (monolithicSparse, streamOptimized,
//! monolithicFlat), read from files and as streams and compared byte for byte with the source; and hostile files
//! (truncated, pointers outside the file or into metadata, grains that inflate past their grain, LBAs past the
//! capacity, descriptors naming other files, absurd sizes).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use storage_repo::Error;
use storage_repo::formats::vmdk::{self, MAX_EXTENT};

use crate::util::{Rng, assert_same, qemu_img, tempdir};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const GRAIN: usize = 64 * KIB;

/// A raw image of 70 MiB + 4.5 KiB (a partial last grain): 1 MiB writes (random and text-like), scattered 4 KiB
/// writes, a written run of zeros, and the last sector.
pub fn make_raw(path: &Path) -> Vec<u8> {
    let size = 70 * MIB + 4608;
    let mut img = vec![0u8; size];
    let mut rng = Rng::new(6);
    for i in 0..12 {
        let at = rng.below((size - MIB) as u64 / 4096) as usize * 4096;
        let data = if i % 2 == 0 {
            rng.bytes(MIB)
        } else {
            (0..MIB).map(|j| b"the quick brown fox jumps over a lazy dog\n"[j % 42]).collect()
        };
        img[at..at + MIB].copy_from_slice(&data);
    }
    for _ in 0..200 {
        let at = rng.below(size as u64 / 4096) as usize * 4096;
        img[at..at + 4096].copy_from_slice(&rng.bytes(4096));
    }
    img[3 * MIB..4 * MIB].fill(0);
    let n = img.len();
    img[n - 512..].fill(0xee);
    std::fs::write(path, &img).unwrap();
    img
}

fn convert(raw: &Path, out: &Path, subformat: &str) {
    qemu_img(&["convert", "-f", "raw", "-O", "vmdk", "-o", &format!("subformat={subformat}"), path(raw), path(out)]);
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every extent of `next` assembled into an image of `capacity`; checks the API's promises on the way (sizes,
/// bounds, order when `ordered`) and that every 64 KiB chunk an extent touches holds data in `want`.
fn assemble(
    capacity: u64,
    want: &[u8],
    ordered: bool,
    mut next: impl FnMut() -> storage_repo::Result<Option<(u64, Vec<u8>)>>,
) -> (Vec<u8>, usize) {
    let mut img = vec![0u8; capacity as usize];
    let mut last_end = 0;
    let mut n = 0;
    while let Some((off, data)) = next().unwrap() {
        n += 1;
        assert!(!data.is_empty() && data.len() % 512 == 0 && data.len() <= MAX_EXTENT, "extent size {}", data.len());
        let (a, b) = (off as usize, off as usize + data.len());
        assert!(b <= img.len(), "extent past the capacity");
        if ordered {
            assert!(a >= last_end, "extents out of order at {a}");
        }
        last_end = b;
        for c in (a / GRAIN)..b.div_ceil(GRAIN) {
            let chunk = &want[c * GRAIN..((c + 1) * GRAIN).min(want.len())];
            assert!(chunk.iter().any(|&x| x != 0), "an extent covers the all-zero chunk {c}");
        }
        img[a..b].copy_from_slice(&data);
    }
    (img, n)
}

fn read_file(p: &Path, want: &[u8]) -> vmdk::VmdkInfo {
    let mut r = vmdk::open(p).unwrap();
    let info = r.info().clone();
    assert_eq!(info.capacity, want.len() as u64);
    let (img, n) = assemble(info.capacity, want, true, || Ok(r.next_extent()?.map(|e| (e.offset, e.data))));
    assert!(n > 0);
    assert_same(&img, want);
    info
}

fn read_stream(r: impl Read, want: &[u8]) {
    let mut s = vmdk::stream(r).unwrap();
    assert_eq!(s.info().capacity, want.len() as u64);
    assert_eq!(s.info().create_type, "streamOptimized");
    let (img, _) = assemble(want.len() as u64, want, false, || Ok(s.next_data()?.map(|(o, d)| (o, d.to_vec()))));
    assert_same(&img, want);
}

/// A reader that returns at most 7 bytes per call.
struct Dribble<R>(R);

impl<R: Read> Read for Dribble<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(7);
        self.0.read(&mut buf[..n])
    }
}

#[test]
fn qemu_monolithic_sparse_reads_back() {
    let dir = tempdir();
    let raw = dir.path().join("a.raw");
    let want = make_raw(&raw);
    let v = dir.path().join("a.vmdk");
    convert(&raw, &v, "monolithicSparse");
    let info = read_file(&v, &want);
    assert_eq!(info.create_type, "monolithicSparse");
    assert_eq!(info.grain_size, GRAIN as u64);
    assert!(matches!(vmdk::stream(std::fs::File::open(&v).unwrap()), Err(Error::Invalid(_))));
}

#[test]
fn qemu_stream_optimized_reads_back_from_a_file_and_as_a_stream() {
    let dir = tempdir();
    let raw = dir.path().join("a.raw");
    let want = make_raw(&raw);
    let v = dir.path().join("a.vmdk");
    convert(&raw, &v, "streamOptimized");
    assert_eq!(read_file(&v, &want).create_type, "streamOptimized");
    read_stream(std::fs::File::open(&v).unwrap(), &want);
    read_stream(Dribble(std::io::BufReader::new(std::fs::File::open(&v).unwrap())), &want);
}

#[test]
fn qemu_monolithic_flat_reads_back_and_skips_holes() {
    let dir = tempdir();
    let raw = dir.path().join("a.raw");
    let want = make_raw(&raw);
    let v = dir.path().join("a.vmdk");
    convert(&raw, &v, "monolithicFlat");
    assert_eq!(read_file(&v, &want).create_type, "monolithicFlat");
}

#[test]
fn an_empty_disk_has_no_extents() {
    let dir = tempdir();
    let raw = dir.path().join("e.raw");
    std::fs::write(&raw, vec![0u8; 3 * MIB]).unwrap();
    for sub in ["monolithicSparse", "streamOptimized", "monolithicFlat"] {
        let v = dir.path().join(format!("e-{sub}.vmdk"));
        convert(&raw, &v, sub);
        let mut r = vmdk::open(&v).unwrap();
        assert_eq!(r.info().capacity, 3 * MIB as u64);
        assert!(r.next_extent().unwrap().is_none(), "{sub}");
    }
}

// ---- A hand-made streamOptimized file as VMware writes it: directory at the end, footer, end-of-stream. ----

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn sector_pad(b: &mut Vec<u8>) {
    b.resize(b.len().next_multiple_of(512), 0);
}

fn header(capacity: u64, gd_offset: u64) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..4].copy_from_slice(b"KDMV");
    h[4..8].copy_from_slice(&3u32.to_le_bytes());
    h[8..12].copy_from_slice(&(1u32 | 1 << 16 | 1 << 17).to_le_bytes());
    h[12..20].copy_from_slice(&capacity.to_le_bytes());
    h[20..28].copy_from_slice(&128u64.to_le_bytes());
    h[28..36].copy_from_slice(&1u64.to_le_bytes()); // descriptor at sector 1
    h[36..44].copy_from_slice(&2u64.to_le_bytes()); // of 2 sectors
    h[44..48].copy_from_slice(&512u32.to_le_bytes());
    h[56..64].copy_from_slice(&gd_offset.to_le_bytes());
    h[64..72].copy_from_slice(&3u64.to_le_bytes()); // grains from sector 3
    h[73..77].copy_from_slice(b"\n \r\n");
    h[77..79].copy_from_slice(&1u16.to_le_bytes());
    h
}

fn meta_marker(sectors: u64, kind: u32) -> Vec<u8> {
    let mut m = vec![0u8; 512];
    m[..8].copy_from_slice(&sectors.to_le_bytes());
    m[12..16].copy_from_slice(&kind.to_le_bytes());
    m
}

/// A VMware-style streamOptimized file of `capacity` sectors holding `grains` (LBA, uncompressed payload).
pub fn vmware_stream(capacity: u64, grains: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut f = header(capacity, u64::MAX);
    let mut d = b"# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"streamOptimized\"\n\
        RW 0 SPARSE \"x.vmdk\"\n"
        .to_vec();
    d.resize(1024, 0);
    f.extend(d);
    let n_grains = capacity.div_ceil(128);
    let n_gts = n_grains.div_ceil(512) as usize;
    let mut gts = vec![vec![0u32; 512]; n_gts];
    for (lba, payload) in grains {
        let g = (lba / 128) as usize;
        if g / 512 < n_gts {
            gts[g / 512][g % 512] = (f.len() / 512) as u32;
        }
        let z = zlib(payload);
        f.extend(lba.to_le_bytes());
        f.extend((z.len() as u32).to_le_bytes());
        f.extend(z);
        sector_pad(&mut f);
    }
    let mut gd = Vec::new();
    for gt in &gts {
        f.extend(meta_marker(4, 1));
        gd.push((f.len() / 512) as u32);
        f.extend(gt.iter().flat_map(|e| e.to_le_bytes()));
    }
    let gd_sectors = (n_gts * 4).div_ceil(512) as u64;
    f.extend(meta_marker(gd_sectors, 2));
    let gd_offset = (f.len() / 512) as u64;
    f.extend(gd.iter().flat_map(|e| e.to_le_bytes()));
    sector_pad(&mut f);
    f.extend(meta_marker(1, 3));
    f.extend(header(capacity, gd_offset));
    f.extend(meta_marker(0, 0));
    f
}

/// Grains of a hand-made file: (LBA, uncompressed payload).
type Grains = Vec<(u64, Vec<u8>)>;

fn small_grains() -> (u64, Grains, Vec<u8>) {
    let capacity = 2048 * 128 + 8; // 2048 grains and a 4 KiB one: two grain tables, a partial last grain
    let mut rng = Rng::new(9);
    let grains = vec![
        (0, rng.bytes(GRAIN)),
        (128, vec![b'x'; GRAIN]),
        (1000 * 128, rng.bytes(GRAIN)),
        (1001 * 128, vec![0u8; GRAIN]),
        (2048 * 128, rng.bytes(4096)),
    ];
    let mut want = vec![0u8; capacity as usize * 512];
    for (lba, p) in &grains {
        let at = *lba as usize * 512;
        want[at..at + p.len()].copy_from_slice(p);
    }
    (capacity, grains, want)
}

#[test]
fn a_vmware_style_stream_optimized_file_reads_back() {
    let dir = tempdir();
    let (capacity, grains, want) = small_grains();
    let bytes = vmware_stream(capacity, &grains);
    let p = dir.path().join("vmw.vmdk");
    std::fs::write(&p, &bytes).unwrap();
    let info = read_file(&p, &want);
    assert_eq!(info.create_type, "streamOptimized");
    read_stream(&bytes[..], &want);
    // Grains 0 and 1 are one extent; the zero grain is skipped.
    let mut s = vmdk::stream(&bytes[..]).unwrap();
    let offsets: Vec<_> = std::iter::from_fn(|| s.next_extent().unwrap()).map(|e| (e.offset, e.data.len())).collect();
    assert_eq!(offsets, [(0, 2 * GRAIN), (1000 * GRAIN as u64, GRAIN), (2048 * GRAIN as u64, 4096)]);
    // Without its end-of-stream marker the stream is truncated.
    let cut = &bytes[..bytes.len() - 512];
    let e = drain_stream(cut).unwrap_err();
    assert!(e.to_string().contains("end-of-stream"), "{e}");
}

fn drain_stream(bytes: &[u8]) -> storage_repo::Result<()> {
    let mut s = vmdk::stream(bytes)?;
    while s.next_data()?.is_some() {}
    Ok(())
}

fn drain_file(p: &Path) -> storage_repo::Result<()> {
    let mut r = vmdk::open(p)?;
    while r.next_data()?.is_some() {}
    Ok(())
}

#[track_caller]
fn assert_err(r: storage_repo::Result<()>, what: &str) {
    match r {
        Ok(()) => panic!("accepted; expected an error mentioning {what:?}"),
        Err(e) => assert!(e.to_string().contains(what), "{e} should mention {what:?}"),
    }
}

#[test]
fn a_grain_that_inflates_past_its_grain_is_refused() {
    let dir = tempdir();
    let (capacity, mut grains, _) = small_grains();
    grains[2].1 = vec![7u8; GRAIN + 512];
    let bytes = vmware_stream(capacity, &grains);
    assert_err(drain_stream(&bytes), "inflates past its grain");
    let p = dir.path().join("big.vmdk");
    std::fs::write(&p, &bytes).unwrap();
    assert_err(drain_file(&p), "inflates past its grain");
    // The partial last grain may not inflate past the capacity either.
    let (capacity, mut grains, _) = small_grains();
    grains[4].1 = vec![7u8; 8192];
    assert_err(drain_stream(&vmware_stream(capacity, &grains)), "inflates past its grain");
}

#[test]
fn a_grain_past_the_capacity_is_refused() {
    let (capacity, mut grains, _) = small_grains();
    grains.push((capacity + 128, vec![1u8; GRAIN]));
    assert_err(drain_stream(&vmware_stream(capacity, &grains)), "inside the capacity");
    let (capacity, mut grains, _) = small_grains();
    grains.push((5, vec![1u8; GRAIN]));
    assert_err(drain_stream(&vmware_stream(capacity, &grains)), "inside the capacity");
}

#[test]
fn bad_markers_are_refused() {
    let (capacity, grains, _) = small_grains();
    let bytes = vmware_stream(capacity, &grains);
    // The first grain table marker: 4 sectors; say 5.
    let gt_at = bytes.windows(16).position(|w| w == &meta_marker(4, 1)[..16]).unwrap();
    let mut b = bytes.clone();
    b[gt_at] = 5;
    assert_err(drain_stream(&b), "grain table marker says 5 sectors");
    let mut b = bytes.clone();
    b[gt_at + 12] = 9;
    assert_err(drain_stream(&b), "unknown marker type 9");
    // A compressed grain whose size is absurd.
    let mut b = bytes.clone();
    b[1536 + 8..1536 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_err(drain_stream(&b), "larger than a grain can be");
}

struct Qemu {
    _dir: tempfile::TempDir,
    sparse: Vec<u8>,
    stream: Vec<u8>,
    p: PathBuf,
}

/// Small qemu images (3 MiB of data in 8 MiB) and a scratch path.
fn qemu_small() -> Qemu {
    let dir = tempdir();
    let raw = dir.path().join("s.raw");
    let mut img = vec![0u8; 8 * MIB];
    img[MIB..4 * MIB].copy_from_slice(&Rng::new(3).bytes(3 * MIB));
    std::fs::write(&raw, &img).unwrap();
    let (a, b) = (dir.path().join("sp.vmdk"), dir.path().join("so.vmdk"));
    convert(&raw, &a, "monolithicSparse");
    convert(&raw, &b, "streamOptimized");
    Qemu {
        sparse: std::fs::read(&a).unwrap(),
        stream: std::fs::read(&b).unwrap(),
        p: dir.path().join("x.vmdk"),
        _dir: dir,
    }
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn le32(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize
}

/// The file offset of the first grain table's entries and the index of its first allocated entry.
fn first_gte(b: &[u8]) -> (usize, usize) {
    let gd = le64(b, 56) as usize * 512;
    let gt = le32(b, gd) * 512;
    let j = (0..512).find(|&j| le32(b, gt + 4 * j) > 1).unwrap();
    (gt, j)
}

#[test]
fn hostile_sparse_files_are_refused() {
    let q = qemu_small();
    let write = |b: &[u8]| std::fs::write(&q.p, b).unwrap();
    // Truncations: in the header, in the metadata, in the grains.
    for cut in [0, 100, 511, 700, 20 * 1024, q.sparse.len() / 2, q.sparse.len() - 512] {
        write(&q.sparse[..cut]);
        assert!(drain_file(&q.p).is_err(), "truncated at {cut}");
    }
    let edit = |f: &dyn Fn(&mut Vec<u8>), what: &str| {
        let mut b = q.sparse.clone();
        f(&mut b);
        write(&b);
        assert_err(drain_file(&q.p), what);
    };
    edit(&|b| b[56..64].copy_from_slice(&(1u64 << 40).to_le_bytes()), "grain directory");
    edit(&|b| b[12..20].copy_from_slice(&(1u64 << 50).to_le_bytes()), "capacity");
    edit(&|b| b[20..28].copy_from_slice(&100u64.to_le_bytes()), "grain size");
    edit(&|b| b[4] = 9, "version");
    edit(&|b| b[0] = b'X', "not a VMDK");
    // The grain directory's first entry into the descriptor; past the end of the file.
    edit(
        &|b| {
            let gd = le64(b, 56) as usize * 512;
            b[gd..gd + 4].copy_from_slice(&2u32.to_le_bytes());
        },
        "overlaps",
    );
    edit(
        &|b| {
            let gd = le64(b, 56) as usize * 512;
            b[gd..gd + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        },
        "outside the file",
    );
    // A grain table entry into the header's descriptor, into the grain directory, past the end.
    for (target, what) in [(3u32, "overlaps"), (0, "overlaps"), (u32::MAX - 200, "outside the file")] {
        edit(
            &|b| {
                let (gt, j) = first_gte(b);
                let t = if target == 0 { le64(b, 56) as u32 } else { target };
                b[gt + 4 * j..gt + 4 * j + 4].copy_from_slice(&t.to_le_bytes());
            },
            what,
        );
    }
    // A grain table entry into another grain table.
    edit(
        &|b| {
            let (gt, j) = first_gte(b);
            let t = (gt / 512) as u32 + 1;
            b[gt + 4 * j..gt + 4 * j + 4].copy_from_slice(&t.to_le_bytes());
        },
        "overlaps",
    );
    // Every entry of a grain table pointing at the same grain: more data than the file holds.
    edit(
        &|b| {
            let (gt, j) = first_gte(b);
            let t = le32(b, gt + 4 * j) as u32;
            for k in 0..512 {
                b[gt + 4 * k..gt + 4 * k + 4].copy_from_slice(&t.to_le_bytes());
            }
        },
        "same data more than once",
    );
    // A descriptor that is not text, or names an unknown type.
    edit(&|b| b[512..520].copy_from_slice(b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8"), "UTF-8");
    edit(
        &|b| {
            let at = b.windows(16).position(|w| w == b"monolithicSparse").unwrap();
            b[at..at + 16].copy_from_slice(b"monolithicSparsX");
        },
        "unknown createType",
    );
}

#[test]
fn hostile_stream_optimized_files_are_refused() {
    let q = qemu_small();
    let write = |b: &[u8]| std::fs::write(&q.p, b).unwrap();
    // The first grain's marker says another LBA; its zlib stream is damaged; its size runs past the end.
    let (gt, j) = first_gte(&q.stream);
    let g = le32(&q.stream, gt + 4 * j) * 512;
    let mut b = q.stream.clone();
    let lba = le64(&b, g) + 128;
    b[g..g + 8].copy_from_slice(&lba.to_le_bytes());
    write(&b);
    assert_err(drain_file(&q.p), "says LBA");
    let mut b = q.stream.clone();
    b[g + 12..g + 20].fill(0x55);
    write(&b);
    assert_err(drain_file(&q.p), "damaged");
    assert_err(drain_stream(&b), "damaged");
    let mut b = q.stream.clone();
    b.truncate(g + 1024);
    write(&b);
    assert_err(drain_file(&q.p), "outside the file");
    assert_err(drain_stream(&b), "ends in the middle");
    // A truncated stream header or descriptor.
    for cut in [0, 100, 600] {
        assert!(drain_stream(&q.stream[..cut]).is_err());
    }
    // The footer of a VMware-style file pointing its directory past the end.
    let (capacity, grains, _) = small_grains();
    let mut b = vmware_stream(capacity, &grains);
    let n = b.len();
    b[n - 1024 + 56..n - 1024 + 64].copy_from_slice(&(1u64 << 33).to_le_bytes());
    write(&b);
    assert_err(drain_file(&q.p), "grain directory");
    let mut b = vmware_stream(capacity, &grains);
    b[n - 1024 + 12] ^= 1;
    write(&b);
    assert_err(drain_file(&q.p), "footer disagrees");
}

#[test]
fn a_descriptor_naming_another_file_is_refused() {
    let dir = tempdir();
    std::fs::write(dir.path().join("data"), vec![1u8; 65536]).unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/data"), vec![1u8; 65536]).unwrap();
    let p = dir.path().join("d.vmdk");
    let desc = |extent: &str| {
        format!(
            "# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\n{extent}\nddb.adapterType = \"ide\"\n"
        )
    };
    for name in ["../etc/passwd", "/etc/passwd", "sub/data", "..", "a\\b"] {
        std::fs::write(&p, desc(&format!("RW 128 FLAT \"{name}\" 0"))).unwrap();
        let e = vmdk::open(&p).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("names another file"), "{e}");
    }
    // The named file must hold the extent, and only one extent is read.
    for (extent, what) in [
        ("RW 129 FLAT \"data\" 0", "shorter than the descriptor says"),
        ("RW 128 FLAT \"data\" 1", "shorter than the descriptor says"),
        ("RW 128 FLAT \"data\" 18446744073709551615", "shorter than the descriptor says"),
        ("RW 18446744073709551615 FLAT \"data\" 0", "larger than"),
        ("RW 128 FLAT \"data\" 0\nRW 128 FLAT \"data\" 0", "exactly one extent"),
        ("RW 128 SPARSE \"data\"", "not FLAT"),
        ("RW 128 FLAT \"missing\" 0", "missing"),
    ] {
        std::fs::write(&p, desc(extent)).unwrap();
        assert_err(drain_file(&p), what);
    }
    std::fs::write(&p, desc("RW 128 FLAT \"data\" 0")).unwrap();
    let mut r = vmdk::open(&p).unwrap();
    assert_eq!(r.next_extent().unwrap().unwrap().data, vec![1u8; 65536]);
    assert!(r.next_extent().unwrap().is_none());
    // Other multi-file types are refused as unsupported.
    std::fs::write(&p, desc("RW 128 SPARSE \"data\"").replace("monolithicFlat", "twoGbMaxExtentSparse")).unwrap();
    assert!(matches!(vmdk::open(&p), Err(Error::Invalid(_))));
}
