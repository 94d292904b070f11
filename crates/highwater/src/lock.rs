//! OS file locks (flock): released by the OS when the holding process dies, so a killed run
//! never blocks the next one.

use std::fs::{File, OpenOptions};
use std::path::Path;

use crate::error::{Error, Result};

/// Takes the exclusive lock on `path` (created when missing) if nobody holds it; `None` when
/// another open file (this process or another) holds it. The lock lasts as long as the `File`.
pub(crate) fn try_lock_file(path: &Path) -> Result<Option<File>> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::disk::create_dir_all(dir)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("opening lock", path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io("locking", path, e)),
    }
}
