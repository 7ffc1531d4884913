//! `ext` SRs: a directory of `<vdi-uuid>.vhd` files, as XenServer's local storage (`FileSR`).
//!
//! The file name is the VDI's identity (a VHD footer's UUID is only used to match children to parents, and after
//! a snapshot or coalesce it differs from the name, as on XenServer). Visible files are VDIs; hidden ones are base
//! copies that only exist as parents.
//!
//! **Snapshot and clone** (the same file operation; the toolstack decides which record is the snapshot):
//! leaf `X` becomes the hidden base `B` with two children, `X` (same name, so a VM keeps its disk) and the new `N`.
//! At every step `X.vhd` holds `X`'s content:
//! 1. journal `{leaf X, base B, new N}`;
//! 2. hard-link `X.vhd` as `B.vhd` (one file, two names);
//! 3. create `X.vhd.new`, a child of `B.vhd`, and rename it over `X.vhd` (`B.vhd` keeps the old file);
//! 4. create `N.vhd`, a child of `B.vhd`;
//! 5. hide `B.vhd`; remove the journal.
//!
//! After a crash, [`FileSr::attach`] undoes a snapshot that did not reach step 5 (the toolstack never recorded it):
//! before step 3 it drops `B.vhd` and `X.vhd.new`; after, it drops `N.vhd` and hides `B` (`X` keeps its data, and
//! the collector later merges the chain back).

use std::fs;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::journal::Journal;
use super::{Usage, sync_dir};
use crate::formats::vhd::{self, Chain, Info};
use crate::{Error, Result};

/// The file naming the SR a directory holds.
const SR_UUID_FILE: &str = ".sr-uuid";

#[derive(Debug)]
pub struct FileSr {
    root: PathBuf,
    /// Serialises the operations that change several files (snapshot, destroy, collect).
    lock: std::sync::Mutex<()>,
}

/// A VDI file, as [`FileSr::scan`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VdiFile {
    /// From the file name.
    pub uuid: Uuid,
    pub virtual_size: u64,
    /// The file's length (what XenServer reports for file SRs).
    pub physical_utilisation: u64,
    /// A base copy: only a parent of other files.
    pub hidden: bool,
    /// The parent's file-name UUID.
    pub parent: Option<Uuid>,
}

/// The readable VDI files of an SR, and the ones that could not be read (with why).
pub type Scan = (Vec<VdiFile>, Vec<(Uuid, Error)>);

/// What a snapshot (or clone) made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The hidden parent holding the content at the time of the snapshot.
    pub base: VdiFile,
    /// The original VDI, now a child of `base`.
    pub leaf: VdiFile,
    /// The new VDI, also a child of `base`.
    pub new: VdiFile,
}

impl FileSr {
    /// Makes a new SR in `root` (created if missing; an existing directory must hold no VHD files) and records
    /// the SR's UUID in it (`.sr-uuid`, what [`FileSr::probe`] finds).
    pub fn create(root: &Path, sr_uuid: &str) -> Result<FileSr> {
        super::check_dir(root, false)?;
        fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        let sr = FileSr { root: root.to_path_buf(), lock: Default::default() };
        if !sr.vhd_names()?.is_empty() {
            return Err(Error::Invalid(format!(
                "{} already holds VHD files: introduce the SR instead of creating it",
                root.display()
            )));
        }
        let marker = root.join(SR_UUID_FILE);
        fs::write(&marker, format!("{sr_uuid}\n")).map_err(|e| Error::io(&marker, e))?;
        sync_dir(root)?;
        Ok(sr)
    }

    /// The UUID of the SR in `root`, if `root` holds one.
    pub fn probe(root: &Path) -> Result<Option<String>> {
        super::check_dir(root, false)?;
        match fs::read_to_string(root.join(SR_UUID_FILE)) {
            Ok(s) => Ok(Some(s.trim().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(root.join(SR_UUID_FILE), e)),
        }
    }

    /// Opens an existing SR and finishes or undoes what a crash interrupted.
    pub fn attach(root: &Path) -> Result<FileSr> {
        super::check_dir(root, true)?;
        let sr = FileSr { root: root.to_path_buf(), lock: Default::default() };
        sr.recover()?;
        Ok(sr)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of VDI `uuid` (a UUID can never name a path outside the SR).
    pub fn path(&self, uuid: &Uuid) -> PathBuf {
        self.root.join(format!("{uuid}.vhd"))
    }

    pub fn usage(&self) -> Result<Usage> {
        super::usage(&self.root)
    }

    pub(crate) fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The UUIDs of every `<uuid>.vhd` file.
    fn vhd_names(&self) -> Result<Vec<Uuid>> {
        let entries = fs::read_dir(&self.root).map_err(|e| Error::io(&self.root, e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&self.root, e))?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".vhd")) else { continue };
            if let Ok(u) = Uuid::parse_str(stem)
                && stem == u.to_string()
            {
                out.push(u);
            }
        }
        out.sort();
        Ok(out)
    }

    /// One file's description.
    pub fn info(&self, uuid: &Uuid) -> Result<VdiFile> {
        let path = self.path(uuid);
        if !path.exists() {
            return Err(Error::NotFound(format!("the VDI file {}", path.display())));
        }
        let info = vhd::read_info(&path)?;
        Ok(self.vdi_file(*uuid, &path, &info))
    }

    fn vdi_file(&self, uuid: Uuid, path: &Path, info: &Info) -> VdiFile {
        let parent =
            info.parent.as_ref().and_then(|p| p.file_name.strip_suffix(".vhd")).and_then(|s| Uuid::parse_str(s).ok());
        let physical = fs::metadata(path).map(|m| m.len()).unwrap_or(info.file_size);
        VdiFile { uuid, virtual_size: info.virtual_size, physical_utilisation: physical, hidden: info.hidden, parent }
    }

    /// Every VDI file, and the files that could not be read (with why). Waits for a snapshot or a collection step
    /// in progress, so that it never sees a chain half-way through one.
    pub fn scan(&self) -> Result<Scan> {
        let _g = self.guard();
        self.scan_unlocked()
    }

    /// [`FileSr::scan`] for callers that hold the SR's lock.
    pub(crate) fn scan_unlocked(&self) -> Result<Scan> {
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for uuid in self.vhd_names()? {
            match self.info(&uuid) {
                Ok(f) => good.push(f),
                Err(Error::NotFound(_)) => {} // removed while we looked
                Err(e) => bad.push((uuid, e)),
            }
        }
        Ok((good, bad))
    }

    /// A new, sparse VDI of `size` bytes (rounded up to 2 MiB).
    pub fn create_vdi(&self, uuid: Uuid, size: u64) -> Result<VdiFile> {
        if size == 0 || size > vhd::MAX_SIZE {
            return Err(Error::Invalid(format!("a VDI's size must be between 1 byte and {} bytes", vhd::MAX_SIZE)));
        }
        let path = self.path(&uuid);
        let info = vhd::create_dynamic(&path, Uuid::new_v4(), size)?;
        sync_dir(&self.root)?;
        Ok(self.vdi_file(uuid, &path, &info))
    }

    /// Deletes a VDI's file. A file that other files use as their parent is refused (its data is not only its own).
    pub fn destroy_vdi(&self, uuid: &Uuid) -> Result<()> {
        let _g = self.guard();
        let path = self.path(uuid);
        if !path.exists() {
            return Err(Error::NotFound(format!("the VDI file {}", path.display())));
        }
        let (files, _) = self.scan_unlocked()?;
        if files.iter().any(|f| f.parent == Some(*uuid)) {
            return Err(Error::Busy(format!("VDI {uuid} is the parent of other disks")));
        }
        fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        sync_dir(&self.root)
    }

    /// Deletes everything the SR holds (its VHD files, journals, its UUID marker) and the directory if it is then
    /// empty. The toolstack checks first that no VDI is in use.
    pub fn destroy_all(&self) -> Result<()> {
        let _g = self.guard();
        for u in self.vhd_names()? {
            let p = self.path(&u);
            fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
        }
        let j = super::journal::dir(&self.root);
        if j.exists() {
            fs::remove_dir_all(&j).map_err(|e| Error::io(&j, e))?;
        }
        let _ = fs::remove_file(self.root.join(SR_UUID_FILE));
        let _ = fs::remove_dir(&self.root);
        Ok(())
    }

    /// Grows a VDI (never shrinks).
    pub fn resize_vdi(&self, uuid: &Uuid, size: u64) -> Result<VdiFile> {
        let _g = self.guard();
        let path = self.path(uuid);
        let info = vhd::resize(&path, size)?;
        Ok(self.vdi_file(*uuid, &path, &info))
    }

    /// Snapshot or clone `leaf` (see the module documentation): returns the base copy, the leaf and the new VDI.
    pub fn snapshot(&self, leaf: &Uuid, new: Uuid, base: Uuid) -> Result<Snapshot> {
        let _g = self.guard();
        let (leaf_p, new_p, base_p) = (self.path(leaf), self.path(&new), self.path(&base));
        let info = vhd::read_info(&leaf_p)?;
        if info.hidden {
            return Err(Error::Invalid(format!("{leaf} is a base copy, not a VDI")));
        }
        if Chain::open(&leaf_p, false)?.depth() >= vhd::MAX_CHAIN_DEPTH {
            return Err(Error::Invalid(format!(
                "the chain of {leaf} is already {} disks deep (at most {})",
                vhd::MAX_CHAIN_DEPTH,
                vhd::MAX_CHAIN_DEPTH
            )));
        }
        for p in [&new_p, &base_p] {
            if p.exists() {
                return Err(Error::Invalid(format!("{} exists already", p.display())));
            }
        }
        let mut j = Journal::begin(
            &self.root,
            &format!("snapshot-{leaf}"),
            &[
                ("op", "snapshot".into()),
                ("leaf", leaf.to_string()),
                ("base", base.to_string()),
                ("new", new.to_string()),
            ],
        )?;
        fs::hard_link(&leaf_p, &base_p).map_err(|e| Error::io(&base_p, e))?;
        let tmp = leaf_p.with_extension("vhd.new");
        let _ = fs::remove_file(&tmp);
        vhd::create_child(&tmp, Uuid::new_v4(), &base_p)?;
        fs::rename(&tmp, &leaf_p).map_err(|e| Error::io(&leaf_p, e))?;
        sync_dir(&self.root)?;
        j.stage("leaf-replaced")?;
        vhd::create_child(&new_p, Uuid::new_v4(), &base_p)?;
        vhd::set_hidden(&base_p, true)?;
        sync_dir(&self.root)?;
        j.finish()?;
        Ok(Snapshot { base: self.info(&base)?, leaf: self.info(leaf)?, new: self.info(&new)? })
    }

    /// A full copy of `src`'s content into a new VDI `dest` of `dest_sr` (only the data is written: the copy is
    /// sparse). The file appears under its name only when complete.
    pub fn copy_vdi(&self, src: &Uuid, dest_sr: &FileSr, dest: Uuid) -> Result<VdiFile> {
        // The source's chain does not change under the copy (the collector waits).
        let _g = self.guard();
        let src_chain = Chain::open(&self.path(src), false)?;
        let final_p = dest_sr.path(&dest);
        let tmp = final_p.with_extension("vhd.copy");
        let _ = fs::remove_file(&tmp);
        let result = (|| {
            vhd::create_dynamic(&tmp, Uuid::new_v4(), crate::block::BlockDevice::size(&src_chain))?;
            {
                let dst = Chain::open_scratch(&tmp)?;
                vhd::copy_into(&src_chain, &dst)?;
            }
            fs::rename(&tmp, &final_p).map_err(|e| Error::io(&final_p, e))?;
            sync_dir(&dest_sr.root)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result?;
        dest_sr.info(&dest)
    }

    /// Copies `src`'s content over the existing VDI `into` of `dest_sr` (which must be at least as large).
    pub fn copy_into_vdi(&self, src: &Uuid, dest_sr: &FileSr, into: &Uuid) -> Result<VdiFile> {
        let _g = self.guard();
        let src_chain = Chain::open(&self.path(src), false)?;
        {
            let dst = Chain::open(&dest_sr.path(into), true)?;
            use crate::block::BlockDevice;
            if dst.size() < src_chain.size() {
                return Err(Error::Invalid(format!("VDI {into} is smaller than VDI {src}")));
            }
            vhd::copy_into(&src_chain, &dst)?;
        }
        dest_sr.info(into)
    }

    /// Finishes or undoes the operations a crash interrupted (see the module documentation and `gc`), and removes
    /// the temporary files of copies, imports and exports a crash left (`<uuid>.vhd.copy`, `<uuid>.vhd.import`,
    /// `<uuid>.vhd.export-*`, `.<uuid>.upload`): nothing is in flight while an SR is being attached.
    fn recover(&self) -> Result<()> {
        self.remove_leftovers()?;
        for j in Journal::pending(&self.root)? {
            match j.get("op") {
                "snapshot" => self.undo_snapshot(&j)?,
                "coalesce" | "leaf-coalesce" => super::gc::recover(self, &j)?,
                other => {
                    return Err(Error::corrupt(&j.path, format!("unknown journal operation '{other}'")));
                }
            }
            j.finish()?;
        }
        Ok(())
    }

    fn remove_leftovers(&self) -> Result<()> {
        let entries = fs::read_dir(&self.root).map_err(|e| Error::io(&self.root, e))?;
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else { continue };
            let uuid_prefixed = |rest: &str| Uuid::parse_str(rest).is_ok();
            let leftover = match name.split_once(".vhd.") {
                Some((u, tail)) => {
                    uuid_prefixed(u) && (tail == "copy" || tail == "import" || tail.starts_with("export-"))
                }
                None => name.strip_prefix('.').and_then(|n| n.strip_suffix(".upload")).is_some_and(uuid_prefixed),
            };
            if leftover {
                let p = entry.path();
                tracing::info!(file = %p.display(), "removing a temporary file a crash left");
                fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
            }
        }
        Ok(())
    }

    fn undo_snapshot(&self, j: &Journal) -> Result<()> {
        let uuid = |k: &str| Uuid::parse_str(j.get(k)).map_err(|_| Error::corrupt(&j.path, format!("bad {k}")));
        let (leaf, base, new) = (uuid("leaf")?, uuid("base")?, uuid("new")?);
        let (leaf_p, base_p, new_p) = (self.path(&leaf), self.path(&base), self.path(&new));
        let _ = fs::remove_file(leaf_p.with_extension("vhd.new"));
        // The files say how far it got (the stage is written after the rename, so it may lag behind).
        let replaced =
            vhd::read_info(&leaf_p).ok().and_then(|i| i.parent).is_some_and(|p| p.file_name == format!("{base}.vhd"));
        if replaced {
            // X.vhd is B's child and holds X's data: keep that, drop the new VDI nobody recorded, hide B.
            let _ = fs::remove_file(&new_p);
            vhd::set_hidden(&base_p, true)?;
        } else if base_p.exists() && leaf_p.exists() {
            // B.vhd is only a second name of X.vhd.
            fs::remove_file(&base_p).map_err(|e| Error::io(&base_p, e))?;
        }
        sync_dir(&self.root)
    }
}
