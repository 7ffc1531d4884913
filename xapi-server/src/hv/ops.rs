//! The VM power-state machine, as xapi enforces it, and the lifecycle operations.
//!
//! | power state | allowed operations |
//! |---|---|
//! | Halted | start, start_on, clone, provision (templates), destroy |
//! | Running | clean_shutdown, hard_shutdown, shutdown, clean_reboot, hard_reboot, suspend, pause |
//! | Paused | unpause, hard_shutdown, shutdown, hard_reboot |
//! | Suspended | resume, resume_on, hard_shutdown, shutdown |
//!
//! One operation runs on a VM at a time: it is entered in `current_operations` (keyed by its task, or by a fresh
//! ref for a synchronous call) in the same transaction that checks the power state, so of two clients starting one
//! VM at once, one starts it and the other gets `OTHER_OPERATION_IN_PROGRESS` (or, once the first has finished,
//! `VM_BAD_POWER_STATE`). While an operation runs, `allowed_operations` is empty. Templates refuse lifecycle
//! operations with `VM_IS_TEMPLATE`; the control domain refuses them with `OPERATION_NOT_ALLOWED`.

use std::sync::Arc;

use host_agent::libvirt::{Agent, Power};
use xapi_types::Value;
use xapi_types::generated::errors as codes;

use super::rec::{Rec, class, idx, set};
use super::{agent_error, memory, power, spec};
use crate::db::{self, DbError, Ref};
use crate::error::ApiError;
use crate::state::State;

/// Declares the lifecycle operations once: the enum, the list of all of them, and their `vm_operations` names.
macro_rules! operations {
    ($($op:ident => $name:literal),* $(,)?) => {
        /// The lifecycle operations (their names are `vm_operations` values).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Op {
            $($op),*
        }

        const ALL: &[Op] = &[$(Op::$op),*];

        impl Op {
            pub fn name(self) -> &'static str {
                match self {
                    $(Op::$op => $name),*
                }
            }
        }
    };
}

operations! {
    Start => "start",
    StartOn => "start_on",
    CleanShutdown => "clean_shutdown",
    HardShutdown => "hard_shutdown",
    Shutdown => "shutdown",
    CleanReboot => "clean_reboot",
    HardReboot => "hard_reboot",
    Suspend => "suspend",
    Resume => "resume",
    ResumeOn => "resume_on",
    Pause => "pause",
    Unpause => "unpause",
    Provision => "provision",
    Clone => "clone",
    Copy => "copy",
    Snapshot => "snapshot",
    Destroy => "destroy",
}

use Op::*;

impl Op {
    /// The power states the operation may start from.
    fn allowed_states(self) -> &'static [&'static str] {
        match self {
            Start | StartOn | Provision | Destroy => &["Halted"],
            Clone | Copy => &["Halted", "Suspended"],
            Snapshot => &["Halted", "Running", "Paused", "Suspended"],
            CleanShutdown | CleanReboot | Suspend | Pause => &["Running"],
            HardShutdown | Shutdown => &["Running", "Paused", "Suspended"],
            HardReboot => &["Running", "Paused"],
            Unpause => &["Paused"],
            Resume | ResumeOn => &["Suspended"],
        }
    }

    /// Operations a template allows (the others answer `VM_IS_TEMPLATE`).
    fn for_templates(self) -> bool {
        matches!(self, Clone | Copy | Provision | Destroy)
    }
}

/// Why `op` may not run on `vm` now, as the XenAPI error.
fn check(vm_ref: &str, vm: Rec<'_>, op: Op) -> Result<(), ApiError> {
    let actual = vm.str("power_state");
    let allowed = op.allowed_states();
    if !allowed.contains(&actual) {
        return Err(ApiError::new(
            &codes::VM_BAD_POWER_STATE,
            [vm_ref.to_string(), allowed[0].to_lowercase(), actual.to_lowercase()],
        ));
    }
    if vm.bool("is_a_template") && !op.for_templates() {
        return Err(ApiError::new(&codes::VM_IS_TEMPLATE, [vm_ref]));
    }
    if op == Provision && !vm.bool("is_a_template") {
        return Err(ApiError::new(&codes::PROVISION_ONLY_ALLOWED_ON_TEMPLATE, std::iter::empty::<String>()));
    }
    if vm.bool("is_control_domain") {
        return Err(ApiError::new(
            &codes::OPERATION_NOT_ALLOWED,
            [format!("{} is not allowed on the control domain", op.name())],
        ));
    }
    if let Some((op_ref, running)) = vm.get("current_operations").as_struct().unwrap_or_default().first() {
        return Err(ApiError::new(
            &codes::OTHER_OPERATION_IN_PROGRESS,
            ["VM".to_string(), vm_ref.to_string(), running.as_str().unwrap_or_default().to_string(), op_ref.clone()],
        ));
    }
    Ok(())
}

/// `allowed_operations` for a VM as it is now.
pub fn allowed(vm: Rec<'_>) -> Value {
    let ops = ALL.iter().filter(|op| check("", vm, **op).is_ok()).map(|op| Value::str(op.name())).collect();
    Value::Array(ops)
}

/// At start: operations still in `current_operations` belonged to a daemon that is gone (killed or crashed while
/// they ran); they are over, and the VM's `allowed_operations` are computed afresh. Without this a VM whose
/// operation a crash interrupted would refuse everything with `OTHER_OPERATION_IN_PROGRESS`, hypervisor or not.
pub fn end_interrupted(store: &db::Store) -> Result<usize, DbError> {
    let vm_c = class("VM");
    let ci = idx(vm_c, "current_operations");
    let stale: Vec<Ref> = store
        .filter(vm_c, |row| !row.fields[ci].as_struct().unwrap_or_default().is_empty())
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    if stale.is_empty() {
        return Ok(0);
    }
    store.transaction(|tx| {
        for r in &stale {
            tx.update(vm_c, r, |f| {
                set(vm_c, f, "current_operations", Value::Struct(vec![]));
                let a = allowed(Rec::new(vm_c, f));
                set(vm_c, f, "allowed_operations", a);
            })?;
        }
        Ok::<_, DbError>(())
    })?;
    tracing::warn!(count = stale.len(), "ended VM operations interrupted by the last stop");
    Ok(stale.len())
}

/// An operation in progress on a VM; when dropped it leaves `current_operations` and the VM is brought in line with
/// libvirt (an event that arrived meanwhile is not lost).
pub struct Running<'a> {
    state: &'a Arc<State>,
    vm: Ref,
    op_ref: String,
    pub uuid: String,
    /// Bulk work stands back while it runs (`priority`).
    _priority: crate::priority::VmOperation,
}

/// Checks and enters `op` on `vm_ref`; `task` is the call's task, if it runs as one.
pub fn begin<'a>(state: &'a Arc<State>, vm_ref: &str, op: Op, task: Option<&str>) -> Result<Running<'a>, ApiError> {
    let vm_c = class("VM");
    let op_ref = task.map_or_else(db::new_ref, str::to_string);
    let uuid = state.store.transaction(|tx| {
        let f = tx.get(vm_c, vm_ref)?;
        check(vm_ref, Rec::new(vm_c, &f), op)?;
        let uuid = Rec::new(vm_c, &f).str("uuid").to_string();
        tx.update(vm_c, vm_ref, |f| {
            set(vm_c, f, "current_operations", Value::Struct(vec![(op_ref.clone(), Value::str(op.name()))]));
            set(vm_c, f, "allowed_operations", Value::Array(vec![]));
        })?;
        Ok::<_, ApiError>(uuid)
    })?;
    Ok(Running { state, vm: Ref::from(vm_ref), op_ref, uuid, _priority: crate::priority::VmOperation::begin() })
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let vm_c = class("VM");
        let r = self.state.store.transaction(|tx| {
            tx.update(vm_c, &self.vm, |f| {
                let i = idx(vm_c, "current_operations");
                if let Value::Struct(m) = &mut f[i] {
                    m.retain(|(k, _)| *k != self.op_ref);
                }
                let a = allowed(Rec::new(vm_c, f));
                set(vm_c, f, "allowed_operations", a);
            })
        });
        match r {
            Ok(()) => {
                if self.state.hv.config.libvirt_uri.is_some() {
                    power::sync(self.state, &self.vm);
                }
            }
            Err(DbError::HandleInvalid { .. }) => {} // destroyed by the operation
            Err(e) => tracing::warn!(vm = %self.vm, error = %e, "could not end an operation"),
        }
    }
}

/// Memory promised to a starting VM, released when dropped.
struct Promise<'a>(&'a State, Ref);

impl Drop for Promise<'_> {
    fn drop(&mut self) {
        memory::release(self.0, &self.1);
        let _ = power::refresh_memory_free(self.0);
    }
}

fn vm_row(state: &State, vm_ref: &str) -> Result<Vec<Value>, ApiError> {
    Ok(state.store.get(class("VM"), vm_ref)?.fields.clone())
}

fn admit<'a>(state: &'a Arc<State>, vm_ref: &str, vm: Rec<'_>) -> Result<Promise<'a>, ApiError> {
    let r = Ref::from(vm_ref);
    memory::admit(state, &r, memory::need(vm)).map_err(|(needed, available)| {
        ApiError::new(&codes::HOST_NOT_ENOUGH_FREE_MEMORY, [needed.to_string(), available.to_string()])
    })?;
    let _ = power::refresh_memory_free(state);
    Ok(Promise(state, r))
}

/// Waits until the domain is gone (or shut off).
fn wait_gone(state: &State, agent: &Agent, uuid: &str, timeout: std::time::Duration) -> bool {
    state.hv.wait_until(timeout, || {
        matches!(
            agent.status(uuid),
            Ok(None) | Ok(Some(host_agent::libvirt::DomainStatus { power: Power::ShutOff, .. }))
        )
    })
}

/// `VM.start` / `start_on`.
pub fn start(state: &Arc<State>, vm_ref: &str, paused: bool, op: Op, task: Option<&str>) -> Result<(), ApiError> {
    let running = begin(state, vm_ref, op, task)?;
    let agent = state.hv.agent(state)?;
    let f = vm_row(state, vm_ref)?;
    let vm = Rec::new(class("VM"), &f);
    let spec = spec::build(state, vm_ref, vm)?;
    let _promise = admit(state, vm_ref, vm)?;
    prepare_run_dirs(state)?;
    let status = crate::priority::urgent(|| agent.start(&spec, paused)).map_err(agent_error)?;
    power::apply(state, vm_ref, Some(&status))?;
    drop(running);
    Ok(())
}

fn prepare_run_dirs(state: &State) -> Result<(), ApiError> {
    for d in ["consoles", "suspend"] {
        std::fs::create_dir_all(state.hv.run_dir.join(d))
            .map_err(|e| ApiError::internal(format!("cannot create {}: {e}", state.hv.run_dir.display())))?;
    }
    Ok(())
}

/// `VM.clean_shutdown`: the ACPI power button, then wait for the guest to power off.
pub fn clean_shutdown(state: &Arc<State>, vm_ref: &str, task: Option<&str>) -> Result<(), ApiError> {
    let running = begin(state, vm_ref, CleanShutdown, task)?;
    let agent = state.hv.agent(state)?;
    acpi_shutdown(state, &agent, vm_ref, &running.uuid)?;
    power::apply(state, vm_ref, None)?;
    Ok(())
}

fn acpi_shutdown(state: &State, agent: &Agent, vm_ref: &str, uuid: &str) -> Result<(), ApiError> {
    agent.shutdown(uuid).map_err(agent_error)?;
    let timeout = state.hv.config.clean_shutdown_timeout;
    if !wait_gone(state, agent, uuid, timeout) {
        return Err(ApiError::new(&codes::VM_SHUTDOWN_TIMEOUT, [vm_ref.to_string(), timeout.as_secs().to_string()]));
    }
    Ok(())
}

/// `VM.hard_shutdown`: pull the plug (or, for a suspended VM, discard its saved state).
pub fn hard_shutdown(state: &Arc<State>, vm_ref: &str, task: Option<&str>, op: Op) -> Result<(), ApiError> {
    let running = begin(state, vm_ref, op, task)?;
    let agent = state.hv.agent(state)?;
    destroy_domain(state, &agent, &running.uuid)?;
    power::apply(state, vm_ref, None)?;
    Ok(())
}

fn destroy_domain(state: &State, agent: &Agent, uuid: &str) -> Result<(), ApiError> {
    match agent.destroy(uuid) {
        Ok(()) | Err(host_agent::libvirt::AgentError::NoDomain(_)) => {}
        Err(e) => return Err(agent_error(e)),
    }
    let image = state.hv.suspend_image(uuid);
    if image.exists() {
        std::fs::remove_file(&image).map_err(|e| ApiError::internal(format!("{}: {e}", image.display())))?;
    }
    wait_gone(state, agent, uuid, std::time::Duration::from_secs(30));
    Ok(())
}

/// `VM.shutdown`: clean if the guest cooperates, hard otherwise.
pub fn shutdown(state: &Arc<State>, vm_ref: &str, task: Option<&str>) -> Result<(), ApiError> {
    let running = begin(state, vm_ref, Shutdown, task)?;
    let agent = state.hv.agent(state)?;
    let f = vm_row(state, vm_ref)?;
    let clean = Rec::new(class("VM"), &f).str("power_state") == "Running"
        && acpi_shutdown(state, &agent, vm_ref, &running.uuid).is_ok();
    if !clean {
        destroy_domain(state, &agent, &running.uuid)?;
    }
    power::apply(state, vm_ref, None)?;
    Ok(())
}

/// `VM.clean_reboot` and `VM.hard_reboot`: the domain is shut down (ACPI, or pulled) and a new one is created from
/// the VM's current configuration, as xapi does; the VM keeps its memory throughout.
pub fn reboot(state: &Arc<State>, vm_ref: &str, clean: bool, task: Option<&str>) -> Result<(), ApiError> {
    let running = begin(state, vm_ref, if clean { CleanReboot } else { HardReboot }, task)?;
    let agent = state.hv.agent(state)?;
    let f = vm_row(state, vm_ref)?;
    let spec = spec::build(state, vm_ref, Rec::new(class("VM"), &f))?;
    if clean {
        acpi_shutdown(state, &agent, vm_ref, &running.uuid)?;
    } else {
        destroy_domain(state, &agent, &running.uuid)?;
    }
    match crate::priority::urgent(|| agent.start(&spec, false)) {
        Ok(status) => power::apply(state, vm_ref, Some(&status))?,
        Err(e) => {
            power::apply(state, vm_ref, None)?;
            return Err(agent_error(e));
        }
    }
    Ok(())
}

/// `VM.suspend`: the guest's memory is saved to the host and the domain stops.
pub fn suspend(state: &Arc<State>, vm_ref: &str, task: Option<&str>) -> Result<(), ApiError> {
    let running = begin(state, vm_ref, Suspend, task)?;
    let agent = state.hv.agent(state)?;
    prepare_run_dirs(state)?;
    let image = state.hv.suspend_image(&running.uuid);
    let partial = image.with_extension("partial");
    if let Err(e) = agent.save(&running.uuid, &partial) {
        let _ = std::fs::remove_file(&partial);
        return Err(agent_error(e));
    }
    std::fs::rename(&partial, &image).map_err(|e| ApiError::internal(format!("{}: {e}", image.display())))?;
    power::apply(state, vm_ref, None)?;
    Ok(())
}

/// `VM.resume` / `resume_on`.
pub fn resume(state: &Arc<State>, vm_ref: &str, paused: bool, op: Op, task: Option<&str>) -> Result<(), ApiError> {
    let running = begin(state, vm_ref, op, task)?;
    let agent = state.hv.agent(state)?;
    let f = vm_row(state, vm_ref)?;
    let _promise = admit(state, vm_ref, Rec::new(class("VM"), &f))?;
    let image = state.hv.suspend_image(&running.uuid);
    crate::storage::attach_vm_disks(state, vm_ref)?;
    let status = match crate::priority::urgent(|| agent.restore(&running.uuid, &image, paused)) {
        Ok(s) => s,
        Err(e) => {
            crate::storage::release_unused(state);
            return Err(agent_error(e));
        }
    };
    std::fs::remove_file(&image).map_err(|e| ApiError::internal(format!("{}: {e}", image.display())))?;
    power::apply(state, vm_ref, Some(&status))?;
    Ok(())
}

/// `VM.pause` / `VM.unpause`.
pub fn pause(state: &Arc<State>, vm_ref: &str, pause: bool, task: Option<&str>) -> Result<(), ApiError> {
    let running = begin(state, vm_ref, if pause { Pause } else { Unpause }, task)?;
    let agent = state.hv.agent(state)?;
    if pause { agent.pause(&running.uuid) } else { agent.unpause(&running.uuid) }.map_err(agent_error)?;
    let status = agent.status(&running.uuid).map_err(agent_error)?;
    power::apply(state, vm_ref, status.as_ref())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_interrupted_by_a_stop_end_at_start() {
        let store = db::Store::open_in_memory().unwrap();
        let vm_c = class("VM");
        let (vm, mut f) = (db::new_ref(), db::default_row(vm_c));
        set(vm_c, &mut f, "uuid", db::new_uuid());
        set(vm_c, &mut f, "power_state", "Halted");
        set(vm_c, &mut f, "current_operations", Value::Struct(vec![(db::new_ref(), Value::str("destroy"))]));
        store.transaction(|tx| tx.insert(vm_c, &vm, f)).unwrap();
        assert_eq!(end_interrupted(&store).unwrap(), 1);
        let row = store.get(vm_c, &vm).unwrap();
        let rec = Rec::new(vm_c, &row.fields);
        assert_eq!(rec.get("current_operations"), &Value::Struct(vec![]));
        assert!(rec.get("allowed_operations").as_array().unwrap().contains(&Value::str("destroy")));
        assert_eq!(end_interrupted(&store).unwrap(), 0);
    }
}
