//! What a load package's data files must be: their size and CRC-32, taken as they are written
//! and checked before a later stage reads them, so that a file truncated or altered on disk
//! (a full disk, a copy cut short, a stray edit) stops the run instead of loading garbage.
//!
//! CRC-32 (`crc32fast`, already built for gzip) runs at several GB/s: the check costs a read of
//! files the next stage reads anyway, mostly from the page cache.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The size and CRC-32 of a file as it was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCheck {
    /// Length in bytes.
    pub bytes: u64,
    /// CRC-32 (IEEE) of the whole file.
    pub crc32: u32,
}

/// A writer that measures what passes through it.
#[derive(Debug)]
pub struct CheckedWriter<W> {
    inner: W,
    hasher: crc32fast::Hasher,
    bytes: u64,
}

impl<W: Write> CheckedWriter<W> {
    /// Measures what is written to `inner`.
    pub fn new(inner: W) -> Self {
        CheckedWriter {
            inner,
            hasher: crc32fast::Hasher::new(),
            bytes: 0,
        }
    }

    /// The inner writer and the check of everything written to it.
    pub fn into_parts(self) -> (W, FileCheck) {
        let check = FileCheck {
            bytes: self.bytes,
            crc32: self.hasher.finalize(),
        };
        (self.inner, check)
    }
}

impl<W: Write> Write for CheckedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Compares the file at `path` with `expected`; `Err` says how it differs (the size first, which
/// is what a truncation changes) or why it cannot be read.
pub fn verify(path: &Path, expected: &FileCheck) -> Result<(), String> {
    let mut file = File::open(path).map_err(|e| format!("cannot be opened: {e}"))?;
    let len = file
        .metadata()
        .map_err(|e| format!("cannot be read: {e}"))?
        .len();
    if len != expected.bytes {
        return Err(format!(
            "it has {len} bytes where {} were written",
            expected.bytes
        ));
    }
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| format!("cannot be read: {e}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let crc32 = hasher.finalize();
    if crc32 != expected.crc32 {
        return Err(format!(
            "its content changed since it was written (CRC-32 {crc32:08x}, written {:08x})",
            expected.crc32
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_as_written_passes_and_a_truncated_or_altered_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut writer = CheckedWriter::new(File::create(&path).unwrap());
        writer.write_all(b"hello ").unwrap();
        writer.write_all(b"world\n").unwrap();
        let (_, check) = writer.into_parts();
        assert_eq!(check.bytes, 12);
        assert_eq!(verify(&path, &check), Ok(()));

        std::fs::write(&path, b"hello world").unwrap();
        let err = verify(&path, &check).unwrap_err();
        assert!(err.contains("11 bytes where 12 were written"), "{err}");

        std::fs::write(&path, b"hello World\n").unwrap();
        let err = verify(&path, &check).unwrap_err();
        assert!(err.contains("content changed"), "{err}");

        std::fs::remove_file(&path).unwrap();
        assert!(verify(&path, &check)
            .unwrap_err()
            .contains("cannot be opened"));
    }
}
