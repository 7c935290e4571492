//! Live-stream moderation beyond Agora: the state a room keeps for it, persisted with the room
//! (its record's third layout).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{Timestamp, UserId};

/// The end of a freeze or a ban that lasts until lifted.
pub const UNTIL_LIFTED: Timestamp = Timestamp::MAX;

/// A room's live-moderation state. Every field's default is "off".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LiveModeration {
    /// Slow mode: each member who is not exempt may send one message per this many ms.
    pub slow_mode_ms: Option<u64>,
    /// The room is frozen until then (engine clock; [`UNTIL_LIFTED`]: until unfrozen): only the
    /// owner and admins may send.
    pub frozen_until: Option<Timestamp>,
    /// Timed blocks: when each ends (the user is on the block list until then).
    pub block_until: BTreeMap<UserId, Timestamp>,
    /// Kicked users who may not join again before then.
    pub rejoin_banned_until: BTreeMap<UserId, Timestamp>,
    /// Shadow-banned members: their messages reach only themselves (and, marked, the owner
    /// and admins).
    pub shadow_banned: BTreeSet<UserId>,
    /// Hold for review: messages from members who are not staff wait this many ms before they
    /// are delivered.
    pub hold_ms: Option<u64>,
    /// Pinned messages, oldest pin first.
    pub pins: Vec<Pin>,
}

/// A pinned message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Pin {
    /// The message's sequence number.
    pub seq: u64,
    /// Who pinned it.
    pub by: UserId,
    /// When (engine clock).
    pub at: Timestamp,
}

impl Pin {
    /// A pin of message `seq` by `by` at `at`.
    pub fn new(seq: u64, by: UserId, at: Timestamp) -> Pin {
        Pin { seq, by, at }
    }
}
