//! storage-repo's integration tests: one binary, one module per area. Tests that need `qemu-img` fail (never
//! skip) when it is missing.

mod nbd;
mod nbd_fuzz;
mod sr_crash;
mod util;
mod vhd_chain;
mod vhd_delta;
mod vhd_dynamic;
mod vhd_fuzz;
mod vhd_hostile;
mod vhd_ingest;
mod vhd_keyhash;
mod vhd_resize;
mod vhd_tool;
mod vmdk;
mod vmdk_fuzz;
mod vmdk_ingest;
