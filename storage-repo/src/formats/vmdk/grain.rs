//! Compressed grains: a zlib stream inflated straight into the caller's buffer, which must not overflow the grain.

use flate2::{Decompress, FlushDecompress, Status};

/// A reusable zlib inflater.
pub(crate) struct Inflater {
    z: Decompress,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inflater")
    }
}

impl Inflater {
    pub fn new() -> Inflater {
        Inflater { z: Decompress::new(true) }
    }

    /// Inflates the zlib stream `input` into `out`, whose last byte is a sentinel: the grain is
    /// `out[..out.len() - 1]`. Returns the bytes produced. `Err` if the stream is damaged, incomplete, or inflates
    /// past the grain.
    pub fn inflate(&mut self, input: &[u8], out: &mut [u8]) -> Result<usize, String> {
        let grain = out.len().saturating_sub(1);
        self.z.reset(true);
        let status = self.z.decompress(input, out, FlushDecompress::Finish);
        let produced = self.z.total_out() as usize;
        if produced > grain {
            return Err("a compressed grain inflates past its grain".into());
        }
        match status {
            Ok(Status::StreamEnd) => Ok(produced),
            Ok(_) => Err("a compressed grain ends before its zlib stream does".into()),
            Err(e) => Err(format!("a compressed grain is damaged ({e})")),
        }
    }
}

/// True if every byte of `b` is zero (word at a time).
pub(crate) fn is_zero(b: &[u8]) -> bool {
    let (words, tail) = b.as_chunks::<16>();
    words.iter().all(|w| u128::from_ne_bytes(*w) == 0) && tail.iter().all(|&x| x == 0)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn inflates_exactly_a_grain_and_refuses_more() {
        let mut inf = Inflater::new();
        let mut out = vec![0u8; 4097];
        assert_eq!(inf.inflate(&zlib(&[7u8; 4096]), &mut out), Ok(4096));
        assert!(out[..4096].iter().all(|&b| b == 7));
        assert_eq!(inf.inflate(&zlib(&[1u8; 1024]), &mut out), Ok(1024));
        let e = inf.inflate(&zlib(&[7u8; 4097]), &mut out).unwrap_err();
        assert!(e.contains("past its grain"), "{e}");
        let z = zlib(&[3u8; 4096]);
        assert!(inf.inflate(&z[..z.len() - 6], &mut out).is_err());
        assert!(inf.inflate(b"not zlib at all", &mut out).unwrap_err().contains("damaged"));
        assert_eq!(inf.inflate(&zlib(&[9u8; 4096]), &mut out), Ok(4096));
    }

    #[test]
    fn zero_test() {
        assert!(is_zero(&[0u8; 100]));
        let mut b = [0u8; 100];
        b[99] = 1;
        assert!(!is_zero(&b));
        b[99] = 0;
        b[3] = 1;
        assert!(!is_zero(&b));
    }
}
