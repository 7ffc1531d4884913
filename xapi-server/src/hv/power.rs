//! libvirt's truth, written into the store.
//!
//! [`apply`] is the one place that changes a VM's power state: it sets `power_state`, `resident_on`, `domid`,
//! `VM_metrics`, the VM's consoles, the host's `resident_VMs` and `host_metrics.memory_free` together. It runs at the
//! end of every lifecycle operation, on every libvirt lifecycle event for a VM no operation is busy with, and for
//! every VM when the daemon connects to libvirt (reconciliation: a VM whose domain died while the daemon was down is
//! `Halted`, one whose domain still runs is `Running`; nothing is started).

use std::sync::Arc;

use host_agent::libvirt::{Agent, DomainStatus, Power};
use xapi_types::Value;
use xapi_types::value::NULL_REF;

use super::memory;
use super::ops;
use super::rec::{Rec, class, idx, set};
use crate::coerce::now_datetime;
use crate::db::{self, DbError, Ref};
use crate::state::State;

/// What a VM is, in XenAPI terms, given libvirt's status and whether a suspend image exists.
pub fn power_state(status: Option<&DomainStatus>, suspended: bool) -> &'static str {
    match status.map(|s| s.power) {
        Some(Power::Running) => "Running",
        Some(Power::Paused | Power::Crashed) => "Paused",
        Some(Power::ShutOff) | None if suspended => "Suspended",
        Some(Power::ShutOff) | None => "Halted",
    }
}

/// Writes `status` (libvirt's answer for the VM; `None`: no domain) into the store.
pub fn apply(state: &State, vm_ref: &str, status: Option<&DomainStatus>) -> Result<(), DbError> {
    let vm_c = class("VM");
    let row = state.store.get(vm_c, vm_ref)?;
    let vm = Rec::new(vm_c, &row.fields);
    if vm.bool("is_control_domain") {
        return Ok(());
    }
    let uuid = vm.str("uuid").to_string();
    let suspended = state.hv.suspend_image(&uuid).exists();
    let new_state = power_state(status, suspended);
    let resident = matches!(new_state, "Running" | "Paused");
    let was_resident = matches!(vm.str("power_state"), "Running" | "Paused");
    let (host_c, metrics_c, console_c) = (class("host"), class("VM_metrics"), class("console"));
    let now = Value::DateTime(now_datetime());
    let metrics_ref = vm.reference("metrics").map(str::to_string);
    let consoles: Vec<String> = vm.refs("consoles").into_iter().map(str::to_string).collect();
    let host = state.host.to_string();
    let base = state.settings.http_base.clone();

    let (host_metrics_c, metrics_i) = (class("host_metrics"), idx(host_c, "metrics"));
    state.store.transaction(|tx| {
        let mut new_consoles = None;
        if resident && consoles.is_empty() {
            let (c, cuuid) = (db::new_ref(), db::new_uuid());
            let mut f = db::default_row(console_c);
            set(console_c, &mut f, "uuid", cuuid.clone());
            set(console_c, &mut f, "protocol", "rfb");
            set(console_c, &mut f, "location", format!("{base}/console?uuid={cuuid}"));
            set(console_c, &mut f, "VM", vm_ref);
            tx.insert(console_c, &c, f)?;
            new_consoles = Some(vec![Value::Str(c)]);
        } else if !resident && !consoles.is_empty() {
            for c in &consoles {
                if state.store.exists(console_c, c) {
                    tx.delete(console_c, c)?;
                }
            }
            new_consoles = Some(vec![]);
        }
        let metrics_ref = match &metrics_ref {
            Some(m) if state.store.exists(metrics_c, m) => m.clone(),
            _ => {
                let m = db::new_ref();
                let mut f = db::default_row(metrics_c);
                set(metrics_c, &mut f, "uuid", db::new_uuid());
                tx.insert(metrics_c, &m, f)?;
                m
            }
        };
        // Each row is written only if it changes: an `apply` that finds nothing new commits nothing.
        let mut f = tx.get(vm_c, vm_ref)?;
        let mut changed = set(vm_c, &mut f, "power_state", new_state);
        changed |= set(vm_c, &mut f, "resident_on", if resident { host.as_str() } else { NULL_REF });
        let domid = status.filter(|_| resident).and_then(|s| s.domid).map_or(-1, i64::from);
        changed |= set(vm_c, &mut f, "domid", domid);
        changed |= set(vm_c, &mut f, "metrics", metrics_ref.clone());
        if let Some(c) = new_consoles {
            changed |= set(vm_c, &mut f, "consoles", Value::Array(c));
        }
        if resident && !was_resident {
            let r = Rec::new(vm_c, &f);
            let overhead = memory::overhead(r.int("memory_static_max"), r.int("VCPUs_max"));
            changed |= set(vm_c, &mut f, "memory_overhead", overhead);
        }
        let allowed = ops::allowed(Rec::new(vm_c, &f));
        changed |= set(vm_c, &mut f, "allowed_operations", allowed);
        let held = if resident { memory::held(Rec::new(vm_c, &f)) } else { 0 };
        if changed {
            tx.update(vm_c, vm_ref, |old| *old = f)?;
        }

        let mut m = tx.get(metrics_c, &metrics_ref)?;
        let mut changed = match status.filter(|_| resident) {
            Some(s) => {
                let mut c = set(metrics_c, &mut m, "VCPUs_number", i64::from(s.vcpus));
                c |= set(metrics_c, &mut m, "memory_actual", s.memory_actual as i64);
                if !was_resident {
                    c |= set(metrics_c, &mut m, "start_time", now.clone());
                }
                c
            }
            None => set(metrics_c, &mut m, "VCPUs_number", 0i64) | set(metrics_c, &mut m, "memory_actual", 0i64),
        };
        changed |= set(metrics_c, &mut m, "state", Value::Array(vec![Value::str(new_state.to_lowercase())]));
        if changed {
            set(metrics_c, &mut m, "last_updated", now.clone());
            tx.update(metrics_c, &metrics_ref, |old| *old = m)?;
        }

        let mut h = tx.get(host_c, &host)?;
        let i = idx(host_c, "resident_VMs");
        let mut vms: Vec<Value> = h[i].as_array().unwrap_or_default().to_vec();
        let here = vms.iter().any(|v| v.as_str() == Some(vm_ref));
        if resident != here {
            if resident {
                vms.push(Value::str(vm_ref));
            } else {
                vms.retain(|v| v.as_str() != Some(vm_ref));
            }
            h[i] = Value::Array(vms);
            tx.update(host_c, &host, |old| *old = h.clone())?;
        }

        // A VM that starts or stops takes its VBDs with it (hot-plugs in between are VBD.plug's and unplug's).
        if resident != was_resident {
            let vbd_c = class("VBD");
            for vbd in vm.refs("VBDs") {
                if let Ok(mut b) = tx.get(vbd_c, vbd)
                    && set(vbd_c, &mut b, "currently_attached", resident)
                {
                    tx.update(vbd_c, vbd, |old| *old = b)?;
                }
            }
        }

        // The host's free memory, as it is once this transaction is in (computed inside it: transactions run one
        // at a time, so the last writer saw the latest state).
        let hm_ref = h[metrics_i].as_str().unwrap_or_default().to_string();
        if let Ok(mut hm) = tx.get(host_metrics_c, &hm_ref)
            && set(host_metrics_c, &mut hm, "memory_free", memory::free_after(state, vm_ref, held))
        {
            set(host_metrics_c, &mut hm, "last_updated", now.clone());
            tx.update(host_metrics_c, &hm_ref, |old| *old = hm)?;
        }
        Ok::<_, DbError>(())
    })?;
    if !resident && (was_resident || !vm.refs("VBDs").is_empty()) {
        crate::storage::release_unused(state);
    }
    Ok(())
}

/// Writes the host's free memory (after a change of residence or of the admission promises).
pub fn refresh_memory_free(state: &State) -> Result<(), DbError> {
    let metrics_c = class("host_metrics");
    let Some(metrics) = memory::host_metrics(state) else { return Ok(()) };
    let now = Value::DateTime(now_datetime());
    state.store.transaction(|tx| {
        // Computed inside the transaction: transactions run one at a time, so the last writer saw the latest state.
        let mut f = tx.get(metrics_c, &metrics)?;
        if set(metrics_c, &mut f, "memory_free", memory::free_value(state)) {
            set(metrics_c, &mut f, "last_updated", now);
            tx.update(metrics_c, &metrics, |old| *old = f)?;
        }
        Ok(())
    })
}

/// Records libvirt's view of the host's memory.
pub fn set_memory_total(state: &State, total: u64) {
    let metrics_c = class("host_metrics");
    let Some(metrics) = memory::host_metrics(state) else { return };
    let _ = state
        .store
        .transaction(|tx| tx.update(metrics_c, &metrics, |f| set(metrics_c, f, "memory_total", total as i64)));
    let _ = refresh_memory_free(state);
}

/// A libvirt lifecycle event for the domain `uuid`: unless an operation is busy with the VM (it writes the outcome
/// itself), the store follows libvirt.
pub fn on_event(state: &Arc<State>, uuid: &str) {
    let vm_c = class("VM");
    let Ok(vm_ref) = state.store.by_uuid(vm_c, uuid) else { return };
    let busy = state
        .store
        .get(vm_c, &vm_ref)
        .map(|row| !Rec::new(vm_c, &row.fields).get("current_operations").as_struct().unwrap_or_default().is_empty())
        .unwrap_or(true);
    if !busy {
        sync(state, &vm_ref);
    }
}

/// Asks libvirt about one VM and writes the answer.
pub fn sync(state: &Arc<State>, vm_ref: &Ref) {
    let vm_c = class("VM");
    let Ok(row) = state.store.get(vm_c, vm_ref) else { return };
    let uuid = Rec::new(vm_c, &row.fields).str("uuid").to_string();
    let Ok(agent) = state.hv.agent(state) else { return };
    match agent.status(&uuid) {
        Ok(status) => {
            if let Err(e) = apply(state, vm_ref, status.as_ref()) {
                tracing::warn!(vm = %vm_ref, error = %e, "could not record a VM's power state");
            }
        }
        Err(e) => tracing::warn!(vm = %vm_ref, error = %e, "could not ask libvirt about a VM"),
    }
}

/// Brings every VM's power state in line with the domains libvirt has.
pub fn reconcile(state: &State, agent: &Agent) {
    let vm_c = class("VM");
    let (ti, ci) = (idx(vm_c, "is_a_template"), idx(vm_c, "is_control_domain"));
    let vms =
        state.store.filter(vm_c, |row| row.fields[ti] != Value::Bool(true) && row.fields[ci] != Value::Bool(true));
    let domains = match agent.domains() {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "cannot list libvirt's domains; VM power states are not reconciled");
            return;
        }
    };
    let mut changed = 0;
    for (r, row) in &vms {
        let vm = Rec::new(vm_c, &row.fields);
        let status = domains.iter().find(|d| d.uuid == vm.str("uuid"));
        let suspended = state.hv.suspend_image(vm.str("uuid")).exists();
        let now = power_state(status, suspended);
        let stale_ops = !vm.get("current_operations").as_struct().unwrap_or_default().is_empty();
        if stale_ops {
            // Operations interrupted by a restart of the daemon are over.
            let _ = state.store.transaction(|tx| {
                tx.update(vm_c, r, |f| {
                    set(vm_c, f, "current_operations", Value::Struct(vec![]));
                })
            });
        }
        if now != vm.str("power_state")
            || stale_ops
            || (status.is_some() && vm.int("domid") != status.and_then(|s| s.domid).map_or(-1, i64::from))
        {
            changed += 1;
            tracing::info!(vm = %r, was = vm.str("power_state"), now, "reconciled a VM with libvirt");
            if let Err(e) = apply(state, r, status) {
                tracing::warn!(vm = %r, error = %e, "could not reconcile a VM");
            }
        }
    }
    for d in &domains {
        if !vms.iter().any(|(_, row)| Rec::new(vm_c, &row.fields).str("uuid") == d.uuid) {
            tracing::warn!(uuid = d.uuid, "libvirt runs a domain of ours that no VM describes; leaving it alone");
        }
    }
    let _ = refresh_memory_free(state);
    tracing::info!(vms = vms.len(), domains = domains.len(), changed, "reconciled the store with libvirt");
}
