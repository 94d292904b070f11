//! OS file locks (flock): released by the OS when the holding process dies, so a killed run
//! never blocks the next one. A lock file is removed when its lock is given back, so none is left
//! lying around; a killed process leaves its file, and the next process that takes the lock
//! removes it in turn.
//!
//! Removing a lock file is safe because taking a lock checks, once it holds the lock, that the
//! path still names the file it locked: a process that opened the file before it was removed
//! (and so locked a file nobody else will ever open again) opens the path anew.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A lock held on a file; given back (and the file removed) on drop.
#[derive(Debug)]
pub(crate) struct LockFile {
    file: File,
    path: PathBuf,
}

impl Drop for LockFile {
    fn drop(&mut self) {
        // Still holding the lock: nobody else can be using this file right now.
        if same_file(&self.file, &self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Takes the exclusive lock on `path` (created when missing) if nobody holds it; `None` when
/// another open file (this process or another) holds it. The lock lasts as long as the
/// returned [`LockFile`].
pub(crate) fn try_lock_file(path: &Path) -> Result<Option<LockFile>> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::disk::create_dir_all(dir)?;
    }
    loop {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| Error::io("opening lock", path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("locking", path, e)),
        }
        if same_file(&file, path) {
            return Ok(Some(LockFile {
                file,
                path: path.to_path_buf(),
            }));
        }
        // The file was removed (and maybe created anew) since it was opened: lock the one the
        // path names now.
    }
}

/// Whether `path` still names the open `file`.
#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Elsewhere a lock file is never removed, so the path always names the file.
#[cfg(not(unix))]
fn same_file(_file: &File, _path: &Path) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_excludes_others_and_its_file_goes_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let held = try_lock_file(&path).unwrap().unwrap();
        assert!(try_lock_file(&path).unwrap().is_none(), "held");
        assert!(path.exists());
        drop(held);
        assert!(!path.exists(), "removed once given back");
        let again = try_lock_file(&path).unwrap();
        assert!(again.is_some());
    }

    #[test]
    fn a_file_opened_before_it_was_removed_is_not_taken_for_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        // An open file of a path that is then removed and created anew (as by another process
        // that took and gave back the lock in between).
        let stale = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        let held = try_lock_file(&path).unwrap().unwrap();
        stale.try_lock().unwrap();
        assert!(!same_file(&stale, &path), "the stale file is not the lock");
        assert!(
            try_lock_file(&path).unwrap().is_none(),
            "the lock is still held"
        );
        drop(held);
    }
}
