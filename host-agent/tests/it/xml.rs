//! Domain XML from `host_agent::xml`: snapshots of five typical guests, each checked against libvirt's schema twice
//! (libvirt's test driver with `VIR_DOMAIN_DEFINE_VALIDATE`, and `virt-xml-validate`), plus the owner round trip.
//!
//! Every test opens its own private test-driver host (`tests/data/testdriver-node.xml`), so they run in parallel
//! without seeing each other's domains and need no daemon. `virt-xml-validate` (libvirt-clients, with `xmllint` from
//! libxml2-utils) must be installed: a test that cannot run it fails rather than skips.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use expect_test::{ExpectFile, expect_file};
use host_agent::spec::{
    Accel, Action, BootDevice, CrashAction, Disk, DiskFormat, DiskKind, DiskSource, DomainSpec, Nic, Os, Target,
};
use host_agent::xml::{METADATA_NS, domain_xml, owner_of};
use virt::connect::Connect;
use virt::domain::Domain;

// ---- the four guests ----

fn platform(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn disk(position: u32, path: &str, format: DiskFormat, kind: DiskKind, readonly: bool) -> Disk {
    Disk { position, source: DiskSource::File(PathBuf::from(path)), format, kind, readonly }
}

fn nic(device: u32, mac: &str, bridge: Option<&str>, mtu: Option<u32>) -> Nic {
    Nic { device, mac: mac.into(), bridge: bridge.map(Into::into), mtu }
}

/// A tiny TCG guest booting a kernel directly, console logged, no disks or NICs: what CI boots for real.
fn qemu_tcg_direct() -> (DomainSpec, Target) {
    let spec = DomainSpec {
        uuid: "4b1f6a7e-0c2d-4e5f-8a9b-0c1d2e3f4a5b".into(),
        name: "xapi-4b1f6a7e-0c2d-4e5f-8a9b-0c1d2e3f4a5b".into(),
        title: "tiny direct".into(),
        owner: "0d6c5f52-1111-4222-8333-944455556666".into(),
        os: Os::Direct {
            kernel: "/var/lib/xapi-rs/guest/vmlinux-pvh".into(),
            ramdisk: Some("/var/lib/xapi-rs/guest/initramfs.cpio.gz".into()),
            cmdline: "console=ttyS0 quiet panic=-1 mode=stay".into(),
        },
        memory_max: 128 << 20,
        memory_target: 128 << 20,
        vcpus_max: 1,
        vcpus_at_startup: 1,
        platform: BTreeMap::new(),
        on_poweroff: Action::Destroy,
        on_reboot: Action::Restart,
        on_crash: CrashAction::Destroy,
        vnc_listen: None,
        serial_log: Some("/var/lib/xapi-rs/console/4b1f6a7e-0c2d-4e5f-8a9b-0c1d2e3f4a5b.log".into()),
        nics: vec![],
        disks: vec![],
    };
    (spec, Target::Qemu(Accel::Tcg))
}

/// A KVM HVM guest with everything: two disks (VHD, qcow2) and a CD-ROM, a bridged NIC with an MTU and a
/// user-mode one (given out of order), VNC, and most platform flags.
fn qemu_kvm_hvm() -> (DomainSpec, Target) {
    let spec = DomainSpec {
        uuid: "9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a".into(),
        name: "xapi-9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a".into(),
        title: "Windows Server (HVM)".into(),
        owner: "0d6c5f52-1111-4222-8333-944455556666".into(),
        os: Os::Hvm { boot_order: vec![BootDevice::Cdrom, BootDevice::Disk, BootDevice::Network] },
        memory_max: 1 << 30,
        memory_target: 768 << 20,
        vcpus_max: 4,
        vcpus_at_startup: 2,
        platform: platform(&[
            ("acpi", "1"),
            ("apic", "true"),
            ("pae", "true"),
            ("viridian", "true"),
            ("timeoffset", "-3600"),
            ("hpet", "false"),
            ("vga", "std"),
            ("videoram", "16"),
            ("usb", "true"),
            ("usb_tablet", "true"),
            ("nx", "true"),
            ("nested-virt", "false"),
        ]),
        on_poweroff: Action::Destroy,
        on_reboot: Action::Restart,
        on_crash: CrashAction::CoredumpAndRestart,
        vnc_listen: Some("127.0.0.1".into()),
        serial_log: None,
        nics: vec![nic(1, "52:54:00:9e:8d:02", None, None), nic(0, "52:54:00:9e:8d:01", Some("br0"), Some(9000))],
        disks: vec![
            disk(3, "/var/lib/xapi-rs/iso/install.iso", DiskFormat::Raw, DiskKind::Cdrom, true),
            disk(1, "/var/lib/xapi-rs/sr/data.qcow2", DiskFormat::Qcow2, DiskKind::Disk, false),
            disk(0, "/var/lib/xapi-rs/sr/system.vhd", DiskFormat::Vhd, DiskKind::Disk, false),
        ],
    };
    (spec, Target::Qemu(Accel::Kvm))
}

/// A Xen PV guest: direct kernel, ballooned down, VNC, two NICs (one without a bridge), a read-only disk and an
/// empty CD drive.
fn xen_pv() -> (DomainSpec, Target) {
    let spec = DomainSpec {
        uuid: "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d".into(),
        name: "xapi-1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d".into(),
        title: "Debian PV".into(),
        owner: "0d6c5f52-1111-4222-8333-944455556666".into(),
        os: Os::Direct {
            kernel: "/var/lib/xapi-rs/guest/vmlinuz".into(),
            ramdisk: Some("/var/lib/xapi-rs/guest/initrd.img".into()),
            cmdline: "console=hvc0 root=/dev/xvda1 ro".into(),
        },
        memory_max: 512 << 20,
        memory_target: 256 << 20,
        vcpus_max: 2,
        vcpus_at_startup: 2,
        // PV guests have no emulated platform: these must not show up.
        platform: platform(&[("viridian", "true"), ("hpet", "false"), ("usb_tablet", "true"), ("timeoffset", "0")]),
        on_poweroff: Action::Destroy,
        on_reboot: Action::Restart,
        on_crash: CrashAction::Preserve,
        vnc_listen: Some("127.0.0.1".into()),
        serial_log: Some("/var/lib/xapi-rs/console/1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d.log".into()),
        nics: vec![nic(0, "00:16:3e:1a:2b:01", Some("xenbr0"), Some(1500)), nic(1, "00:16:3e:1a:2b:02", None, None)],
        disks: vec![
            disk(0, "/var/lib/xapi-rs/sr/root.vhd", DiskFormat::Vhd, DiskKind::Disk, false),
            disk(1, "/var/lib/xapi-rs/sr/data.img", DiskFormat::Raw, DiskKind::Disk, true),
            Disk {
                position: 3,
                source: DiskSource::Empty,
                format: DiskFormat::Raw,
                kind: DiskKind::Cdrom,
                readonly: true,
            },
        ],
    };
    (spec, Target::Xen)
}

/// The tiny TCG guest with disks from a block server: a system disk file, two NBD exports on unix sockets (one
/// read-only, one the default export), and an empty CD drive.
fn qemu_tcg_nbd() -> (DomainSpec, Target) {
    let (mut spec, target) = qemu_tcg_direct();
    let nbd = |position, socket: &str, export: &str, readonly| Disk {
        position,
        source: DiskSource::Nbd { socket: PathBuf::from(socket), export: export.into() },
        // A block server serves raw data whatever the image's format.
        format: DiskFormat::Vhd,
        kind: DiskKind::Disk,
        readonly,
    };
    spec.disks = vec![
        disk(0, "/var/lib/xapi-rs/sr/system.img", DiskFormat::Raw, DiskKind::Disk, false),
        nbd(1, "/run/xapi-rs/nbd/2f6c1b9e.sock", "2f6c1b9e-vdi", false),
        nbd(2, "/run/xapi-rs/nbd/7d0a4c3b.sock", "", true),
        Disk { position: 3, source: DiskSource::Empty, format: DiskFormat::Raw, kind: DiskKind::Cdrom, readonly: true },
    ];
    (spec, target)
}

/// A Xen HVM guest: firmware boot, IDE disks below position 4 and a PV-only disk above, viridian, cirrus.
fn xen_hvm() -> (DomainSpec, Target) {
    let spec = DomainSpec {
        uuid: "c0ffee00-1234-4abc-9def-0123456789ab".into(),
        name: "xapi-c0ffee00-1234-4abc-9def-0123456789ab".into(),
        title: "Windows 10 (HVM)".into(),
        owner: "0d6c5f52-1111-4222-8333-944455556666".into(),
        os: Os::Hvm { boot_order: vec![BootDevice::Disk, BootDevice::Cdrom] },
        memory_max: 2 << 30,
        memory_target: 2 << 30,
        vcpus_max: 2,
        vcpus_at_startup: 1,
        platform: platform(&[
            ("pae", "0"),
            ("viridian", "1"),
            ("hpet", "0"),
            ("timeoffset", "120"),
            ("vga", "cirrus"),
            ("videoram", "8"),
            ("usb_tablet", "1"),
        ]),
        on_poweroff: Action::Destroy,
        on_reboot: Action::Destroy,
        on_crash: CrashAction::RenameRestart,
        vnc_listen: Some("127.0.0.1".into()),
        serial_log: Some("/var/lib/xapi-rs/console/c0ffee00-1234-4abc-9def-0123456789ab.log".into()),
        nics: vec![nic(0, "00:16:3e:c0:ff:01", Some("xenbr1"), Some(1500))],
        disks: vec![
            disk(0, "/var/lib/xapi-rs/sr/win.vhd", DiskFormat::Vhd, DiskKind::Disk, false),
            disk(5, "/var/lib/xapi-rs/sr/scratch.qcow2", DiskFormat::Qcow2, DiskKind::Disk, false),
            disk(3, "/var/lib/xapi-rs/iso/drivers.iso", DiskFormat::Raw, DiskKind::Cdrom, true),
        ],
    };
    (spec, Target::Xen)
}

// ---- helpers ----

fn xml_of(spec: &DomainSpec, target: Target) -> String {
    domain_xml(spec, target).expect("the spec has XML")
}

/// A fresh, private libvirt test-driver host.
fn test_host() -> Connect {
    let node = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/testdriver-node.xml");
    let uri = format!("test://{}", node.display());
    Connect::open(Some(&uri)).unwrap_or_else(|e| panic!("cannot open libvirt's test driver at {uri}: {e}"))
}

fn define_validated(conn: &Connect, xml: &str) -> Result<Domain, virt::error::Error> {
    conn.define_domain_xml_flags(xml, virt::sys::VIR_DOMAIN_DEFINE_VALIDATE)
}

/// Runs `virt-xml-validate FILE domain`: `Err` with its output if the XML is invalid; panics if it cannot run.
fn virt_xml_validate(xml: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("domain.xml");
    std::fs::write(&file, xml).expect("writing the domain XML");
    let output = match Command::new("virt-xml-validate").arg(&file).arg("domain").output() {
        Ok(output) => output,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "virt-xml-validate is not on PATH, so the domain XML cannot be checked against libvirt's schema: \
             install libvirt-clients and libxml2-utils (CI does)"
        ),
        Err(e) => panic!("cannot run virt-xml-validate: {e}"),
    };
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
    }
}

fn assert_contains(haystack: &str, needle: &str) {
    assert!(haystack.contains(needle), "expected {needle:?} in:\n{haystack}");
}

fn snapshot(case: fn() -> (DomainSpec, Target), expected: ExpectFile) {
    let (spec, target) = case();
    expected.assert_eq(&xml_of(&spec, target));
}

/// Defines the guest's XML with schema validation on a private test host, and checks that what libvirt reads back
/// keeps the parts that matter.
fn round_trip_on_test_driver(case: fn() -> (DomainSpec, Target)) {
    let (spec, target) = case();
    let xml = xml_of(&spec, target);
    let conn = test_host();
    let dom = define_validated(&conn, &xml).unwrap_or_else(|e| panic!("libvirt refused the XML: {e}\n{xml}"));
    let dumped = dom.xml_desc(0).expect("the defined domain's XML");

    assert_eq!(dom.name().expect("name"), spec.name);
    assert_eq!(dom.uuid_string().expect("uuid"), spec.uuid);
    let domain_type = match target {
        Target::Qemu(Accel::Tcg) => "qemu",
        Target::Qemu(Accel::Kvm) => "kvm",
        Target::Xen => "xen",
    };
    assert_contains(&dumped, &format!("<domain type='{domain_type}'>"));
    assert_contains(&dumped, &format!("<title>{}</title>", spec.title));
    assert_contains(&dumped, &format!("<memory unit='KiB'>{}</memory>", spec.memory_max / 1024));
    assert_contains(&dumped, &format!("<currentMemory unit='KiB'>{}</currentMemory>", spec.memory_target / 1024));
    let vcpu = if spec.vcpus_at_startup == spec.vcpus_max {
        format!("<vcpu placement='static'>{}</vcpu>", spec.vcpus_max)
    } else {
        format!("<vcpu placement='static' current='{}'>{}</vcpu>", spec.vcpus_at_startup, spec.vcpus_max)
    };
    assert_contains(&dumped, &vcpu);
    match &spec.os {
        Os::Direct { kernel, ramdisk, cmdline } => {
            assert_contains(&dumped, &format!("<kernel>{}</kernel>", kernel.display()));
            if let Some(ramdisk) = ramdisk {
                assert_contains(&dumped, &format!("<initrd>{}</initrd>", ramdisk.display()));
            }
            assert_contains(&dumped, &format!("<cmdline>{cmdline}</cmdline>"));
        }
        Os::Hvm { boot_order } => {
            let boots: Vec<&str> = dumped.lines().map(str::trim).filter(|l| l.starts_with("<boot dev=")).collect();
            assert_eq!(boots.len(), boot_order.len(), "boot devices in:\n{dumped}");
        }
    }
    assert_eq!(dumped.matches("<disk type=").count(), spec.disks.len(), "disks in:\n{dumped}");
    for d in &spec.disks {
        match &d.source {
            DiskSource::File(p) if !p.as_os_str().is_empty() => {
                assert_contains(&dumped, &format!("<source file='{}'/>", p.display()));
            }
            DiskSource::File(_) | DiskSource::Empty => {}
            DiskSource::Nbd { socket, export } => {
                let name = if export.is_empty() { String::new() } else { format!(" name='{export}'") };
                assert_contains(&dumped, &format!("<source protocol='nbd'{name}>"));
                assert_contains(&dumped, &format!("<host transport='unix' socket='{}'/>", socket.display()));
            }
        }
    }
    assert_eq!(dumped.matches("<interface type=").count(), spec.nics.len(), "interfaces in:\n{dumped}");
    for n in &spec.nics {
        assert_contains(&dumped, &format!("<mac address='{}'/>", n.mac));
    }
    assert_eq!(owner_of(&dumped).as_deref(), Some(spec.owner.as_str()), "owner in:\n{dumped}");
    // libvirt hands the element back without its namespace, having found it by the namespace.
    let element = dom
        .metadata(virt::sys::VIR_DOMAIN_METADATA_ELEMENT as i32, Some(METADATA_NS), 0)
        .expect("libvirt finds our metadata element by its namespace");
    assert_eq!(element, format!("<owner>{}</owner>", spec.owner));
}

fn schema_valid(case: fn() -> (DomainSpec, Target)) {
    let (spec, target) = case();
    let xml = xml_of(&spec, target);
    if let Err(report) = virt_xml_validate(&xml) {
        panic!("virt-xml-validate rejected the XML:\n{report}\n{xml}");
    }
}

// ---- snapshots ----

#[test]
fn snapshot_qemu_tcg_direct_kernel() {
    snapshot(qemu_tcg_direct, expect_file!["../data/xml/qemu-tcg-direct.xml"]);
}

#[test]
fn snapshot_qemu_kvm_hvm() {
    snapshot(qemu_kvm_hvm, expect_file!["../data/xml/qemu-kvm-hvm.xml"]);
}

#[test]
fn snapshot_qemu_tcg_nbd_disks() {
    snapshot(qemu_tcg_nbd, expect_file!["../data/xml/qemu-tcg-nbd.xml"]);
}

#[test]
fn snapshot_xen_pv() {
    snapshot(xen_pv, expect_file!["../data/xml/xen-pv.xml"]);
}

#[test]
fn snapshot_xen_hvm() {
    snapshot(xen_hvm, expect_file!["../data/xml/xen-hvm.xml"]);
}

// ---- libvirt's test driver, validating ----

#[test]
fn test_driver_validates_and_round_trips_qemu_tcg_direct_kernel() {
    round_trip_on_test_driver(qemu_tcg_direct);
}

#[test]
fn test_driver_validates_and_round_trips_qemu_kvm_hvm() {
    round_trip_on_test_driver(qemu_kvm_hvm);
}

#[test]
fn test_driver_validates_and_round_trips_qemu_tcg_nbd_disks() {
    round_trip_on_test_driver(qemu_tcg_nbd);
}

#[test]
fn test_driver_validates_and_round_trips_xen_pv() {
    round_trip_on_test_driver(xen_pv);
}

#[test]
fn test_driver_validates_and_round_trips_xen_hvm() {
    round_trip_on_test_driver(xen_hvm);
}

/// Proves that the validation above is real: libvirt's parser alone would ignore an unknown element.
#[test]
fn test_driver_rejects_an_unknown_element() {
    let (spec, target) = qemu_tcg_direct();
    let xml = xml_of(&spec, target).replace("</domain>", "  <bogus/>\n</domain>");
    let conn = test_host();
    assert!(conn.define_domain_xml(&xml).is_ok(), "without validation the bogus element is ignored");
    let conn = test_host();
    let err = define_validated(&conn, &xml).map(|_| ()).expect_err("validation rejects the bogus element");
    assert!(err.to_string().contains("bogus"), "unexpected error: {err}");
}

// ---- virt-xml-validate ----

#[test]
fn virt_xml_validate_accepts_qemu_tcg_direct_kernel() {
    schema_valid(qemu_tcg_direct);
}

#[test]
fn virt_xml_validate_accepts_qemu_kvm_hvm() {
    schema_valid(qemu_kvm_hvm);
}

#[test]
fn virt_xml_validate_accepts_qemu_tcg_nbd_disks() {
    schema_valid(qemu_tcg_nbd);
}

#[test]
fn virt_xml_validate_accepts_xen_pv() {
    schema_valid(xen_pv);
}

#[test]
fn virt_xml_validate_accepts_xen_hvm() {
    schema_valid(xen_hvm);
}

#[test]
fn virt_xml_validate_rejects_an_unknown_element() {
    let (spec, target) = xen_hvm();
    let xml = xml_of(&spec, target).replace("</devices>", "  <bogus/>\n  </devices>");
    assert!(virt_xml_validate(&xml).is_err(), "virt-xml-validate accepted a bogus device");
}

// ---- owner and escaping ----

#[test]
fn owner_round_trips_through_our_xml() {
    for case in [qemu_tcg_direct, qemu_kvm_hvm, qemu_tcg_nbd, xen_pv, xen_hvm] {
        let (spec, target) = case();
        assert_eq!(owner_of(&xml_of(&spec, target)), Some(spec.owner));
    }
}

#[test]
fn markup_characters_in_title_owner_and_paths_survive_libvirt() {
    let (mut spec, target) = qemu_tcg_direct();
    spec.title = r#"a <b> & 'c' "d""#.into();
    spec.owner = r#"<owner attr="x"> & 'y' ]]>"#.into();
    spec.os = Os::Direct {
        kernel: "/var/lib/xapi-rs/it's a <kernel> & more".into(),
        ramdisk: None,
        cmdline: r#"console=ttyS0 msg="<&>" 'q'"#.into(),
    };
    spec.serial_log = Some("/var/log/xapi-rs/\"quoted\" & <angled>.log".into());
    let xml = xml_of(&spec, target);
    assert_eq!(owner_of(&xml).as_deref(), Some(spec.owner.as_str()));
    if let Err(report) = virt_xml_validate(&xml) {
        panic!("virt-xml-validate rejected the XML:\n{report}\n{xml}");
    }

    let conn = test_host();
    let dom = define_validated(&conn, &xml).unwrap_or_else(|e| panic!("libvirt refused the XML: {e}\n{xml}"));
    let title = dom.metadata(virt::sys::VIR_DOMAIN_METADATA_TITLE as i32, None, 0).expect("title");
    assert_eq!(title, spec.title);
    let dumped = dom.xml_desc(0).expect("the defined domain's XML");
    assert_eq!(owner_of(&dumped).as_deref(), Some(spec.owner.as_str()), "owner in:\n{dumped}");
    // libvirt escapes quotes in text too.
    assert_contains(&dumped, "<kernel>/var/lib/xapi-rs/it&apos;s a &lt;kernel&gt; &amp; more</kernel>");
    assert_contains(&dumped, "<cmdline>console=ttyS0 msg=&quot;&lt;&amp;&gt;&quot; &apos;q&apos;</cmdline>");
    assert_contains(&dumped, "file='/var/log/xapi-rs/&quot;quoted&quot; &amp; &lt;angled&gt;.log'");
}

#[test]
fn multi_line_title_becomes_one_line() {
    let (mut spec, target) = xen_pv();
    spec.title = "first\nsecond\r\nthird".into();
    let xml = xml_of(&spec, target);
    assert_contains(&xml, "<title>first second  third</title>");
    let conn = test_host();
    define_validated(&conn, &xml).unwrap_or_else(|e| panic!("libvirt refused the XML: {e}\n{xml}"));
}
