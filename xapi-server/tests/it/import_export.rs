//! `/import_raw_vdi` and `/export_raw_vdi`: raw and VHD uploads (ours and `qemu-img`'s), with a `Content-Length`
//! and chunked, exports compared byte for byte and checked by `qemu-img`, and failed uploads (too long,
//! truncated, hostile, cancelled) that leave the VDI as it was and no temporary file behind.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;

use xapi_types::Value;

use crate::storage::{MIB, wait_for};
use crate::support::{Api, PASSWORD, s};

const SIZE: i64 = 16 * MIB;

/// A disk image with data at a few places and zeros elsewhere (`len` bytes).
fn pattern(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    for (i, b) in v[..MIB as usize].iter_mut().enumerate() {
        *b = (i % 251) as u8 ^ 0x5a;
    }
    let at = 5 * MIB as usize + 12345;
    for (i, b) in v[at..at + 70_000].iter_mut().enumerate() {
        *b = (i % 13) as u8 + 1;
    }
    let tail = len - 4096;
    v[tail..].fill(0xee);
    v
}

/// One request on its own connection (`Connection: close`): status line code and body.
fn request(addr: SocketAddr, head: &str, body: impl FnOnce(&mut TcpStream)) -> (u16, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(format!("{head}Host: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    body(&mut c);
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn put(addr: SocketAddr, target: &str, data: &[u8]) -> (u16, String) {
    let head = format!("PUT {target} HTTP/1.1\r\nContent-Length: {}\r\n", data.len());
    request(addr, &head, |c| {
        let _ = c.write_all(data);
    })
}

fn put_chunked(addr: SocketAddr, target: &str, data: &[u8]) -> (u16, String) {
    let head = format!("PUT {target} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n");
    request(addr, &head, |c| {
        // Uneven chunk sizes, so that pieces do not line up with anything.
        for chunk in data.chunks(100_003) {
            write!(c, "{:x}\r\n", chunk.len()).unwrap();
            c.write_all(chunk).unwrap();
            c.write_all(b"\r\n").unwrap();
        }
        c.write_all(b"0\r\n\r\n").unwrap();
    })
}

fn get(addr: SocketAddr, target: &str) -> (u16, Vec<u8>) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut resp = agent.get(&format!("http://{addr}{target}")).call().unwrap();
    let status = resp.status().as_u16();
    (status, resp.body_mut().with_config().limit(1 << 31).read_to_vec().unwrap())
}

impl Api {
    fn session(&self) -> &str {
        self.sess.as_str().unwrap()
    }

    /// `/import_raw_vdi` into `vdi` in `format`, through `task` if given.
    fn import_target(&self, vdi: &Value, format: &str, task: Option<&Value>) -> String {
        let mut t =
            format!("/import_raw_vdi?session_id={}&vdi={}&format={format}", self.session(), vdi.as_str().unwrap());
        if let Some(task) = task {
            t.push_str(&format!("&task_id={}", task.as_str().unwrap()));
        }
        t
    }

    fn import(&self, vdi: &Value, format: &str, data: &[u8]) -> (u16, String) {
        put(self.d.addr, &self.import_target(vdi, format, None), data)
    }

    fn export(&self, vdi: &Value, format: &str) -> Vec<u8> {
        let target =
            format!("/export_raw_vdi?session_id={}&vdi={}&format={format}", self.session(), vdi.as_str().unwrap());
        let (status, body) = get(self.d.addr, &target);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body[..body.len().min(200)]));
        body
    }
}

fn qemu_img(args: &[&str], files: &[&Path]) -> String {
    let out = Command::new("qemu-img").args(args).args(files).output().expect("qemu-img is installed");
    assert!(out.status.success(), "qemu-img {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Only VDI files in the SR directory: no upload, import or export file left behind.
fn no_temporary_files(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().flatten().all(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        e.file_type().unwrap().is_dir() || (!name.starts_with('.') || name == ".sr-uuid") && !name.contains(".vhd.")
    })
}

#[test]
fn raw_and_vhd_uploads_and_exports() {
    let tmp = tempfile::tempdir().unwrap();
    let api = Api::start(tmp.path(), &[]);
    let sr = api.local_sr();
    let dir = api.sr_dir(&sr);
    let source = pattern(SIZE as usize);
    let source_path = tmp.path().join("source.raw");
    std::fs::write(&source_path, &source).unwrap();

    // Raw with a Content-Length; the VDI's file is a VHD that qemu-img reads as the same disk.
    let a = api.new_vdi(&sr, "a", SIZE);
    assert_eq!(api.import(&a, "raw", &source), (200, String::new()));
    assert!(api.export(&a, "raw") == source, "raw export differs from the upload");
    let a_file = api.vdi_file(&a);
    qemu_img(&["info", "-f", "vpc"], &[&a_file]);
    qemu_img(&["compare", "-f", "vpc", "-F", "raw"], &[&a_file, &source_path]);
    // Holes stay holes: 1 MiB at 0, 70 000 bytes at 5 MiB and 4 KiB at the end are 3 blocks of 2 MiB.
    let physical = api.int_of("VDI.get_physical_utilisation", &a);
    assert!(physical < 8 * MIB, "physical utilisation {physical}");
    assert_eq!(api.int_of("VDI.get_virtual_size", &a), SIZE);

    // POST works as PUT does.
    let head = format!(
        "POST /import_raw_vdi?session_id={}&vdi={}&format=raw HTTP/1.1\r\nContent-Length: {SIZE}\r\n",
        api.session(),
        a.as_str().unwrap()
    );
    assert_eq!(request(api.d.addr, &head, |c| c.write_all(&source).unwrap()).0, 200);
    assert!(api.export(&a, "raw") == source);

    // A shorter raw upload: the rest reads as zeros.
    let short = api.new_vdi(&sr, "short", SIZE);
    assert_eq!(api.import(&short, "raw", &source[..3 * MIB as usize]).0, 200);
    let mut expected = source[..3 * MIB as usize].to_vec();
    expected.resize(SIZE as usize, 0);
    assert!(api.export(&short, "raw") == expected);

    // Chunked, by UUID.
    let b = api.new_vdi(&sr, "b", SIZE);
    let b_uuid = api.str_of("VDI.get_uuid", &b);
    let target = format!("/import_raw_vdi?session_id={}&vdi={b_uuid}&format=raw", api.session());
    assert_eq!(put_chunked(api.d.addr, &target, &source).0, 200);
    assert!(api.export(&b, "raw") == source, "chunked upload differs");

    // A VHD export is a dynamic VHD qemu-img reads as the same disk; imported again (chunked), it gives the same
    // raw content back.
    let vhd = api.export(&a, "vhd");
    let vhd_path = tmp.path().join("exported.vhd");
    std::fs::write(&vhd_path, &vhd).unwrap();
    qemu_img(&["compare", "-f", "vpc", "-F", "raw"], &[&vhd_path, &source_path]);
    // `qemu-img check` cannot check vpc ("does not support checks"): vhd-util's rules, as `vhd-util check`.
    storage_repo::formats::vhd::check(&vhd_path).expect("the exported VHD passes vhd-util's checks");
    assert!(vhd.len() < 10 * MIB as usize, "the exported VHD is sparse ({} bytes)", vhd.len());
    let c = api.new_vdi(&sr, "c", SIZE);
    let target = api.import_target(&c, "vhd", None);
    assert_eq!(put_chunked(api.d.addr, &target, &vhd).0, 200);
    assert!(api.export(&c, "raw") == source, "raw → vhd → raw differs");

    // VHDs written by qemu-img (creator "qemu"), dynamic and fixed, into a larger VDI.
    for sub in ["dynamic", "fixed"] {
        let foreign = tmp.path().join(format!("{sub}.vhd"));
        qemu_img(
            &["convert", "-f", "raw", "-O", "vpc", "-o", &format!("subformat={sub},force_size=on")],
            &[&source_path, &foreign],
        );
        let v = api.new_vdi(&sr, sub, 2 * SIZE);
        let (status, body) = api.import(&v, "vhd", &std::fs::read(&foreign).unwrap());
        assert_eq!(status, 200, "{sub}: {body}");
        let mut expected = source.clone();
        expected.resize(2 * SIZE as usize, 0);
        assert!(api.export(&v, "raw") == expected, "{sub} VHD from qemu-img differs");
        qemu_img(&["compare", "-f", "vpc", "-F", "raw"], &[&api.vdi_file(&v), &source_path]);
    }

    // HTTP Basic instead of a session; a bad session, bad credentials and none at all are 401.
    let basic = |user_pass: &str| {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let url = format!("http://{}/export_raw_vdi?vdi={}&format=raw", api.d.addr, a.as_str().unwrap());
        let auth = format!("Basic {}", base64(user_pass.as_bytes()));
        let mut r = agent.get(&url).header("Authorization", &auth).call().unwrap();
        (r.status().as_u16(), r.body_mut().with_config().limit(1 << 31).read_to_vec().unwrap())
    };
    let (status, body) = basic(&format!("root:{PASSWORD}"));
    assert_eq!(status, 200);
    assert!(body == source);
    assert_eq!(basic("root:wrong").0, 401);
    let target = format!("/import_raw_vdi?session_id=OpaqueRef:nope&vdi={}", a.as_str().unwrap());
    let (status, body) = put(api.d.addr, &target, b"x");
    assert_eq!(status, 401, "{body}");
    let (status, _) = get(api.d.addr, &format!("/export_raw_vdi?vdi={}", a.as_str().unwrap()));
    assert_eq!(status, 401);
    // The session as a cookie.
    let head = format!(
        "GET /export_raw_vdi?vdi={}&format=raw HTTP/1.1\r\nCookie: session_id={}\r\n",
        a.as_str().unwrap(),
        api.session()
    );
    assert_eq!(request(api.d.addr, &head, |_| {}).0, 200);
    // An unknown VDI.
    let target = format!("/export_raw_vdi?session_id={}&vdi=OpaqueRef:nope", api.session());
    assert_eq!(get(api.d.addr, &target).0, 404);
    assert!(no_temporary_files(&dir));
}

/// A base64 encoder for the test's Basic credentials.
fn base64(b: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn failed_uploads_leave_the_vdi_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let api = Api::start(tmp.path(), &[]);
    let sr = api.local_sr();
    let dir = api.sr_dir(&sr);
    let v = api.new_vdi(&sr, "v", SIZE);
    let before = pattern(SIZE as usize);
    assert_eq!(api.import(&v, "raw", &before).0, 200);
    let unchanged = |what: &str| {
        wait_for("no temporary files", || no_temporary_files(&dir));
        assert!(api.export(&v, "raw") == before, "{what} changed the VDI");
    };

    // Longer than the VDI.
    let (status, body) = api.import(&v, "raw", &vec![1u8; (SIZE + MIB) as usize]);
    assert_eq!(status, 400, "{body}");
    assert!(body.starts_with("VDI_TOO_SMALL"), "{body}");
    unchanged("a too long upload");

    // Truncated: the client promises 8 MiB, sends 3 and goes.
    let target = api.import_target(&v, "raw", None);
    {
        let mut c = TcpStream::connect(api.d.addr).unwrap();
        write!(c, "PUT {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", 8 * MIB).unwrap();
        c.write_all(&vec![7u8; 3 * MIB as usize]).unwrap();
    }
    unchanged("a truncated upload");

    // Not a VHD; a VHD larger than the VDI.
    let (status, body) = api.import(&v, "vhd", &vec![0x42u8; 3 * MIB as usize]);
    assert_eq!(status, 400, "{body}");
    assert!(body.starts_with("IMPORT_ERROR"), "{body}");
    unchanged("a hostile VHD");
    let big = tmp.path().join("big.vhd");
    let out =
        Command::new("qemu-img").args(["create", "-f", "vpc", "-o", "force_size=on"]).arg(&big).arg("64M").output();
    assert!(out.unwrap().status.success());
    let (status, body) = api.import(&v, "vhd", &std::fs::read(&big).unwrap());
    assert_eq!(status, 400, "{body}");
    assert!(body.starts_with("VDI_TOO_SMALL"), "{body}");
    unchanged("a too large VHD");

    // Cancelled through its task, half-way.
    let task = api.ok("task.create", &[s("upload"), s("")]);
    let target = api.import_target(&v, "raw", Some(&task));
    let mut c = TcpStream::connect(api.d.addr).unwrap();
    write!(c, "PUT {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {SIZE}\r\nConnection: close\r\n\r\n").unwrap();
    c.write_all(&vec![9u8; 4 * MIB as usize]).unwrap();
    wait_for("progress", || matches!(api.ok("task.get_progress", &[task.clone()]), Value::Float(f) if f > 0.0));
    api.ok("task.cancel", &[task.clone()]);
    // The next bytes find the task cancelled (the answer may come before all of them are taken).
    let _ = c.write_all(&vec![9u8; 2 * MIB as usize]);
    wait_for("the task to end", || api.str_of("task.get_status", &task) != "cancelling");
    assert_eq!(api.str_of("task.get_status", &task), "cancelled");
    drop(c);
    unchanged("a cancelled upload");

    // Leftovers of a crash in the middle of an import are no obstacle, and go.
    let uuid = api.str_of("VDI.get_uuid", &v);
    std::fs::write(dir.join(format!("{uuid}.vhd.import")), b"junk").unwrap();
    std::fs::write(dir.join(format!(".{uuid}.upload")), b"junk").unwrap();
    assert!(!no_temporary_files(&dir));
    assert_eq!(api.import(&v, "raw", &before).0, 200);
    unchanged("an import over a crash's leftovers");

    // Through a task to the end: progress 1, success.
    let task = api.ok("task.create", &[s("upload"), s("")]);
    let target = api.import_target(&v, "raw", Some(&task));
    let after: Vec<u8> = before.iter().map(|b| b.wrapping_add(1)).collect();
    assert_eq!(put(api.d.addr, &target, &after).0, 200);
    assert_eq!(api.str_of("task.get_status", &task), "success");
    assert_eq!(api.ok("task.get_progress", &[task.clone()]), Value::Float(1.0));
    assert_eq!(api.str_of("task.get_result", &task), format!("<value>{}</value>", v.as_str().unwrap()));
    assert!(api.export(&v, "raw") == after);

    // A VDI with a snapshot is refused: the import would cut its chain.
    let snap = api.ok("VDI.snapshot", &[v.clone(), Value::Struct(vec![])]);
    let (status, body) = api.import(&v, "raw", b"abc");
    assert_eq!(status, 400, "{body}");
    assert!(body.starts_with("IMPORT_ERROR"), "{body}");
    assert!(api.export(&snap, "raw") == after);
    assert!(no_temporary_files(&dir));
}

#[test]
fn a_disk_in_use_is_neither_imported_into_nor_exported() {
    let tmp = tempfile::tempdir().unwrap();
    let api = Api::start(tmp.path(), &[]);
    let sr = api.local_sr();
    let vm = api.vm("with disk");
    let vdi = api.new_vdi(&sr, "root", 8 * MIB);
    let data = pattern(8 * MIB as usize);
    assert_eq!(api.import(&vdi, "raw", &data).0, 200);
    api.new_vbd(&vm, Some(&vdi), "0", "Disk", "RW").unwrap();
    api.ok("VM.start", &[vm.clone(), Value::Bool(false), Value::Bool(false)]);
    let (status, body) = api.import(&vdi, "raw", b"abc");
    assert_eq!((status, body.trim()), (409, format!("VDI_IN_USE {} import", vdi.as_str().unwrap()).as_str()));
    let target = format!("/export_raw_vdi?session_id={}&vdi={}&format=raw", api.session(), vdi.as_str().unwrap());
    assert_eq!(get(api.d.addr, &target).0, 409);
    api.ok("VM.hard_shutdown", &[vm.clone()]);
    assert!(api.export(&vdi, "raw") == data);
}

/// VMware disks made by `qemu-img convert -O vmdk` (monolithicSparse, and streamOptimized as in OVA files) are
/// converted on upload: the VDI holds exactly the source's content (qemu-img compares the VHD with it), with only
/// the data's blocks allocated; a VMDK cut short or chunked upload of one works or fails cleanly.
#[test]
fn vmdk_uploads_are_converted_to_vhd() {
    let tmp = tempfile::tempdir().unwrap();
    let api = Api::start(tmp.path(), &[]);
    let sr = api.local_sr();
    let dir = api.sr_dir(&sr);
    let source = pattern(SIZE as usize);
    let source_path = tmp.path().join("source.raw");
    std::fs::write(&source_path, &source).unwrap();
    for (sub, chunked) in [("monolithicSparse", false), ("streamOptimized", true)] {
        let vmdk = tmp.path().join(format!("{sub}.vmdk"));
        qemu_img(&["convert", "-f", "raw", "-O", "vmdk", "-o", &format!("subformat={sub}")], &[&source_path, &vmdk]);
        let bytes = std::fs::read(&vmdk).unwrap();
        let vdi = api.new_vdi(&sr, sub, SIZE);
        let target = api.import_target(&vdi, "vmdk", None);
        let reply = if chunked { put_chunked(api.d.addr, &target, &bytes) } else { put(api.d.addr, &target, &bytes) };
        assert_eq!(reply, (200, String::new()), "{sub}");
        assert!(api.export(&vdi, "raw") == source, "{sub}: the VDI differs from the VMDK's content");
        qemu_img(&["compare", "-f", "vpc", "-F", "raw"], &[&api.vdi_file(&vdi), &source_path]);
        let physical = api.int_of("VDI.get_physical_utilisation", &vdi);
        assert!(physical < 8 * MIB, "{sub}: physical utilisation {physical}");

        // Cut in the middle of the grains: refused, the VDI keeps what it had.
        let (status, body) = api.import(&vdi, "vmdk", &bytes[..bytes.len() / 2]);
        assert_eq!(status, 400, "{sub}: {body}");
        assert!(body.starts_with("IMPORT_ERROR"), "{sub}: {body}");
        assert!(api.export(&vdi, "raw") == source, "{sub}: a failed import changed the VDI");
        assert!(no_temporary_files(&dir));
    }
}

fn vdi_count(api: &Api) -> usize {
    match api.ok("VDI.get_all", &[]) {
        Value::Array(a) => a.len(),
        other => panic!("VDI.get_all: {other:?}"),
    }
}

#[test]
fn deltas_and_imports_that_make_their_vdi() {
    let tmp = tempfile::tempdir().unwrap();
    let api = Api::start(tmp.path(), &[]);
    let sr = api.local_sr();
    let dir = api.sr_dir(&sr);
    let null = || s("OpaqueRef:NULL");
    // A has data in blocks 0, 2 and 7; B zeroes block 0 and writes into block 1.
    let a = pattern(SIZE as usize);
    let mut b = a.clone();
    b[..MIB as usize].fill(0);
    b[3 * MIB as usize..3 * MIB as usize + 5000].fill(0x77);

    // V holds A, is snapshotted (S1), then gets B (a copy over it): V's chain differs from S1 in blocks 0 and 1.
    let v = api.new_vdi(&sr, "v", SIZE);
    assert_eq!(api.import(&v, "raw", &a), (200, String::new()));
    let s1 = api.ok("VDI.snapshot", &[v.clone(), Value::Struct(vec![])]);
    let w = api.new_vdi(&sr, "w", SIZE);
    assert_eq!(api.import(&w, "raw", &b), (200, String::new()));
    api.ok("VDI.copy", &[w.clone(), sr.clone(), null(), v.clone()]);
    assert!(api.export(&v, "raw") == b);

    let full = api.export(&s1, "vhd");
    let target = |base: &Value, format: &str| {
        format!(
            "/export_raw_vdi?session_id={}&vdi={}&format={format}&base={}",
            api.session(),
            v.as_str().unwrap(),
            base.as_str().unwrap()
        )
    };
    let (status, delta) = get(api.d.addr, &target(&s1, "vhd"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&delta));
    // Two 2 MiB blocks, against the full disk's three.
    assert!(delta.len() < 5 * MIB as usize && full.len() > 6 * MIB as usize, "{} {}", delta.len(), full.len());
    assert_eq!(&delta[..8], b"conectix");
    let (status, body) = get(api.d.addr, &target(&s1, "raw"));
    assert_eq!(status, 400, "base= with raw: {}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).starts_with("IMPORT_ERROR"));

    // An import that makes its VDI, sized from the VHD's header; the answer is the new VDI's ref.
    let before = vdi_count(&api);
    let (status, body) = put(
        api.d.addr,
        &format!(
            "/import_raw_vdi?session_id={}&sr={}&format=vhd&name_label=restored",
            api.session(),
            sr.as_str().unwrap()
        ),
        &full,
    );
    assert_eq!(status, 200, "{body}");
    let x = s(body.trim());
    assert_eq!(vdi_count(&api), before + 1);
    assert_eq!(api.ok("VDI.get_name_label", &[x.clone()]), s("restored"));
    assert_eq!(api.int_of("VDI.get_virtual_size", &x), SIZE);
    assert!(api.export(&x, "raw") == a);

    // The delta onto it: it now holds B.
    assert_eq!(api.import(&x, "vhd", &delta), (200, String::new()));
    assert!(api.export(&x, "raw") == b, "the delta applied onto the base gives the disk");
    qemu_img(
        &["compare", "-f", "vpc", "-F", "raw"],
        &[&api.vdi_file(&x), &{
            let p = tmp.path().join("b.raw");
            std::fs::write(&p, &b).unwrap();
            p
        }],
    );
    // Again: it no longer holds the base. Nor does a VDI that got a raw import.
    let (status, body) = api.import(&x, "vhd", &delta);
    assert_eq!(status, 400, "{body}");
    assert!(body.starts_with("IMPORT_ERROR") && body.contains("delta"), "{body}");
    assert!(api.export(&x, "raw") == b);
    let (status, body) = api.import(&w, "vhd", &delta);
    assert_eq!(status, 400, "{body}");
    assert!(api.export(&w, "raw") == b);

    // Failed imports that make their VDI leave none behind: a chunked raw body with no size, a cut VMDK.
    let before = vdi_count(&api);
    let (status, body) = put_chunked(
        api.d.addr,
        &format!("/import_raw_vdi?session_id={}&sr={}&format=raw", api.session(), sr.as_str().unwrap()),
        &a,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.starts_with("IMPORT_ERROR"), "{body}");
    let source_path = tmp.path().join("a.raw");
    std::fs::write(&source_path, &a).unwrap();
    let vmdk = tmp.path().join("a.vmdk");
    qemu_img(&["convert", "-f", "raw", "-O", "vmdk"], &[&source_path, &vmdk]);
    let bytes = std::fs::read(&vmdk).unwrap();
    let sr_target = format!("/import_raw_vdi?session_id={}&sr={}&format=vmdk", api.session(), sr.as_str().unwrap());
    let (status, body) = put(api.d.addr, &sr_target, &bytes[..bytes.len() / 2]);
    assert_eq!(status, 400, "{body}");
    assert_eq!(vdi_count(&api), before, "a failed import destroys the VDI it made");
    // The whole VMDK: a VDI of its capacity, chunked (the size comes from the header).
    let (status, body) = put_chunked(api.d.addr, &sr_target, &bytes);
    assert_eq!(status, 200, "{body}");
    let y = s(body.trim());
    assert!(api.export(&y, "raw") == a);
    assert!(no_temporary_files(&dir));
}

#[test]
fn hostile_vmdks_fail_their_task_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let api = Api::start(tmp.path(), &[]);
    let sr = api.local_sr();
    let dir = api.sr_dir(&sr);
    let v = api.new_vdi(&sr, "v", SIZE);
    let before = pattern(SIZE as usize);
    assert_eq!(api.import(&v, "raw", &before).0, 200);
    let source = tmp.path().join("s.raw");
    std::fs::write(&source, &before).unwrap();
    let vmdk = tmp.path().join("s.vmdk");
    qemu_img(&["convert", "-f", "raw", "-O", "vmdk"], &[&source, &vmdk]);
    let good = std::fs::read(&vmdk).unwrap();

    // A grain table entry pointing past the end of the file.
    let mut outside = good.clone();
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let gd = u64_at(&good, 56) as usize * 512;
    let gt = u32::from_le_bytes(good[gd..gd + 4].try_into().unwrap()) as usize * 512;
    let gte = (0..512).map(|i| gt + 4 * i).find(|&at| good[at..at + 4] != [0; 4]).expect("an allocated grain");
    outside[gte..gte + 4].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
    // A descriptor naming another file (a monolithicFlat disk whose extent is the host's password file).
    let flat = b"# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\
                 RW 32768 FLAT \"/etc/shadow\" 0\n"
        .to_vec();
    // A disk larger than the VDI.
    let big_raw = tmp.path().join("big.raw");
    std::fs::File::create(&big_raw).unwrap().set_len(2 * SIZE as u64).unwrap();
    let big = tmp.path().join("big.vmdk");
    qemu_img(&["convert", "-f", "raw", "-O", "vmdk"], &[&big_raw, &big]);
    let big = std::fs::read(&big).unwrap();

    for (what, body, code) in [
        ("a grain outside the file", &outside, "IMPORT_ERROR"),
        ("a descriptor naming another file", &flat, "IMPORT_ERROR"),
        ("a disk larger than the VDI", &big, "VDI_TOO_SMALL"),
    ] {
        let task = api.ok("task.create", &[s("upload"), s("")]);
        let target = api.import_target(&v, "vmdk", Some(&task));
        let (status, answer) = put(api.d.addr, &target, body);
        assert!(status == 400 && answer.starts_with(code), "{what}: {status} {answer}");
        assert_eq!(api.str_of("task.get_status", &task), "failure", "{what}");
        let info = api.ok("task.get_error_info", &[task.clone()]);
        assert_eq!(info.as_array().and_then(|a| a.first()).and_then(Value::as_str), Some(code), "{what}: {info:?}");
        wait_for("no temporary files", || no_temporary_files(&dir));
        assert!(api.export(&v, "raw") == before, "{what} changed the VDI");
    }
}

#[test]
fn a_paused_upload_shows_its_progress_and_can_be_cancelled() {
    let tmp = tempfile::tempdir().unwrap();
    let api = Api::start(tmp.path(), &[]);
    let sr = api.local_sr();
    let v = api.new_vdi(&sr, "v", SIZE);
    let task = api.ok("task.create", &[s("upload"), s("")]);
    let target = api.import_target(&v, "raw", Some(&task));
    let mut c = TcpStream::connect(api.d.addr).unwrap();
    write!(c, "PUT {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {SIZE}\r\nConnection: close\r\n\r\n").unwrap();
    // Half the body in small bursts, then the client stops sending.
    for _ in 0..32 {
        c.write_all(&vec![3u8; (SIZE / 64) as usize]).unwrap();
    }
    wait_for(
        "the progress of the bytes sent",
        || matches!(api.ok("task.get_progress", &[task.clone()]), Value::Float(f) if f > 0.45),
    );
    // Cancelled while nothing arrives: noticed without more bytes, and answered.
    api.ok("task.cancel", &[task.clone()]);
    wait_for("the task to end", || api.str_of("task.get_status", &task) != "cancelling");
    assert_eq!(api.str_of("task.get_status", &task), "cancelled");
    c.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let mut answer = String::new();
    let _ = c.read_to_string(&mut answer);
    assert!(answer.contains("TASK_CANCELLED"), "{answer}");
}
