//! A VM record (with its VBDs and VIFs) as a [`DomainSpec`].
//!
//! | VM field | domain |
//! |---|---|
//! | `PV_kernel` set | direct kernel boot with `PV_ramdisk` and `PV_args` (a PV guest on Xen) |
//! | otherwise | firmware boot in `HVM_boot_params:order` (`c` disk, `d` CD-ROM, `n` network; default `cd`) |
//! | `memory_static_max`, `memory_dynamic_max` | maximum and balloon target |
//! | `VCPUs_max`, `VCPUs_at_startup` | vCPUs |
//! | `platform` | features, clock, video, tablet (see `host_agent::xml`) |
//! | `actions_after_*` | `on_poweroff`, `on_reboot`, `on_crash` |
//! | VIFs | NICs with their MAC on their network's bridge (no bridge: user-mode networking) |
//! | VBDs | disks at their `userdevice`: VHD VDIs through their block server (NBD), ISO images as files, empty CD drives |

use std::path::PathBuf;

use host_agent::spec::{Action, BootDevice, CrashAction, Disk, DomainSpec, Nic, Os};
use xapi_types::generated::errors as codes;

use super::rec::{Rec, class};
use crate::error::ApiError;
use crate::state::State;

/// Checks what xapi checks before a start and builds the spec.
pub fn build(state: &State, vm_ref: &str, vm: Rec<'_>) -> Result<DomainSpec, ApiError> {
    let (smin, dmin, dmax, smax) = (
        vm.int("memory_static_min"),
        vm.int("memory_dynamic_min"),
        vm.int("memory_dynamic_max"),
        vm.int("memory_static_max"),
    );
    if !(0 <= smin && smin <= dmin && dmin <= dmax && dmax <= smax) {
        return Err(ApiError::new(
            &codes::MEMORY_CONSTRAINT_VIOLATION,
            ["Memory limits must satisfy: static_min <= dynamic_min <= dynamic_max <= static_max".to_string()],
        ));
    }
    if smax < 16 << 20 {
        return Err(ApiError::new(&codes::VM_MEMORY_SIZE_TOO_LOW, [vm_ref]));
    }
    let (vmax, vstart) = (vm.int("VCPUs_max"), vm.int("VCPUs_at_startup"));
    if vstart < 1 || vmax < 1 {
        return Err(ApiError::new(&codes::VM_NO_VCPUS, [vm_ref]));
    }
    if vstart > vmax || vmax > 64 {
        return Err(ApiError::new(&codes::VM_TOO_MANY_VCPUS, [vm_ref]));
    }
    let kernel = vm.str("PV_kernel");
    let os = if !kernel.is_empty() {
        Os::Direct {
            kernel: PathBuf::from(kernel),
            ramdisk: Some(vm.str("PV_ramdisk")).filter(|r| !r.is_empty()).map(PathBuf::from),
            cmdline: vm.str("PV_args").to_string(),
        }
    } else if !vm.str("PV_bootloader").is_empty() && vm.str("HVM_boot_policy").is_empty() {
        // A PV guest booted by pygrub or similar: only Xen runs those; under QEMU the guest must be HVM.
        return Err(ApiError::new(&codes::VM_HVM_REQUIRED, [vm_ref]));
    } else {
        let order = vm.map_get("HVM_boot_params", "order").unwrap_or("cd");
        let boot_order = order
            .chars()
            .filter_map(|c| match c {
                'c' => Some(BootDevice::Disk),
                'd' => Some(BootDevice::Cdrom),
                'n' => Some(BootDevice::Network),
                _ => None,
            })
            .collect();
        Os::Hvm { boot_order }
    };
    let platform = vm
        .get("platform")
        .as_struct()
        .unwrap_or_default()
        .iter()
        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
        .collect();
    let uuid = vm.str("uuid").to_string();
    Ok(DomainSpec {
        name: super::domain_name(&uuid),
        title: vm.str("name_label").to_string(),
        owner: state.host_uuid(),
        os,
        memory_max: smax as u64,
        memory_target: dmax as u64,
        vcpus_max: vmax as u32,
        vcpus_at_startup: vstart as u32,
        platform,
        on_poweroff: action(vm.str("actions_after_shutdown")),
        on_reboot: action(vm.str("actions_after_reboot")),
        on_crash: crash_action(vm.str("actions_after_crash")),
        vnc_listen: Some("127.0.0.1".into()),
        serial_log: Some(state.hv.console_log(&uuid)),
        nics: nics(state, vm)?,
        disks: disks(state, vm_ref, vm)?,
        uuid,
    })
}

fn action(a: &str) -> Action {
    if a == "restart" { Action::Restart } else { Action::Destroy }
}

fn crash_action(a: &str) -> CrashAction {
    match a {
        "coredump_and_destroy" => CrashAction::CoredumpAndDestroy,
        "restart" => CrashAction::Restart,
        "coredump_and_restart" => CrashAction::CoredumpAndRestart,
        "preserve" => CrashAction::Preserve,
        "rename_restart" => CrashAction::RenameRestart,
        _ => CrashAction::Destroy,
    }
}

fn nics(state: &State, vm: Rec<'_>) -> Result<Vec<Nic>, ApiError> {
    let (vif_c, net_c) = (class("VIF"), class("network"));
    let mut out = Vec::new();
    for vif_ref in vm.refs("VIFs") {
        let Ok(row) = state.store.get(vif_c, vif_ref) else { continue };
        let vif = Rec::new(vif_c, &row.fields);
        let bridge = vif
            .reference("network")
            .and_then(|n| state.store.get(net_c, n).ok())
            .map(|n| Rec::new(net_c, &n.fields).str("bridge").to_string())
            .filter(|b| !b.is_empty());
        let mtu = vif.int("MTU");
        out.push(Nic {
            device: vif.str("device").parse().unwrap_or(out.len() as u32),
            mac: vif.str("MAC").to_string(),
            bridge,
            mtu: (mtu > 0).then_some(mtu as u32),
        });
    }
    Ok(out)
}

/// The VM's disks: each VBD through `storage` (which starts the block servers of VHD disks).
fn disks(state: &State, vm_ref: &str, vm: Rec<'_>) -> Result<Vec<Disk>, ApiError> {
    vm.refs("VBDs").into_iter().map(|vbd| crate::storage::vbd_disk(state, vm_ref, vbd)).collect()
}
