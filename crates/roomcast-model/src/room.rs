//! A room's state and its rules: `Room::apply(command) -> Result<Effects>`.
//!
//! The room actor in the engine owns one `Room` and calls [`Room::apply`] for every state change.
//! `apply` either rejects the command with the error the caller gets (and changes nothing) or
//! changes the state and says what happened: who joined or left, which events go to whom, and
//! whether the persisted record changed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::event::{Audience, ChatRoomEvent, LeaveReason, Outgoing};
use crate::{ChatError, Limits, RoomId, UserId};

/// Milliseconds since the Unix epoch, from the engine's clock.
pub type Timestamp = i64;

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
    /// Creation time.
    pub created_at: Timestamp,
}

/// A state change asked of a room. Reads are plain methods on [`Room`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// `user` joins.
    Join {
        /// Who joins.
        user: UserId,
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
}

/// What applying a command did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
}

/// Current members, in join order. The member list is newest first, paged by join sequence.
#[derive(Debug, Clone, Default)]
struct Members {
    seq_of: HashMap<UserId, u64>,
    by_seq: BTreeMap<u64, UserId>,
    next_seq: u64,
}

impl Members {
    fn insert(&mut self, user: UserId) -> bool {
        if self.seq_of.contains_key(&user) {
            return false;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.seq_of.insert(user.clone(), seq);
        self.by_seq.insert(seq, user);
        true
    }

    fn remove(&mut self, user: &UserId) -> bool {
        match self.seq_of.remove(user) {
            Some(seq) => {
                self.by_seq.remove(&seq);
                true
            }
            None => false,
        }
    }

    fn contains(&self, user: &UserId) -> bool {
        self.seq_of.contains_key(user)
    }

    fn len(&self) -> usize {
        self.seq_of.len()
    }
}

/// One chat room: its persisted record plus its current members.
#[derive(Debug, Clone)]
pub struct Room {
    record: RoomRecord,
    members: Members,
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
        members: Vec<UserId>,
        limits: &Limits,
        now: Timestamp,
    ) -> Result<Room, ChatError> {
        spec.validate(limits)?;
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
        Ok(Room {
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
                created_at: now,
            },
            members: set,
        })
    }

    /// Restores a room from its persisted record, with no members (they rejoin).
    pub fn from_record(record: RoomRecord) -> Room {
        Room {
            record,
            members: Members::default(),
        }
    }

    /// The persisted part of the state.
    pub fn record(&self) -> &RoomRecord {
        &self.record
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
    pub fn members(&self) -> impl Iterator<Item = &UserId> {
        self.members.by_seq.values()
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
        }
    }

    /// Applies `command`: on `Err` nothing changed; on `Ok` the effects say what did.
    pub fn apply(&mut self, command: Command) -> Result<Effects, ChatError> {
        match command {
            Command::Join { user } => self.join(user),
            Command::Leave {
                user,
                owner_may_leave,
            } => self.leave(user, owner_may_leave),
            Command::Destroy { user } => self.destroy(user),
        }
    }

    fn join(&mut self, user: UserId) -> Result<Effects, ChatError> {
        if self.record.block_list.contains(&user) {
            return Err(ChatError::UserInBlocklist);
        }
        if self.members.contains(&user) {
            return Err(ChatError::AlreadyJoined);
        }
        if self.members.len() >= self.record.spec.max_users as usize {
            return Err(ChatError::MembersFull(self.record.spec.max_users));
        }
        self.members.insert(user.clone());
        Ok(Effects {
            joined: vec![user.clone()],
            events: vec![Outgoing {
                to: Audience::MembersExcept(user.clone()),
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
        self.members.remove(&user);
        Ok(Effects {
            left: vec![user.clone()],
            events: vec![Outgoing {
                to: Audience::MembersExcept(user.clone()),
                event: ChatRoomEvent::MemberExited {
                    room_id: self.record.id,
                    room_name: self.record.spec.name.clone(),
                    participant: user,
                },
            }],
            ..Effects::default()
        })
    }

    fn destroy(&mut self, user: UserId) -> Result<Effects, ChatError> {
        if user != self.record.owner {
            return Err(ChatError::PermissionDenied(
                "only the owner may destroy the room".into(),
            ));
        }
        let room_id = self.record.id;
        let room_name = self.record.spec.name.clone();
        let members: Vec<UserId> = std::mem::take(&mut self.members)
            .by_seq
            .into_values()
            .collect();
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
                room_id,
                room_name: room_name.clone(),
                participant,
                reason: LeaveReason::Destroyed,
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

    fn uid(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    fn spec(max_users: u32) -> RoomSpec {
        RoomSpec {
            name: "stream".into(),
            description: String::new(),
            welcome_message: String::new(),
            max_users,
        }
    }

    fn room(max_users: u32) -> Room {
        Room::create(
            RoomId::from_u64(1),
            uid("owner"),
            spec(max_users),
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
            r.apply(Command::Join { user: uid("owner") })
                .unwrap_err()
                .code(),
            701
        );
        let fx = r.apply(Command::Join { user: uid("a") }).unwrap();
        assert_eq!(fx.joined, vec![uid("a")]);
        assert_eq!(fx.events[0].to, Audience::MembersExcept(uid("a")));
        assert_eq!(
            r.apply(Command::Join { user: uid("b") })
                .unwrap_err()
                .code(),
            704
        );
        r.record.block_list.insert(uid("c"));
        assert_eq!(
            r.apply(Command::Join { user: uid("c") })
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
        r.apply(Command::Join { user: uid("owner") }).unwrap();
        assert_eq!(
            r.snapshot(Some(&uid("owner"))).permission_type,
            ChatRoomPermissionType::Owner
        );
    }

    #[test]
    fn destroy_is_owner_only_and_tells_everyone_else() {
        let mut r = room(10);
        r.apply(Command::Join { user: uid("a") }).unwrap();
        r.apply(Command::Join { user: uid("b") }).unwrap();
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
}
