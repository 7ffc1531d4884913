//! Replies into bytes: records, event batches and legacy event records, written through a wire [`Sink`].
//!
//! Records are written straight from stored rows. An event's snapshot is encoded once per row and protocol and
//! shared by every watcher it goes to ([`SnapshotCache`]): with a hundred watchers of a class, one change costs one
//! encoding, not a hundred.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use xapi_types::Class;
use xapi_types::wire::Sink;

use crate::db::{Changed, Op, Row};
use crate::dispatch::Reply;

pub fn emit_record<S: Sink + ?Sized>(class: &Class, row: &Row, sink: &mut S) {
    sink.begin_struct();
    for (f, v) in class.fields.iter().zip(&row.fields) {
        sink.key(f.name);
        v.emit(sink);
    }
    sink.end_struct();
}

/// Encoded snapshots of recently delivered rows, per protocol, within a byte budget; the oldest go first. Entries
/// hold a weak reference to their row: that keeps the row's address from being reused while it is a key, without
/// keeping a superseded row's fields alive.
pub struct SnapshotCache {
    budget: usize,
    inner: Mutex<CacheInner>,
}

/// A row's address and the encoding's name.
type CacheKey = (usize, &'static str);

#[derive(Default)]
struct CacheInner {
    bytes: usize,
    /// The encoded bytes, and the row they encode.
    map: HashMap<CacheKey, (Weak<Row>, Arc<[u8]>)>,
    order: VecDeque<CacheKey>,
}

/// The daemon's snapshot cache: 4 MiB, enough for the rows changed while every watcher catches up.
pub static SNAPSHOTS: LazyLock<SnapshotCache> = LazyLock::new(|| SnapshotCache::new(4 << 20));

impl SnapshotCache {
    pub fn new(budget: usize) -> SnapshotCache {
        SnapshotCache { budget, inner: Mutex::new(CacheInner::default()) }
    }

    /// The record `row` of `class` as a sink like `sink` encodes it, from the cache or encoded now.
    fn get<S: Sink + Default + AsMut<Vec<u8>>>(&self, class: &Class, row: &Arc<Row>, sink: &S) -> Arc<[u8]> {
        let key = (Arc::as_ptr(row) as usize, sink.encoding());
        if let Some((_, bytes)) = self.lock().map.get(&key) {
            return bytes.clone();
        }
        let mut fresh = S::default();
        emit_record(class, row, &mut fresh);
        let bytes: Arc<[u8]> = std::mem::take(fresh.as_mut()).into();
        let mut inner = self.lock();
        if bytes.len() <= self.budget && !inner.map.contains_key(&key) {
            inner.bytes += bytes.len();
            inner.map.insert(key, (Arc::downgrade(row), bytes.clone()));
            inner.order.push_back(key);
            while inner.bytes > self.budget {
                let Some(old) = inner.order.pop_front() else { break };
                if let Some((_, b)) = inner.map.remove(&old) {
                    inner.bytes -= b.len();
                }
            }
        }
        bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The members of an event record that say what happened: `class` (lower case), `operation`, `ref`.
fn emit_what<S: Sink + ?Sized>(e: &Changed, sink: &mut S) {
    sink.key("class");
    sink.str(crate::events::lower_name(e.class));
    sink.key("operation");
    sink.str(e.op.name());
    sink.key("ref");
    sink.str(&e.r#ref);
}

/// Emits one event of `event.from`: `{id, timestamp, class, operation, ref, snapshot}` (no snapshot on `del`).
fn emit_event<S: Sink + Default + AsMut<Vec<u8>>>(e: &Changed, sink: &mut S) {
    sink.begin_struct();
    sink.key("id");
    sink.str(&e.generation.to_string());
    sink.key("timestamp");
    sink.str("0.0");
    emit_what(e, sink);
    if let (Some(row), false) = (&e.row, e.op == Op::Del) {
        sink.key("snapshot");
        sink.raw_value(&SNAPSHOTS.get(e.class, row, sink));
    }
    sink.end_struct();
}

/// Emits one legacy event record (`event.next`): the datamodel's event fields.
fn emit_legacy_event<S: Sink + Default + AsMut<Vec<u8>>>(e: &Changed, sink: &mut S) {
    let uuid = e
        .row
        .as_ref()
        .and_then(|row| e.class.field("uuid").and_then(|(i, _)| row.fields[i].as_str().map(String::from)))
        .unwrap_or_default();
    sink.begin_struct();
    sink.key("id");
    sink.int(e.generation);
    sink.key("timestamp");
    sink.str(&format!(
        "{:.6}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64()
    ));
    emit_what(e, sink);
    sink.key("obj_uuid");
    sink.str(&uuid);
    if let Some(row) = &e.row {
        sink.key("snapshot");
        sink.raw_value(&SNAPSHOTS.get(e.class, row, sink));
    }
    sink.end_struct();
}

/// How many items a reply's value is made of: the records of `get_all_records`, the events of a batch. A large
/// answer is written item by item ([`begin`], [`item`] for each, [`end`]), so that it can be streamed.
pub fn items(reply: &Reply) -> usize {
    match reply {
        Reply::Records(_, rows) => rows.len(),
        Reply::Events(batch) => batch.events.len(),
        Reply::LegacyEvents(events) => events.len(),
        Reply::Value(_) | Reply::Bare(_) | Reply::Record(..) => 0,
    }
}

/// Writes what comes before a reply's items (for a reply without items: all of it).
pub fn begin<S: Sink + Default + AsMut<Vec<u8>>>(reply: &Reply, sink: &mut S) {
    match reply {
        Reply::Value(v) | Reply::Bare(v) => v.emit(sink),
        Reply::Record(class, row) => emit_record(class, row, sink),
        Reply::Records(..) => sink.begin_struct(),
        Reply::Events(_) => {
            sink.begin_struct();
            sink.key("events");
            sink.begin_array();
        }
        Reply::LegacyEvents(_) => sink.begin_array(),
    }
}

/// Writes item `i` of a reply (see [`items`]).
pub fn item<S: Sink + Default + AsMut<Vec<u8>>>(reply: &Reply, i: usize, sink: &mut S) {
    match reply {
        Reply::Records(class, rows) => {
            let (r, row) = &rows[i];
            sink.key(r);
            emit_record(class, row, sink);
        }
        Reply::Events(batch) => emit_event(&batch.events[i], sink),
        Reply::LegacyEvents(events) => emit_legacy_event(&events[i], sink),
        Reply::Value(_) | Reply::Bare(_) | Reply::Record(..) => {}
    }
}

/// Writes what comes after a reply's items.
pub fn end<S: Sink + Default + AsMut<Vec<u8>>>(reply: &Reply, sink: &mut S) {
    match reply {
        Reply::Records(..) => sink.end_struct(),
        Reply::Events(batch) => {
            sink.end_array();
            sink.key("valid_ref_counts");
            sink.begin_struct();
            for (class, n) in &batch.valid_ref_counts {
                sink.key(class);
                sink.i32(*n);
            }
            sink.end_struct();
            sink.key("token");
            sink.str(&batch.token);
            sink.end_struct();
        }
        Reply::LegacyEvents(_) => sink.end_array(),
        Reply::Value(_) | Reply::Bare(_) | Reply::Record(..) => {}
    }
}

/// Emits a whole reply's value in one go.
pub fn emit_value<S: Sink + Default + AsMut<Vec<u8>>>(reply: &Reply, sink: &mut S) {
    begin(reply, sink);
    for i in 0..items(reply) {
        item(reply, i, sink);
    }
    end(reply, sink);
}

#[cfg(test)]
mod tests {
    use xapi_types::model;
    use xapi_types::wire::{jsonrpc::JsonSink, xmlrpc::XmlSink};

    use super::*;

    #[test]
    fn cached_snapshots_are_the_records_and_keep_no_row_alive() {
        let vm = model::class("VM").unwrap();
        let cache = SnapshotCache::new(64 << 10);
        let rows: Vec<Arc<Row>> = (0..20)
            .map(|i| {
                let mut fields = crate::db::default_row(vm);
                fields[0] = xapi_types::Value::Str(format!("uuid-{i}"));
                Arc::new(Row { created: 1, modified: 1, fields })
            })
            .collect();
        for row in &rows {
            let mut fresh = XmlSink::new();
            emit_record(vm, row, &mut fresh);
            assert_eq!(&*cache.get(vm, row, &XmlSink::new()), &fresh.out[..]);
            assert_eq!(&*cache.get(vm, row, &XmlSink::new()), &fresh.out[..], "from the cache");
            let mut fresh = JsonSink::new();
            emit_record(vm, row, &mut fresh);
            assert_eq!(&*cache.get(vm, row, &JsonSink::new()), &fresh.out[..]);
            assert_eq!(Arc::strong_count(row), 1, "the cache holds no strong reference");
        }
        let inner = cache.lock();
        assert!(inner.bytes <= 64 << 10 && inner.map.len() < 40, "the budget evicts the oldest");
        assert_eq!(inner.map.len(), inner.order.len());
    }
}
