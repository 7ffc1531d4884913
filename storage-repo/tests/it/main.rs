//! The integration tests of `storage-repo` (one test binary; a module per area).

mod nbd;
