//! roomcast's store: rooms and super admins in sled, as versioned, checksummed records.
//!
//! **Architecture Invariant:** this is the only crate that names sled or bincode, and neither
//! appears in its public API. Records are encoded by [`codec`] inside an envelope with a format
//! version and a CRC-32, so that a later format can replace bincode.
//!
//! # Durability
//! sled's `insert` is not durable until a flush. Writes here are two steps: `put_*` applies the
//! write to sled (visible to reads at once), then [`Store::commit`] returns a future that resolves
//! once a flush that started after the write has finished. With [`Durability::GroupCommit`]
//! (the default for a directory) one flush covers every write that arrived while the previous flush
//! ran, so many concurrent writers share one `fsync`. With [`Durability::Buffered`] `commit`
//! resolves at once and sled flushes every `flush_every`; a crash loses up to that interval.

#![forbid(unsafe_code)]

pub mod codec;
mod commit;
mod error;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use roomcast_model::{RoomId, RoomRecord, UserId};
use serde::{Deserialize, Serialize};

pub use commit::Commit;
use commit::Committer;
pub use error::StoreError;

use codec::RecordKind;

/// Where the store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A temporary store, deleted when the engine stops.
    Temporary,
    /// A directory, created if missing.
    Dir(PathBuf),
}

/// When a write counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `commit` resolves after a flush that covers the write (group commit).
    GroupCommit,
    /// `commit` resolves at once; sled flushes every `flush_every`. A crash loses up to that much.
    Buffered {
        /// How often sled flushes in the background.
        flush_every: Duration,
    },
}

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Where it lives.
    pub location: Location,
    /// When a write counts as done.
    pub durability: Durability,
    /// sled's page cache size in bytes.
    pub cache_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            location: Location::Temporary,
            durability: Durability::GroupCommit,
            cache_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The value stored for a super admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SuperAdminRecord {
    user: UserId,
}

/// A handle to the store. Cloning is shallow; the last clone dropped stops the committer.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    rooms: sled::Tree,
    super_admins: sled::Tree,
    committer: Option<Committer>,
    db: sled::Db,
}

impl Store {
    /// Opens (or creates) the store described by `config`.
    pub fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        let flush_every = match config.durability {
            Durability::Buffered { flush_every } => Some(flush_every.as_millis().max(1) as u64),
            Durability::GroupCommit => Some(500),
        };
        let sled_config = sled::Config::new()
            .cache_capacity(config.cache_bytes)
            .flush_every_ms(flush_every);
        let sled_config = match &config.location {
            Location::Temporary => sled_config.temporary(true),
            Location::Dir(path) => sled_config.path(path),
        };
        let db = open_with_retry(&sled_config)?;
        let rooms = db.open_tree("rooms/v1")?;
        let super_admins = db.open_tree("super_admins/v1")?;
        // A temporary store is deleted at exit: there is nothing to make durable, so it never
        // waits for a flush.
        let committer = match (&config.location, config.durability) {
            (Location::Dir(_), Durability::GroupCommit) => Some(Committer::start(db.clone())?),
            _ => None,
        };
        Ok(Store {
            inner: Arc::new(Inner {
                rooms,
                super_admins,
                committer,
                db,
            }),
        })
    }

    /// A future that resolves once every write made before this call is durable.
    pub fn commit(&self) -> Commit {
        match &self.inner.committer {
            Some(c) => c.request(),
            None => Commit::ready(Ok(())),
        }
    }

    /// Flushes every write to disk, blocking the calling thread.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.inner.db.flush()?;
        Ok(())
    }

    /// Every room record, in id order (oldest first). A record that cannot be decoded is an
    /// `Err` item; the iteration goes on past it.
    pub fn rooms(&self) -> impl Iterator<Item = Result<RoomRecord, StoreError>> + '_ {
        self.inner.rooms.iter().map(|item| {
            let (key, value) = item?;
            codec::decode(RecordKind::Room, &value)
                .map_err(|e| e.at(format!("room {}", room_key_display(&key))))
        })
    }

    /// The record of room `id`, if stored.
    pub fn room(&self, id: RoomId) -> Result<Option<RoomRecord>, StoreError> {
        match self.inner.rooms.get(id.as_u64().to_be_bytes())? {
            Some(value) => codec::decode(RecordKind::Room, &value)
                .map(Some)
                .map_err(|e| e.at(format!("room {id}"))),
            None => Ok(None),
        }
    }

    /// Writes a room's record (not durable until [`Store::commit`] resolves).
    pub fn put_room(&self, record: &RoomRecord) -> Result<(), StoreError> {
        let value = codec::encode(RecordKind::Room, record)?;
        self.inner
            .rooms
            .insert(record.id.as_u64().to_be_bytes(), value)?;
        Ok(())
    }

    /// Deletes a room's record (not durable until [`Store::commit`] resolves).
    pub fn delete_room(&self, id: RoomId) -> Result<(), StoreError> {
        self.inner.rooms.remove(id.as_u64().to_be_bytes())?;
        Ok(())
    }

    /// The super admins, in id order.
    pub fn super_admins(&self) -> Result<Vec<UserId>, StoreError> {
        self.inner
            .super_admins
            .iter()
            .map(|item| {
                let (_, value) = item?;
                codec::decode::<SuperAdminRecord>(RecordKind::SuperAdmin, &value)
                    .map(|r| r.user)
                    .map_err(|e| e.at("super admin".into()))
            })
            .collect()
    }

    /// Adds a super admin (not durable until [`Store::commit`] resolves).
    pub fn put_super_admin(&self, user: &UserId) -> Result<(), StoreError> {
        let value = codec::encode(
            RecordKind::SuperAdmin,
            &SuperAdminRecord { user: user.clone() },
        )?;
        self.inner.super_admins.insert(user.as_str(), value)?;
        Ok(())
    }

    /// Removes a super admin; true if it was one.
    pub fn remove_super_admin(&self, user: &UserId) -> Result<bool, StoreError> {
        Ok(self.inner.super_admins.remove(user.as_str())?.is_some())
    }
}

/// Opens sled, waiting a little if the directory's lock is still held: sled releases it from its
/// own background threads a moment after the previous store in this process was dropped. A
/// lock held by another live store (or process) is still an error, after `LOCK_WAIT`.
fn open_with_retry(config: &sled::Config) -> Result<sled::Db, StoreError> {
    const LOCK_WAIT: Duration = Duration::from_secs(2);
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match config.open() {
            Ok(db) => return Ok(db),
            // sled reports a held lock as an `Other` IO error with this text.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn room_key_display(key: &[u8]) -> String {
    match <[u8; 8]>::try_from(key) {
        Ok(bytes) => u64::from_be_bytes(bytes).to_string(),
        Err(_) => format!("{key:?}"),
    }
}

#[cfg(test)]
mod tests;
