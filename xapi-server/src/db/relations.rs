//! The set side of the datamodel's one-to-many relations (`VM.VBDs`, `SR.VDIs`, `VDI.snapshots`, …), kept true by
//! the store itself: whenever a transaction changes a pointer (`VBD.VM`), creates or deletes an object holding one,
//! the pointed-to objects' sets are updated in the same transaction. Handlers never maintain them by hand.

use std::sync::OnceLock;

use xapi_types::Value;
use xapi_types::model::{self, Class};

use super::{Change, DbError, Ref, Store, Txn, class_index};

/// For a class index: its pointer fields that have a set on the other side, as
/// `(pointer field index, the set's class, the set field index)`.
type Index = Vec<Vec<(usize, &'static Class, usize)>>;

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut idx: Index = model::classes().iter().map(|_| Vec::new()).collect();
        for rel in model::relations() {
            let (Some(one), Some(many)) = (model::class(rel.one_class), model::class(rel.many_class)) else { continue };
            let (Some((pi, _)), Some((si, _))) = (one.field(rel.one_field), many.field(rel.many_field)) else {
                continue;
            };
            if one.persistent && many.persistent {
                idx[class_index(one)].push((pi, many, si));
            }
        }
        idx
    })
}

fn pointer(v: &Value) -> Option<&str> {
    v.as_str().filter(|s| s.starts_with("OpaqueRef:") && *s != xapi_types::value::NULL_REF)
}

impl Txn<'_> {
    /// Brings the set side of every relation touched by this transaction's changes in line with the pointers.
    pub(super) fn maintain_relations(&mut self) -> Result<(), DbError> {
        let idx = index();
        let keys: Vec<(usize, Ref)> = self.changes.keys().filter(|(ci, _)| !idx[*ci].is_empty()).cloned().collect();
        for (ci, r) in keys {
            let class = model::classes()[ci];
            let old = self.store.get(class, &r).ok();
            let new = match self.changes.get(&(ci, r.clone())) {
                Some(Change::Put { fields, .. }) => Some(fields.clone()),
                _ => None,
            };
            for &(pi, many, si) in &idx[ci] {
                let was = old.as_ref().and_then(|o| pointer(&o.fields[pi])).map(str::to_string);
                let now = new.as_ref().and_then(|n| pointer(&n[pi])).map(str::to_string);
                if was == now {
                    continue;
                }
                if let Some(p) = was {
                    self.edit_set(many, &p, si, |set| set.retain(|v| v.as_str() != Some(&*r)));
                }
                if let Some(p) = now {
                    self.edit_set(many, &p, si, |set| {
                        if !set.iter().any(|v| v.as_str() == Some(&*r)) {
                            set.push(Value::str(&*r));
                        }
                    });
                }
            }
        }
        Ok(())
    }

    /// Edits a set field of `r` if `r` exists (a pointer to nothing, or to an object deleted in this transaction,
    /// has no set to keep).
    fn edit_set(&mut self, class: &'static Class, r: &str, field: usize, f: impl FnOnce(&mut Vec<Value>)) {
        let Ok(mut fields) = self.get(class, r) else { return };
        let mut set = fields[field].as_array().unwrap_or_default().to_vec();
        let before = set.len();
        f(&mut set);
        if set.len() != before {
            fields[field] = Value::Array(set);
            let _ = self.update(class, r, |old| *old = fields);
        }
    }
}

impl Store {
    /// Recomputes every relation's set side from the pointers (at start: a store written before relations were
    /// kept, or by hand, is made consistent). Returns how many objects changed.
    pub fn rebuild_relations(&self) -> Result<usize, DbError> {
        let idx = index();
        let mut want: std::collections::HashMap<(usize, Ref, usize), Vec<Value>> = Default::default();
        for (ci, ptrs) in idx.iter().enumerate() {
            if ptrs.is_empty() {
                continue;
            }
            let class = model::classes()[ci];
            for (r, row) in self.all(class) {
                for &(pi, many, si) in ptrs {
                    if let Some(p) = pointer(&row.fields[pi])
                        && self.exists(many, p)
                    {
                        want.entry((class_index(many), Ref::from(p), si)).or_default().push(Value::str(&*r));
                    }
                }
            }
        }
        // Every set field that is a relation's, on every object of its class.
        let mut sets: Vec<(&'static Class, usize)> = Vec::new();
        for ptrs in idx {
            for &(_, many, si) in ptrs {
                if !sets.contains(&(many, si)) {
                    sets.push((many, si));
                }
            }
        }
        let mut fixes: Vec<(&'static Class, Ref, usize, Vec<Value>)> = Vec::new();
        for (many, si) in sets {
            for (r, row) in self.all(many) {
                let mut expected = want.remove(&(class_index(many), r.clone(), si)).unwrap_or_default();
                let have = row.fields[si].as_array().unwrap_or_default();
                // Keep the existing order for members that stay; new ones go at the end.
                let mut merged: Vec<Value> = have.iter().filter(|v| expected.contains(v)).cloned().collect();
                expected.retain(|v| !merged.contains(v));
                merged.extend(expected);
                if merged.as_slice() != have {
                    fixes.push((many, r, si, merged));
                }
            }
        }
        let n = fixes.len();
        if n > 0 {
            self.transaction(|tx| {
                for (class, r, si, v) in fixes {
                    tx.set(class, &r, si, Value::Array(v))?;
                }
                Ok::<_, DbError>(())
            })?;
        }
        Ok(n)
    }
}
