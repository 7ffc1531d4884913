//! The 512-byte hard-disk footer (big-endian), its checksum, blktap's CHS geometry and VHD timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use super::{BLOCK_SIZE, DiskType, SECTOR};

pub(crate) const FOOTER_SIZE: usize = 512;
pub(crate) const COOKIE: &[u8; 8] = b"conectix";
/// Feature bit 1 ("reserved") must always be set; bit 0 is "temporary".
pub(crate) const FEATURES_RESERVED: u32 = 0x2;
pub(crate) const FEATURES_TEMPORARY: u32 = 0x1;
pub(crate) const FILE_FORMAT_VERSION: u32 = 0x0001_0000;
/// blktap's creator version 1.3 (`VHD_CURRENT_VERSION`).
pub(crate) const TAP_VERSION: u32 = 0x0001_0003;
/// The first creator version whose batmap blktap trusts.
pub(crate) const TAP_VERSION_BATMAP: u32 = 0x0001_0002;
pub(crate) const TAP_CREATOR: [u8; 4] = *b"tap\0";
/// Seconds between the Unix epoch and the VHD epoch (2000-01-01 00:00:00 UTC).
pub(crate) const VHD_EPOCH: u64 = 946_684_800;

pub(crate) const TYPE_FIXED: u32 = 2;
pub(crate) const TYPE_DYNAMIC: u32 = 3;
pub(crate) const TYPE_DIFF: u32 = 4;

/// A decoded footer. `checksum` is the stored value; [`Footer::encode`] recomputes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Footer {
    pub features: u32,
    pub version: u32,
    pub data_offset: u64,
    pub timestamp: u32,
    pub creator_app: [u8; 4],
    pub creator_version: u32,
    pub creator_os: u32,
    pub original_size: u64,
    pub current_size: u64,
    pub geometry: u32,
    pub disk_type: u32,
    pub checksum: u32,
    pub uuid: Uuid,
    pub saved_state: u8,
    pub hidden: u8,
    /// True if bytes 86..512 are not all zero (vhd-util check refuses that).
    pub reserved_dirty: bool,
}

pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// One's complement of the byte sum of `bytes`, skipping the 4-byte checksum field at `skip`.
pub(crate) fn checksum(bytes: &[u8], skip: usize) -> u32 {
    let mut sum: u32 = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !(skip..skip + 4).contains(&i) {
            sum = sum.wrapping_add(u32::from(b));
        }
    }
    !sum
}

impl Footer {
    /// A fresh blktap footer (creator `tap` 1.3, OS 0, geometry from [`chs`]).
    pub fn new(disk_type: DiskType, size: u64, uuid: Uuid) -> Footer {
        Footer {
            features: FEATURES_RESERVED,
            version: FILE_FORMAT_VERSION,
            data_offset: if disk_type == DiskType::Fixed { u64::MAX } else { SECTOR },
            timestamp: vhd_time(SystemTime::now()),
            creator_app: TAP_CREATOR,
            creator_version: TAP_VERSION,
            creator_os: 0,
            original_size: size,
            current_size: size,
            geometry: chs(size),
            disk_type: match disk_type {
                DiskType::Fixed => TYPE_FIXED,
                DiskType::Dynamic => TYPE_DYNAMIC,
                DiskType::Differencing => TYPE_DIFF,
            },
            checksum: 0,
            uuid,
            saved_state: 0,
            hidden: 0,
            reserved_dirty: false,
        }
    }

    /// Decodes a footer, checking only the cookie and the checksum (the rest is the caller's policy).
    pub fn decode(b: &[u8; FOOTER_SIZE]) -> Result<Footer, &'static str> {
        if &b[0..8] != COOKIE {
            return Err("bad footer cookie (not \"conectix\")");
        }
        let stored = be32(b, 64);
        if checksum(b, 64) != stored && !legacy_hidden(b, stored) {
            return Err("bad footer checksum");
        }
        let mut creator_app = [0u8; 4];
        creator_app.copy_from_slice(&b[28..32]);
        let mut id = [0u8; 16];
        id.copy_from_slice(&b[68..84]);
        Ok(Footer {
            features: be32(b, 8),
            version: be32(b, 12),
            data_offset: be64(b, 16),
            timestamp: be32(b, 24),
            creator_app,
            creator_version: be32(b, 32),
            creator_os: be32(b, 36),
            original_size: be64(b, 40),
            current_size: be64(b, 48),
            geometry: be32(b, 56),
            disk_type: be32(b, 60),
            checksum: stored,
            uuid: Uuid::from_bytes(id),
            saved_state: b[84],
            hidden: b[85],
            reserved_dirty: b[86..].iter().any(|&x| x != 0),
        })
    }

    /// Encodes the footer with a fresh checksum (reserved bytes zero).
    pub fn encode(&self) -> [u8; FOOTER_SIZE] {
        let mut b = [0u8; FOOTER_SIZE];
        b[0..8].copy_from_slice(COOKIE);
        b[8..12].copy_from_slice(&self.features.to_be_bytes());
        b[12..16].copy_from_slice(&self.version.to_be_bytes());
        b[16..24].copy_from_slice(&self.data_offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.timestamp.to_be_bytes());
        b[28..32].copy_from_slice(&self.creator_app);
        b[32..36].copy_from_slice(&self.creator_version.to_be_bytes());
        b[36..40].copy_from_slice(&self.creator_os.to_be_bytes());
        b[40..48].copy_from_slice(&self.original_size.to_be_bytes());
        b[48..56].copy_from_slice(&self.current_size.to_be_bytes());
        b[56..60].copy_from_slice(&self.geometry.to_be_bytes());
        b[60..64].copy_from_slice(&self.disk_type.to_be_bytes());
        b[68..84].copy_from_slice(self.uuid.as_bytes());
        b[84] = self.saved_state;
        b[85] = self.hidden;
        let sum = checksum(&b, 64);
        b[64..68].copy_from_slice(&sum.to_be_bytes());
        b
    }

    pub fn kind(&self) -> Option<DiskType> {
        match self.disk_type {
            TYPE_FIXED => Some(DiskType::Fixed),
            TYPE_DYNAMIC => Some(DiskType::Dynamic),
            TYPE_DIFF => Some(DiskType::Differencing),
            _ => None,
        }
    }

    pub fn is_tap(&self) -> bool {
        self.creator_app[0..3] == *b"tap"
    }

    /// blktap's `vhd_has_batmap` for files we accept: a `tap` creator of version 1.2 or later.
    pub fn has_batmap(&self) -> bool {
        self.is_tap() && self.creator_version >= TAP_VERSION_BATMAP && self.disk_type != TYPE_FIXED
    }
}

/// Early td-util set the hidden byte without updating the checksum; blktap accepts such footers from `tap`
/// creators of version 0.1 and 1.1 if the checksum matches with the byte cleared.
fn legacy_hidden(b: &[u8; FOOTER_SIZE], stored: u32) -> bool {
    let version = be32(b, 32);
    if b[85] == 0 || b[28..31] != *b"tap" || (version != 0x0000_0001 && version != 0x0001_0001) {
        return false;
    }
    let mut copy = *b;
    copy[85] = 0;
    checksum(&copy, 64) == stored
}

/// Seconds since 2000-01-01 UTC, as a VHD stores times (saturating; before 2000 is 0).
pub(crate) fn vhd_time(t: SystemTime) -> u32 {
    let unix = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    u32::try_from(unix.saturating_sub(VHD_EPOCH)).unwrap_or(u32::MAX)
}

/// blktap's `vhd_chs` (the spec's appendix algorithm): cylinders << 16 | heads << 8 | sectors per track. It can
/// cover less than `size` (4 GiB gives 8322/16/63).
pub(crate) fn chs(size: u64) -> u32 {
    let mut secs = size.div_ceil(SECTOR).max(1);
    secs = secs.min(65535 * 16 * 255);
    let (spt, heads, cth);
    if secs >= 65535 * 16 * 63 {
        spt = 255;
        heads = 16;
        cth = secs / spt;
    } else {
        let mut s = 17;
        let mut c = secs / s;
        let mut h = c.div_ceil(1024);
        if h < 4 {
            h = 4;
        }
        if c >= h * 1024 || h > 16 {
            s = 31;
            c = secs / s;
            h = 16;
        }
        if c >= h * 1024 {
            s = 63;
            c = secs / s;
            h = 16;
        }
        spt = s;
        heads = h;
        cth = c;
    }
    let cylinders = cth / heads;
    ((cylinders as u32) << 16) | ((heads as u32) << 8) | spt as u32
}

/// Rounds a requested size up to whole 2 MiB blocks, as `vhd-util create` does.
pub(crate) fn round_size(size: u64) -> Option<u64> {
    size.checked_add(BLOCK_SIZE - 1).map(|s| s / BLOCK_SIZE * BLOCK_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A footer as `vhd-util create -s 4096` writes it, field by field.
    #[rustfmt::skip]
    const FOOTER_4G: [u8; 88] = [
        b'c', b'o', b'n', b'e', b'c', b't', b'i', b'x', // 0   cookie "conectix"
        0x00, 0x00, 0x00, 0x02,                         // 8   features: reserved bit set
        0x00, 0x01, 0x00, 0x00,                         // 12  file format version 1.0
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, // 16  data offset 512 (the dynamic header)
        0x30, 0xb1, 0x4a, 0x00,                         // 24  timestamp, seconds since 2000-01-01
        b't', b'a', b'p', 0x00,                         // 28  creator application "tap\0"
        0x00, 0x01, 0x00, 0x03,                         // 32  creator version 1.3
        0x00, 0x00, 0x00, 0x00,                         // 36  creator OS 0
        0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, // 40  original size 4 GiB
        0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, // 48  current size 4 GiB
        0x20, 0x82, 0x10, 0x3f,                         // 56  geometry 8322 cylinders, 16 heads, 63 sectors
        0x00, 0x00, 0x00, 0x03,                         // 60  type 3: dynamic
        0x00, 0x00, 0x00, 0x00,                         // 64  checksum (filled in by the test)
        0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, // 68  UUID
        0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x00, //     (16 bytes)
        0x00,                                           // 84  saved state: no
        0x01,                                           // 85  blktap hidden flag: hidden
        0x00, 0x00,                                     // 86  reserved, zero up to 512
    ];

    fn fixture() -> [u8; FOOTER_SIZE] {
        let mut b = [0u8; FOOTER_SIZE];
        b[..FOOTER_4G.len()].copy_from_slice(&FOOTER_4G);
        let sum = checksum(&b, 64);
        b[64..68].copy_from_slice(&sum.to_be_bytes());
        b
    }

    #[test]
    fn decodes_and_reencodes_the_fixture() {
        let b = fixture();
        let f = Footer::decode(&b).unwrap();
        assert_eq!(f.features, FEATURES_RESERVED);
        assert_eq!(f.version, FILE_FORMAT_VERSION);
        assert_eq!(f.data_offset, 512);
        assert_eq!(f.creator_app, TAP_CREATOR);
        assert_eq!(f.creator_version, TAP_VERSION);
        assert_eq!(f.current_size, 4 << 30);
        assert_eq!(f.geometry, chs(4 << 30));
        assert_eq!(f.kind(), Some(DiskType::Dynamic));
        assert_eq!(f.uuid.to_string(), "11223344-5566-7788-99aa-bbccddeeff00");
        assert_eq!(f.hidden, 1);
        assert!(f.has_batmap());
        assert_eq!(f.encode(), b);
    }

    #[test]
    fn checksum_is_the_complement_of_the_byte_sum() {
        let b = fixture();
        let sum: u32 = b.iter().enumerate().filter(|(i, _)| !(64..68).contains(i)).map(|(_, &x)| u32::from(x)).sum();
        assert_eq!(be32(&b, 64), !sum);
    }

    #[test]
    fn rejects_bad_cookie_and_checksum() {
        let mut b = fixture();
        b[85] = 0;
        assert_eq!(Footer::decode(&b), Err("bad footer checksum"));
        let mut b = fixture();
        b[0] = b'C';
        assert!(Footer::decode(&b).is_err());
    }

    #[test]
    fn accepts_early_td_util_hidden_footers() {
        let mut b = fixture();
        b[32..36].copy_from_slice(&0x0001_0001u32.to_be_bytes());
        b[85] = 0;
        let sum = checksum(&b, 64);
        b[64..68].copy_from_slice(&sum.to_be_bytes());
        b[85] = 1; // hidden set afterwards, checksum left alone
        assert_eq!(Footer::decode(&b).unwrap().hidden, 1);
        b[32..36].copy_from_slice(&TAP_VERSION.to_be_bytes());
        b[85] = 0;
        let sum = checksum(&b, 64);
        b[64..68].copy_from_slice(&sum.to_be_bytes());
        b[85] = 1;
        assert!(Footer::decode(&b).is_err(), "only versions 0.1 and 1.1 did that");
    }

    #[test]
    fn geometry_matches_vhd_util() {
        // 4 GiB: 8322/16/63 = 4 294 950 912 bytes, less than the size.
        assert_eq!(chs(4 << 30), (8322 << 16) | (16 << 8) | 63);
        // 2 MiB: 4096 sectors at 17 spt -> 240 cylinders, 4 heads (minimum).
        assert_eq!(chs(2 << 20), (60 << 16) | (4 << 8) | 17);
        // Capped at 65535/16/255.
        assert_eq!(chs(super::super::MAX_SIZE), (65535 << 16) | (16 << 8) | 255);
        assert_eq!(chs(127 << 30), (65278 << 16) | (16 << 8) | 255);
    }

    #[test]
    fn sizes_round_up_to_2_mib() {
        assert_eq!(round_size(1), Some(2 << 20));
        assert_eq!(round_size(2 << 20), Some(2 << 20));
        assert_eq!(round_size((2 << 20) + 1), Some(4 << 20));
        assert_eq!(round_size(4 << 30), Some(4 << 30));
        assert_eq!(round_size(u64::MAX), None);
    }

    #[test]
    fn vhd_time_counts_from_2000() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(VHD_EPOCH + 42);
        assert_eq!(vhd_time(t), 42);
        assert_eq!(vhd_time(UNIX_EPOCH), 0);
    }
}
