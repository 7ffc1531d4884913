//! The VM start benchmark: `VM.start` of a real QEMU guest through the daemon, against `virsh create` of the same
//! domain XML in the same run, and `VM.start` while 80 clients loop on `VM.get_all_records`.
//!
//! ```text
//! tests/libvirt/start.sh && tests/guest/build.sh        # libvirtd and the tiny guest
//! cargo bench -p xapi-server --bench vm_start [-- --runs N] [--no-write]
//! ```
//!
//! One run starts the daemon (release build) on `qemu:///system` with TCG in a fresh data dir, creates 1,000 VMs
//! (so that `get_all_records` is a real answer, ~1.7 MB of XML), and a 128 MiB direct-kernel guest from the
//! default template. Then, interleaved, it times `VM.start` (the call until its answer: the domain exists and the
//! VM is `Running` in the store) and `virsh -c qemu:///system create` of the domain's XML (as libvirt dumped it,
//! under another name and UUID, without our owner metadata, so the daemon leaves it alone), each followed by an
//! untimed hard shutdown. Then 80 clients, each with its own session, loop on `VM.get_all_records` (one call per
//! connection), and `VM.start` and `virsh create` are timed again under that load. The load clients stand for
//! remote management clients: they run as tasks on one thread at the lowest CPU priority (nice 19), so that they
//! take as little as possible of the machine's two cores from the daemon, libvirtd and QEMU (on a real host they
//! run elsewhere). While VM operations run, the daemon encodes large answers at low priority
//! (`xapi-server/src/priority.rs`); `virsh create` under the same load is printed too, to show what the load costs
//! libvirt and QEMU when nothing gives way to them.
//!
//! Figures: medians over all starts of all runs; written to this bench's section of `docs/benchmarks.md`
//! (`<!-- vm_start:begin -->` … `<!-- vm_start:end -->`). Without `--bench` (as `cargo test --benches` runs it)
//! it does nothing: it needs libvirtd and the guest, which the unit tests do not.

// `&[vm.clone()]` reads better than `std::slice::from_ref(&vm)` in call lists.
#![allow(clippy::cloned_ref_to_slice_refs)]

#[allow(dead_code)] // the helpers are shared with rpc.rs and events.rs; this bench uses some
mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Conn, Daemon, PASSWORD, median, ms, s, vm_record};
use xapi_types::Value;
use xapi_types::wire::xmlrpc;

const XML: &str = "text/xml";
const STARTS: usize = 10;
const CLIENTS: usize = 80;
const VMS: usize = 1000;

struct Client {
    conn: Conn,
    session: String,
}

impl Client {
    fn new(addr: std::net::SocketAddr) -> Client {
        let mut c = Client { conn: Conn::open(addr), session: String::new() };
        let s = c.raw("session.login_with_password", &[s("root"), s(PASSWORD)]);
        c.session = s.as_str().expect("a session").to_string();
        c
    }

    fn raw(&mut self, method: &str, params: &[Value]) -> Value {
        let req = self.conn.request("/", XML, &xmlrpc::write_call(method, params));
        self.conn.send_raw(&req);
        let r = self.conn.receive();
        match xmlrpc::parse_result(&r.body).expect("an XML-RPC answer") {
            Ok(v) => v,
            Err(e) => panic!("{method}: {e:?}"),
        }
    }

    fn call(&mut self, method: &str, params: &[Value]) -> Value {
        let mut all = vec![s(self.session.clone())];
        all.extend_from_slice(params);
        self.raw(method, &all)
    }
}

fn guest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tinyguest")
}

fn virsh(args: &[&str]) -> std::process::Output {
    Command::new("virsh").arg("-c").arg("qemu:///system").args(args).output().expect("running virsh")
}

/// Lowers this thread's CPU priority to nice 19 (Linux: per thread).
fn be_nice() {
    let tid = rustix::thread::gettid();
    let _ = rustix::process::setpriority_process(Some(tid), 19);
}

struct RunFigures {
    ours: Vec<f64>,
    virsh: Vec<f64>,
    loaded: Vec<f64>,
    /// `virsh create` under the same load: what the load does to libvirt and QEMU themselves.
    virsh_loaded: Vec<f64>,
    load_calls_per_s: f64,
}

fn one_run() -> RunFigures {
    let d = Daemon::start_with("vm-start", &["--libvirt-uri", "qemu:///system", "--accel", "tcg"]);
    let mut c = Client::new(d.addr);
    for i in 0..VMS {
        c.call("VM.create", &[vm_record(i)]);
    }
    let template = c.call("VM.get_by_name_label", &[s("Generic Linux (direct kernel boot)")]);
    let template = template.as_array().expect("templates")[0].clone();
    let vm = c.call("VM.clone", &[template, s("bench guest")]);
    c.call("VM.provision", &[vm.clone()]);
    let g = guest_dir().canonicalize().expect("the tiny guest (run tests/guest/build.sh)");
    c.call("VM.set_PV_kernel", &[vm.clone(), s(g.join("vmlinux-pvh").to_string_lossy())]);
    c.call("VM.set_PV_ramdisk", &[vm.clone(), s(g.join("initramfs.cpio.gz").to_string_lossy())]);
    c.call("VM.set_PV_args", &[vm.clone(), s("console=ttyS0 quiet panic=-1 mode=stay")]);
    let uuid = c.call("VM.get_uuid", &[vm.clone()]).as_str().unwrap().to_string();

    // The same domain, for virsh: as libvirt has it, under another name and UUID and without our metadata.
    c.call("VM.start", &[vm.clone(), Value::Bool(false), Value::Bool(false)]);
    let dumped = virsh(&["dumpxml", "--inactive", &format!("xapi-{uuid}")]);
    assert!(dumped.status.success(), "virsh dumpxml: {}", String::from_utf8_lossy(&dumped.stderr));
    c.call("VM.hard_shutdown", &[vm.clone()]);
    let xml = String::from_utf8(dumped.stdout).unwrap();
    let other = uuid::Uuid::new_v4().to_string();
    let mut xml = xml.replace(&uuid, &other).replace(&format!("xapi-{other}"), &format!("virsh-{other}"));
    if let (Some(b), Some(e)) = (xml.find("<metadata>"), xml.find("</metadata>")) {
        xml.replace_range(b..e + "</metadata>".len(), "");
    }
    let xml_path = d.dir.path().join("virsh-domain.xml");
    std::fs::write(&xml_path, &xml).unwrap();
    let xml_path = xml_path.to_string_lossy().to_string();

    // STARTS times, interleaved: `VM.start` then `virsh create`, each followed by an untimed shutdown.
    let starts = |c: &mut Client| {
        let (mut ours, mut virsh_times) = (Vec::new(), Vec::new());
        for _ in 0..STARTS {
            let t = Instant::now();
            c.call("VM.start", &[vm.clone(), Value::Bool(false), Value::Bool(false)]);
            ours.push(ms(t.elapsed()));
            c.call("VM.hard_shutdown", &[vm.clone()]);
            let t = Instant::now();
            let out = virsh(&["create", &xml_path]);
            virsh_times.push(ms(t.elapsed()));
            assert!(out.status.success(), "virsh create: {}", String::from_utf8_lossy(&out.stderr));
            let _ = virsh(&["destroy", &format!("virsh-{other}")]);
        }
        (ours, virsh_times)
    };
    let (ours, base) = starts(&mut c);

    // Under load: 80 clients on one thread at nice 19 (see the header), each looping on one call per connection.
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let ready = Arc::new(AtomicUsize::new(0));
    let sessions: Vec<String> = (0..CLIENTS).map(|_| Client::new(d.addr).session).collect();
    let load = {
        let (stop, calls, ready, addr) = (stop.clone(), calls.clone(), ready.clone(), d.addr);
        std::thread::spawn(move || {
            be_nice();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            rt.block_on(async move {
                let mut clients = tokio::task::JoinSet::new();
                for session in sessions {
                    let (stop, calls, ready) = (stop.clone(), calls.clone(), ready.clone());
                    let body = xmlrpc::write_call("VM.get_all_records", &[s(session)]);
                    let mut req = format!(
                        "POST / HTTP/1.0\r\nHost: {addr}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    req.extend_from_slice(&body);
                    clients.spawn(async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        ready.fetch_add(1, Ordering::Relaxed);
                        let mut buf = Vec::with_capacity(2 << 20);
                        while !stop.load(Ordering::Relaxed) {
                            let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
                            conn.write_all(&req).await.expect("send");
                            buf.clear();
                            conn.read_to_end(&mut buf).await.expect("receive");
                            assert!(buf.starts_with(b"HTTP/1.0 200"), "a load call failed");
                            calls.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
                while clients.join_next().await.is_some() {}
            });
        })
    };
    while ready.load(Ordering::Relaxed) < CLIENTS {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(1));
    let (t0, c0) = (Instant::now(), calls.load(Ordering::Relaxed));
    let (loaded, virsh_loaded) = starts(&mut c);
    let load_calls_per_s = (calls.load(Ordering::Relaxed) - c0) as f64 / t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    load.join().expect("the load clients");
    c.call("VM.destroy", &[vm]);
    RunFigures { ours, virsh: base, loaded, virsh_loaded, load_calls_per_s }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut runs, mut write_doc, mut bench) = (3, true, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--bench" {
            bench = true;
        }
        common::common_arg(a, &mut it, &mut runs, &mut write_doc);
    }
    if !bench {
        println!(
            "vm_start: needs libvirtd and the tiny guest; run it with `cargo bench -p xapi-server --bench vm_start`"
        );
        return;
    }
    assert!(
        virsh(&["version"]).status.success(),
        "libvirtd is not reachable at qemu:///system (tests/libvirt/start.sh)"
    );
    let mut all = Vec::new();
    let mut loads = Vec::new();
    for run in 1..=runs {
        let before = common::load_avg();
        let f = one_run();
        loads.push((before, common::load_avg()));
        println!(
            "run {run}: VM.start {:.0} ms, virsh create {:.0} ms; under load: VM.start {:.0} ms, virsh create {:.0} ms \
             ({:.0} get_all_records/s)",
            median(&f.ours),
            median(&f.virsh),
            median(&f.loaded),
            median(&f.virsh_loaded),
            f.load_calls_per_s
        );
        all.push(f);
    }
    let flat = |f: fn(&RunFigures) -> &Vec<f64>| all.iter().flat_map(|r| f(r).iter().copied()).collect::<Vec<f64>>();
    let (ours, base, loaded) = (flat(|r| &r.ours), flat(|r| &r.virsh), flat(|r| &r.loaded));
    let (m_ours, m_base, m_loaded) = (median(&ours), median(&base), median(&loaded));
    let per_run = |f: fn(&RunFigures) -> &Vec<f64>| {
        all.iter().map(|r| format!("{:.0}", median(f(r)))).collect::<Vec<_>>().join(" / ")
    };
    let verdict = |ok: bool| if ok { "met" } else { "**MISS**" };
    let mut md = String::new();
    let _ = writeln!(md, "## VM start: `VM.start` vs `virsh create`, idle and under load\n");
    let _ = writeln!(
        md,
        "`cargo bench -p xapi-server --bench vm_start -- --runs {runs}` (after `tests/libvirt/start.sh` and \
         `tests/guest/build.sh`). A 128 MiB, 1-VCPU direct-kernel guest under TCG; {STARTS} starts per figure per \
         run, medians over all of them; {VMS} other VMs in the store; the load is {CLIENTS} clients (nice 19) \
         looping on `VM.get_all_records` (one thread, nice 19).\n"
    );
    common::write_facts(&mut md, loads.iter());
    let _ = writeln!(md);
    let rows = [
        common::SummaryRow {
            name: "VM.start → Running",
            ours: format!("{m_ours:.0} ms"),
            per_run: per_run(|r| &r.ours),
            base: format!("{m_base:.0} ms"),
            base_name: "`virsh create` of the same XML",
            ratio: format!("{:.2}×", m_ours / m_base),
            target: "≤ 1.1×".into(),
            verdict: verdict(m_ours / m_base <= 1.1),
        },
        common::SummaryRow {
            name: "VM.start under 80 clients' get_all_records",
            ours: format!("{m_loaded:.0} ms"),
            per_run: per_run(|r| &r.loaded),
            base: format!("{m_ours:.0} ms"),
            base_name: "idle VM.start",
            ratio: format!("{:.2}×", m_loaded / m_ours),
            target: "≤ 1.2×".into(),
            verdict: verdict(m_loaded / m_ours <= 1.2),
        },
    ];
    common::write_summary(&mut md, &rows);
    let _ = writeln!(
        md,
        "\nUnder the same load, `virsh create` of the same XML took {:.0} ms (median; per run {}): what the load costs \
         libvirt and QEMU when nothing gives way to them. While a VM operation runs, the daemon encodes large \
         answers at nice 19 and pauses that work while QEMU starts (`xapi-server/src/priority.rs`).",
        median(&flat(|r| &r.virsh_loaded)),
        per_run(|r| &r.virsh_loaded)
    );
    let _ = writeln!(
        md,
        "\nThe load clients completed {} `VM.get_all_records` calls/s ({} VMs each) while the starts were timed.",
        all.iter().map(|r| format!("{:.0}", r.load_calls_per_s)).collect::<Vec<_>>().join(" / "),
        VMS + 3
    );
    println!("{md}");
    if write_doc {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks.md");
        common::write_section(&path, "vm_start", &md, common::NewSection::Last);
    }
}
