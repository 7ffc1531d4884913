//! `event`: clients that never poll. `event.from` answers every change since a token, blocking until there is one
//! or the timeout passes; the legacy `register` / `next` / `unregister` do the same per session.
//!
//! Changes come from the store's generations (`db::Store::changes_since`): every row knows when it was created and
//! last changed, and deletions are kept as tombstones, so a client holding any token gets every deletion since it —
//! or, if the tombstones it needs were pruned (a documented retention), `EVENTS_LOST`, never a silent gap. Several
//! changes to one object since a token are one event with its latest record. There is no batching floor: a call
//! answers as soon as a matching change is committed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use xapi_types::Value;
use xapi_types::generated::errors as codes;
use xapi_types::model::{self, Class};

use crate::db::{Changed, DbError, Ref};
use crate::error::ApiError;
use crate::state::State;

/// The longest an `event.from` call blocks, whatever timeout it asks for (xapi: an unrepresentable timeout is 24 h).
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// What a client subscribed to: a whole class, or one object of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sub {
    pub class: &'static Class,
    pub only: Option<String>,
}

/// Parses subscriptions: `*`, a class name in any case, or `class/OpaqueRef:…`.
/// `*` covers every stored class except `session`, whose refs are credentials.
pub fn parse_subs(classes: &[Value]) -> Result<Vec<Sub>, ApiError> {
    let mut subs = Vec::new();
    for c in classes {
        let s = c.as_str().unwrap_or_default();
        let fail = || ApiError::new(&codes::EVENT_SUBSCRIPTION_PARSE_FAILURE, [s]);
        if s == "*" {
            for class in model::classes().iter().filter(|c| c.persistent && c.name != "session") {
                subs.push(Sub { class, only: None });
            }
            continue;
        }
        let (name, only) = match s.split_once('/') {
            Some((name, r)) if !r.is_empty() => (name, Some(r.to_string())),
            Some(_) => return Err(fail()),
            None => (s, None),
        };
        let class = model::class_ci(name).filter(|c| c.persistent).ok_or_else(fail)?;
        subs.push(Sub { class, only });
    }
    Ok(subs)
}

/// `"%020d,%020d"` of the generation and the message generation (messages are not separate here: always 0).
pub fn token_of(generation: i64) -> String {
    format!("{generation:020},{:020}", 0)
}

/// `""` is the beginning; otherwise a token this server gave (xapi's form, or a bare generation).
pub fn parse_token(token: &str) -> Result<i64, ApiError> {
    if token.is_empty() {
        return Ok(0);
    }
    let first = token.split(',').next().unwrap_or_default();
    first
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|g| *g >= 0 && token.split(',').count() <= 2)
        .ok_or_else(|| ApiError::new(&codes::EVENT_FROM_TOKEN_PARSE_FAILURE, [token]))
}

fn timeout_of(seconds: f64) -> Duration {
    if seconds.is_nan() || seconds <= 0.0 {
        Duration::ZERO
    } else {
        Duration::try_from_secs_f64(seconds).unwrap_or(MAX_TIMEOUT).min(MAX_TIMEOUT)
    }
}

/// The changes matching `subs` since `since`, and the generation they are complete up to.
fn matching(state: &State, subs: &[Sub], since: i64) -> Result<(Vec<Changed>, i64), ApiError> {
    let mut classes: Vec<&'static Class> = subs.iter().map(|s| s.class).collect();
    classes.dedup_by(|a, b| std::ptr::eq(*a, *b));
    let (mut changes, generation) = state.store.changes_since(since, &classes).map_err(|e| match e {
        DbError::EventsLost { since, kept_from } => {
            tracing::info!(since, kept_from, "an event client asked for pruned deletions");
            ApiError::new(&codes::EVENTS_LOST, std::iter::empty::<String>())
        }
        other => other.into(),
    })?;
    changes.retain(|c| {
        subs.iter().any(|s| std::ptr::eq(s.class, c.class) && s.only.as_deref().is_none_or(|r| r == c.r#ref.as_ref()))
    });
    Ok((changes, generation))
}

/// Watching more classes than this watches the whole store instead of each class.
const MAX_CLASS_WATCHES: usize = 8;

/// Waits until a subscribed class changes after `generation`, the session dies, or `deadline` (or the daemon
/// stops); `false` at the deadline. A watcher of a few classes is woken only by changes to those (and to
/// sessions, to notice its own end).
async fn wait(
    state: &State,
    session: &Ref,
    subs: &[Sub],
    generation: i64,
    deadline: Instant,
) -> Result<bool, ApiError> {
    let mut classes: Vec<&'static Class> = subs.iter().map(|s| s.class).collect();
    classes.push(model::class("session").expect("session class"));
    classes.sort_by_key(|c| c.name);
    classes.dedup_by(|a, b| std::ptr::eq(*a, *b));
    let mut rxs: Vec<tokio::sync::watch::Receiver<i64>> = if classes.len() > MAX_CLASS_WATCHES {
        vec![state.store.subscribe()]
    } else {
        classes.iter().map(|c| state.store.subscribe_class(c)).collect()
    };
    let timeout = tokio::time::sleep_until(deadline.into());
    tokio::pin!(timeout);
    loop {
        state.check_session_alive(session)?;
        if rxs.iter_mut().any(|rx| *rx.borrow_and_update() > generation) {
            return Ok(true);
        }
        let any_changed = futures_util::future::select_all(rxs.iter_mut().map(|rx| Box::pin(rx.changed())));
        tokio::select! {
            (changed, _, _) = any_changed => {
                if changed.is_err() {
                    return Ok(false);
                }
            }
            _ = &mut timeout => return Ok(false),
            _ = state.stopped() => return Ok(false),
        }
    }
}

/// What `event.from` answers.
#[derive(Debug)]
pub struct Batch {
    pub events: Vec<Changed>,
    /// Objects per stored class (lower-case names), for every class.
    pub valid_ref_counts: Vec<(&'static str, i32)>,
    pub token: String,
}

/// `event.from(classes, token, timeout)`.
pub async fn from(
    state: &State,
    session: &Ref,
    classes: &[Value],
    token: &str,
    timeout: f64,
) -> Result<Batch, ApiError> {
    let subs = parse_subs(classes)?;
    let mut since = parse_token(token)?;
    let deadline = Instant::now() + timeout_of(timeout);
    loop {
        state.check_session_alive(session)?;
        let (events, generation) = matching(state, &subs, since)?;
        if !events.is_empty() || Instant::now() >= deadline {
            return Ok(batch(state, events, generation));
        }
        // Nothing matched up to `generation`: look only at later changes next time round.
        since = generation;
        if !wait(state, session, &subs, generation, deadline).await? {
            let (events, generation) = matching(state, &subs, since)?;
            return Ok(batch(state, events, generation));
        }
    }
}

/// Every class's name in lower case, as events spell it.
static LOWER_NAMES: std::sync::LazyLock<HashMap<&'static str, String>> =
    std::sync::LazyLock::new(|| model::classes().iter().map(|c| (c.name, c.name.to_lowercase())).collect());

/// A class's name as events spell it.
pub fn lower_name(class: &Class) -> &'static str {
    LOWER_NAMES.get(class.name).map(String::as_str).unwrap_or_default()
}

fn batch(state: &State, events: Vec<Changed>, generation: i64) -> Batch {
    let valid_ref_counts = state
        .store
        .counts()
        .into_iter()
        .map(|(c, n)| {
            (LOWER_NAMES.get(c).map(String::as_str).unwrap_or_default(), i32::try_from(n).unwrap_or(i32::MAX))
        })
        .collect();
    Batch { events, valid_ref_counts, token: token_of(generation) }
}

/// Sessions registered for the legacy `event.next`: their subscriptions and how far they have read.
#[derive(Default)]
pub struct Registrations(Mutex<HashMap<Ref, (Vec<Sub>, i64)>>);

impl Registrations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Ref, (Vec<Sub>, i64)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `event.register(classes)`: adds subscriptions; events are delivered from now on.
    pub fn register(&self, state: &State, session: &Ref, classes: &[Value]) -> Result<(), ApiError> {
        let subs = parse_subs(classes)?;
        let now = state.store.generation();
        let mut regs = self.lock();
        let entry = regs.entry(session.clone()).or_insert_with(|| (Vec::new(), now));
        for s in subs {
            if !entry.0.contains(&s) {
                entry.0.push(s);
            }
        }
        Ok(())
    }

    /// `event.unregister(classes)`: removes subscriptions (all of them when the last goes).
    pub fn unregister(&self, session: &Ref, classes: &[Value]) -> Result<(), ApiError> {
        let subs = parse_subs(classes)?;
        let mut regs = self.lock();
        if let Some(entry) = regs.get_mut(session) {
            entry.0.retain(|s| !subs.contains(s));
            if entry.0.is_empty() {
                regs.remove(session);
            }
        }
        Ok(())
    }

    pub fn forget(&self, session: &str) {
        self.lock().remove(session);
    }

    fn get(&self, session: &Ref) -> Result<(Vec<Sub>, i64), ApiError> {
        self.lock()
            .get(session)
            .cloned()
            .ok_or_else(|| ApiError::new(&codes::SESSION_NOT_REGISTERED, [session.to_string()]))
    }

    /// `event.next()`: blocks until a registered class changes, then answers those events and moves on.
    pub async fn next(&self, state: &State, session: &Ref) -> Result<Vec<Changed>, ApiError> {
        loop {
            let (subs, since) = self.get(session)?;
            let (events, generation) = matching(state, &subs, since)?;
            if !events.is_empty() {
                if let Some(entry) = self.lock().get_mut(session) {
                    entry.1 = generation;
                }
                return Ok(events);
            }
            if !wait(state, session, &subs, generation, Instant::now() + MAX_TIMEOUT).await? {
                return Ok(Vec::new()); // the daemon is stopping (or a day passed): the client asks again
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert_eq!(token_of(42), "00000000000000000042,00000000000000000000");
        assert_eq!(parse_token(""), Ok(0));
        assert_eq!(parse_token("00000000000000000042,00000000000000000000"), Ok(42));
        assert_eq!(parse_token("42"), Ok(42));
        for bad in ["x", "-1,0", "1,2,3", ","] {
            assert_eq!(parse_token(bad), Err(ApiError::new(&codes::EVENT_FROM_TOKEN_PARSE_FAILURE, [bad])), "{bad}");
        }
        assert!(token_of(9) < token_of(10), "tokens compare as strings");
    }

    #[test]
    fn subscriptions() {
        let all = parse_subs(&[Value::str("*")]).unwrap();
        assert!(all.iter().any(|s| s.class.name == "VM") && !all.iter().any(|s| s.class.name == "session"));
        let vm = parse_subs(&[Value::str("vm")]).unwrap();
        assert_eq!(vm, vec![Sub { class: model::class("VM").unwrap(), only: None }]);
        let one = parse_subs(&[Value::str("VM/OpaqueRef:abc")]).unwrap();
        assert_eq!(one[0].only.as_deref(), Some("OpaqueRef:abc"));
        for bad in ["nope", "vm/", "event", ""] {
            assert_eq!(
                parse_subs(&[Value::str(bad)]),
                Err(ApiError::new(&codes::EVENT_SUBSCRIPTION_PARSE_FAILURE, [bad])),
                "{bad}"
            );
        }
    }

    #[test]
    fn timeouts() {
        assert_eq!(timeout_of(0.05), Duration::from_millis(50));
        assert_eq!(timeout_of(-1.0), Duration::ZERO);
        assert_eq!(timeout_of(f64::NAN), Duration::ZERO);
        assert_eq!(timeout_of(1e300), MAX_TIMEOUT);
    }
}
