//! The write mark: how a store knows that its log lost acknowledged writes.
//!
//! sled recovers its log up to the first record that fails its checksum and drops the rest, as
//! it must after a torn write. But a flipped bit or a cut file in the middle of the log then
//! loses everything after it, silently: the store opens, smaller. So every write group carries a
//! counter (key `w`, the write groups applied ever), and after each group commit has made a
//! group durable (flush and fdatasync), its counter is written to a small file beside the log,
//! `roomcast.mark`. The file is written after the log is synced, so it is never ahead of what a
//! sound log holds: a store whose log holds a smaller counter than the file lost acknowledged
//! writes, and opening it is an error that says so (the checker reports it; salvage copies what
//! is readable). Only the default, power-loss-safe group commit writes the file.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::StoreError;

const MAGIC: &[u8; 4] = b"RCM1";
pub(crate) const FILE: &str = "roomcast.mark";

/// The mark file of a store directory.
pub(crate) struct MarkFile {
    file: File,
}

impl MarkFile {
    pub(crate) fn open(dir: &Path) -> Result<MarkFile, StoreError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(FILE))
            .map_err(|e| StoreError::Io(format!("cannot open the store's mark file: {e}")))?;
        Ok(MarkFile { file })
    }

    /// Records that every write group up to `mark` is durable. Not synced: a stale file only
    /// makes the check at open weaker, never wrong.
    pub(crate) fn write(&self, mark: u64) -> Result<(), StoreError> {
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(MAGIC);
        bytes[4..12].copy_from_slice(&mark.to_le_bytes());
        let crc = crc32fast::hash(&bytes[..12]);
        bytes[12..].copy_from_slice(&crc.to_le_bytes());
        self.file
            .write_all_at(&bytes, 0)
            .map_err(|e| StoreError::Io(format!("cannot write the store's mark file: {e}")))
    }
}

/// The mark recorded beside the log in `dir`, if there is a readable one.
pub(crate) fn read(dir: &Path) -> Option<u64> {
    let bytes = std::fs::read(path(dir)).ok()?;
    if bytes.len() != 16 || &bytes[..4] != MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(bytes[12..16].try_into().ok()?);
    if crc32fast::hash(&bytes[..12]) != crc {
        return None;
    }
    Some(u64::from_le_bytes(bytes[4..12].try_into().ok()?))
}

pub(crate) fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// The error for a log that holds fewer write groups (`stored`) than were acknowledged
/// (`acknowledged`).
pub(crate) fn lost(stored: u64, acknowledged: u64) -> StoreError {
    StoreError::Corrupt {
        where_: Some("the store's log".into()),
        reason: format!(
            "it ends at write group {stored}, but write groups up to {acknowledged} were \
             acknowledged as durable: part of the log is damaged or missing. Check it with \
             `roomcast::store::check` and copy what is readable with `roomcast::store::salvage`"
        ),
    }
}
