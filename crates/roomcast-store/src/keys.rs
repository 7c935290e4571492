//! The key layout of the store's one tree (`data/v2`).
//!
//! Every record lives in one sled tree, so that everything one command stores is one atomic
//! batch. The first byte of a key says what the record is:
//!
//! | key | value |
//! |---|---|
//! | `r` + room id (8 bytes BE) | the room's [`roomcast_model::RoomRecord`] |
//! | `q` + room id | the room's last sequence number (`u64`) |
//! | `m` + room id + sequence number (8 bytes BE) | a retained [`roomcast_model::MessageData`] |
//! | `c` + user id + `0x00` + room id | a user's [`crate::LocalCopy`] of a room |
//! | `a` + user id | a super admin |
//! | `l` + room id + entry number (8 bytes BE) | an entry of the room's audit log ([`roomcast_model::AuditEntry`]) |
//! | `i` + room id + sender + `0x00` + key | a message's idempotency key ([`crate::IdempotencyRecord`]) |
//! | `d` + room id + user id | cluster mode: a member's latest departure from the room ([`crate::Departure`]) |
//! | `w` | the write mark: write groups applied, ever (`u64`) |
//!
//! Room ids and sequence numbers are big-endian, so a room's messages are one contiguous range
//! in sequence order, and rooms iterate oldest first.

use roomcast_model::{RoomId, UserId};

pub(crate) const ROOM: u8 = b'r';
pub(crate) const SEQ: u8 = b'q';
pub(crate) const MESSAGE: u8 = b'm';
pub(crate) const COPY: u8 = b'c';
pub(crate) const ADMIN: u8 = b'a';
pub(crate) const AUDIT: u8 = b'l';
pub(crate) const IDEMPOTENCY: u8 = b'i';
pub(crate) const DEPARTURE: u8 = b'd';
/// The write mark: how many write groups the store has applied, ever (see `mark.rs`).
pub(crate) const MARK: &[u8] = b"w";

pub(crate) fn room(id: RoomId) -> [u8; 9] {
    let mut k = [ROOM; 9];
    k[1..].copy_from_slice(&id.as_u64().to_be_bytes());
    k
}

pub(crate) fn seq(id: RoomId) -> [u8; 9] {
    let mut k = [SEQ; 9];
    k[1..].copy_from_slice(&id.as_u64().to_be_bytes());
    k
}

pub(crate) fn message(id: RoomId, seq: u64) -> [u8; 17] {
    let mut k = [MESSAGE; 17];
    k[1..9].copy_from_slice(&id.as_u64().to_be_bytes());
    k[9..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub(crate) fn audit(id: RoomId, seq: u64) -> [u8; 17] {
    let mut k = [AUDIT; 17];
    k[1..9].copy_from_slice(&id.as_u64().to_be_bytes());
    k[9..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The first key after every message key of `id`.
pub(crate) fn message_end(id: RoomId) -> Vec<u8> {
    let mut k = Vec::with_capacity(18);
    k.extend_from_slice(&message(id, u64::MAX));
    k.push(0);
    k
}

pub(crate) fn copy(user: &UserId, room: RoomId) -> Vec<u8> {
    let mut k = Vec::with_capacity(user.as_str().len() + 10);
    k.push(COPY);
    k.extend_from_slice(user.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(&room.as_u64().to_be_bytes());
    k
}

/// An idempotency key of `from` in `room`.
pub(crate) fn idempotency(room: RoomId, from: &UserId, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(10 + from.as_str().len() + key.len());
    k.push(IDEMPOTENCY);
    k.extend_from_slice(&room.as_u64().to_be_bytes());
    k.extend_from_slice(from.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

/// The prefix of every idempotency key of `room`.
pub(crate) fn idempotency_prefix(room: RoomId) -> [u8; 9] {
    let mut k = [IDEMPOTENCY; 9];
    k[1..].copy_from_slice(&room.as_u64().to_be_bytes());
    k
}

/// `user`'s departure from `room`.
pub(crate) fn departure(room: RoomId, user: &UserId) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + user.as_str().len());
    k.push(DEPARTURE);
    k.extend_from_slice(&room.as_u64().to_be_bytes());
    k.extend_from_slice(user.as_str().as_bytes());
    k
}

/// The prefix of every departure key of `room`.
pub(crate) fn departure_prefix(room: RoomId) -> [u8; 9] {
    let mut k = [DEPARTURE; 9];
    k[1..].copy_from_slice(&room.as_u64().to_be_bytes());
    k
}

pub(crate) fn admin(user: &UserId) -> Vec<u8> {
    let mut k = Vec::with_capacity(user.as_str().len() + 1);
    k.push(ADMIN);
    k.extend_from_slice(user.as_str().as_bytes());
    k
}

/// The room id in a `r`, `q`, `m`, `l`, `i` or `d` key.
pub(crate) fn room_of(key: &[u8]) -> Option<RoomId> {
    key.get(1..9)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(|b| RoomId::from_u64(u64::from_be_bytes(b)))
}

/// The sequence number in an `m` key.
pub(crate) fn seq_of(key: &[u8]) -> Option<u64> {
    key.get(9..17)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
}

/// How a key reads in a report.
pub(crate) fn describe(key: &[u8]) -> String {
    match key.first() {
        Some(&ROOM) => format!("room {}", fmt_room(key)),
        Some(&SEQ) => format!("sequence of room {}", fmt_room(key)),
        Some(&MESSAGE) => format!(
            "message {}#{}",
            fmt_room(key),
            seq_of(key).map_or_else(|| "?".into(), |s| s.to_string())
        ),
        Some(&COPY) => {
            let rest = &key[1..];
            let user = rest
                .iter()
                .position(|&b| b == 0)
                .map(|at| String::from_utf8_lossy(&rest[..at]).into_owned())
                .unwrap_or_default();
            let room = rest
                .len()
                .checked_sub(8)
                .and_then(|at| <[u8; 8]>::try_from(&rest[at..]).ok())
                .map_or_else(|| "?".into(), |b| u64::from_be_bytes(b).to_string());
            format!("local copy of room {room} for {user}")
        }
        Some(&ADMIN) => format!("super admin {}", String::from_utf8_lossy(&key[1..])),
        Some(&AUDIT) => format!(
            "audit entry {}#{}",
            fmt_room(key),
            seq_of(key).map_or_else(|| "?".into(), |s| s.to_string())
        ),
        Some(&IDEMPOTENCY) => format!("idempotency key of room {}", fmt_room(key)),
        Some(&DEPARTURE) => format!(
            "departure of {} from room {}",
            String::from_utf8_lossy(key.get(9..).unwrap_or_default()),
            fmt_room(key)
        ),
        _ if key == MARK => "write mark".into(),
        _ => format!("unknown key {key:?}"),
    }
}

fn fmt_room(key: &[u8]) -> String {
    room_of(key).map_or_else(|| "?".into(), |r| r.to_string())
}
