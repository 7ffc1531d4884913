//! The agent: one libvirt connection, the domains this daemon owns, and their lifecycle events.
//!
//! Domains are **transient** (`virDomainCreateXML`): a domain exists exactly while its VM runs, is paused or is
//! being saved, so libvirt never holds a stale definition and a stopped guest simply disappears. The toolstack's
//! store is the truth about configuration; libvirt is the truth about what runs. Every domain carries its owner in
//! `<metadata>` ([`crate::xml::METADATA_NS`]) and the agent ignores domains that are not its own.
//!
//! All calls block (libvirt's API is synchronous); the daemon runs them on its blocking thread pool.
//!
//! # Disks of a running domain
//!
//! [`Agent::attach_disk`], [`Agent::detach_disk`] and [`Agent::change_media`] change the live domain only
//! (`VIR_DOMAIN_AFFECT_LIVE`: there is no persistent definition), with the same `<disk>` element the domain was
//! created with ([`crate::xml::disk_xml`]), written for the flavour the running domain has (read back from its XML).
//!
//! - **Attach** returns once QEMU has the device; the guest sees a virtio disk when it handles the ACPI PCI
//!   hotplug event (Linux does, with `acpiphp`, built into Debian's kernels). IDE cannot be hot-plugged, so a QEMU
//!   CD drive must be in the domain from its start; its media is changed instead.
//! - **Detach needs the guest**: QEMU only asks it (ACPI) to release the PCI device, and the disk is gone when the
//!   guest has done so. libvirt's QEMU driver itself waits up to 5 s for that before it returns, then the agent
//!   watches the live XML until the disk has left it or the timeout has passed ([`AgentError::DetachTimeout`]): so a
//!   guest that does not cooperate costs at least 5 s, whatever the timeout. The request stays pending in QEMU, and
//!   a guest that releases the disk later (e.g. once unpaused) still does. (The `virt` crate has no binding for
//!   libvirt's device-removed event, hence the polling: every 20 ms, doubling up to 200 ms.)
//! - **Media changes** are forced (`VIR_DOMAIN_DEVICE_MODIFY_FORCE`): a tray the guest has locked is opened anyway,
//!   as xapi's `VBD.eject` does. The media is read as raw data (ISO images).

mod ffi;

use std::path::Path;
use std::sync::Once;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use virt::connect::Connect;
use virt::domain::{Domain, DomainState};
use virt::error::ErrorNumber;
use virt::sys;

use crate::accel::{self, AccelChoice, KvmCheck};
use crate::spec::{Accel, Disk, DiskFormat, DiskKind, DiskSource, DomainSpec, Target};
use crate::xml::{self, Flavour, LiveDisk, XmlError};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// There is no domain with this UUID (or it is not ours).
    #[error("no domain with UUID {0}")]
    NoDomain(String),
    #[error("libvirt: {0}")]
    Libvirt(String),
    #[error("cannot connect to libvirt at {uri}: {message}")]
    Connect { uri: String, message: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The domain has no disk (or, for a media change, no CD drive) at this target.
    #[error("domain {uuid} has no {what} {dev}")]
    NoDisk { uuid: String, dev: String, what: &'static str },
    /// The guest did not release a disk in time (hot-unplug needs the guest's cooperation). The request stays
    /// pending: the guest may still release it.
    #[error("the guest of domain {uuid} did not release disk {dev} within {:.1} s", .waited.as_secs_f64())]
    DetachTimeout { uuid: String, dev: String, waited: Duration },
    #[error(transparent)]
    Xml(#[from] XmlError),
}

fn libvirt(e: virt::error::Error) -> AgentError {
    AgentError::Libvirt(e.message().to_owned())
}

pub type Result<T> = std::result::Result<T, AgentError>;

/// What libvirt says of a domain now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainStatus {
    pub uuid: String,
    pub power: Power,
    /// libvirt's domain id while it runs (Xen's domid; QEMU's sequence number).
    pub domid: Option<u32>,
    pub vcpus: u32,
    /// The memory the guest has now (balloon), bytes.
    pub memory_actual: u64,
}

/// libvirt's domain states, folded into what a toolstack needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Power {
    Running,
    Paused,
    /// Crashed and preserved (`on_crash=preserve`): still there, not running.
    Crashed,
    /// Shut off but still known to libvirt (a transient domain being torn down).
    ShutOff,
}

/// A lifecycle event of one of our domains, as libvirt reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainEvent {
    pub uuid: String,
    pub kind: EventKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Started,
    Paused,
    Resumed,
    /// The guest asked to shut down (the domain is still there for a moment).
    ShuttingDown,
    /// The domain stopped; `saved` when it was saved to a file.
    Stopped {
        saved: bool,
        crashed: bool,
    },
    Crashed,
    Other,
}

impl EventKind {
    fn from_raw(event: i32, detail: i32) -> EventKind {
        match event as u32 {
            sys::VIR_DOMAIN_EVENT_STARTED => EventKind::Started,
            sys::VIR_DOMAIN_EVENT_SUSPENDED => EventKind::Paused,
            sys::VIR_DOMAIN_EVENT_RESUMED => EventKind::Resumed,
            sys::VIR_DOMAIN_EVENT_SHUTDOWN => EventKind::ShuttingDown,
            sys::VIR_DOMAIN_EVENT_STOPPED => EventKind::Stopped {
                saved: detail as u32 == sys::VIR_DOMAIN_EVENT_STOPPED_SAVED,
                crashed: detail as u32 == sys::VIR_DOMAIN_EVENT_STOPPED_CRASHED,
            },
            sys::VIR_DOMAIN_EVENT_CRASHED => EventKind::Crashed,
            _ => EventKind::Other,
        }
    }
}

/// The host as libvirt sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeFacts {
    pub cpu_model: String,
    pub cpus: u32,
    pub mhz: u32,
    /// Physical memory as libvirt's node info counts it (its NUMA cells), bytes.
    pub memory_total: u64,
    /// Free memory right now, bytes (the kernel's view; guests' committed memory is the toolstack's business).
    pub memory_free: u64,
    pub hypervisor: String,
    pub libvirt_version: u32,
}

static EVENT_LOOP: Once = Once::new();

/// libvirt's default event loop, on a thread of its own, registered once per process before any connection opens.
fn ensure_event_loop() {
    EVENT_LOOP.call_once(|| {
        // libvirt prints every error to stderr by default; ours are returned as values and logged where they matter.
        virt::error::clear_error_callback();
        if let Err(e) = virt::event::event_register_default_impl() {
            tracing::error!("libvirt event loop: {}", e.message());
            return;
        }
        std::thread::Builder::new()
            .name("libvirt-events".into())
            .spawn(|| {
                loop {
                    if let Err(e) = virt::event::event_run_default_impl() {
                        tracing::warn!("libvirt event loop: {}", e.message());
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                }
            })
            .expect("spawn the libvirt event thread");
    });
}

pub struct Agent {
    conn: Connect,
    uri: String,
    target: Target,
    kvm: KvmCheck,
    owner: String,
}

impl Agent {
    /// Connects to libvirt at `uri` and manages the domains whose owner is `owner` (the host's UUID).
    pub fn connect(uri: &str, owner: &str, accel: AccelChoice) -> Result<Agent> {
        ensure_event_loop();
        let conn = Connect::open(Some(uri))
            .map_err(|e| AgentError::Connect { uri: uri.to_owned(), message: e.message().to_owned() })?;
        // Keepalive probes every 5 s (3 unanswered: dead), so that a libvirtd that went away is noticed.
        let _ = conn.set_keep_alive(5, 3);
        let kvm = accel::check_kvm();
        let target = if uri.starts_with("xen") {
            Target::Xen
        } else {
            Target::Qemu(match accel {
                AccelChoice::Kvm => Accel::Kvm,
                AccelChoice::Tcg => Accel::Tcg,
                AccelChoice::Auto if kvm.usable && !uri.starts_with("test") => Accel::Kvm,
                AccelChoice::Auto => Accel::Tcg,
            })
        };
        Ok(Agent { conn, uri: uri.to_owned(), target, kvm, owner: owner.to_owned() })
    }

    /// Whether the connection to libvirt still stands (false once libvirtd went away: connect again).
    pub fn is_alive(&self) -> bool {
        self.conn.is_alive().unwrap_or(false)
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    pub fn target(&self) -> Target {
        self.target
    }

    /// Why KVM was (not) chosen.
    pub fn kvm_check(&self) -> &KvmCheck {
        &self.kvm
    }

    /// The domain XML this agent would create for `spec`.
    pub fn domain_xml(&self, spec: &DomainSpec) -> Result<String> {
        Ok(xml::domain_xml(spec, self.target)?)
    }

    pub fn node(&self) -> Result<NodeFacts> {
        let info = self.conn.node_info().map_err(libvirt)?;
        // Not every driver knows its free memory (the test driver does not).
        let free = self.conn.free_memory().unwrap_or(0);
        Ok(NodeFacts {
            cpu_model: info.model,
            cpus: info.cpus,
            mhz: info.mhz,
            memory_total: info.memory * 1024,
            memory_free: free,
            hypervisor: self.conn.driver_type().unwrap_or_default(),
            libvirt_version: self.conn.lib_version().unwrap_or_default(),
        })
    }

    /// Sends every lifecycle event of our domains to `tx` (from libvirt's event thread) until `tx`'s receiver is
    /// dropped.
    pub fn subscribe(&self, tx: mpsc::Sender<DomainEvent>) -> Result<()> {
        ffi::register_lifecycle(
            &self.conn,
            Box::new(move |uuid, event, detail| {
                let _ = tx.send(DomainEvent { uuid, kind: EventKind::from_raw(event, detail) });
            }),
        )
        .map_err(libvirt)?;
        Ok(())
    }

    /// Creates and starts the domain (paused if asked).
    pub fn start(&self, spec: &DomainSpec, paused: bool) -> Result<DomainStatus> {
        let xml = self.domain_xml(spec)?;
        let flags = if paused { sys::VIR_DOMAIN_START_PAUSED } else { sys::VIR_DOMAIN_NONE };
        let dom = match self.conn.create_domain_xml(&xml, flags) {
            Ok(dom) => dom,
            // A driver that cannot create paused (the test driver) creates running, then pauses at once.
            Err(e) if paused && e.code().is(ErrorNumber::InvalidArg) => {
                let dom = self.conn.create_domain_xml(&xml, sys::VIR_DOMAIN_NONE).map_err(libvirt)?;
                dom.suspend().map_err(libvirt)?;
                dom
            }
            Err(e) => return Err(libvirt(e)),
        };
        status_of(&dom, &spec.uuid)
    }

    /// Our domain with this UUID, if it exists.
    fn domain(&self, uuid: &str) -> Result<Domain> {
        self.live(uuid).map(|(dom, _)| dom)
    }

    /// Our domain with this UUID and its live XML.
    fn live(&self, uuid: &str) -> Result<(Domain, String)> {
        let no_domain = || AgentError::NoDomain(uuid.to_owned());
        let dom = match self.conn.lookup_domain_by_uuid_string(uuid) {
            Ok(dom) => dom,
            Err(e) if e.code().is(ErrorNumber::NoDomain) => return Err(no_domain()),
            Err(e) => return Err(libvirt(e)),
        };
        match dom.xml_desc(0) {
            Ok(live) if xml::owner_of(&live).is_some_and(|o| o == self.owner) => Ok((dom, live)),
            Ok(_) => Err(no_domain()),
            Err(e) if e.code().is(ErrorNumber::NoDomain) => Err(no_domain()),
            Err(e) => Err(libvirt(e)),
        }
    }

    /// Our running domain, its live XML, and the flavour its devices are written in.
    fn live_flavour(&self, uuid: &str) -> Result<(Domain, String, Flavour)> {
        let (dom, live) = self.live(uuid)?;
        let flavour = xml::flavour_of(&live)
            .ok_or_else(|| AgentError::Libvirt(format!("domain {uuid} is of a type the agent does not know")))?;
        Ok((dom, live, flavour))
    }

    fn is_ours(&self, dom: &Domain) -> bool {
        dom.xml_desc(0).ok().and_then(|x| xml::owner_of(&x)).is_some_and(|o| o == self.owner)
    }

    /// What libvirt says of the domain now; `None` if it does not exist (the VM is halted or suspended).
    pub fn status(&self, uuid: &str) -> Result<Option<DomainStatus>> {
        match self.domain(uuid) {
            Ok(dom) => match status_of(&dom, uuid) {
                Ok(s) => Ok(Some(s)),
                // Gone between the lookup and the question.
                Err(AgentError::NoDomain(_)) => Ok(None),
                Err(e) => Err(e),
            },
            Err(AgentError::NoDomain(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every domain this agent owns.
    pub fn domains(&self) -> Result<Vec<DomainStatus>> {
        let doms = self.conn.list_all_domains(0).map_err(libvirt)?;
        let mut out = Vec::new();
        for dom in doms.iter().filter(|d| self.is_ours(d)) {
            if let Ok(uuid) = dom.uuid_string()
                && let Ok(s) = status_of(dom, &uuid)
            {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Presses the ACPI power button, for a shutdown that stays a shutdown: the domain's `on_poweroff` is first made
    /// `destroy` (a guest configured to restart after powering off is still halted when the toolstack asks).
    pub fn shutdown(&self, uuid: &str) -> Result<()> {
        let dom = self.domain(uuid)?;
        if let Err(e) = dom.set_lifecycle_action(
            sys::VIR_DOMAIN_LIFECYCLE_POWEROFF,
            sys::VIR_DOMAIN_LIFECYCLE_ACTION_DESTROY,
            sys::VIR_DOMAIN_AFFECT_LIVE,
        ) {
            tracing::debug!(uuid, error = e.message(), "could not make on_poweroff destroy before a shutdown");
        }
        dom.shutdown_flags(sys::VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN).map_err(libvirt)
    }

    /// Asks the guest to reboot (ACPI); with `on_reboot=restart` the domain comes back by itself.
    pub fn reboot(&self, uuid: &str) -> Result<()> {
        self.domain(uuid)?.reboot(sys::VIR_DOMAIN_REBOOT_ACPI_POWER_BTN).map_err(libvirt)
    }

    /// Pulls the plug.
    pub fn destroy(&self, uuid: &str) -> Result<()> {
        self.domain(uuid)?.destroy().map_err(libvirt)
    }

    /// Presses the reset button (the domain keeps running, the guest starts again).
    pub fn reset(&self, uuid: &str) -> Result<()> {
        self.domain(uuid)?.reset().map_err(libvirt)
    }

    pub fn pause(&self, uuid: &str) -> Result<()> {
        self.domain(uuid)?.suspend().map_err(libvirt)
    }

    pub fn unpause(&self, uuid: &str) -> Result<()> {
        self.domain(uuid)?.resume().map_err(libvirt)
    }

    /// Saves the domain's memory to `path` and stops it.
    pub fn save(&self, uuid: &str, path: &Path) -> Result<()> {
        let dom = self.domain(uuid)?;
        ffi::save(&dom, &path.to_string_lossy()).map_err(libvirt)
    }

    /// Starts the domain saved in `path` again (paused if asked).
    pub fn restore(&self, uuid: &str, path: &Path, paused: bool) -> Result<DomainStatus> {
        let flags = if paused { sys::VIR_DOMAIN_SAVE_PAUSED } else { 0 };
        self.conn.restore_domain_flags(&path.to_string_lossy(), None, flags).map_err(libvirt)?;
        let dom = self.domain(uuid)?;
        status_of(&dom, uuid)
    }

    /// The disks of the running domain, as libvirt has them now.
    pub fn live_disks(&self, uuid: &str) -> Result<Vec<LiveDisk>> {
        Ok(xml::live_disks(&self.live(uuid)?.1)?)
    }

    /// Plugs `disk` into the running domain (see the module's notes on disks).
    pub fn attach_disk(&self, uuid: &str, disk: &Disk) -> Result<()> {
        let (dom, _, flavour) = self.live_flavour(uuid)?;
        let device = xml::disk_xml(disk, flavour)?;
        dom.attach_device_flags(&device, sys::VIR_DOMAIN_AFFECT_LIVE).map_err(|e| gone(e, uuid))
    }

    /// Unplugs the disk at `position` from the running domain and waits, up to `timeout`, until the guest has let it
    /// go (see the module's notes on disks).
    pub fn detach_disk(&self, uuid: &str, position: u32, kind: DiskKind, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        let (dom, live, flavour) = self.live_flavour(uuid)?;
        let dev = xml::disk_dev(position, kind, flavour);
        let no_disk = || AgentError::NoDisk { uuid: uuid.to_owned(), dev: dev.clone(), what: "disk" };
        // libvirt finds the disk by its target; the element as libvirt wrote it is what virsh sends too.
        let device = xml::disk_fragment(&live, &dev)?.ok_or_else(no_disk)?;
        dom.detach_device_flags(device, sys::VIR_DOMAIN_AFFECT_LIVE).map_err(|e| gone(e, uuid))?;
        let mut pause = Duration::from_millis(20);
        loop {
            let live = dom.xml_desc(0).map_err(|e| gone(e, uuid))?;
            if xml::disk_fragment(&live, &dev)?.is_none() {
                return Ok(());
            }
            let waited = started.elapsed();
            if waited >= timeout {
                return Err(AgentError::DetachTimeout { uuid: uuid.to_owned(), dev, waited });
            }
            std::thread::sleep(pause.min(timeout - waited));
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Puts `media` into the CD drive at `position` of the running domain ([`DiskSource::Empty`] ejects it).
    pub fn change_media(&self, uuid: &str, position: u32, media: &DiskSource) -> Result<()> {
        let (dom, live, flavour) = self.live_flavour(uuid)?;
        let dev = xml::disk_dev(position, DiskKind::Cdrom, flavour);
        if !xml::live_disks(&live)?.iter().any(|d| d.dev == dev && d.kind == DiskKind::Cdrom) {
            return Err(AgentError::NoDisk { uuid: uuid.to_owned(), dev, what: "CD drive" });
        }
        let drive =
            Disk { position, source: media.clone(), format: DiskFormat::Raw, kind: DiskKind::Cdrom, readonly: true };
        let flags = sys::VIR_DOMAIN_AFFECT_LIVE | sys::VIR_DOMAIN_DEVICE_MODIFY_FORCE;
        dom.update_device_flags(&xml::disk_xml(&drive, flavour)?, flags).map_err(|e| gone(e, uuid))
    }

    /// The loopback TCP port of the domain's VNC server, once QEMU has one.
    pub fn vnc_port(&self, uuid: &str) -> Result<Option<u16>> {
        let desc = self.domain(uuid)?.xml_desc(0).map_err(libvirt)?;
        Ok(vnc_port(&desc))
    }
}

/// A libvirt error, or [`AgentError::NoDomain`] if it says the domain is gone: it may go away between any two
/// questions.
fn gone(e: virt::error::Error, uuid: &str) -> AgentError {
    if e.code().is(ErrorNumber::NoDomain) { AgentError::NoDomain(uuid.to_owned()) } else { libvirt(e) }
}

fn status_of(dom: &Domain, uuid: &str) -> Result<DomainStatus> {
    let (state, _) = dom.state().map_err(|e| gone(e, uuid))?;
    let info = dom.info().map_err(|e| gone(e, uuid))?;
    let power = match state.unwrap_or(DomainState::NoState) {
        DomainState::Paused | DomainState::PMSuspended => Power::Paused,
        DomainState::Crashed => Power::Crashed,
        DomainState::Shutoff => Power::ShutOff,
        DomainState::Running | DomainState::Blocked | DomainState::Shutdown | DomainState::NoState => Power::Running,
    };
    Ok(DomainStatus {
        uuid: uuid.to_owned(),
        power,
        domid: dom.id(),
        vcpus: info.nr_virt_cpu,
        memory_actual: info.memory * 1024,
    })
}

/// The `port` of the live XML's VNC `<graphics>` element (libvirt writes it once QEMU listens).
fn vnc_port(live_xml: &str) -> Option<u16> {
    let start = live_xml.find("<graphics type='vnc'")?;
    let tag = &live_xml[start..start + live_xml[start..].find('>')?];
    let port = &tag[tag.find(" port='")? + 7..];
    port[..port.find('\'')?].parse().ok().filter(|p: &u16| *p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vnc_port_is_read_from_the_live_xml() {
        let x = "<domain><devices><graphics type='vnc' port='5901' autoport='yes' listen='127.0.0.1'>";
        assert_eq!(vnc_port(x), Some(5901));
        assert_eq!(vnc_port("<graphics type='vnc' port='-1' autoport='yes'>"), None);
        assert_eq!(vnc_port("<domain/>"), None);
    }
}
