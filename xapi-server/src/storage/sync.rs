//! The store follows the files. [`sr`] reconciles one attached SR's VDI records with what its backend finds and
//! refreshes the SR's space fields; it runs on `SR.scan`, on plug, and after every operation that changes files.

use std::collections::HashMap;

use storage_repo::sr::{FileSr, IsoSr, VdiFile};
use xapi_types::Value;
use xapi_types::value::NULL_REF;

use super::Backend;
use crate::coerce::now_datetime;
use crate::db::{self, DbError, Txn};
use crate::error::ApiError;
use crate::hv::rec::{Rec, class, set};
use crate::state::State;

/// Reconciles SR `sr`'s records with its files, under the SR's lock.
pub fn sr(state: &State, sr: &str) -> Result<(), ApiError> {
    state.storage.with_srs(&[sr], || sr_held(state, sr))
}

/// [`sr`] for a caller that holds the SR's lock (`Storage::with_srs`).
pub fn sr_held(state: &State, sr: &str) -> Result<(), ApiError> {
    match state.storage.backend(sr)? {
        Backend::Ext(b) => ext(state, sr, &b),
        Backend::Iso(b) => iso(state, sr, &b),
    }
}

/// The VDI records of `sr`, by `location`.
fn records(state: &State, sr: &str) -> HashMap<String, (String, Vec<Value>)> {
    let vdi_c = class("VDI");
    let si = vdi_c.field("SR").expect("VDI.SR").0;
    state
        .store
        .filter(vdi_c, |row| row.fields[si].as_str() == Some(sr))
        .into_iter()
        .map(|(r, row)| {
            let loc = Rec::new(vdi_c, &row.fields).str("location").to_string();
            (loc, (r.to_string(), row.fields.clone()))
        })
        .collect()
}

/// A VDI record whose file is gone: deleted with its VBDs, unless a running VM uses it (then it is `missing`).
fn forget_vdi(tx: &mut Txn<'_>, state: &State, vdi: &str) -> Result<(), DbError> {
    let vdi_c = class("VDI");
    if super::attached_vbds(state, vdi).next().is_some() {
        return tx.update(vdi_c, vdi, |f| {
            set(vdi_c, f, "missing", true);
        });
    }
    super::delete_vdi_record(tx, state, vdi)
}

fn ext(state: &State, sr: &str, b: &FileSr) -> Result<(), ApiError> {
    let (files, bad) = b.scan()?;
    for (uuid, e) in &bad {
        tracing::warn!(sr, vdi = %uuid, error = %e, "an unreadable VHD file in an SR is not listed");
    }
    let vdi_c = class("VDI");
    let existing = records(state, sr);
    let by_uuid: HashMap<String, &VdiFile> = files.iter().map(|f| (f.uuid.to_string(), f)).collect();
    let refs_by_uuid: HashMap<String, String> =
        existing.values().map(|(r, f)| (Rec::new(vdi_c, f).str("uuid").to_string(), r.clone())).collect();
    let usage = b.usage()?;
    state.store.transaction(|tx| {
        for f in &files {
            let u = f.uuid.to_string();
            let parent = f.parent.map(|p| p.to_string());
            let parent_ref = parent.as_ref().and_then(|p| refs_by_uuid.get(p)).cloned();
            let (r, mut fields, new) = match refs_by_uuid.get(&u) {
                Some(r) => (r.clone(), tx.get(vdi_c, r)?, false),
                None => {
                    let mut fields = db::default_row(vdi_c);
                    set(vdi_c, &mut fields, "uuid", u.clone());
                    set(
                        vdi_c,
                        &mut fields,
                        "name_label",
                        if f.hidden { "base copy".into() } else { format!("{u}.vhd") },
                    );
                    set(vdi_c, &mut fields, "SR", sr);
                    set(vdi_c, &mut fields, "type", "user");
                    (db::new_ref(), fields, true)
                }
            };
            let before = fields.clone();
            set(vdi_c, &mut fields, "location", u.clone());
            set(vdi_c, &mut fields, "virtual_size", f.virtual_size as i64);
            set(vdi_c, &mut fields, "physical_utilisation", f.physical_utilisation as i64);
            set(vdi_c, &mut fields, "managed", !f.hidden);
            set(vdi_c, &mut fields, "missing", false);
            if f.hidden {
                set(vdi_c, &mut fields, "read_only", true);
            }
            let mut smc: Vec<(String, Value)> = Rec::new(vdi_c, &fields)
                .get("sm_config")
                .as_struct()
                .unwrap_or_default()
                .iter()
                .filter(|(k, _)| k != "vhd-parent" && k != "type")
                .cloned()
                .collect();
            smc.push(("type".into(), Value::str("vhd")));
            if let Some(p) = &parent {
                smc.push(("vhd-parent".into(), Value::str(p.clone())));
            }
            set(vdi_c, &mut fields, "sm_config", Value::Struct(smc));
            set(vdi_c, &mut fields, "parent", parent_ref.unwrap_or_else(|| NULL_REF.to_string()));
            if new {
                tx.insert(vdi_c, &r, fields)?;
            } else if fields != before {
                tx.update(vdi_c, &r, |old| *old = fields)?;
            }
        }
        for (loc, (r, _)) in &existing {
            if !by_uuid.contains_key(loc) && !bad.iter().any(|(u, _)| u.to_string() == *loc) {
                forget_vdi(tx, state, r)?;
            }
        }
        let virtual_allocation: u64 = files.iter().filter(|f| !f.hidden).map(|f| f.virtual_size).sum();
        write_space(tx, sr, usage.physical_size, usage.physical_utilisation, virtual_allocation)
    })?;
    Ok(())
}

fn iso(state: &State, sr: &str, b: &IsoSr) -> Result<(), ApiError> {
    let images = b.scan()?;
    let usage = storage_repo::sr::usage(b.root())?;
    let vdi_c = class("VDI");
    let existing = records(state, sr);
    state.store.transaction(|tx| {
        for img in &images {
            let (r, mut fields, new) = match existing.get(&img.name) {
                Some((r, _)) => (r.clone(), tx.get(vdi_c, r)?, false),
                None => {
                    let mut fields = db::default_row(vdi_c);
                    set(vdi_c, &mut fields, "uuid", db::new_uuid());
                    set(vdi_c, &mut fields, "name_label", img.name.clone());
                    set(vdi_c, &mut fields, "SR", sr);
                    set(vdi_c, &mut fields, "type", "user");
                    set(vdi_c, &mut fields, "location", img.name.clone());
                    set(vdi_c, &mut fields, "read_only", true);
                    set(vdi_c, &mut fields, "sharable", true);
                    (db::new_ref(), fields, true)
                }
            };
            let before = fields.clone();
            set(vdi_c, &mut fields, "virtual_size", img.size as i64);
            set(vdi_c, &mut fields, "physical_utilisation", img.size as i64);
            set(vdi_c, &mut fields, "missing", false);
            set(vdi_c, &mut fields, "managed", true);
            if new {
                tx.insert(vdi_c, &r, fields)?;
            } else if fields != before {
                tx.update(vdi_c, &r, |old| *old = fields)?;
            }
        }
        for (loc, (r, _)) in &existing {
            if !images.iter().any(|i| &i.name == loc) {
                forget_vdi(tx, state, r)?;
            }
        }
        let total: u64 = images.iter().map(|i| i.size).sum();
        write_space(tx, sr, usage.physical_size, usage.physical_utilisation, total)
    })?;
    Ok(())
}

fn write_space(tx: &mut Txn<'_>, sr: &str, size: u64, used: u64, allocation: u64) -> Result<(), DbError> {
    let sr_c = class("SR");
    let mut f = tx.get(sr_c, sr)?;
    let mut changed = set(sr_c, &mut f, "physical_size", size as i64);
    changed |= set(sr_c, &mut f, "physical_utilisation", used as i64);
    changed |= set(sr_c, &mut f, "virtual_allocation", allocation as i64);
    if changed {
        tx.update(sr_c, sr, |old| *old = f)?;
    }
    Ok(())
}

/// `snapshot_time` for now.
pub fn now() -> Value {
    Value::DateTime(now_datetime())
}
