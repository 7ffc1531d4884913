//! The hypervisor side of the toolstack: VMs run through `host-agent`, and the store follows what libvirt says.
//!
//! - [`Hypervisor`] holds the agent (connected lazily, so that the daemon serves the API even while libvirtd is
//!   down), the host's memory reservation and the admission lock.
//! - [`ops`] is the power-state machine: which operation is allowed in which state, one operation per VM at a time
//!   (`current_operations`), and the lifecycle messages themselves.
//! - [`power`] writes libvirt's truth into the store: power state, `resident_on`, `domid`, `VM_metrics`, consoles,
//!   `host_metrics.memory_free`. libvirt's lifecycle events drive it (a guest that powers itself off is `Halted`
//!   as soon as libvirt knows), and at start it reconciles the store with the domains that exist.
//! - [`memory`] is the admission arithmetic; [`spec`] turns a VM record into a domain spec.

pub mod memory;
pub mod ops;
pub mod power;
pub mod rec;
pub mod spec;
pub mod templates;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use host_agent::accel::AccelChoice;
use host_agent::libvirt::{Agent, AgentError, DomainEvent};
use xapi_types::generated::errors as codes;

use crate::db::Ref;
use crate::error::ApiError;
use crate::state::State;

/// How the daemon reaches its hypervisor.
#[derive(Debug, Clone)]
pub struct HvConfig {
    /// `None`: no hypervisor (lifecycle messages answer an error saying so).
    pub libvirt_uri: Option<String>,
    pub accel: AccelChoice,
    /// Memory kept for the host itself, bytes (`None`: [`crate::bootstrap::dom0_memory`] of the host's memory).
    pub host_memory_reserve: Option<u64>,
    /// How long a clean shutdown or reboot waits for the guest.
    pub clean_shutdown_timeout: Duration,
}

impl Default for HvConfig {
    fn default() -> Self {
        HvConfig {
            libvirt_uri: None,
            accel: AccelChoice::Auto,
            host_memory_reserve: None,
            clean_shutdown_timeout: Duration::from_secs(120),
        }
    }
}

pub struct Hypervisor {
    pub config: HvConfig,
    /// Where serial-console logs and suspend images live.
    pub run_dir: PathBuf,
    agent: Mutex<Option<Arc<Agent>>>,
    /// Memory promised to VMs that are starting or resuming (not yet resident), by VM ref.
    admission: Mutex<HashMap<Ref, u64>>,
    /// Bumped on every libvirt lifecycle event; operations wait on it instead of polling.
    changed: (Mutex<u64>, Condvar),
}

impl Hypervisor {
    pub fn new(config: HvConfig, data_dir: &Path) -> Hypervisor {
        Hypervisor {
            config,
            run_dir: data_dir.join("run"),
            agent: Mutex::new(None),
            admission: Mutex::new(HashMap::new()),
            changed: (Mutex::new(0), Condvar::new()),
        }
    }

    /// The connected agent; connects (and subscribes to events, and reconciles) on first use.
    pub fn agent(&self, state: &Arc<State>) -> Result<Arc<Agent>, ApiError> {
        let mut slot = self.agent.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = slot.as_ref() {
            if a.is_alive() {
                return Ok(a.clone());
            }
            tracing::warn!(uri = a.uri(), "the connection to libvirt was lost; connecting again");
            *slot = None;
        }
        let Some(uri) = self.config.libvirt_uri.as_deref() else {
            return Err(ApiError::new(
                &codes::OPERATION_NOT_ALLOWED,
                ["this daemon runs without a hypervisor (no --libvirt-uri)".to_string()],
            ));
        };
        let owner = state.host_uuid();
        let agent = Arc::new(Agent::connect(uri, &owner, self.config.accel).map_err(agent_error)?);
        tracing::info!(uri, target = ?agent.target(), kvm = %agent.kvm_check().reason, "connected to libvirt");
        let (tx, rx) = std::sync::mpsc::channel::<DomainEvent>();
        agent.subscribe(tx).map_err(agent_error)?;
        *slot = Some(agent.clone());
        drop(slot);
        let st = state.clone();
        std::thread::Builder::new()
            .name("domain-events".into())
            .spawn(move || {
                for ev in rx {
                    tracing::debug!(uuid = ev.uuid, kind = ?ev.kind, "domain event");
                    st.hv.notify();
                    power::on_event(&st, &ev.uuid);
                }
            })
            .map_err(|e| ApiError::internal(format!("cannot start the event thread: {e}")))?;
        // The host's memory: the kernel's (`/proc/meminfo`, recorded at start) when libvirt runs on this machine —
        // libvirt's node info counts NUMA cells, which can hold less than the kernel manages — and libvirt's for a
        // remote host or the test driver's fake one.
        let remote = uri.split_once("://").is_some_and(|(_, rest)| !rest.starts_with('/'));
        if (remote || uri.starts_with("test:"))
            && let Ok(node) = agent.node()
        {
            power::set_memory_total(state, node.memory_total);
        }
        power::reconcile(state, &agent);
        Ok(agent)
    }

    fn notify(&self) {
        let (m, cv) = &self.changed;
        *m.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        cv.notify_all();
    }

    /// Waits until `done` answers true, re-checking on every libvirt event (and at least every 500 ms); false on
    /// timeout.
    pub fn wait_until(&self, timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &self.changed;
        let mut seen = *m.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if done() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let guard = m.lock().unwrap_or_else(|e| e.into_inner());
            let wait = (deadline - now).min(Duration::from_millis(500));
            let (guard, _) = cv.wait_timeout_while(guard, wait, |g| *g == seen).unwrap_or_else(|e| e.into_inner());
            seen = *guard;
        }
    }

    pub fn admission(&self) -> MutexGuard<'_, HashMap<Ref, u64>> {
        self.admission.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The serial console log of a VM.
    pub fn console_log(&self, vm_uuid: &str) -> PathBuf {
        self.run_dir.join("consoles").join(format!("{vm_uuid}.log"))
    }

    /// The suspend image of a VM.
    pub fn suspend_image(&self, vm_uuid: &str) -> PathBuf {
        self.run_dir.join("suspend").join(format!("{vm_uuid}.save"))
    }
}

/// A host-agent failure as a XenAPI error.
pub fn agent_error(e: AgentError) -> ApiError {
    match e {
        // Not logged as an internal error: libvirtd being away is a state, reported where it changes.
        AgentError::Connect { .. } => ApiError::new(&codes::INTERNAL_ERROR, [e.to_string()]),
        other => ApiError::internal(other),
    }
}

/// The libvirt domain name of a VM.
pub fn domain_name(vm_uuid: &str) -> String {
    format!("xapi-{vm_uuid}")
}
