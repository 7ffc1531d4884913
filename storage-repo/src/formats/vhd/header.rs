//! The 1024-byte dynamic-disk header (`cxsparse`, big-endian) with its eight parent-locator entries and the
//! parent's unicode name (UTF-16BE, as blktap writes it).

use uuid::Uuid;

use super::footer::{be32, be64, checksum};

pub(crate) const HEADER_SIZE: usize = 1024;
pub(crate) const COOKIE: &[u8; 8] = b"cxsparse";
pub(crate) const HEADER_VERSION: u32 = 0x0001_0000;
pub(crate) const LOCATORS: usize = 8;
const NAME_AT: usize = 64;
const NAME_LEN: usize = 512;
const LOC_AT: usize = 576;

pub(crate) const PLAT_NONE: u32 = 0;
pub(crate) const PLAT_WI2R: u32 = 0x5769_3272;
pub(crate) const PLAT_WI2K: u32 = 0x5769_326B;
pub(crate) const PLAT_W2RU: u32 = 0x5732_7275;
pub(crate) const PLAT_W2KU: u32 = 0x5732_6B75;
pub(crate) const PLAT_MAC: u32 = 0x4D61_6320;
pub(crate) const PLAT_MACX: u32 = 0x4D61_6358;

/// One parent-locator entry (24 bytes at 576 + 24 * i).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Locator {
    pub code: u32,
    /// blktap and Windows write bytes here; the spec says sectors. See [`Locator::space_bytes`].
    pub data_space: u32,
    pub data_len: u32,
    pub reserved: u32,
    pub data_offset: u64,
}

impl Locator {
    /// blktap's `vhd_parent_locator_size`: under 512 it is sectors, a multiple of 512 is bytes, anything else is
    /// invalid (`None`).
    pub fn space_bytes(&self) -> Option<u64> {
        if self.data_space < 512 {
            Some(u64::from(self.data_space) * 512)
        } else if self.data_space.is_multiple_of(512) {
            Some(u64::from(self.data_space))
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub data_offset: u64,
    pub table_offset: u64,
    pub version: u32,
    pub max_bat_entries: u32,
    pub block_size: u32,
    pub checksum: u32,
    pub parent_uuid: Uuid,
    pub parent_timestamp: u32,
    pub reserved1: u32,
    pub parent_name: [u8; NAME_LEN],
    pub locators: [Locator; LOCATORS],
    /// True if bytes 768..1024 are not all zero.
    pub reserved2_dirty: bool,
}

impl Header {
    pub fn new(table_offset: u64, max_bat_entries: u32, block_size: u32) -> Header {
        Header {
            data_offset: u64::MAX,
            table_offset,
            version: HEADER_VERSION,
            max_bat_entries,
            block_size,
            checksum: 0,
            parent_uuid: Uuid::nil(),
            parent_timestamp: 0,
            reserved1: 0,
            parent_name: [0; NAME_LEN],
            locators: [Locator::default(); LOCATORS],
            reserved2_dirty: false,
        }
    }

    pub fn decode(b: &[u8; HEADER_SIZE]) -> Result<Header, &'static str> {
        if &b[0..8] != COOKIE {
            return Err("bad dynamic header cookie (not \"cxsparse\")");
        }
        let stored = be32(b, 36);
        if checksum(b, 36) != stored {
            return Err("bad dynamic header checksum");
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&b[40..56]);
        let mut parent_name = [0u8; NAME_LEN];
        parent_name.copy_from_slice(&b[NAME_AT..NAME_AT + NAME_LEN]);
        let mut locators = [Locator::default(); LOCATORS];
        for (i, l) in locators.iter_mut().enumerate() {
            let at = LOC_AT + 24 * i;
            *l = Locator {
                code: be32(b, at),
                data_space: be32(b, at + 4),
                data_len: be32(b, at + 8),
                reserved: be32(b, at + 12),
                data_offset: be64(b, at + 16),
            };
        }
        Ok(Header {
            data_offset: be64(b, 8),
            table_offset: be64(b, 16),
            version: be32(b, 24),
            max_bat_entries: be32(b, 28),
            block_size: be32(b, 32),
            checksum: stored,
            parent_uuid: Uuid::from_bytes(id),
            parent_timestamp: be32(b, 56),
            reserved1: be32(b, 60),
            parent_name,
            locators,
            reserved2_dirty: b[768..].iter().any(|&x| x != 0),
        })
    }

    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..8].copy_from_slice(COOKIE);
        b[8..16].copy_from_slice(&self.data_offset.to_be_bytes());
        b[16..24].copy_from_slice(&self.table_offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.version.to_be_bytes());
        b[28..32].copy_from_slice(&self.max_bat_entries.to_be_bytes());
        b[32..36].copy_from_slice(&self.block_size.to_be_bytes());
        b[40..56].copy_from_slice(self.parent_uuid.as_bytes());
        b[56..60].copy_from_slice(&self.parent_timestamp.to_be_bytes());
        b[60..64].copy_from_slice(&self.reserved1.to_be_bytes());
        b[NAME_AT..NAME_AT + NAME_LEN].copy_from_slice(&self.parent_name);
        for (i, l) in self.locators.iter().enumerate() {
            let at = LOC_AT + 24 * i;
            b[at..at + 4].copy_from_slice(&l.code.to_be_bytes());
            b[at + 4..at + 8].copy_from_slice(&l.data_space.to_be_bytes());
            b[at + 8..at + 12].copy_from_slice(&l.data_len.to_be_bytes());
            b[at + 12..at + 16].copy_from_slice(&l.reserved.to_be_bytes());
            b[at + 16..at + 24].copy_from_slice(&l.data_offset.to_be_bytes());
        }
        let sum = checksum(&b, 36);
        b[36..40].copy_from_slice(&sum.to_be_bytes());
        b
    }

    /// Stores `name` as UTF-16BE in the 512-byte parent-name field. `None` if it does not fit.
    pub fn set_parent_name(&mut self, name: &str) -> Option<()> {
        let mut out = [0u8; NAME_LEN];
        let mut at = 0;
        for unit in name.encode_utf16() {
            if at + 2 > NAME_LEN {
                return None;
            }
            out[at..at + 2].copy_from_slice(&unit.to_be_bytes());
            at += 2;
        }
        self.parent_name = out;
        Some(())
    }

    /// The parent-name field decoded from UTF-16BE up to the first NUL. `None` if it is not valid UTF-16.
    pub fn parent_name(&self) -> Option<String> {
        let units: Vec<u16> = self
            .parent_name
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        String::from_utf16(&units).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start of a differencing header as `vhd-util snapshot` writes it for a 4 GiB parent `base.vhd`.
    #[rustfmt::skip]
    const HEADER_DIFF: [u8; 84] = [
        b'c', b'x', b's', b'p', b'a', b'r', b's', b'e', // 0   cookie "cxsparse"
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // 8   data offset: unused, all ones
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06, 0x00, // 16  BAT offset 1536 (footer copy + header)
        0x00, 0x01, 0x00, 0x00,                         // 24  header version 1.0
        0x00, 0x00, 0x08, 0x00,                         // 28  max BAT entries 2048 (4 GiB / 2 MiB)
        0x00, 0x20, 0x00, 0x00,                         // 32  block size 2 MiB
        0x00, 0x00, 0x00, 0x00,                         // 36  checksum (filled in by the test)
        0xaa, 0xaa, 0xaa, 0xaa, 0xbb, 0xbb, 0xcc, 0xcc, // 40  parent UUID
        0xdd, 0xdd, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, //     (16 bytes)
        0x30, 0xb1, 0x4a, 0x00,                         // 56  parent mtime, seconds since 2000
        0x00, 0x00, 0x00, 0x00,                         // 60  reserved
        0x00, b'b', 0x00, b'a', 0x00, b's', 0x00, b'e', // 64  parent name "base.vhd", UTF-16BE
        0x00, b'.', 0x00, b'v', 0x00, b'h', 0x00, b'd', //     (512 bytes, NUL padded)
        0x00, 0x00, 0x00, 0x00,                         // 80  ...
    ];

    /// The three locator entries at 576 that go with it.
    #[rustfmt::skip]
    const LOCATORS_DIFF: [u8; 72] = [
        0x4d, 0x61, 0x63, 0x58,                         // 576 code "MacX"
        0x00, 0x00, 0x02, 0x00,                         //     data space 512 (bytes, as blktap writes)
        0x00, 0x00, 0x00, 0x11,                         //     data length 17: "file://./base.vhd"
        0x00, 0x00, 0x00, 0x00,                         //     reserved
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, 0x00, //     data offset 10752 (after the batmap)
        0x57, 0x32, 0x6b, 0x75,                         // 600 code "W2ku"
        0x00, 0x00, 0x02, 0x00,                         //     data space 512
        0x00, 0x00, 0x00, 0x14,                         //     data length 20: ".\base.vhd" in UTF-16LE
        0x00, 0x00, 0x00, 0x00,                         //     reserved
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, //     data offset 11264
        0x57, 0x32, 0x72, 0x75,                         // 624 code "W2ru"
        0x00, 0x00, 0x02, 0x00,                         //     data space 512
        0x00, 0x00, 0x00, 0x14,                         //     data length 20
        0x00, 0x00, 0x00, 0x00,                         //     reserved
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2e, 0x00, //     data offset 11776
    ];

    fn fixture() -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[..HEADER_DIFF.len()].copy_from_slice(&HEADER_DIFF);
        b[576..576 + LOCATORS_DIFF.len()].copy_from_slice(&LOCATORS_DIFF);
        let sum = checksum(&b, 36);
        b[36..40].copy_from_slice(&sum.to_be_bytes());
        b
    }

    #[test]
    fn decodes_and_reencodes_the_fixture() {
        let b = fixture();
        let h = Header::decode(&b).unwrap();
        assert_eq!(h.data_offset, u64::MAX);
        assert_eq!(h.table_offset, 1536);
        assert_eq!(h.version, HEADER_VERSION);
        assert_eq!(h.max_bat_entries, 2048);
        assert_eq!(h.block_size, 2 << 20);
        assert_eq!(h.parent_uuid.to_string(), "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee");
        assert_eq!(h.parent_name().as_deref(), Some("base.vhd"));
        assert_eq!(h.locators[0].code, PLAT_MACX);
        assert_eq!(h.locators[0].data_len, 17);
        assert_eq!(h.locators[0].space_bytes(), Some(512));
        assert_eq!(h.locators[1].code, PLAT_W2KU);
        assert_eq!(h.locators[2].code, PLAT_W2RU);
        assert_eq!(h.locators[2].data_offset, 11776);
        assert_eq!(h.locators[3], Locator::default());
        assert_eq!(h.encode(), b);

        let mut again = Header::new(1536, 2048, 2 << 20);
        again.parent_uuid = h.parent_uuid;
        again.parent_timestamp = h.parent_timestamp;
        again.set_parent_name("base.vhd").unwrap();
        again.locators = h.locators;
        assert_eq!(again.encode(), b);
    }

    #[test]
    fn rejects_bad_cookie_and_checksum() {
        let mut b = fixture();
        b[28] ^= 1;
        assert_eq!(Header::decode(&b), Err("bad dynamic header checksum"));
        let mut b = fixture();
        b[1] = b'X';
        assert!(Header::decode(&b).is_err());
    }

    #[test]
    fn locator_space_is_sectors_below_512_and_bytes_above() {
        let l = |s| Locator { data_space: s, ..Locator::default() };
        assert_eq!(l(1).space_bytes(), Some(512));
        assert_eq!(l(512).space_bytes(), Some(512));
        assert_eq!(l(1024).space_bytes(), Some(1024));
        assert_eq!(l(513).space_bytes(), None);
    }

    #[test]
    fn parent_name_must_fit() {
        let mut h = Header::new(1536, 1, 2 << 20);
        assert!(h.set_parent_name(&"x".repeat(256)).is_some());
        assert!(h.set_parent_name(&"x".repeat(257)).is_none());
    }
}
