//! The record codec: the only module that names bincode.
//!
//! Every value stored is an envelope:
//!
//! | bytes | field |
//! |---|---|
//! | 2 | magic `b"RC"` |
//! | 1 | format version (1 = bincode 2.0.1, standard config, via serde) |
//! | 1 | record kind ([`RecordKind`]) |
//! | 4 | payload length, little endian |
//! | 4 | CRC-32 of the eight bytes above and the payload, little endian |
//! | n | payload |
//!
//! Decoding checks every field before it touches the payload, and bincode decodes with a size
//! limit, so a corrupt or hostile record is an error, never a panic or a huge allocation. A later
//! format gets a new version number; old versions stay decodable here.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::StoreError;

const MAGIC: [u8; 2] = *b"RC";
/// The version this build writes.
pub const FORMAT_BINCODE2: u8 = 1;
/// Size of the envelope's header in bytes.
pub const HEADER_LEN: usize = 12;
/// Largest payload accepted, in bytes.
pub const MAX_PAYLOAD: usize = 4 * 1024 * 1024;

/// What a record holds; a record read as the wrong kind is corrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// A room's record in the first layout (before rooms had their own limits): read, never
    /// written.
    Room = 1,
    /// A super admin.
    SuperAdmin = 2,
    /// A retained room message in the first layout (before recall): read, never written.
    Message = 3,
    /// A user's local copy of a room's conversation.
    Copy = 4,
    /// A room's last sequence number (`u64`).
    RoomSeq = 5,
    /// The write mark (`u64`).
    Mark = 6,
    /// A room's record in the second layout (before live moderation): read, never written.
    RoomV2 = 7,
    /// An entry of a room's audit log ([`roomcast_model::AuditEntry`]).
    Audit = 8,
    /// A room's [`roomcast_model::RoomRecord`].
    RoomV3 = 9,
    /// A retained room message in the second layout (with its recall, before shadow bans):
    /// read, never written.
    MessageV2 = 10,
    /// A message's idempotency key ([`crate::IdempotencyRecord`]).
    Idempotency = 11,
    /// A retained room message in the third layout (with its recall and shadow mark, before
    /// hold for review): read, never written.
    MessageV3 = 12,
    /// A retained room message ([`roomcast_model::MessageData`], with its recall, shadow mark
    /// and hold for review).
    MessageV4 = 13,
    /// A write set, as a cluster's log carries it ([`crate::WriteSet::encode`]).
    WriteSet = 14,
    /// A frame between the nodes of a cluster (a call, its answer, a room's delivery).
    ClusterFrame = 15,
    /// Cluster mode: a member's departure from a room ([`crate::Departure`]).
    Departure = 16,
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_PAYLOAD>()
}

/// Encodes `value` as a record of `kind`.
pub fn encode<T: Serialize>(kind: RecordKind, value: &T) -> Result<Vec<u8>, StoreError> {
    let payload = bincode::serde::encode_to_vec(value, config())
        .map_err(|e| StoreError::Encode(e.to_string()))?;
    if payload.len() > MAX_PAYLOAD {
        return Err(StoreError::Encode(format!(
            "payload of {} bytes is over the limit of {MAX_PAYLOAD}",
            payload.len()
        )));
    }
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_BINCODE2);
    out.push(kind as u8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out[..8]);
    crc.update(&payload);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Decodes a record of `kind`, checking magic, version, kind, length, checksum and size limit.
pub fn decode<T: DeserializeOwned>(kind: RecordKind, bytes: &[u8]) -> Result<T, StoreError> {
    if bytes.len() < HEADER_LEN {
        return Err(StoreError::corrupt(format!(
            "{} bytes is shorter than the header",
            bytes.len()
        )));
    }
    if bytes[..2] != MAGIC {
        return Err(StoreError::corrupt("bad magic"));
    }
    let version = bytes[2];
    if version != FORMAT_BINCODE2 {
        return Err(StoreError::corrupt(format!(
            "unknown format version {version}"
        )));
    }
    if bytes[3] != kind as u8 {
        return Err(StoreError::corrupt(format!(
            "record kind {} where {:?} was expected",
            bytes[3], kind
        )));
    }
    let len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(StoreError::corrupt(format!(
            "payload length {len} is over the limit"
        )));
    }
    let payload = &bytes[HEADER_LEN..];
    if payload.len() != len {
        return Err(StoreError::corrupt(format!(
            "payload is {} bytes, header says {len}",
            payload.len()
        )));
    }
    let stored = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bytes[..8]);
    crc.update(payload);
    if crc.finalize() != stored {
        return Err(StoreError::corrupt("checksum mismatch"));
    }
    let (value, used) = bincode::serde::decode_from_slice(payload, config())
        .map_err(|e| StoreError::corrupt(format!("payload does not decode: {e}")))?;
    if used != payload.len() {
        return Err(StoreError::corrupt(format!(
            "{} trailing bytes after the payload",
            payload.len() - used
        )));
    }
    Ok(value)
}

/// Encodes a room record in the current layout.
pub fn encode_room(record: &roomcast_model::RoomRecord) -> Result<Vec<u8>, StoreError> {
    encode(RecordKind::RoomV3, record)
}

/// Decodes a room record of any layout: the record's kind says which.
pub fn decode_room(bytes: &[u8]) -> Result<roomcast_model::RoomRecord, StoreError> {
    match bytes.get(3) {
        Some(&k) if k == RecordKind::Room as u8 => {
            decode::<legacy::RoomRecordV1>(RecordKind::Room, bytes).map(Into::into)
        }
        Some(&k) if k == RecordKind::RoomV2 as u8 => {
            decode::<legacy::RoomRecordV2>(RecordKind::RoomV2, bytes).map(Into::into)
        }
        _ => decode(RecordKind::RoomV3, bytes),
    }
}

/// Encodes a retained message in the current layout.
pub fn encode_message(message: &roomcast_model::MessageData) -> Result<Vec<u8>, StoreError> {
    encode(RecordKind::MessageV4, message)
}

/// Decodes a retained message of any layout: the record's kind says which.
pub fn decode_message(bytes: &[u8]) -> Result<roomcast_model::MessageData, StoreError> {
    match bytes.get(3) {
        Some(&k) if k == RecordKind::Message as u8 => {
            decode::<legacy::MessageDataV1>(RecordKind::Message, bytes).map(Into::into)
        }
        Some(&k) if k == RecordKind::MessageV2 as u8 => {
            decode::<legacy::MessageDataV2>(RecordKind::MessageV2, bytes).map(Into::into)
        }
        Some(&k) if k == RecordKind::MessageV3 as u8 => {
            decode::<legacy::MessageDataV3>(RecordKind::MessageV3, bytes).map(Into::into)
        }
        _ => decode(RecordKind::MessageV4, bytes),
    }
}

/// Earlier layouts, kept to read stores written by earlier versions.
mod legacy {
    use std::collections::{BTreeMap, BTreeSet};

    use roomcast_model::{
        AttributeValue, MessageBody, MessageData, MessageId, MessagePriority, Recall,
        RoomAttribute, RoomId, RoomLimits, RoomRecord, RoomSpec, Timestamp, UserId,
    };
    use serde::Deserialize;

    /// `RoomSpec` before rooms had their own limits: the offline grace was the only one.
    #[derive(Debug, Deserialize)]
    pub struct RoomSpecV1 {
        name: String,
        description: String,
        welcome_message: String,
        max_users: u32,
        offline_grace_ms: Option<u64>,
    }

    /// `RoomRecord` before rooms had their own limits.
    #[derive(Debug, Deserialize)]
    pub struct RoomRecordV1 {
        id: RoomId,
        spec: RoomSpecV1,
        owner: UserId,
        admins: Vec<UserId>,
        announcement: String,
        all_muted: bool,
        mute_list: BTreeMap<UserId, Timestamp>,
        allow_list: BTreeSet<UserId>,
        block_list: BTreeSet<UserId>,
        attributes: BTreeMap<String, RoomAttribute>,
        created_at: Timestamp,
    }

    impl From<RoomRecordV1> for RoomRecord {
        fn from(v1: RoomRecordV1) -> RoomRecord {
            let mut limits = RoomLimits::default();
            if let Some(ms) = v1.spec.offline_grace_ms {
                limits = limits.with_offline_grace(std::time::Duration::from_millis(ms));
            }
            RoomRecord {
                id: v1.id,
                spec: RoomSpec {
                    name: v1.spec.name,
                    description: v1.spec.description,
                    welcome_message: v1.spec.welcome_message,
                    max_users: v1.spec.max_users,
                },
                owner: v1.owner,
                admins: v1.admins,
                announcement: v1.announcement,
                all_muted: v1.all_muted,
                mute_list: v1.mute_list,
                allow_list: v1.allow_list,
                block_list: v1.block_list,
                attributes: v1.attributes,
                created_at: v1.created_at,
                limits,
                live: Default::default(),
            }
        }
    }

    /// `RoomRecord` before live moderation.
    #[derive(Debug, Deserialize)]
    pub struct RoomRecordV2 {
        id: RoomId,
        spec: RoomSpec,
        owner: UserId,
        admins: Vec<UserId>,
        announcement: String,
        all_muted: bool,
        mute_list: BTreeMap<UserId, Timestamp>,
        allow_list: BTreeSet<UserId>,
        block_list: BTreeSet<UserId>,
        attributes: BTreeMap<String, RoomAttribute>,
        created_at: Timestamp,
        limits: RoomLimits,
    }

    impl From<RoomRecordV2> for RoomRecord {
        fn from(v2: RoomRecordV2) -> RoomRecord {
            RoomRecord {
                id: v2.id,
                spec: v2.spec,
                owner: v2.owner,
                admins: v2.admins,
                announcement: v2.announcement,
                all_muted: v2.all_muted,
                mute_list: v2.mute_list,
                allow_list: v2.allow_list,
                block_list: v2.block_list,
                attributes: v2.attributes,
                created_at: v2.created_at,
                limits: v2.limits,
                live: Default::default(),
            }
        }
    }

    /// `MessageData` before messages could be recalled.
    #[derive(Debug, Deserialize)]
    pub struct MessageDataV1 {
        msg_id: MessageId,
        room_id: RoomId,
        from: UserId,
        seq: u64,
        server_time: Timestamp,
        body: MessageBody,
        attributes: BTreeMap<String, AttributeValue>,
        priority: MessagePriority,
    }

    impl From<MessageDataV1> for MessageData {
        fn from(v1: MessageDataV1) -> MessageData {
            MessageData {
                msg_id: v1.msg_id,
                room_id: v1.room_id,
                from: v1.from,
                seq: v1.seq,
                server_time: v1.server_time,
                body: v1.body,
                attributes: v1.attributes,
                priority: v1.priority,
                recalled: None,
                shadowed: false,
                held_until: None,
            }
        }
    }

    /// `MessageData` before shadow bans.
    #[derive(Debug, Deserialize)]
    pub struct MessageDataV2 {
        msg_id: MessageId,
        room_id: RoomId,
        from: UserId,
        seq: u64,
        server_time: Timestamp,
        body: MessageBody,
        attributes: BTreeMap<String, AttributeValue>,
        priority: MessagePriority,
        recalled: Option<Recall>,
    }

    impl From<MessageDataV2> for MessageData {
        fn from(v2: MessageDataV2) -> MessageData {
            MessageData {
                msg_id: v2.msg_id,
                room_id: v2.room_id,
                from: v2.from,
                seq: v2.seq,
                server_time: v2.server_time,
                body: v2.body,
                attributes: v2.attributes,
                priority: v2.priority,
                recalled: v2.recalled,
                shadowed: false,
                held_until: None,
            }
        }
    }

    /// `MessageData` before hold for review.
    #[derive(Debug, Deserialize)]
    pub struct MessageDataV3 {
        msg_id: MessageId,
        room_id: RoomId,
        from: UserId,
        seq: u64,
        server_time: Timestamp,
        body: MessageBody,
        attributes: BTreeMap<String, AttributeValue>,
        priority: MessagePriority,
        recalled: Option<Recall>,
        shadowed: bool,
    }

    impl From<MessageDataV3> for MessageData {
        fn from(v3: MessageDataV3) -> MessageData {
            MessageData {
                msg_id: v3.msg_id,
                room_id: v3.room_id,
                from: v3.from,
                seq: v3.seq,
                server_time: v3.server_time,
                body: v3.body,
                attributes: v3.attributes,
                priority: v3.priority,
                recalled: v3.recalled,
                shadowed: v3.shadowed,
                held_until: None,
            }
        }
    }
}
