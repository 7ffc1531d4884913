//! blktap's batmap header carries a marker byte and a keyhash (`vhd-util set -f marker`, `vhd-util key`) that
//! blktap keeps through its own rewrites and copies into snapshots; so do we (found by running blktap's vhd-util
//! on our files: `docs/vhd.md`).

use storage_repo::block::BlockDevice;
use storage_repo::formats::vhd::{self, Chain};
use uuid::Uuid;

use crate::util::tempdir;

const MIB: u64 = 1 << 20;

/// Offsets of every `tdbatmap` header in the file.
fn headers(bytes: &[u8]) -> Vec<usize> {
    bytes.windows(8).enumerate().filter(|(_, w)| *w == b"tdbatmap").map(|(i, _)| i).collect()
}

/// Marker (1 byte) and keyhash (65 bytes) of the live (last) batmap header.
fn extra(path: &std::path::Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    let at = *headers(&bytes).last().expect("a batmap header");
    bytes[at + 28..at + 94].to_vec()
}

#[test]
fn marker_and_keyhash_survive_writes_resize_and_go_to_children() {
    let dir = tempdir();
    let path = dir.path().join("a.vhd");
    vhd::create_dynamic(&path, Uuid::new_v4(), 1024 * MIB).unwrap();
    // As `vhd-util set -f marker -v 1` and `vhd-util key -s` would leave it: marker 1, keyhash cookie 1, a nonce
    // and a hash.
    let mut bytes = std::fs::read(&path).unwrap();
    let at = headers(&bytes)[0];
    bytes[at + 28] = 1;
    bytes[at + 29] = 1;
    for i in 0..64 {
        bytes[at + 30 + i] = i as u8 + 1;
    }
    std::fs::write(&path, &bytes).unwrap();
    let want = bytes[at + 28..at + 94].to_vec();

    // A whole block written: the batmap (and its header) is rewritten at the flush.
    {
        let c = Chain::open(&path, true).unwrap();
        c.write_at(&vec![0x5a; 2 * MIB as usize], 8 * MIB).unwrap();
        c.flush().unwrap();
    }
    assert_eq!(extra(&path), want, "after a write that fills a block");
    vhd::check(&path).unwrap();

    // A resize that moves the metadata.
    vhd::resize(&path, 100 * 1024 * MIB).unwrap();
    assert_eq!(extra(&path), want, "after a resize that moved the batmap");
    vhd::check(&path).unwrap();

    // A child inherits the keyhash (its cookie is set), not the marker.
    let child = dir.path().join("b.vhd");
    vhd::create_child(&child, Uuid::new_v4(), &path).unwrap();
    let got = extra(&child);
    assert_eq!(got[0], 0, "the marker is not inherited");
    assert_eq!(&got[1..], &want[1..], "the keyhash is inherited");
    vhd::check(&child).unwrap();
}
