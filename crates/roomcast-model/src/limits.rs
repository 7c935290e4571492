//! Configurable limits. Defaults are Agora's (see `shared/AGORA-REFERENCE.md`).

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
        }
    }
}
