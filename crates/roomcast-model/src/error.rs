//! The one public error type, with Agora's stable numeric codes.
//!
//! Domain failures (a rule said no: muted, full, wrong role) carry Agora's chat-room codes, so that
//! a client written against Agora can branch on the same numbers. Delivery failures (the engine
//! stopped, a call timed out, the store failed, a room crashed) are roomcast's own codes in the 900
//! range; [`ChatError::is_delivery_failure`] tells the two apart.

use thiserror::Error;

/// The numeric code of a [`ChatError`]: Agora's where one exists, 9xx for roomcast's own.
pub type ErrorCode = u32;

/// Why a call failed. `code()` is stable across releases; the text is for people.
#[derive(Debug, Clone, PartialEq, Eq, Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum ChatError {
    /// 1, GENERAL_ERROR: anything not listed.
    #[error("general error: {0}")]
    General(String),
    /// 4, EXCEED_SERVICE_LIMIT: a configured plan limit or call-frequency limit was reached.
    #[error("service limit exceeded: {0}")]
    ExceedServiceLimit(String),
    /// 110, INVALID_PARAM: a malformed parameter (bad user id, name too long, bad page size...).
    #[error("invalid parameter: {0}")]
    InvalidParam(String),
    /// 201, USER_NOT_LOGIN: the client's session has ended (logged out).
    #[error("user is not logged in")]
    UserNotLogin,
    /// 210, USER_PERMISSION_DENIED: e.g. a blocked user sends.
    #[error("permission denied: {0}")]
    UserPermissionDenied(String),
    /// 215, USER_MUTED: the sender is on the room's mute list.
    #[error("the user is muted in this room")]
    UserMuted,
    /// 219, USER_MUTED_BY_ADMIN: all members of the room are muted.
    #[error("all members of this room are muted")]
    UserMutedByAdmin,
    /// 500, MESSAGE_INVALID: a malformed message.
    #[error("invalid message: {0}")]
    MessageInvalid(String),
    /// 504, MESSAGE_RECALL_TIME_LIMIT: the sender recalls a message older than the room's
    /// recall window (`Limits::message_recall_window`, 2 minutes by default).
    #[error("the message is older than the recall window of {0:?}")]
    MessageRecallTimeLimit(std::time::Duration),
    /// 507, MESSAGE_ILLEGAL_WHITELIST: mute-all is on and the sender is not allow-listed.
    #[error("the sender is not on the room's allow list")]
    MessageIllegalWhitelist,
    /// 508, MESSAGE_EXTERNAL_LOGIC_BLOCKED: the embedder's pre-send hook blocked the message
    /// (the hook's reason is the text), or gave no decision in time under a reject-on-timeout
    /// policy.
    #[error("message blocked by the pre-send hook: {0}")]
    MessageExternalLogicBlocked(String),
    /// 509, MESSAGE_CURRENT_LIMITING: the sender exceeded its send rate.
    #[error("message rate limit exceeded")]
    MessageCurrentLimiting,
    /// 509, MESSAGE_CURRENT_LIMITING: slow mode is on and the sender's cooldown runs for this
    /// long still (roomcast's own: Twitch's slow mode).
    #[error("slow mode: the next message may be sent in {:.1} s", .0.as_secs_f64())]
    SlowMode(std::time::Duration),
    /// 219, USER_MUTED_BY_ADMIN: the room is frozen (until the time given, engine clock;
    /// `None`: until unfrozen) and only the owner and admins may send (roomcast's own:
    /// Sendbird's freeze).
    #[error("the room is frozen: only its owner and admins may send")]
    RoomFrozen(Option<crate::Timestamp>),
    /// 707, USER_IN_BLOCKLIST: the user was kicked with a rejoin ban that ends then (engine
    /// clock; roomcast's own: Tencent's and RongCloud's kick duration).
    #[error("kicked from this room: may join again at {0}")]
    RejoinBanned(crate::Timestamp),
    /// 510, MESSAGE_SIZE_LIMIT: the body is over the size limit.
    #[error("message body is {size} bytes, over the limit of {limit}")]
    MessageSizeLimit {
        /// The body's size in bytes.
        size: usize,
        /// The configured limit in bytes.
        limit: usize,
    },
    /// 700, CHATROOM_INVALID_ID: an empty or malformed room id.
    #[error("invalid room id: {0}")]
    InvalidRoomId(String),
    /// 701, CHATROOM_ALREADY_JOINED: the user is already in the room.
    #[error("already in the room")]
    AlreadyJoined,
    /// 702, CHATROOM_NOT_JOINED: the user (or the target) is not in the room.
    #[error("not in the room: {0}")]
    NotJoined(String),
    /// 703, CHATROOM_PERMISSION_DENIED: the caller's role lacks the permission.
    #[error("chat room permission denied: {0}")]
    PermissionDenied(String),
    /// 704, CHATROOM_MEMBERS_FULL: the room is at its max members.
    #[error("the room is full ({0} members)")]
    MembersFull(u32),
    /// 705, CHATROOM_NOT_EXIST: no such room (never created, or destroyed).
    #[error("no such room: {0}")]
    RoomNotExist(String),
    /// 706, CHATROOM_OWNER_NOT_ALLOW_LEAVE: the owner may not leave (ChatOptions says so).
    #[error("the owner is not allowed to leave the room")]
    OwnerNotAllowLeave,
    /// 707, CHATROOM_USER_IN_BLOCKLIST: the user is on the room's block list.
    #[error("the user is on the room's block list")]
    UserInBlocklist,
    /// 900: the engine has been shut down; no further calls are served.
    #[error("the engine has stopped")]
    EngineStopped,
    /// 901: the engine did not answer within the configured call timeout.
    #[error("the call timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// 902: the store failed to open, read or write; the operation was not applied. The
    /// [`StorageFailure`] keeps the store's own error as its `source()`.
    #[error("storage failure: {}", .0.context())]
    Storage(#[source] StorageFailure),
    /// 903: the room's actor stopped while serving this call (it is being restarted).
    #[error("the room is temporarily unavailable: {0}")]
    RoomUnavailable(String),
}

/// What went wrong in the store, with the store's own error as its [`std::error::Error::source`]
/// (so that an error report walks down to the cause: a locked directory, a truncated file, a
/// corrupt record).
#[derive(Debug, Clone)]
pub struct StorageFailure {
    context: String,
    source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
}

/// Across nodes a storage failure travels as its text (its source stays where it happened).
impl serde::Serialize for StorageFailure {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = match &self.source {
            Some(source) => format!("{}: {source}", self.context),
            None => self.context.clone(),
        };
        s.serialize_str(&text)
    }
}

impl<'de> serde::Deserialize<'de> for StorageFailure {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(StorageFailure::message)
    }
}

impl StorageFailure {
    /// A failure described by `context`, caused by `source`.
    pub fn new(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> StorageFailure {
        StorageFailure {
            context: context.into(),
            source: Some(std::sync::Arc::new(source)),
        }
    }

    /// A failure with no underlying error.
    pub fn message(context: impl Into<String>) -> StorageFailure {
        StorageFailure {
            context: context.into(),
            source: None,
        }
    }
}

impl StorageFailure {
    /// What the engine was doing (the [`ChatError`]'s message says it).
    pub fn context(&self) -> &str {
        &self.context
    }
}

/// The store's own error, so that an error report (`ChatError`, then this, then its sources)
/// names each thing once.
impl std::fmt::Display for StorageFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Some(source) => source.fmt(f),
            None => f.write_str(&self.context),
        }
    }
}

impl std::error::Error for StorageFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().and_then(|e| e.source())
    }
}

/// Two failures are equal when they read the same (errors rarely compare otherwise).
impl PartialEq for StorageFailure {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for StorageFailure {}

impl ChatError {
    /// The same error with `what` in front of its text, where it has one (the code is kept).
    pub(crate) fn with_context(self, what: &str) -> ChatError {
        use ChatError::*;
        let add = |s: String| format!("{what}: {s}");
        match self {
            General(s) => General(add(s)),
            ExceedServiceLimit(s) => ExceedServiceLimit(add(s)),
            InvalidParam(s) => InvalidParam(add(s)),
            UserPermissionDenied(s) => UserPermissionDenied(add(s)),
            MessageInvalid(s) => MessageInvalid(add(s)),
            PermissionDenied(s) => PermissionDenied(add(s)),
            other => other,
        }
    }

    /// The stable numeric code (Agora's numbering where Agora has one).
    pub fn code(&self) -> ErrorCode {
        match self {
            ChatError::General(_) => 1,
            ChatError::ExceedServiceLimit(_) => 4,
            ChatError::InvalidParam(_) => 110,
            ChatError::UserNotLogin => 201,
            ChatError::UserPermissionDenied(_) => 210,
            ChatError::UserMuted => 215,
            ChatError::UserMutedByAdmin => 219,
            ChatError::MessageInvalid(_) => 500,
            ChatError::MessageRecallTimeLimit(_) => 504,
            ChatError::MessageIllegalWhitelist => 507,
            ChatError::MessageExternalLogicBlocked(_) => 508,
            ChatError::MessageCurrentLimiting => 509,
            ChatError::SlowMode(_) => 509,
            ChatError::RoomFrozen(_) => 219,
            ChatError::RejoinBanned(_) => 707,
            ChatError::MessageSizeLimit { .. } => 510,
            ChatError::InvalidRoomId(_) => 700,
            ChatError::AlreadyJoined => 701,
            ChatError::NotJoined(_) => 702,
            ChatError::PermissionDenied(_) => 703,
            ChatError::MembersFull(_) => 704,
            ChatError::RoomNotExist(_) => 705,
            ChatError::OwnerNotAllowLeave => 706,
            ChatError::UserInBlocklist => 707,
            ChatError::EngineStopped => 900,
            ChatError::Timeout(_) => 901,
            ChatError::Storage(_) => 902,
            ChatError::RoomUnavailable(_) => 903,
        }
    }

    /// True for failures of the engine itself (stopped, timeout, storage, crashed room) rather
    /// than a rule that said no. A delivery failure may succeed when retried later; a rule failure
    /// will not until the room's state changes.
    pub fn is_delivery_failure(&self) -> bool {
        self.code() >= 900
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_agoras() {
        let cases = [
            (ChatError::General(String::new()), 1),
            (ChatError::ExceedServiceLimit(String::new()), 4),
            (ChatError::InvalidParam(String::new()), 110),
            (ChatError::UserNotLogin, 201),
            (ChatError::UserPermissionDenied(String::new()), 210),
            (ChatError::UserMuted, 215),
            (ChatError::UserMutedByAdmin, 219),
            (ChatError::MessageInvalid(String::new()), 500),
            (
                ChatError::MessageRecallTimeLimit(std::time::Duration::from_secs(120)),
                504,
            ),
            (ChatError::MessageIllegalWhitelist, 507),
            (ChatError::MessageExternalLogicBlocked(String::new()), 508),
            (ChatError::MessageCurrentLimiting, 509),
            (ChatError::MessageSizeLimit { size: 9, limit: 1 }, 510),
            (ChatError::InvalidRoomId(String::new()), 700),
            (ChatError::AlreadyJoined, 701),
            (ChatError::NotJoined(String::new()), 702),
            (ChatError::PermissionDenied(String::new()), 703),
            (ChatError::MembersFull(3), 704),
            (ChatError::RoomNotExist(String::new()), 705),
            (ChatError::OwnerNotAllowLeave, 706),
            (ChatError::UserInBlocklist, 707),
            (ChatError::EngineStopped, 900),
            (ChatError::Timeout(std::time::Duration::from_millis(5)), 901),
            (ChatError::Storage(StorageFailure::message("disk")), 902),
            (ChatError::RoomUnavailable(String::new()), 903),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code, "{err:?}");
            assert_eq!(err.is_delivery_failure(), code >= 900);
            assert!(!err.to_string().is_empty());
        }
    }
}
