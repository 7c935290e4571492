//! A room's state and its rules: `Room::apply(command) -> Result<Effects>`.
//!
//! The room actor in the engine owns one `Room` and calls [`Room::apply`] for every state change.
//! `apply` either rejects the command with the error the caller gets (and changes nothing) or
//! changes the state and says what happened: who joined or left, which events go to whom, and
//! whether the persisted record changed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use std::sync::Arc;

use crate::attributes::{AttributeFailures, RoomAttribute, SetAttributes};
use crate::event::{Audience, ChatRoomEvent, LeaveReason, Outgoing};
use crate::gate::{DeliveryGate, RoomMessageStats};
use crate::history::ChatCursorResult;
use crate::message::{ChatMessage, MessageData, MessageId, MessagePriority, OutgoingMessage};
use crate::moderation::{check_permission, BlockedMember, Moderation, MutedMember, Operation};
use crate::page::{check_page, check_page_size, ChatPageResult, LIST_PAGE_MAX};
use crate::{ChatError, Limits, RoomId, RoomLimits, UserId};

/// Milliseconds since the Unix epoch, from the engine's clock.
pub type Timestamp = i64;

/// `ms` milliseconds as a span of [`Timestamp`]s, saturating at the largest: a caller's "for
/// ever" (`u64::MAX`, `Duration::MAX`) stays for ever instead of wrapping negative.
pub fn ms_to_timestamp(ms: u64) -> Timestamp {
    Timestamp::try_from(ms).unwrap_or(Timestamp::MAX)
}

/// When something that lasts `d` from `now` ends (engine clock): at least 1 ms later (the
/// clock's unit), saturating for ever-long spans. Mutes, freezes, bans and blocks all end so.
pub(crate) fn end_after(now: Timestamp, d: std::time::Duration) -> Timestamp {
    now.saturating_add(ms_to_timestamp(duration_ms(d)).max(1))
}

/// `d` in whole milliseconds, saturating at `u64::MAX`.
pub fn duration_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What a room is: the fields its creator chose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSpec {
    /// The room's name, 1 to 128 characters by default.
    pub name: String,
    /// Its description, up to 512 characters by default.
    pub description: String,
    /// The welcome message for members added at creation.
    pub welcome_message: String,
    /// The most members the room may hold at once.
    pub max_users: u32,
}

impl RoomSpec {
    /// Checks every field against `limits` ([`ChatError::InvalidParam`] otherwise).
    pub fn validate(&self, limits: &Limits) -> Result<(), ChatError> {
        let name_chars = self.name.chars().count();
        if self.name.trim().is_empty() {
            return Err(ChatError::InvalidParam(
                "room name must not be empty".into(),
            ));
        }
        check_len("room name", name_chars, limits.room_name_max_chars)?;
        check_len(
            "room description",
            self.description.chars().count(),
            limits.room_description_max_chars,
        )?;
        check_len(
            "welcome message",
            self.welcome_message.chars().count(),
            limits.welcome_message_max_chars,
        )?;
        if self.max_users == 0 || self.max_users > limits.max_users_cap {
            return Err(ChatError::InvalidParam(format!(
                "max members must be 1 to {}, got {}",
                limits.max_users_cap, self.max_users
            )));
        }
        Ok(())
    }
}

fn check_len(what: &str, chars: usize, max: usize) -> Result<(), ChatError> {
    if chars > max {
        return Err(ChatError::InvalidParam(format!(
            "{what} is {chars} characters, over the limit of {max}"
        )));
    }
    Ok(())
}

/// The caller's role in a room (the SDK's `ChatRoomPermissionType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChatRoomPermissionType {
    /// Not in the room, or not known (the public room list does not say).
    None,
    /// A plain member.
    Member,
    /// An admin.
    Admin,
    /// The owner.
    Owner,
}

/// A snapshot of a room, as the SDK's `ChatRoom`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChatRoom {
    /// The room's id.
    pub room_id: RoomId,
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// The owner.
    pub owner: UserId,
    /// The announcement (empty if none).
    pub announcement: String,
    /// Members in the room now, the owner included if present.
    pub member_count: u32,
    /// Most members the room may hold.
    pub max_users: u32,
    /// The admins, in the order they were added.
    pub admin_list: Vec<UserId>,
    /// True if mute-all is on.
    pub is_all_member_muted: bool,
    /// The caller's role in the room when the snapshot was taken.
    pub permission_type: ChatRoomPermissionType,
    /// When the room was created (ms since the Unix epoch).
    pub created_at: Timestamp,
    /// The room's own limits (unset fields are the engine's).
    pub limits: RoomLimits,
    /// Slow mode's cooldown per member, if it is on (roomcast's own).
    pub slow_mode: Option<std::time::Duration>,
    /// True if the room is frozen: only the owner and admins may send (roomcast's own).
    pub frozen: bool,
    /// When the freeze ends by itself (engine clock), if it is frozen for a while.
    pub frozen_until: Option<Timestamp>,
    /// The pinned messages, oldest pin first.
    pub pinned_messages: Vec<crate::Pin>,
    /// Hold for review, if it is on: how long messages of members who are not staff wait
    /// before the other members who are not staff receive them (roomcast's own).
    pub hold: Option<std::time::Duration>,
}

/// A room's persisted state: everything but transient membership.
///
/// Chat rooms have no strict membership: after a restart, users rejoin. Lists and attributes are
/// kept here so that they survive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomRecord {
    /// The room's id.
    pub id: RoomId,
    /// Name, description, welcome message, max members.
    pub spec: RoomSpec,
    /// The owner.
    pub owner: UserId,
    /// The admins, in the order they were added.
    pub admins: Vec<UserId>,
    /// The announcement.
    pub announcement: String,
    /// Mute-all.
    pub all_muted: bool,
    /// Muted members and when each mute ends (ms since the epoch; -1 never).
    pub mute_list: BTreeMap<UserId, Timestamp>,
    /// Allow-listed members.
    pub allow_list: BTreeSet<UserId>,
    /// Blocked users.
    pub block_list: BTreeSet<UserId>,
    /// Custom attributes, by key.
    pub attributes: BTreeMap<String, RoomAttribute>,
    /// Creation time.
    pub created_at: Timestamp,
    /// The room's own limits (the engine's where unset).
    pub limits: RoomLimits,
    /// Live-stream moderation beyond Agora (slow mode, freeze, timed bans, shadow bans,
    /// hold for review, pins).
    pub live: crate::LiveModeration,
}

/// A state change asked of a room. Reads are plain methods on [`Room`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Command {
    /// `user` joins.
    Join {
        /// Who joins.
        user: UserId,
        /// Now (a rejoin ban counts to it).
        now: Timestamp,
    },
    /// `user` leaves by itself.
    Leave {
        /// Who leaves.
        user: UserId,
        /// False if the client's options forbid an owner to leave (706).
        owner_may_leave: bool,
    },
    /// `user` destroys the room.
    Destroy {
        /// Who destroys it (must be the owner).
        user: UserId,
    },
    /// `from` sends a message, which the engine has given the id `msg_id`.
    SendMessage {
        /// The sender.
        from: UserId,
        /// The message.
        message: OutgoingMessage,
        /// Its engine-wide id.
        msg_id: MessageId,
        /// Now.
        now: Timestamp,
    },
    /// A super admin's broadcast to every active room (checked by the engine): the room
    /// accepts it whatever its rules (mutes, membership, windows, the delivery threshold).
    Broadcast {
        /// The super admin.
        from: UserId,
        /// The message.
        message: OutgoingMessage,
        /// Its engine-wide id.
        msg_id: MessageId,
        /// Now.
        now: Timestamp,
    },
    /// `user`'s session went offline or came back online.
    SetPresence {
        /// Whose session.
        user: UserId,
        /// True if it is online now.
        online: bool,
        /// Now.
        now: Timestamp,
    },
    /// The grace period of `user`, offline, may have ended: remove it if so.
    ExpireOffline {
        /// Who.
        user: UserId,
        /// Now.
        now: Timestamp,
    },
    /// `by` moderates the room.
    Moderate {
        /// Who acts.
        by: UserId,
        /// What it does.
        action: Moderation,
        /// Now (mute expiries count from it).
        now: Timestamp,
        /// The reason the operator gives (at most 512 characters), carried by the events and
        /// the audit log.
        reason: Option<String>,
    },
    /// `user`'s mute may have expired: lift it if so.
    ExpireMute {
        /// Who.
        user: UserId,
        /// Now.
        now: Timestamp,
    },
    /// The room's freeze may have ended: lift it if so.
    ExpireFreeze {
        /// Now.
        now: Timestamp,
    },
    /// `user`'s timed block may have ended: take it off the block list if so.
    ExpireBlock {
        /// Who.
        user: UserId,
        /// Now.
        now: Timestamp,
    },
    /// `by` sets custom attributes.
    SetAttributes {
        /// Who.
        by: UserId,
        /// What and how.
        set: SetAttributes,
    },
    /// `by` recalls a message: its own within the recall window, or, as the owner or an admin,
    /// any message at any time (then a moderation act: [`Moderation::DeleteMessage`]).
    RecallMessage {
        /// Who.
        by: UserId,
        /// The message, as the engine read it from the store.
        message: crate::MessageRef,
        /// Now.
        now: Timestamp,
        /// The reason (a deletion by the owner or an admin), at most 512 characters.
        reason: Option<String>,
    },
    /// `by` removes custom attributes (`force`: also keys others own).
    RemoveAttributes {
        /// Who.
        by: UserId,
        /// Which keys.
        keys: Vec<String>,
        /// Remove keys owned by others too.
        force: bool,
    },
}

/// A check a room asks the engine's timers for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timer {
    /// Apply [`Command::ExpireOffline`] for `user` at `at`.
    OfflineCheck {
        /// Who.
        user: UserId,
        /// When (engine clock).
        at: Timestamp,
    },
    /// Apply [`Command::ExpireMute`] for `user` at `at`.
    MuteExpiry {
        /// Who.
        user: UserId,
        /// When (engine clock).
        at: Timestamp,
    },
    /// Apply [`Command::ExpireFreeze`] at `at`.
    FreezeEnd {
        /// When (engine clock).
        at: Timestamp,
    },
    /// Apply [`Command::ExpireBlock`] for `user` at `at`.
    BlockEnd {
        /// Who.
        user: UserId,
        /// When (engine clock).
        at: Timestamp,
    },
    /// Release the messages held for review whose hold has passed at `at` (the engine's, not
    /// a command: held messages wait in the room's actor).
    HoldRelease {
        /// When (engine clock).
        at: Timestamp,
    },
}

/// The user a room's own timers (not a member's) are kept under.
pub fn room_timer_user() -> UserId {
    static ROOM: std::sync::OnceLock<UserId> = std::sync::OnceLock::new();
    ROOM.get_or_init(|| UserId::new("roomcast.room").expect("a valid id"))
        .clone()
}

/// The kind of a [`Timer`]: a room keeps at most one pending timer per member and kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKind {
    /// [`Timer::OfflineCheck`].
    OfflineCheck,
    /// [`Timer::MuteExpiry`].
    MuteExpiry,
    /// [`Timer::FreezeEnd`] (kept under the room's own reserved timer user).
    FreezeEnd,
    /// [`Timer::BlockEnd`].
    BlockEnd,
    /// [`Timer::HoldRelease`] (kept under the room's own reserved timer user).
    HoldRelease,
}

impl Timer {
    /// Whose timer it is, of which kind, and when it is due.
    pub fn parts(&self) -> (UserId, TimerKind, Timestamp) {
        match self {
            Timer::OfflineCheck { user, at } => (user.clone(), TimerKind::OfflineCheck, *at),
            Timer::MuteExpiry { user, at } => (user.clone(), TimerKind::MuteExpiry, *at),
            Timer::FreezeEnd { at } => (room_timer_user(), TimerKind::FreezeEnd, *at),
            Timer::BlockEnd { user, at } => (user.clone(), TimerKind::BlockEnd, *at),
            Timer::HoldRelease { at } => (room_timer_user(), TimerKind::HoldRelease, *at),
        }
    }
}

/// The offline check of `user` to cancel, if it was offline.
fn offline_check(was_offline: bool, user: &UserId) -> Vec<(UserId, TimerKind)> {
    if was_offline {
        vec![(user.clone(), TimerKind::OfflineCheck)]
    } else {
        Vec::new()
    }
}

/// What applying a command did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effects {
    /// Users who became members.
    pub joined: Vec<UserId>,
    /// Users who stopped being members.
    pub left: Vec<UserId>,
    /// Events to deliver, in order.
    pub events: Vec<Outgoing>,
    /// True if [`Room::record`] changed and must be persisted.
    pub record_changed: bool,
    /// True if the room no longer exists.
    pub destroyed: bool,
    /// The message accepted, to deliver to every member but its sender.
    pub message: Option<ChatMessage>,
    /// Checks to schedule, each replacing any pending one of the same member and kind.
    pub timers: Vec<Timer>,
    /// Pending checks no longer needed (the member came back or left, the mute was lifted).
    pub cancelled: Vec<(UserId, TimerKind)>,
    /// Per-key failures of an attribute call.
    pub failures: AttributeFailures,
    /// Entries for the room's audit log, numbered.
    pub audit: Vec<crate::AuditEntry>,
    /// The message recalled (its sequence number and how), to rewrite without its body.
    pub recalled: Option<(u64, crate::Recall)>,
    /// The users a moderation act really changed, where that is fewer than it named (the
    /// audit entry names these).
    pub audit_targets: Option<Vec<UserId>>,
}

impl Effects {
    /// Appends `other`'s effects after these.
    pub fn merge(&mut self, other: Effects) {
        self.joined.extend(other.joined);
        self.left.extend(other.left);
        self.events.extend(other.events);
        self.record_changed |= other.record_changed;
        self.destroyed |= other.destroyed;
        if other.message.is_some() {
            self.message = other.message;
        }
        self.timers.extend(other.timers);
        self.cancelled.extend(other.cancelled);
        self.failures.extend(other.failures);
        self.audit.extend(other.audit);
        if other.audit_targets.is_some() {
            self.audit_targets = other.audit_targets;
        }
        if other.recalled.is_some() {
            self.recalled = other.recalled;
        }
    }
}

/// The engine's limits and the ones a room with `overrides` runs under. Limits are interned:
/// every room under equal limits shares one allocation (a room holds two pointers, not two
/// copies of some 200 bytes).
fn effective_limits(engine: &Limits, overrides: &RoomLimits) -> (Arc<Limits>, Arc<Limits>) {
    let engine = interned(engine);
    if *overrides == RoomLimits::default() {
        (engine.clone(), engine)
    } else {
        let effective = interned(&overrides.apply(&engine));
        (engine, effective)
    }
}

/// The one shared allocation of limits equal to `limits`.
fn interned(limits: &Limits) -> Arc<Limits> {
    static SEEN: std::sync::Mutex<Vec<std::sync::Weak<Limits>>> = std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    seen.retain(|w| w.strong_count() > 0);
    if let Some(found) = seen
        .iter()
        .filter_map(std::sync::Weak::upgrade)
        .find(|l| **l == *limits)
    {
        return found;
    }
    let fresh = Arc::new(limits.clone());
    // A few distinct limits are the rule (the engine's, and rooms' own); past that, rooms
    // keep their own copy rather than make every creation search a long list.
    if seen.len() < 64 {
        seen.push(Arc::downgrade(&fresh));
    }
    fresh
}

/// Current members and the order they joined in (the member list is newest first). One map,
/// user to join sequence: it is the largest per-member structure of a room, so it is kept to one
/// entry per member; listing in join order sorts on demand.
#[derive(Debug, Clone, Default)]
struct Members {
    seq_of: HashMap<UserId, u64>,
    next_seq: u64,
}

impl Members {
    fn insert(&mut self, user: UserId) -> bool {
        if self.seq_of.contains_key(&user) {
            return false;
        }
        self.seq_of.insert(user, self.next_seq);
        self.next_seq += 1;
        true
    }

    fn remove(&mut self, user: &UserId) -> bool {
        self.seq_of.remove(user).is_some()
    }

    fn contains(&self, user: &UserId) -> bool {
        self.seq_of.contains_key(user)
    }

    fn len(&self) -> usize {
        self.seq_of.len()
    }

    /// Members in join order, oldest first.
    fn in_join_order(&self) -> Vec<UserId> {
        let mut all: Vec<(u64, &UserId)> = self.seq_of.iter().map(|(u, s)| (*s, u)).collect();
        all.sort_unstable_by_key(|(s, _)| *s);
        all.into_iter().map(|(_, u)| u.clone()).collect()
    }
}

/// One chat room: its persisted record plus its current members and their presence.
#[derive(Debug, Clone)]
pub struct Room {
    record: RoomRecord,
    members: Members,
    /// Members whose session is offline, and since when.
    offline: HashMap<UserId, Timestamp>,
    /// The engine's limits.
    engine_limits: Arc<Limits>,
    /// The limits this room runs under: the engine's with the record's overrides.
    limits: Arc<Limits>,
    last_seq: u64,
    /// The number of the room's last audit-log entry.
    audit_seq: u64,
    /// The earliest end of a freeze, timed block or mute ([`Room::earliest_end`]), kept with
    /// the record: every change of the record goes through [`Room::apply`], which refreshes it.
    next_end: Timestamp,
    /// When each member who is not exempt last had a message accepted, for slow mode (only
    /// while slow mode is on; it outlives a membership, as the message window does).
    last_sent: HashMap<UserId, Timestamp>,
    gate: DeliveryGate,
    stats: RoomMessageStats,
    /// Per-sender message counts in the current window (only members who sent), for
    /// `user_messages_per_window`.
    send_windows: HashMap<UserId, (Timestamp, u32)>,
    /// Messages recalled since the room was loaded: a recall raced by another (both read the
    /// message before either applied) changes nothing the second time.
    pub(crate) recalled: BTreeSet<u64>,
}

impl Room {
    /// Creates a room owned by `creator`, who is in it, with `members` added.
    ///
    /// Fails with 110 for a bad spec or too many initial members, and 704 if the creator and the
    /// members do not fit in `spec.max_users`. Duplicates among `members` (and the creator) are
    /// counted once.
    pub fn create(
        id: RoomId,
        creator: UserId,
        spec: RoomSpec,
        room_limits: RoomLimits,
        members: Vec<UserId>,
        limits: &Limits,
        now: Timestamp,
    ) -> Result<Room, ChatError> {
        spec.validate(limits)?;
        room_limits.validate(limits)?;
        if members.len() > limits.max_initial_members {
            return Err(ChatError::InvalidParam(format!(
                "at most {} members may be added at creation, got {}",
                limits.max_initial_members,
                members.len()
            )));
        }
        let mut set = Members::default();
        set.insert(creator.clone());
        for m in members {
            set.insert(m);
        }
        if set.len() > spec.max_users as usize {
            return Err(ChatError::MembersFull(spec.max_users));
        }
        let (engine_limits, effective) = effective_limits(limits, &room_limits);
        Ok(Room {
            offline: HashMap::new(),
            gate: DeliveryGate::new(effective.room_delivery_rate, now),
            engine_limits,
            limits: effective,
            last_seq: 0,
            audit_seq: 0,
            next_end: Timestamp::MAX,
            last_sent: HashMap::new(),
            stats: RoomMessageStats::default(),
            send_windows: HashMap::new(),
            recalled: BTreeSet::new(),
            record: RoomRecord {
                id,
                spec,
                owner: creator,
                admins: Vec::new(),
                announcement: String::new(),
                all_muted: false,
                mute_list: BTreeMap::new(),
                allow_list: BTreeSet::new(),
                block_list: BTreeSet::new(),
                attributes: BTreeMap::new(),
                created_at: now,
                limits: room_limits,
                live: crate::LiveModeration::default(),
            },
            members: set,
        })
    }

    /// Restores a room from its persisted record, with no members (they rejoin). Messages
    /// continue from `last_seq`.
    pub fn from_record(record: RoomRecord, limits: &Limits, last_seq: u64, now: Timestamp) -> Room {
        let (engine_limits, effective) = effective_limits(limits, &record.limits);
        let next_end = Room::earliest_end(&record);
        Room {
            record,
            members: Members::default(),
            offline: HashMap::new(),
            gate: DeliveryGate::new(effective.room_delivery_rate, now),
            engine_limits,
            limits: effective,
            last_seq,
            audit_seq: 0,
            next_end,
            last_sent: HashMap::new(),
            stats: RoomMessageStats::default(),
            send_windows: HashMap::new(),
            recalled: BTreeSet::new(),
        }
    }

    /// Continues the audit log after entry `seq` (what the store holds).
    pub fn set_audit_seq(&mut self, seq: u64) {
        self.audit_seq = seq;
    }

    /// The number of the room's last audit-log entry (0 if none).
    pub fn audit_seq(&self) -> u64 {
        self.audit_seq
    }

    /// Adds an entry to the audit log of `fx`.
    pub(crate) fn audit(
        &mut self,
        fx: &mut Effects,
        now: Timestamp,
        operator: Option<UserId>,
        action: crate::AuditAction,
        targets: Vec<UserId>,
        reason: Option<String>,
    ) {
        self.audit_seq += 1;
        fx.audit.push(crate::AuditEntry {
            seq: self.audit_seq,
            time: now,
            operator,
            action,
            targets,
            reason,
        });
    }

    /// Puts `user` back in the room without events: for a room restored after a failure, whose
    /// members are known from their sessions.
    pub fn restore_member(&mut self, user: UserId) {
        self.members.insert(user);
    }

    /// The sequence number of the room's last message (0 if none).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Message counts since the room was loaded.
    pub fn stats(&self) -> RoomMessageStats {
        self.stats
    }

    /// This room's offline grace period in ms.
    pub fn offline_grace_ms(&self) -> u64 {
        duration_ms(self.limits.offline_grace)
    }

    /// The room's own limits, as set at creation and by its owner.
    pub fn room_limits(&self) -> &RoomLimits {
        &self.record.limits
    }

    /// Replaces the room's own limits with `limits` (the owner's change).
    pub(crate) fn set_room_limits(
        &mut self,
        limits: &RoomLimits,
        now: Timestamp,
    ) -> Result<(), ChatError> {
        let merged = limits.clone();
        merged.validate(&self.engine_limits)?;
        let (_, effective) = effective_limits(&self.engine_limits, &merged);
        if effective.room_delivery_rate != self.limits.room_delivery_rate {
            self.gate = DeliveryGate::new(effective.room_delivery_rate, now);
        }
        if effective.user_messages_per_window != self.limits.user_messages_per_window {
            // Windows counted under the old limit do not carry over.
            self.send_windows.clear();
        }
        self.limits = effective;
        self.record.limits = merged;
        Ok(())
    }

    /// True if `user` is exempt from mute-all and the offline rule: the owner, an admin, or on
    /// the allow list.
    pub fn is_exempt(&self, user: &UserId) -> bool {
        *user == self.record.owner
            || self.record.admins.contains(user)
            || self.record.allow_list.contains(user)
    }

    /// True if nobody in the room is online and every member left is exempt from the offline
    /// rule (so nothing about the room can change until someone calls it): the room may leave
    /// memory.
    pub fn is_dormant(&self) -> bool {
        self.members
            .seq_of
            .keys()
            .all(|m| self.offline.contains_key(m) && self.is_exempt(m))
    }

    /// True if no member's message window (`user_messages_per_window`) is still running at
    /// `now`: a room that left memory would forget them.
    pub fn windows_ended(&self, now: Timestamp) -> bool {
        if let Some(cooldown) = self.record.live.slow_mode_ms {
            let cooldown = ms_to_timestamp(cooldown);
            if self
                .last_sent
                .values()
                .any(|at| now.saturating_sub(*at) < cooldown)
            {
                return false;
            }
        }
        let Some((_, window)) = self.limits.user_messages_per_window else {
            return true;
        };
        let window = ms_to_timestamp(duration_ms(window));
        self.send_windows
            .values()
            .all(|(start, _)| now.saturating_sub(*start) >= window)
    }

    /// The engine's own acts that are due by `now` and not applied yet (a freeze, timed blocks
    /// and mutes whose end has passed): the room applies them before it handles a call, so that
    /// nothing the call does comes before them, timer or no timer.
    pub fn due_expiries(&self, now: Timestamp) -> Vec<Command> {
        // Every call asks: a room with nothing due answers from one comparison, not a walk of
        // its mute and block lists.
        if now < self.next_end {
            return Vec::new();
        }
        let mut due = Vec::new();
        if self.freeze_due(now) {
            due.push(Command::ExpireFreeze { now });
        }
        for (user, &until) in &self.record.live.block_until {
            if until <= now {
                due.push(Command::ExpireBlock {
                    user: user.clone(),
                    now,
                });
            }
        }
        for (user, &until) in &self.record.mute_list {
            if until >= 0 && until <= now {
                due.push(Command::ExpireMute {
                    user: user.clone(),
                    now,
                });
            }
        }
        due
    }

    /// The earliest end among the room's freeze, timed blocks and mutes (`Timestamp::MAX` if
    /// none ends by itself).
    fn earliest_end(record: &RoomRecord) -> Timestamp {
        let freeze = record
            .live
            .frozen_until
            .filter(|&u| u != crate::UNTIL_LIFTED);
        let blocks = record.live.block_until.values().copied();
        let mutes = record.mute_list.values().copied().filter(|&u| u >= 0);
        freeze
            .into_iter()
            .chain(blocks)
            .chain(mutes)
            .min()
            .unwrap_or(Timestamp::MAX)
    }

    /// True if the room's timed freeze has ended by `now` but is not lifted yet.
    pub fn freeze_due(&self, now: Timestamp) -> bool {
        matches!(self.record.live.frozen_until, Some(until) if until != crate::UNTIL_LIFTED && until <= now)
    }

    /// True if `user` is a member whose session is offline.
    pub fn is_offline(&self, user: &UserId) -> bool {
        self.offline.contains_key(user)
    }

    /// Decides whether `from` may send to the room now, and at which effective priority.
    ///
    /// In order: blocked 210, not a member 702, muted (until expiry) 215, mute-all and not
    /// exempt 219. Exempt senders' messages count as high priority.
    pub fn check_send(
        &self,
        from: &UserId,
        priority: MessagePriority,
        now: Timestamp,
    ) -> Result<MessagePriority, ChatError> {
        if self.is_blocked(from, now) {
            return Err(ChatError::UserPermissionDenied(
                "blocked in this room".into(),
            ));
        }
        if !self.members.contains(from) {
            return Err(ChatError::NotJoined(from.to_string()));
        }
        if let Some(&until) = self.record.mute_list.get(from) {
            if until < 0 || until > now {
                return Err(ChatError::UserMuted);
            }
        }
        let exempt = self.is_exempt(from);
        if let Some(until) = self.record.live.frozen_until {
            let staff = *from == self.record.owner || self.record.admins.contains(from);
            if !staff && until > now {
                return Err(ChatError::RoomFrozen(
                    (until != crate::UNTIL_LIFTED).then_some(until),
                ));
            }
        }
        if self.record.all_muted && !exempt {
            return Err(ChatError::UserMutedByAdmin);
        }
        if let (Some(cooldown), false) = (self.record.live.slow_mode_ms, exempt) {
            if let Some(&last) = self.last_sent.get(from) {
                let next = last.saturating_add(ms_to_timestamp(cooldown));
                if next > now {
                    let wait = u64::try_from(next - now).unwrap_or(0);
                    return Err(ChatError::SlowMode(std::time::Duration::from_millis(wait)));
                }
            }
        }
        Ok(if exempt {
            MessagePriority::High
        } else {
            priority
        })
    }

    /// Who hears that a member joined or left: everyone else, or in a room above the join-event
    /// threshold only the owner and admins, so that a join storm costs O(N), not O(N^2).
    fn membership_audience(&self, user: &UserId, actor: Option<&UserId>) -> Audience {
        let except: Vec<UserId> = std::iter::once(user).chain(actor).cloned().collect();
        if self.members.len() > self.limits.join_event_threshold {
            Audience::StaffExcept(except)
        } else {
            Audience::MembersExcept(except)
        }
    }

    /// The persisted part of the state.
    pub fn record(&self) -> &RoomRecord {
        &self.record
    }

    pub(crate) fn record_mut(&mut self) -> &mut RoomRecord {
        &mut self.record
    }

    /// The limits the room applies.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Effects of a change to the record, with these events.
    pub(crate) fn changed(&self, events: Vec<Outgoing>) -> Effects {
        Effects {
            events,
            record_changed: true,
            ..Effects::default()
        }
    }

    /// The announcement, for a member (702 otherwise).
    pub fn announcement(&self, viewer: &UserId) -> Result<&str, ChatError> {
        self.require_member(viewer)?;
        Ok(&self.record.announcement)
    }

    fn require_member(&self, user: &UserId) -> Result<(), ChatError> {
        if self.is_member(user) {
            Ok(())
        } else {
            Err(ChatError::NotJoined(user.to_string()))
        }
    }

    /// Page `page_num` (from 1) of the mute list, sorted by user id, with each mute's end,
    /// leaving out mutes that have ended by `now`. Owner and admins only.
    pub fn mute_list(
        &self,
        viewer: &UserId,
        now: Timestamp,
        page_num: u32,
        page_size: u32,
    ) -> Result<ChatPageResult<MutedMember>, ChatError> {
        check_permission(Operation::FetchMuteList, self.role_of(viewer), None)?;
        check_page(page_num, page_size, LIST_PAGE_MAX)?;
        let live = |(_, &until): &(&UserId, &Timestamp)| until < 0 || until > now;
        let total = self.record.mute_list.iter().filter(live).count();
        let entries = self
            .record
            .mute_list
            .iter()
            .filter(live)
            .map(|(u, &t)| MutedMember {
                user_id: u.clone(),
                expire_time: (t >= 0).then_some(t),
            });
        Ok(ChatPageResult::from_iter(
            entries, total, page_num, page_size,
        ))
    }

    /// Page `page_num` (from 1) of the allow list, sorted by user id. Owner and admins only.
    pub fn allow_list(
        &self,
        viewer: &UserId,
        page_num: u32,
        page_size: u32,
    ) -> Result<ChatPageResult<UserId>, ChatError> {
        check_permission(Operation::FetchAllowList, self.role_of(viewer), None)?;
        check_page(page_num, page_size, LIST_PAGE_MAX)?;
        let list = &self.record.allow_list;
        Ok(ChatPageResult::from_iter(
            list.iter().cloned(),
            list.len(),
            page_num,
            page_size,
        ))
    }

    /// True if `user` is on the allow list (the owner and admins always are). Any member may ask
    /// about itself.
    pub fn is_on_allow_list(&self, user: &UserId) -> Result<bool, ChatError> {
        if !self.is_member(user) && self.role_of(user) == ChatRoomPermissionType::None {
            return Err(ChatError::NotJoined(user.to_string()));
        }
        Ok(self.is_exempt(user))
    }

    /// True if `user` is on the block list at `now` (a timed block that has ended by `now`
    /// no longer counts, even before its timer lifted it).
    pub fn is_blocked(&self, user: &UserId, now: Timestamp) -> bool {
        self.record.block_list.contains(user)
            && self
                .record
                .live
                .block_until
                .get(user)
                .is_none_or(|&until| until > now)
    }

    /// Page `page_num` (from 1) of the block list, sorted by user id, with each timed block's
    /// end, leaving out timed blocks that have ended by `now`. Owner and admins only.
    pub fn block_list(
        &self,
        viewer: &UserId,
        now: Timestamp,
        page_num: u32,
        page_size: u32,
    ) -> Result<ChatPageResult<BlockedMember>, ChatError> {
        check_permission(Operation::FetchBlockList, self.role_of(viewer), None)?;
        check_page(page_num, page_size, LIST_PAGE_MAX)?;
        let live = |u: &&UserId| self.is_blocked(u, now);
        let total = self.record.block_list.iter().filter(live).count();
        let entries = self
            .record
            .block_list
            .iter()
            .filter(live)
            .map(|u| BlockedMember {
                user_id: u.clone(),
                expire_time: self.record.live.block_until.get(u).copied(),
            });
        Ok(ChatPageResult::from_iter(
            entries, total, page_num, page_size,
        ))
    }

    /// Page `page_num` (from 1) of the shadow-ban list, sorted by user id. Owner and admins
    /// only (703).
    pub fn shadow_ban_list(
        &self,
        viewer: &UserId,
        page_num: u32,
        page_size: u32,
    ) -> Result<ChatPageResult<UserId>, ChatError> {
        check_permission(Operation::FetchShadowBanList, self.role_of(viewer), None)?;
        check_page(page_num, page_size, LIST_PAGE_MAX)?;
        let list = &self.record.live.shadow_banned;
        Ok(ChatPageResult::from_iter(
            list.iter().cloned(),
            list.len(),
            page_num,
            page_size,
        ))
    }

    /// True if `user` is the owner or an admin: it sees shadowed messages, and its own are
    /// never shadowed.
    pub fn is_staff(&self, user: &UserId) -> bool {
        *user == self.record.owner || self.record.admins.contains(user)
    }

    /// A page of the member list, newest first: up to `page_size` (1 to [`LIST_PAGE_MAX`])
    /// members who joined before the cursor (`None`: from the newest), and the cursor of the
    /// next page (`None` at the end). Members only.
    pub fn members_page(
        &self,
        viewer: &UserId,
        cursor: Option<u64>,
        page_size: u32,
    ) -> Result<ChatCursorResult<UserId>, ChatError> {
        self.require_member(viewer)?;
        check_page_size(page_size, LIST_PAGE_MAX)?;
        let page_size = page_size as usize;
        let before = cursor.unwrap_or(u64::MAX);
        let mut older: Vec<(u64, &UserId)> = self
            .members
            .seq_of
            .iter()
            .filter(|(_, s)| **s < before)
            .map(|(u, s)| (*s, u))
            .collect();
        let more = older.len() > page_size;
        if more {
            older.select_nth_unstable_by(page_size, |a, b| b.0.cmp(&a.0));
            older.truncate(page_size);
        }
        older.sort_unstable_by_key(|(s, _)| std::cmp::Reverse(*s));
        let next = if more {
            older.last().map(|(s, _)| *s)
        } else {
            None
        };
        Ok(ChatCursorResult {
            data: older.into_iter().map(|(_, u)| u.clone()).collect(),
            cursor: next,
        })
    }

    /// The room's id.
    pub fn id(&self) -> RoomId {
        self.record.id
    }

    /// The room's name.
    pub fn name(&self) -> &str {
        &self.record.spec.name
    }

    /// The owner.
    pub fn owner(&self) -> &UserId {
        &self.record.owner
    }

    /// How many members are in the room.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// True if `user` is in the room now.
    pub fn is_member(&self, user: &UserId) -> bool {
        self.members.contains(user)
    }

    /// Current members, oldest first.
    pub fn members(&self) -> Vec<UserId> {
        self.members.in_join_order()
    }

    /// `user`'s role: owner and admins keep their role while out of the room; anyone else in the
    /// room is a member.
    pub fn role_of(&self, user: &UserId) -> ChatRoomPermissionType {
        if *user == self.record.owner {
            ChatRoomPermissionType::Owner
        } else if self.record.admins.contains(user) {
            ChatRoomPermissionType::Admin
        } else if self.members.contains(user) {
            ChatRoomPermissionType::Member
        } else {
            ChatRoomPermissionType::None
        }
    }

    /// A snapshot of the room as `viewer` sees it.
    pub fn snapshot(&self, viewer: Option<&UserId>) -> ChatRoom {
        let r = &self.record;
        ChatRoom {
            room_id: r.id,
            name: r.spec.name.clone(),
            description: r.spec.description.clone(),
            owner: r.owner.clone(),
            announcement: r.announcement.clone(),
            member_count: self.members.len() as u32,
            max_users: r.spec.max_users,
            admin_list: r.admins.clone(),
            is_all_member_muted: r.all_muted,
            permission_type: viewer.map_or(ChatRoomPermissionType::None, |v| self.role_of(v)),
            created_at: r.created_at,
            limits: r.limits.clone(),
            slow_mode: r.live.slow_mode_ms.map(std::time::Duration::from_millis),
            frozen: r.live.frozen_until.is_some(),
            frozen_until: r.live.frozen_until.filter(|&u| u != crate::UNTIL_LIFTED),
            pinned_messages: r.live.pins.clone(),
            hold: r.live.hold_ms.map(std::time::Duration::from_millis),
        }
    }

    /// Applies `command`: on `Err` nothing changed; on `Ok` the effects say what did.
    pub fn apply(&mut self, command: Command) -> Result<Effects, ChatError> {
        let fx = self.apply_command(command)?;
        if fx.record_changed {
            self.next_end = Room::earliest_end(&self.record);
        }
        Ok(fx)
    }

    fn apply_command(&mut self, command: Command) -> Result<Effects, ChatError> {
        match command {
            Command::Join { user, now } => self.join(user, now),
            Command::Leave {
                user,
                owner_may_leave,
            } => self.leave(user, owner_may_leave),
            Command::Destroy { user } => self.destroy(user),
            Command::SendMessage {
                from,
                message,
                msg_id,
                now,
            } => self.send(from, message, msg_id, now),
            Command::Broadcast {
                from,
                message,
                msg_id,
                now,
            } => Ok(self.accept(from, message, msg_id, now, false)),
            Command::SetPresence { user, online, now } => Ok(self.set_presence(user, online, now)),
            Command::ExpireOffline { user, now } => Ok(self.expire_offline(user, now)),
            Command::Moderate {
                by,
                action,
                now,
                reason,
            } => {
                let reason = crate::check_reason(reason)?;
                let (audit_action, mut audit_targets) = crate::AuditAction::of(&action, now);
                let operator = by.clone();
                // Who may stop being exempt from the offline rule: the targets of a role or
                // allow-list change, and the owner handing over its room.
                let mut candidates: Vec<UserId> = match &action {
                    Moderation::RemoveAdmin(u) => vec![u.clone()],
                    Moderation::AllowListRemove(us) => us.clone(),
                    Moderation::ChangeOwner(_) => vec![self.record.owner.clone()],
                    _ => Vec::new(),
                };
                candidates.retain(|u| self.offline.contains_key(u) && self.is_exempt(u));
                let mut fx = self.moderate(by, action, now)?;
                if let Some(changed) = fx.audit_targets.take() {
                    audit_targets = changed;
                }
                if fx.record_changed || !fx.events.is_empty() {
                    for out in &mut fx.events {
                        out.event.set_operator_reason(reason.clone());
                    }
                    self.audit(
                        &mut fx,
                        now,
                        Some(operator),
                        audit_action,
                        audit_targets,
                        reason,
                    );
                }
                // Offline and no longer exempt: its grace period, counted from when it went,
                // is checked (at once if it has passed).
                let grace = ms_to_timestamp(self.offline_grace_ms());
                for user in candidates {
                    if let Some(&since) = self.offline.get(&user) {
                        if !self.is_exempt(&user) {
                            let at = since.saturating_add(grace);
                            fx.timers.push(Timer::OfflineCheck { user, at });
                        }
                    }
                }
                Ok(fx)
            }
            Command::ExpireMute { user, now } => Ok(self.expire_mute(user, now)),
            Command::ExpireFreeze { now } => Ok(self.expire_freeze(now)),
            Command::ExpireBlock { user, now } => Ok(self.expire_block(user, now)),
            Command::RecallMessage {
                by,
                message,
                now,
                reason,
            } => {
                if matches!(
                    self.role_of(&by),
                    ChatRoomPermissionType::Owner | ChatRoomPermissionType::Admin
                ) {
                    return self.apply(Command::Moderate {
                        by,
                        action: Moderation::DeleteMessage(message),
                        now,
                        reason,
                    });
                }
                self.recall_own(by, message, now)
            }
            Command::SetAttributes { by, set } => self.set_attributes(by, set),
            Command::RemoveAttributes { by, keys, force } => {
                self.remove_attributes(by, keys, force)
            }
        }
    }

    fn send(
        &mut self,
        from: UserId,
        message: OutgoingMessage,
        msg_id: MessageId,
        now: Timestamp,
    ) -> Result<Effects, ChatError> {
        let priority = self.check_send(&from, message.priority, now)?;
        self.count_send(&from, now)?;
        if !self.gate.admit(priority, now) {
            match priority {
                MessagePriority::Low => self.stats.dropped_low += 1,
                MessagePriority::Normal => self.stats.dropped_normal += 1,
                MessagePriority::High => self.stats.dropped_high += 1,
            }
            return Err(ChatError::ExceedServiceLimit(format!(
                "the room is over its delivery threshold; this {priority:?}-priority message was dropped"
            )));
        }
        let shadowed = self.record.live.shadow_banned.contains(&from) && !self.is_staff(&from);
        let held_until = match self.record.live.hold_ms {
            Some(hold) if !self.is_staff(&from) => {
                Some(now.saturating_add(ms_to_timestamp(hold).max(1)))
            }
            _ => None,
        };
        let mut fx = self.accept(from, message, msg_id, now, shadowed);
        if let Some(message) = &mut fx.message {
            if held_until.is_some() {
                let mut data = message.data().clone();
                data.held_until = held_until;
                *message = ChatMessage::new(data);
            }
        }
        Ok(fx)
    }

    /// Takes `message` as the room's next one (`shadowed`: its sender is shadow-banned).
    fn accept(
        &mut self,
        from: UserId,
        message: OutgoingMessage,
        msg_id: MessageId,
        now: Timestamp,
        shadowed: bool,
    ) -> Effects {
        self.stats.accepted += 1;
        self.last_seq += 1;
        if let Some(cooldown) = self.record.live.slow_mode_ms {
            if !self.is_exempt(&from) {
                // Cooldowns that ended go now and then: the map follows the recent senders.
                if self.last_sent.len() > 2 * self.members.len() + 64 {
                    let cooldown = ms_to_timestamp(cooldown);
                    self.last_sent
                        .retain(|_, at| now.saturating_sub(*at) < cooldown);
                }
                self.last_sent.insert(from.clone(), now);
            }
        }
        let sent = ChatMessage::new(MessageData {
            msg_id,
            room_id: self.record.id,
            from,
            seq: self.last_seq,
            server_time: now,
            body: message.body,
            attributes: message.attributes,
            priority: message.priority,
            recalled: None,
            shadowed,
            held_until: None,
        });
        Effects {
            message: Some(sent),
            ..Effects::default()
        }
    }

    /// Counts a message of `from` against `user_messages_per_window` (509 over it); the owner and
    /// admins are exempt. Fixed windows starting at a member's first message.
    fn count_send(&mut self, from: &UserId, now: Timestamp) -> Result<(), ChatError> {
        let Some((max, window)) = self.limits.user_messages_per_window else {
            return Ok(());
        };
        let window_ms = ms_to_timestamp(duration_ms(window));
        if *from == self.record.owner || self.record.admins.contains(from) {
            return Ok(());
        }
        // A member's window outlives its membership (leaving and rejoining does not reset it);
        // windows that ended are dropped now and then, so the map follows the active senders.
        if self.send_windows.len() > 2 * self.members.len() + 64 {
            self.send_windows
                .retain(|_, (start, _)| now.saturating_sub(*start) < window_ms);
        }
        let entry = self.send_windows.entry(from.clone()).or_insert((now, 0));
        if now.saturating_sub(entry.0) >= window_ms {
            *entry = (now, 0);
        }
        if entry.1 >= max {
            return Err(ChatError::MessageCurrentLimiting);
        }
        entry.1 += 1;
        Ok(())
    }

    fn set_presence(&mut self, user: UserId, online: bool, now: Timestamp) -> Effects {
        if !self.members.contains(&user) {
            return Effects::default();
        }
        if online {
            if self.offline.remove(&user).is_none() {
                return Effects::default();
            }
            return Effects {
                cancelled: vec![(user, TimerKind::OfflineCheck)],
                ..Effects::default()
            };
        }
        self.offline.insert(user.clone(), now);
        let due = now.saturating_add(ms_to_timestamp(self.offline_grace_ms()));
        Effects {
            timers: vec![Timer::OfflineCheck { user, at: due }],
            ..Effects::default()
        }
    }

    fn expire_offline(&mut self, user: UserId, now: Timestamp) -> Effects {
        let Some(&since) = self.offline.get(&user) else {
            return Effects::default();
        };
        let due = since.saturating_add(ms_to_timestamp(self.offline_grace_ms()));
        if now < due {
            return Effects {
                timers: vec![Timer::OfflineCheck { user, at: due }],
                ..Effects::default()
            };
        }
        if self.is_exempt(&user) {
            // Exempt members stay however long they are away (checked now, not when they left:
            // a member made admin while away is exempt too).
            return Effects::default();
        }
        self.remove_member(user, LeaveReason::Offline, None)
    }

    /// Removes `user` for `reason`: the others hear it left, the user hears it was removed.
    pub(crate) fn remove_member(
        &mut self,
        user: UserId,
        reason: LeaveReason,
        operator: Option<UserId>,
    ) -> Effects {
        let audience = self.membership_audience(&user, operator.as_ref());
        self.members.remove(&user);
        let was_offline = self.offline.remove(&user).is_some();
        let room_id = self.record.id;
        let room_name = self.record.spec.name.clone();
        let mut fx = Effects {
            left: vec![user.clone()],
            events: vec![
                Outgoing {
                    to: audience,
                    event: ChatRoomEvent::MemberExited {
                        room_id,
                        room_name: room_name.clone(),
                        participant: user.clone(),
                    },
                },
                Outgoing {
                    to: Audience::Users(vec![user.clone()]),
                    event: ChatRoomEvent::RemovedFromChatRoom {
                        operator_reason: None,
                        room_id,
                        room_name,
                        participant: user.clone(),
                        reason,
                        operator,
                    },
                },
            ],
            cancelled: offline_check(was_offline, &user),
            ..Effects::default()
        };
        fx.merge(self.drop_attributes_of(&user));
        fx
    }

    fn join(&mut self, user: UserId, now: Timestamp) -> Result<Effects, ChatError> {
        if self.is_blocked(&user, now) {
            return Err(ChatError::UserInBlocklist);
        }
        if let Some(&until) = self.record.live.rejoin_banned_until.get(&user) {
            if until > now {
                return Err(ChatError::RejoinBanned(until));
            }
        }
        if self.members.contains(&user) {
            return Err(ChatError::AlreadyJoined);
        }
        if self.members.len() >= self.record.spec.max_users as usize {
            return Err(ChatError::MembersFull(self.record.spec.max_users));
        }
        self.members.insert(user.clone());
        self.offline.remove(&user);
        Ok(Effects {
            joined: vec![user.clone()],
            events: vec![Outgoing {
                to: self.membership_audience(&user, None),
                event: ChatRoomEvent::MemberJoined {
                    room_id: self.record.id,
                    participant: user,
                },
            }],
            ..Effects::default()
        })
    }

    fn leave(&mut self, user: UserId, owner_may_leave: bool) -> Result<Effects, ChatError> {
        if !self.members.contains(&user) {
            return Err(ChatError::NotJoined(user.to_string()));
        }
        if user == self.record.owner && !owner_may_leave {
            return Err(ChatError::OwnerNotAllowLeave);
        }
        let audience = self.membership_audience(&user, None);
        self.members.remove(&user);
        let was_offline = self.offline.remove(&user).is_some();
        let mut fx = Effects {
            left: vec![user.clone()],
            events: vec![Outgoing {
                to: audience,
                event: ChatRoomEvent::MemberExited {
                    room_id: self.record.id,
                    room_name: self.record.spec.name.clone(),
                    participant: user.clone(),
                },
            }],
            cancelled: offline_check(was_offline, &user),
            ..Effects::default()
        };
        fx.merge(self.drop_attributes_of(&user));
        Ok(fx)
    }

    fn destroy(&mut self, user: UserId) -> Result<Effects, ChatError> {
        if user != self.record.owner {
            return Err(ChatError::PermissionDenied(
                "only the owner may destroy the room".into(),
            ));
        }
        let room_id = self.record.id;
        let room_name = self.record.spec.name.clone();
        self.offline.clear();
        let members: Vec<UserId> = std::mem::take(&mut self.members).in_join_order();
        let told: Vec<UserId> = members.iter().filter(|m| **m != user).cloned().collect();
        let mut events = Vec::with_capacity(told.len() + 1);
        events.push(Outgoing {
            to: Audience::Users(told.clone()),
            event: ChatRoomEvent::ChatRoomDestroyed {
                room_id,
                room_name: room_name.clone(),
            },
        });
        events.extend(told.into_iter().map(|participant| Outgoing {
            to: Audience::Users(vec![participant.clone()]),
            event: ChatRoomEvent::RemovedFromChatRoom {
                operator_reason: None,
                room_id,
                room_name: room_name.clone(),
                participant,
                reason: LeaveReason::Destroyed,
                operator: Some(user.clone()),
            },
        }));
        Ok(Effects {
            left: members,
            events,
            record_changed: true,
            destroyed: true,
            ..Effects::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{spec, uid};

    fn room(max_users: u32) -> Room {
        Room::create(
            RoomId::from_u64(1),
            uid("owner"),
            spec(max_users),
            RoomLimits::default(),
            vec![],
            &Limits::default(),
            0,
        )
        .unwrap()
    }

    #[test]
    fn spec_limits() {
        let limits = Limits::default();
        let cases: Vec<(RoomSpec, Option<u32>)> = vec![
            (spec(300), None),
            (
                RoomSpec {
                    name: "".into(),
                    ..spec(300)
                },
                Some(110),
            ),
            (
                RoomSpec {
                    name: "  ".into(),
                    ..spec(300)
                },
                Some(110),
            ),
            (
                RoomSpec {
                    name: "n".repeat(128),
                    ..spec(300)
                },
                None,
            ),
            (
                RoomSpec {
                    name: "n".repeat(129),
                    ..spec(300)
                },
                Some(110),
            ),
            (
                RoomSpec {
                    description: "d".repeat(512),
                    ..spec(300)
                },
                None,
            ),
            (
                RoomSpec {
                    description: "d".repeat(513),
                    ..spec(300)
                },
                Some(110),
            ),
            (
                RoomSpec {
                    welcome_message: "w".repeat(513),
                    ..spec(300)
                },
                Some(110),
            ),
            (spec(0), Some(110)),
            (spec(limits.max_users_cap), None),
            (spec(limits.max_users_cap + 1), Some(110)),
        ];
        for (s, expect) in cases {
            assert_eq!(s.validate(&limits).err().map(|e| e.code()), expect, "{s:?}");
        }
    }

    #[test]
    fn create_counts_creator_and_members_once() {
        let r = Room::create(
            RoomId::from_u64(1),
            uid("o"),
            spec(3),
            RoomLimits::default(),
            vec![uid("a"), uid("b"), uid("a"), uid("o")],
            &Limits::default(),
            5,
        )
        .unwrap();
        assert_eq!(r.member_count(), 3);
        let err = Room::create(
            RoomId::from_u64(1),
            uid("o"),
            spec(2),
            RoomLimits::default(),
            vec![uid("a"), uid("b")],
            &Limits::default(),
            5,
        )
        .unwrap_err();
        assert_eq!(err.code(), 704);
    }

    #[test]
    fn join_rules() {
        let mut r = room(2);
        assert_eq!(
            r.apply(Command::Join {
                user: uid("owner"),
                now: 0
            })
            .unwrap_err()
            .code(),
            701
        );
        let fx = r
            .apply(Command::Join {
                user: uid("a"),
                now: 0,
            })
            .unwrap();
        assert_eq!(fx.joined, vec![uid("a")]);
        assert_eq!(fx.events[0].to, Audience::MembersExcept(vec![uid("a")]));
        assert_eq!(
            r.apply(Command::Join {
                user: uid("b"),
                now: 0
            })
            .unwrap_err()
            .code(),
            704
        );
        r.record.block_list.insert(uid("c"));
        assert_eq!(
            r.apply(Command::Join {
                user: uid("c"),
                now: 0
            })
            .unwrap_err()
            .code(),
            707
        );
        assert_eq!(r.member_count(), 2);
    }

    #[test]
    fn leave_rules_and_owner_keeps_role() {
        let mut r = room(10);
        let leave = |user: &str, owner_may_leave| Command::Leave {
            user: uid(user),
            owner_may_leave,
        };
        assert_eq!(r.apply(leave("x", true)).unwrap_err().code(), 702);
        assert_eq!(r.apply(leave("owner", false)).unwrap_err().code(), 706);
        assert!(r.is_member(&uid("owner")));
        r.apply(leave("owner", true)).unwrap();
        assert!(!r.is_member(&uid("owner")));
        assert_eq!(r.role_of(&uid("owner")), ChatRoomPermissionType::Owner);
        r.apply(Command::Join {
            user: uid("owner"),
            now: 0,
        })
        .unwrap();
        assert_eq!(
            r.snapshot(Some(&uid("owner"))).permission_type,
            ChatRoomPermissionType::Owner
        );
    }

    #[test]
    fn destroy_is_owner_only_and_tells_everyone_else() {
        let mut r = room(10);
        r.apply(Command::Join {
            user: uid("a"),
            now: 0,
        })
        .unwrap();
        r.apply(Command::Join {
            user: uid("b"),
            now: 0,
        })
        .unwrap();
        let err = r.apply(Command::Destroy { user: uid("a") }).unwrap_err();
        assert_eq!(err.code(), 703);
        assert_eq!(r.member_count(), 3);
        let fx = r.apply(Command::Destroy { user: uid("owner") }).unwrap();
        assert!(fx.destroyed);
        assert_eq!(fx.left.len(), 3);
        assert_eq!(fx.events[0].to, Audience::Users(vec![uid("a"), uid("b")]));
        assert_eq!(fx.events.len(), 3);
        assert_eq!(r.member_count(), 0);
    }

    fn send_cmd(from: &str, p: MessagePriority, now: Timestamp) -> Command {
        Command::SendMessage {
            from: uid(from),
            message: OutgoingMessage::text(RoomId::from_u64(1), "hi").with_priority(p),
            msg_id: MessageId::from_u64(now as u64),
            now,
        }
    }

    #[test]
    fn a_broadcast_takes_the_next_seq_whatever_the_rules() {
        let mut r = room(10);
        r.apply(Command::Join {
            user: uid("m"),
            now: 0,
        })
        .unwrap();
        r.apply(send_cmd("m", MessagePriority::Normal, 0)).unwrap();
        r.record.all_muted = true;
        let fx = r
            .apply(Command::Broadcast {
                from: uid("ops"), // a super admin, not a member
                message: OutgoingMessage::text(RoomId::from_u64(1), "maintenance at 10"),
                msg_id: MessageId::from_u64(7),
                now: 5,
            })
            .unwrap();
        let m = fx.message.unwrap();
        assert_eq!((m.seq(), m.from().as_str()), (2, "ops"));
        assert_eq!(r.last_seq(), 2);
    }

    #[test]
    fn send_rules_in_order() {
        let mut r = room(10);
        r.apply(Command::Join {
            user: uid("m"),
            now: 0,
        })
        .unwrap();
        r.apply(Command::Join {
            now: 0,
            user: uid("allowed"),
        })
        .unwrap();
        r.record.allow_list.insert(uid("allowed"));
        let code = |r: &Room, who: &str, now| {
            r.check_send(&uid(who), MessagePriority::Low, now)
                .map_err(|e| e.code())
        };
        assert_eq!(code(&r, "m", 0), Ok(MessagePriority::Low));
        assert_eq!(code(&r, "owner", 0), Ok(MessagePriority::High));
        assert_eq!(code(&r, "allowed", 0), Ok(MessagePriority::High));
        assert_eq!(code(&r, "stranger", 0), Err(702));
        r.record.all_muted = true;
        assert_eq!(code(&r, "m", 0), Err(219));
        assert_eq!(code(&r, "allowed", 0), Ok(MessagePriority::High));
        r.record.mute_list.insert(uid("allowed"), 100);
        assert_eq!(
            code(&r, "allowed", 99),
            Err(215),
            "a personal mute beats the allow list"
        );
        assert_eq!(
            code(&r, "allowed", 100),
            Ok(MessagePriority::High),
            "the mute expired"
        );
        r.record.mute_list.insert(uid("m"), -1);
        assert_eq!(code(&r, "m", i64::MAX), Err(215));
        r.record.block_list.insert(uid("m"));
        assert_eq!(code(&r, "m", 0), Err(210));
    }

    #[test]
    fn messages_get_consecutive_seqs_and_drops_are_counted() {
        let mut r = Room::create(
            RoomId::from_u64(1),
            uid("owner"),
            spec(10),
            RoomLimits::default(),
            vec![uid("m")],
            &Limits {
                room_delivery_rate: Some(1),
                ..Limits::default()
            },
            0,
        )
        .unwrap();
        let fx = r.apply(send_cmd("m", MessagePriority::Normal, 0)).unwrap();
        assert_eq!(fx.message.unwrap().seq(), 1);
        // capacity 2, normal reserve 0.5: the second normal message is dropped, a high one passes.
        assert_eq!(
            r.apply(send_cmd("m", MessagePriority::Normal, 0))
                .unwrap_err()
                .code(),
            4
        );
        let fx = r.apply(send_cmd("m", MessagePriority::High, 0)).unwrap();
        assert_eq!(
            fx.message.unwrap().seq(),
            2,
            "a dropped message takes no seq"
        );
        assert_eq!(r.stats().accepted, 2);
        assert_eq!(r.stats().dropped_normal, 1);
        assert_eq!(
            r.apply(send_cmd("x", MessagePriority::High, 0))
                .unwrap_err()
                .code(),
            702
        );
    }

    /// A member offline while exempt, that stops being exempt (allow list, admin role, handing
    /// over the room), gets its grace check again, counted from when it went away (found by a
    /// hibernation review: it was never checked again).
    #[test]
    fn an_offline_member_that_loses_its_exemption_is_checked_again() {
        for case in ["allow", "admin", "owner"] {
            let mut r = room(10);
            let target = if case == "owner" { "owner" } else { "m" };
            r.apply(Command::Join {
                user: uid("m"),
                now: 0,
            })
            .unwrap();
            r.apply(Command::Join {
                user: uid("heir"),
                now: 0,
            })
            .unwrap();
            match case {
                "allow" => {
                    r.record.allow_list.insert(uid("m"));
                }
                "admin" => r.record.admins.push(uid("m")),
                _ => {}
            }
            r.apply(Command::SetPresence {
                user: uid(target),
                online: false,
                now: 1_000,
            })
            .unwrap();
            let action = match case {
                "allow" => Moderation::AllowListRemove(vec![uid("m")]),
                "admin" => Moderation::RemoveAdmin(uid("m")),
                _ => Moderation::ChangeOwner(uid("heir")),
            };
            let fx = r
                .apply(Command::Moderate {
                    reason: None,
                    by: uid("owner"),
                    action,
                    now: 900_000,
                })
                .unwrap();
            let grace = r.offline_grace_ms() as Timestamp;
            assert_eq!(
                fx.timers,
                vec![Timer::OfflineCheck {
                    user: uid(target),
                    at: 1_000 + grace
                }],
                "{case}"
            );
        }
    }

    #[test]
    fn offline_members_leave_after_the_grace_period_unless_exempt() {
        let mut r = room(10);
        for u in ["a", "adm"] {
            r.apply(Command::Join {
                user: uid(u),
                now: 0,
            })
            .unwrap();
        }
        r.record.admins.push(uid("adm"));
        let grace = r.offline_grace_ms() as Timestamp;
        assert_eq!(grace, 300_000);
        let presence = |user: &str, online, now| Command::SetPresence {
            user: uid(user),
            online,
            now,
        };
        let expire = |user: &str, now| Command::ExpireOffline {
            user: uid(user),
            now,
        };

        let fx = r.apply(presence("a", false, 1_000)).unwrap();
        assert_eq!(
            fx.timers,
            vec![Timer::OfflineCheck {
                user: uid("a"),
                at: 1_000 + grace
            }]
        );
        // Back online within the grace period: the old check finds nothing to do.
        r.apply(presence("a", true, 2_000)).unwrap();
        assert_eq!(
            r.apply(expire("a", 1_000 + grace)).unwrap(),
            Effects::default()
        );
        // Offline again: an early check reschedules, the due one removes.
        r.apply(presence("a", false, 10_000)).unwrap();
        let early = r.apply(expire("a", 10_000 + grace - 1)).unwrap();
        assert_eq!(
            early.timers,
            vec![Timer::OfflineCheck {
                user: uid("a"),
                at: 10_000 + grace
            }]
        );
        let fx = r.apply(expire("a", 10_000 + grace)).unwrap();
        assert_eq!(fx.left, vec![uid("a")]);
        assert_eq!(fx.events[0].to, Audience::MembersExcept(vec![uid("a")]));
        assert!(matches!(
            &fx.events[1].event,
            ChatRoomEvent::RemovedFromChatRoom {
                reason: LeaveReason::Offline,
                ..
            }
        ));
        assert!(!r.is_member(&uid("a")));

        for exempt in ["owner", "adm"] {
            r.apply(presence(exempt, false, 0)).unwrap();
            assert_eq!(
                r.apply(expire(exempt, i64::MAX / 2)).unwrap(),
                Effects::default()
            );
            assert!(r.is_member(&uid(exempt)));
        }
        assert_eq!(
            r.apply(presence("stranger", false, 0)).unwrap(),
            Effects::default()
        );
    }

    #[test]
    fn big_rooms_tell_only_staff_about_joins() {
        let mut r = Room::create(
            RoomId::from_u64(1),
            uid("owner"),
            spec(100),
            RoomLimits::default(),
            vec![],
            &Limits {
                join_event_threshold: 3,
                ..Limits::default()
            },
            0,
        )
        .unwrap();
        let to = |fx: Effects| fx.events[0].to.clone();
        assert_eq!(
            to(r.apply(Command::Join {
                user: uid("a"),
                now: 0
            })
            .unwrap()),
            Audience::MembersExcept(vec![uid("a")])
        );
        assert_eq!(
            to(r.apply(Command::Join {
                user: uid("b"),
                now: 0
            })
            .unwrap()),
            Audience::MembersExcept(vec![uid("b")])
        );
        assert_eq!(
            to(r.apply(Command::Join {
                user: uid("c"),
                now: 0
            })
            .unwrap()),
            Audience::StaffExcept(vec![uid("c")])
        );
        let leave = Command::Leave {
            user: uid("c"),
            owner_may_leave: true,
        };
        assert_eq!(
            to(r.apply(leave).unwrap()),
            Audience::StaffExcept(vec![uid("c")])
        );
        let leave = Command::Leave {
            user: uid("b"),
            owner_may_leave: true,
        };
        assert_eq!(
            to(r.apply(leave).unwrap()),
            Audience::MembersExcept(vec![uid("b")])
        );
    }

    #[test]
    fn members_are_held_to_a_message_window_staff_are_not() {
        let limits = Limits {
            room_delivery_rate: None,
            user_messages_per_window: Some((3, std::time::Duration::from_secs(1))),
            ..Limits::default()
        };
        let mut r = Room::create(
            RoomId::from_u64(1),
            uid("owner"),
            spec(10),
            RoomLimits::default(),
            vec![uid("m")],
            &limits,
            0,
        )
        .unwrap();
        let send = |r: &mut Room, who: &str, now| {
            r.apply(send_cmd(who, MessagePriority::Normal, now))
                .map(drop)
                .map_err(|e| e.code())
        };
        for _ in 0..3 {
            assert_eq!(send(&mut r, "m", 10), Ok(()));
        }
        assert_eq!(send(&mut r, "m", 999), Err(509));
        assert_eq!(send(&mut r, "m", 1_010), Ok(()), "a new window");
        for _ in 0..10 {
            assert_eq!(send(&mut r, "owner", 1_010), Ok(()), "the owner is exempt");
        }
        // Leaving and rejoining keeps the window: a spammer cannot reset it.
        for _ in 0..2 {
            assert_eq!(send(&mut r, "m", 1_020), Ok(()));
        }
        r.apply(Command::Leave {
            user: uid("m"),
            owner_may_leave: true,
        })
        .unwrap();
        r.apply(Command::Join {
            user: uid("m"),
            now: 0,
        })
        .unwrap();
        assert_eq!(
            send(&mut r, "m", 1_030),
            Err(509),
            "the window outlives the membership"
        );
        assert_eq!(send(&mut r, "m", 2_010), Ok(()), "until it ends");
    }
}
