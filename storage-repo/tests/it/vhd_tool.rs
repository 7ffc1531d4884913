//! The `vhd-tool` command line, end to end, with `qemu-img compare` between qemu's reading and ours.

use std::path::Path;
use std::process::{Command, Output};

use crate::util::{Rng, qemu_img, tempdir};

fn tool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vhd-tool")).args(args).output().unwrap()
}

#[track_caller]
fn ok(args: &[&str]) -> String {
    let out = tool(args);
    assert!(out.status.success(), "vhd-tool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn field(info: &str, key: &str) -> String {
    info.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).unwrap_or_else(|| panic!("no {key}")).to_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn the_cli_drives_a_whole_lifecycle() {
    let dir = tempdir();
    let d = |n: &str| dir.path().join(n);
    let (base, leaf, input, ours, qemu) = (d("base.vhd"), d("leaf.vhd"), d("in.bin"), d("ours.raw"), d("qemu.raw"));
    let info = ok(&["create", s(&base), "64M"]);
    assert_eq!(field(&info, "virtual_size"), "67108864");
    assert_eq!(field(&info, "type"), "dynamic");
    assert_eq!(field(&info, "creator"), "tap");
    std::fs::write(&input, Rng::new(1).bytes(3_000_001)).unwrap();
    ok(&["write", s(&base), "1000", s(&input)]);
    ok(&["check", s(&base)]);

    // qemu-img compare: our raw reading against qemu's reading of the VHD, and qemu's conversion.
    ok(&["read", s(&base), s(&ours)]);
    let same = qemu_img(&["compare", "-f", "raw", "-F", "vpc", s(&ours), s(&base)]);
    assert!(same.contains("Images are identical"), "{same}");
    qemu_img(&["convert", "-f", "vpc", "-O", "raw", s(&base), s(&qemu)]);
    assert!(qemu_img(&["compare", "-f", "raw", "-F", "raw", s(&ours), s(&qemu)]).contains("identical"));

    // Snapshot, hide the base, write the leaf, coalesce back, reparent (here: onto the same base).
    let info = ok(&["snapshot", s(&leaf), s(&base)]);
    assert_eq!(field(&info, "parent"), "base.vhd");
    ok(&["set-hidden", s(&base), "1"]);
    assert_eq!(field(&ok(&["info", s(&base)]), "hidden"), "1");
    ok(&["write", s(&leaf), "50M", s(&input)]);
    ok(&["read", s(&leaf), s(&ours)]);
    let before = std::fs::read(&ours).unwrap();
    assert!(field(&ok(&["coalesce", s(&leaf)]), "coalesced").parse::<u64>().unwrap() >= 3_000_001);
    ok(&["set-parent", s(&leaf), s(&base)]);
    ok(&["check", s(&leaf)]);
    ok(&["read", s(&base), s(&ours)]);
    assert!(std::fs::read(&ours).unwrap() == before, "the base now holds the leaf's content");
    assert!(qemu_img(&["compare", "-f", "raw", "-F", "vpc", s(&ours), s(&base)]).contains("identical"));

    let info = ok(&["resize", s(&base), "1G"]);
    assert_eq!(field(&info, "virtual_size"), "1073741824");
    ok(&["check", s(&base)]);

    // Failures exit 1 with the problem on stderr.
    std::fs::write(d("junk.vhd"), [0u8; 4096]).unwrap();
    let out = tool(&["check", s(&d("junk.vhd"))]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no valid footer"));
    assert_eq!(tool(&["resize", s(&base), "1M"]).status.code(), Some(1));
    assert_eq!(tool(&["bogus"]).status.code(), Some(1));
    assert_eq!(tool(&["create", s(&d("x.vhd")), "12Q"]).status.code(), Some(1));
}
