//! The NBD export (`VDI.get_nbd_info` and `--nbd`): `qemu-img` reads a VDI written with known bytes, a
//! hand-written client walks the handshake's refusals, holds an export open and tries to write; the block servers
//! an export starts go when its client goes, and those of running VMs stay.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use storage_repo::block::BlockDevice;
use storage_repo::formats::vhd::Chain;
use storage_repo::nbd::proto::*;
use xapi_types::Value;

use crate::storage::{MIB, block_server, wait_for};
use crate::support::{Api, err, s};

/// The one record `VDI.get_nbd_info` answers: (exportname, address, port).
fn nbd_info(api: &Api, vdi: &Value) -> (String, String, u16) {
    let infos = api.ok("VDI.get_nbd_info", &[vdi.clone()]);
    let infos = infos.as_array().unwrap();
    assert_eq!(infos.len(), 1, "{infos:?}");
    let field = |k: &str| infos[0].get(k).unwrap_or_else(|| panic!("{k} in {infos:?}")).clone();
    assert_eq!(field("cert"), s(""), "no TLS yet");
    assert_eq!(field("subject"), s(""));
    let port = match field("port") {
        Value::Int(i) => i,
        Value::Str(p) => p.parse().unwrap(),
        other => panic!("port {other:?}"),
    };
    let name = field("exportname").as_str().unwrap().to_string();
    (name, field("address").as_str().unwrap().to_string(), u16::try_from(port).unwrap())
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1).collect()
}

/// Writes known bytes into a VHD file (no block server may be running) and answers the disk's whole content.
fn write_known_bytes(file: &Path, size: usize) -> Vec<u8> {
    let mut want = vec![0u8; size];
    let chain = Chain::open(file, true).unwrap();
    for (offset, len, seed) in
        [(0, 64 << 10, 1), (3 * MIB as usize + 512, 100_000, 2), (2 * MIB as usize - 4096, 8192, 3)]
            .into_iter()
            .chain([(size - 4096, 4096, 4)])
    {
        let data = pattern(len, seed);
        chain.write_at(&data, offset as u64).unwrap();
        want[offset..offset + len].copy_from_slice(&data);
    }
    chain.flush().unwrap();
    want
}

/// `qemu-img convert` of an export into a raw file; `Err` with qemu-img's message if it fails.
fn qemu_img_read(port: u16, export: &str, out: &Path) -> Result<Vec<u8>, String> {
    let opts = format!("driver=nbd,host=127.0.0.1,port={port},export={export}");
    let r = Command::new("qemu-img")
        .args(["convert", "--image-opts", &opts, "-O", "raw"])
        .arg(out)
        .output()
        .expect("qemu-img is installed (tests/install-deps.sh)");
    if !r.status.success() {
        return Err(String::from_utf8_lossy(&r.stderr).into_owned());
    }
    Ok(std::fs::read(out).unwrap())
}

/// A hand-written NBD client, enough to walk the handshake and read.
struct Client(TcpStream);

impl Client {
    fn connect(port: u16) -> Client {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut c = Client(s);
        let mut hello = [0u8; 18];
        c.0.read_exact(&mut hello).unwrap();
        assert_eq!(&hello[0..8], &NBDMAGIC.to_be_bytes());
        assert_eq!(&hello[8..16], &IHAVEOPT.to_be_bytes());
        assert_eq!(u16::from_be_bytes([hello[16], hello[17]]), FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
        c.0.write_all(&(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes()).unwrap();
        c
    }

    fn send_option(&mut self, option: u32, data: &[u8]) {
        let mut out = IHAVEOPT.to_be_bytes().to_vec();
        out.extend_from_slice(&option.to_be_bytes());
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(data);
        self.0.write_all(&out).unwrap();
    }

    /// Sends an option and reads its replies up to `NBD_REP_ACK` or an error: (reply type, data) each.
    fn option(&mut self, option: u32, data: &[u8]) -> Vec<(u32, Vec<u8>)> {
        self.send_option(option, data);
        let mut replies = Vec::new();
        loop {
            let mut h = [0u8; 20];
            self.0.read_exact(&mut h).unwrap();
            assert_eq!(&h[0..8], &OPT_REPLY_MAGIC.to_be_bytes());
            assert_eq!(u32::from_be_bytes(h[8..12].try_into().unwrap()), option);
            let kind = u32::from_be_bytes(h[12..16].try_into().unwrap());
            let mut data = vec![0u8; u32::from_be_bytes(h[16..20].try_into().unwrap()) as usize];
            self.0.read_exact(&mut data).unwrap();
            replies.push((kind, data));
            if kind == REP_ACK || kind & (1 << 31) != 0 {
                return replies;
            }
        }
    }

    /// `NBD_OPT_GO`/`NBD_OPT_INFO` for `name`: `Ok((size, flags))` or `Err(error reply type)`.
    fn go(&mut self, option: u32, name: &str) -> Result<(u64, u16), u32> {
        let replies = self.option(option, &info_request(name.as_bytes(), &[INFO_BLOCK_SIZE]));
        let (last, _) = replies.last().unwrap();
        if *last != REP_ACK {
            return Err(*last);
        }
        let export = replies.iter().find(|(k, d)| *k == REP_INFO && d[0..2] == INFO_EXPORT.to_be_bytes()).unwrap();
        let d = &export.1;
        Ok((u64::from_be_bytes(d[2..10].try_into().unwrap()), u16::from_be_bytes([d[10], d[11]])))
    }

    fn request(&mut self, kind: u16, offset: u64, len: u32) {
        let req = Request { flags: 0, kind, cookie: 7, offset, len };
        self.0.write_all(&req.encode()).unwrap();
    }

    fn read(&mut self, offset: u64, len: u32) -> Vec<u8> {
        self.request(CMD_READ, offset, len);
        let mut reply = [0u8; REPLY_LEN];
        self.0.read_exact(&mut reply).unwrap();
        assert_eq!(&reply[0..4], &SIMPLE_REPLY_MAGIC.to_be_bytes());
        assert_eq!(u32::from_be_bytes(reply[4..8].try_into().unwrap()), 0, "no error");
        let mut data = vec![0u8; len as usize];
        self.0.read_exact(&mut data).unwrap();
        data
    }

    /// True once the server has closed the connection.
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.0.read(&mut b), Ok(0) | Err(_))
    }
}

#[test]
fn qemu_img_reads_a_vdi_through_the_nbd_export() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path(), &["--nbd", "127.0.0.1:0"]);
    let sr = api.local_sr();
    let size = 8 * MIB;
    let vdi = api.new_vdi(&sr, "exported", size);
    let uuid = api.str_of("VDI.get_uuid", &vdi);
    let want = write_known_bytes(&api.vdi_file(&vdi), size as usize);

    let (export, address, port) = nbd_info(&api, &vdi);
    assert_eq!(export, format!("/{uuid}?session_id={}", api.sess.as_str().unwrap()), "XenServer's export name");
    assert_eq!(address, "127.0.0.1");
    assert_ne!(port, 0, "the port the listener got");
    assert_eq!(block_server(&uuid), None, "a server starts only when a client connects");

    let got = qemu_img_read(port, &export, &dir.path().join("out.raw")).unwrap();
    assert!(got == want, "qemu-img read what was written");
    // Without the leading slash too.
    let got = qemu_img_read(port, &export[1..], &dir.path().join("out2.raw")).unwrap();
    assert!(got == want);
    wait_for("the export's block server to stop", || block_server(&uuid).is_none());

    // A session that is not valid: refused before any block server starts.
    let bad = format!("/{uuid}?session_id=OpaqueRef:00000000-0000-0000-0000-000000000000");
    let e = qemu_img_read(port, &bad, &dir.path().join("bad.raw")).unwrap_err();
    assert!(e.contains("session is not valid"), "{e}");
    assert_eq!(block_server(&uuid), None);
    // Each session gets its own export name, which works only while the session lives.
    let other = api.d.login();
    let infos = api.d.xml("VDI.get_nbd_info", &[s(&other), vdi.clone()]).unwrap();
    let export2 = infos.as_array().unwrap()[0].get("exportname").unwrap().as_str().unwrap().to_string();
    assert_eq!(export2, format!("/{uuid}?session_id={other}"));
    api.d.xml("session.logout", &[s(&other)]).unwrap();
    assert!(qemu_img_read(port, &export2, &dir.path().join("out3.raw")).is_err());

    // The VDI can be destroyed once nobody reads it.
    api.ok("VDI.destroy", &[vdi]);
}

#[test]
fn the_handshake_refuses_what_it_cannot_serve_and_the_export_is_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path(), &["--nbd", "127.0.0.1:0"]);
    let sr = api.local_sr();
    let vdi = api.new_vdi(&sr, "exported", 4 * MIB);
    let uuid = api.str_of("VDI.get_uuid", &vdi);
    let want = write_known_bytes(&api.vdi_file(&vdi), 4 * MIB as usize);
    let (export, _, port) = nbd_info(&api, &vdi);
    let session = api.sess.as_str().unwrap();

    let mut c = Client::connect(port);
    // Refusals keep the client in negotiation.
    assert_eq!(c.go(OPT_GO, "nonsense"), Err(REP_ERR_UNKNOWN));
    let missing = format!("/{}?session_id={session}", uuid::Uuid::new_v4());
    assert_eq!(c.go(OPT_GO, &missing), Err(REP_ERR_UNKNOWN));
    assert_eq!(c.go(OPT_GO, &format!("/{uuid}?session_id=OpaqueRef:nope")), Err(REP_ERR_POLICY));
    assert_eq!(c.option(OPT_LIST, &[]), vec![(REP_ACK, vec![])], "no exports are listed");
    assert_eq!(c.option(OPT_STRUCTURED_REPLY, &[])[0].0, REP_ERR_UNSUP);
    // INFO, then GO: the export as the block server has it, read-only and without write flags.
    let (size, flags) = c.go(OPT_INFO, &export).unwrap();
    assert_eq!(size, 4 * MIB as u64);
    assert_eq!(flags & FLAG_READ_ONLY, FLAG_READ_ONLY);
    assert_eq!(flags & (FLAG_SEND_TRIM | FLAG_SEND_WRITE_ZEROES | FLAG_SEND_FUA), 0);
    assert_eq!(c.go(OPT_GO, &export), Ok((size, flags)));
    assert_eq!(c.read(0, 4096), want[..4096]);
    assert_eq!(c.read(3 * MIB as u64, 1 << 20), want[3 * MIB as usize..4 * MIB as usize]);

    // While a client reads it, its block server runs (read-only) and the VDI is in use.
    let pid = block_server(&uuid).expect("the export's block server");
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(cmdline.contains("--read-only"), "{cmdline:?}");
    assert_eq!(api.call("VDI.destroy", &[vdi.clone()]), err("VDI_IN_USE", &[vdi.as_str().unwrap(), "destroy"]));
    assert_eq!(
        api.call("VDI.resize", &[vdi.clone(), Value::Int(8 * MIB)]),
        err("VDI_IN_USE", &[vdi.as_str().unwrap(), "resize"])
    );
    let pbd = api.refs("SR.get_PBDs", &[sr.clone()])[0].clone();
    assert_eq!(api.call("PBD.unplug", &[pbd]), err("VDI_IN_USE", &[vdi.as_str().unwrap(), "PBD.unplug"]));
    // Another client at the same time shares the server.
    let mut c2 = Client::connect(port);
    c2.go(OPT_GO, &export).unwrap();
    drop(c2);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(block_server(&uuid), Some(pid), "the first client still holds it");

    // A write to the read-only export ends the connection; the server goes with its last client.
    c.request(CMD_WRITE, 0, 512);
    let _ = c.0.write_all(&[0u8; 512]);
    assert!(c.closed(), "a write is answered by hanging up");
    wait_for("the export's block server to stop", || block_server(&uuid).is_none());

    // EXPORT_NAME with a name that is refused: the connection is closed (the protocol has no other answer).
    let mut c = Client::connect(port);
    c.send_option(OPT_EXPORT_NAME, b"nonsense");
    assert!(c.closed());
    // EXPORT_NAME with the right name: size and flags, no zeroes (NO_ZEROES was agreed).
    let mut c = Client::connect(port);
    c.send_option(OPT_EXPORT_NAME, export.as_bytes());
    let mut answer = [0u8; 10];
    c.0.read_exact(&mut answer).unwrap();
    assert_eq!(u64::from_be_bytes(answer[0..8].try_into().unwrap()), 4 * MIB as u64);
    assert_eq!(u16::from_be_bytes([answer[8], answer[9]]) & FLAG_READ_ONLY, FLAG_READ_ONLY);
    assert_eq!(c.read(4 * MIB as u64 - 4096, 4096), want[want.len() - 4096..]);
    c.request(CMD_DISC, 0, 0);
    assert!(c.closed());
    // ABORT: acknowledged, then closed.
    let mut c = Client::connect(port);
    assert_eq!(c.option(OPT_ABORT, &[]), vec![(REP_ACK, vec![])]);
    assert!(c.closed());
    wait_for("the export's block server to stop", || block_server(&uuid).is_none());

    // A daemon that stops disconnects its clients and stops the block servers it started for them.
    let mut c = Client::connect(port);
    c.go(OPT_GO, &export).unwrap();
    assert!(block_server(&uuid).is_some());
    assert!(api.d.terminate().success());
    assert!(c.closed());
    assert_eq!(block_server(&uuid), None);
}

#[test]
fn an_export_shares_a_running_vms_block_server_and_keeps_a_vm_from_writing_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path(), &["--nbd", "127.0.0.1:0"]);
    let sr = api.local_sr();
    let vm = api.vm("exported disk");
    let vdi = api.new_vdi(&sr, "root", 4 * MIB);
    let uuid = api.str_of("VDI.get_uuid", &vdi);
    let want = write_known_bytes(&api.vdi_file(&vdi), 4 * MIB as usize);
    api.new_vbd(&vm, Some(&vdi), "0", "Disk", "RW").unwrap();
    let (export, _, port) = nbd_info(&api, &vdi);

    // The VM's server (read-write) serves the export too, which stays read-only; it outlives the client.
    api.ok("VM.start", &[vm.clone(), Value::Bool(false), Value::Bool(false)]);
    let pid = block_server(&uuid).expect("the VM's block server");
    let mut c = Client::connect(port);
    let (_, flags) = c.go(OPT_GO, &export).unwrap();
    assert_eq!(flags & FLAG_READ_ONLY, FLAG_READ_ONLY);
    assert_eq!(c.read(0, 65536), want[..65536]);
    // The VM stops while the client reads: the server stays for the client, and goes after it.
    api.ok("VM.hard_shutdown", &[vm.clone()]);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(block_server(&uuid), Some(pid));
    assert_eq!(c.read(4 * MIB as u64 - 4096, 4096), want[want.len() - 4096..]);
    drop(c);
    wait_for("the block server to stop", || block_server(&uuid).is_none());

    // A client reading from a read-only server: the VM cannot attach the disk read-write meanwhile (as the
    // read-only VBD of xapi-nbd keeps it from doing on XenServer).
    let mut c = Client::connect(port);
    c.go(OPT_GO, &export).unwrap();
    let e = api.call("VM.start", &[vm.clone(), Value::Bool(false), Value::Bool(false)]).unwrap_err();
    assert_eq!(e[..3], ["VDI_IN_USE".to_string(), vdi.as_str().unwrap().to_string(), "attach".to_string()]);
    drop(c);
    wait_for("the export's block server to stop", || block_server(&uuid).is_none());
    api.ok("VM.start", &[vm.clone(), Value::Bool(false), Value::Bool(false)]);
    assert!(block_server(&uuid).is_some());
    api.ok("VM.hard_shutdown", &[vm]);
    wait_for("the block server to stop", || block_server(&uuid).is_none());
}

#[test]
fn get_nbd_info_without_an_export_and_for_vdis_that_cannot_be_exported() {
    let dir = tempfile::tempdir().unwrap();
    let isos = dir.path().join("isos");
    std::fs::create_dir_all(&isos).unwrap();
    std::fs::write(isos.join("tools.iso"), vec![7u8; 4096]).unwrap();
    let api = Api::start(&dir.path().join("data"), &[]);
    let sr = api.local_sr();
    let vdi = api.new_vdi(&sr, "disk", 2 * MIB);
    assert_eq!(api.ok("VDI.get_nbd_info", &[vdi.clone()]), Value::Array(vec![]), "--nbd none: as no NBD network");

    // An ISO image: not a VHD VDI of an ext SR.
    let host = api.refs("host.get_all", &[])[0].clone();
    let dc = Value::Struct(vec![("location".into(), s(isos.to_str().unwrap()))]);
    let iso_sr = api.ok(
        "SR.create",
        &[host, dc, Value::Int(0), s("ISOs"), s(""), s("iso"), s("iso"), Value::Bool(false), Value::Struct(vec![])],
    );
    let iso = api.refs("SR.get_VDIs", &[iso_sr])[0].clone();
    let e = api.call("VDI.get_nbd_info", &[iso.clone()]).unwrap_err();
    assert_eq!(e[..2], ["VDI_INCOMPATIBLE_TYPE".to_string(), iso.as_str().unwrap().to_string()]);
    // A base copy (a snapshot's hidden parent) is not managed.
    api.ok("VDI.snapshot", &[vdi.clone(), Value::Struct(vec![])]);
    let base = api
        .refs("SR.get_VDIs", &[sr])
        .into_iter()
        .find(|v| api.ok("VDI.get_managed", &[v.clone()]) == Value::Bool(false))
        .expect("a base copy");
    assert_eq!(api.call("VDI.get_nbd_info", &[base.clone()]), err("VDI_NOT_MANAGED", &[base.as_str().unwrap()]));
}
