//! Helpers shared by the model's unit tests.

use crate::{Limits, Room, RoomId, RoomLimits, RoomSpec, UserId};

pub(crate) fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

/// A spec named "r" with room for `max_users`.
pub(crate) fn spec(max_users: u32) -> RoomSpec {
    RoomSpec {
        name: "r".into(),
        description: String::new(),
        welcome_message: String::new(),
        max_users,
    }
}

/// Room 1, owned by `owner`, with `members` in it, under `limits`, created at time 0.
pub(crate) fn room_of(owner: &str, members: &[&str], max_users: u32, limits: &Limits) -> Room {
    let members = members.iter().map(|m| uid(m)).collect();
    Room::create(
        RoomId::from_u64(1),
        uid(owner),
        spec(max_users),
        RoomLimits::default(),
        members,
        limits,
        0,
    )
    .unwrap()
}
