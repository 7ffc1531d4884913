//! The 512-byte sparse extent header (`KDMV`, little-endian) and the 512-byte markers of streamOptimized files.
//! Decoding checks every field whose value is used later, so the readers can trust a decoded [`SparseHeader`].

use crate::formats::vhd::MAX_SIZE;

pub(crate) const SECTOR: u64 = 512;
pub(crate) const MAGIC: &[u8; 4] = b"KDMV";
/// The newline-detection flag: the four line-ending bytes at 73 are valid.
pub(crate) const FLAG_NEWLINE_TEST: u32 = 1;
/// A redundant grain directory is kept at `rgd_offset`.
pub(crate) const FLAG_REDUNDANT_GT: u32 = 1 << 1;
/// Grains are deflate-compressed (streamOptimized).
pub(crate) const FLAG_COMPRESSED: u32 = 1 << 16;
/// Grains and metadata carry markers (streamOptimized).
pub(crate) const FLAG_MARKERS: u32 = 1 << 17;
/// `gd_offset` of a streamOptimized header whose grain directory is at the end (see the footer).
pub(crate) const GD_AT_END: u64 = u64::MAX;
/// The largest grain we accept, sectors (VMware and qemu write 128, i.e. 64 KiB).
pub(crate) const MAX_GRAIN_SECTORS: u64 = 2048;
/// The largest grain table, entries (VMware and qemu write 512).
pub(crate) const MAX_GTES_PER_GT: u32 = 512;
/// The largest embedded descriptor we read, bytes.
pub(crate) const MAX_DESCRIPTOR: u64 = 64 << 10;

/// Marker types of streamOptimized files (the u32 at 12 of a marker whose size field is 0).
pub(crate) const MARKER_EOS: u32 = 0;
pub(crate) const MARKER_GT: u32 = 1;
pub(crate) const MARKER_GD: u32 = 2;
pub(crate) const MARKER_FOOTER: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SparseHeader {
    pub version: u32,
    pub flags: u32,
    /// Sectors.
    pub capacity: u64,
    /// Sectors; a power of two from 1 to [`MAX_GRAIN_SECTORS`].
    pub grain_size: u64,
    /// Sectors (0 = no embedded descriptor).
    pub descriptor_offset: u64,
    /// Sectors; at most [`MAX_DESCRIPTOR`] bytes.
    pub descriptor_size: u64,
    pub gtes_per_gt: u32,
    /// Sectors.
    pub rgd_offset: u64,
    /// Sectors, or [`GD_AT_END`].
    pub gd_offset: u64,
    /// Sectors: where the grains may start.
    pub overhead: u64,
    pub compress_algorithm: u16,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from(le32(b, at)) | (u64::from(le32(b, at + 4)) << 32)
}

impl SparseHeader {
    /// Decodes and validates a header; `Err` is a sentence naming the problem.
    pub fn decode(b: &[u8; 512]) -> Result<SparseHeader, String> {
        if &b[..4] != MAGIC {
            return Err("no KDMV magic: not a sparse VMDK extent".into());
        }
        let h = SparseHeader {
            version: le32(b, 4),
            flags: le32(b, 8),
            capacity: le64(b, 12),
            grain_size: le64(b, 20),
            descriptor_offset: le64(b, 28),
            descriptor_size: le64(b, 36),
            gtes_per_gt: le32(b, 44),
            rgd_offset: le64(b, 48),
            gd_offset: le64(b, 56),
            overhead: le64(b, 64),
            compress_algorithm: u16::from_le_bytes([b[77], b[78]]),
        };
        if !(1..=3).contains(&h.version) {
            return Err(format!("unsupported sparse header version {}", h.version));
        }
        if h.capacity > MAX_SIZE / SECTOR {
            return Err(format!("capacity of {} sectors is larger than {} GiB", h.capacity, MAX_SIZE >> 30));
        }
        if !h.grain_size.is_power_of_two() || h.grain_size > MAX_GRAIN_SECTORS {
            return Err(format!(
                "grain size of {} sectors is not a power of two up to {MAX_GRAIN_SECTORS}",
                h.grain_size
            ));
        }
        if h.gtes_per_gt == 0 || h.gtes_per_gt > MAX_GTES_PER_GT {
            return Err(format!("{} entries per grain table (at most {MAX_GTES_PER_GT})", h.gtes_per_gt));
        }
        if h.descriptor_size > MAX_DESCRIPTOR / SECTOR {
            return Err(format!("embedded descriptor of {} sectors is larger than 64 KiB", h.descriptor_size));
        }
        if h.descriptor_size > 0 && h.descriptor_offset == 0 {
            return Err("the embedded descriptor overlaps the header".into());
        }
        if h.flags & FLAG_NEWLINE_TEST != 0 && &b[73..77] != b"\n \r\n" {
            return Err("the line-ending bytes are damaged (a file transferred in text mode?)".into());
        }
        if h.compressed() {
            if h.compress_algorithm != 1 {
                return Err(format!("unknown compression algorithm {}", h.compress_algorithm));
            }
            if h.flags & FLAG_MARKERS == 0 {
                return Err("compressed grains without markers are not supported".into());
            }
        }
        Ok(h)
    }

    pub fn compressed(&self) -> bool {
        self.flags & FLAG_COMPRESSED != 0
    }

    /// Bytes of one grain.
    pub fn grain_bytes(&self) -> u64 {
        self.grain_size * SECTOR
    }

    /// Grains covering the capacity.
    pub fn grains(&self) -> u64 {
        self.capacity.div_ceil(self.grain_size)
    }

    /// Grain directory entries (= grain tables) covering the capacity.
    pub fn gd_entries(&self) -> u64 {
        self.grains().div_ceil(u64::from(self.gtes_per_gt))
    }

    /// Sectors of one grain table, rounded up.
    pub fn gt_sectors(&self) -> u64 {
        (u64::from(self.gtes_per_gt) * 4).div_ceil(SECTOR)
    }

    /// Sectors of the grain directory, rounded up.
    pub fn gd_sectors(&self) -> u64 {
        (self.gd_entries() * 4).div_ceil(SECTOR)
    }

    /// The largest compressed grain accepted, bytes: the grain plus zlib's worst-case overhead, generously.
    pub fn max_compressed(&self) -> u64 {
        self.grain_bytes() + self.grain_bytes() / 256 + 1024
    }
}

/// A metadata marker `{ u64 value (sectors), u32 0, u32 type }` or a grain marker `{ u64 lba, u32 size, data… }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Marker {
    /// A compressed grain at `lba` (sectors) whose zlib stream of `size` bytes follows the 12-byte marker.
    Grain { lba: u64, size: u32 },
    /// A metadata marker; `sectors` of metadata follow its sector.
    Meta { sectors: u64, kind: u32 },
}

impl Marker {
    pub fn decode(b: &[u8]) -> Marker {
        let value = le64(b, 0);
        let size = le32(b, 8);
        if size == 0 { Marker::Meta { sectors: value, kind: le32(b, 12) } } else { Marker::Grain { lba: value, size } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header `qemu-img convert -O vmdk` (7.2) writes for a 64 MiB monolithicSparse disk.
    #[rustfmt::skip]
    const SPARSE_64M: [u8; 80] = [
        b'K', b'D', b'M', b'V',                         // 0   magic "KDMV"
        0x01, 0x00, 0x00, 0x00,                         // 4   version 1
        0x03, 0x00, 0x00, 0x00,                         // 8   flags: newline test, redundant GT
        0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, // 12  capacity 131072 sectors (64 MiB)
        0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 20  grain size 128 sectors (64 KiB)
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 28  descriptor at sector 1
        0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 36  descriptor size 20 sectors
        0x00, 0x02, 0x00, 0x00,                         // 44  512 entries per grain table
        0x15, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 48  redundant GD at sector 21
        0x1e, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 56  GD at sector 30
        0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 64  overhead 128 sectors: grains start at 64 KiB
        0x00,                                           // 72  unclean shutdown: no
        b'\n', b' ', b'\r', b'\n',                      // 73  line-ending test bytes
        0x00, 0x00,                                     // 77  compression: none
        0x00,                                           // 79  padding to 512 bytes follows
    ];

    fn fixture() -> [u8; 512] {
        let mut b = [0u8; 512];
        b[..SPARSE_64M.len()].copy_from_slice(&SPARSE_64M);
        b
    }

    #[test]
    fn decodes_the_qemu_fixture() {
        let h = SparseHeader::decode(&fixture()).unwrap();
        assert_eq!(h.version, 1);
        assert_eq!(h.capacity, 131072);
        assert_eq!(h.grain_bytes(), 64 << 10);
        assert_eq!((h.descriptor_offset, h.descriptor_size), (1, 20));
        assert_eq!((h.rgd_offset, h.gd_offset, h.overhead), (21, 30, 128));
        assert_eq!(h.gd_entries(), 2); // 1024 grains, 512 per table
        assert_eq!((h.gd_sectors(), h.gt_sectors()), (1, 4));
        assert!(!h.compressed());
    }

    #[test]
    fn refuses_bad_fields() {
        let cases: [(usize, &[u8], &str); 8] = [
            (0, b"KDMW", "magic"),
            (4, &[4, 0, 0, 0], "version"),
            (12, &[0, 0, 0, 0, 0, 0, 0, 1], "capacity"),
            (20, &[96, 0, 0, 0, 0, 0, 0, 0], "grain size"),
            (20, &[0, 0x10, 0, 0, 0, 0, 0, 0], "grain size"),
            (44, &[1, 2, 0, 0], "entries per grain table"),
            (36, &[0x81, 0, 0, 0, 0, 0, 0, 0], "descriptor"),
            (73, b"\r\r\r\n", "line-ending"),
        ];
        for (at, bytes, what) in cases {
            let mut b = fixture();
            b[at..at + bytes.len()].copy_from_slice(bytes);
            let e = SparseHeader::decode(&b).unwrap_err();
            assert!(e.contains(what), "{e:?} should mention {what}");
        }
    }

    #[test]
    fn compressed_needs_deflate_and_markers() {
        let mut b = fixture();
        b[8..12].copy_from_slice(&(FLAG_COMPRESSED | FLAG_NEWLINE_TEST).to_le_bytes());
        b[77] = 1;
        assert!(SparseHeader::decode(&b).unwrap_err().contains("markers"));
        b[8..12].copy_from_slice(&(FLAG_COMPRESSED | FLAG_MARKERS).to_le_bytes());
        b[77] = 2;
        assert!(SparseHeader::decode(&b).unwrap_err().contains("compression"));
        b[77] = 1;
        assert!(SparseHeader::decode(&b).unwrap().compressed());
    }

    #[test]
    fn decodes_markers() {
        #[rustfmt::skip]
        let grain = [
            0x00, 0x28, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 0  LBA 10240 (5 MiB)
            0x1a, 0x00, 0x01, 0x00,                         // 8  65562 bytes of zlib stream follow
            0x78, 0x9c,                                     // 12 zlib header
        ];
        assert_eq!(Marker::decode(&grain), Marker::Grain { lba: 10240, size: 65562 });
        #[rustfmt::skip]
        let footer = [
            0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 0  one sector follows
            0x00, 0x00, 0x00, 0x00,                         // 8  size 0: a metadata marker
            0x03, 0x00, 0x00, 0x00,                         // 12 type 3: footer
        ];
        assert_eq!(Marker::decode(&footer), Marker::Meta { sectors: 1, kind: MARKER_FOOTER });
    }
}
