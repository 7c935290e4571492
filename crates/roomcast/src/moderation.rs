//! The moderation and attribute calls of `ChatRoomManager`: roles, lists, mutes, specification,
//! announcement, member list, custom attributes.
//!
//! Who may call what is Agora's (see `shared/AGORA-REFERENCE.md`, and
//! `roomcast_model::check_permission`): a call without the right role fails with 703, one on a
//! user who is not in the room with 702. Each change fires its `ChatRoomEventHandler` callback to
//! the members the reference names, never to the member who acted.

use std::collections::BTreeMap;

use roomcast_engine::{QueryAnswer, RoomQuery};
use roomcast_model::{
    AttributeFailures, ChatCursorResult, ChatError, ChatPageResult, Moderation, MuteDuration,
    MutedMember, RoomId, RoomLimits, SetAttributes, UserId,
};

use crate::ChatRoomManager;

fn users<I, S>(list: I) -> Result<Vec<UserId>, ChatError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    list.into_iter().map(|u| UserId::new(u.as_ref())).collect()
}

fn unexpected() -> ChatError {
    ChatError::General("unexpected answer from the room".into())
}

impl ChatRoomManager {
    async fn moderate(&self, room_id: &RoomId, action: Moderation) -> Result<(), ChatError> {
        let by = self.client.current_user_id();
        self.client.core()?.moderate(by, *room_id, action).await
    }

    async fn query(&self, room_id: &RoomId, query: RoomQuery) -> Result<QueryAnswer, ChatError> {
        let viewer = self.client.current_user_id();
        self.client.core()?.query(viewer, *room_id, query).await
    }

    /// Makes a member an admin (owner only; at most 99 admins, 4 beyond). The new admin and
    /// the admins get `on_admin_added_from_chat_room`.
    pub async fn add_chat_room_admin(
        &self,
        room_id: &RoomId,
        admin: impl AsRef<str>,
    ) -> Result<(), ChatError> {
        let admin = UserId::new(admin.as_ref())?;
        self.moderate(room_id, Moderation::AddAdmin(admin)).await
    }

    /// Takes an admin's role (owner only). The former admin and the admins get
    /// `on_admin_removed_from_chat_room`.
    pub async fn remove_chat_room_admin(
        &self,
        room_id: &RoomId,
        admin: impl AsRef<str>,
    ) -> Result<(), ChatError> {
        let admin = UserId::new(admin.as_ref())?;
        self.moderate(room_id, Moderation::RemoveAdmin(admin)).await
    }

    /// Transfers ownership to a member (owner only); the old owner becomes a plain member. All
    /// members get `on_owner_changed_from_chat_room`.
    pub async fn change_owner(
        &self,
        room_id: &RoomId,
        new_owner: impl AsRef<str>,
    ) -> Result<(), ChatError> {
        let new_owner = UserId::new(new_owner.as_ref())?;
        self.moderate(room_id, Moderation::ChangeOwner(new_owner))
            .await
    }

    /// Removes (kicks) members: the owner may remove admins and members, admins members only.
    /// Each gets `on_removed_from_chat_room` (reason `Kicked`), the others
    /// `on_member_exited_from_chat_room`. All targets are checked first; on an error none is
    /// removed. A kicked member may join again.
    pub async fn remove_chat_room_members<I, S>(
        &self,
        room_id: &RoomId,
        members: I,
    ) -> Result<(), ChatError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.moderate(room_id, Moderation::Kick(users(members)?))
            .await
    }

    /// Blocks users (owner and admins; admins not the owner or other admins). Members among them
    /// are removed as if kicked, and none may join again (707) until unblocked.
    pub async fn block_chat_room_members<I, S>(
        &self,
        room_id: &RoomId,
        members: I,
    ) -> Result<(), ChatError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.moderate(room_id, Moderation::Block(users(members)?))
            .await
    }

    /// Unblocks users (owner and admins).
    pub async fn unblock_chat_room_members<I, S>(
        &self,
        room_id: &RoomId,
        members: I,
    ) -> Result<(), ChatError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.moderate(room_id, Moderation::Unblock(users(members)?))
            .await
    }

    /// Page `page_num` (from 1) of the block list, sorted by user id (owner and admins). Pages
    /// hold 1 to [`crate::LIST_PAGE_MAX`] users (110 otherwise); `total` counts the whole list.
    pub async fn fetch_chat_room_block_list(
        &self,
        room_id: &RoomId,
        page_num: u32,
        page_size: u32,
    ) -> Result<ChatPageResult<UserId>, ChatError> {
        let query = RoomQuery::BlockList {
            page_num,
            page_size,
        };
        match self.query(room_id, query).await? {
            QueryAnswer::Users(page) => Ok(page),
            _ => Err(unexpected()),
        }
    }

    /// Mutes members for a while or until unmuted ([`MuteDuration`]; a `Duration` converts
    /// into one). The owner mutes admins and members, admins members only. A muted member's
    /// messages fail with 215, even if it is on the allow list. The targets, the owner and the
    /// admins get `on_mute_list_added_from_chat_room` with the end time; when the mute ends by
    /// itself they get `on_mute_list_removed_from_chat_room`. Muting a muted member again
    /// replaces its end time.
    pub async fn mute_chat_room_members<I, S>(
        &self,
        room_id: &RoomId,
        members: I,
        duration: impl Into<MuteDuration>,
    ) -> Result<(), ChatError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let action = Moderation::Mute {
            targets: users(members)?,
            duration: duration.into(),
        };
        self.moderate(room_id, action).await
    }

    /// Unmutes members (same rights as muting).
    pub async fn unmute_chat_room_members<I, S>(
        &self,
        room_id: &RoomId,
        members: I,
    ) -> Result<(), ChatError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.moderate(room_id, Moderation::Unmute(users(members)?))
            .await
    }

    /// Page `page_num` (from 1) of the mute list, sorted by user id, each member with the end
    /// of its mute (`None`: until unmuted), without mutes that have ended (owner and admins).
    /// Pages hold 1 to [`crate::LIST_PAGE_MAX`] entries (110 otherwise).
    pub async fn fetch_chat_room_mute_list(
        &self,
        room_id: &RoomId,
        page_num: u32,
        page_size: u32,
    ) -> Result<ChatPageResult<MutedMember>, ChatError> {
        let query = RoomQuery::MuteList {
            page_num,
            page_size,
        };
        match self.query(room_id, query).await? {
            QueryAnswer::MuteList(page) => Ok(page),
            _ => Err(unexpected()),
        }
    }

    /// Mutes every member but the owner, the admins and the allow-listed (owner and admins).
    /// Independent of the mute list. All members get
    /// `on_all_chat_room_member_mute_state_changed`.
    pub async fn mute_all_chat_room_members(&self, room_id: &RoomId) -> Result<(), ChatError> {
        self.moderate(room_id, Moderation::MuteAll(true)).await
    }

    /// Turns mute-all off (owner and admins).
    pub async fn unmute_all_chat_room_members(&self, room_id: &RoomId) -> Result<(), ChatError> {
        self.moderate(room_id, Moderation::MuteAll(false)).await
    }

    /// Adds members to the allow list (owner and admins): they may send while mute-all is on,
    /// and their messages count as high priority.
    pub async fn add_members_to_chat_room_allow_list<I, S>(
        &self,
        room_id: &RoomId,
        members: I,
    ) -> Result<(), ChatError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.moderate(room_id, Moderation::AllowListAdd(users(members)?))
            .await
    }

    /// Removes users from the allow list (owner and admins).
    pub async fn remove_members_from_chat_room_allow_list<I, S>(
        &self,
        room_id: &RoomId,
        members: I,
    ) -> Result<(), ChatError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.moderate(room_id, Moderation::AllowListRemove(users(members)?))
            .await
    }

    /// Page `page_num` (from 1) of the allow list, sorted by user id (owner and admins; the
    /// SDK's `fetchChatRoomAllowListFromServer`). Pages hold 1 to [`crate::LIST_PAGE_MAX`] users
    /// (110 otherwise).
    pub async fn fetch_chat_room_allow_list(
        &self,
        room_id: &RoomId,
        page_num: u32,
        page_size: u32,
    ) -> Result<ChatPageResult<UserId>, ChatError> {
        let query = RoomQuery::AllowList {
            page_num,
            page_size,
        };
        match self.query(room_id, query).await? {
            QueryAnswer::Users(page) => Ok(page),
            _ => Err(unexpected()),
        }
    }

    /// Whether the caller is on the allow list (the owner and admins always are). Any member.
    pub async fn is_member_in_chat_room_allow_list(
        &self,
        room_id: &RoomId,
    ) -> Result<bool, ChatError> {
        match self.query(room_id, RoomQuery::IsOnAllowList).await? {
            QueryAnswer::Bool(b) => Ok(b),
            _ => Err(unexpected()),
        }
    }

    /// Renames the room (owner and admins; 1 to 128 characters). All members get
    /// `on_specification_changed`.
    pub async fn change_chat_room_name(
        &self,
        room_id: &RoomId,
        name: impl Into<String>,
    ) -> Result<(), ChatError> {
        self.moderate(room_id, Moderation::ChangeName(name.into()))
            .await
    }

    /// Changes the description (owner and admins; up to 512 characters).
    pub async fn change_chat_room_description(
        &self,
        room_id: &RoomId,
        description: impl Into<String>,
    ) -> Result<(), ChatError> {
        self.moderate(room_id, Moderation::ChangeDescription(description.into()))
            .await
    }

    /// Changes max members (owner and admins; not below the current member count, 110).
    pub async fn change_chat_room_max_users(
        &self,
        room_id: &RoomId,
        max_users: u32,
    ) -> Result<(), ChatError> {
        self.moderate(room_id, Moderation::ChangeMaxUsers(max_users))
            .await
    }

    /// Changes the room's own limits (owner only, 703 otherwise): each field `change` sets
    /// replaces the room's, the others stay as they are; a field never set is the engine's
    /// ([`crate::Limits`]). Checked as the engine's limits are (110). The other members get
    /// `on_specification_changed`, and the room's info shows the limits.
    ///
    /// A new delivery threshold or message window starts counting afresh; a new offline grace
    /// applies to members who go offline from now on; a new retention trims with the next
    /// message; a larger replay count fills as messages arrive.
    pub async fn change_chat_room_limits(
        &self,
        room_id: &RoomId,
        change: RoomLimits,
    ) -> Result<(), ChatError> {
        self.moderate(room_id, Moderation::ChangeLimits(change))
            .await
    }

    /// Changes the announcement (owner and admins; up to 512 characters). All members get
    /// `on_announcement_changed_from_chat_room`.
    pub async fn update_chat_room_announcement(
        &self,
        room_id: &RoomId,
        announcement: impl Into<String>,
    ) -> Result<(), ChatError> {
        self.moderate(room_id, Moderation::UpdateAnnouncement(announcement.into()))
            .await
    }

    /// The announcement (members).
    pub async fn fetch_chat_room_announcement(
        &self,
        room_id: &RoomId,
    ) -> Result<String, ChatError> {
        match self.query(room_id, RoomQuery::Announcement).await? {
            QueryAnswer::Text(t) => Ok(t),
            _ => Err(unexpected()),
        }
    }

    /// A page of the member list, newest first (members). Start with `None`; pass the previous
    /// page's `cursor` to get the next (`None` there means the end). The page size is 1 to
    /// [`crate::LIST_PAGE_MAX`] (110 otherwise).
    pub async fn fetch_chat_room_members(
        &self,
        room_id: &RoomId,
        cursor: Option<u64>,
        page_size: u32,
    ) -> Result<ChatCursorResult<UserId>, ChatError> {
        roomcast_model::check_page(1, page_size, crate::LIST_PAGE_MAX)?;
        match self
            .query(room_id, RoomQuery::Members { cursor, page_size })
            .await?
        {
            QueryAnswer::Members(page) => Ok(page),
            _ => Err(unexpected()),
        }
    }

    /// Every custom attribute of the room, key to value (members; the SDK's
    /// `fetchChatRoomAttributes` without keys).
    pub async fn fetch_all_chat_room_attributes(
        &self,
        room_id: &RoomId,
    ) -> Result<BTreeMap<String, String>, ChatError> {
        self.fetch_chat_room_attributes(room_id, Vec::<String>::new())
            .await
    }

    /// Custom attributes (members): those of the given keys that exist (all of them if `keys`
    /// is empty).
    pub async fn fetch_chat_room_attributes<I, S>(
        &self,
        room_id: &RoomId,
        keys: I,
    ) -> Result<BTreeMap<String, String>, ChatError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let keys = keys.into_iter().map(|k| k.as_ref().to_string()).collect();
        match self.query(room_id, RoomQuery::Attributes { keys }).await? {
            QueryAnswer::Attributes(a) => Ok(a),
            _ => Err(unexpected()),
        }
    }

    /// Sets custom attributes (any member; 1 to 10 pairs, 110 otherwise). Each key belongs to
    /// whoever set it: a key of another member is changed only with `overwrite`. Returns the keys
    /// that failed and why (703 owned by another or version mismatch, 110 bad key or value, 4
    /// over 100 keys); the others are applied, and the other members get
    /// `on_attributes_updated`.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// use roomcast::{CreateChatRoomOptions, Engine, SetAttributes};
    /// let engine = Engine::builder().build().await?;
    /// engine.add_super_admin("host").await?;
    /// let host = engine.login("host").await?;
    /// let rooms = host.chat_room_manager();
    /// let room = rooms.create_chat_room(CreateChatRoomOptions::new("show")).await?;
    /// let failed = rooms
    ///     .set_chat_room_attributes(&room.room_id, SetAttributes::new([("poll", "best map?")]))
    ///     .await?;
    /// assert!(failed.is_empty());
    /// let attrs = rooms.fetch_chat_room_attributes(&room.room_id, ["poll"]).await?;
    /// assert_eq!(attrs["poll"], "best map?");
    /// # Ok(()) }
    /// ```
    pub async fn set_chat_room_attributes(
        &self,
        room_id: &RoomId,
        set: SetAttributes,
    ) -> Result<AttributeFailures, ChatError> {
        let by = self.client.current_user_id();
        self.client.core()?.set_attributes(by, *room_id, set).await
    }

    /// Removes custom attributes (any member; 1 to 10 keys). Keys of other members are removed
    /// only with `force`. Returns the keys that failed and why; the other members get
    /// `on_attributes_removed` for the rest.
    pub async fn remove_chat_room_attributes<I, S>(
        &self,
        room_id: &RoomId,
        keys: I,
        force: bool,
    ) -> Result<AttributeFailures, ChatError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let by = self.client.current_user_id();
        let keys = keys.into_iter().map(|k| k.as_ref().to_string()).collect();
        self.client
            .core()?
            .remove_attributes(by, *room_id, keys, force)
            .await
    }
}
