//! What a domain should look like, as plain data: the toolstack turns a VM record into a [`DomainSpec`], the agent
//! turns the spec into libvirt domain XML ([`crate::xml`]). Nothing here knows XenAPI; everything is serialisable so
//! that the agent can later run as a separate process and receive specs over a wire.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Which hypervisor the XML is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// `<domain type='kvm'>` or `<domain type='qemu'>` (software emulation, TCG).
    Qemu(Accel),
    /// `<domain type='xen'>` for libvirt's libxl driver.
    Xen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Accel {
    Kvm,
    Tcg,
}

/// A domain to create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainSpec {
    /// The VM's UUID; the domain gets the same UUID, which is how the agent finds it again.
    pub uuid: String,
    /// The libvirt domain name (unique per host): the toolstack derives it from the UUID.
    pub name: String,
    /// Shown as the domain's `<title>` (the VM's name_label).
    pub title: String,
    /// Who owns the domain: written into `<metadata>` so that a daemon only ever touches its own domains.
    pub owner: String,
    pub os: Os,
    /// `memory_static_max`, bytes: the domain's maximum (`<memory>`).
    pub memory_max: u64,
    /// `memory_dynamic_max`, bytes: the balloon target at start (`<currentMemory>`), ≤ `memory_max`.
    pub memory_target: u64,
    /// `VCPUs_max`.
    pub vcpus_max: u32,
    /// `VCPUs_at_startup`, ≤ `vcpus_max`.
    pub vcpus_at_startup: u32,
    /// XenAPI `platform` flags as they are in the VM record (`acpi`, `apic`, `pae`, `viridian`, `nx`, `hpet`,
    /// `timeoffset`, `vga`, `videoram`, `usb`, `usb_tablet`, `nested-virt`, …); unknown keys are ignored.
    pub platform: BTreeMap<String, String>,
    pub on_poweroff: Action,
    pub on_reboot: Action,
    pub on_crash: CrashAction,
    /// A VNC console, listening on this address (always loopback: the daemon proxies it).
    pub vnc_listen: Option<String>,
    /// The first serial port, logged to this file (virtlogd writes it).
    pub serial_log: Option<PathBuf>,
    pub nics: Vec<Nic>,
    pub disks: Vec<Disk>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Os {
    /// A fully virtualised machine booting through its firmware, in this order.
    Hvm { boot_order: Vec<BootDevice> },
    /// Direct kernel boot (XenAPI `PV_kernel`, `PV_ramdisk`, `PV_args`). On Xen this is a PV guest.
    Direct { kernel: PathBuf, ramdisk: Option<PathBuf>, cmdline: String },
}

/// XenAPI's `HVM_boot_params:order` letters: `c` disk, `d` CD-ROM, `n` network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BootDevice {
    Disk,
    Cdrom,
    Network,
}

/// `actions_after_shutdown` / `actions_after_reboot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    Destroy,
    Restart,
}

/// `actions_after_crash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CrashAction {
    Destroy,
    CoredumpAndDestroy,
    Restart,
    CoredumpAndRestart,
    Preserve,
    RenameRestart,
}

/// A network interface (a VIF): on a host bridge, or (for tests, with no bridge) QEMU's user-mode network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Nic {
    /// `VIF.device`: the interface's position.
    pub device: u32,
    pub mac: String,
    /// The network's bridge; `None` gives a user-mode (slirp) NIC that touches no host interface.
    pub bridge: Option<String>,
    /// `VIF.MTU`, if set.
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    /// `VBD.userdevice`: the disk's position (0 → `vda`/`hda`/`xvda`).
    pub position: u32,
    pub source: DiskSource,
    /// The format of a file source (a block server always serves raw data).
    pub format: DiskFormat,
    pub kind: DiskKind,
    pub readonly: bool,
}

/// Where a disk's data comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiskSource {
    /// An image file QEMU opens itself (ISO images, raw files).
    File(PathBuf),
    /// An NBD export on a unix socket: our block server serving a VHD chain, as tapdisk does on XenServer.
    Nbd { socket: PathBuf, export: String },
    /// A CD drive with no disc in it.
    Empty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiskFormat {
    Raw,
    Qcow2,
    /// VHD (QEMU calls it `vpc`); always named explicitly, since QEMU probes a fixed VHD as raw.
    Vhd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiskKind {
    Disk,
    Cdrom,
}
