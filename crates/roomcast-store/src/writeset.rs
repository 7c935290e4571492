//! Write sets: everything one command stores, applied to sled as one atomic batch.
//!
//! A room actor builds a [`WriteSet`] from what its command changed (records are encoded there,
//! off the store's thread) and hands it to the store, which applies it on its own thread. Steps
//! that depend on what is stored (retention, which reads the oldest messages; local copies, read
//! then changed) are resolved on the store's thread, against the state every earlier write set
//! left, and go into the same batch: a command's writes are applied whole or not at all.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use roomcast_model::{AuditEntry, MessageData, Recall, RoomId, RoomRecord, Timestamp, UserId};

use crate::codec::{self, RecordKind};
use crate::{keys, LocalCopy, StoreError};

/// One step of a write set. Serializable: a cluster's log carries write sets (see
/// [`crate::Replicator`]), and every node applies them alike.
#[derive(Debug, Serialize, Deserialize)]
enum Op {
    /// An encoded value under a key.
    Put(Vec<u8>, Vec<u8>),
    /// A key removed.
    Remove(Vec<u8>),
    /// The room's record, last sequence number and messages removed.
    DeleteRoom(RoomId),
    /// The room's messages below a sequence number removed.
    TrimBefore(RoomId, u64),
    /// A retained message rewritten as recalled (its body gone), if it is still retained.
    Recall(RoomId, u64, Recall),
    /// The room's oldest messages, older than a time, removed.
    TrimOlderThan(RoomId, Timestamp),
    /// A span opened in a user's local copy of a room, after every earlier span.
    OpenCopy {
        user: UserId,
        room: RoomId,
        from: u64,
    },
    /// A user's membership of a room ended at `last`: its copy is deleted, or its open span
    /// closed (a span from `from` is added if it has none open).
    CloseCopy {
        user: UserId,
        room: RoomId,
        last: u64,
        from: u64,
        delete: bool,
    },
}

/// What one command stores. Empty write sets cost nothing.
#[derive(Debug, Default, Serialize, Deserialize)]
#[must_use = "a write set does nothing until it is submitted"]
pub struct WriteSet {
    ops: Vec<Op>,
    /// The room it is about (the first its steps name), if any.
    room: Option<RoomId>,
}

impl WriteSet {
    /// An empty write set.
    pub fn new() -> WriteSet {
        WriteSet::default()
    }

    /// True if it stores nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// How many steps it has.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// The room it is about: the first room one of its steps names (a room actor's write sets
    /// name only their own room); `None` for engine-wide ones (super admins).
    pub fn room(&self) -> Option<RoomId> {
        self.room
    }

    fn about(&mut self, room: RoomId) {
        self.room.get_or_insert(room);
    }

    /// The write set as one record (a versioned, checksummed envelope), for a cluster's log.
    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        codec::encode(RecordKind::WriteSet, self)
    }

    /// A write set from [`WriteSet::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Result<WriteSet, StoreError> {
        codec::decode(RecordKind::WriteSet, bytes)
    }

    /// A snapshot of `room` as write sets of about `max_bytes` each (at least one key each):
    /// the first deletes what the store held of the room, the others put `state` back
    /// ([`crate::Reader::room_state`]). Applied in order, they leave the room as it was read.
    pub fn snapshot(room: RoomId, state: crate::RoomState, max_bytes: usize) -> Vec<WriteSet> {
        let mut parts = Vec::new();
        let mut part = WriteSet::new();
        part.delete_room(room);
        let mut size = 0;
        for (key, value) in state {
            let len = key.len() + value.len() + 16;
            if size > 0 && size + len > max_bytes {
                parts.push(std::mem::take(&mut part));
                part.about(room);
                size = 0;
            }
            size += len;
            part.ops.push(Op::Put(key, value));
        }
        parts.push(part);
        parts
    }

    /// Stores a room's record.
    pub fn put_room(&mut self, record: &RoomRecord) -> Result<(), StoreError> {
        let value = codec::encode_room(record)?;
        self.about(record.id);
        self.ops
            .push(Op::Put(keys::room(record.id).to_vec(), value));
        Ok(())
    }

    /// Rewrites `room`'s message `seq` as recalled by `recall`, without its body and
    /// attributes; nothing if the room no longer retains it.
    pub fn recall_message(&mut self, room: RoomId, seq: u64, recall: Recall) {
        self.about(room);
        self.ops.push(Op::Recall(room, seq, recall));
    }

    /// Deletes a room: its record, its sequence number, every retained message and its audit
    /// log.
    pub fn delete_room(&mut self, room: RoomId) {
        self.about(room);
        self.ops.push(Op::DeleteRoom(room));
    }

    /// Stores a message, and its room's last sequence number with it.
    pub fn put_message(&mut self, message: &MessageData) -> Result<(), StoreError> {
        let value = codec::encode_message(message)?;
        let seq = codec::encode(RecordKind::RoomSeq, &message.seq)?;
        self.about(message.room_id);
        self.ops.push(Op::Put(
            keys::message(message.room_id, message.seq).to_vec(),
            value,
        ));
        self.ops
            .push(Op::Put(keys::seq(message.room_id).to_vec(), seq));
        Ok(())
    }

    /// Stores an entry of `room`'s audit log, and drops the one `retention` entries older (the
    /// log keeps the newest `retention`; 0 keeps none).
    pub fn put_audit(
        &mut self,
        room: RoomId,
        entry: &AuditEntry,
        retention: usize,
    ) -> Result<(), StoreError> {
        self.about(room);
        if retention > 0 {
            let value = codec::encode(RecordKind::Audit, entry)?;
            self.ops
                .push(Op::Put(keys::audit(room, entry.seq).to_vec(), value));
        }
        let old = entry.seq.checked_sub(retention as u64).filter(|&s| s > 0);
        if let Some(old) = old.filter(|_| retention > 0) {
            self.ops.push(Op::Remove(keys::audit(room, old).to_vec()));
        }
        Ok(())
    }

    /// Stores a message's idempotency key (in the write set of the message, so atomically with
    /// it).
    pub fn put_idempotency(&mut self, record: &crate::IdempotencyRecord) -> Result<(), StoreError> {
        let value = codec::encode(RecordKind::Idempotency, record)?;
        self.about(record.room);
        self.ops.push(Op::Put(
            keys::idempotency(record.room, &record.from, &record.key),
            value,
        ));
        Ok(())
    }

    /// Cluster mode: stores a member's departure from a room (replacing its previous one).
    pub fn put_departure(&mut self, record: &crate::Departure) -> Result<(), StoreError> {
        let value = codec::encode(RecordKind::Departure, record)?;
        self.about(record.room);
        self.ops
            .push(Op::Put(keys::departure(record.room, &record.user), value));
        Ok(())
    }

    /// Cluster mode: forgets a member's departure from a room (it is old enough).
    pub fn remove_departure(&mut self, room: RoomId, user: &UserId) {
        self.about(room);
        self.ops.push(Op::Remove(keys::departure(room, user)));
    }

    /// Forgets an idempotency key (its window ended).
    pub fn remove_idempotency(&mut self, room: RoomId, from: &UserId, key: &str) {
        self.about(room);
        self.ops
            .push(Op::Remove(keys::idempotency(room, from, key)));
    }

    /// Deletes `room`'s messages with sequence numbers below `seq`.
    pub fn trim_before(&mut self, room: RoomId, seq: u64) {
        self.about(room);
        self.ops.push(Op::TrimBefore(room, seq));
    }

    /// Deletes `room`'s messages older than `before` (server time), oldest first, stopping at
    /// the first newer one.
    pub fn trim_older_than(&mut self, room: RoomId, before: Timestamp) {
        self.about(room);
        self.ops.push(Op::TrimOlderThan(room, before));
    }

    /// Opens a span of `user`'s kept local copy of `room`, from `from`, or from after the
    /// copy's earlier spans if they reach further (a join's replay may reach back into them):
    /// spans never overlap.
    pub fn open_copy(&mut self, user: UserId, room: RoomId, from: u64) {
        self.about(room);
        self.ops.push(Op::OpenCopy { user, room, from });
    }

    /// `user` left `room`, whose last message is `last`: its local copy is deleted (`delete`),
    /// or its open span is closed at `last` (a span `from..=last` is added if none is open).
    pub fn close_copy(&mut self, user: UserId, room: RoomId, last: u64, from: u64, delete: bool) {
        self.about(room);
        self.ops.push(Op::CloseCopy {
            user,
            room,
            last,
            from,
            delete,
        });
    }

    /// Makes `user` a super admin.
    pub fn put_super_admin(&mut self, user: &UserId) -> Result<(), StoreError> {
        let value = codec::encode(
            RecordKind::SuperAdmin,
            &crate::SuperAdminRecord { user: user.clone() },
        )?;
        self.ops.push(Op::Put(keys::admin(user), value));
        Ok(())
    }

    /// Takes super-admin rights from `user`.
    pub fn remove_super_admin(&mut self, user: &UserId) {
        self.ops.push(Op::Remove(keys::admin(user)));
    }
}

/// A sled batch that knows whether it holds anything.
#[derive(Default)]
pub(crate) struct Resolved {
    batch: sled::Batch,
    writes: usize,
}

impl Resolved {
    fn insert(&mut self, key: impl Into<sled::IVec>, value: impl Into<sled::IVec>) {
        self.writes += 1;
        self.batch.insert(key, value);
    }

    fn remove(&mut self, key: impl Into<sled::IVec>) {
        self.writes += 1;
        self.batch.remove(key);
    }

    /// True if the steps came to no write at all (say, deleting a copy that was never stored).
    pub(crate) fn is_empty(&self) -> bool {
        self.writes == 0
    }

    /// Adds the write mark.
    pub(crate) fn put_mark(&mut self, mark: u64) -> Result<(), StoreError> {
        let value = codec::encode(RecordKind::Mark, &mark)?;
        self.insert(keys::MARK.to_vec(), value);
        Ok(())
    }

    pub(crate) fn into_batch(self) -> sled::Batch {
        self.batch
    }
}

/// Resolves the steps of `sets`, in order, against `tree` into one batch: each step sees what
/// the steps before it (in any of the sets) did.
pub(crate) fn batch_of(sets: &[WriteSet], tree: &sled::Tree) -> Result<Resolved, StoreError> {
    {
        let mut batch = Resolved::default();
        // Copies read and changed in this set, so that two steps on one copy see each other.
        let mut copies: HashMap<Vec<u8>, Option<LocalCopy>> = HashMap::new();
        let read_copy = |copies: &mut HashMap<Vec<u8>, Option<LocalCopy>>,
                         key: &Vec<u8>|
         -> Result<Option<LocalCopy>, StoreError> {
            if let Some(c) = copies.get(key) {
                return Ok(c.clone());
            }
            Ok(match tree.get(key)? {
                Some(v) => Some(codec::decode(RecordKind::Copy, &v)?),
                None => None,
            })
        };
        // Messages (and audit entries, idempotency keys) put earlier in this batch, with their
        // values: retention, deletion and recalls later in it see them too.
        let mut put_messages: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = Default::default();
        let unput = |batch: &mut Resolved,
                     put: &mut std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
                     range: std::ops::Range<Vec<u8>>| {
            let mine: Vec<Vec<u8>> = put.range(range).map(|(k, _)| k.clone()).collect();
            for key in mine {
                put.remove(&key);
                batch.remove(key);
            }
        };
        // Stored messages this batch removes: a recall later in it must not bring one back.
        let mut gone: std::collections::HashSet<sled::IVec> = Default::default();
        for op in sets.iter().flat_map(|s| &s.ops) {
            match op {
                Op::Put(k, v) => {
                    if matches!(
                        k.first(),
                        Some(&keys::MESSAGE)
                            | Some(&keys::AUDIT)
                            | Some(&keys::IDEMPOTENCY)
                            | Some(&keys::DEPARTURE)
                    ) {
                        put_messages.insert(k.clone(), v.clone());
                    }
                    if k.first() == Some(&keys::COPY) {
                        // A copy put whole (a snapshot): later steps on it see it.
                        copies.insert(k.clone(), Some(codec::decode(RecordKind::Copy, v)?));
                    }
                    batch.insert(k.as_slice(), v.as_slice())
                }
                Op::Remove(k) => {
                    // A message removed here stays removed for a recall later in the batch.
                    if put_messages.remove(k).is_some() || k.first() == Some(&keys::MESSAGE) {
                        gone.insert(sled::IVec::from(k.as_slice()));
                    }
                    batch.remove(k.as_slice())
                }
                &Op::DeleteRoom(room) => {
                    batch.remove(&keys::room(room));
                    batch.remove(&keys::seq(room));
                    for key in tree
                        .range(keys::message(room, 0)..=keys::message(room, u64::MAX))
                        .keys()
                    {
                        let key = key?;
                        gone.insert(key.clone());
                        batch.remove(key);
                    }
                    let all = keys::message(room, 0).to_vec()..keys::message_end(room);
                    unput(&mut batch, &mut put_messages, all);
                    // Its audit log goes with it.
                    for key in tree
                        .range(keys::audit(room, 0)..=keys::audit(room, u64::MAX))
                        .keys()
                    {
                        batch.remove(key?);
                    }
                    let log = keys::audit(room, 0).to_vec()..keys::audit(room, u64::MAX).to_vec();
                    unput(&mut batch, &mut put_messages, log);
                    // And its idempotency keys.
                    let prefix = keys::idempotency_prefix(room);
                    for key in tree.scan_prefix(prefix).keys() {
                        batch.remove(key?);
                    }
                    let mut end = prefix.to_vec();
                    end.push(0xff);
                    unput(&mut batch, &mut put_messages, prefix.to_vec()..end);
                    // And its members' departures.
                    let prefix = keys::departure_prefix(room);
                    for key in tree.scan_prefix(prefix).keys() {
                        batch.remove(key?);
                    }
                    let mut end = prefix.to_vec();
                    end.push(0xff);
                    unput(&mut batch, &mut put_messages, prefix.to_vec()..end);
                }
                &Op::TrimBefore(room, seq) => {
                    for key in tree
                        .range(keys::message(room, 0)..keys::message(room, seq))
                        .keys()
                    {
                        let key = key?;
                        gone.insert(key.clone());
                        batch.remove(key);
                    }
                    let below = keys::message(room, 0).to_vec()..keys::message(room, seq).to_vec();
                    unput(&mut batch, &mut put_messages, below);
                }
                Op::Recall(room, seq, recall) => {
                    // The message as the steps before this one left it: put earlier in the batch
                    // (a cluster's log replayed, or a group commit, holds a message and its
                    // recall together), else from the tree, unless retention or the room's
                    // deletion earlier in the batch removed it.
                    let key = keys::message(*room, *seq);
                    let value = match put_messages.get(&key[..]) {
                        Some(value) => Some(sled::IVec::from(value.as_slice())),
                        None => match tree.get(key)? {
                            Some(value) if !gone.contains(&key[..]) => Some(value),
                            _ => None,
                        },
                    };
                    if let Some(value) = value {
                        let mut message = codec::decode_message(&value)
                            .map_err(|e| e.at(keys::describe(&key)))?;
                        message.recall(recall.clone());
                        let value = codec::encode_message(&message)?;
                        put_messages.insert(key.to_vec(), value.clone());
                        batch.insert(key.to_vec(), value);
                    }
                }
                &Op::TrimOlderThan(room, before) => {
                    for item in tree.range(keys::message(room, 0)..=keys::message(room, u64::MAX)) {
                        let (key, value) = item?;
                        let message: MessageData = codec::decode_message(&value)
                            .map_err(|e| e.at(keys::describe(&key)))?;
                        if message.server_time >= before {
                            break;
                        }
                        gone.insert(key.clone());
                        batch.remove(key);
                    }
                    // And those put earlier in this batch.
                    let mut older = Vec::new();
                    for (key, value) in
                        put_messages.range(keys::message(room, 0).to_vec()..keys::message_end(room))
                    {
                        let message =
                            codec::decode_message(value).map_err(|e| e.at(keys::describe(key)))?;
                        if message.server_time < before {
                            older.push(key.clone());
                        }
                    }
                    for key in older {
                        put_messages.remove(&key);
                        batch.remove(key);
                    }
                }
                &Op::OpenCopy {
                    ref user,
                    room,
                    from,
                } => {
                    let key = keys::copy(user, room);
                    let mut copy = read_copy(&mut copies, &key)?.unwrap_or_else(|| LocalCopy {
                        user: user.clone(),
                        room,
                        spans: Vec::new(),
                    });
                    let after_previous = copy
                        .spans
                        .iter()
                        .map(|(from, to)| to.unwrap_or(*from).saturating_add(1))
                        .max()
                        .unwrap_or(0);
                    copy.spans.push((from.max(after_previous), None));
                    batch.insert(key.clone(), codec::encode(RecordKind::Copy, &copy)?);
                    copies.insert(key, Some(copy));
                }
                &Op::CloseCopy {
                    ref user,
                    room,
                    last,
                    from,
                    delete,
                } => {
                    let key = keys::copy(user, room);
                    let stored = read_copy(&mut copies, &key)?;
                    match (delete, stored) {
                        (true, Some(_)) => {
                            batch.remove(key.clone());
                            copies.insert(key, None);
                        }
                        (true, None) => {}
                        (false, stored) => {
                            let mut copy = stored.unwrap_or_else(|| LocalCopy {
                                user: user.clone(),
                                room,
                                spans: Vec::new(),
                            });
                            match copy.spans.last_mut() {
                                Some((start, end @ None)) => {
                                    if *start <= last {
                                        *end = Some(last);
                                    } else {
                                        // Nothing was sent while it was in: no span.
                                        copy.spans.pop();
                                    }
                                }
                                _ if from <= last => copy.spans.push((from, Some(last))),
                                _ => {}
                            }
                            if copy.spans.is_empty() {
                                batch.remove(key.clone());
                                copies.insert(key, None);
                            } else {
                                batch.insert(key.clone(), codec::encode(RecordKind::Copy, &copy)?);
                                copies.insert(key, Some(copy));
                            }
                        }
                    }
                }
            }
        }
        Ok(batch)
    }
}
