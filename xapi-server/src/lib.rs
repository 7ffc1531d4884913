//! The xapi-rs daemon: the XenAPI over XML-RPC and JSON-RPC, on a durable SQLite store.
//!
//! Entry points: [`open`] builds the [`State`] from a data directory (migrating the store and describing this
//! host on first start); [`app`] is the HTTP router over it; [`serve`] runs it on a TCP, TLS ([`tls::TlsListener`])
//! or unix listener until a shutdown signal. Tests bind port 0 and a temporary data directory and use the same
//! functions.

pub mod audit;
pub mod auth;
pub mod bootstrap;
mod bulk;
mod classes;
pub mod coerce;
mod console;
pub mod db;
pub mod dispatch;
pub mod encode;
pub mod error;
pub mod events;
pub mod front;
mod generic;
pub mod hv;
mod priority;
pub mod rbac;
pub mod rpc;
pub mod state;
pub mod storage;
pub mod tasks;
pub mod tls;
mod vdi_http;
pub mod where_expr;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::net::{TcpListener, UnixListener};

use front::Front;
pub use rpc::app;
pub use state::{Peer, Settings, State};

/// What the daemon is started with.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// The root password for a first start; `None`: generate one into `DATA_DIR/root-password`.
    pub root_password: Option<String>,
    pub settings: Settings,
    pub hv: hv::HvConfig,
}

/// The store inside a data directory.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("xapi.db")
}

/// Opens the data directory (creating it), the store, and makes the store describe this host.
pub fn open(config: &Config) -> anyhow::Result<Arc<State>> {
    std::fs::create_dir_all(&config.data_dir)?;
    let store = db::Store::open(&db_path(&config.data_dir))?;
    store.set_tombstone_limit(config.settings.tombstone_limit);
    tasks::fail_interrupted(&store)?;
    hv::ops::end_interrupted(&store)?;
    let fixed = store.rebuild_relations()?;
    if fixed > 0 {
        tracing::info!(objects = fixed, "brought relation sets (VM.VBDs, SR.VDIs, …) in line with their pointers");
    }
    let facts = host_agent::facts::read()?;
    let password = match &config.root_password {
        Some(p) => bootstrap::RootPassword::Given(p.clone()),
        None => bootstrap::RootPassword::Generate(config.data_dir.join("root-password")),
    };
    let reserve = config.hv.host_memory_reserve.map(|r| r as i64);
    let (host, pool) = bootstrap::run(&store, &facts, password, reserve)?;
    rbac::ensure_roles(&store)?;
    let hv = hv::Hypervisor::new(config.hv.clone(), &config.data_dir);
    let storage = storage::Storage::new(&config.data_dir, &hv.run_dir);
    let mut state = State::new(store, config.settings.clone(), host, pool, hv, storage);
    state.audit = audit::Audit::open(&config.data_dir.join("audit.log"))?;
    let state = Arc::new(state);
    storage::start(&state)?;
    Ok(state)
}

/// Connects to the hypervisor (if the daemon has one) and brings the store in line with it; a libvirt that is not
/// there yet is retried by the first lifecycle call.
pub fn connect_hypervisor(state: &Arc<State>) {
    // `host_metrics.memory_free` is the admission arithmetic's free memory, with or without a hypervisor.
    if let Err(e) = hv::power::refresh_memory_free(state) {
        tracing::warn!(error = %e, "could not compute the host's free memory");
    }
    if state.hv.config.libvirt_uri.is_none() {
        return;
    }
    if let Err(e) = state.hv.agent(state) {
        tracing::warn!(error = %e.description().join(" "), "libvirt is not reachable yet; retrying every 5 s");
    }
    // Every 5 s: a connection that died (libvirtd restarted) is made again, and the store reconciled with it.
    let st = state.clone();
    let _ = std::thread::Builder::new().name("libvirt-watch".into()).spawn(move || {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(5));
            let _ = st.hv.agent(&st);
        }
    });
}

impl Connected<IncomingStream<'_, Front<TcpListener>>> for Peer {
    fn connect_info(stream: IncomingStream<'_, Front<TcpListener>>) -> Peer {
        // Every accepted connection passes here once: without TCP_NODELAY, the last partial segment of a streamed
        // answer waits ~40 ms for the client's delayed ACK.
        let _ = stream.io().inner().set_nodelay(true);
        Peer::Tcp(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, Front<tls::TlsListener>>> for Peer {
    fn connect_info(stream: IncomingStream<'_, Front<tls::TlsListener>>) -> Peer {
        // A TLS client is always remote: it logs in with a password, even from this host.
        Peer::Tcp(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, Front<UnixListener>>> for Peer {
    fn connect_info(stream: IncomingStream<'_, Front<UnixListener>>) -> Peer {
        Peer::Unix { uid: stream.io().inner().peer_cred().ok().map(|c| c.uid()) }
    }
}

/// Serves the XenAPI on `listener` (TCP, TLS over TCP, or unix socket) until `shutdown` resolves.
pub async fn serve<L>(
    listener: L,
    state: Arc<State>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: Listener,
    L::Io: front::PeerOf<Addr = L::Addr>,
    L::Addr: Clone + Sync + std::fmt::Debug + 'static,
    Peer: for<'a> Connected<IncomingStream<'a, Front<L>>>,
{
    let front = Front::new(listener, state.clone())?;
    let app = app(state).into_make_service_with_connect_info::<Peer>();
    axum::serve(front, app).with_graceful_shutdown(shutdown).await
}

/// Once a minute (or as often as the session timeout needs): destroys sessions idle longer than the timeout, and
/// finished tasks older than `tasks::FINISHED_TASK_TTL` or beyond `tasks::MAX_FINISHED_TASKS`.
pub fn spawn_reaper(state: Arc<State>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60).min(state.settings.session_idle_timeout));
        loop {
            tick.tick().await;
            let st = state.clone();
            let _ = tokio::task::spawn_blocking(move || reap(&st)).await;
        }
    })
}

fn reap(state: &State) {
    let session = xapi_types::model::class("session").expect("session class");
    for r in state.idle_sessions() {
        state.session_ended(&r);
        match state.store.transaction(|tx| tx.delete(session, &r)) {
            Ok(()) => tracing::info!(session = %r, "destroyed an idle session"),
            Err(e) => tracing::warn!(session = %r, error = %e, "could not destroy an idle session"),
        }
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let cutoff = coerce::datetime_of_unix(now.saturating_sub(tasks::FINISHED_TASK_TTL).as_secs() as i64);
    for task in tasks::expired(&state.store, &cutoff) {
        if let Err(e) = tasks::destroy(state, &task) {
            tracing::debug!(task = %task, error = %e, "could not collect a finished task");
        }
    }
}
