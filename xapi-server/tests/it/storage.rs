//! Storage through the XenAPI: SRs (`ext`, `iso`), PBDs, VDIs with snapshot and clone chains, the collector, VBDs
//! and their errors, and the block servers of a running VM's disks (on libvirt's test driver; real guests write to
//! their disks in `tests/guests/`). Every VHD the daemon writes is checked by `qemu-img`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use xapi_types::Value;

use crate::support::{Api, err, s};

pub(crate) const MIB: i64 = 1 << 20;

impl Api {
    pub(crate) fn str_of(&self, method: &str, r: &Value) -> String {
        self.ok(method, &[r.clone()]).as_str().unwrap().to_string()
    }

    pub(crate) fn int_of(&self, method: &str, r: &Value) -> i64 {
        match self.ok(method, &[r.clone()]) {
            Value::Int(i) => i,
            Value::Str(s) => s.parse().unwrap(),
            other => panic!("{method} answered {other:?}"),
        }
    }

    pub(crate) fn refs(&self, method: &str, args: &[Value]) -> Vec<Value> {
        self.ok(method, args).as_array().unwrap().to_vec()
    }

    pub(crate) fn local_sr(&self) -> Value {
        let pool = self.refs("pool.get_all", &[])[0].clone();
        self.ok("pool.get_default_SR", &[pool])
    }

    /// The directory of an SR (its PBD's `device-config:location`).
    pub(crate) fn sr_dir(&self, sr: &Value) -> PathBuf {
        let pbd = self.refs("SR.get_PBDs", &[sr.clone()])[0].clone();
        let dc = self.ok("PBD.get_device_config", &[pbd]);
        PathBuf::from(dc.get("location").and_then(Value::as_str).unwrap())
    }

    pub(crate) fn new_vdi(&self, sr: &Value, name: &str, size: i64) -> Value {
        let rec = Value::Struct(vec![
            ("name_label".into(), s(name)),
            ("SR".into(), sr.clone()),
            ("virtual_size".into(), Value::Int(size)),
            ("type".into(), s("user")),
            ("sharable".into(), Value::Bool(false)),
            ("read_only".into(), Value::Bool(false)),
            ("other_config".into(), Value::Struct(vec![])),
        ]);
        self.ok("VDI.create", &[rec])
    }

    pub(crate) fn vdi_file(&self, vdi: &Value) -> PathBuf {
        let sr = self.ok("VDI.get_SR", &[vdi.clone()]);
        self.sr_dir(&sr).join(format!("{}.vhd", self.str_of("VDI.get_uuid", vdi)))
    }

    pub(crate) fn new_vbd(
        &self,
        vm: &Value,
        vdi: Option<&Value>,
        device: &str,
        ty: &str,
        mode: &str,
    ) -> Result<Value, Vec<String>> {
        let rec = Value::Struct(vec![
            ("VM".into(), vm.clone()),
            ("VDI".into(), vdi.cloned().unwrap_or(s("OpaqueRef:NULL"))),
            ("userdevice".into(), s(device)),
            ("bootable".into(), Value::Bool(false)),
            ("mode".into(), s(mode)),
            ("type".into(), s(ty)),
            ("empty".into(), Value::Bool(vdi.is_none())),
            ("other_config".into(), Value::Struct(vec![])),
            ("qos_algorithm_type".into(), s("")),
            ("qos_algorithm_params".into(), Value::Struct(vec![])),
        ]);
        self.call("VBD.create", &[rec])
    }

    pub(crate) fn vm(&self, name: &str) -> Value {
        let t = self.refs("VM.get_by_name_label", &[s("Generic Linux (direct kernel boot)")])[0].clone();
        let vm = self.ok("VM.clone", &[t, s(name)]);
        self.ok("VM.provision", &[vm.clone()]);
        self.ok("VM.set_PV_kernel", &[vm.clone(), s("/bin/sh")]);
        vm
    }
}

/// `qemu-img check` does not know VHD (`vpc`); `qemu-img info` parses every header and `qemu-img compare` reads
/// every block, so both are run on each file we check.
fn qemu_img_ok(file: &Path, virtual_size: i64) {
    let out = Command::new("qemu-img")
        .args(["info", "--output=json", "-f", "vpc"])
        .arg(file)
        .output()
        .expect("qemu-img is installed (tests/install-deps.sh)");
    assert!(out.status.success(), "qemu-img info {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["virtual-size"].as_i64(), Some(virtual_size), "{info}");
}

/// The pid of the block server (`xapi-server tapdisk … --export <vdi-uuid>`) serving a VDI.
pub(crate) fn block_server(vdi_uuid: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        (args.get(1) == Some(&&b"tapdisk"[..]) && args.contains(&vdi_uuid.as_bytes())).then_some(pid)
    })
}

pub(crate) fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn local_storage_and_sm_on_first_start_and_only_then() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path(), &[]);
    let sr = api.local_sr();
    assert_eq!(api.str_of("SR.get_name_label", &sr), "Local storage");
    assert_eq!(api.str_of("SR.get_type", &sr), "ext");
    assert!(api.int_of("SR.get_physical_size", &sr) > 0);
    let pbd = api.refs("SR.get_PBDs", &[sr.clone()])[0].clone();
    assert_eq!(api.ok("PBD.get_currently_attached", &[pbd.clone()]), Value::Bool(true));
    assert!(api.sr_dir(&sr).starts_with(dir.path()));
    let host = api.refs("host.get_all", &[])[0].clone();
    assert_eq!(api.refs("host.get_PBDs", &[host]), vec![pbd]);
    let types: Vec<String> =
        api.refs("SM.get_all", &[]).iter().map(|sm| api.str_of("SM.get_type", sm)).collect::<Vec<_>>();
    assert!(types.contains(&"ext".to_string()) && types.contains(&"iso".to_string()), "{types:?}");
    assert_eq!(api.ok("SR.get_supported_types", &[]), Value::Array(vec![s("ext"), s("iso")]));
    let vdi = api.new_vdi(&sr, "kept", 10 * MIB);
    drop(api);
    // A restart keeps the SR and its VDI, and makes no second Local storage.
    let api = Api::start(dir.path(), &[]);
    assert_eq!(api.refs("SR.get_all", &[]), vec![sr.clone()]);
    assert_eq!(api.str_of("VDI.get_name_label", &vdi), "kept");
}

#[test]
fn vdis_snapshots_clones_and_the_collector() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path(), &[]);
    let sr = api.local_sr();
    // 10 MiB + 1 byte is rounded up to the next 2 MiB, as vhd-util does.
    let vdi = api.new_vdi(&sr, "disk", 10 * MIB + 1);
    assert_eq!(api.int_of("VDI.get_virtual_size", &vdi), 12 * MIB);
    let file = api.vdi_file(&vdi);
    assert!(file.exists());
    qemu_img_ok(&file, 12 * MIB);
    assert!(api.refs("SR.get_VDIs", &[sr.clone()]).contains(&vdi), "SR.VDIs follows VDI.SR");
    assert!(api.int_of("SR.get_virtual_allocation", &sr) >= 12 * MIB);
    assert_eq!(
        api.call(
            "VDI.create",
            &[Value::Struct(vec![("SR".into(), sr.clone()), ("virtual_size".into(), Value::Int(-1))])]
        )
        .unwrap_err()[0],
        "INVALID_VALUE"
    );

    let snap = api.ok("VDI.snapshot", &[vdi.clone(), Value::Struct(vec![])]);
    assert_eq!(api.ok("VDI.get_is_a_snapshot", &[snap.clone()]), Value::Bool(true));
    assert_eq!(api.ok("VDI.get_snapshot_of", &[snap.clone()]), vdi);
    assert_eq!(api.refs("VDI.get_snapshots", &[vdi.clone()]), vec![snap.clone()]);
    assert_eq!(api.str_of("VDI.get_name_label", &snap), "disk");
    // The base copy: a hidden parent, listed as an unmanaged VDI; both children point at it.
    let parent_uuid =
        api.ok("VDI.get_sm_config", &[vdi.clone()]).get("vhd-parent").and_then(Value::as_str).unwrap().to_string();
    let base = api.ok("VDI.get_by_uuid", &[s(&parent_uuid)]);
    assert_eq!(api.ok("VDI.get_managed", &[base.clone()]), Value::Bool(false));
    assert_eq!(
        api.ok("VDI.get_sm_config", &[snap.clone()]).get("vhd-parent").and_then(Value::as_str),
        Some(parent_uuid.as_str())
    );
    assert_eq!(api.call("VDI.destroy", &[base.clone()]), err("VDI_NOT_MANAGED", &[base.as_str().unwrap()]));
    for v in [&vdi, &snap, &base] {
        qemu_img_ok(&api.vdi_file(v), 12 * MIB);
    }

    let clone = api.ok("VDI.clone", &[vdi.clone(), Value::Struct(vec![])]);
    assert_eq!(api.ok("VDI.get_is_a_snapshot", &[clone.clone()]), Value::Bool(false));
    let copy = api.ok("VDI.copy", &[vdi.clone(), sr.clone(), s("OpaqueRef:NULL"), s("OpaqueRef:NULL")]);
    assert_eq!(api.ok("VDI.get_sm_config", &[copy.clone()]).get("vhd-parent"), None, "a copy has no parent");
    qemu_img_ok(&api.vdi_file(&copy), 12 * MIB);

    // Deleting the snapshot and the clone leaves base copies with one child each: the collector merges them
    // into the disk, whose file then has no parent, and their records go.
    api.ok("VDI.destroy", &[snap]);
    api.ok("VDI.destroy", &[clone]);
    wait_for("the collector", || {
        api.ok("SR.scan", &[sr.clone()]);
        api.ok("VDI.get_sm_config", &[vdi.clone()]).get("vhd-parent").is_none()
    });
    assert!(api.call("VDI.get_record", &[base.clone()]).is_err(), "the base copy's record is gone");
    qemu_img_ok(&api.vdi_file(&vdi), 12 * MIB);

    // Resize grows, never shrinks.
    api.ok("VDI.resize", &[vdi.clone(), Value::Int(64 * MIB)]);
    assert_eq!(api.int_of("VDI.get_virtual_size", &vdi), 64 * MIB);
    qemu_img_ok(&api.vdi_file(&vdi), 64 * MIB);
    assert_eq!(api.call("VDI.resize", &[vdi.clone(), Value::Int(MIB)]).unwrap_err()[0], "SR_BACKEND_FAILURE");
    assert_eq!(
        api.call("VDI.resize_online", &[vdi.clone(), Value::Int(128 * MIB)]).unwrap_err()[0],
        "SR_OPERATION_NOT_SUPPORTED"
    );
}

#[test]
fn scan_follows_files_added_removed_and_broken_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path(), &[]);
    let sr = api.local_sr();
    let vdi = api.new_vdi(&sr, "original", 4 * MIB);
    let sr_dir = api.sr_dir(&sr);
    // A copy of the file under a new name is a new VDI; the original's removal takes its record.
    let new_uuid = "5c3b7c33-3d0c-4d5a-9a3e-2f6f8a3b1c01";
    std::fs::copy(api.vdi_file(&vdi), sr_dir.join(format!("{new_uuid}.vhd"))).unwrap();
    std::fs::remove_file(api.vdi_file(&vdi)).unwrap();
    api.ok("SR.scan", &[sr.clone()]);
    assert!(api.call("VDI.get_record", &[vdi]).is_err());
    let found = api.ok("VDI.get_by_uuid", &[s(new_uuid)]);
    assert_eq!(api.int_of("VDI.get_virtual_size", &found), 4 * MIB);
    // Garbage with a VDI's name, and a file that is not a VDI's, are not listed, and the scan still works.
    std::fs::write(sr_dir.join("0b1c0c1e-0000-4000-8000-000000000001.vhd"), b"conectix but not really").unwrap();
    std::fs::write(sr_dir.join("notes.txt"), b"hello").unwrap();
    api.ok("SR.scan", &[sr.clone()]);
    assert!(api.call("VDI.get_by_uuid", &[s("0b1c0c1e-0000-4000-8000-000000000001")]).is_err());
    assert_eq!(api.refs("SR.get_VDIs", &[sr.clone()]), vec![found]);
}

#[test]
fn iso_library_and_cd_drives() {
    let dir = tempfile::tempdir().unwrap();
    let isos = dir.path().join("isos");
    std::fs::create_dir_all(&isos).unwrap();
    std::fs::write(isos.join("tools.iso"), vec![7u8; 4096]).unwrap();
    let api = Api::start(&dir.path().join("data"), &[]);
    let host = api.refs("host.get_all", &[])[0].clone();
    let dc = Value::Struct(vec![("location".into(), s(isos.to_str().unwrap()))]);
    let sr = api.ok(
        "SR.create",
        &[
            host.clone(),
            dc,
            Value::Int(0),
            s("ISOs"),
            s(""),
            s("iso"),
            s("iso"),
            Value::Bool(false),
            Value::Struct(vec![]),
        ],
    );
    let vdis = api.refs("SR.get_VDIs", &[sr.clone()]);
    assert_eq!(vdis.len(), 1);
    let tools = vdis[0].clone();
    assert_eq!(api.str_of("VDI.get_location", &tools), "tools.iso");
    assert_eq!(api.int_of("VDI.get_virtual_size", &tools), 4096);
    assert_eq!(api.ok("VDI.get_read_only", &[tools.clone()]), Value::Bool(true));
    std::fs::write(isos.join("second.iso"), vec![1u8; 512]).unwrap();
    api.ok("SR.scan", &[sr.clone()]);
    assert_eq!(api.refs("SR.get_VDIs", &[sr.clone()]).len(), 2);
    assert_eq!(
        api.call(
            "VDI.create",
            &[Value::Struct(vec![("SR".into(), sr.clone()), ("virtual_size".into(), Value::Int(MIB))])]
        ),
        err("SR_OPERATION_NOT_SUPPORTED", &[sr.as_str().unwrap()])
    );
    assert_eq!(
        api.call(
            "SR.create",
            &[
                host,
                Value::Struct(vec![]),
                Value::Int(0),
                s("x"),
                s(""),
                s("nfs"),
                s(""),
                Value::Bool(false),
                Value::Struct(vec![])
            ]
        ),
        err("SR_UNKNOWN_DRIVER", &["nfs"])
    );

    let vm = api.vm("cd");
    let cd = api.new_vbd(&vm, None, "3", "CD", "RO").unwrap();
    assert_eq!(api.ok("VM.get_VBDs", &[vm.clone()]), Value::Array(vec![cd.clone()]), "VM.VBDs follows VBD.VM");
    assert_eq!(api.call("VBD.eject", &[cd.clone()]), err("VBD_IS_EMPTY", &[cd.as_str().unwrap()]));
    api.ok("VBD.insert", &[cd.clone(), tools.clone()]);
    assert_eq!(api.call("VBD.insert", &[cd.clone(), tools.clone()]), err("VBD_NOT_EMPTY", &[cd.as_str().unwrap()]));
    assert_eq!(api.ok("VBD.get_VDI", &[cd.clone()]), tools);
    assert_eq!(api.refs("VDI.get_VBDs", &[tools.clone()]), vec![cd.clone()]);
    api.ok("VBD.eject", &[cd.clone()]);
    assert_eq!(api.ok("VBD.get_empty", &[cd.clone()]), Value::Bool(true));
    assert_eq!(api.refs("VDI.get_VBDs", &[tools.clone()]), Vec::<Value>::new());

    // Errors xapi gives for impossible VBDs.
    assert_eq!(api.new_vbd(&vm, Some(&tools), "4", "CD", "RW"), err("VBD_CDS_MUST_BE_READONLY", &[]));
    assert_eq!(api.new_vbd(&vm, None, "4", "Disk", "RW").unwrap_err()[0], "VBD_NOT_REMOVABLE_MEDIA");
    assert_eq!(api.new_vbd(&vm, Some(&tools), "3", "CD", "RO"), err("DEVICE_ALREADY_EXISTS", &["3"]));
    let disk = api.new_vdi(&api.local_sr(), "d", 2 * MIB);
    let vbd = api.new_vbd(&vm, Some(&disk), "autodetect", "Disk", "RW").unwrap();
    assert_eq!(api.str_of("VBD.get_userdevice", &vbd), "0", "the lowest free position");
    assert_eq!(
        api.call("VBD.insert", &[vbd.clone(), tools.clone()]),
        err("VBD_NOT_REMOVABLE_MEDIA", &[vbd.as_str().unwrap()])
    );
    assert_eq!(
        api.call("VBD.plug", &[vbd.clone()]),
        err("VM_BAD_POWER_STATE", &[vm.as_str().unwrap(), "running", "halted"])
    );
}

#[test]
fn sr_create_probe_forget_introduce_destroy() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(&dir.path().join("data"), &[]);
    let host = api.refs("host.get_all", &[])[0].clone();
    let loc = dir.path().join("second-sr");
    let dc = Value::Struct(vec![("location".into(), s(loc.to_str().unwrap()))]);
    let sr = api.ok(
        "SR.create",
        &[
            host.clone(),
            dc.clone(),
            Value::Int(0),
            s("Second"),
            s(""),
            s("ext"),
            s("user"),
            Value::Bool(false),
            Value::Struct(vec![]),
        ],
    );
    let uuid = api.str_of("SR.get_uuid", &sr);
    let vdi = api.new_vdi(&sr, "on second", 2 * MIB);
    let vdi_uuid = api.str_of("VDI.get_uuid", &vdi);
    let probe = api.ok("SR.probe", &[host.clone(), dc.clone(), s("ext"), Value::Struct(vec![])]);
    assert!(probe.as_str().unwrap().contains(&format!("<UUID>{uuid}</UUID>")), "{probe:?}");

    // Forget needs the PBD unplugged; the files stay; introduce + PBD + plug bring the VDIs back.
    assert_eq!(api.call("SR.forget", &[sr.clone()]), err("SR_HAS_PBD", &[sr.as_str().unwrap()]));
    let pbd = api.refs("SR.get_PBDs", &[sr.clone()])[0].clone();
    api.ok("PBD.unplug", &[pbd.clone()]);
    assert_eq!(
        api.call("VDI.snapshot", &[vdi.clone(), Value::Struct(vec![])]),
        err("SR_NOT_ATTACHED", &[sr.as_str().unwrap()])
    );
    api.ok("SR.forget", &[sr.clone()]);
    assert!(loc.join(format!("{vdi_uuid}.vhd")).exists());
    let sr = api.ok(
        "SR.introduce",
        &[s(&uuid), s("Second again"), s(""), s("ext"), s("user"), Value::Bool(false), Value::Struct(vec![])],
    );
    let pbd = api.ok(
        "PBD.create",
        &[Value::Struct(vec![
            ("host".into(), host.clone()),
            ("SR".into(), sr.clone()),
            ("device_config".into(), dc.clone()),
        ])],
    );
    assert_eq!(
        api.call(
            "PBD.create",
            &[Value::Struct(vec![
                ("host".into(), host.clone()),
                ("SR".into(), sr.clone()),
                ("device_config".into(), dc.clone())
            ])]
        ),
        err("PBD_EXISTS", &[sr.as_str().unwrap(), host.as_str().unwrap(), pbd.as_str().unwrap()])
    );
    api.ok("PBD.plug", &[pbd.clone()]);
    let vdi = api.ok("VDI.get_by_uuid", &[s(&vdi_uuid)]);
    assert_eq!(api.int_of("VDI.get_virtual_size", &vdi), 2 * MIB);

    // Destroy: not while attached, not while it holds VDIs; then the directory goes.
    assert_eq!(api.call("SR.destroy", &[sr.clone()]), err("SR_HAS_PBD", &[sr.as_str().unwrap()]));
    api.ok("PBD.unplug", &[pbd.clone()]);
    assert_eq!(api.call("SR.destroy", &[sr.clone()]), err("SR_NOT_EMPTY", &[]));
    api.ok("PBD.plug", &[pbd.clone()]);
    api.ok("VDI.destroy", &[vdi]);
    api.ok("PBD.unplug", &[pbd]);
    api.ok("SR.destroy", &[sr.clone()]);
    assert!(!loc.exists(), "the SR's directory is gone");
    assert!(api.call("SR.get_record", &[sr]).is_err());
}

#[test]
fn a_running_vm_gets_its_disks_from_block_servers() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path(), &[]);
    let sr = api.local_sr();
    let vm = api.vm("with disk");
    let vdi = api.new_vdi(&sr, "root", 8 * MIB);
    let vbd = api.new_vbd(&vm, Some(&vdi), "0", "Disk", "RW").unwrap();
    api.ok("VM.start", &[vm.clone(), Value::Bool(false), Value::Bool(false)]);
    assert_eq!(api.ok("VBD.get_currently_attached", &[vbd.clone()]), Value::Bool(true));
    let uuid = api.str_of("VDI.get_uuid", &vdi);
    let pid = block_server(&uuid).expect("a block server for the disk");
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(api.call("VDI.destroy", &[vdi.clone()]), err("VDI_IN_USE", &[vdi.as_str().unwrap(), "destroy"]));
    assert_eq!(api.call("VBD.destroy", &[vbd.clone()]).unwrap_err()[0], "OPERATION_NOT_ALLOWED");
    // A snapshot of a disk in use pauses its server around the file work.
    let snap = api.ok("VDI.snapshot", &[vdi.clone(), Value::Struct(vec![])]);
    qemu_img_ok(&api.vdi_file(&snap), 8 * MIB);
    assert!(Path::new(&format!("/proc/{pid}")).exists(), "the same server goes on");
    api.ok("VM.hard_shutdown", &[vm.clone()]);
    assert_eq!(api.ok("VBD.get_currently_attached", &[vbd.clone()]), Value::Bool(false));
    wait_for("the block server to exit", || !Path::new(&format!("/proc/{pid}/exe")).exists());
    api.ok("VBD.destroy", &[vbd]);
    api.ok("VDI.destroy", &[vdi]);
}

#[test]
fn vm_clone_copy_and_snapshot_take_their_disks_along() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path(), &[]);
    let sr = api.local_sr();
    let vm = api.vm("source");
    let vdi = api.new_vdi(&sr, "root", 8 * MIB);
    api.new_vbd(&vm, Some(&vdi), "0", "Disk", "RW").unwrap();
    api.new_vbd(&vm, None, "3", "CD", "RO").unwrap();
    let disk_of = |vm: &Value| -> Value {
        let vbds = api.refs("VM.get_VBDs", &[vm.clone()]);
        let disk = vbds.iter().find(|b| api.str_of("VBD.get_type", b) == "Disk").expect("a disk VBD").clone();
        api.ok("VBD.get_VDI", &[disk])
    };

    let clone = api.ok("VM.clone", &[vm.clone(), s("clone")]);
    assert_eq!(api.refs("VM.get_VBDs", &[clone.clone()]).len(), 2, "the disk and the CD drive");
    let cvdi = disk_of(&clone);
    assert_ne!(cvdi, vdi);
    assert!(api.ok("VDI.get_sm_config", &[cvdi.clone()]).get("vhd-parent").is_some(), "a clone is a child");
    assert_eq!(api.ok("VDI.get_is_a_snapshot", &[cvdi]), Value::Bool(false));

    let copy = api.ok("VM.copy", &[vm.clone(), s("copy"), sr.clone()]);
    let kvdi = disk_of(&copy);
    assert_eq!(api.ok("VDI.get_sm_config", &[kvdi.clone()]).get("vhd-parent"), None, "a copy stands alone");
    qemu_img_ok(&api.vdi_file(&kvdi), 8 * MIB);

    let snap = api.ok("VM.snapshot", &[vm.clone(), s("snap"), Value::Array(vec![])]);
    assert_eq!(api.ok("VM.get_is_a_snapshot", &[snap.clone()]), Value::Bool(true));
    assert_eq!(api.ok("VM.get_is_a_template", &[snap.clone()]), Value::Bool(true));
    assert_eq!(api.ok("VM.get_snapshot_of", &[snap.clone()]), vm);
    assert_eq!(api.refs("VM.get_snapshots", &[vm.clone()]), vec![snap.clone()]);
    let svdi = disk_of(&snap);
    assert_eq!(api.ok("VDI.get_snapshot_of", &[svdi]), vdi);
    assert_eq!(
        api.call("VM.start", &[snap.clone(), Value::Bool(false), Value::Bool(false)]).unwrap_err()[0],
        "VM_IS_TEMPLATE"
    );
}
