//! The xapi-rs daemon: the XenAPI over XML-RPC and JSON-RPC, on a durable SQLite store.
//!
//! Entry points: [`open`] builds the [`State`] from a data directory (migrating the store and describing this
//! host on first start); [`app`] is the HTTP router over it; [`serve`] runs it on a TCP or unix listener until a
//! shutdown signal. Tests bind port 0 and a temporary data directory and use the same functions.

pub mod auth;
pub mod bootstrap;
mod classes;
pub mod coerce;
mod console;
pub mod db;
pub mod dispatch;
pub mod encode;
pub mod error;
pub mod events;
mod generic;
pub mod hv;
pub mod rpc;
pub mod state;
pub mod tasks;
pub mod where_expr;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::net::{TcpListener, UnixListener};

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
    let facts = host_agent::facts::read()?;
    let password = match &config.root_password {
        Some(p) => bootstrap::RootPassword::Given(p.clone()),
        None => bootstrap::RootPassword::Generate(config.data_dir.join("root-password")),
    };
    let reserve = config.hv.host_memory_reserve.map(|r| r as i64);
    let (host, pool) = bootstrap::run(&store, &facts, password, reserve)?;
    let hv = hv::Hypervisor::new(config.hv.clone(), &config.data_dir);
    Ok(Arc::new(State::new(store, config.settings.clone(), host, pool, hv)))
}

/// Connects to the hypervisor (if the daemon has one) and brings the store in line with it; a libvirt that is not
/// there yet is retried by the first lifecycle call.
pub fn connect_hypervisor(state: &Arc<State>) {
    if state.hv.config.libvirt_uri.is_some()
        && let Err(e) = state.hv.agent(state)
    {
        tracing::warn!(error = %e.description().join(" "), "libvirt is not reachable yet; VM operations will retry");
    }
}

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Peer {
        // Every accepted connection passes here once: without TCP_NODELAY, the last partial segment of a streamed
        // answer waits ~40 ms for the client's delayed ACK.
        let _ = stream.io().set_nodelay(true);
        Peer::Tcp(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Peer {
        Peer::Unix { uid: stream.io().peer_cred().ok().map(|c| c.uid()) }
    }
}

/// Serves the XenAPI on `listener` (TCP or unix socket) until `shutdown` resolves.
pub async fn serve<L>(
    listener: L,
    state: Arc<State>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: Listener,
    L::Addr: std::fmt::Debug,
    Peer: for<'a> Connected<IncomingStream<'a, L>>,
{
    let app = app(state).into_make_service_with_connect_info::<Peer>();
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
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
