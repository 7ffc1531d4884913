//! Memory admission: a VM starts only if the host has room for it.
//!
//! ```text
//! free(host) = memory_total
//!            − reserve                          (the host's own memory, shown as the control domain's)
//!            − Σ resident guests (memory_static_max + memory_overhead)
//!            − Σ guests being started or resumed (their promised need)
//! need(vm)   = memory_static_max + overhead(vm)
//! overhead   = 40 MiB + 2 MiB × VCPUs_max + memory_static_max / 128      (rounded up to a whole MiB)
//! ```
//!
//! The overhead is QEMU's: the emulator process and its buffers (≈ 40 MiB measured for a 1-VCPU TCG guest), per
//! VCPU state, and page-table/shadow memory proportional to the guest's size. Guests are counted at their static
//! maximum: nothing is overcommitted, so a started guest can never be starved by a later one. Suspended guests hold
//! no host memory. `host_metrics.memory_free` is this `free`, written whenever a guest's residence changes.

use std::sync::Arc;

use xapi_types::Value;

use super::rec::{Rec, class, idx};
use crate::db::Ref;
use crate::state::State;

pub const MIB: i64 = 1 << 20;

/// The memory QEMU needs beside the guest's own, bytes.
pub fn overhead(static_max: i64, vcpus_max: i64) -> i64 {
    let bytes = 40 * MIB + 2 * MIB * vcpus_max.max(1) + static_max.max(0) / 128;
    (bytes + MIB - 1) / MIB * MIB
}

/// What `vm` needs to start, bytes.
pub fn need(vm: Rec<'_>) -> i64 {
    vm.int("memory_static_max") + overhead(vm.int("memory_static_max"), vm.int("VCPUs_max"))
}

/// What a resident guest holds: its need as recorded when it started.
pub fn held(vm: Rec<'_>) -> i64 {
    let recorded = vm.int("memory_overhead");
    vm.int("memory_static_max")
        + if recorded > 0 { recorded } else { overhead(vm.int("memory_static_max"), vm.int("VCPUs_max")) }
}

/// This host's `host_metrics` object.
pub fn host_metrics(state: &State) -> Option<String> {
    let host = class("host");
    let h = state.store.get(host, &state.host).ok()?;
    Some(Rec::new(host, &h.fields).str("metrics").to_string())
}

/// The host's physical memory, bytes (`host_metrics.memory_total`).
pub fn total(state: &State) -> i64 {
    let metrics_c = class("host_metrics");
    let Some(metrics) = host_metrics(state) else { return 0 };
    state.store.get(metrics_c, &metrics).map(|m| Rec::new(metrics_c, &m.fields).int("memory_total")).unwrap_or(0)
}

/// The memory kept for the host itself, bytes: the control domain's (set at start from `--host-memory-reserve`
/// or [`crate::bootstrap::dom0_memory`]).
pub fn reserve(state: &State) -> i64 {
    let (host, vm_c) = (class("host"), class("VM"));
    let Ok(h) = state.store.get(host, &state.host) else { return 0 };
    let dom0 = Rec::new(host, &h.fields).str("control_domain").to_string();
    state.store.get(vm_c, &dom0).map(|d| Rec::new(vm_c, &d.fields).int("memory_static_max")).unwrap_or(0)
}

/// Whether a VM's power state holds host memory.
pub fn is_resident(vm: Rec<'_>) -> bool {
    !vm.bool("is_control_domain") && matches!(vm.str("power_state"), "Running" | "Paused")
}

/// What resident guests hold, bytes, leaving `except` out.
fn resident(state: &State, except: Option<&str>) -> i64 {
    let vm_c = class("VM");
    let ri = idx(vm_c, "resident_on");
    state
        .store
        .filter(vm_c, |row| row.fields[ri].as_str() == Some(&*state.host))
        .iter()
        .filter(|(r, row)| except != Some(&**r) && is_resident(Rec::new(vm_c, &row.fields)))
        .map(|(_, row)| held(Rec::new(vm_c, &row.fields)))
        .sum()
}

/// `free` of the module header.
pub fn free(state: &State) -> i64 {
    let promised: i64 = state.hv.admission().values().map(|n| *n as i64).sum();
    total(state) - reserve(state) - resident(state, None) - promised
}

/// Promises `needed` bytes to `vm` if they are free; the promise lasts until [`release`]. On refusal answers
/// (needed, available).
pub fn admit(state: &Arc<State>, vm: &Ref, needed: i64) -> Result<(), (i64, i64)> {
    let mut promised = state.hv.admission();
    let others: i64 = promised.iter().filter(|(r, _)| *r != vm).map(|(_, n)| *n as i64).sum();
    let available = total(state) - reserve(state) - resident(state, Some(vm)) - others;
    if needed > available {
        return Err((needed, available.max(0)));
    }
    promised.insert(vm.clone(), needed as u64);
    Ok(())
}

pub fn release(state: &State, vm: &str) {
    state.hv.admission().remove(vm);
}

/// `memory_free` for `host_metrics`, as a value.
pub fn free_value(state: &State) -> Value {
    Value::Int(free(state).max(0))
}

/// `free` as it will be once `vm` holds `held` bytes (0: not resident) and no longer needs a promise: for the
/// transaction that changes the VM's residence.
pub fn free_after(state: &State, vm: &str, held: i64) -> Value {
    let promised: i64 = state.hv.admission().iter().filter(|(r, _)| &***r != vm).map(|(_, n)| *n as i64).sum();
    Value::Int((total(state) - reserve(state) - resident(state, Some(vm)) - promised - held).max(0))
}
