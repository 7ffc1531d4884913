//! Reading libvirt's domain XML back (ours, or the live XML of `virsh dumpxml`): the owner in our metadata, the
//! flavour of a running domain, and its disks.
//!
//! Only the parts the agent needs are read; everything else is skipped. Namespaced elements are resolved (the owner),
//! libvirt's own elements are unprefixed.

use std::ops::Range;
use std::path::PathBuf;

use quick_xml::escape::resolve_xml_entity;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::{NsReader, Reader, XmlVersion};
use serde::{Deserialize, Serialize};

use super::{Flavour, METADATA_NS, XmlError};
use crate::spec::{Accel, DiskKind, DiskSource};

/// The owner recorded in a domain's `<metadata>` (see [`METADATA_NS`]), or `None` if the XML has none or is not
/// well-formed up to it. Any namespace prefix is accepted.
pub fn owner_of(domain_xml: &str) -> Option<String> {
    #[derive(Clone, Copy, PartialEq)]
    enum Node {
        Domain,
        Metadata,
        Owner,
        Other,
    }
    let mut reader = NsReader::from_str(domain_xml);
    let mut stack: Vec<Node> = Vec::new();
    let mut owner = String::new();
    loop {
        let (ns, event) = reader.read_resolved_event().ok()?;
        let kind_of = |local: &str| {
            let in_ns = |uri: &str| matches!(ns, ResolveResult::Bound(n) if n.0 == uri);
            match stack.last() {
                None if local == "domain" && matches!(ns, ResolveResult::Unbound) => Node::Domain,
                Some(Node::Domain) if local == "metadata" && matches!(ns, ResolveResult::Unbound) => Node::Metadata,
                Some(Node::Metadata) if local == "owner" && in_ns(METADATA_NS) => Node::Owner,
                _ => Node::Other,
            }
        };
        let collecting = stack.last() == Some(&Node::Owner);
        match event {
            Event::Start(e) => {
                let kind = kind_of(e.local_name().as_ref());
                stack.push(kind);
            }
            Event::Empty(e) if kind_of(e.local_name().as_ref()) == Node::Owner => return Some(String::new()),
            Event::End(_) => {
                let closed = stack.pop()?;
                if closed == Node::Owner {
                    return Some(owner);
                }
            }
            Event::Text(t) if collecting => owner.push_str(&t.xml10_content()),
            Event::CData(t) if collecting => owner.push_str(&t.xml10_content()),
            Event::GeneralRef(r) if collecting => match r.resolve_char_ref().ok()? {
                Some(c) => owner.push(c),
                None => owner.push_str(resolve_xml_entity(&r)?),
            },
            Event::Eof => return None,
            _ => {}
        }
    }
}

/// The flavour of the domain this XML describes, from `<domain type>` (`qemu`, `kvm`, `xen`) and, for Xen,
/// `<os><type>` (`hvm` is HVM, anything else PV). `None` for another domain type or XML that does not say.
pub fn flavour_of(domain_xml: &str) -> Option<Flavour> {
    let mut reader = Reader::from_str(domain_xml);
    let mut path: Vec<String> = Vec::new();
    let mut domain_type = None;
    let mut os_type = String::new();
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) => {
                let name = local_name(&e);
                if path.is_empty() && name == "domain" {
                    domain_type = attribute(&e, "type");
                }
                path.push(name);
            }
            Event::End(_) => {
                path.pop();
            }
            Event::Text(t) if path == ["domain", "os", "type"] => os_type.push_str(&t.xml10_content()),
            Event::Eof => break,
            _ => {}
        }
    }
    match domain_type?.as_str() {
        "qemu" => Some(Flavour::Qemu(Accel::Tcg)),
        "kvm" => Some(Flavour::Qemu(Accel::Kvm)),
        "xen" if os_type.trim() == "hvm" => Some(Flavour::XenHvm),
        "xen" => Some(Flavour::XenPv),
        _ => None,
    }
}

/// A disk of a running domain, as its live XML shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveDisk {
    /// libvirt's target device (`vdb`, `hdc`, `xvda`): see [`super::disk_dev`].
    pub dev: String,
    /// `device='cdrom'`, or a disk (libvirt's `disk`, `lun` and `floppy`).
    pub kind: DiskKind,
    pub readonly: bool,
    /// What is in it: [`DiskSource::Empty`] for a drive without media. `None` for a source the agent never
    /// writes (a host block device, a storage volume, another network protocol, NBD over TCP).
    pub source: Option<DiskSource>,
}

/// The disks of a domain, in the order of its XML.
pub fn live_disks(domain_xml: &str) -> Result<Vec<LiveDisk>, XmlError> {
    Ok(disk_elements(domain_xml)?.into_iter().map(|(disk, _)| disk).collect())
}

/// The `<disk>` element whose target is `dev`, verbatim (what libvirt wants to detach it).
pub(crate) fn disk_fragment<'x>(domain_xml: &'x str, dev: &str) -> Result<Option<&'x str>, XmlError> {
    let found = disk_elements(domain_xml)?.into_iter().find(|(disk, _)| disk.dev == dev);
    Ok(found.map(|(_, span)| &domain_xml[span]))
}

/// What `<disk>` and its children say, gathered while reading.
#[derive(Default)]
struct DiskParts {
    disk_type: String,
    device: String,
    source: bool,
    file: Option<String>,
    protocol: Option<String>,
    name: Option<String>,
    transport: Option<String>,
    socket: Option<String>,
    dev: String,
    readonly: bool,
}

impl DiskParts {
    fn finish(self) -> LiveDisk {
        let source = match (self.disk_type.as_str(), self.source) {
            (_, false) => Some(DiskSource::Empty),
            ("file", true) => Some(self.file.map_or(DiskSource::Empty, |f| DiskSource::File(PathBuf::from(f)))),
            ("network", true)
                if self.protocol.as_deref() == Some("nbd") && self.transport.as_deref() == Some("unix") =>
            {
                self.socket.map(|s| DiskSource::Nbd { socket: PathBuf::from(s), export: self.name.unwrap_or_default() })
            }
            _ => None,
        };
        let kind = if self.device == "cdrom" { DiskKind::Cdrom } else { DiskKind::Disk };
        LiveDisk { dev: self.dev, kind, readonly: self.readonly, source }
    }
}

/// Every `/domain/devices/disk` element: what it says, and where it is in `domain_xml`.
fn disk_elements(domain_xml: &str) -> Result<Vec<(LiveDisk, Range<usize>)>, XmlError> {
    let mut reader = Reader::from_str(domain_xml);
    let mut disks = DiskReader::default();
    loop {
        let before = reader.buffer_position() as usize;
        match reader.read_event().map_err(|e| XmlError::Unreadable(e.to_string()))? {
            Event::Start(e) => {
                let name = local_name(&e);
                disks.open(&e, &name, before);
                disks.path.push(name);
            }
            Event::Empty(e) => {
                let name = local_name(&e);
                disks.open(&e, &name, before);
                disks.close(&name, reader.buffer_position() as usize);
            }
            Event::End(_) => {
                let name = disks.path.pop().unwrap_or_default();
                disks.close(&name, reader.buffer_position() as usize);
            }
            Event::Eof => return Ok(disks.done),
            _ => {}
        }
    }
}

/// The state of [`disk_elements`]: where the reader is, and the disk it is in.
#[derive(Default)]
struct DiskReader {
    /// The open elements, from the root.
    path: Vec<String>,
    /// The disk being read, and where its element starts.
    current: Option<(DiskParts, usize)>,
    done: Vec<(LiveDisk, Range<usize>)>,
}

impl DiskReader {
    const DEVICES: [&str; 2] = ["domain", "devices"];
    const DISK: [&str; 3] = ["domain", "devices", "disk"];
    const SOURCE: [&str; 4] = ["domain", "devices", "disk", "source"];

    /// An element `name` starts at `at`, under `self.path`.
    fn open(&mut self, e: &BytesStart<'_>, name: &str, at: usize) {
        let attr = |key: &str| attribute(e, key);
        if self.path == Self::DEVICES && name == "disk" {
            let parts = DiskParts {
                disk_type: attr("type").unwrap_or_default(),
                device: attr("device").unwrap_or_else(|| "disk".into()),
                ..DiskParts::default()
            };
            self.current = Some((parts, at));
            return;
        }
        let Some((parts, _)) = self.current.as_mut() else { return };
        match name {
            "source" if self.path == Self::DISK => {
                parts.source = true;
                parts.file = attr("file");
                parts.protocol = attr("protocol");
                parts.name = attr("name");
            }
            "host" if self.path == Self::SOURCE => {
                parts.transport = attr("transport");
                parts.socket = attr("socket");
            }
            "target" if self.path == Self::DISK => parts.dev = attr("dev").unwrap_or_default(),
            "readonly" if self.path == Self::DISK => parts.readonly = true,
            _ => {}
        }
    }

    /// The element `name` under `self.path` ends at `end`.
    fn close(&mut self, name: &str, end: usize) {
        if name == "disk"
            && self.path == Self::DEVICES
            && let Some((parts, start)) = self.current.take()
        {
            self.done.push((parts.finish(), start..end));
        }
    }
}

fn local_name(e: &BytesStart<'_>) -> String {
    e.local_name().into_inner().to_owned()
}

fn attribute(e: &BytesStart<'_>, key: &str) -> Option<String> {
    let attr = e.try_get_attribute(key).ok()??;
    Some(attr.normalized_value(XmlVersion::Implicit1_0).ok()?.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_of_needs_our_namespace_under_domain_metadata() {
        let ours =
            format!("<domain><metadata><x:owner xmlns:x='{METADATA_NS}'>a&amp;b&#33;</x:owner></metadata></domain>");
        assert_eq!(owner_of(&ours).as_deref(), Some("a&b!"));
        let default_ns = format!("<domain><metadata><owner xmlns='{METADATA_NS}'>o</owner></metadata></domain>");
        assert_eq!(owner_of(&default_ns).as_deref(), Some("o"));
        let empty = format!("<domain><metadata><x:owner xmlns:x='{METADATA_NS}'/></metadata></domain>");
        assert_eq!(owner_of(&empty).as_deref(), Some(""));
        let other_ns = "<domain><metadata><x:owner xmlns:x='urn:other'>o</x:owner></metadata></domain>";
        assert_eq!(owner_of(other_ns), None);
        let outside =
            format!("<domain><description><x:owner xmlns:x='{METADATA_NS}'>o</x:owner></description></domain>");
        assert_eq!(owner_of(&outside), None);
        assert_eq!(owner_of("<domain><metadata/></domain>"), None);
        assert_eq!(owner_of("<domain><metadata><x:owner xmlns:x"), None);
        assert_eq!(owner_of(""), None);
    }

    /// libvirt 9.0's live XML of a running tiny guest (file disk, NBD disk, CD with media), with a qcow2-on-VHD
    /// chain, a host block device, NBD over TCP and an empty CD drive added by hand.
    const LIVE: &str = include_str!("../../tests/data/live/qemu-disks.xml");

    fn file(p: &str) -> Option<DiskSource> {
        Some(DiskSource::File(PathBuf::from(p)))
    }

    #[test]
    fn live_disks_reads_each_source_kind() {
        let disk = |dev: &str, kind, readonly, source| LiveDisk { dev: dev.into(), kind, readonly, source };
        let nbd = DiskSource::Nbd { socket: "/var/lib/xapi-rs/test/nbd.sock".into(), export: "tiny".into() };
        assert_eq!(
            live_disks(LIVE).unwrap(),
            [
                disk("hdc", DiskKind::Cdrom, true, file("/var/lib/xapi-rs/test/cd.iso")),
                disk("vdb", DiskKind::Disk, false, file("/var/lib/xapi-rs/test/d1.raw")),
                disk("vdc", DiskKind::Disk, false, Some(nbd)),
                // The top of the chain, not the backing file's <source>.
                disk("vdd", DiskKind::Disk, false, file("/var/lib/xapi-rs/sr/top.qcow2")),
                disk("vde", DiskKind::Disk, true, None),
                disk("vdf", DiskKind::Disk, false, None),
                disk("hdd", DiskKind::Cdrom, true, Some(DiskSource::Empty)),
            ]
        );
    }

    #[test]
    fn disk_fragment_is_the_whole_element_verbatim() {
        let fragment = disk_fragment(LIVE, "vdd").unwrap().expect("vdd is there");
        assert!(fragment.starts_with("<disk type='file' device='disk'>"), "{fragment}");
        assert!(fragment.ends_with("</disk>"), "{fragment}");
        assert_eq!(fragment.matches("<backingStore").count(), 2, "{fragment}");
        assert_eq!(live_disks(fragment).unwrap(), [], "a bare <disk> is not under /domain/devices");
        let wrapped = format!("<domain><devices>{fragment}</devices></domain>");
        assert_eq!(live_disks(&wrapped).unwrap()[0].dev, "vdd");
        assert_eq!(disk_fragment(LIVE, "vdz").unwrap(), None);
        let empty = "<domain><devices><disk type='file' device='cdrom'/></devices></domain>";
        assert_eq!(disk_fragment(empty, "").unwrap(), Some("<disk type='file' device='cdrom'/>"));
    }

    #[test]
    fn live_disks_refuses_xml_that_is_not_well_formed() {
        let broken = "<domain><devices><disk type='file'><target dev='vda'/></devices></domain>";
        assert!(matches!(live_disks(broken), Err(XmlError::Unreadable(_))));
        assert_eq!(live_disks("<domain/>").unwrap(), []);
    }

    #[test]
    fn flavour_of_reads_the_domain_and_os_types() {
        assert_eq!(flavour_of(LIVE), Some(Flavour::Qemu(Accel::Tcg)));
        let domain = |ty: &str, os: &str| {
            format!("<domain type='{ty}' id='3'><os><type arch='x86_64'>{os}</type></os></domain>")
        };
        assert_eq!(flavour_of(&domain("kvm", "hvm")), Some(Flavour::Qemu(Accel::Kvm)));
        assert_eq!(flavour_of(&domain("xen", "hvm")), Some(Flavour::XenHvm));
        assert_eq!(flavour_of(&domain("xen", "linux")), Some(Flavour::XenPv));
        assert_eq!(flavour_of(&domain("xen", "xen")), Some(Flavour::XenPv));
        assert_eq!(flavour_of(&domain("lxc", "exe")), None);
        assert_eq!(flavour_of("<domain><os/></domain>"), None);
    }
}
