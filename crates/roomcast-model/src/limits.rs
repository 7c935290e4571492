//! Configurable limits. Defaults are Agora's (see `shared/AGORA-REFERENCE.md`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The engine's limits. Every field has Agora's default; each is configurable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Limits {
    /// Longest room name, in characters. Default 128.
    pub room_name_max_chars: usize,
    /// Longest room description, in characters. Default 512.
    pub room_description_max_chars: usize,
    /// Longest welcome message, in characters. Default 512.
    pub welcome_message_max_chars: usize,
    /// Longest announcement, in characters. Default 512.
    pub announcement_max_chars: usize,
    /// Max members of a room created without an explicit value. Default 300, as the SDK.
    pub default_max_users: u32,
    /// Highest max-members value a room may have (a plan limit). Default 100,000.
    pub max_users_cap: u32,
    /// Most rooms the engine holds at once (EXCEED_SERVICE_LIMIT, 4). Default 100,000.
    pub max_rooms: usize,
    /// Most members that may be added when a room is created. Default 1,000.
    pub max_initial_members: usize,
    /// Largest page of the public room list. Default 100.
    pub public_room_page_max: u32,
    /// Largest message (body plus extension attributes), in bytes (510 above). Default 5,120.
    pub message_max_bytes: usize,
    /// Messages replayed to a member who joins: the room's newest this many. Default 10, at
    /// most 200.
    pub join_replay_count: usize,
    /// Messages each room retains for history and replay. Default 1,000.
    pub history_retention: usize,
    /// Messages older than this are dropped from a room's history; `None` keeps them until the
    /// count retention drops them. Default 7 days.
    pub history_max_age: Option<Duration>,
    /// Largest page of history. Default 200.
    pub history_page_max: u32,
    /// How long a member may be offline before it is removed. Default 5 minutes.
    pub offline_grace: Duration,
    /// Per-room delivery threshold in messages per second, above which the room drops messages
    /// by priority (low first). Default 20, as Agora; `None` turns it off.
    pub room_delivery_rate: Option<u32>,
    /// Above this many members, join and exit events go only to the owner and admins. Default
    /// 1,000.
    pub join_event_threshold: usize,
    /// Most rooms a user may be in at once (EXCEED_SERVICE_LIMIT, 4). Default 1,000.
    pub max_rooms_per_user: usize,
    /// Calls a user may make per second, bursts included (EXCEED_SERVICE_LIMIT, 4); `None`: no
    /// limit. Default 100.
    pub api_calls_per_user_per_second: Option<u32>,
    /// Messages a member may send to a room per window, as `(count, window)`
    /// (MESSAGE_CURRENT_LIMITING, 509); the owner and admins are exempt. Default Twitch's 20 per
    /// 30 seconds; `None`: no limit.
    pub user_messages_per_window: Option<(u32, Duration)>,
    /// A room with no online member that nobody has called for this long leaves memory: its
    /// actor stops and it is loaded from the store again on its next use, transparently
    /// (history, lists, attributes, mutes, offline owner and admins all as they were). `None`:
    /// rooms stay in memory. Default 5 minutes.
    pub room_hibernate_after: Option<Duration>,
    /// Entries each room's audit log keeps (the newest); 0 keeps none. Default 10,000.
    pub audit_log_retention: usize,
    /// How long after sending a sender may recall its message (MESSAGE_RECALL_TIME_LIMIT, 504,
    /// past it); the owner and admins delete messages at any time. Default 2 minutes, as
    /// Agora's.
    pub message_recall_window: Duration,
    /// Most messages a room may have pinned at once (EXCEED_SERVICE_LIMIT, 4, beyond).
    /// Default 10.
    pub max_pinned_messages: usize,
    /// Broadcasts to every active room the engine's super admins may send per window, as
    /// `(count, window)`, all super admins together, in fixed windows from the first broadcast
    /// (EXCEED_SERVICE_LIMIT, 4); `None`: no limit. Default 10 per minute.
    pub broadcasts_per_window: Option<(u32, Duration)>,
}

/// Builders, one per field, since `Limits` is `#[non_exhaustive]`:
///
/// ```
/// # use roomcast_model as roomcast;
/// use roomcast::Limits;
/// let limits = Limits::default()
///     .with_max_rooms_per_user(10)
///     .with_room_delivery_rate(None);
/// assert_eq!(limits.max_rooms_per_user, 10);
/// ```
impl Limits {
    /// Sets [`Limits::room_name_max_chars`].
    pub fn with_room_name_max_chars(mut self, value: usize) -> Self {
        self.room_name_max_chars = value;
        self
    }

    /// Sets [`Limits::room_description_max_chars`].
    pub fn with_room_description_max_chars(mut self, value: usize) -> Self {
        self.room_description_max_chars = value;
        self
    }

    /// Sets [`Limits::welcome_message_max_chars`].
    pub fn with_welcome_message_max_chars(mut self, value: usize) -> Self {
        self.welcome_message_max_chars = value;
        self
    }

    /// Sets [`Limits::announcement_max_chars`].
    pub fn with_announcement_max_chars(mut self, value: usize) -> Self {
        self.announcement_max_chars = value;
        self
    }

    /// Sets [`Limits::default_max_users`].
    pub fn with_default_max_users(mut self, value: u32) -> Self {
        self.default_max_users = value;
        self
    }

    /// Sets [`Limits::max_users_cap`].
    pub fn with_max_users_cap(mut self, value: u32) -> Self {
        self.max_users_cap = value;
        self
    }

    /// Sets [`Limits::max_rooms`].
    pub fn with_max_rooms(mut self, value: usize) -> Self {
        self.max_rooms = value;
        self
    }

    /// Sets [`Limits::max_initial_members`].
    pub fn with_max_initial_members(mut self, value: usize) -> Self {
        self.max_initial_members = value;
        self
    }

    /// Sets [`Limits::public_room_page_max`].
    pub fn with_public_room_page_max(mut self, value: u32) -> Self {
        self.public_room_page_max = value;
        self
    }

    /// Sets [`Limits::message_max_bytes`].
    pub fn with_message_max_bytes(mut self, value: usize) -> Self {
        self.message_max_bytes = value;
        self
    }

    /// Sets [`Limits::audit_log_retention`].
    pub fn with_audit_log_retention(mut self, value: usize) -> Self {
        self.audit_log_retention = value;
        self
    }

    /// Sets [`Limits::broadcasts_per_window`].
    pub fn with_broadcasts_per_window(mut self, value: Option<(u32, Duration)>) -> Self {
        self.broadcasts_per_window = value;
        self
    }

    /// Sets [`Limits::join_replay_count`].
    pub fn with_join_replay_count(mut self, value: usize) -> Self {
        self.join_replay_count = value;
        self
    }

    /// Sets [`Limits::message_recall_window`].
    pub fn with_message_recall_window(mut self, value: Duration) -> Self {
        self.message_recall_window = value;
        self
    }

    /// Sets [`Limits::max_pinned_messages`].
    pub fn with_max_pinned_messages(mut self, value: usize) -> Self {
        self.max_pinned_messages = value;
        self
    }

    /// Sets [`Limits::history_retention`].
    pub fn with_history_retention(mut self, value: usize) -> Self {
        self.history_retention = value;
        self
    }

    /// Sets [`Limits::history_max_age`].
    pub fn with_history_max_age(mut self, value: Option<Duration>) -> Self {
        self.history_max_age = value;
        self
    }

    /// Sets [`Limits::history_page_max`].
    pub fn with_history_page_max(mut self, value: u32) -> Self {
        self.history_page_max = value;
        self
    }

    /// Sets [`Limits::offline_grace`].
    pub fn with_offline_grace(mut self, value: Duration) -> Self {
        self.offline_grace = value;
        self
    }

    /// Sets [`Limits::room_delivery_rate`].
    pub fn with_room_delivery_rate(mut self, value: Option<u32>) -> Self {
        self.room_delivery_rate = value;
        self
    }

    /// Sets [`Limits::join_event_threshold`].
    pub fn with_join_event_threshold(mut self, value: usize) -> Self {
        self.join_event_threshold = value;
        self
    }

    /// Sets [`Limits::max_rooms_per_user`].
    pub fn with_max_rooms_per_user(mut self, value: usize) -> Self {
        self.max_rooms_per_user = value;
        self
    }

    /// Sets [`Limits::api_calls_per_user_per_second`].
    pub fn with_api_calls_per_user_per_second(mut self, value: Option<u32>) -> Self {
        self.api_calls_per_user_per_second = value;
        self
    }

    /// Sets [`Limits::room_hibernate_after`].
    pub fn with_room_hibernate_after(mut self, value: Option<Duration>) -> Self {
        self.room_hibernate_after = value;
        self
    }

    /// Sets [`Limits::user_messages_per_window`].
    pub fn with_user_messages_per_window(mut self, value: Option<(u32, Duration)>) -> Self {
        self.user_messages_per_window = value;
        self
    }
}

impl Limits {
    /// Checks that the limits make sense together (110 otherwise).
    pub fn validate(&self) -> Result<(), crate::ChatError> {
        if self.join_replay_count > 200 {
            return Err(crate::ChatError::InvalidParam(
                "join_replay_count must be at most 200".into(),
            ));
        }
        if self.default_max_users == 0 || self.default_max_users > self.max_users_cap {
            return Err(crate::ChatError::InvalidParam(format!(
                "default_max_users must be 1 to max_users_cap ({}), got {}",
                self.max_users_cap, self.default_max_users
            )));
        }
        if self.history_page_max == 0 || self.public_room_page_max == 0 {
            return Err(crate::ChatError::InvalidParam(
                "page maxima must be at least 1".into(),
            ));
        }
        // A rate of 0 would refuse everything; "no limit" is `None`.
        if self.api_calls_per_user_per_second == Some(0) || self.room_delivery_rate == Some(0) {
            return Err(crate::ChatError::InvalidParam(
                "a rate limit must be at least 1 per second (None turns it off)".into(),
            ));
        }
        if matches!(self.user_messages_per_window, Some((0, _)))
            || matches!(self.user_messages_per_window, Some((_, w)) if w < Duration::from_millis(1))
        {
            return Err(crate::ChatError::InvalidParam(
                "a message window needs a count and a length of at least 1 (None turns it off)"
                    .into(),
            ));
        }
        if matches!(self.broadcasts_per_window, Some((0, _)))
            || matches!(self.broadcasts_per_window, Some((_, w)) if w < Duration::from_millis(1))
        {
            return Err(crate::ChatError::InvalidParam(
                "a broadcast window needs a count and a length of at least 1 (None turns it off)"
                    .into(),
            ));
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            room_name_max_chars: 128,
            room_description_max_chars: 512,
            welcome_message_max_chars: 512,
            announcement_max_chars: 512,
            default_max_users: 300,
            max_users_cap: 100_000,
            max_rooms: 100_000,
            max_initial_members: 1_000,
            public_room_page_max: 100,
            message_max_bytes: 5 * 1024,
            join_replay_count: 10,
            history_retention: 1_000,
            history_max_age: Some(Duration::from_secs(7 * 24 * 60 * 60)),
            history_page_max: 200,
            offline_grace: Duration::from_secs(5 * 60),
            room_delivery_rate: Some(20),
            join_event_threshold: 1_000,
            max_rooms_per_user: 1_000,
            api_calls_per_user_per_second: Some(100),
            user_messages_per_window: Some((20, Duration::from_secs(30))),
            room_hibernate_after: Some(Duration::from_secs(5 * 60)),
            audit_log_retention: 10_000,
            message_recall_window: Duration::from_secs(2 * 60),
            max_pinned_messages: 10,
            broadcasts_per_window: Some((10, Duration::from_secs(60))),
        }
    }
}

/// A room's own limits, set when it is created and replaced by its owner. Each field left
/// `None` follows the engine's [`Limits`] (so `RoomLimits::default()` is "the engine's, all
/// of them"); fields whose engine limit may be off take `Some(None)` to turn it off for this
/// room. The fields are named as in [`Limits`].
///
/// A stream room and its side rooms need different limits: the stream's room keeps Agora's
/// delivery threshold and the message window, a moderators' side room turns both off.
///
/// ```
/// # use roomcast_model as roomcast;
/// use roomcast::{Limits, RoomLimits};
/// use std::time::Duration;
/// let side_room = RoomLimits::default()
///     .with_room_delivery_rate(None) // no delivery threshold in this room
///     .with_offline_grace(Duration::from_secs(30));
/// let effective = side_room.apply(&Limits::default());
/// assert_eq!(effective.room_delivery_rate, None);
/// assert_eq!(effective.offline_grace, Duration::from_secs(30));
/// assert_eq!(effective.join_replay_count, 10); // the engine's
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RoomLimits {
    /// The delivery threshold in messages per second ([`Limits::room_delivery_rate`]);
    /// `Some(None)`: none in this room.
    pub room_delivery_rate: Option<Option<u32>>,
    /// Messages a member may send per window ([`Limits::user_messages_per_window`]);
    /// `Some(None)`: no limit in this room.
    pub user_messages_per_window: Option<Option<(u32, Duration)>>,
    /// How long a member may be offline before it is removed ([`Limits::offline_grace`]).
    pub offline_grace: Option<Duration>,
    /// Above this many members, join and exit events go only to the owner and admins
    /// ([`Limits::join_event_threshold`]).
    pub join_event_threshold: Option<usize>,
    /// Messages replayed to a member who joins, at most 200 ([`Limits::join_replay_count`]).
    pub join_replay_count: Option<usize>,
    /// Messages the room retains for history and replay ([`Limits::history_retention`]).
    pub history_retention: Option<usize>,
    /// Messages older than this leave the history ([`Limits::history_max_age`]); `Some(None)`:
    /// no age limit in this room.
    pub history_max_age: Option<Option<Duration>>,
}

impl RoomLimits {
    /// Sets [`RoomLimits::room_delivery_rate`] (`None` turns the threshold off for this room).
    pub fn with_room_delivery_rate(mut self, per_second: Option<u32>) -> Self {
        self.room_delivery_rate = Some(per_second);
        self
    }

    /// Sets [`RoomLimits::user_messages_per_window`] (`None` turns the limit off for this room).
    pub fn with_user_messages_per_window(mut self, value: Option<(u32, Duration)>) -> Self {
        self.user_messages_per_window = Some(value);
        self
    }

    /// Sets [`RoomLimits::offline_grace`].
    pub fn with_offline_grace(mut self, grace: Duration) -> Self {
        self.offline_grace = Some(grace);
        self
    }

    /// Sets [`RoomLimits::join_event_threshold`].
    pub fn with_join_event_threshold(mut self, members: usize) -> Self {
        self.join_event_threshold = Some(members);
        self
    }

    /// Sets [`RoomLimits::join_replay_count`].
    pub fn with_join_replay_count(mut self, count: usize) -> Self {
        self.join_replay_count = Some(count);
        self
    }

    /// Sets [`RoomLimits::history_retention`].
    pub fn with_history_retention(mut self, count: usize) -> Self {
        self.history_retention = Some(count);
        self
    }

    /// Sets [`RoomLimits::history_max_age`] (`None` turns the age limit off for this room).
    pub fn with_history_max_age(mut self, max_age: Option<Duration>) -> Self {
        self.history_max_age = Some(max_age);
        self
    }

    /// The limits a room with these overrides runs under: `engine`'s, with every field set here
    /// replaced.
    pub fn apply(&self, engine: &Limits) -> Limits {
        let mut l = engine.clone();
        if let Some(v) = self.room_delivery_rate {
            l.room_delivery_rate = v;
        }
        if let Some(v) = self.user_messages_per_window {
            l.user_messages_per_window = v;
        }
        if let Some(v) = self.offline_grace {
            l.offline_grace = v;
        }
        if let Some(v) = self.join_event_threshold {
            l.join_event_threshold = v;
        }
        if let Some(v) = self.join_replay_count {
            l.join_replay_count = v;
        }
        if let Some(v) = self.history_retention {
            l.history_retention = v;
        }
        if let Some(v) = self.history_max_age {
            l.history_max_age = v;
        }
        l
    }

    /// Checks the overrides against the rules of [`Limits`] (110 otherwise).
    pub fn validate(&self, engine: &Limits) -> Result<(), crate::ChatError> {
        self.apply(engine).validate()
    }
}
