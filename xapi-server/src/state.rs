//! The daemon's shared state: the store, the objects that describe this host, settings, and session activity.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use xapi_types::model;

use crate::db::{Ref, Store};
use crate::error::ApiError;
use crate::events::Registrations;
use crate::hv::Hypervisor;
use crate::tasks::Running;

/// Settings that are not XenAPI objects.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A session unused for this long is destroyed (xapi: 24 h).
    pub session_idle_timeout: Duration,
    /// How many deletions are kept for event clients; one whose token is older than the oldest kept gets
    /// `EVENTS_LOST`.
    pub tombstone_limit: usize,
    /// The URL clients reach the daemon at (`http://ADDR:PORT`), for console locations.
    pub http_base: String,
    /// Where NBD clients reach the NBD export (`--nbd`), as `VDI.get_nbd_info` advertises it: an address and a
    /// port. `None`: no export (`VDI.get_nbd_info` answers `[]`, as XenServer without an NBD network).
    pub nbd: Option<(String, u16)>,
    /// Sessions one client (a user with one originator, or without one from one address) may hold; a login past
    /// it ends that client's least recently used session (xapi: 500 per originator).
    pub sessions_per_client: usize,
    /// Sessions one user may hold over all clients; a login past it is refused (`SESSION_AUTHORIZATION_FAILED`).
    pub sessions_per_user: usize,
    /// TCP connections (plain or TLS) one client address may hold open; past it, `429` and the connection
    /// closes. With HTTP/1.1 one call runs per connection at a time, so this also bounds a client's concurrent
    /// calls.
    pub connections_per_client: usize,
    /// `Async.` calls running at once; past it, `TOO_MANY_PENDING_TASKS`.
    pub max_pending_tasks: usize,
    /// Requests handled at once (all clients); past it, `429`.
    pub max_concurrent_requests: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            session_idle_timeout: Duration::from_secs(24 * 3600),
            tombstone_limit: crate::db::DEFAULT_TOMBSTONE_LIMIT,
            http_base: "http://127.0.0.1".into(),
            nbd: None,
            sessions_per_client: 500,
            sessions_per_user: 5000,
            connections_per_client: 2048,
            max_pending_tasks: crate::tasks::MAX_RUNNING,
            max_concurrent_requests: 4096,
        }
    }
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    Tcp(std::net::SocketAddr),
    /// A unix-socket client with its uid (`SO_PEERCRED`); uid 0 is root and needs no password, as on XenServer.
    Unix {
        uid: Option<u32>,
    },
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Tcp(a) => write!(f, "{a}"),
            Peer::Unix { uid: Some(u) } => write!(f, "unix:uid={u}"),
            Peer::Unix { uid: None } => write!(f, "unix"),
        }
    }
}

impl Peer {
    pub fn is_local_root(&self) -> bool {
        matches!(self, Peer::Unix { uid: Some(0) })
    }
}

/// A live session's last use and who holds it.
#[derive(Debug)]
struct Activity {
    last: Instant,
    client: Client,
}

/// A client, for the session limits: its user and what it says it is (the login's `originator`), or, when it
/// says nothing, where it comes from (its IP address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub user: String,
    pub who: String,
}

impl Client {
    pub fn new(user: &str, originator: &str, peer: Option<&Peer>) -> Client {
        let who = if !originator.is_empty() {
            format!("originator:{originator}")
        } else {
            match peer {
                Some(Peer::Tcp(a)) => format!("address:{}", a.ip()),
                Some(Peer::Unix { uid }) => format!("unix:{uid:?}"),
                None => String::new(),
            }
        };
        Client { user: user.to_string(), who }
    }
}

pub struct State {
    pub store: Store,
    pub settings: Settings,
    /// This host and its pool (filled in at first start, kept across restarts).
    pub host: Ref,
    pub pool: Ref,
    /// Last use of each live session. Kept in memory: writing it to disk on every call would make every read a
    /// write (xapi's own lock-contention trap); a restart counts as activity.
    activity: Mutex<HashMap<Ref, Activity>>,
    /// Tasks whose work runs here.
    pub tasks: Running,
    /// Sessions registered for the legacy `event.next`.
    pub registrations: Registrations,
    /// The hypervisor VMs run on.
    pub hv: Hypervisor,
    /// Attached SRs and the block servers serving their VDIs.
    pub storage: crate::storage::Storage,
    /// Set when the daemon stops: waiting event calls answer at once instead of holding the shutdown up.
    stopping: tokio::sync::watch::Sender<bool>,
    /// Where state-changing calls are recorded (`DATA_DIR/audit.log`).
    pub audit: crate::audit::Audit,
    /// Requests being handled now (`Settings::max_concurrent_requests`).
    pub in_flight: crate::rpc::InFlight,
}

impl State {
    pub fn new(
        store: Store,
        settings: Settings,
        host: Ref,
        pool: Ref,
        hv: Hypervisor,
        storage: crate::storage::Storage,
    ) -> State {
        let now = Instant::now();
        let session = model::class("session").expect("session class");
        let (ui, _) = session.field("auth_user_name").expect("session.auth_user_name");
        let (oi, _) = session.field("originator").expect("session.originator");
        let activity = store
            .all(session)
            .into_iter()
            .map(|(r, row)| {
                let text = |i: usize| row.fields[i].as_str().unwrap_or_default().to_string();
                (r, Activity { last: now, client: Client::new(&text(ui), &text(oi), None) })
            })
            .collect();
        State {
            store,
            settings,
            host,
            pool,
            activity: Mutex::new(activity),
            tasks: Running::default(),
            registrations: Registrations::default(),
            hv,
            storage,
            stopping: tokio::sync::watch::Sender::new(false),
            audit: crate::audit::Audit::none(),
            in_flight: crate::rpc::InFlight::default(),
        }
    }

    fn activity(&self) -> std::sync::MutexGuard<'_, HashMap<Ref, Activity>> {
        self.activity.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The session `r` if it is live, marking it used; `SESSION_INVALID [r]` otherwise.
    pub fn check_session(&self, r: &str) -> Result<Ref, ApiError> {
        let mut activity = self.activity();
        match activity.get_mut(r) {
            Some(a) => {
                a.last = Instant::now();
                Ok(activity.get_key_value(r).map(|(k, _)| k.clone()).expect("just found"))
            }
            None => Err(ApiError::session_invalid(r)),
        }
    }

    /// This host's UUID (the owner of its libvirt domains).
    pub fn host_uuid(&self) -> String {
        let host = model::class("host").expect("host class");
        let (ui, _) = host.field("uuid").expect("host.uuid");
        self.store
            .get(host, &self.host)
            .ok()
            .and_then(|r| r.fields[ui].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// Tells waiting calls that the daemon is stopping.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Resolves once the daemon is stopping.
    pub async fn stopped(&self) {
        let mut rx = self.stopping.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// `SESSION_INVALID [r]` unless the session is live; does not count as use.
    pub fn check_session_alive(&self, r: &str) -> Result<(), ApiError> {
        if self.activity().contains_key(r) { Ok(()) } else { Err(ApiError::session_invalid(r)) }
    }

    /// Whether `client` may have one more session: `Ok` with the sessions to end first (the least recently used
    /// of that client's own, past `Settings::sessions_per_client`, as xapi does per originator), or `Err` with
    /// how many the client's user holds when that is `Settings::sessions_per_user` already (the login is refused:
    /// other clients' sessions are never ended for it).
    pub fn admit_session(&self, client: &Client) -> Result<Vec<Ref>, usize> {
        let activity = self.activity();
        let mut mine: Vec<(Instant, Ref)> =
            activity.iter().filter(|(_, a)| &a.client == client).map(|(k, a)| (a.last, k.clone())).collect();
        let over = (mine.len() + 1).saturating_sub(self.settings.sessions_per_client.max(1));
        mine.sort();
        let evict: Vec<Ref> = mine.into_iter().take(over).map(|(_, k)| k).collect();
        let users = activity.values().filter(|a| a.client.user == client.user).count();
        if users - evict.len() >= self.settings.sessions_per_user.max(1) {
            return Err(users);
        }
        Ok(evict)
    }

    pub fn session_started(&self, r: Ref, client: Client) {
        self.activity().insert(r, Activity { last: Instant::now(), client });
    }

    pub fn session_ended(&self, r: &str) {
        self.activity().remove(r);
        self.registrations.forget(r);
    }

    /// Sessions idle for longer than the timeout.
    pub fn idle_sessions(&self) -> Vec<Ref> {
        let timeout = self.settings.session_idle_timeout;
        self.activity().iter().filter(|(_, a)| a.last.elapsed() > timeout).map(|(r, _)| r.clone()).collect()
    }
}
