//! `xe`: the command line administrators script against (`xe vm-list`, `xe vm-start uuid=…`).
//!
//! It will speak the XenAPI to the daemon through `xapi_types::wire`, over the local unix socket by default or to
//! `-s HOST`. Not written yet (see the `xe` issue): it says so and fails rather than pretend.

fn main() {
    eprintln!("xe: not implemented yet in this build of xapi-rs");
    std::process::exit(2);
}
