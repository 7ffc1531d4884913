//! `xe vdi-import` and `xe vdi-export` against the real daemon: a patterned raw image in and out, through a VHD
//! into a second VDI, a too large image, a missing parameter, and the progress bar (none when stderr is piped).

use std::path::Path;

use super::{Xe, start_daemon};

/// 16 MiB of a pattern that differs in every 512-byte sector, with a hole of zeros in the middle.
fn patterned(size: usize) -> Vec<u8> {
    let mut data: Vec<u8> = (0..size).map(|i| ((i / 512) as u8).wrapping_mul(31).wrapping_add(i as u8)).collect();
    data[4 << 20..6 << 20].fill(0);
    data
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn vdi_import_and_export() {
    let dir = tempfile::tempdir().unwrap();
    let (_daemon, xe) = start_daemon(dir.path());
    let sr = xe.val(&["sr-list", "name-label=Local storage", "--minimal"]);
    let on_sr = format!("sr-uuid={sr}");
    let vdi = xe.val(&["vdi-create", &on_sr, "name-label=io", "virtual-size=16MiB"]);
    let on_vdi = format!("uuid={vdi}");

    let data = patterned(16 << 20);
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, &data).unwrap();
    let import = xe.run(&["vdi-import", &on_vdi, &format!("filename={}", path(&raw))]);
    assert!(import.status.success(), "{}", String::from_utf8_lossy(&import.stderr));
    assert!(import.stdout.is_empty() && import.stderr.is_empty(), "silent, no progress bar on a pipe: {import:?}");

    let back = dir.path().join("back.raw");
    let export = xe.run(&["vdi-export", &on_vdi, &format!("filename={}", path(&back))]);
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    assert!(export.stdout.is_empty() && export.stderr.is_empty(), "{export:?}");
    assert!(std::fs::read(&back).unwrap() == data, "the export is the image imported");
    assert!(!dir.path().join("back.raw.part").exists());

    // Through a VHD into a second VDI; --progress forces the bar on a pipe.
    let vhd = dir.path().join("disk.vhd");
    let out = xe.run(&["vdi-export", &on_vdi, &format!("filename={}", path(&vhd)), "format=vhd", "--progress"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bar = String::from_utf8_lossy(&out.stderr);
    assert!(bar.starts_with('\r') && bar.contains("  100% [########") && bar.ends_with(" MiB\n"), "{bar:?}");
    assert_eq!(&std::fs::read(&vhd).unwrap()[..8], b"conectix", "a VHD (copy of the footer first)");
    let second = xe.val(&["vdi-create", &on_sr, "name-label=io2", "virtual-size=16MiB"]);
    let on_second = format!("uuid={second}");
    // The format from the extension (.vhd), with the bar forced.
    let out = xe.run(&["vdi-import", &on_second, &format!("filename={}", path(&vhd)), "--progress"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bar = String::from_utf8_lossy(&out.stderr);
    assert!(bar.contains("\r    0% [") && bar.contains("\r  100% ["), "{bar:?}");
    let again = dir.path().join("again.raw");
    xe.ok(&["vdi-export", &on_second, &format!("filename={}", path(&again)), "format=raw"]);
    assert!(std::fs::read(&again).unwrap() == data, "raw → VHD → raw is the same disk");

    // Too large: the daemon's VDI_TOO_SMALL in xe's wording; the VDI keeps its content.
    let big = dir.path().join("big.raw");
    std::fs::write(&big, vec![7u8; 17 << 20]).unwrap();
    let err = xe.err(&["vdi-import", &on_vdi, &format!("filename={}", path(&big))]);
    assert!(err.starts_with("The VDI is too small. Please resize it to at least the minimum size.\n"), "{err}");
    assert!(err.contains(&format!("vdi: {vdi} (io)")), "the reference named as xe names it: {err}");
    let still = dir.path().join("still.raw");
    xe.ok(&["vdi-export", &on_vdi, &format!("filename={}", path(&still))]);
    assert!(std::fs::read(&still).unwrap() == data);

    // A bad VHD, a missing file, a missing parameter, a failed export leaves no file.
    let err = xe.err(&["vdi-import", &on_vdi, &format!("filename={}", path(&raw)), "format=vhd"]);
    assert!(err.starts_with("Error code: IMPORT_ERROR\n") || err.contains("IMPORT_ERROR"), "{err}");
    let err = xe.err(&["vdi-import", &on_vdi, "filename=/nonexistent/disk.raw"]);
    assert!(err.starts_with("Error: Cannot open the file /nonexistent/disk.raw"), "{err}");
    assert_eq!(xe.err(&["vdi-import", &on_vdi]), "Required parameter not found: filename\nFor usage run: 'xe help'\n");
    assert_eq!(xe.err(&["vdi-export", "filename=x"]), "Required parameter not found: uuid\nFor usage run: 'xe help'\n");
    let none = dir.path().join("none.raw");
    let bad_uuid = "uuid=00000000-0000-0000-0000-000000000000";
    let err = xe.err(&["vdi-export", bad_uuid, &format!("filename={}", path(&none))]);
    assert!(err.starts_with("The uuid you supplied was invalid."), "{err}");
    let err = xe.err(&["vdi-export", &on_vdi, &format!("filename={}", path(&none)), "format=vmdk"]);
    assert!(err.starts_with("Error: Unknown format 'vmdk'"), "{err}");
    assert!(!none.exists() && !dir.path().join("none.raw.part").exists());

    // As root over the unix socket, without a password.
    let root = std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if root {
        let local = Xe { socket: xe.socket.clone(), port: xe.port, tcp: false, https: false };
        let third = local.val(&["vdi-create", &on_sr, "name-label=io3", "virtual-size=16MiB"]);
        local.ok(&["vdi-import", &format!("uuid={third}"), &format!("filename={}", path(&raw))]);
        let local_back = dir.path().join("local.raw");
        local.ok(&["vdi-export", &format!("uuid={third}"), &format!("filename={}", path(&local_back))]);
        assert!(std::fs::read(&local_back).unwrap() == data);
    }
}

#[test]
fn vdi_import_into_a_new_vdi_and_delta_exports() {
    let dir = tempfile::tempdir().unwrap();
    let (_daemon, xe) = start_daemon(dir.path());
    let sr = xe.val(&["sr-list", "name-label=Local storage", "--minimal"]);
    let on_sr = format!("sr-uuid={sr}");
    let data = patterned(16 << 20);
    let raw = dir.path().join("web01.raw");
    std::fs::write(&raw, &data).unwrap();

    // One step: a VDI of the image's size, named after the file; its uuid is printed.
    let vdi = xe.val(&["vdi-import", &on_sr, &format!("filename={}", path(&raw))]);
    let on_vdi = format!("uuid={vdi}");
    assert_eq!(xe.val(&["vdi-param-get", &on_vdi, "param-name=name-label"]), "web01");
    assert_eq!(xe.val(&["vdi-param-get", &on_vdi, "param-name=virtual-size"]), (16u64 << 20).to_string());

    // A snapshot, new content, and the delta since the snapshot.
    let snap = xe.val(&["vdi-snapshot", &on_vdi]);
    let mut changed = data.clone();
    changed[1 << 20..(1 << 20) + 4096].fill(0x42);
    let changed_raw = dir.path().join("changed.raw");
    std::fs::write(&changed_raw, &changed).unwrap();
    let other = xe.val(&["vdi-import", &on_sr, &format!("filename={}", path(&changed_raw)), "name-label=changed"]);
    xe.ok(&["vdi-copy", &format!("uuid={other}"), &format!("into-vdi-uuid={vdi}")]);
    let full = dir.path().join("snap.vhd");
    xe.ok(&["vdi-export", &format!("uuid={snap}"), &format!("filename={}", path(&full))]);
    let delta = dir.path().join("delta.vhd");
    xe.ok(&["vdi-export", &on_vdi, &format!("filename={}", path(&delta)), &format!("base={snap}")]);
    assert!(std::fs::metadata(&delta).unwrap().len() < std::fs::metadata(&full).unwrap().len());

    // Restored elsewhere: the full image into a new VDI, then the delta onto it.
    let restored = xe.val(&["vdi-import", &on_sr, &format!("filename={}", path(&full)), "name-label=restored"]);
    let on_restored = format!("uuid={restored}");
    xe.ok(&["vdi-import", &on_restored, &format!("filename={}", path(&delta))]);
    let back = dir.path().join("back.raw");
    xe.ok(&["vdi-export", &on_restored, &format!("filename={}", path(&back))]);
    assert!(std::fs::read(&back).unwrap() == changed, "base + delta = the disk");
    // Twice: the VDI no longer holds the delta's base.
    let out = xe.run(&["vdi-import", &on_restored, &format!("filename={}", path(&delta))]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("IMPORT_ERROR"), "{out:?}");
}
