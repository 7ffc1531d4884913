//! `iso` SRs: a directory of ISO images, never written. Each `*.iso` file is a VDI whose `location` is its file name;
//! VDIs are matched to files by that name, so an image added or removed by hand shows up or goes at the next scan.

use std::fs;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct IsoSr {
    root: PathBuf,
}

/// One image in the library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoImage {
    /// The file name (the VDI's `location`).
    pub name: String,
    /// Its size, bytes.
    pub size: u64,
}

impl IsoSr {
    /// An existing directory.
    pub fn attach(root: &Path) -> Result<IsoSr> {
        super::check_dir(root, true)?;
        Ok(IsoSr { root: root.to_path_buf() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every `*.iso` regular file, by name.
    pub fn scan(&self) -> Result<Vec<IsoImage>> {
        let entries = fs::read_dir(&self.root).map_err(|e| Error::io(&self.root, e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&self.root, e))?;
            let Ok(name) = entry.file_name().into_string() else { continue };
            if !name.to_ascii_lowercase().ends_with(".iso") {
                continue;
            }
            let Ok(meta) = fs::metadata(entry.path()) else { continue };
            if meta.is_file() {
                out.push(IsoImage { name, size: meta.len() });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The path of image `name`: a plain file name of this directory, never a path that leaves it.
    pub fn path(&self, name: &str) -> Result<PathBuf> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." || name.contains('\0') {
            return Err(Error::Invalid(format!("'{name}' is not a file name in the ISO library")));
        }
        let p = self.root.join(name);
        if !p.is_file() {
            return Err(Error::NotFound(format!("the image {name}")));
        }
        Ok(p)
    }
}
