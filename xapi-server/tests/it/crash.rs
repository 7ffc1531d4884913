//! Crash durability: clients write through XML-RPC while the daemon is killed with SIGKILL at random moments
//! (50 times, and every fifth time once more during start-up; `XAPI_CRASH_KILLS` raises it, `XAPI_CRASH_SEED`
//! replays a run), restarted on the same data dir, and checked: every acknowledged write is there with its value,
//! the one write each client had in flight is all or nothing, `PRAGMA integrity_check` is `ok`, no task is left
//! pending, and event tokens from before the crashes still answer every change since them.
//! `docs/reliability.md` has the figures.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use xapi_types::Value;
use xapi_types::wire::xmlrpc;

use crate::support::{PASSWORD, s};

const CLIENTS: usize = 3;
/// A client keeps at most this many VMs: beyond, it destroys.
const MAX_VMS: usize = 6;
const CLASSES: [&str; 4] = ["vm", "vbd", "network", "task"];
/// Deletions kept for event clients (`--event-tombstones`).
const TOMBSTONES: usize = 1000;

/// The daemon with no hypervisor, started by this test so that it can kill it by its PID.
struct Daemon {
    addr: SocketAddr,
    child: Child,
}

impl Daemon {
    fn start(dir: &Path) -> Daemon {
        let d = Daemon::spawn(dir);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(d.addr).is_err() {
            assert!(Instant::now() < deadline, "xapi-server did not start listening on {}", d.addr);
            std::thread::sleep(Duration::from_millis(10));
        }
        d
    }

    /// Started, not yet listening (it may be opening the store, failing interrupted tasks, …).
    fn spawn(dir: &Path) -> Daemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_xapi-server"))
            .arg("--data-dir")
            .arg(dir)
            .args(["--http", &addr.to_string(), "--libvirt-uri", "none"])
            // A small retention, so that the oldest tokens outlive it and `EVENTS_LOST` is tested too.
            .args(["--event-tombstones", &TOMBSTONES.to_string()])
            .env("XAPI_ROOT_PASSWORD", PASSWORD)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start xapi-server");
        Daemon { addr, child }
    }

    /// SIGKILL to its PID.
    fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The daemon went away before answering: the call was in flight. (What the client saw, for failures elsewhere.)
#[derive(Debug)]
struct Gone(#[allow(dead_code)] String);

/// One XML-RPC call that does not panic when the daemon dies under it.
fn try_call(agent: &ureq::Agent, addr: SocketAddr, method: &str, params: &[Value]) -> Result<Value, Gone> {
    Ok(try_call_or_error(agent, addr, method, params)?.unwrap_or_else(|e| panic!("{method} failed: {e:?}")))
}

/// The answer, success or XenAPI error, or `Gone`.
fn try_call_or_error(
    agent: &ureq::Agent,
    addr: SocketAddr,
    method: &str,
    params: &[Value],
) -> Result<Result<Value, Vec<String>>, Gone> {
    let body = xmlrpc::write_call(method, params);
    let mut resp =
        agent.post(&format!("http://{addr}/")).header("Content-Type", "text/xml").send(&body[..]).map_err(gone)?;
    // Answers to old event tokens can be large.
    let text = resp.body_mut().with_config().limit(1 << 30).read_to_string().map_err(gone)?;
    match xmlrpc::parse_result(text.as_bytes()) {
        Ok(answer) => Ok(answer),
        Err(e) => Err(Gone(format!("a truncated answer: {e:?}"))),
    }
}

fn gone(e: ureq::Error) -> Gone {
    Gone(e.to_string())
}

fn call(addr: SocketAddr, method: &str, params: &[Value]) -> Value {
    try_call(&agent(), addr, method, params).unwrap_or_else(|e| panic!("{method}: no answer: {e:?}"))
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

/// A small deterministic generator (xorshift), so that a failing run can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What a client knows of one of its VMs.
#[derive(Debug, Clone, PartialEq)]
struct Vm {
    label: String,
    desc: String,
    other_config: BTreeMap<String, String>,
    tags: BTreeSet<String>,
    /// Number of VBDs (an empty CD drive, or none).
    vbds: usize,
}

/// Everything a client has made: VMs (tagged `owner` in other_config) and networks (labelled `c<i>-…`).
#[derive(Debug, Clone, Default, PartialEq)]
struct Model {
    vms: BTreeMap<String, Vm>,
    nets: BTreeMap<String, String>,
}

/// One write and its intended effect.
#[derive(Debug, Clone)]
enum Op {
    CreateVm {
        label: String,
        vm: Vm,
    },
    AddVbd {
        vm: String,
    },
    SetLabel {
        vm: String,
        v: String,
    },
    SetDesc {
        vm: String,
        v: String,
    },
    AddOther {
        vm: String,
        k: String,
        v: String,
    },
    RemoveOther {
        vm: String,
        k: String,
    },
    AddTag {
        vm: String,
        t: String,
    },
    DestroyVm {
        vm: String,
    },
    CreateNet {
        label: String,
    },
    DestroyNet {
        net: String,
    },
    /// `Async.VM.clone`, polled until its task finishes; `task` once the call answered.
    Clone {
        src: String,
        label: String,
        task: Option<String>,
    },
}

impl Op {
    fn kind(&self) -> &'static str {
        match self {
            Op::CreateVm { .. } => "VM.create",
            Op::AddVbd { .. } => "VBD.create",
            Op::SetLabel { .. } => "VM.set_name_label",
            Op::SetDesc { .. } => "VM.set_name_description",
            Op::AddOther { .. } => "VM.add_to_other_config",
            Op::RemoveOther { .. } => "VM.remove_from_other_config",
            Op::AddTag { .. } => "VM.add_tags",
            Op::DestroyVm { .. } => "VM.destroy",
            Op::CreateNet { .. } => "network.create",
            Op::DestroyNet { .. } => "network.destroy",
            Op::Clone { .. } => "Async.VM.clone",
        }
    }

    /// The model once the write took effect; `new` is the ref of what it created.
    fn apply(&self, m: &Model, new: Option<&str>) -> Model {
        let mut m = m.clone();
        fn vm<'m>(m: &'m mut Model, r: &str) -> &'m mut Vm {
            m.vms.get_mut(r).expect("a VM of the model")
        }
        match self {
            Op::CreateVm { vm: v, .. } => {
                m.vms.insert(new.unwrap().to_string(), v.clone());
            }
            Op::AddVbd { vm: r } => vm(&mut m, r).vbds += 1,
            Op::SetLabel { vm: r, v } => vm(&mut m, r).label = v.clone(),
            Op::SetDesc { vm: r, v } => vm(&mut m, r).desc = v.clone(),
            Op::AddOther { vm: r, k, v } => {
                vm(&mut m, r).other_config.insert(k.clone(), v.clone());
            }
            Op::RemoveOther { vm: r, k } => {
                vm(&mut m, r).other_config.remove(k);
            }
            Op::AddTag { vm: r, t } => {
                vm(&mut m, r).tags.insert(t.clone());
            }
            Op::DestroyVm { vm: r } => {
                m.vms.remove(r);
            }
            Op::CreateNet { label } => {
                m.nets.insert(new.unwrap().to_string(), label.clone());
            }
            Op::DestroyNet { net } => {
                m.nets.remove(net);
            }
            Op::Clone { src, label, .. } => {
                let mut v = m.vms[src].clone();
                v.label = label.clone();
                m.vms.insert(new.unwrap().to_string(), v);
            }
        }
        m
    }

    /// Refs this write touched (for the event check).
    fn touched(&self, new: Option<&str>) -> Vec<String> {
        let mut out: Vec<String> = new.map(str::to_string).into_iter().collect();
        match self {
            Op::AddVbd { vm }
            | Op::SetLabel { vm, .. }
            | Op::SetDesc { vm, .. }
            | Op::AddOther { vm, .. }
            | Op::RemoveOther { vm, .. }
            | Op::AddTag { vm, .. }
            | Op::DestroyVm { vm } => out.push(vm.clone()),
            Op::DestroyNet { net } => out.push(net.clone()),
            Op::CreateVm { .. } | Op::CreateNet { .. } | Op::Clone { .. } => {}
        }
        out
    }
}

/// A client's state, kept across crashes.
struct Client {
    id: usize,
    session: Value,
    model: Model,
    rng: Rng,
    serial: u64,
    /// Acknowledged writes this round: the op and the ref it created.
    acked: Vec<(Op, Option<String>)>,
    in_flight: Option<Op>,
    /// `Async.VM.clone` tasks seen to succeed this round, with their result: they must stay so. (Checked once:
    /// past 1,000 finished tasks the daemon collects the oldest.)
    done_tasks: BTreeMap<String, String>,
}

impl Client {
    fn name(&mut self, what: &str) -> String {
        self.serial += 1;
        format!("c{}-{what}-{}", self.id, self.serial)
    }

    fn pick_vm(&mut self) -> Option<String> {
        let n = self.model.vms.len() as u64;
        (n > 0).then(|| self.model.vms.keys().nth(self.rng.below(n) as usize).unwrap().clone())
    }

    /// The next write, given the model.
    fn next_op(&mut self) -> Op {
        let vm = self.pick_vm();
        let choice = if self.model.vms.len() < 2 {
            0
        } else if self.model.vms.len() >= MAX_VMS {
            7
        } else {
            self.rng.below(11)
        };
        let vm = vm.unwrap_or_default();
        match choice {
            0 => {
                let label = self.name("vm");
                let v = Vm {
                    label: label.clone(),
                    desc: format!("made by client {}", self.id),
                    other_config: [("owner".to_string(), format!("c{}", self.id)), ("k0".into(), label.clone())].into(),
                    tags: ["t0".to_string()].into(),
                    vbds: 0,
                };
                Op::CreateVm { label, vm: v }
            }
            1 if self.model.vms[&vm].vbds == 0 => Op::AddVbd { vm },
            1 | 2 => Op::SetLabel { v: self.name("label"), vm },
            3 => Op::SetDesc { v: self.name("desc"), vm },
            4 | 5 => {
                // add_to_other_config fails on a key that is there (as xapi's): a present key is removed instead.
                let k = format!("k{}", self.rng.below(4));
                if self.model.vms[&vm].other_config.contains_key(&k) {
                    Op::RemoveOther { k, vm }
                } else {
                    Op::AddOther { k, v: self.name("value"), vm }
                }
            }
            6 => Op::AddTag { t: format!("t{}", self.rng.below(5)), vm },
            7 => Op::DestroyVm { vm },
            8 if self.model.nets.len() < 3 => Op::CreateNet { label: self.name("net") },
            8 => {
                let net = self.model.nets.keys().next().unwrap().clone();
                Op::DestroyNet { net }
            }
            _ => Op::Clone { src: vm, label: self.name("clone"), task: None },
        }
    }

    /// Writes until the daemon dies; the write it was making then is `in_flight`.
    fn run(&mut self, addr: SocketAddr) {
        let agent = agent();
        loop {
            let mut op = self.next_op();
            match self.perform(&agent, addr, &mut op) {
                Ok(new) => {
                    self.model = op.apply(&self.model, new.as_deref());
                    self.acked.push((op, new));
                }
                Err(Gone(_)) => {
                    self.in_flight = Some(op);
                    return;
                }
            }
        }
    }

    /// Makes the call(s) of one write; answers the ref it created.
    fn perform(&mut self, agent: &ureq::Agent, addr: SocketAddr, op: &mut Op) -> Result<Option<String>, Gone> {
        let sess = self.session.clone();
        let c = |method: &str, args: Vec<Value>| {
            let params: Vec<Value> = std::iter::once(sess.clone()).chain(args).collect();
            try_call(agent, addr, method, &params)
        };
        let r = |v: Value| v.as_str().unwrap().to_string();
        match op {
            Op::CreateVm { vm, .. } => {
                let record = Value::Struct(vec![
                    ("name_label".into(), s(&vm.label)),
                    ("name_description".into(), s(&vm.desc)),
                    ("other_config".into(), map(&vm.other_config)),
                    ("tags".into(), Value::Array(vm.tags.iter().map(|t| s(t)).collect())),
                    ("is_a_template".into(), Value::Bool(false)),
                ]);
                return c("VM.create", vec![record]).map(|v| Some(r(v)));
            }
            Op::AddVbd { vm } => {
                let record = Value::Struct(vec![
                    ("VM".into(), s(vm)),
                    ("VDI".into(), s("OpaqueRef:NULL")),
                    ("userdevice".into(), s("3")),
                    ("type".into(), s("CD")),
                    ("mode".into(), s("RO")),
                    ("empty".into(), Value::Bool(true)),
                    ("bootable".into(), Value::Bool(false)),
                ]);
                c("VBD.create", vec![record])?;
            }
            Op::SetLabel { vm, v } => drop(c("VM.set_name_label", vec![s(vm), s(v)])?),
            Op::SetDesc { vm, v } => drop(c("VM.set_name_description", vec![s(vm), s(v)])?),
            Op::AddOther { vm, k, v } => drop(c("VM.add_to_other_config", vec![s(vm), s(k), s(v)])?),
            Op::RemoveOther { vm, k } => drop(c("VM.remove_from_other_config", vec![s(vm), s(k)])?),
            Op::AddTag { vm, t } => drop(c("VM.add_tags", vec![s(vm), s(t)])?),
            Op::DestroyVm { vm } => drop(c("VM.destroy", vec![s(vm)])?),
            Op::CreateNet { label } => {
                let record = Value::Struct(vec![("name_label".into(), s(label))]);
                return c("network.create", vec![record]).map(|v| Some(r(v)));
            }
            Op::DestroyNet { net } => drop(c("network.destroy", vec![s(net)])?),
            Op::Clone { src, label, task } => {
                let t = r(c("Async.VM.clone", vec![s(src), s(label)])?);
                *task = Some(t.clone());
                loop {
                    let record = c("task.get_record", vec![s(&t)])?;
                    match record.get("status").and_then(Value::as_str) {
                        Some("pending") => std::thread::sleep(Duration::from_millis(5)),
                        Some("success") => {
                            let result = record.get("result").unwrap().as_str().unwrap().to_string();
                            self.done_tasks.insert(t, result.clone());
                            return Ok(Some(ref_of_result(&result)));
                        }
                        other => panic!("Async.VM.clone: task {other:?}: {record:?}"),
                    }
                }
            }
        }
        Ok(None)
    }
}

fn map(m: &BTreeMap<String, String>) -> Value {
    Value::Struct(m.iter().map(|(k, v)| (k.clone(), s(v))).collect())
}

/// `<value>OpaqueRef:…</value>` → the ref.
fn ref_of_result(result: &str) -> String {
    result.trim_start_matches("<value>").trim_end_matches("</value>").to_string()
}

fn strs(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array).unwrap_or_default().iter().map(|x| x.as_str().unwrap().to_string()).collect()
}

/// The store as the API shows it after a restart.
struct Seen {
    vms: Value,
    vbds: Value,
    nets: Value,
    tasks: Value,
    metrics: Vec<String>,
}

impl Seen {
    fn read(addr: SocketAddr, sess: &Value) -> Seen {
        let all = |class: &str| call(addr, &format!("{class}.get_all_records"), &[sess.clone()]);
        let metrics = call(addr, "VM_metrics.get_all", &[sess.clone()]);
        Seen {
            vms: all("VM"),
            vbds: all("VBD"),
            nets: all("network"),
            tasks: all("task"),
            metrics: strs(Some(&metrics)),
        }
    }

    /// Client `id`'s objects.
    fn model_of(&self, id: usize) -> Model {
        let owner = format!("c{id}");
        let mut m = Model::default();
        for (r, rec) in self.vms.as_struct().unwrap() {
            let oc: BTreeMap<String, String> = rec
                .get("other_config")
                .and_then(Value::as_struct)
                .unwrap_or_default()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            if oc.get("owner") != Some(&owner) {
                continue;
            }
            let vm = Vm {
                label: rec.get("name_label").unwrap().as_str().unwrap().to_string(),
                desc: rec.get("name_description").unwrap().as_str().unwrap().to_string(),
                other_config: oc,
                tags: strs(rec.get("tags")).into_iter().collect(),
                vbds: strs(rec.get("VBDs")).len(),
            };
            m.vms.insert(r.clone(), vm);
        }
        let prefix = format!("c{id}-");
        for (r, rec) in self.nets.as_struct().unwrap() {
            let label = rec.get("name_label").unwrap().as_str().unwrap();
            if label.starts_with(&prefix) {
                m.nets.insert(r.clone(), label.to_string());
            }
        }
        m
    }

    /// Relations are whole: every VBD's VM lists it and every VM's VBDs point back; every VM has its metrics.
    /// No task is pending: the ones the crash interrupted were failed at start.
    fn check_consistent(&self) {
        for (b, rec) in self.vbds.as_struct().unwrap() {
            let vm = rec.get("VM").unwrap().as_str().unwrap();
            let vm_rec = self.vms.get(vm).unwrap_or_else(|| panic!("VBD {b} of a VM {vm} that is gone"));
            assert!(strs(vm_rec.get("VBDs")).contains(b), "VM {vm} does not list its VBD {b}");
        }
        for (v, rec) in self.vms.as_struct().unwrap() {
            for b in strs(rec.get("VBDs")) {
                let b_rec = self.vbds.get(&b).unwrap_or_else(|| panic!("VM {v} lists a VBD {b} that is gone"));
                assert_eq!(b_rec.get("VM").and_then(Value::as_str), Some(v.as_str()));
            }
            let metrics = rec.get("metrics").unwrap().as_str().unwrap();
            if rec.get("other_config").and_then(|o| o.get("owner")).is_some() {
                assert!(self.metrics.iter().any(|m| m == metrics), "VM {v} without its metrics {metrics}");
            }
            // An operation the crash interrupted is over: it does not lock the VM.
            assert_eq!(rec.get("current_operations"), Some(&Value::Struct(vec![])), "VM {v} after a restart");
        }
        let vms = self.vms.as_struct().unwrap();
        for m in &self.metrics {
            assert!(vms.iter().any(|(_, rec)| rec.get("metrics") == Some(&s(m))), "VM_metrics {m} of no VM");
        }
        for (t, rec) in self.tasks.as_struct().unwrap() {
            let status = rec.get("status").unwrap().as_str().unwrap();
            assert!(status != "pending" && status != "cancelling", "task {t} is {status} after a restart");
        }
    }
}

/// The store file as the crash left it (database and WAL): `PRAGMA integrity_check`.
fn integrity_check(dir: &Path) {
    let conn =
        rusqlite::Connection::open_with_flags(dir.join("xapi.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let answer: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(answer, "ok");
}

/// `event.from(CLASSES, token, 0)`: (class, operation, ref, snapshot) of each event.
type Event = (String, String, String, Option<Value>);

fn events_since(addr: SocketAddr, sess: &Value, token: &str) -> (Vec<Event>, String) {
    let classes = Value::Array(CLASSES.iter().map(|c| s(c)).collect());
    let batch = call(addr, "event.from", &[sess.clone(), classes, s(token), Value::Float(0.0)]);
    parse_events(&batch)
}

fn parse_events(batch: &Value) -> (Vec<Event>, String) {
    let events = batch
        .get("events")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let f = |k: &str| e.get(k).unwrap().as_str().unwrap().to_string();
            (f("class"), f("operation"), f("ref"), e.get("snapshot").cloned())
        })
        .collect();
    (events, batch.get("token").unwrap().as_str().unwrap().to_string())
}

/// Deletions at or before this generation are no longer kept (`--event-tombstones`), as the store says.
fn pruned_through(dir: &Path) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(dir.join("xapi.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let sql = "SELECT value FROM _meta WHERE key = 'tombstones_pruned_through'";
    let v: Option<String> = conn.query_row(sql, [], |r| r.get(0)).ok();
    v.map_or(0, |v| v.parse().unwrap())
}

/// `event.from` with a token from before a crash: the events since it, or `None` for `EVENTS_LOST` — which is the
/// answer exactly when deletions after the token have been pruned (the retention, not the crash, decides).
fn events_since_old(addr: SocketAddr, sess: &Value, dir: &Path, token: &str) -> Option<Vec<Event>> {
    let generation: i64 = token.split(',').next().unwrap().parse().unwrap();
    let before = pruned_through(dir);
    let classes = Value::Array(CLASSES.iter().map(|c| s(c)).collect());
    let params = [sess.clone(), classes, s(token), Value::Float(0.0)];
    let answer = try_call_or_error(&agent(), addr, "event.from", &params).expect("event.from answers");
    let after = pruned_through(dir);
    match answer {
        Ok(batch) => {
            assert!(generation >= before, "token {token} answered, yet deletions after it were pruned ({before})");
            Some(parse_events(&batch).0)
        }
        Err(e) => {
            assert_eq!(e, ["EVENTS_LOST"], "event.from {token}");
            assert!(generation < after, "token {token}: EVENTS_LOST, yet every deletion after it is kept ({after})");
            None
        }
    }
}

/// How the in-flight writes came out, by kind: (applied, not applied).
type Outcomes = BTreeMap<&'static str, (usize, usize)>;

/// Checks client `c` against what the restarted daemon shows: its acknowledged writes exactly, its in-flight one
/// all or nothing. Adopts what it finds, and answers the refs touched this round.
fn reconcile(c: &mut Client, seen: &Seen, outcomes: &mut Outcomes) -> Vec<String> {
    let actual = seen.model_of(c.id);
    let mut touched: Vec<String> = c.acked.iter().flat_map(|(op, new)| op.touched(new.as_deref())).collect();
    for (t, result) in &c.done_tasks {
        let rec = seen.tasks.get(t).unwrap_or_else(|| panic!("task {t} that succeeded is gone"));
        assert_eq!(rec.get("status"), Some(&s("success")), "task {t}");
        assert_eq!(rec.get("result"), Some(&s(result)), "task {t}");
    }
    c.done_tasks.clear();
    match c.in_flight.take() {
        None => assert_eq!(actual, c.model, "client {}: acknowledged writes", c.id),
        Some(op) => {
            // What it created, if it did: a new VM or network with its label.
            let new: Option<String> = match &op {
                Op::CreateVm { label, .. } | Op::Clone { label, .. } => actual
                    .vms
                    .iter()
                    .find(|(r, v)| !c.model.vms.contains_key(*r) && v.label == *label)
                    .map(|(r, _)| r.clone()),
                Op::CreateNet { label } => actual
                    .nets
                    .iter()
                    .find(|(r, l)| !c.model.nets.contains_key(*r) && *l == label)
                    .map(|(r, _)| r.clone()),
                _ => None,
            };
            let creates = matches!(op, Op::CreateVm { .. } | Op::Clone { .. } | Op::CreateNet { .. });
            let applied = if creates { new.is_some() } else { actual != c.model };
            if applied {
                assert_eq!(
                    actual,
                    op.apply(&c.model, new.as_deref()),
                    "client {}: in-flight {op:?} half-applied",
                    c.id
                );
                touched.extend(op.touched(new.as_deref()));
            } else {
                assert_eq!(actual, c.model, "client {}: in-flight {op:?} not applied, yet the state differs", c.id);
            }
            // A task answered before the crash is finished now: success (and then its clone exists) or failure.
            if let Op::Clone { task: Some(t), .. } = &op {
                let rec = seen.tasks.get(t).unwrap_or_else(|| panic!("task {t} is gone"));
                if rec.get("status") == Some(&s("success")) {
                    let made = ref_of_result(rec.get("result").unwrap().as_str().unwrap());
                    assert_eq!(new.as_deref(), Some(made.as_str()), "a task that succeeded made its clone");
                } else {
                    let error = strs(rec.get("error_info"));
                    assert_eq!(error.first().map(String::as_str), Some("INTERNAL_ERROR"), "task {t}: {rec:?}");
                }
            }
            let e = outcomes.entry(op.kind()).or_default();
            if applied {
                e.0 += 1
            } else {
                e.1 += 1
            }
            c.model = actual;
        }
    }
    c.acked.clear();
    touched
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_write() {
    let kills = env_or("XAPI_CRASH_KILLS", 50);
    let clock = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let seed = env_or("XAPI_CRASH_SEED", clock) | 1;
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path());
    let sess = s(call(d.addr, "session.login_with_password", &[s("root"), s(PASSWORD)]).as_str().unwrap());
    let mut rng = Rng(seed);
    let mut clients: Vec<Arc<Mutex<Client>>> = (0..CLIENTS)
        .map(|id| {
            Arc::new(Mutex::new(Client {
                id,
                // Sessions are stored: each client keeps its own across every crash.
                session: s(call(d.addr, "session.login_with_password", &[s("root"), s(PASSWORD)]).as_str().unwrap()),
                model: Model::default(),
                rng: Rng(rng.next() | 1),
                serial: 0,
                acked: Vec::new(),
                in_flight: None,
                done_tasks: BTreeMap::new(),
            }))
        })
        .collect();
    let (mut acked_total, mut outcomes, mut startup_kills) = (0usize, Outcomes::new(), 0);
    // Each round's token, and the VMs destroyed in that round.
    let mut tokens: Vec<(String, BTreeSet<String>)> = Vec::new();
    let (mut answered, mut lost) = (0, 0);

    for round in 0..kills {
        let (_, token) = events_since(d.addr, &sess, "");
        let addr = d.addr;
        let threads: Vec<_> = clients
            .iter()
            .map(|c| {
                let c = c.clone();
                std::thread::spawn(move || c.lock().unwrap().run(addr))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20 + rng.below(381)));
        d.kill9();
        for t in threads {
            t.join().expect("a client thread");
        }
        integrity_check(dir.path());
        if round % 5 == 4 {
            // Every fifth crash, a second one while the daemon starts up (its own start-up writes: interrupted
            // tasks and operations, host facts).
            let mut early = Daemon::spawn(dir.path());
            std::thread::sleep(Duration::from_millis(rng.below(60)));
            early.kill9();
            startup_kills += 1;
            integrity_check(dir.path());
        }

        d = Daemon::start(dir.path());
        let seen = Seen::read(d.addr, &sess);
        seen.check_consistent();
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let mut destroyed = BTreeSet::new();
        for c in &mut clients {
            let c = Arc::get_mut(c).unwrap().get_mut().unwrap();
            acked_total += c.acked.len();
            for (op, _) in &c.acked {
                if let Op::DestroyVm { vm } = op {
                    destroyed.insert(vm.clone());
                }
            }
            touched.extend(reconcile(c, &seen, &mut outcomes));
        }
        tokens.push((token.clone(), destroyed));
        // The token from before the crash answers every change since it: deletions as `del`, the rest with the
        // record as it is now.
        let Some(events) = events_since_old(d.addr, &sess, dir.path(), &token) else {
            lost += 1;
            continue;
        };
        answered += 1;
        let by_ref: BTreeMap<&str, &Event> = events.iter().map(|e| (e.2.as_str(), e)).collect();
        for r in &touched {
            let e = by_ref.get(r.as_str()).unwrap_or_else(|| panic!("round {round}: no event for {r} since {token}"));
            let now = [&seen.vms, &seen.nets].into_iter().find_map(|t| t.get(r));
            match now {
                None => assert_eq!(e.1, "del", "{r}"),
                Some(rec) => assert_eq!(e.3.as_ref(), Some(rec), "{r}: the event's snapshot"),
            }
        }
    }
    integrity_check(dir.path());
    // Every round's token, many crashes later: the oldest are past the retention (EVENTS_LOST), the rest answer
    // with a `del` for every VM destroyed since.
    let mut oldest_answered = None;
    for (i, (token, _)) in tokens.iter().enumerate() {
        let Some(events) = events_since_old(d.addr, &sess, dir.path(), token) else {
            assert!(oldest_answered.is_none(), "token {token} lost, yet an older one answered");
            lost += 1;
            continue;
        };
        answered += 1;
        if oldest_answered.is_none() {
            oldest_answered = Some(i);
            let deleted: BTreeSet<&str> = events.iter().filter(|e| e.1 == "del").map(|e| e.2.as_str()).collect();
            for r in tokens[i..].iter().flat_map(|(_, d)| d) {
                assert!(deleted.contains(r.as_str()), "no del event for {r} since {token}");
            }
        }
    }

    let in_flight: usize = outcomes.values().map(|(a, n)| a + n).sum();
    eprintln!(
        "crash durability: seed {seed}, {kills} SIGKILLs under load and {startup_kills} during start-up, \
         {acked_total} acknowledged writes checked, {in_flight} in flight at a kill ({}), pre-crash tokens: {answered} answered, {lost} EVENTS_LOST \
         (the oldest answering is round {}'s), {:.1} s",
        outcomes.iter().map(|(k, (a, n))| format!("{k}: {a} applied, {n} not")).collect::<Vec<_>>().join("; "),
        oldest_answered.map_or("no".to_string(), |i| i.to_string()),
        t0.elapsed().as_secs_f64()
    );
}
