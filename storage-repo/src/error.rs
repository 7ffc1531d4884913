//! The one error type of this crate. `xapi-server` maps its kinds to XenAPI codes in one place.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system refused an operation on a file.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An image is not what its format says: truncated, hostile, a chain that loops or points outside its SR.
    #[error("{}: {what}", path.display())]
    Corrupt { path: PathBuf, what: String },
    /// The request cannot be carried out as asked (a size out of range, a shrink, a chain too deep, …).
    #[error("{0}")]
    Invalid(String),
    /// The object named does not exist.
    #[error("{0} does not exist")]
    NotFound(String),
    /// The object is in use by something else (a running block server, another operation).
    #[error("{0}")]
    Busy(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io { path: path.into(), source }
    }

    /// A format violation in `path`.
    pub fn corrupt(path: impl Into<PathBuf>, what: impl Into<String>) -> Error {
        Error::Corrupt { path: path.into(), what: what.into() }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        match e {
            Error::Io { source, .. } => source,
            Error::Corrupt { .. } => io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
            Error::Invalid(_) => io::Error::new(io::ErrorKind::InvalidInput, e.to_string()),
            Error::NotFound(_) => io::Error::new(io::ErrorKind::NotFound, e.to_string()),
            Error::Busy(_) => io::Error::new(io::ErrorKind::ResourceBusy, e.to_string()),
        }
    }
}
