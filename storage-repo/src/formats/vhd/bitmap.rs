//! Bit arrays as VHD stores them (sector bitmaps in front of each block, the batmap): bit `i` is bit
//! `7 - i % 8` of byte `i / 8`, most significant bit first. A sector bitmap is padded to one 512-byte sector.

pub(crate) const BITMAP_SIZE: usize = 512;
/// A sector bitmap: 4096 bits, one per sector of a 2 MiB block.
pub(crate) type SectorBitmap = [u8; BITMAP_SIZE];

pub(crate) fn test(map: &[u8], i: usize) -> bool {
    map[i / 8] & (0x80 >> (i % 8)) != 0
}

pub(crate) fn set(map: &mut [u8], i: usize) {
    map[i / 8] |= 0x80 >> (i % 8);
}

pub(crate) fn clear(map: &mut [u8], i: usize) {
    map[i / 8] &= !(0x80 >> (i % 8));
}

/// Sets bits `from..from + n`; true if any was clear.
pub(crate) fn set_range(map: &mut [u8], from: usize, n: usize) -> bool {
    let mut changed = false;
    let mut i = from;
    let end = from + n;
    while i < end {
        if i.is_multiple_of(8) && i + 8 <= end {
            changed |= map[i / 8] != 0xff;
            map[i / 8] = 0xff;
            i += 8;
        } else {
            changed |= !test(map, i);
            set(map, i);
            i += 1;
        }
    }
    changed
}

/// Clears bits `from..from + n`; true if any was set.
pub(crate) fn clear_range(map: &mut [u8], from: usize, n: usize) -> bool {
    let mut changed = false;
    let mut i = from;
    let end = from + n;
    while i < end {
        if i.is_multiple_of(8) && i + 8 <= end {
            changed |= map[i / 8] != 0;
            map[i / 8] = 0;
            i += 8;
        } else {
            changed |= test(map, i);
            clear(map, i);
            i += 1;
        }
    }
    changed
}

/// True if the first `bits` bits are all set.
pub(crate) fn all_set(map: &[u8], bits: usize) -> bool {
    let full = bits / 8;
    map[..full].iter().all(|&b| b == 0xff) && (full * 8..bits).all(|i| test(map, i))
}

/// The value of bit `from` and how many bits from `from` (up to `end`) share it.
pub(crate) fn run(map: &[u8], from: usize, end: usize) -> (bool, usize) {
    let value = test(map, from);
    let mut i = from + 1;
    // Bit by bit up to a 64-bit boundary, then whole words.
    while i < end && !i.is_multiple_of(64) {
        if test(map, i) != value {
            return (value, i - from);
        }
        i += 1;
    }
    while i + 64 <= end {
        let mut w = [0u8; 8];
        w.copy_from_slice(&map[i / 8..i / 8 + 8]);
        let word = u64::from_be_bytes(w);
        let differing = if value { !word } else { word };
        if differing != 0 {
            return (value, i + differing.leading_zeros() as usize - from);
        }
        i += 64;
    }
    while i < end {
        if test(map, i) != value {
            return (value, i - from);
        }
        i += 1;
    }
    (value, end - from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_are_msb_first() {
        let mut m = [0u8; 2];
        set(&mut m, 0);
        set(&mut m, 9);
        // Sector 0 is the top bit of byte 0, sector 9 the second bit of byte 1.
        assert_eq!(m, [0b1000_0000, 0b0100_0000]);
        assert!(test(&m, 0) && test(&m, 9) && !test(&m, 1));
        clear(&mut m, 0);
        assert_eq!(m, [0, 0b0100_0000]);
    }

    #[test]
    fn ranges_report_changes() {
        let mut m = [0u8; BITMAP_SIZE];
        assert!(set_range(&mut m, 3, 20));
        assert!(!set_range(&mut m, 5, 10));
        assert_eq!(&m[..3], &[0b0001_1111, 0xff, 0b1111_1110]);
        assert!(clear_range(&mut m, 0, 8));
        assert!(!clear_range(&mut m, 0, 8));
        assert_eq!(&m[..3], &[0, 0xff, 0b1111_1110]);
    }

    #[test]
    fn all_and_none() {
        let mut m = [0u8; BITMAP_SIZE];
        set_range(&mut m, 0, 4096);
        assert!(all_set(&m, 4096));
        clear(&mut m, 4095);
        assert!(!all_set(&m, 4096));
        assert!(all_set(&m, 4095));
        assert!(all_set(&m, 3));
    }

    #[test]
    fn runs_cross_words() {
        let mut m = [0u8; BITMAP_SIZE];
        set_range(&mut m, 10, 200);
        assert_eq!(run(&m, 0, 4096), (false, 10));
        assert_eq!(run(&m, 10, 4096), (true, 200));
        assert_eq!(run(&m, 100, 150), (true, 50));
        assert_eq!(run(&m, 210, 4096), (false, 4096 - 210));
        set(&mut m, 4095);
        assert_eq!(run(&m, 210, 4096), (false, 4095 - 210));
        assert_eq!(run(&m, 4095, 4096), (true, 1));
    }
}
