//! libvirt domain XML from a [`DomainSpec`], and the owner read back from a domain's XML.
//!
//! [`domain_xml`] is a pure function: it touches neither libvirt nor the file system, so every path in the spec
//! must already be absolute (libvirt's schema rejects relative kernel, disk and log paths). The output is valid
//! against libvirt's `domain.rng` for all four flavours it knows:
//!
//! | spec                            | domain                                                                    |
//! |---------------------------------|---------------------------------------------------------------------------|
//! | `Target::Qemu(_)`, `Os::Direct` | `type='qemu'`/`'kvm'`, `hvm` on `pc`, `<kernel>`, `<initrd>`, `<cmdline>` |
//! | `Target::Qemu(_)`, `Os::Hvm`    | `type='qemu'`/`'kvm'`, `hvm` on `pc`, a `<boot dev>` per boot device      |
//! | `Target::Xen`, `Os::Direct`     | `type='xen'`, PV (`xenpv`, `linux`), `<kernel>`, `<initrd>`, `<cmdline>`  |
//! | `Target::Xen`, `Os::Hvm`        | `type='xen'`, HVM (`xenfv`, `hvm`), `hvmloader`, a `<boot dev>` each      |
//!
//! No `<emulator>` is written: libvirt picks its default for the domain type. A boot device repeated in the boot
//! order is written once, at its first place.
//!
//! # Devices
//!
//! *x* below is a position as a letter, as libvirt names disks: 0 → `a`, 25 → `z`, 26 → `aa`.
//!
//! - **Disk at position *n***: QEMU `vd`*x* on `virtio`; Xen PV `xvd`*x* on `xen`; Xen HVM `hd`*x* on `ide` (emulated
//!   and PV) if *n* < 4, else `xvd`*x* on `xen` (PV only). [`disk_dev`] names it.
//! - **CD-ROM at *n***: QEMU `hd`*x* on `ide` (the `pc` machine has one IDE controller, so *n* < 4); Xen as a disk.
//!   Always `<readonly/>`.
//! - **Source** ([`DiskSource`]), written by [`disk_xml`], which both the domain and hot-plug use:
//!   - `File(path)`: `<disk type='file'>`, `<source file='PATH'/>`;
//!   - `Nbd { socket, export }`: `<disk type='network'>`, `<driver name='qemu' type='raw' cache='none'/>` (a block
//!     server always serves raw data, whatever the disk's format), `<source protocol='nbd' name='EXPORT'>` (no `name`
//!     for the default export `""`) holding `<host transport='unix' socket='SOCKET'/>`. `cache='none'`: QEMU keeps
//!     no host page cache of its own and passes the guest's flushes on to the server (`io` is left out: QEMU applies
//!     it to local files only). **QEMU only**: libvirt's libxl driver refuses every network disk but RBD, so on Xen
//!     [`domain_xml`] and [`disk_xml`] answer [`XmlError::NbdOnXen`]. No `<reconnect delay>` either: libvirt 9.0
//!     (Debian 12) has none for NBD (later releases do). QEMU still connects again by itself once the server is
//!     back (measured: within 0.4 s of a restart after 20 s away), but requests made while it is away fail with an
//!     I/O error in the guest, where `reconnect delay` would have held them;
//!   - `Empty`, or a file with an empty path: no `<source>` (an empty CD drive).
//! - **Format**: `<driver name='qemu'>` with `type` `raw`, `qcow2`, and for VHD `vpc` on QEMU but `vhd` on Xen
//!   (libxl's qdisk backend knows VHD only by that name).
//! - **NIC with a bridge**: `type='bridge'`; on QEMU a virtio model, on Xen no model (libxl's default: a PV `vif`,
//!   plus an emulated one for HVM); `<mtu>` if set.
//! - **NIC without a bridge**: QEMU `type='user'` (slirp) with a virtio model and no `<mtu>` (libvirt refuses one
//!   there); Xen has no user-mode network, so the NIC goes on bridge `xenbr0`.
//! - **Console**: always there, as on XenServer. QEMU and Xen HVM: a pty serial port and a serial console; Xen PV: a
//!   pty xen console. `serial_log` adds `<log file append='off'/>` to the serial port (PV: the console); libxl
//!   ignores it.
//! - **`vnc_listen`**: `<graphics type='vnc' port='-1' autoport='yes'>` listening on that address, and a video card
//!   (`platform:vga`; `xen` for PV, which libxl turns into a vfb).
//! - **Balloon**: QEMU `<memballoon model='virtio'>` with statistics every 2 s; Xen gets libvirt's implicit one.
//!
//! Disks are written in position order and NICs in `device` order.
//!
//! # Platform flags
//!
//! XenAPI's `platform` map holds strings; a boolean flag is true for `true`/`1` and false for `false`/`0` (any
//! case); any other value counts as absent. A PV guest has no emulated platform, so only `timeoffset` applies to it;
//! the others apply to QEMU and Xen HVM.
//!
//! | key          | default   | domain XML                                                                           |
//! |--------------|-----------|--------------------------------------------------------------------------------------|
//! | `acpi`       | on        | `<features><acpi/>`                                                                  |
//! | `apic`       | on        | `<features><apic/>`                                                                  |
//! | `pae`        | on        | `<features><pae/>`                                                                   |
//! | `viridian`   | off       | QEMU: `<hyperv>`: `relaxed`, `vapic`, `spinlocks` (8191 retries); Xen: `<viridian/>` |
//! | `hpet`       | libvirt's | `false` → `<timer name='hpet' present='no'/>`; `true` → `present='yes'`              |
//! | `timeoffset` | utc       | seconds → `<clock offset='variable' adjustment='N' basis='utc'/>`                    |
//! | `vga`        | `std`     | `std` → video model `vga`, `cirrus` → `cirrus`, else `vga` (only with VNC)           |
//! | `videoram`   | libvirt's | MiB → the video model's `vram` in KiB                                                |
//! | `usb`        | on        | `false` → no USB at all, so no tablet                                                |
//! | `usb_tablet` | off       | `true` → `<input type='tablet' bus='usb'/>` (QEMU: on a `piix3-uhci` controller)     |
//! | others       |           | ignored: `nx`, `nested-virt`, `cores-per-socket`, …                                  |
//!
//! `offset='variable'` makes libvirt keep the guest's RTC writes in the adjustment, as XenAPI keeps them in
//! `timeoffset`. Without a tablet, QEMU gets `<controller type='usb' model='none'/>`: no USB controller at all.
//!
//! # Actions
//!
//! `on_poweroff`/`on_reboot` are `destroy` or `restart`; `on_crash` maps [`CrashAction`] to `destroy`,
//! `coredump-destroy`, `restart`, `coredump-restart`, `preserve` or `rename-restart`, all of which libvirt's
//! schema accepts in `<on_crash>` (the coredump ones only there).
//!
//! # Ownership
//!
//! `<metadata>` holds `<xapi:owner xmlns:xapi="`[`METADATA_NS`]`">OWNER</xapi:owner>`, which [`owner_of`] reads
//! back (from our XML or from libvirt's `dumpxml`), so that a daemon only ever touches its own domains.
//!
//! Text is made safe for XML: characters XML 1.0 cannot carry are replaced by U+FFFD, a title's line breaks become
//! spaces (libvirt refuses multi-line titles), and non-UTF-8 paths are converted lossily.
//!
//! Out-of-range numbers are clamped rather than refused: `<currentMemory>` is at most `<memory>`, at least one
//! vCPU is configured, and `VCPUs_at_startup` is between 1 and `VCPUs_max`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use quick_xml::escape::escape;
use serde::{Deserialize, Serialize};

use crate::spec::{
    Accel, Action, BootDevice, CrashAction, Disk, DiskFormat, DiskKind, DiskSource, DomainSpec, Nic, Os, Target,
};

mod read;

pub(crate) use read::disk_fragment;
pub use read::{LiveDisk, flavour_of, live_disks, owner_of};

/// The XML namespace of our element in a domain's `<metadata>`.
pub const METADATA_NS: &str = "https://xapi-rs.dev/xmlns/domain/1";

/// Our element in `<metadata>`, and the attribute binding its prefix to [`METADATA_NS`]. Readers must not rely on
/// the prefix: [`owner_of`] resolves the namespace.
const OWNER_ELEMENT: &str = "xapi:owner";
const OWNER_XMLNS: &str = "xmlns:xapi";
/// Xen's HVM firmware, as libvirt's libxl driver reports it.
const XEN_HVMLOADER: &str = "/usr/lib/xen/boot/hvmloader";
/// The bridge a Xen NIC without one goes on (libxl has no user-mode networking).
const XEN_DEFAULT_BRIDGE: &str = "xenbr0";
/// Hyper-V spinlock retries for `viridian`: Windows' and QEMU's usual value (libvirt wants at least 4095).
const HYPERV_SPINLOCK_RETRIES: u32 = 8191;
/// How many disks one IDE controller holds (`hda`..`hdd`).
const IDE_SLOTS: u32 = 4;

/// Why a spec has no XML.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// libvirt's libxl driver accepts no network disk but RBD.
    #[error("disk {position} is an NBD export, which libvirt's Xen driver cannot attach (NBD disks need QEMU)")]
    NbdOnXen { position: u32 },
    /// libvirt handed back XML that is not well-formed (never seen; reported rather than read as "no disks").
    #[error("libvirt's domain XML is not well-formed: {0}")]
    Unreadable(String),
}

/// The libvirt domain XML for `spec` on `target`.
pub fn domain_xml(spec: &DomainSpec, target: Target) -> Result<String, XmlError> {
    let flavour = Flavour::of(spec, target);
    let platform = Platform::parse(&spec.platform);
    let mut out = String::new();
    domain(spec, flavour, &platform)?.write(&mut out, 0);
    Ok(out)
}

/// One `<disk>` element, exactly as [`domain_xml`] writes it into a domain of this flavour: what hot-plug
/// (`virDomainAttachDeviceFlags`) and media changes (`virDomainUpdateDeviceFlags`) send.
pub fn disk_xml(disk: &Disk, flavour: Flavour) -> Result<String, XmlError> {
    let mut out = String::new();
    disk_element(disk, flavour)?.write(&mut out, 0);
    Ok(out)
}

/// The target device libvirt knows the disk at `position` by (`vdb`, `hdc`, `xvda`). The guest may name it
/// differently: Linux names virtio disks in the order they appear.
pub fn disk_dev(position: u32, kind: DiskKind, flavour: Flavour) -> String {
    let (prefix, _) = disk_bus(position, kind, flavour);
    format!("{prefix}{}", disk_letters(position))
}

/// What kind of domain a spec becomes on a target: what decides how its devices are written. For a running domain,
/// [`flavour_of`] reads it back from the domain's XML.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Flavour {
    Qemu(Accel),
    XenPv,
    XenHvm,
}

impl Flavour {
    pub fn of(spec: &DomainSpec, target: Target) -> Flavour {
        match (target, &spec.os) {
            (Target::Qemu(accel), _) => Flavour::Qemu(accel),
            (Target::Xen, Os::Direct { .. }) => Flavour::XenPv,
            (Target::Xen, Os::Hvm { .. }) => Flavour::XenHvm,
        }
    }

    /// An emulated PC (with firmware, features, timers, USB and a video card), as opposed to a Xen PV guest.
    fn is_full(self) -> bool {
        self != Flavour::XenPv
    }
}

/// The `platform` flags this module understands, with their defaults applied.
#[derive(Debug, Clone, PartialEq)]
struct Platform {
    acpi: bool,
    apic: bool,
    pae: bool,
    viridian: bool,
    hpet: Option<bool>,
    timeoffset: Option<i64>,
    vga: &'static str,
    videoram_mib: Option<u64>,
    usb_tablet: bool,
}

impl Platform {
    fn parse(map: &BTreeMap<String, String>) -> Platform {
        let flag = |key: &str| {
            let value = map.get(key)?.trim();
            if value.eq_ignore_ascii_case("true") || value == "1" {
                Some(true)
            } else if value.eq_ignore_ascii_case("false") || value == "0" {
                Some(false)
            } else {
                None
            }
        };
        let number = |key: &str| map.get(key).and_then(|v| v.trim().parse::<i64>().ok());
        Platform {
            acpi: flag("acpi").unwrap_or(true),
            apic: flag("apic").unwrap_or(true),
            pae: flag("pae").unwrap_or(true),
            viridian: flag("viridian").unwrap_or(false),
            hpet: flag("hpet"),
            timeoffset: number("timeoffset"),
            vga: match map.get("vga").map(|v| v.trim()) {
                Some(v) if v.eq_ignore_ascii_case("cirrus") => "cirrus",
                _ => "vga",
            },
            videoram_mib: number("videoram").and_then(|n| u64::try_from(n).ok()).filter(|&n| n > 0),
            usb_tablet: flag("usb") != Some(false) && flag("usb_tablet") == Some(true),
        }
    }
}

fn domain(spec: &DomainSpec, flavour: Flavour, platform: &Platform) -> Result<Element, XmlError> {
    let domain_type = match flavour {
        Flavour::Qemu(Accel::Tcg) => "qemu",
        Flavour::Qemu(Accel::Kvm) => "kvm",
        Flavour::XenPv | Flavour::XenHvm => "xen",
    };
    let title = spec.title.replace(['\r', '\n'], " ");
    let max_kib = spec.memory_max / 1024;
    let vcpus_max = spec.vcpus_max.max(1);
    let vcpus = spec.vcpus_at_startup.clamp(1, vcpus_max);
    let mut vcpu = el("vcpu").attr("placement", "static");
    if vcpus != vcpus_max {
        vcpu = vcpu.attr("current", vcpus);
    }
    Ok(el("domain")
        .attr("type", domain_type)
        .child(el("name").text(&spec.name))
        .child(el("uuid").text(&spec.uuid))
        .child_if(!title.is_empty(), || el("title").text(title))
        .child(el("metadata").child(el(OWNER_ELEMENT).attr(OWNER_XMLNS, METADATA_NS).text(&spec.owner)))
        .child(el("memory").attr("unit", "KiB").text(max_kib))
        .child(el("currentMemory").attr("unit", "KiB").text((spec.memory_target / 1024).min(max_kib)))
        .child(vcpu.text(vcpus_max))
        .child(os(&spec.os, flavour))
        .child_opt(features(flavour, platform))
        .child(clock(flavour, platform))
        .child(el("on_poweroff").text(action(spec.on_poweroff)))
        .child(el("on_reboot").text(action(spec.on_reboot)))
        .child(el("on_crash").text(crash_action(spec.on_crash)))
        .child(devices(spec, flavour, platform)?))
}

fn os(os: &Os, flavour: Flavour) -> Element {
    let os_type = match flavour {
        Flavour::Qemu(_) => el("type").attr("arch", "x86_64").attr("machine", "pc").text("hvm"),
        Flavour::XenPv => el("type").attr("arch", "x86_64").attr("machine", "xenpv").text("linux"),
        Flavour::XenHvm => el("type").attr("arch", "x86_64").attr("machine", "xenfv").text("hvm"),
    };
    let element = el("os")
        .child(os_type)
        .child_if(flavour == Flavour::XenHvm, || el("loader").attr("type", "rom").text(XEN_HVMLOADER));
    match os {
        Os::Direct { kernel, ramdisk, cmdline } => element
            .child(el("kernel").text(path(kernel)))
            .child_opt(ramdisk.as_ref().map(|r| el("initrd").text(path(r))))
            .child_if(!cmdline.is_empty(), || el("cmdline").text(cmdline)),
        Os::Hvm { boot_order } => {
            // A repeated device adds nothing to the order (and libvirt keeps only the first four entries).
            let mut seen = Vec::new();
            let unique = boot_order.iter().filter(|&&device| {
                let first = !seen.contains(&device);
                seen.push(device);
                first
            });
            element.children(unique.map(|device| {
                let dev = match device {
                    BootDevice::Disk => "hd",
                    BootDevice::Cdrom => "cdrom",
                    BootDevice::Network => "network",
                };
                el("boot").attr("dev", dev)
            }))
        }
    }
}

/// `<features>`, or `None` for a PV guest or when every feature is off.
fn features(flavour: Flavour, platform: &Platform) -> Option<Element> {
    if !flavour.is_full() {
        return None;
    }
    let viridian = || match flavour {
        Flavour::Qemu(_) => el("hyperv")
            .child(el("relaxed").attr("state", "on"))
            .child(el("vapic").attr("state", "on"))
            .child(el("spinlocks").attr("state", "on").attr("retries", HYPERV_SPINLOCK_RETRIES)),
        Flavour::XenPv | Flavour::XenHvm => el("viridian"),
    };
    let features = el("features")
        .child_if(platform.acpi, || el("acpi"))
        .child_if(platform.apic, || el("apic"))
        .child_if(platform.pae, || el("pae"))
        .child_if(platform.viridian, viridian);
    (!features.children.is_empty()).then_some(features)
}

fn clock(flavour: Flavour, platform: &Platform) -> Element {
    let clock = match platform.timeoffset {
        Some(seconds) => el("clock").attr("offset", "variable").attr("adjustment", seconds).attr("basis", "utc"),
        None => el("clock").attr("offset", "utc"),
    };
    let hpet = platform.hpet.filter(|_| flavour.is_full());
    clock.child_opt(hpet.map(|on| el("timer").attr("name", "hpet").attr("present", if on { "yes" } else { "no" })))
}

fn action(action: Action) -> &'static str {
    match action {
        Action::Destroy => "destroy",
        Action::Restart => "restart",
    }
}

fn crash_action(action: CrashAction) -> &'static str {
    match action {
        CrashAction::Destroy => "destroy",
        CrashAction::CoredumpAndDestroy => "coredump-destroy",
        CrashAction::Restart => "restart",
        CrashAction::CoredumpAndRestart => "coredump-restart",
        CrashAction::Preserve => "preserve",
        CrashAction::RenameRestart => "rename-restart",
    }
}

fn devices(spec: &DomainSpec, flavour: Flavour, platform: &Platform) -> Result<Element, XmlError> {
    let mut disks: Vec<&Disk> = spec.disks.iter().collect();
    disks.sort_by_key(|d| d.position);
    let mut nics: Vec<&Nic> = spec.nics.iter().collect();
    nics.sort_by_key(|n| n.device);
    let log = spec.serial_log.as_deref().map(|p| el("log").attr("file", path(p)).attr("append", "off"));

    let disks = disks.into_iter().map(|d| disk_element(d, flavour)).collect::<Result<Vec<_>, _>>()?;
    let mut devices = el("devices").children(disks);
    if let Flavour::Qemu(_) = flavour {
        let model = if platform.usb_tablet { "piix3-uhci" } else { "none" };
        devices = devices.child(el("controller").attr("type", "usb").attr("index", 0).attr("model", model));
    }
    devices = devices.children(nics.into_iter().map(|n| nic(n, flavour)));
    devices = match flavour {
        Flavour::XenPv => devices.child(
            el("console").attr("type", "pty").child_opt(log).child(el("target").attr("type", "xen").attr("port", 0)),
        ),
        Flavour::Qemu(_) | Flavour::XenHvm => devices
            .child(el("serial").attr("type", "pty").child_opt(log).child(el("target").attr("port", 0)))
            .child(el("console").attr("type", "pty").child(el("target").attr("type", "serial").attr("port", 0))),
    };
    devices = devices
        .child_if(flavour.is_full() && platform.usb_tablet, || el("input").attr("type", "tablet").attr("bus", "usb"));
    if let Some(address) = &spec.vnc_listen {
        devices = devices
            .child(
                el("graphics")
                    .attr("type", "vnc")
                    .attr("port", -1)
                    .attr("autoport", "yes")
                    .attr("listen", address)
                    .child(el("listen").attr("type", "address").attr("address", address)),
            )
            .child(el("video").child(video_model(flavour, platform)));
    }
    Ok(devices.child_if(matches!(flavour, Flavour::Qemu(_)), || {
        el("memballoon").attr("model", "virtio").child(el("stats").attr("period", 2))
    }))
}

fn video_model(flavour: Flavour, platform: &Platform) -> Element {
    if flavour == Flavour::XenPv {
        return el("model").attr("type", "xen");
    }
    let model = el("model").attr("type", platform.vga);
    match platform.videoram_mib.and_then(|mib| mib.checked_mul(1024)) {
        Some(kib) => model.attr("vram", kib),
        None => model,
    }
}

/// The device name prefix and bus of a disk.
fn disk_bus(position: u32, kind: DiskKind, flavour: Flavour) -> (&'static str, &'static str) {
    match (flavour, kind) {
        (Flavour::Qemu(_), DiskKind::Disk) => ("vd", "virtio"),
        (Flavour::Qemu(_), DiskKind::Cdrom) => ("hd", "ide"),
        (Flavour::XenHvm, _) if position < IDE_SLOTS => ("hd", "ide"),
        (Flavour::XenPv | Flavour::XenHvm, _) => ("xvd", "xen"),
    }
}

fn disk_element(disk: &Disk, flavour: Flavour) -> Result<Element, XmlError> {
    let (_, bus) = disk_bus(disk.position, disk.kind, flavour);
    let format = match (flavour, disk.format) {
        (_, DiskFormat::Raw) => "raw",
        (_, DiskFormat::Qcow2) => "qcow2",
        (Flavour::Qemu(_), DiskFormat::Vhd) => "vpc",
        (Flavour::XenPv | Flavour::XenHvm, DiskFormat::Vhd) => "vhd",
    };
    let (device, readonly) = match disk.kind {
        DiskKind::Disk => ("disk", disk.readonly),
        DiskKind::Cdrom => ("cdrom", true),
    };
    let (disk_type, driver, source) = match &disk.source {
        DiskSource::File(p) => {
            let source = Some(el("source").attr("file", path(p))).filter(|_| !p.as_os_str().is_empty());
            ("file", el("driver").attr("name", "qemu").attr("type", format), source)
        }
        DiskSource::Nbd { .. } if !matches!(flavour, Flavour::Qemu(_)) => {
            return Err(XmlError::NbdOnXen { position: disk.position });
        }
        DiskSource::Nbd { socket, export } => {
            let source = el("source")
                .attr("protocol", "nbd")
                .attr_if(!export.is_empty(), "name", export)
                .child(el("host").attr("transport", "unix").attr("socket", path(socket)));
            ("network", el("driver").attr("name", "qemu").attr("type", "raw").attr("cache", "none"), Some(source))
        }
        DiskSource::Empty => ("file", el("driver").attr("name", "qemu").attr("type", format), None),
    };
    Ok(el("disk")
        .attr("type", disk_type)
        .attr("device", device)
        .child(driver)
        .child_opt(source)
        .child(el("target").attr("dev", disk_dev(disk.position, disk.kind, flavour)).attr("bus", bus))
        .child_if(readonly, || el("readonly")))
}

fn nic(nic: &Nic, flavour: Flavour) -> Element {
    let bridge = match (flavour, &nic.bridge) {
        (_, Some(bridge)) => Some(bridge.as_str()),
        (Flavour::Qemu(_), None) => None,
        (Flavour::XenPv | Flavour::XenHvm, None) => Some(XEN_DEFAULT_BRIDGE),
    };
    let qemu = matches!(flavour, Flavour::Qemu(_));
    el("interface")
        .attr("type", if bridge.is_some() { "bridge" } else { "user" })
        .child(el("mac").attr("address", &nic.mac))
        .child_opt(bridge.map(|b| el("source").attr("bridge", b)))
        .child_if(qemu, || el("model").attr("type", "virtio"))
        .child_opt(nic.mtu.filter(|_| bridge.is_some()).map(|mtu| el("mtu").attr("size", mtu)))
}

/// libvirt's disk name suffix for a position: 0 → `a`, 25 → `z`, 26 → `aa`, 701 → `zz`, 702 → `aaa`.
fn disk_letters(position: u32) -> String {
    let mut letters = Vec::new();
    let mut n = position;
    loop {
        letters.push(char::from(b'a' + (n % 26) as u8));
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    letters.iter().rev().collect()
}

fn path(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// An XML element under construction: a name, attributes in order, and either text or child elements.
#[derive(Debug)]
struct Element {
    name: &'static str,
    attrs: Vec<(&'static str, String)>,
    text: Option<String>,
    children: Vec<Element>,
}

fn el(name: &'static str) -> Element {
    Element { name, attrs: Vec::new(), text: None, children: Vec::new() }
}

impl Element {
    fn attr(mut self, name: &'static str, value: impl ToString) -> Element {
        self.attrs.push((name, value.to_string()));
        self
    }

    fn attr_if(self, condition: bool, name: &'static str, value: impl ToString) -> Element {
        if condition { self.attr(name, value) } else { self }
    }

    fn text(mut self, text: impl ToString) -> Element {
        self.text = Some(text.to_string());
        self
    }

    fn child(mut self, child: Element) -> Element {
        self.children.push(child);
        self
    }

    fn child_opt(self, child: Option<Element>) -> Element {
        match child {
            Some(child) => self.child(child),
            None => self,
        }
    }

    fn child_if(self, condition: bool, child: impl FnOnce() -> Element) -> Element {
        if condition { self.child(child()) } else { self }
    }

    fn children(mut self, children: impl IntoIterator<Item = Element>) -> Element {
        self.children.extend(children);
        self
    }

    /// Writes the element indented by two spaces per level, attributes in single quotes as libvirt does.
    fn write(&self, out: &mut String, depth: usize) {
        let indent = "  ".repeat(depth);
        out.push_str(&indent);
        out.push('<');
        out.push_str(self.name);
        for (name, value) in &self.attrs {
            out.push(' ');
            out.push_str(name);
            out.push_str("='");
            out.push_str(&escape_attribute(value));
            out.push('\'');
        }
        match (&self.text, self.children.is_empty()) {
            (Some(text), _) => {
                out.push('>');
                out.push_str(&escape(xml_chars(text)));
            }
            (None, true) => {
                out.push_str("/>\n");
                return;
            }
            (None, false) => {
                out.push_str(">\n");
                for child in &self.children {
                    child.write(out, depth + 1);
                }
                out.push_str(&indent);
            }
        }
        out.push_str("</");
        out.push_str(self.name);
        out.push_str(">\n");
    }
}

/// Escapes an attribute value, keeping tabs and line breaks (which a parser would otherwise turn into spaces).
fn escape_attribute(value: &str) -> String {
    escape(xml_chars(value)).replace('\n', "&#10;").replace('\t', "&#9;")
}

/// Replaces the characters XML 1.0 cannot represent at all, not even escaped, with U+FFFD.
fn xml_chars(text: &str) -> Cow<'_, str> {
    let legal = |c: char| matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}');
    if text.chars().all(legal) {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.chars().map(|c| if legal(c) { c } else { char::REPLACEMENT_CHARACTER }).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xml_of(spec: &DomainSpec, target: Target) -> String {
        domain_xml(spec, target).expect("the spec has XML")
    }

    fn spec(os: Os, platform: &[(&str, &str)]) -> DomainSpec {
        DomainSpec {
            uuid: "4b1f6a7e-0c2d-4e5f-8a9b-0c1d2e3f4a5b".into(),
            name: "t".into(),
            title: String::new(),
            owner: "me".into(),
            os,
            memory_max: 128 << 20,
            memory_target: 128 << 20,
            vcpus_max: 1,
            vcpus_at_startup: 1,
            platform: platform.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            on_poweroff: Action::Destroy,
            on_reboot: Action::Restart,
            on_crash: CrashAction::Destroy,
            vnc_listen: None,
            serial_log: None,
            nics: vec![],
            disks: vec![],
        }
    }

    fn hvm(boot_order: Vec<BootDevice>) -> Os {
        Os::Hvm { boot_order }
    }

    #[test]
    fn boot_order_repeats_are_dropped() {
        let (c, d, n) = (BootDevice::Cdrom, BootDevice::Disk, BootDevice::Network);
        let xml = xml_of(&spec(hvm(vec![c, d, c, n, d]), &[]), Target::Xen);
        let boots: Vec<&str> = xml.lines().map(str::trim).filter(|l| l.starts_with("<boot")).collect();
        assert_eq!(boots, ["<boot dev='cdrom'/>", "<boot dev='hd'/>", "<boot dev='network'/>"]);
    }

    #[test]
    fn features_are_omitted_when_all_off_and_for_pv() {
        let off = [("acpi", "false"), ("apic", "0"), ("pae", "0")];
        assert!(!xml_of(&spec(hvm(vec![]), &off), Target::Qemu(Accel::Tcg)).contains("<features"));
        let pv = Os::Direct { kernel: "/k".into(), ramdisk: None, cmdline: String::new() };
        let xml = xml_of(&spec(pv, &[("viridian", "true"), ("hpet", "false")]), Target::Xen);
        assert!(!xml.contains("<features") && !xml.contains("<timer") && !xml.contains("<cmdline"), "{xml}");
    }

    #[test]
    fn out_of_range_memory_and_vcpus_are_clamped() {
        let mut s = spec(hvm(vec![]), &[]);
        (s.memory_max, s.memory_target, s.vcpus_max, s.vcpus_at_startup) = (1 << 30, 2 << 30, 0, 3);
        let xml = xml_of(&s, Target::Qemu(Accel::Tcg));
        assert!(xml.contains("<currentMemory unit='KiB'>1048576</currentMemory>"), "{xml}");
        assert!(xml.contains("<vcpu placement='static'>1</vcpu>"), "{xml}");
        (s.vcpus_max, s.vcpus_at_startup) = (4, 0);
        let xml = xml_of(&s, Target::Qemu(Accel::Tcg));
        assert!(xml.contains("<vcpu placement='static' current='1'>4</vcpu>"), "{xml}");
    }

    fn platform(pairs: &[(&str, &str)]) -> Platform {
        Platform::parse(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn platform_defaults() {
        assert_eq!(
            platform(&[]),
            Platform {
                acpi: true,
                apic: true,
                pae: true,
                viridian: false,
                hpet: None,
                timeoffset: None,
                vga: "vga",
                videoram_mib: None,
                usb_tablet: false,
            }
        );
    }

    #[test]
    fn platform_flags_accept_xenapi_spellings() {
        let p = platform(&[
            ("acpi", "0"),
            ("apic", "False"),
            ("pae", "false"),
            ("viridian", "1"),
            ("hpet", "TRUE"),
            ("timeoffset", " -3600 "),
            ("vga", "cirrus"),
            ("videoram", "16"),
            ("usb_tablet", "true"),
        ]);
        assert!(!p.acpi && !p.apic && !p.pae && p.viridian && p.usb_tablet);
        assert_eq!((p.hpet, p.timeoffset, p.vga, p.videoram_mib), (Some(true), Some(-3600), "cirrus", Some(16)));
        assert_eq!(platform(&[("timeoffset", "+7")]).timeoffset, Some(7));
    }

    #[test]
    fn platform_unknown_values_count_as_absent() {
        let p = platform(&[("acpi", "maybe"), ("timeoffset", "soon"), ("vga", "qxl"), ("videoram", "-4")]);
        assert!(p.acpi);
        assert_eq!((p.timeoffset, p.vga, p.videoram_mib), (None, "vga", None));
    }

    #[test]
    fn usb_false_disables_the_tablet() {
        assert!(!platform(&[("usb", "false"), ("usb_tablet", "true")]).usb_tablet);
        assert!(platform(&[("usb", "true"), ("usb_tablet", "1")]).usb_tablet);
    }

    #[test]
    fn disk_letters_follow_libvirt() {
        let names: Vec<String> = [0, 1, 25, 26, 27, 51, 52, 701, 702].into_iter().map(disk_letters).collect();
        assert_eq!(names, ["a", "b", "z", "aa", "ab", "az", "ba", "zz", "aaa"]);
    }

    #[test]
    fn escaping_covers_markup_quotes_and_unrepresentable_characters() {
        let mut out = String::new();
        el("a").attr("v", "x'\"<&>\n\t\r").text("<&'\"\u{1}>").write(&mut out, 0);
        assert_eq!(out, "<a v='x&apos;&quot;&lt;&amp;&gt;&#10;&#9;&#13;'>&lt;&amp;&apos;&quot;\u{FFFD}&gt;</a>\n");
    }

    fn disk(position: u32, source: DiskSource, kind: DiskKind, readonly: bool) -> Disk {
        Disk { position, source, format: DiskFormat::Qcow2, kind, readonly }
    }

    fn nbd(socket: &str, export: &str) -> DiskSource {
        DiskSource::Nbd { socket: socket.into(), export: export.into() }
    }

    #[test]
    fn nbd_disk_is_raw_on_a_unix_socket() {
        let d = disk(1, nbd("/run/xapi-rs/nbd/vdi-1.sock", "vdi-1"), DiskKind::Disk, true);
        assert_eq!(
            disk_xml(&d, Flavour::Qemu(Accel::Tcg)).unwrap(),
            "<disk type='network' device='disk'>
  <driver name='qemu' type='raw' cache='none'/>
  <source protocol='nbd' name='vdi-1'>
    <host transport='unix' socket='/run/xapi-rs/nbd/vdi-1.sock'/>
  </source>
  <target dev='vdb' bus='virtio'/>
  <readonly/>
</disk>
"
        );
        let default_export = disk(0, nbd("/s", ""), DiskKind::Disk, false);
        assert!(disk_xml(&default_export, Flavour::Qemu(Accel::Kvm)).unwrap().contains("<source protocol='nbd'>"));
    }

    #[test]
    fn nbd_disks_need_qemu() {
        let d = disk(2, nbd("/s", "e"), DiskKind::Disk, false);
        for flavour in [Flavour::XenPv, Flavour::XenHvm] {
            assert_eq!(disk_xml(&d, flavour), Err(XmlError::NbdOnXen { position: 2 }));
        }
        let mut s = spec(Os::Direct { kernel: "/k".into(), ramdisk: None, cmdline: String::new() }, &[]);
        s.disks = vec![disk(0, DiskSource::File("/d".into()), DiskKind::Disk, false), d];
        assert_eq!(domain_xml(&s, Target::Xen), Err(XmlError::NbdOnXen { position: 2 }));
        assert!(domain_xml(&s, Target::Qemu(Accel::Tcg)).is_ok());
    }

    #[test]
    fn empty_sources_have_no_source_element() {
        for source in [DiskSource::Empty, DiskSource::File("".into())] {
            let xml = disk_xml(&disk(3, source, DiskKind::Cdrom, false), Flavour::Qemu(Accel::Tcg)).unwrap();
            assert!(!xml.contains("<source") && xml.contains("<target dev='hdd' bus='ide'/>"), "{xml}");
            assert!(xml.contains("<readonly/>"), "a CD is always read-only: {xml}");
        }
    }

    #[test]
    fn domain_disks_are_disk_xml_indented() {
        let disks = vec![
            disk(0, DiskSource::File("/sr/a.qcow2".into()), DiskKind::Disk, false),
            disk(1, nbd("/run/nbd.sock", "b"), DiskKind::Disk, true),
            disk(2, DiskSource::Empty, DiskKind::Cdrom, true),
        ];
        let mut s = spec(hvm(vec![]), &[]);
        s.disks = disks.clone();
        let domain = xml_of(&s, Target::Qemu(Accel::Tcg));
        for d in &disks {
            let alone = disk_xml(d, Flavour::Qemu(Accel::Tcg)).unwrap();
            let indented: String = alone.lines().map(|l| format!("    {l}\n")).collect();
            assert!(domain.contains(&indented), "{indented} not in:\n{domain}");
        }
    }

    #[test]
    fn disk_xml_reads_back_as_the_same_disk() {
        let cases = [
            disk(1, DiskSource::File("/sr/a & b.vhd".into()), DiskKind::Disk, false),
            disk(2, nbd("/run/x'y.sock", "vdi <1>"), DiskKind::Disk, true),
            disk(3, DiskSource::Empty, DiskKind::Cdrom, true),
        ];
        for d in cases {
            let flavour = Flavour::Qemu(Accel::Tcg);
            let domain = format!("<domain type='qemu'><devices>{}</devices></domain>", disk_xml(&d, flavour).unwrap());
            let live = live_disks(&domain).unwrap();
            let expected = LiveDisk {
                dev: disk_dev(d.position, d.kind, flavour),
                kind: d.kind,
                readonly: d.readonly,
                source: Some(d.source.clone()),
            };
            assert_eq!(live, [expected]);
        }
    }

    #[test]
    fn disk_dev_follows_the_bus() {
        let q = Flavour::Qemu(Accel::Tcg);
        assert_eq!(disk_dev(1, DiskKind::Disk, q), "vdb");
        assert_eq!(disk_dev(2, DiskKind::Cdrom, q), "hdc");
        assert_eq!(disk_dev(3, DiskKind::Cdrom, Flavour::XenHvm), "hdd");
        assert_eq!(disk_dev(4, DiskKind::Disk, Flavour::XenHvm), "xvde");
        assert_eq!(disk_dev(27, DiskKind::Disk, Flavour::XenPv), "xvdab");
    }
}
