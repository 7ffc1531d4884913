//! blktap's batmap: a 512-byte `tdbatmap` header right after the BAT, then a bitmap with one bit per block (MSB
//! first), set when the block is fully allocated (every sector bit set), so readers can skip its sector bitmap.
//! blktap trusts it for `tap` files of creator version 1.2 or later.

use super::footer::{be32, be64};

pub(crate) const BATMAP_HEADER_SIZE: usize = 512;
pub(crate) const COOKIE: &[u8; 8] = b"tdbatmap";
/// Batmap version 1.2 (the checksum sums unsigned bytes; 1.1 summed signed chars).
pub(crate) const BATMAP_VERSION: u32 = 0x0001_0002;
const BATMAP_VERSION_1_1: u32 = 0x0001_0001;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BatmapHeader {
    pub offset: u64,
    /// Sectors.
    pub size: u32,
    pub version: u32,
    pub checksum: u32,
    pub marker: u8,
    /// blktap's keyhash (`vhd-util key`): a cookie byte, a 32-byte nonce and a 32-byte hash. Kept as it is found,
    /// through every rewrite of the header, and copied into new children when its cookie is set (as `vhd-util
    /// snapshot` does).
    pub keyhash: [u8; KEYHASH_SIZE],
}

/// The keyhash's size and place in the header.
pub(crate) const KEYHASH_SIZE: usize = 65;
const KEYHASH_AT: usize = 29;

impl BatmapHeader {
    pub fn decode(b: &[u8; BATMAP_HEADER_SIZE]) -> Result<BatmapHeader, &'static str> {
        if &b[0..8] != COOKIE {
            return Err("bad batmap cookie (not \"tdbatmap\")");
        }
        let h = BatmapHeader {
            offset: be64(b, 8),
            size: be32(b, 16),
            version: be32(b, 20),
            checksum: be32(b, 24),
            marker: b[28],
            keyhash: b[KEYHASH_AT..KEYHASH_AT + KEYHASH_SIZE].try_into().expect("65 bytes"),
        };
        if h.version > BATMAP_VERSION {
            return Err("unsupported batmap version");
        }
        Ok(h)
    }

    /// The header sector; the reserved bytes are zero.
    pub fn encode(&self) -> [u8; BATMAP_HEADER_SIZE] {
        let mut b = [0u8; BATMAP_HEADER_SIZE];
        b[0..8].copy_from_slice(COOKIE);
        b[8..16].copy_from_slice(&self.offset.to_be_bytes());
        b[16..20].copy_from_slice(&self.size.to_be_bytes());
        b[20..24].copy_from_slice(&self.version.to_be_bytes());
        b[24..28].copy_from_slice(&self.checksum.to_be_bytes());
        b[28] = self.marker;
        b[KEYHASH_AT..KEYHASH_AT + KEYHASH_SIZE].copy_from_slice(&self.keyhash);
        b
    }

    /// The keyhash a child of a file with this header inherits (blktap copies it when its cookie is 1).
    pub fn inherited_keyhash(&self) -> [u8; KEYHASH_SIZE] {
        if self.keyhash[0] == 1 { self.keyhash } else { [0; KEYHASH_SIZE] }
    }
}

/// How many bytes of the map the checksum covers: blktap's `secs_round_up_no_zero(curr_size >> 24)` sectors
/// (always with the 2 MiB block shift).
pub(crate) fn checksummed_len(current_size: u64) -> u64 {
    (current_size >> 24).div_ceil(512).max(1) * 512
}

/// blktap's `vhd_checksum_batmap` over `map` (already cut to [`checksummed_len`]).
pub(crate) fn checksum(map: &[u8], version: u32) -> u32 {
    let mut sum: u32 = 0;
    for &b in map {
        sum = if version == BATMAP_VERSION_1_1 {
            sum.wrapping_add(i32::from(b as i8) as u32)
        } else {
            sum.wrapping_add(u32::from(b))
        };
    }
    !sum
}

/// Sectors the map needs for `entries` blocks (at least one).
pub(crate) fn map_sectors(entries: u64) -> u64 {
    entries.div_ceil(8).div_ceil(512).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The batmap header of a 4 GiB `vhd-util create` file (BAT at 1536, 2048 entries = 8 KiB).
    #[rustfmt::skip]
    const BATMAP_4G: [u8; 32] = [
        b't', b'd', b'b', b'a', b't', b'm', b'a', b'p', // 0   cookie "tdbatmap"
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x28, 0x00, // 8   map offset 10240 (header at 9728 + 512)
        0x00, 0x00, 0x00, 0x01,                         // 16  map size: 1 sector (2048 bits = 256 bytes)
        0x00, 0x01, 0x00, 0x02,                         // 20  batmap version 1.2
        0xff, 0xff, 0xff, 0xff,                         // 24  checksum: ~0 for an all-clear map
        0x00,                                           // 28  marker
        0x00, 0x00, 0x00,                               // 29  keyhash (cookie, nonce[32], hash[32]), then reserved
    ];

    #[test]
    fn decodes_and_reencodes_the_fixture() {
        let mut b = [0u8; BATMAP_HEADER_SIZE];
        b[..BATMAP_4G.len()].copy_from_slice(&BATMAP_4G);
        let h = BatmapHeader::decode(&b).unwrap();
        assert_eq!(h.offset, 10240);
        assert_eq!(h.size, 1);
        assert_eq!(h.version, BATMAP_VERSION);
        assert_eq!(h.checksum, checksum(&[0u8; 512], BATMAP_VERSION));
        assert_eq!(h.encode(), b);
    }

    #[test]
    fn checksum_covers_the_size_dependent_prefix() {
        assert_eq!(checksummed_len(4 << 30), 512);
        assert_eq!(checksummed_len(2 << 20), 512);
        assert_eq!(checksummed_len(2040 << 30), 255 * 512);
        let mut map = [0u8; 512];
        map[0] = 0x80;
        map[1] = 0xff;
        assert_eq!(checksum(&map, BATMAP_VERSION), !(0x80 + 0xff));
        // Version 1.1 summed signed chars.
        assert_eq!(checksum(&map, BATMAP_VERSION_1_1), !((-128i32 - 1) as u32));
    }

    #[test]
    fn rejects_foreign_headers() {
        let mut b = [0u8; BATMAP_HEADER_SIZE];
        b[..BATMAP_4G.len()].copy_from_slice(&BATMAP_4G);
        b[23] = 3;
        assert_eq!(BatmapHeader::decode(&b), Err("unsupported batmap version"));
        b[0] = 0;
        assert!(BatmapHeader::decode(&b).is_err());
    }

    #[test]
    fn map_sectors_round_up() {
        assert_eq!(map_sectors(1), 1);
        assert_eq!(map_sectors(4096), 1);
        assert_eq!(map_sectors(4097), 2);
    }
}
