//! One folder per disk format: a wrapper type per format, private parsing files, byte-level fixtures and a fuzz
//! target per parser. Every length, offset and count read from a file is checked before use.

pub mod ingest;
pub mod vhd;
pub mod vmdk;
