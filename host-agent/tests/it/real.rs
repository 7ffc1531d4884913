//! Disk hot-plug on a real QEMU guest (TCG) through libvirt: the proof that [`Agent::attach_disk`],
//! [`Agent::detach_disk`] and [`Agent::change_media`] do what the guest needs, not only what libvirt accepts.
//!
//! These tests run only when `XAPI_RS_REAL_LIBVIRT` names a libvirt URI (`qemu:///system`); `tests/guests/run.sh`
//! sets it after starting libvirtd (`tests/libvirt/start.sh`) and building the tiny guest (`tests/guest/build.sh`,
//! into `<repo>/target/tinyguest`, or `XAPI_RS_TINYGUEST`). Without it a test says that it did not run and passes;
//! with it, anything missing (root, the guest, `qemu-nbd`) fails the test. Run as root:
//!
//! ```text
//! XAPI_RS_REAL_LIBVIRT=qemu:///system cargo test -p host-agent --test it real_ -- --nocapture
//! ```
//!
//! The guest (`tests/guest/init`, `diskwrite=1`) prints `TINYGUEST-DISK: vdX sectors=N` for every virtio disk it
//! finds, also later ones (it looks once a second), writes a line into each and reads it back
//! (`TINYGUEST-DISK-RW`), and prints `TINYGUEST-DISK-GONE: vdX` when one goes. The guest names disks in the order
//! they appear (a disk plugged in after `vdb` left is `vdb` again, whatever libvirt's target), so the tests know
//! each disk by its size. Timings are printed as `TIMING name=seconds`.

use std::fs::{self, File, Permissions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use host_agent::accel::AccelChoice;
use host_agent::libvirt::{Agent, AgentError};
use host_agent::spec::{Action, CrashAction, Disk, DiskFormat, DiskKind, DiskSource, DomainSpec, Os};
use host_agent::xml::LiveDisk;

const ENV_URI: &str = "XAPI_RS_REAL_LIBVIRT";
const ENV_GUEST: &str = "XAPI_RS_TINYGUEST";
const OWNER: &str = "host-agent-real-tests";
/// The guest boots in ~2.5 s on TCG; a loaded CI machine may take many times that.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
/// The guest looks for disks once a second.
const GUEST_TIMEOUT: Duration = Duration::from_secs(20);

const MIB: u64 = 1 << 20;
/// Sizes that tell the disks apart in the guest's console.
const SYSTEM_SIZE: u64 = 16 * MIB;
const FILE_SIZE: u64 = 24 * MIB;
const NBD_SIZE: u64 = 40 * MIB;
const CD_SIZE: u64 = 2 * MIB;

/// The libvirt URI to test against, or `None` (after saying so) when the real-libvirt suite is not running.
fn real_libvirt(test: &str) -> Option<String> {
    match std::env::var(ENV_URI) {
        Ok(uri) if !uri.is_empty() => Some(uri),
        _ => {
            println!("{test}: not run: {ENV_URI} is not set (tests/guests/run.sh sets it, with libvirtd running)");
            None
        }
    }
}

fn sectors(bytes: u64) -> u64 {
    bytes / 512
}

fn timing(name: &str, since: Instant) -> Duration {
    let took = since.elapsed();
    println!("TIMING {name}={:.3}", took.as_secs_f64());
    took
}

/// The guest's serial console, as virtlogd writes it: read forward, one awaited line after another.
struct Console {
    path: PathBuf,
    /// Bytes of the log already matched.
    seen: usize,
}

impl Console {
    fn text(&self) -> String {
        fs::read(&self.path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// Waits for the next line (after the ones matched before) that starts with `prefix`, and returns it.
    fn wait(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.text();
            let mut offset = self.seen.min(text.len());
            for line in text[offset..].split_inclusive('\n') {
                offset += line.len();
                if line.ends_with('\n') && line.starts_with(prefix) {
                    self.seen = offset;
                    return line.trim_end().to_owned();
                }
            }
            assert!(
                Instant::now() < deadline,
                "no console line starting {prefix:?} within {timeout:?}; the console:\n{}",
                self.text()
            );
            sleep(Duration::from_millis(25));
        }
    }
}

/// A running tiny guest of our own, destroyed (and its NBD server killed, by PID) when dropped.
struct Guest {
    agent: Agent,
    uuid: String,
    dir: tempfile::TempDir,
    console: Console,
    nbd: Option<Child>,
}

impl Guest {
    /// Boots the tiny guest with a system disk (`vda`) and an empty CD drive (`hdc`), and waits until it is up.
    fn boot(uri: &str) -> Guest {
        assert!(is_root(), "the real-libvirt tests run as root (they use {uri} and start qemu-nbd)");
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the repository").to_path_buf();
        let guest_dir = std::env::var_os(ENV_GUEST).map_or_else(|| repo.join("target/tinyguest"), PathBuf::from);
        let kernel = guest_dir.join("vmlinux-pvh");
        let initrd = guest_dir.join("initramfs.cpio.gz");
        for f in [&kernel, &initrd] {
            assert!(f.is_file(), "{} is missing: build the tiny guest with tests/guest/build.sh", f.display());
        }
        // QEMU runs as libvirt-qemu: it must reach the files (libvirt relabels files, not their directories).
        let dir = tempfile::Builder::new().prefix("host-agent-real-").tempdir().expect("a temporary directory");
        fs::set_permissions(dir.path(), Permissions::from_mode(0o755)).expect("chmod the temporary directory");
        let system = sparse_file(dir.path(), "system.img", SYSTEM_SIZE);
        let uuid = fs::read_to_string("/proc/sys/kernel/random/uuid").expect("a random UUID").trim().to_owned();
        let console_log = dir.path().join("console.log");
        let spec = DomainSpec {
            uuid: uuid.clone(),
            name: format!("xapi-{uuid}"),
            title: "host-agent real hot-plug test".into(),
            owner: OWNER.into(),
            os: Os::Direct {
                kernel,
                ramdisk: Some(initrd),
                cmdline: "console=ttyS0 quiet panic=-1 mode=stay diskwrite=1".into(),
            },
            memory_max: 128 * MIB,
            memory_target: 128 * MIB,
            vcpus_max: 1,
            vcpus_at_startup: 1,
            platform: Default::default(),
            on_poweroff: Action::Destroy,
            on_reboot: Action::Destroy,
            on_crash: CrashAction::Destroy,
            vnc_listen: None,
            serial_log: Some(console_log.clone()),
            nics: vec![],
            disks: vec![
                file_disk(0, &system, DiskKind::Disk),
                Disk {
                    position: 2,
                    source: DiskSource::Empty,
                    format: DiskFormat::Raw,
                    kind: DiskKind::Cdrom,
                    readonly: true,
                },
            ],
        };
        let agent = Agent::connect(uri, OWNER, AccelChoice::Tcg).unwrap_or_else(|e| panic!("{e}"));
        let started = Instant::now();
        agent.start(&spec, false).unwrap_or_else(|e| panic!("starting the tiny guest: {e}"));
        let mut guest = Guest { agent, uuid, dir, console: Console { path: console_log, seen: 0 }, nbd: None };
        guest.console.wait(&format!("TINYGUEST-DISK: vda sectors={}", sectors(SYSTEM_SIZE)), BOOT_TIMEOUT);
        guest.console.wait("TINYGUEST-MARKER: staying up", BOOT_TIMEOUT);
        timing("boot", started);
        guest
    }

    fn live_disk(&self, dev: &str) -> Option<LiveDisk> {
        self.agent.live_disks(&self.uuid).expect("the live disks").into_iter().find(|d| d.dev == dev)
    }

    /// Serves `file` as NBD export `export` on a unix socket in the test's directory, reachable by libvirt-qemu.
    fn serve_nbd(&mut self, file: &Path, export: &str) -> PathBuf {
        let socket = self.dir.path().join("nbd.sock");
        let child = Command::new("qemu-nbd")
            .arg(format!("--socket={}", socket.display()))
            .args(["--format=raw", "--persistent", "--export-name", export])
            .arg(file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run qemu-nbd (qemu-utils): {e}"));
        self.nbd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "qemu-nbd made no socket {} within 10 s", socket.display());
            sleep(Duration::from_millis(10));
        }
        fs::set_permissions(&socket, Permissions::from_mode(0o666)).expect("chmod the NBD socket");
        socket
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        match self.agent.destroy(&self.uuid) {
            Ok(()) | Err(AgentError::NoDomain(_)) => {}
            Err(e) => eprintln!("could not destroy the test domain {}: {e}", self.uuid),
        }
        if let Some(mut nbd) = self.nbd.take() {
            let _ = nbd.kill();
            let _ = nbd.wait();
        }
    }
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
}

fn sparse_file(dir: &Path, name: &str, size: u64) -> PathBuf {
    let path = dir.join(name);
    File::create(&path).and_then(|f| f.set_len(size)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

fn file_disk(position: u32, path: &Path, kind: DiskKind) -> Disk {
    Disk {
        position,
        source: DiskSource::File(path.to_path_buf()),
        format: DiskFormat::Raw,
        kind,
        readonly: kind == DiskKind::Cdrom,
    }
}

/// What the guest wrote into a disk it saw as `guest_dev` (`diskwrite=1`: at sector 2048).
fn written_by_guest(image: &Path, guest_dev: &str) -> String {
    let expected = format!("written-by-tinyguest-{guest_dev}");
    let mut buf = vec![0; expected.len()];
    let mut f = File::open(image).expect("open the image");
    f.seek(SeekFrom::Start(2048 * 512)).and_then(|_| f.read_exact(&mut buf)).expect("read the image");
    String::from_utf8_lossy(&buf).into_owned()
}

/// The guest's name for the disk in a `TINYGUEST-DISK: vdX sectors=N` line.
fn guest_dev(line: &str) -> String {
    line.split_whitespace().nth(1).expect("a device name").to_owned()
}

#[test]
fn real_disk_hotplug_on_a_tcg_guest() {
    let Some(uri) = real_libvirt("real_disk_hotplug_on_a_tcg_guest") else { return };
    let mut guest = Guest::boot(&uri);
    let uuid = guest.uuid.clone();
    let timeout = Duration::from_secs(30);

    // The domain as it started: a system disk and an empty CD drive.
    let cd = guest.live_disk("hdc").expect("the CD drive");
    assert_eq!((cd.kind, cd.source), (DiskKind::Cdrom, Some(DiskSource::Empty)));
    assert!(guest.live_disk("vdb").is_none());

    // A raw file, plugged in and out.
    let data = sparse_file(guest.dir.path(), "data.img", FILE_SIZE);
    let t = Instant::now();
    guest.agent.attach_disk(&uuid, &file_disk(1, &data, DiskKind::Disk)).expect("attach a file disk");
    timing("attach_file_call", t);
    let seen = guest.console.wait(&format!("TINYGUEST-DISK: vdb sectors={}", sectors(FILE_SIZE)), GUEST_TIMEOUT);
    timing("attach_file_seen_by_guest", t);
    assert_eq!(
        guest.console.wait("TINYGUEST-DISK-RW: vdb", GUEST_TIMEOUT),
        "TINYGUEST-DISK-RW: vdb readback=[written-by-tinyguest-vdb]"
    );
    assert_eq!(written_by_guest(&data, &guest_dev(&seen)), "written-by-tinyguest-vdb");
    assert_eq!(guest.live_disk("vdb").and_then(|d| d.source), Some(DiskSource::File(data.clone())));

    let t = Instant::now();
    guest.agent.detach_disk(&uuid, 1, DiskKind::Disk, timeout).expect("detach the file disk");
    timing("detach_file", t);
    guest.console.wait("TINYGUEST-DISK-GONE: vdb", GUEST_TIMEOUT);
    timing("detach_file_gone_in_guest", t);
    assert!(guest.live_disk("vdb").is_none());

    // An NBD export on a unix socket, at position 3 (libvirt's vdd; the guest's vdb, the first free name).
    let exported = sparse_file(guest.dir.path(), "exported.img", NBD_SIZE);
    let socket = guest.serve_nbd(&exported, "tinynbd");
    let nbd = Disk {
        position: 3,
        source: DiskSource::Nbd { socket: socket.clone(), export: "tinynbd".into() },
        format: DiskFormat::Raw,
        kind: DiskKind::Disk,
        readonly: false,
    };
    let t = Instant::now();
    guest.agent.attach_disk(&uuid, &nbd).expect("attach an NBD disk");
    timing("attach_nbd_call", t);
    let seen = guest.console.wait(&format!("TINYGUEST-DISK: vdb sectors={}", sectors(NBD_SIZE)), GUEST_TIMEOUT);
    timing("attach_nbd_seen_by_guest", t);
    let rw = guest.console.wait("TINYGUEST-DISK-RW: vdb", GUEST_TIMEOUT);
    assert_eq!(rw, "TINYGUEST-DISK-RW: vdb readback=[written-by-tinyguest-vdb]");
    // Through QEMU's NBD client and qemu-nbd into the file.
    assert_eq!(written_by_guest(&exported, &guest_dev(&seen)), "written-by-tinyguest-vdb");
    assert_eq!(guest.live_disk("vdd").and_then(|d| d.source), Some(nbd.source.clone()));

    let t = Instant::now();
    guest.agent.detach_disk(&uuid, 3, DiskKind::Disk, timeout).expect("detach the NBD disk");
    timing("detach_nbd", t);
    guest.console.wait("TINYGUEST-DISK-GONE: vdb", GUEST_TIMEOUT);
    assert!(guest.live_disk("vdd").is_none());

    // CD media in and out of the drive that was there from the start (IDE cannot be hot-plugged).
    let iso = sparse_file(guest.dir.path(), "media.iso", CD_SIZE);
    let t = Instant::now();
    guest.agent.change_media(&uuid, 2, &DiskSource::File(iso.clone())).expect("insert a CD");
    timing("insert_cd", t);
    assert_eq!(guest.live_disk("hdc").and_then(|d| d.source), Some(DiskSource::File(iso)));
    let t = Instant::now();
    guest.agent.change_media(&uuid, 2, &DiskSource::Empty).expect("eject the CD");
    timing("eject_cd", t);
    assert_eq!(guest.live_disk("hdc").and_then(|d| d.source), Some(DiskSource::Empty));

    // Errors: no disk there, or no CD drive there.
    let err = guest.agent.detach_disk(&uuid, 5, DiskKind::Disk, timeout).expect_err("there is no vdf");
    assert!(matches!(&err, AgentError::NoDisk { dev, .. } if dev == "vdf"), "{err}");
    let err = guest.agent.change_media(&uuid, 0, &DiskSource::Empty).expect_err("vda is not a CD drive");
    assert!(matches!(&err, AgentError::NoDisk { dev, .. } if dev == "hda"), "{err}");
}

/// A guest that does not let go (here: paused) makes the detach time out; the request stays pending, and the disk
/// goes once the guest runs again.
#[test]
fn real_detach_times_out_while_the_guest_does_not_cooperate() {
    let Some(uri) = real_libvirt("real_detach_times_out_while_the_guest_does_not_cooperate") else { return };
    let mut guest = Guest::boot(&uri);
    let uuid = guest.uuid.clone();
    let data = sparse_file(guest.dir.path(), "data.img", FILE_SIZE);
    guest.agent.attach_disk(&uuid, &file_disk(1, &data, DiskKind::Disk)).expect("attach a file disk");
    guest.console.wait(&format!("TINYGUEST-DISK: vdb sectors={}", sectors(FILE_SIZE)), GUEST_TIMEOUT);

    guest.agent.pause(&uuid).expect("pause");
    let t = Instant::now();
    let err = guest.agent.detach_disk(&uuid, 1, DiskKind::Disk, Duration::from_secs(2)).expect_err("paused");
    let took = timing("detach_timeout_2s_paused", t);
    assert!(matches!(&err, AgentError::DetachTimeout { dev, .. } if dev == "vdb"), "{err}");
    println!("detach of a paused guest's disk: {err}");
    assert!(took >= Duration::from_secs(2));
    assert!(guest.live_disk("vdb").is_some(), "the disk is still there");

    guest.agent.unpause(&uuid).expect("unpause");
    let t = Instant::now();
    guest.console.wait("TINYGUEST-DISK-GONE: vdb", GUEST_TIMEOUT);
    let deadline = Instant::now() + GUEST_TIMEOUT;
    while guest.live_disk("vdb").is_some() {
        assert!(Instant::now() < deadline, "the pending unplug did not complete after unpausing");
        sleep(Duration::from_millis(50));
    }
    timing("pending_detach_done_after_unpause", t);
}
