//! Intent journals: one small file per multi-file operation in `<sr>/.journal/`, written (and fsynced) before the
//! first file changes and removed after the last. Each is `key=value` lines; `stage` moves forward with atomic
//! rewrites (write a temporary file, fsync, rename).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journal {
    pub path: PathBuf,
    pub fields: BTreeMap<String, String>,
}

pub fn dir(sr: &Path) -> PathBuf {
    sr.join(".journal")
}

impl Journal {
    /// Starts a journal named `name` (unique per operation) with these fields.
    pub fn begin(sr: &Path, name: &str, fields: &[(&str, String)]) -> Result<Journal> {
        let d = dir(sr);
        fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        let j = Journal {
            path: d.join(format!("{name}.journal")),
            fields: fields.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        };
        j.write()?;
        Ok(j)
    }

    pub fn get(&self, key: &str) -> &str {
        self.fields.get(key).map(String::as_str).unwrap_or_default()
    }

    /// Moves the journal to a new stage, durably.
    pub fn stage(&mut self, stage: &str) -> Result<()> {
        self.fields.insert("stage".into(), stage.into());
        self.write()
    }

    fn write(&self) -> Result<()> {
        let tmp = self.path.with_extension("tmp");
        let mut text = String::new();
        for (k, v) in &self.fields {
            text.push_str(&format!("{k}={v}\n"));
        }
        let mut f = fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(|e| Error::io(&tmp, e))?;
        fs::rename(&tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        super::sync_dir(self.path.parent().unwrap_or(Path::new(".")))
    }

    /// The operation is over.
    pub fn finish(self) -> Result<()> {
        fs::remove_file(&self.path).map_err(|e| Error::io(&self.path, e))?;
        super::sync_dir(self.path.parent().unwrap_or(Path::new(".")))
    }

    /// Every journal left in `sr` (by a crash), oldest name first. Unreadable ones are reported, not skipped.
    pub fn pending(sr: &Path) -> Result<Vec<Journal>> {
        let d = dir(sr);
        let Ok(entries) = fs::read_dir(&d) else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| Error::io(&d, e))?.path();
            if path.extension().and_then(|e| e.to_str()) == Some("tmp") {
                let _ = fs::remove_file(&path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("journal") {
                continue;
            }
            let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            let fields =
                text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
            out.push(Journal { path, fields });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }
}
