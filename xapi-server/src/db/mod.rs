//! The object store: every XenAPI object, in memory for reading and in SQLite for keeping.
//!
//! **A write is on disk before anyone can see it.** A [`Store::transaction`] collects its changes, commits them to
//! SQLite (WAL, `synchronous=FULL`), and only then publishes them to the in-memory tables that readers use, under
//! a new *generation* number. A failed commit leaves memory untouched. Every row carries the generation of its
//! creation and of its last change, and every deletion leaves a tombstone with its generation, so "what changed
//! since generation N" is a range query (the events issue builds `event.from` on it).
//!
//! Rows are `Arc`s: a reader takes a consistent snapshot of many rows without copying them.

mod columns;
mod migrations;
mod relations;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};

use rusqlite::{Connection, OptionalExtension, params_from_iter};
use xapi_types::model::{self, Class};
use xapi_types::{Value, generated};

/// An object reference, `OpaqueRef:<uuid>`.
pub type Ref = Arc<str>;

/// One stored object: its field values in datamodel order.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Generation of the transaction that created the object.
    pub created: i64,
    /// Generation of the transaction that last changed it.
    pub modified: i64,
    pub fields: Vec<Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{class} {handle} does not exist")]
    HandleInvalid { class: &'static str, handle: String },
    #[error("no {class} has uuid {uuid}")]
    UuidInvalid { class: &'static str, uuid: String },
    #[error("a {class} with uuid {uuid} already exists")]
    UuidExists { class: &'static str, uuid: String },
    #[error("class {0} is not stored")]
    NotPersistent(&'static str),
    #[error("the database is inconsistent: {0}")]
    Corrupt(String),
    #[error("the deletions since generation {since} are no longer kept (kept from {kept_from} on)")]
    EventsLost { since: i64, kept_from: i64 },
    #[error("SQLite failed")]
    Sqlite(#[from] rusqlite::Error),
}

/// A deletion, kept so that event clients holding an old generation still learn of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Tombstone {
    pub generation: i64,
    pub class: &'static str,
    pub r#ref: Ref,
    pub uuid: String,
}

#[derive(Default)]
struct Table {
    rows: BTreeMap<Ref, Arc<Row>>,
    by_uuid: HashMap<String, Ref>,
    /// `(row.modified, ref)` of every row: "what changed since N" is a range.
    by_modified: BTreeSet<(i64, Ref)>,
}

struct Mem {
    generation: i64,
    /// Indexed like `model::classes()`; non-persistent classes have empty tables.
    tables: Vec<Table>,
    /// Deletions, oldest first, as kept on disk.
    tombstones: VecDeque<Tombstone>,
    /// Deletions at or before this generation have been pruned: a client asking for changes since an earlier
    /// generation would miss some, and is told so (`EVENTS_LOST`) instead.
    pruned_through: i64,
}

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Mod,
    Del,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Add => "add",
            Op::Mod => "mod",
            Op::Del => "del",
        }
    }
}

/// One object changed since a generation: its latest state (`row`, `None` once deleted).
#[derive(Debug, Clone)]
pub struct Changed {
    pub generation: i64,
    pub class: &'static Class,
    pub r#ref: Ref,
    pub op: Op,
    pub row: Option<Arc<Row>>,
}

/// The smallest ref, to start ranges of `(generation, ref)` at a generation.
static EMPTY_REF: std::sync::LazyLock<Ref> = std::sync::LazyLock::new(|| Ref::from(""));

/// How many deletions are kept for event clients, unless configured otherwise.
pub const DEFAULT_TOMBSTONE_LIMIT: usize = 100_000;

pub struct Store {
    mem: RwLock<Mem>,
    sql: Mutex<Connection>,
    /// The current generation, for watchers (`event.from`).
    changed: tokio::sync::watch::Sender<i64>,
    /// Per class (indexed like `model::classes()`): the generation of its last change, so that a watcher of a few
    /// classes wakes only for those.
    class_changed: Vec<tokio::sync::watch::Sender<i64>>,
    /// Deletions kept beyond this count are pruned, oldest first.
    tombstone_limit: AtomicUsize,
}

fn class_index(class: &Class) -> usize {
    model::classes().iter().position(|c| std::ptr::eq(*c, class)).expect("a class from the generated model")
}

fn uuid_index(class: &Class) -> usize {
    class.field("uuid").map(|(i, _)| i).expect("persistent classes have a uuid")
}

fn quote(name: &str) -> String {
    format!("\"{name}\"")
}

impl Store {
    /// Opens (creating if needed) the database at `path`, applies pending migrations, checks that every table has
    /// the datamodel's columns, and loads every object.
    pub fn open(path: &Path) -> Result<Store, DbError> {
        let conn = Connection::open(path)?;
        Self::with_connection(conn)
    }

    /// A store in memory only, for tests.
    pub fn open_in_memory() -> Result<Store, DbError> {
        Self::with_connection(Connection::open_in_memory()?)
    }

    fn with_connection(mut conn: Connection) -> Result<Store, DbError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "OFF")?;
        migrations::apply(&mut conn)?;
        check_schema(&conn)?;
        let mem = load(&conn)?;
        let (changed, _) = tokio::sync::watch::channel(mem.generation);
        Ok(Store {
            mem: RwLock::new(mem),
            sql: Mutex::new(conn),
            changed,
            class_changed: model::classes().iter().map(|_| tokio::sync::watch::Sender::new(0)).collect(),
            tombstone_limit: AtomicUsize::new(DEFAULT_TOMBSTONE_LIMIT),
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, Mem> {
        self.mem.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn generation(&self) -> i64 {
        self.read().generation
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<i64> {
        self.changed.subscribe()
    }

    /// The generation of the last change to `class`, as it moves.
    pub fn subscribe_class(&self, class: &'static Class) -> tokio::sync::watch::Receiver<i64> {
        self.class_changed[class_index(class)].subscribe()
    }

    pub fn get(&self, class: &'static Class, r: &str) -> Result<Arc<Row>, DbError> {
        self.read().tables[class_index(class)]
            .rows
            .get(r)
            .cloned()
            .ok_or_else(|| DbError::HandleInvalid { class: class.name, handle: r.to_string() })
    }

    pub fn exists(&self, class: &'static Class, r: &str) -> bool {
        self.read().tables[class_index(class)].rows.contains_key(r)
    }

    pub fn by_uuid(&self, class: &'static Class, uuid: &str) -> Result<Ref, DbError> {
        self.read().tables[class_index(class)]
            .by_uuid
            .get(uuid)
            .cloned()
            .ok_or_else(|| DbError::UuidInvalid { class: class.name, uuid: uuid.to_string() })
    }

    /// Every object of a class, in ref order: a snapshot that later writes do not disturb.
    pub fn all(&self, class: &'static Class) -> Vec<(Ref, Arc<Row>)> {
        self.read().tables[class_index(class)].rows.iter().map(|(r, row)| (r.clone(), row.clone())).collect()
    }

    /// The objects of a class for which `keep` holds.
    pub fn filter(&self, class: &'static Class, mut keep: impl FnMut(&Row) -> bool) -> Vec<(Ref, Arc<Row>)> {
        self.read().tables[class_index(class)]
            .rows
            .iter()
            .filter(|(_, row)| keep(row))
            .map(|(r, row)| (r.clone(), row.clone()))
            .collect()
    }

    /// Number of objects in every persistent class.
    pub fn counts(&self) -> Vec<(&'static str, usize)> {
        let mem = self.read();
        model::classes()
            .iter()
            .zip(&mem.tables)
            .filter(|(c, _)| c.persistent)
            .map(|(c, t)| (c.name, t.rows.len()))
            .collect()
    }

    /// Keep at most `limit` deletions for event clients (the oldest are pruned at the next commit).
    pub fn set_tombstone_limit(&self, limit: usize) {
        self.tombstone_limit.store(limit, Ordering::Relaxed);
    }

    /// Every object of `classes` created, changed or deleted after generation `since`, once each with its latest
    /// state, in the order of their last change; and the generation this answer is complete up to. Fails with
    /// [`DbError::EventsLost`] if deletions after `since` have been pruned. Since 0 (a client that knows nothing
    /// yet) the answer is every object as an addition, without deletions of objects it never saw.
    pub fn changes_since(&self, since: i64, classes: &[&'static Class]) -> Result<(Vec<Changed>, i64), DbError> {
        let mem = self.read();
        if since > 0 && since < mem.pruned_through {
            return Err(DbError::EventsLost { since, kept_from: mem.pruned_through + 1 });
        }
        let mut out = Vec::new();
        for class in classes {
            let table = &mem.tables[class_index(class)];
            for (_, r) in table.by_modified.range((since + 1, EMPTY_REF.clone())..) {
                let row = table.rows[r].clone();
                let op = if row.created > since { Op::Add } else { Op::Mod };
                out.push(Changed { generation: row.modified, class, r#ref: r.clone(), op, row: Some(row) });
            }
        }
        let first =
            if since == 0 { mem.tombstones.len() } else { mem.tombstones.partition_point(|t| t.generation <= since) };
        for t in mem.tombstones.range(first..) {
            if let Some(class) = classes.iter().find(|c| c.name == t.class) {
                out.push(Changed { generation: t.generation, class, r#ref: t.r#ref.clone(), op: Op::Del, row: None });
            }
        }
        out.sort_by_key(|c| c.generation);
        Ok((out, mem.generation))
    }

    /// The password hash of a local user.
    pub fn password_hash(&self, user: &str) -> Result<Option<String>, DbError> {
        let conn = self.lock_sql();
        Ok(conn
            .query_row("SELECT password_hash FROM \"_local_user\" WHERE name = ?1", [user], |r| r.get(0))
            .optional()?)
    }

    pub fn set_password_hash(&self, user: &str, hash: &str) -> Result<(), DbError> {
        let conn = self.lock_sql();
        conn.execute(
            "INSERT INTO \"_local_user\"(name, password_hash) VALUES (?1, ?2) \
             ON CONFLICT(name) DO UPDATE SET password_hash = excluded.password_hash",
            [user, hash],
        )?;
        Ok(())
    }

    fn lock_sql(&self) -> MutexGuard<'_, Connection> {
        self.sql.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` as one transaction: all its changes are committed to disk and published together, or (if `f` or
    /// the commit fails) none are. Transactions run one at a time.
    pub fn transaction<T, E>(&self, f: impl FnOnce(&mut Txn<'_>) -> Result<T, E>) -> Result<T, E>
    where
        E: From<DbError>,
    {
        let mut conn = self.lock_sql();
        let mut txn = Txn { store: self, changes: BTreeMap::new() };
        let out = f(&mut txn)?;
        txn.maintain_relations()?;
        if txn.changes.is_empty() {
            return Ok(out);
        }
        let changes = txn.changes;
        let generation = self.generation() + 1;
        let prune_through = self.prune_point(changes.values().filter(|c| matches!(c, Change::Delete)).count());
        let (published, tombstones) = commit(&mut conn, generation, &changes, self, prune_through)?;
        let mut touched: Vec<usize> = published.iter().map(|((ci, _), _)| *ci).collect();
        touched.dedup();
        {
            let mut mem = self.mem.write().unwrap_or_else(|e| e.into_inner());
            for ((ci, r), row) in published {
                let table = &mut mem.tables[ci];
                let class = model::classes()[ci];
                let ui = uuid_index(class);
                if let Some(old) = table.rows.remove(&r) {
                    table.by_modified.remove(&(old.modified, r.clone()));
                    if let Value::Str(u) = &old.fields[ui] {
                        table.by_uuid.remove(u);
                    }
                }
                if let Some(row) = row {
                    if let Value::Str(u) = &row.fields[ui] {
                        table.by_uuid.insert(u.clone(), r.clone());
                    }
                    table.by_modified.insert((row.modified, r.clone()));
                    table.rows.insert(r, row);
                }
            }
            mem.tombstones.extend(tombstones);
            if let Some(through) = prune_through {
                while mem.tombstones.front().is_some_and(|t| t.generation <= through) {
                    mem.tombstones.pop_front();
                }
                mem.pruned_through = through;
            }
            mem.generation = generation;
        }
        for ci in touched {
            self.class_changed[ci].send_replace(generation);
        }
        self.changed.send_replace(generation);
        Ok(out)
    }
}

impl Store {
    /// The generation through which deletions must be pruned so that, with `adding` more, at most the limit are
    /// kept; `None` if nothing needs pruning. Whole generations are pruned, so the answer may keep fewer.
    fn prune_point(&self, adding: usize) -> Option<i64> {
        let limit = self.tombstone_limit.load(Ordering::Relaxed);
        let mem = self.read();
        let excess = (mem.tombstones.len() + adding).checked_sub(limit).filter(|e| *e > 0)?;
        match mem.tombstones.get(excess - 1) {
            Some(t) => Some(t.generation),
            // All kept ones go, and some of this transaction's too: prune through this generation.
            None => Some(mem.generation + 1),
        }
    }
}

/// Rows to publish after a commit (`None`: deleted).
type Published = Vec<((usize, Ref), Option<Arc<Row>>)>;

/// Writes the changes of one transaction; answers the rows to publish and the deletions' tombstones.
fn commit(
    conn: &mut Connection,
    generation: i64,
    changes: &BTreeMap<(usize, Ref), Change>,
    store: &Store,
    prune_through: Option<i64>,
) -> Result<(Published, Vec<Tombstone>), DbError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut published = Vec::with_capacity(changes.len());
    let mut tombstones = Vec::new();
    for ((ci, r), change) in changes {
        let class = model::classes()[*ci];
        let table = quote(class.name);
        match change {
            Change::Put { created, fields } => {
                let created = created.unwrap_or(generation);
                let cols: Vec<String> = class.fields.iter().map(|f| quote(f.name)).collect();
                let sql = format!(
                    "INSERT OR REPLACE INTO {table} (\"_ref\", \"_created\", \"_gen\", {}) VALUES (?1, ?2, ?3, {})",
                    cols.join(", "),
                    (4..4 + cols.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")
                );
                let mut values = vec![
                    rusqlite::types::Value::Text(r.to_string()),
                    rusqlite::types::Value::Integer(created),
                    rusqlite::types::Value::Integer(generation),
                ];
                values.extend(class.fields.iter().zip(fields).map(|(f, v)| columns::to_sql(&f.ty, v)));
                tx.prepare_cached(&sql)?.execute(params_from_iter(values))?;
                let row = Row { created, modified: generation, fields: fields.clone() };
                published.push(((*ci, r.clone()), Some(Arc::new(row))));
            }
            Change::Delete => {
                let uuid = match store.get(class, r) {
                    Ok(row) => row.fields[uuid_index(class)].as_str().unwrap_or_default().to_string(),
                    Err(_) => continue, // created and deleted within this transaction: nothing on disk
                };
                tx.prepare_cached(&format!("DELETE FROM {table} WHERE \"_ref\" = ?1"))?.execute([r.as_ref()])?;
                tx.prepare_cached("INSERT INTO \"_tombstone\"(generation, class, ref, uuid) VALUES (?1, ?2, ?3, ?4)")?
                    .execute(rusqlite::params![generation, class.name, r.as_ref(), uuid])?;
                published.push(((*ci, r.clone()), None));
                tombstones.push(Tombstone { generation, class: class.name, r#ref: r.clone(), uuid });
            }
        }
    }
    tx.execute(
        "INSERT INTO \"_meta\"(key, value) VALUES ('generation', ?1) \
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [generation.to_string()],
    )?;
    if let Some(through) = prune_through {
        tx.prepare_cached("DELETE FROM \"_tombstone\" WHERE generation <= ?1")?.execute([through])?;
        tx.execute(
            "INSERT INTO \"_meta\"(key, value) VALUES ('tombstones_pruned_through', ?1) \
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [through.to_string()],
        )?;
    }
    tx.commit()?;
    if let Some(through) = prune_through {
        tombstones.retain(|t| t.generation > through);
    }
    Ok((published, tombstones))
}

enum Change {
    /// The whole new row; `created` is `None` for an object created in this transaction.
    Put {
        created: Option<i64>,
        fields: Vec<Value>,
    },
    Delete,
}

/// The changes of one transaction, readable before they are committed.
pub struct Txn<'s> {
    store: &'s Store,
    changes: BTreeMap<(usize, Ref), Change>,
}

impl Txn<'_> {
    /// The object as this transaction sees it.
    pub fn get(&self, class: &'static Class, r: &str) -> Result<Vec<Value>, DbError> {
        let ci = class_index(class);
        match self.changes.get(&(ci, Ref::from(r))) {
            Some(Change::Put { fields, .. }) => Ok(fields.clone()),
            Some(Change::Delete) => Err(DbError::HandleInvalid { class: class.name, handle: r.into() }),
            None => Ok(self.store.get(class, r)?.fields.clone()),
        }
    }

    /// Adds a new object. Its `uuid` field must be unique in its class.
    pub fn insert(&mut self, class: &'static Class, r: &str, fields: Vec<Value>) -> Result<(), DbError> {
        if !class.persistent {
            return Err(DbError::NotPersistent(class.name));
        }
        assert_eq!(fields.len(), class.fields.len(), "a whole {} row", class.name);
        if let Value::Str(uuid) = &fields[uuid_index(class)]
            && self.store.by_uuid(class, uuid).is_ok()
        {
            return Err(DbError::UuidExists { class: class.name, uuid: uuid.clone() });
        }
        self.changes.insert((class_index(class), Ref::from(r)), Change::Put { created: None, fields });
        Ok(())
    }

    /// Changes an existing object with `f`, which sees (and may change) every field.
    pub fn update<T>(
        &mut self,
        class: &'static Class,
        r: &str,
        f: impl FnOnce(&mut Vec<Value>) -> T,
    ) -> Result<T, DbError> {
        let key = (class_index(class), Ref::from(r));
        let (created, mut fields) = match self.changes.remove(&key) {
            Some(Change::Put { created, fields }) => (created, fields),
            Some(Change::Delete) => {
                self.changes.insert(key, Change::Delete);
                return Err(DbError::HandleInvalid { class: class.name, handle: r.into() });
            }
            None => {
                let row = self.store.get(class, r)?;
                (Some(row.created), row.fields.clone())
            }
        };
        let out = f(&mut fields);
        self.changes.insert(key, Change::Put { created, fields });
        Ok(out)
    }

    pub fn set(&mut self, class: &'static Class, r: &str, field: usize, v: Value) -> Result<(), DbError> {
        self.update(class, r, |fields| fields[field] = v)
    }

    pub fn delete(&mut self, class: &'static Class, r: &str) -> Result<(), DbError> {
        self.get(class, r)?;
        self.changes.insert((class_index(class), Ref::from(r)), Change::Delete);
        Ok(())
    }
}

/// Fails unless every persistent class has a table with exactly `_ref`, `_created`, `_gen` and its fields.
fn check_schema(conn: &Connection) -> Result<(), DbError> {
    for class in model::classes().iter().filter(|c| c.persistent) {
        let mut stmt = conn.prepare(&format!("PRAGMA table_info({})", quote(class.name)))?;
        let have: Vec<String> = stmt.query_map([], |r| r.get::<_, String>(1))?.collect::<Result<_, _>>()?;
        let want: Vec<String> = ["_ref", "_created", "_gen"]
            .into_iter()
            .chain(class.fields.iter().map(|f| f.name))
            .map(String::from)
            .collect();
        let (mut have_sorted, mut want_sorted) = (have.clone(), want.clone());
        have_sorted.sort();
        want_sorted.sort();
        if have_sorted != want_sorted {
            return Err(DbError::Corrupt(format!(
                "table {} has columns {have:?}, the datamodel wants {want:?}: a migration is missing",
                class.name
            )));
        }
    }
    Ok(())
}

fn load(conn: &Connection) -> Result<Mem, DbError> {
    let meta_int = |key: &str| -> Result<i64, DbError> {
        conn.query_row("SELECT value FROM \"_meta\" WHERE key = ?1", [key], |r| r.get::<_, String>(0))
            .optional()?
            .map(|s| s.parse().map_err(|_| DbError::Corrupt(format!("{key} {s:?}"))))
            .transpose()
            .map(|v| v.unwrap_or(0))
    };
    let generation = meta_int("generation")?;
    let mut tables = Vec::with_capacity(generated::CLASSES.len());
    for class in model::classes() {
        let mut table = Table::default();
        if class.persistent {
            let cols: Vec<String> = class.fields.iter().map(|f| quote(f.name)).collect();
            let sql =
                format!("SELECT \"_ref\", \"_created\", \"_gen\", {} FROM {}", cols.join(", "), quote(class.name));
            let mut stmt = conn.prepare(&sql)?;
            let mut rows = stmt.query([])?;
            let ui = uuid_index(class);
            while let Some(r) = rows.next()? {
                let rf: Ref = r.get::<_, String>(0)?.into();
                let mut fields = Vec::with_capacity(class.fields.len());
                for (i, f) in class.fields.iter().enumerate() {
                    fields.push(columns::from_sql(&f.ty, r.get_ref(i + 3)?)?);
                }
                if let Value::Str(u) = &fields[ui] {
                    table.by_uuid.insert(u.clone(), rf.clone());
                }
                let row = Row { created: r.get(1)?, modified: r.get(2)?, fields };
                table.by_modified.insert((row.modified, rf.clone()));
                table.rows.insert(rf, Arc::new(row));
            }
        }
        tables.push(table);
    }
    let pruned_through = meta_int("tombstones_pruned_through")?;
    let mut tombstones = VecDeque::new();
    let mut stmt = conn.prepare("SELECT generation, class, ref, uuid FROM \"_tombstone\" ORDER BY generation, id")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let class: String = r.get(1)?;
        let class = model::class(&class).ok_or_else(|| DbError::Corrupt(format!("tombstone of {class}")))?;
        tombstones.push_back(Tombstone {
            generation: r.get(0)?,
            class: class.name,
            r#ref: r.get::<_, String>(2)?.into(),
            uuid: r.get(3)?,
        });
    }
    Ok(Mem { generation, tables, tombstones, pruned_through })
}

/// A fresh object reference.
pub fn new_ref() -> String {
    format!("OpaqueRef:{}", uuid::Uuid::new_v4())
}

/// A fresh object uuid.
pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The default row of a class: every field at its datamodel default.
pub fn default_row(class: &Class) -> Vec<Value> {
    class.fields.iter().map(|f| f.default.as_ref().map(Value::from).unwrap_or_else(|| Value::empty_of(&f.ty))).collect()
}
