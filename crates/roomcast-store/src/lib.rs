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

use std::ops::Bound;

use roomcast_model::{MessageData, RoomId, RoomRecord, Timestamp, UserId};
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
    /// Retained messages: key = room id (8 bytes BE) + sequence number (8 bytes BE), so that a
    /// room's messages are one contiguous range in sequence order.
    messages: sled::Tree,
    /// Local copies: key = user id + 0x00 + room id (8 bytes BE).
    copies: sled::Tree,
    committer: Option<Committer>,
    db: sled::Db,
}

impl Store {
    /// Opens (or creates) the store described by `config`.
    pub fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        let flush_every = match config.durability {
            Durability::Buffered { flush_every } => Some(
                u64::try_from(flush_every.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            ),
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
        let messages = db.open_tree("messages/v1")?;
        let copies = db.open_tree("copies/v1")?;
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
                messages,
                copies,
                committer,
                db,
            }),
        })
    }

    /// A future that resolves once every write made before this call is durable, whoever made
    /// it: a call that changed nothing, or a read, awaits it too, so that no caller is told `Ok`
    /// about state that a crash could still take back. It resolves at once when every write so
    /// far is already durable.
    pub fn commit(&self) -> Commit {
        match &self.inner.committer {
            Some(c) => c.request(),
            None => Commit::ready(Ok(())),
        }
    }

    /// Counts a write applied to sled, for the committer to know what a flush covers.
    fn wrote(&self) {
        if let Some(c) = &self.inner.committer {
            c.wrote();
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
        self.wrote();
        Ok(())
    }

    /// Deletes a room's record (not durable until [`Store::commit`] resolves).
    pub fn delete_room(&self, id: RoomId) -> Result<(), StoreError> {
        self.inner.rooms.remove(id.as_u64().to_be_bytes())?;
        self.wrote();
        Ok(())
    }

    /// Writes a room message (not durable until [`Store::commit`] resolves).
    pub fn put_message(&self, message: &MessageData) -> Result<(), StoreError> {
        let value = codec::encode(RecordKind::Message, message)?;
        self.inner
            .messages
            .insert(message_key(message.room_id, message.seq), value)?;
        self.wrote();
        Ok(())
    }

    /// Up to `limit` of `room`'s messages with sequence numbers in `range`, in sequence order
    /// (`newest_first`: reversed). Reads only what it returns (and one more to look ahead).
    pub fn messages(
        &self,
        room: RoomId,
        range: (Bound<u64>, Bound<u64>),
        newest_first: bool,
        limit: usize,
    ) -> Result<Vec<MessageData>, StoreError> {
        let bound = |b: Bound<u64>| match b {
            Bound::Included(s) => Bound::Included(message_key(room, s)),
            Bound::Excluded(s) => Bound::Excluded(message_key(room, s)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let (lo, hi) = (
            match range.0 {
                Bound::Unbounded => Bound::Included(message_key(room, 0)),
                b => bound(b),
            },
            match range.1 {
                Bound::Unbounded => Bound::Included(message_key(room, u64::MAX)),
                b => bound(b),
            },
        );
        let iter = self.inner.messages.range::<[u8; 16], _>((lo, hi));
        let decode = |item: sled::Result<(sled::IVec, sled::IVec)>| {
            let (key, value) = item?;
            codec::decode::<MessageData>(RecordKind::Message, &value)
                .map_err(|e| e.at(format!("message {}", message_key_display(&key))))
        };
        if newest_first {
            iter.rev().take(limit).map(decode).collect()
        } else {
            iter.take(limit).map(decode).collect()
        }
    }

    /// The sequence numbers of `room`'s oldest and newest retained messages.
    pub fn message_bounds(&self, room: RoomId) -> Result<Option<(u64, u64)>, StoreError> {
        let range = message_key(room, 0)..=message_key(room, u64::MAX);
        let first = self
            .inner
            .messages
            .range(range.clone())
            .next()
            .transpose()?;
        let last = self.inner.messages.range(range).next_back().transpose()?;
        Ok(match (first, last) {
            (Some((a, _)), Some((b, _))) => Some((seq_of_key(&a), seq_of_key(&b))),
            _ => None,
        })
    }

    /// Deletes `room`'s messages with sequence numbers below `seq`; returns how many.
    pub fn delete_messages_before(&self, room: RoomId, seq: u64) -> Result<usize, StoreError> {
        let keys: Vec<sled::IVec> = self
            .inner
            .messages
            .range(message_key(room, 0)..message_key(room, seq))
            .keys()
            .collect::<Result<_, _>>()?;
        for k in &keys {
            self.inner.messages.remove(k)?;
            self.wrote();
        }
        Ok(keys.len())
    }

    /// Deletes `room`'s messages older than `before` (server time), oldest first, stopping at
    /// the first newer one; returns how many.
    pub fn delete_messages_older_than(
        &self,
        room: RoomId,
        before: Timestamp,
    ) -> Result<usize, StoreError> {
        let mut deleted = 0;
        for item in self
            .inner
            .messages
            .range(message_key(room, 0)..=message_key(room, u64::MAX))
        {
            let (key, value) = item?;
            let message: MessageData = codec::decode(RecordKind::Message, &value)?;
            if message.server_time >= before {
                break;
            }
            self.inner.messages.remove(key)?;
            self.wrote();
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Writes a user's local copy of a room's conversation.
    pub fn put_copy(&self, copy: &LocalCopy) -> Result<(), StoreError> {
        let value = codec::encode(RecordKind::Copy, copy)?;
        self.inner
            .copies
            .insert(copy_key(&copy.user, copy.room), value)?;
        self.wrote();
        Ok(())
    }

    /// A user's local copy of a room's conversation, if any.
    pub fn copy(&self, user: &UserId, room: RoomId) -> Result<Option<LocalCopy>, StoreError> {
        match self.inner.copies.get(copy_key(user, room))? {
            Some(v) => codec::decode(RecordKind::Copy, &v)
                .map(Some)
                .map_err(|e| e.at(format!("copy of room {room} for {user}"))),
            None => Ok(None),
        }
    }

    /// Deletes a user's local copy of a room's conversation.
    pub fn delete_copy(&self, user: &UserId, room: RoomId) -> Result<(), StoreError> {
        self.inner.copies.remove(copy_key(user, room))?;
        self.wrote();
        Ok(())
    }

    /// Closes every local copy's span left open by a crash (its user was in the room when the
    /// process died, and membership does not survive a restart) at the room's last stored
    /// message, so that the copy does not gain messages sent after its user was gone. Returns
    /// how many copies it closed; the writes are durable once a commit resolves.
    pub fn close_open_copies(&self) -> Result<usize, StoreError> {
        let mut closed = 0;
        for item in self.inner.copies.iter() {
            let (key, value) = item?;
            let mut copy: LocalCopy = match codec::decode(RecordKind::Copy, &value) {
                Ok(copy) => copy,
                Err(e) => {
                    tracing::error!(error = %e.at(format!("copy {key:?}")), "skipping a local copy that cannot be read");
                    continue;
                }
            };
            let Some(&(from, None)) = copy.spans.last() else {
                continue;
            };
            let last = self.message_bounds(copy.room)?.map_or(0, |(_, last)| last);
            copy.spans.pop();
            if last >= from {
                copy.spans.push((from, Some(last)));
            }
            if copy.spans.is_empty() {
                self.delete_copy(&copy.user, copy.room)?;
            } else {
                self.put_copy(&copy)?;
            }
            closed += 1;
        }
        Ok(closed)
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
        self.wrote();
        Ok(())
    }

    /// Removes a super admin; true if it was one.
    pub fn remove_super_admin(&self, user: &UserId) -> Result<bool, StoreError> {
        let was = self.inner.super_admins.remove(user.as_str())?.is_some();
        self.wrote();
        Ok(was)
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

fn message_key(room: RoomId, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&room.as_u64().to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn seq_of_key(key: &[u8]) -> u64 {
    key.get(8..16)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes)
}

fn message_key_display(key: &[u8]) -> String {
    format!(
        "{}#{}",
        room_key_display(&key[..key.len().min(8)]),
        seq_of_key(key)
    )
}

fn copy_key(user: &UserId, room: RoomId) -> Vec<u8> {
    let mut k = Vec::with_capacity(user.as_str().len() + 9);
    k.extend_from_slice(user.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(&room.as_u64().to_be_bytes());
    k
}

/// A user's local copy of a room's conversation: the spans of the room's sequence numbers it was
/// a member for. The messages themselves are stored once per room; a copy only says which of
/// them the user has, so keeping or deleting a copy is one small record whatever its length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalCopy {
    /// The user.
    pub user: UserId,
    /// The room.
    pub room: RoomId,
    /// Inclusive spans of sequence numbers; the last one's end is `None` while the user is in
    /// the room.
    pub spans: Vec<(u64, Option<u64>)>,
}

fn room_key_display(key: &[u8]) -> String {
    match <[u8; 8]>::try_from(key) {
        Ok(bytes) => u64::from_be_bytes(bytes).to_string(),
        Err(_) => format!("{key:?}"),
    }
}

#[cfg(test)]
mod tests;
