//! The storage commands end to end, written as an administrator's script would use them: `SR=$(xe sr-list …
//! --minimal)`, `VDI=$(xe vdi-create …)`, ISO libraries, VM disks and CD drives, snapshots, copies, uninstall, SRs
//! made and destroyed, and xe's wording of what goes wrong. The daemon runs without a hypervisor: every storage
//! record operation works, VMs cannot start.

use expect_test::expect;

use super::{Xe, start_daemon};

/// `text` with each uuid written as its name in `names`, or `<uuid>` when it has none there.
pub(super) fn masked(text: &str, names: &[(&str, &str)]) -> String {
    let is_uuid = |s: &str| {
        s.len() == 36
            && s.char_indices()
                .all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() })
    };
    let mut out = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        if rest.len() >= 36 && rest.is_char_boundary(36) && is_uuid(&rest[..36]) {
            let u = &rest[..36];
            out.push_str(names.iter().find(|(v, _)| *v == u).map_or("<uuid>", |(_, n)| n));
            rest = &rest[36..];
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

fn exists(xe: &Xe, class: &str, uuid: &str) -> bool {
    xe.run(&[&format!("{class}-param-get"), &format!("uuid={uuid}"), "param-name=uuid"]).status.success()
}

#[test]
fn storage_commands_against_the_real_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let (_daemon, xe) = start_daemon(dir.path());
    let sr = xe.val(&["sr-list", "name-label=Local storage", "--minimal"]);
    assert_eq!(sr.len(), 36, "{sr:?}");
    let on_sr = format!("sr-uuid={sr}");
    expect![[r#"
        name-label ( RW)      : Local storage
                    type ( RO): ext
            content-type ( RO): user
                  shared ( RW): false

    "#]]
    .assert_eq(&xe.ok(&["sr-list", &format!("uuid={sr}"), "params=name-label,type,content-type,shared"]));

    vdis(&xe, &sr, &on_sr);
    let iso_dir = dir.path().join("isos");
    std::fs::create_dir(&iso_dir).unwrap();
    std::fs::write(iso_dir.join("x.iso"), b"an ISO image").unwrap();
    let location = format!("device-config:location={}", iso_dir.display());
    let iso = xe.val(&["sr-create", "name-label=ISOs", "type=iso", "content-type=iso", &location]);
    let listed = xe.ok(&["vdi-list", &format!("sr-uuid={iso}"), "params=uuid,name-label,read-only,virtual-size"]);
    let x = xe.val(&["vdi-list", &format!("sr-uuid={iso}"), "name-label=x.iso", "--minimal"]);
    expect![[r#"
        uuid ( RO)            : $X
              name-label ( RW): x.iso
               read-only ( RW): true
            virtual-size ( RO): 12

    "#]]
    .assert_eq(&masked(&listed, &[(&x, "$X")]));

    vm_disks(&xe, &sr, &x);
    srs(&xe, dir.path());
    errors(&xe, &on_sr);
}

/// `vdi-create`, `-snapshot`, `-clone`, `-copy`, `-resize`, `-destroy`, `-forget` and `sr-scan`.
fn vdis(xe: &Xe, sr: &str, on_sr: &str) {
    let vdi = xe.val(&["vdi-create", on_sr, "name-label=d", "virtual-size=64MiB"]);
    assert_eq!(vdi.len(), 36, "vdi-create prints the uuid: {vdi:?}");
    let on_vdi = format!("uuid={vdi}");
    assert_eq!(xe.val(&["vdi-param-get", &on_vdi, "param-name=virtual-size"]), "67108864");
    expect![[r#"
        uuid ( RO)             : $VDI
               name-label ( RW): d
             virtual-size ( RO): 67108864
                     type ( RO): user
                 sharable ( RW): false
                read-only ( RW): false
                  managed ( RO): true
            is-a-snapshot ( RO): false
                       SR ( RO): $SR

    "#]]
    .assert_eq(&masked(
        &xe.ok(&[
            "vdi-list",
            on_sr,
            "name-label=d",
            "params=uuid,name-label,virtual-size,type,sharable,read-only,managed,is-a-snapshot,SR",
        ]),
        &[(&vdi, "$VDI"), (sr, "$SR")],
    ));
    assert_eq!(xe.val(&["vdi-param-get", &on_vdi, "param-name=sr-uuid"]), sr, "sr-uuid names the SR field");

    let snap = xe.val(&["vdi-snapshot", &on_vdi]);
    let on_snap = format!("uuid={snap}");
    assert_eq!(xe.val(&["vdi-param-get", &on_snap, "param-name=is-a-snapshot"]), "true");
    assert_eq!(xe.val(&["vdi-param-get", &on_snap, "param-name=snapshot-of"]), vdi);
    assert_eq!(xe.val(&["vdi-param-get", &on_vdi, "param-name=snapshots"]), snap);

    let clone = xe.val(&["vdi-clone", &on_vdi, "new-name-label=c", "new-name-description=a clone"]);
    assert_eq!(xe.val(&["vdi-param-get", &format!("uuid={clone}"), "param-name=name-label"]), "c");
    assert_eq!(xe.val(&["vdi-param-get", &format!("uuid={clone}"), "param-name=name-description"]), "a clone");
    let plain = xe.val(&["vdi-clone", &on_vdi]);
    assert_eq!(
        xe.val(&["vdi-param-get", &format!("uuid={plain}"), "param-name=name-label"]),
        "d",
        "a clone keeps the name"
    );

    let copy = xe.val(&["vdi-copy", &on_vdi, &format!("sr-uuid={sr}")]);
    assert_eq!(xe.val(&["vdi-param-get", &format!("uuid={copy}"), "param-name=virtual-size"]), "67108864");
    let both = xe.err(&["vdi-copy", &on_vdi]);
    assert!(both.starts_with("Error: Please specify one but not both of: a destination sr-uuid"), "{both}");

    xe.ok(&["vdi-resize", &on_vdi, "disk-size=128MiB"]);
    assert_eq!(xe.val(&["vdi-param-get", &on_vdi, "param-name=virtual-size"]), "134217728");
    assert_eq!(xe.ok(&["vdi-resize", &on_vdi, "disk-size=256M"]), "", "actions print nothing");
    assert_eq!(xe.val(&["vdi-param-get", &on_vdi, "param-name=virtual-size"]), "268435456");
    let online = xe.err(&["vdi-resize", &on_vdi, "disk-size=1GiB", "online=true"]);
    assert!(online.starts_with("The SR backend does not support the operation"), "{online}");

    // vdi-forget keeps the file: a scan brings the VDI back (under its file name).
    xe.ok(&["vdi-forget", &format!("uuid={copy}")]);
    assert!(!exists(xe, "vdi", &copy));
    xe.ok(&["sr-scan", &format!("uuid={sr}")]);
    assert_eq!(xe.val(&["vdi-param-get", &format!("uuid={copy}"), "param-name=name-label"]), format!("{copy}.vhd"));

    for gone in [&copy, &clone, &plain, &snap, &vdi] {
        xe.ok(&["vdi-destroy", &format!("uuid={gone}")]);
        assert!(!exists(xe, "vdi", gone), "{gone} is still there");
    }
}

/// A VM's disks and CD drives, VBDs by hand, snapshot, copy and uninstall.
fn vm_disks(xe: &Xe, sr: &str, iso: &str) {
    let vm = xe.val(&["vm-install", "template=Generic Linux (direct kernel boot)", "new-name-label=xe-disks"]);
    let on_vm = format!("uuid={vm}");
    assert_eq!(xe.ok(&["vm-disk-add", &on_vm, "disk-size=32MiB"]), "");
    xe.ok(&["vm-disk-add", "vm=xe-disks", "disk-size=16MiB", "device=3", &format!("sr-uuid={sr}")]);
    xe.ok(&["vm-cd-add", "vm=xe-disks", "cd-name=x.iso", "device=1"]);
    let disks = xe.ok(&["vm-disk-list", "vm=xe-disks"]);
    expect![[r#"
        Disk 0 VBD:
        uuid ( RO)             : <uuid>
            vm-name-label ( RO): xe-disks
               userdevice ( RW): 0

        Disk 0 VDI:
        uuid ( RO)             : <uuid>
               name-label ( RW): Created by xe
             virtual-size ( RO): 33554432
            sr-name-label ( RO): Local storage

        Disk 1 VBD:
        uuid ( RO)             : <uuid>
            vm-name-label ( RO): xe-disks
               userdevice ( RW): 3

        Disk 1 VDI:
        uuid ( RO)             : <uuid>
               name-label ( RW): Created by xe
             virtual-size ( RO): 16777216
            sr-name-label ( RO): Local storage

    "#]]
    .assert_eq(&masked(&disks, &[]));
    let minimal = xe.val(&["vm-disk-list", "vm=xe-disks", "--minimal"]);
    assert_eq!(minimal.split(',').count(), 4, "a VBD and a VDI per disk: {minimal}");
    let owned = xe.val(&["vbd-list", &format!("vm-uuid={vm}"), "userdevice=0", "params=other-config", "--minimal"]);
    assert_eq!(owned, "owner: ", "vm-disk-add marks its VBD as the disk's owner");
    expect![[r#"
        CD 0 VBD:
        uuid ( RO)             : <uuid>
            vm-name-label ( RO): xe-disks
               userdevice ( RW): 1
                    empty ( RO): false

        CD 0 VDI:
        uuid ( RO)             : $ISO
               name-label ( RW): x.iso
             virtual-size ( RO): 12
            sr-name-label ( RO): ISOs

    "#]]
    .assert_eq(&masked(&xe.ok(&["vm-cd-list", "vm=xe-disks"]), &[(iso, "$ISO")]));

    // The CD drive: eject, insert, and the errors of each.
    let cd = xe.val(&["vbd-list", &format!("vm-uuid={vm}"), "type=cd", "--minimal"]);
    let empty = ["vbd-param-get", &format!("uuid={cd}"), "param-name=empty"];
    xe.ok(&["vm-cd-eject", "vm=xe-disks"]);
    assert_eq!(xe.val(&empty), "true");
    let again = xe.err(&["vm-cd-eject", "vm=xe-disks"]);
    assert_eq!(again.lines().next(), Some("Operation could not be performed because the drive is empty"));
    xe.ok(&["vm-cd-insert", "vm=xe-disks", "cd-name=x.iso"]);
    assert_eq!(xe.val(&empty), "false");
    assert_eq!(
        xe.err(&["vm-cd-insert", "vm=xe-disks", "cd-name=x.iso"]),
        format!("The VM has no empty CD drive (VBD).\nvm: {vm} (xe-disks)\n")
    );
    assert_eq!(xe.err(&["vm-cd-insert", "vm=xe-disks", "cd-name=y.iso"]), "Error: CD y.iso not found\n");
    assert_eq!(xe.err(&["vm-cd-add", "vm=xe-disks", "cd-name=y.iso", "device=4"]), "Error: CD y.iso not found!\n");

    // VBDs by hand: a disk at the lowest free device, an empty CD drive, and what is refused.
    let d = xe.val(&["vdi-create", &format!("sr-uuid={sr}"), "name-label=by-hand", "virtual-size=8MiB"]);
    let vbd = xe.val(&["vbd-create", &format!("vm-uuid={vm}"), "device=autodetect", &format!("vdi-uuid={d}")]);
    assert_eq!(xe.val(&["vbd-param-get", &format!("uuid={vbd}"), "param-name=userdevice"]), "2");
    let drive = xe.val(&["vbd-create", &format!("vm-uuid={vm}"), "device=5", "type=CD"]);
    let on_drive = format!("uuid={drive}");
    assert_eq!(xe.val(&["vbd-param-get", &on_drive, "param-name=empty"]), "true");
    assert_eq!(xe.val(&["vbd-param-get", &on_drive, "param-name=mode"]), "ro");
    let taken = xe.err(&["vbd-create", &format!("vm-uuid={vm}"), "device=5", "type=CD"]);
    assert_eq!(taken, "A device with the name given already exists on the selected VM\ndevice: 5\n");
    assert_eq!(
        xe.err(&["vbd-create", &format!("vm-uuid={vm}"), "device=6"]),
        "Error: Empty VBDs can only be made for type=CD\n"
    );
    xe.ok(&["vbd-insert", &on_drive, &format!("vdi-uuid={iso}")]);
    assert_eq!(xe.val(&["vbd-param-get", &on_drive, "param-name=empty"]), "false");
    xe.ok(&["vbd-eject", &on_drive]);
    xe.ok(&["vbd-destroy", &on_drive]);
    assert!(!exists(xe, "vbd", &drive));
    let plug = xe.err(&["vbd-plug", &format!("uuid={vbd}")]);
    assert!(plug.contains("expected: running\nactual: halted"), "{plug}");
    let two_cds = xe.val(&["vbd-create", &format!("vm-uuid={vm}"), "device=6", "type=CD"]);
    assert_eq!(xe.err(&["vm-cd-eject", "vm=xe-disks"]), "Error: Two or more CDs found. Please use vbd-eject\n");
    xe.ok(&["vm-cd-remove", "vm=xe-disks", "cd-name=<EMPTY>"]);
    assert!(!exists(xe, "vbd", &two_cds));

    // Snapshot and copy take the disks along.
    let snap = xe.val(&["vm-snapshot", "vm=xe-disks", "new-name-label=xe-disks-snap"]);
    let on_snap = format!("uuid={snap}");
    assert_eq!(xe.val(&["vm-param-get", &on_snap, "param-name=is-a-snapshot"]), "true");
    assert_eq!(xe.val(&["vm-param-get", &on_snap, "param-name=snapshot-of"]), vm);
    let snap_disks =
        xe.val(&["vm-disk-list", &on_snap, "vbd-params=userdevice", "vdi-params=is-a-snapshot", "--minimal"]);
    assert_eq!(snap_disks, "0,true,2,true,3,true", "three disk snapshots, by device");
    // The pseudo-classes: a snapshot is listed as one, not as a template; a template made from it is.
    assert_eq!(xe.val(&["snapshot-list", &format!("snapshot-of={vm}"), "--minimal"]), snap);
    assert_eq!(xe.val(&["snapshot-param-get", &format!("snapshot={snap}"), "param-name=name-label"]), "xe-disks-snap");
    assert!(!xe.ok(&["template-list", "--minimal"]).contains(&snap));
    let listed =
        xe.val(&["snapshot-disk-list", &format!("snapshot-uuid={snap}"), "vbd-params=userdevice", "--minimal"]);
    assert_eq!(listed.split(',').step_by(2).collect::<Vec<_>>(), ["0", "2", "3"]);
    let template = xe.val(&["snapshot-clone", &on_snap, "new-name-label=xe-disks-template"]);
    assert_eq!(xe.val(&["template-list", "name-label=xe-disks-template", "--minimal"]), template);
    xe.ok(&["template-param-set", &format!("uuid={template}"), "name-description=from a snapshot"]);
    let description = xe.val(&["template-param-get", "template=xe-disks-template", "param-name=name-description"]);
    assert_eq!(description, "from a snapshot");
    let not_one = xe.err(&["snapshot-destroy", &format!("uuid={template}")]);
    assert_eq!(
        not_one,
        format!("Error: This operation can only be performed on a VM snapshot. {template} is not a VM snapshot.\n")
    );
    let gone = xe.ok(&["template-uninstall", &format!("template-uuid={template}"), "--force"]);
    assert_eq!(gone.lines().filter(|l| l.starts_with("VDI: ")).count(), 3, "{gone}");
    assert!(!exists(xe, "vm", &template));

    let copy = xe.val(&["vm-copy", "vm=xe-disks", "new-name-label=xe-disks-copy", &format!("sr-uuid={sr}")]);
    let copied = xe.val(&[
        "vm-disk-list",
        &format!("uuid={copy}"),
        "vdi-params=is-a-snapshot",
        "vbd-params=userdevice",
        "--minimal",
    ]);
    assert_eq!(copied, "0,false,2,false,3,false", "three full copies");
    assert_eq!(xe.val(&["vm-param-get", &format!("uuid={copy}"), "param-name=name-label"]), "xe-disks-copy");

    // vm-uninstall: the VM, its snapshot, and their disks; the ISO and the copy's disks stay.
    let disks_of = |uuid: &str| -> Vec<String> {
        xe.val(&["vm-disk-list", &format!("uuid={uuid}"), "vbd-params=VDI", "vdi-params=uuid", "--minimal"])
            .split(',')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    let (mine, snapshots, copies) = (disks_of(&vm), disks_of(&snap), disks_of(&copy));
    let out = xe.ok(&["vm-uninstall", "vm=xe-disks", "force=true"]);
    let mut names = vec![(vm.as_str(), "$VM"), (snap.as_str(), "$SNAP")];
    names.extend(mine.iter().map(|v| (v.as_str(), "$DISK")));
    names.extend(snapshots.iter().map(|v| (v.as_str(), "$SNAPDISK")));
    expect![[r#"
        The following items are about to be destroyed
        VM : $VM (xe-disks)
        VDI: $DISK (Created by xe)
        VDI: $DISK (by-hand)
        VDI: $DISK (Created by xe)
        VM : $SNAP (xe-disks-snap)
        VDI: $SNAPDISK (Created by xe)
        VDI: $SNAPDISK (by-hand)
        VDI: $SNAPDISK (Created by xe)
        All objects destroyed
    "#]]
    .assert_eq(&masked(&out, &names));
    assert!(!exists(xe, "vm", &vm) && !exists(xe, "vm", &snap));
    for v in mine.iter().chain(&snapshots) {
        assert!(!exists(xe, "vdi", v), "{v} was not destroyed");
    }
    for v in &copies {
        assert!(exists(xe, "vdi", v), "the copy's disk {v} went too");
    }
    assert!(exists(xe, "vdi", iso));
    xe.ok(&["vm-uninstall", &format!("uuid={copy}"), "--force"]);
    assert!(copies.iter().all(|v| !exists(xe, "vdi", v)));
}

/// `sr-create` of an `ext` SR in a directory, `sr-probe`, destroy refused while plugged, forget, introduce,
/// `pbd-create`, `pbd-plug`, `pbd-unplug`, `sr-destroy`.
fn srs(xe: &Xe, dir: &std::path::Path) {
    let place = dir.join("ext-sr");
    let location = format!("device-config:location={}", place.display());
    let sr = xe.val(&["sr-create", "name-label=xe-ext", "type=ext", &location]);
    let on_sr = format!("uuid={sr}");
    assert!(place.join(".sr-uuid").exists(), "the SR's directory is made");
    assert_eq!(xe.val(&["sr-param-get", &on_sr, "param-name=type"]), "ext");
    let probe = xe.ok(&["sr-probe", "type=ext", &location]);
    assert!(probe.contains(&format!("<UUID>{sr}</UUID>")), "{probe}");
    let vdi = xe.val(&["vdi-create", &format!("sr-uuid={sr}"), "name-label=on-ext", "virtual-size=4MiB"]);
    assert!(place.join(format!("{vdi}.vhd")).exists());

    let pbd = xe.val(&["pbd-list", &format!("sr-uuid={sr}"), "--minimal"]);
    assert_eq!(pbd.len(), 36, "sr-create makes the PBD: {pbd:?}");
    assert_eq!(xe.val(&["pbd-param-get", &format!("uuid={pbd}"), "param-name=currently-attached"]), "true");
    assert_eq!(
        xe.err(&["sr-destroy", &on_sr]),
        format!(
            "The SR is still connected to a host via a PBD. It cannot be destroyed or forgotten.\nsr: {sr} (xe-ext)\n"
        )
    );
    let host = xe.val(&["host-list", "--minimal"]);
    let exists_already = xe.err(&["pbd-create", &format!("host-uuid={host}"), &format!("sr-uuid={sr}"), &location]);
    assert!(
        exists_already.starts_with("A PBD already exists connecting the SR to the server.\nsr: "),
        "{exists_already}"
    );
    let attached = xe.err(&["pbd-destroy", &format!("uuid={pbd}")]);
    assert!(attached.starts_with("You attempted an operation that was not allowed."), "{attached}");

    // Forget and introduce again: the records go and come back, the files stay.
    xe.ok(&["pbd-unplug", &format!("uuid={pbd}")]);
    assert_eq!(xe.val(&["pbd-param-get", &format!("uuid={pbd}"), "param-name=currently-attached"]), "false");
    xe.ok(&["sr-forget", &on_sr]);
    assert!(!exists(xe, "sr", &sr) && !exists(xe, "vdi", &vdi));
    assert!(place.join(format!("{vdi}.vhd")).exists());
    assert_eq!(xe.val(&["sr-introduce", &on_sr, "name-label=xe-ext-again", "type=ext"]), sr);
    let pbd = xe.val(&["pbd-create", &format!("host-uuid={host}"), &format!("sr-uuid={sr}"), &location]);
    xe.ok(&["pbd-plug", &format!("uuid={pbd}")]);
    assert!(exists(xe, "vdi", &vdi), "plugging the PBD scans the SR");

    // An SR with a VDI cannot be destroyed (as sm's FileSR); without it, it goes with its directory.
    xe.ok(&["pbd-unplug", &format!("uuid={pbd}")]);
    let not_empty = xe.err(&["sr-destroy", &on_sr]);
    assert_eq!(not_empty, "The SR operation cannot be performed because the SR is not empty.\n");
    xe.ok(&["pbd-plug", &format!("uuid={pbd}")]);
    xe.ok(&["vdi-destroy", &format!("uuid={vdi}")]);
    xe.ok(&["pbd-unplug", &format!("uuid={pbd}")]);
    xe.ok(&["sr-destroy", &on_sr]);
    assert!(!exists(xe, "sr", &sr) && !exists(xe, "pbd", &pbd));
    assert!(!place.exists(), "sr-destroy removes the SR's directory");

    let unknown = xe.err(&["sr-create", "name-label=x", "type=nfs"]);
    assert_eq!(unknown, "The SR could not be connected because the driver was not recognised.\ndriver: nfs\n");
}

/// xe's wording of what the command line gets wrong.
fn errors(xe: &Xe, on_sr: &str) {
    assert_eq!(
        xe.err(&["vdi-create", "name-label=x", "virtual-size=1GiB"]),
        "Required parameter not found: sr-uuid\nFor usage run: 'xe help'\n"
    );
    assert_eq!(
        xe.err(&["vdi-create", on_sr, "name-label=x", "virtual-size=12XB"]),
        "Error: Failed to parse field 'virtual-size': expecting an integer (possibly with suffix KiB, MiB, GiB, \
         TiB), got '12XB'\n"
    );
    assert_eq!(
        xe.err(&["vdi-create", on_sr, "name-label=x", "virtual-size=1", "type=scratch"]),
        "Error: Unknown vdi type: scratch\n"
    );
    assert_eq!(
        xe.err(&["vdi-create", on_sr, "name-label=x", "virtual-size=1", "sharable=maybe"]),
        "Error: Failed to parse parameter 'sharable': Expected 'true','t','yes','y','1','false','f','no','n','0' got \
         maybe\n"
    );
    let bad_uuid = xe.err(&["vdi-destroy", "uuid=00000000-0000-0000-0000-000000000000"]);
    assert_eq!(bad_uuid, "The uuid you supplied was invalid.\ntype: VDI\nuuid: 00000000-0000-0000-0000-000000000000\n");
    let no_vm = xe.err(&["vm-disk-add", "vm=nothing-such", "disk-size=1G"]);
    assert_eq!(no_vm, "Error: No matching VMs found\n");
}
