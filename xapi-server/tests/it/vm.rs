//! The VM lifecycle's rules on libvirt's test driver (a private fake host per daemon): power states, allowed and
//! current operations, errors, templates, memory admission, reconciliation. Real guests are booted by
//! `tests/guests/` under QEMU.

use xapi_types::Value;

use crate::support::{Api, Daemon, err, s, xml_call};

const MIB: i64 = 1 << 20;
/// The test driver's host has 8 GiB.
const HOST_MIB: i64 = 8192;

impl Api {
    fn template(&self, name: &str) -> Value {
        let all = self.ok("VM.get_by_name_label", &[s(name)]);
        all.as_array().unwrap()[0].clone()
    }

    /// A halted VM from the direct-kernel template, with a kernel that exists.
    fn new_vm(&self, name: &str) -> Value {
        let vm = self.ok("VM.clone", &[self.template("Generic Linux (direct kernel boot)"), s(name)]);
        self.ok("VM.provision", &[vm.clone()]);
        self.ok("VM.set_PV_kernel", &[vm.clone(), s("/bin/sh")]);
        vm
    }

    fn power(&self, vm: &Value) -> String {
        self.ok("VM.get_power_state", &[vm.clone()]).as_str().unwrap().to_string()
    }

    fn allowed(&self, vm: &Value) -> Vec<String> {
        let v = self.ok("VM.get_allowed_operations", &[vm.clone()]);
        v.as_array().unwrap().iter().map(|o| o.as_str().unwrap().to_string()).collect()
    }

    fn host(&self) -> Value {
        self.ok("host.get_all", &[]).as_array().unwrap()[0].clone()
    }

    fn int(&self, method: &str, args: &[Value]) -> i64 {
        match self.ok(method, args) {
            Value::Int(i) => i,
            Value::Str(s) => s.parse().unwrap(),
            other => panic!("{method} answered {other:?}"),
        }
    }
}

fn vm_ref(v: &Value) -> &str {
    v.as_str().unwrap()
}

#[test]
fn templates_clone_provision_and_the_power_state_machine() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path(), &[]);
    let other = api.template("Other install media");
    assert_eq!(api.ok("VM.get_is_a_template", &[other.clone()]), Value::Bool(true));
    assert_eq!(
        api.call("VM.start", &[other.clone(), Value::Bool(false), Value::Bool(false)]),
        err("VM_IS_TEMPLATE", &[vm_ref(&other)])
    );
    // Its provision spec has a 32 GiB disk: provisioning makes it (sparse) in the default SR, with its VBD.
    let clone = api.ok("VM.clone", &[other, s("from media")]);
    api.ok("VM.provision", &[clone.clone()]);
    let vbds = api.ok("VM.get_VBDs", &[clone.clone()]);
    let vbd = vbds.as_array().unwrap()[0].clone();
    assert_eq!(api.ok("VBD.get_userdevice", &[vbd.clone()]), s("0"));
    assert_eq!(api.ok("VBD.get_bootable", &[vbd.clone()]), Value::Bool(true));
    let vdi = api.ok("VBD.get_VDI", &[vbd]);
    assert_eq!(api.int("VDI.get_virtual_size", &[vdi]), 32 << 30);
    assert_eq!(api.ok("VM.get_other_config", &[clone.clone()]).get("disks"), None);

    let vm = api.new_vm("vm1");
    assert_eq!(api.ok("VM.get_is_a_template", &[vm.clone()]), Value::Bool(false));
    assert_eq!(api.call("VM.provision", &[vm.clone()]), err("PROVISION_ONLY_ALLOWED_ON_TEMPLATE", &[]));
    assert_eq!(api.power(&vm), "Halted");
    assert_eq!(api.allowed(&vm), ["start", "start_on", "clone", "copy", "snapshot", "destroy"]);
    assert_eq!(
        api.call("VM.clean_shutdown", &[vm.clone()]),
        err("VM_BAD_POWER_STATE", &[vm_ref(&vm), "running", "halted"])
    );

    api.ok("VM.start", &[vm.clone(), Value::Bool(false), Value::Bool(false)]);
    assert_eq!(api.power(&vm), "Running");
    assert_eq!(api.ok("VM.get_resident_on", &[vm.clone()]), api.host());
    assert!(api.int("VM.get_domid", &[vm.clone()]) >= 1);
    assert_eq!(
        api.allowed(&vm),
        ["clean_shutdown", "hard_shutdown", "shutdown", "clean_reboot", "hard_reboot", "suspend", "pause", "snapshot"]
    );
    assert_eq!(api.ok("VM.get_current_operations", &[vm.clone()]), Value::Struct(vec![]));
    let consoles = api.ok("VM.get_consoles", &[vm.clone()]);
    let console = consoles.as_array().unwrap()[0].clone();
    assert_eq!(api.ok("console.get_protocol", &[console.clone()]), s("rfb"));
    let location = api.ok("console.get_location", &[console]);
    assert!(location.as_str().unwrap().contains("/console?uuid="), "{location:?}");
    let resident = api.ok("host.get_resident_VMs", &[api.host()]);
    assert!(resident.as_array().unwrap().contains(&vm));
    let metrics = api.ok("VM.get_metrics", &[vm.clone()]);
    assert_eq!(api.int("VM_metrics.get_VCPUs_number", &[metrics.clone()]), 1);
    assert_eq!(api.int("VM_metrics.get_memory_actual", &[metrics.clone()]), 128 * MIB);

    assert_eq!(
        api.call("VM.start", &[vm.clone(), Value::Bool(false), Value::Bool(false)]),
        err("VM_BAD_POWER_STATE", &[vm_ref(&vm), "halted", "running"])
    );
    assert_eq!(api.call("VM.unpause", &[vm.clone()]), err("VM_BAD_POWER_STATE", &[vm_ref(&vm), "paused", "running"]));
    assert_eq!(api.call("VM.destroy", &[vm.clone()]), err("VM_BAD_POWER_STATE", &[vm_ref(&vm), "halted", "running"]));

    api.ok("VM.pause", &[vm.clone()]);
    assert_eq!(api.power(&vm), "Paused");
    assert_eq!(api.allowed(&vm), ["hard_shutdown", "shutdown", "hard_reboot", "unpause", "snapshot"]);
    api.ok("VM.unpause", &[vm.clone()]);
    assert_eq!(api.power(&vm), "Running");

    let domid = api.int("VM.get_domid", &[vm.clone()]);
    api.ok("VM.hard_reboot", &[vm.clone()]);
    assert_eq!(api.power(&vm), "Running");
    assert_ne!(api.int("VM.get_domid", &[vm.clone()]), domid, "a reboot makes a new domain");

    api.ok("VM.hard_shutdown", &[vm.clone()]);
    assert_eq!(api.power(&vm), "Halted");
    assert_eq!(api.ok("VM.get_resident_on", &[vm.clone()]), s("OpaqueRef:NULL"));
    assert_eq!(api.int("VM.get_domid", &[vm.clone()]), -1);
    assert_eq!(api.ok("VM.get_consoles", &[vm.clone()]), Value::Array(vec![]));
    assert!(!api.ok("host.get_resident_VMs", &[api.host()]).as_array().unwrap().contains(&vm));

    // Async: a task that succeeds.
    let task = api.ok("Async.VM.start", &[vm.clone(), Value::Bool(true), Value::Bool(false)]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while api.ok("task.get_status", &[task.clone()]) == s("pending") {
        assert!(std::time::Instant::now() < deadline, "Async.VM.start did not finish");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        api.ok("task.get_status", &[task.clone()]),
        s("success"),
        "{:?}",
        api.ok("task.get_error_info", &[task])
    );
    assert_eq!(api.power(&vm), "Paused", "start_paused=true");
    api.ok("VM.hard_shutdown", &[vm.clone()]);
    api.ok("VM.destroy", &[vm.clone()]);
    assert_eq!(api.call("VM.get_record", &[vm.clone()]), err("HANDLE_INVALID", &["VM", vm_ref(&vm)]));
}

#[test]
fn the_control_domain_refuses_lifecycle_operations() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path(), &[]);
    let dom0 = api.ok("host.get_control_domain", &[api.host()]);
    assert_eq!(api.allowed(&dom0), Vec::<String>::new());
    let e = api.call("VM.hard_shutdown", &[dom0.clone()]).unwrap_err();
    assert_eq!(e[0], "OPERATION_NOT_ALLOWED");
    assert_eq!(
        api.call("VM.start", &[dom0.clone(), Value::Bool(false), Value::Bool(false)]),
        err("VM_BAD_POWER_STATE", &[vm_ref(&dom0), "halted", "running"])
    );
}

#[test]
fn two_clients_starting_one_vm_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path(), &[]);
    for round in 0..5 {
        let vm = api.new_vm(&format!("race {round}"));
        let results: Vec<_> = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    let vm = vm.clone();
                    let sess = s(&api.d.login());
                    let addr = api.d.addr;
                    sc.spawn(move || xml_call(addr, "VM.start", &[sess, vm, Value::Bool(false), Value::Bool(false)]))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let wins = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: {results:?}");
        let loser = results.iter().find_map(|r| r.as_ref().err()).unwrap();
        assert!(matches!(loser[0].as_str(), "OTHER_OPERATION_IN_PROGRESS" | "VM_BAD_POWER_STATE"), "{loser:?}");
        assert_eq!(api.power(&vm), "Running");
        api.ok("VM.hard_shutdown", &[vm]);
    }
}

#[test]
fn memory_admission_matches_the_arithmetic() {
    let dir = tempfile::tempdir().unwrap();
    // Leave 600 MiB for guests: three 128 MiB guests with their overhead (43 MiB each) fit, a fourth does not.
    let reserve = (HOST_MIB - 600).to_string();
    let api = Api::start(dir.path(), &["--host-memory-reserve", &reserve]);
    let host = api.host();
    let metrics = api.ok("host.get_metrics", &[host.clone()]);
    assert_eq!(api.int("host_metrics.get_memory_total", &[metrics.clone()]), HOST_MIB * MIB);
    let dom0 = api.ok("host.get_control_domain", &[host.clone()]);
    assert_eq!(api.int("VM.get_memory_static_max", &[dom0]), (HOST_MIB - 600) * MIB, "the reserve is dom0's");
    let free = api.int("host.compute_free_memory", &[host.clone()]);
    assert_eq!(free, 600 * MIB);
    assert_eq!(api.int("host_metrics.get_memory_free", &[metrics.clone()]), free);

    let vms: Vec<Value> = (0..5).map(|i| api.new_vm(&format!("guest {i}"))).collect();
    let need = api.int("VM.get_memory_static_max", &[vms[0].clone()])
        + api.int("VM.compute_memory_overhead", &[vms[0].clone()]);
    assert_eq!(need, (128 + 43) * MIB);
    let predicted = free / need;
    assert_eq!(predicted, 3);
    let mut started = 0;
    for vm in &vms {
        assert_eq!(
            api.ok("VM.get_possible_hosts", &[vm.clone()]).as_array().unwrap().len(),
            usize::from(started < predicted)
        );
        match api.call("VM.start", &[vm.clone(), Value::Bool(false), Value::Bool(false)]) {
            Ok(_) => {
                started += 1;
                let now = api.int("host.compute_free_memory", &[host.clone()]);
                assert_eq!(now, free - started * need);
                assert_eq!(api.int("host_metrics.get_memory_free", &[metrics.clone()]), now);
            }
            Err(e) => {
                let left = (free - started * need).to_string();
                assert_eq!(e, ["HOST_NOT_ENOUGH_FREE_MEMORY".to_string(), need.to_string(), left.clone()]);
                assert_eq!(
                    api.call("VM.assert_can_boot_here", &[vm.clone(), host.clone()]),
                    err("HOST_NOT_ENOUGH_FREE_MEMORY", &[&need.to_string(), &left])
                );
                assert_eq!(api.power(vm), "Halted", "a refused start leaves the VM halted");
                break;
            }
        }
    }
    assert_eq!(started, predicted);
    // Suspending gives the memory back; resuming takes it again.
    api.ok("VM.suspend", &[vms[0].clone()]);
    assert_eq!(api.power(&vms[0]), "Suspended");
    assert_eq!(api.int("host.compute_free_memory", &[host.clone()]), free - (started - 1) * need);
    api.ok("VM.resume", &[vms[0].clone(), Value::Bool(false), Value::Bool(false)]);
    assert_eq!(api.power(&vms[0]), "Running");
    for vm in &vms[..started as usize] {
        api.ok("VM.hard_shutdown", &[vm.clone()]);
    }
    assert_eq!(api.int("host_metrics.get_memory_free", &[metrics]), free);
}

#[test]
fn a_restart_reconciles_with_libvirt() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path(), &[]);
    let vm = api.new_vm("survivor?");
    api.ok("VM.start", &[vm.clone(), Value::Bool(false), Value::Bool(false)]);
    assert_eq!(api.power(&vm), "Running");
    let sess = api.sess.clone();
    api.d.kill9();
    // The test driver's host is private to a connection: the restarted daemon finds no domain, as after a host
    // crash, and the VM is halted (nothing is started again).
    let d = Daemon::start(dir.path());
    let api = Api { d, sess };
    assert_eq!(api.power(&vm), "Halted");
    assert_eq!(api.ok("VM.get_resident_on", &[vm.clone()]), s("OpaqueRef:NULL"));
    assert_eq!(api.allowed(&vm), ["start", "start_on", "clone", "copy", "snapshot", "destroy"]);
}
