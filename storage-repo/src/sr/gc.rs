//! The collector: after snapshots are deleted, base copies with a single child are merged away so that chains stay
//! short, as sm's `cleanup.py` does.
//!
//! One pass ([`FileSr::collect`]) builds the tree from the headers and does the first thing it finds:
//! - **garbage**: a hidden file with no children is deleted;
//! - **coalesce**: a hidden `C` whose parent `P` is hidden and has `C` as only child: `C`'s data is copied into `P`
//!   (journal stage `copy`), `C`'s children are pointed at `P` (stage `relink`), and `C` is deleted;
//! - **leaf-coalesce**: a visible `X` whose parent `B` is hidden and has `X` as only child: `X`'s data is copied into
//!   `B` (stage `copy`), then `B.vhd` is renamed over `X.vhd` (stage `rename`) and un-hidden.
//!
//! Copying a child's sectors into a parent that only that child sees never changes what the child reads, so a
//! crash during a copy loses nothing and the copy can simply be redone; the journal only records where the
//! relink or rename stood. Trees in which a file is in use (served to a running VM) are left alone.

use std::fs;

use uuid::Uuid;

use super::file::{FileSr, VdiFile};
use super::journal::Journal;
use super::sync_dir;
use crate::formats::vhd;
use crate::{Error, Result};

/// What one pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GcReport {
    Nothing,
    /// A hidden file without children was deleted.
    Deleted(Uuid),
    /// `child` was merged into `parent` and deleted.
    Coalesced {
        child: Uuid,
        parent: Uuid,
        bytes: u64,
    },
    /// `leaf`'s data was merged into its parent, which now is `leaf`.
    LeafCoalesced {
        leaf: Uuid,
        parent: Uuid,
        bytes: u64,
    },
}

/// The tree: each file's children.
fn children(files: &[VdiFile], of: &Uuid) -> Vec<Uuid> {
    files.iter().filter(|f| f.parent == Some(*of)).map(|f| f.uuid).collect()
}

/// The root of `u`'s tree (bounded by the file count, so a loop cannot hang us).
fn root_of(files: &[VdiFile], u: Uuid) -> Uuid {
    let mut cur = u;
    for _ in 0..=files.len() {
        match files.iter().find(|f| f.uuid == cur).and_then(|f| f.parent) {
            Some(p) if files.iter().any(|f| f.uuid == p) => cur = p,
            _ => break,
        }
    }
    cur
}

impl FileSr {
    /// One collection step; `in_use` says whether a VDI is being served (its whole tree is then skipped).
    pub fn collect(&self, in_use: &dyn Fn(&Uuid) -> bool) -> Result<GcReport> {
        let _g = self.guard();
        let (files, _bad) = self.scan_unlocked()?;
        let busy_roots: Vec<Uuid> = files.iter().filter(|f| in_use(&f.uuid)).map(|f| root_of(&files, f.uuid)).collect();
        let free = |u: &Uuid| !busy_roots.contains(&root_of(&files, *u));
        for f in files.iter().filter(|f| f.hidden && free(&f.uuid)) {
            if children(&files, &f.uuid).is_empty() {
                let p = self.path(&f.uuid);
                fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
                sync_dir(self.root())?;
                return Ok(GcReport::Deleted(f.uuid));
            }
        }
        for c in files.iter().filter(|f| free(&f.uuid)) {
            let Some(p) = c.parent.and_then(|p| files.iter().find(|f| f.uuid == p)) else { continue };
            if !p.hidden || children(&files, &p.uuid) != [c.uuid] {
                continue;
            }
            return if c.hidden { self.coalesce(&files, c.uuid, p.uuid) } else { self.leaf_coalesce(c.uuid, p.uuid) };
        }
        Ok(GcReport::Nothing)
    }

    /// Runs passes until there is nothing left to do (or `max` steps); returns what was done.
    pub fn collect_all(&self, in_use: &dyn Fn(&Uuid) -> bool, max: usize) -> Result<Vec<GcReport>> {
        let mut out = Vec::new();
        for _ in 0..max {
            match self.collect(in_use)? {
                GcReport::Nothing => break,
                r => out.push(r),
            }
        }
        Ok(out)
    }

    fn coalesce(&self, files: &[VdiFile], child: Uuid, parent: Uuid) -> Result<GcReport> {
        let mut j = Journal::begin(
            self.root(),
            &format!("coalesce-{child}"),
            &[("op", "coalesce".into()), ("child", child.to_string()), ("parent", parent.to_string())],
        )?;
        j.stage("copy")?;
        let bytes = vhd::coalesce(&self.path(&child))?;
        j.stage("relink")?;
        self.relink_children(files, child, parent)?;
        let cp = self.path(&child);
        fs::remove_file(&cp).map_err(|e| Error::io(&cp, e))?;
        sync_dir(self.root())?;
        j.finish()?;
        Ok(GcReport::Coalesced { child, parent, bytes })
    }

    fn relink_children(&self, files: &[VdiFile], child: Uuid, parent: Uuid) -> Result<()> {
        for g in children(files, &child) {
            vhd::set_parent(&self.path(&g), &self.path(&parent))?;
        }
        Ok(())
    }

    fn leaf_coalesce(&self, leaf: Uuid, parent: Uuid) -> Result<GcReport> {
        let mut j = Journal::begin(
            self.root(),
            &format!("leaf-coalesce-{leaf}"),
            &[("op", "leaf-coalesce".into()), ("child", leaf.to_string()), ("parent", parent.to_string())],
        )?;
        j.stage("copy")?;
        let bytes = vhd::coalesce(&self.path(&leaf))?;
        j.stage("rename")?;
        finish_rename(self, leaf, parent)?;
        j.finish()?;
        Ok(GcReport::LeafCoalesced { leaf, parent, bytes })
    }
}

/// `B.vhd` (holding all of `X`'s data) replaces `X.vhd` and becomes visible.
fn finish_rename(sr: &FileSr, leaf: Uuid, parent: Uuid) -> Result<()> {
    let (lp, pp) = (sr.path(&leaf), sr.path(&parent));
    if pp.exists() {
        fs::rename(&pp, &lp).map_err(|e| Error::io(&lp, e))?;
        sync_dir(sr.root())?;
    }
    vhd::set_hidden(&lp, false)
}

/// Finishes a coalesce that a crash interrupted, from what its journal and the files say.
pub(super) fn recover(sr: &FileSr, j: &Journal) -> Result<()> {
    let uuid = |k: &str| Uuid::parse_str(j.get(k)).map_err(|_| Error::corrupt(&j.path, format!("bad {k}")));
    let (child, parent) = (uuid("child")?, uuid("parent")?);
    // The copy writes the parent: killed in the middle of a block's allocation, its trailing footer may be gone.
    let pp = sr.path(&parent);
    if pp.exists() {
        vhd::repair(&pp)?;
    }
    match (j.get("op"), j.get("stage")) {
        // The copy may be partial: nothing has changed what anyone reads. The next pass starts over.
        (_, "copy") | (_, "") => Ok(()),
        ("coalesce", "relink") => {
            let (files, _) = sr.scan_unlocked()?;
            sr.relink_children(&files, child, parent)?;
            let cp = sr.path(&child);
            if cp.exists() {
                fs::remove_file(&cp).map_err(|e| Error::io(&cp, e))?;
            }
            sync_dir(sr.root())
        }
        ("leaf-coalesce", "rename") => finish_rename(sr, child, parent),
        (op, stage) => Err(Error::corrupt(&j.path, format!("unknown stage '{stage}' of '{op}'"))),
    }
}
