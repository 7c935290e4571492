//! Roles and moderation: who may do what to whom, as pure decisions, and the room's moderation
//! commands.
//!
//! [`check_permission`] is the policy: it takes the operation, the actor's role and the target's
//! role and says yes or which error. The room's commands ask it first and act after, so the rules
//! live in one place (and one table in the tests names every case).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::event::{Audience, ChatRoomEvent, LeaveReason, Outgoing};
use crate::room::{Effects, Room, Timer, TimerKind};
use crate::{ChatError, ChatRoomPermissionType as Role, Timestamp, UserId};

/// Most admins a room may have besides its owner (Agora's limit).
pub const MAX_ADMINS: usize = 99;

/// An operation that needs a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Operation {
    /// Destroy the room.
    Destroy,
    /// Transfer ownership.
    ChangeOwner,
    /// Make a member an admin.
    AddAdmin,
    /// Take a member's admin role.
    RemoveAdmin,
    /// Remove (kick) members.
    Kick,
    /// Add to the block list.
    Block,
    /// Remove from the block list.
    Unblock,
    /// Read the block list.
    FetchBlockList,
    /// Mute members.
    Mute,
    /// Unmute members.
    Unmute,
    /// Read the mute list.
    FetchMuteList,
    /// Turn mute-all on or off.
    MuteAll,
    /// Add to or remove from the allow list.
    EditAllowList,
    /// Read the allow list.
    FetchAllowList,
    /// Change name, description or max members.
    ChangeSpecification,
    /// Read the audit log.
    FetchAuditLog,
    /// Turn slow mode on or off.
    SlowMode,
    /// Freeze or unfreeze the room.
    Freeze,
    /// Turn hold for review on or off.
    Hold,
    /// Change the announcement.
    UpdateAnnouncement,
    /// Change the room's own limits.
    ChangeLimits,
    /// Delete (recall) any member's message, at any time.
    DeleteMessage,
    /// Pin or unpin messages.
    PinMessage,
    /// Shadow-ban members (Stream's shadow ban): not the owner or admins.
    ShadowBan,
    /// Lift shadow bans.
    ShadowUnban,
    /// Read the shadow-ban list.
    FetchShadowBanList,
}

/// May `actor` do `op` to `target` (`None` for operations without a target)? The target's role
/// is its role in the room (`Role::None`: not in the room and no role there).
///
/// Errors: 703 when the actor's role does not allow it, including acting on a role at or above
/// its own (admins act on members only; nobody mutes, kicks or blocks the owner).
pub fn check_permission(op: Operation, actor: Role, target: Option<Role>) -> Result<(), ChatError> {
    use Operation::*;
    let deny = |why: &str| Err(ChatError::PermissionDenied(format!("{op:?}: {why}")));
    let staff = matches!(actor, Role::Owner | Role::Admin);
    match op {
        Destroy | ChangeOwner | AddAdmin | RemoveAdmin | ChangeLimits => {
            if actor != Role::Owner {
                return deny("only the owner may");
            }
            if target == Some(Role::Owner) {
                return deny("not on the owner");
            }
            Ok(())
        }
        ShadowBan => {
            if !staff {
                return deny("only the owner and admins may");
            }
            match target {
                Some(Role::Owner | Role::Admin) => {
                    deny("not on the owner or an admin (their messages are never shadowed)")
                }
                _ => Ok(()),
            }
        }
        Kick | Block | Mute | Unmute => {
            if !staff {
                return deny("only the owner and admins may");
            }
            match (actor, target) {
                (_, Some(Role::Owner)) => deny("not on the owner"),
                (Role::Admin, Some(Role::Admin)) => deny("admins act on members only"),
                _ => Ok(()),
            }
        }
        Unblock | FetchBlockList | FetchMuteList | MuteAll | EditAllowList | FetchAllowList
        | ChangeSpecification | UpdateAnnouncement | FetchAuditLog | SlowMode | Freeze | Hold
        | DeleteMessage | PinMessage | ShadowUnban | FetchShadowBanList => {
            if staff {
                Ok(())
            } else {
                deny("only the owner and admins may")
            }
        }
    }
}

/// How long a mute lasts (the SDK's `duration` argument, where -1 meant forever).
///
/// ```
/// # use roomcast_model as roomcast;
/// use roomcast::MuteDuration;
/// use std::time::Duration;
/// let ten_minutes: MuteDuration = Duration::from_secs(600).into();
/// assert_eq!(ten_minutes, MuteDuration::For(Duration::from_secs(600)));
/// assert_ne!(ten_minutes, MuteDuration::Forever);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum MuteDuration {
    /// For this long (a zero duration is refused with 110; one under 1 ms counts as 1 ms, the
    /// engine clock's unit). The mute ends by
    /// itself, with `on_mute_list_removed_from_chat_room`.
    For(std::time::Duration),
    /// Until unmuted.
    Forever,
}

/// One entry of the block list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct BlockedMember {
    /// The blocked user.
    pub user_id: UserId,
    /// When the block ends by itself, in ms since the Unix epoch (engine clock); `None`: never
    /// (until unblocked).
    pub expire_time: Option<crate::Timestamp>,
}

/// One entry of the mute list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct MutedMember {
    /// The muted member.
    pub user_id: UserId,
    /// When the mute ends, in ms since the Unix epoch; `None`: never (until unmuted).
    pub expire_time: Option<crate::Timestamp>,
}

impl From<std::time::Duration> for MuteDuration {
    fn from(d: std::time::Duration) -> Self {
        MuteDuration::For(d)
    }
}

/// A stored message, as a moderation command or a recall needs it: what the engine read from
/// the room's history before asking the room.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct MessageRef {
    /// Its sequence number in the room.
    pub seq: u64,
    /// Its id.
    pub msg_id: crate::MessageId,
    /// Its sender.
    pub from: UserId,
    /// When the room accepted it.
    pub server_time: Timestamp,
    /// True if it was recalled already.
    pub recalled: bool,
    /// True if it is shadowed (its sender was shadow-banned when it was sent).
    pub shadowed: bool,
    /// Until when it is held for review, if it was held.
    pub held_until: Option<Timestamp>,
}

impl MessageRef {
    /// The reference of a stored message.
    pub fn of(message: &crate::MessageData) -> MessageRef {
        MessageRef {
            seq: message.seq,
            msg_id: message.msg_id,
            from: message.from.clone(),
            server_time: message.server_time,
            recalled: message.recalled.is_some(),
            shadowed: message.shadowed,
            held_until: message.held_until,
        }
    }
}

/// A moderation command's action.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Moderation {
    /// Make `0` an admin (owner only; it must be in the room).
    AddAdmin(UserId),
    /// Take `0`'s admin role (owner only).
    RemoveAdmin(UserId),
    /// Make `0` the owner (owner only; it must be in the room). The old owner becomes a member.
    ChangeOwner(UserId),
    /// Remove these members (reason: kicked).
    Kick(Vec<UserId>),
    /// Block these users: members among them are removed (kicked), and none may join again until
    /// unblocked.
    Block(Vec<UserId>),
    /// Unblock these users.
    Unblock(Vec<UserId>),
    /// Block these users for a while (a Twitch timeout): as [`Moderation::Block`], and the
    /// block ends by itself at the end. Blocking a blocked user again replaces its end (a
    /// plain block makes it last until unblocked).
    BlockFor {
        /// Whom.
        targets: Vec<UserId>,
        /// How long (a zero duration is refused with 110; under 1 ms counts as 1 ms).
        duration: std::time::Duration,
    },
    /// Mute these members for a while or until unmuted.
    Mute {
        /// Whom.
        targets: Vec<UserId>,
        /// For how long.
        duration: MuteDuration,
    },
    /// Unmute these members.
    Unmute(Vec<UserId>),
    /// Turn mute-all on (`true`) or off.
    MuteAll(bool),
    /// Add these members to the allow list.
    AllowListAdd(Vec<UserId>),
    /// Remove these users from the allow list.
    AllowListRemove(Vec<UserId>),
    /// Rename the room.
    ChangeName(String),
    /// Change the description.
    ChangeDescription(String),
    /// Change max members (not below the current count).
    ChangeMaxUsers(u32),
    /// Replace the room's own limits (owner only).
    ChangeLimits(crate::RoomLimits),
    /// Change the announcement.
    UpdateAnnouncement(String),
    /// Slow mode: each member who is not exempt (owner, admins, allow list) may send one
    /// message per this long, 1 to 120 s; `None` turns it off.
    SetSlowMode(Option<std::time::Duration>),
    /// Hold for review (Twitch's chat delay): messages from members who are not staff reach
    /// the other members who are not staff only this long after the room accepted them, 1 to
    /// 60 s; `None` turns it off (and releases what is held at once).
    SetHold(Option<std::time::Duration>),
    /// Freeze the room for a while or until unfrozen: only the owner and admins may send.
    Freeze(MuteDuration),
    /// End a freeze.
    Unfreeze,
    /// Remove these members, who may not join again for this long.
    KickWithRejoinBan {
        /// Whom.
        targets: Vec<UserId>,
        /// How long they stay out (at least 1 ms).
        ban: std::time::Duration,
    },
    /// Delete (recall) a message of any member, at any time (owner and admins). A pinned
    /// message is unpinned.
    DeleteMessage(MessageRef),
    /// Pin a message (owner and admins; at most `Limits::max_pinned_messages`).
    PinMessage(MessageRef),
    /// Unpin the message with this sequence number (owner and admins).
    UnpinMessage(u64),
    /// Shadow-ban these users (Stream's shadow ban; owner and admins, not on the owner or an
    /// admin): their messages are accepted but reach only themselves and, marked, the owner and
    /// admins. They need not be in the room.
    ShadowBan(Vec<UserId>),
    /// Lift these users' shadow ban.
    ShadowUnban(Vec<UserId>),
}

/// The shortest and longest holds for review.
pub const HOLD_RANGE: std::ops::RangeInclusive<std::time::Duration> =
    std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(60);

/// The shortest and longest slow-mode cooldowns.
pub const SLOW_MODE_RANGE: std::ops::RangeInclusive<std::time::Duration> =
    std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(120);

fn dedup(users: Vec<UserId>) -> Vec<UserId> {
    let mut seen = BTreeSet::new();
    users
        .into_iter()
        .filter(|u| seen.insert(u.clone()))
        .collect()
}

fn non_empty(users: &[UserId]) -> Result<(), ChatError> {
    if users.is_empty() {
        Err(ChatError::InvalidParam("no members given".into()))
    } else {
        Ok(())
    }
}

impl Room {
    /// `targets`, the owner and the admins, each once, but not `actor`: for events that go to
    /// the people concerned and the staff (never to whoever acted).
    pub(crate) fn staff_and(&self, targets: &[UserId], actor: Option<&UserId>) -> Vec<UserId> {
        let r = self.record();
        let mut all: Vec<UserId> = Vec::with_capacity(targets.len() + r.admins.len() + 1);
        let mut seen: BTreeSet<&UserId> = actor.into_iter().collect();
        for u in targets
            .iter()
            .chain(std::iter::once(&r.owner))
            .chain(&r.admins)
        {
            if seen.insert(u) {
                all.push(u.clone());
            }
        }
        all
    }

    /// Checks `op` by `by` on each target (all must pass: nothing is partially applied).
    fn check_targets(
        &self,
        op: Operation,
        by: &UserId,
        targets: &[UserId],
        must_be_member: bool,
    ) -> Result<(), ChatError> {
        let actor = self.role_of(by);
        check_permission(op, actor, None)?;
        for t in targets {
            if must_be_member && !self.is_member(t) {
                return Err(ChatError::NotJoined(t.to_string()));
            }
            check_permission(op, actor, Some(self.role_of(t)))?;
        }
        Ok(())
    }

    pub(crate) fn moderate(
        &mut self,
        by: UserId,
        action: Moderation,
        now: Timestamp,
    ) -> Result<Effects, ChatError> {
        use Moderation as M;
        let room_id = self.id();
        match action {
            M::AddAdmin(target) => {
                self.check_targets(
                    Operation::AddAdmin,
                    &by,
                    std::slice::from_ref(&target),
                    true,
                )?;
                if self.record().admins.contains(&target) {
                    return Ok(Effects::default());
                }
                if self.record().admins.len() >= MAX_ADMINS {
                    return Err(ChatError::ExceedServiceLimit(format!(
                        "a room has at most {MAX_ADMINS} admins"
                    )));
                }
                self.record_mut().admins.push(target.clone());
                let to = Audience::MembersAmong(
                    self.staff_and(std::slice::from_ref(&target), Some(&by)),
                );
                Ok(self.changed(vec![Outgoing {
                    to,
                    event: ChatRoomEvent::AdminAdded {
                        operator_reason: None,
                        room_id,
                        admin: target,
                        operator: Some(by),
                    },
                }]))
            }
            M::RemoveAdmin(target) => {
                // One answer from the one function: the owner on itself is 703, as
                // `check_permission` says.
                check_permission(
                    Operation::RemoveAdmin,
                    self.role_of(&by),
                    Some(self.role_of(&target)),
                )?;
                if !self.record().admins.contains(&target) {
                    return Err(ChatError::InvalidParam(format!("{target} is not an admin")));
                }
                let to = Audience::MembersAmong(
                    self.staff_and(std::slice::from_ref(&target), Some(&by)),
                );
                self.record_mut().admins.retain(|a| *a != target);
                Ok(self.changed(vec![Outgoing {
                    to,
                    event: ChatRoomEvent::AdminRemoved {
                        operator_reason: None,
                        room_id,
                        admin: target,
                        operator: Some(by),
                    },
                }]))
            }
            M::ChangeOwner(target) => {
                self.check_targets(
                    Operation::ChangeOwner,
                    &by,
                    std::slice::from_ref(&target),
                    true,
                )?;
                let r = self.record_mut();
                let old = std::mem::replace(&mut r.owner, target.clone());
                r.admins.retain(|a| *a != target);
                Ok(self.changed(vec![Outgoing {
                    to: Audience::MembersExcept(vec![by.clone()]),
                    event: ChatRoomEvent::OwnerChanged {
                        operator_reason: None,
                        room_id,
                        new_owner: target,
                        old_owner: old,
                        operator: Some(by),
                    },
                }]))
            }
            M::Kick(targets) => {
                let targets = dedup(targets);
                non_empty(&targets)?;
                self.check_targets(Operation::Kick, &by, &targets, true)?;
                let mut fx = Effects::default();
                for t in targets {
                    fx.merge(self.demote(&t, &by));
                    fx.merge(self.remove_member(t, LeaveReason::Kicked, Some(by.clone())));
                }
                Ok(fx)
            }
            M::KickWithRejoinBan { targets, ban } => {
                let targets = dedup(targets);
                non_empty(&targets)?;
                if ban.is_zero() {
                    return Err(ChatError::InvalidParam(
                        "a rejoin ban cannot last zero time".into(),
                    ));
                }
                self.check_targets(Operation::Kick, &by, &targets, true)?;
                let until = crate::room::end_after(now, ban);
                let mut fx = Effects::default();
                // Bans that ended go now: the map follows the bans in force.
                self.record_mut()
                    .live
                    .rejoin_banned_until
                    .retain(|_, at| *at > now);
                for t in targets {
                    self.record_mut()
                        .live
                        .rejoin_banned_until
                        .insert(t.clone(), until);
                    fx.merge(self.demote(&t, &by));
                    fx.merge(self.remove_member(t, LeaveReason::Kicked, Some(by.clone())));
                }
                fx.record_changed = true;
                Ok(fx)
            }
            M::SetHold(hold) => {
                check_permission(Operation::Hold, self.role_of(&by), None)?;
                if let Some(h) = hold {
                    if !HOLD_RANGE.contains(&h) {
                        return Err(ChatError::InvalidParam(format!(
                            "a hold for review is 1 to 60 s, got {h:?}"
                        )));
                    }
                }
                let ms = hold.map(crate::duration_ms);
                if self.record().live.hold_ms == ms {
                    return Ok(Effects::default());
                }
                self.record_mut().live.hold_ms = ms;
                Ok(self.changed(vec![Outgoing {
                    to: Audience::MembersExcept(vec![by.clone()]),
                    event: ChatRoomEvent::HoldChanged {
                        room_id,
                        hold,
                        operator: Some(by),
                        operator_reason: None,
                    },
                }]))
            }
            M::SetSlowMode(cooldown) => {
                check_permission(Operation::SlowMode, self.role_of(&by), None)?;
                if let Some(c) = cooldown {
                    if !SLOW_MODE_RANGE.contains(&c) {
                        return Err(ChatError::InvalidParam(format!(
                            "a slow-mode cooldown is 1 to 120 s, got {c:?}"
                        )));
                    }
                }
                let ms = cooldown.map(crate::duration_ms);
                if self.record().live.slow_mode_ms == ms {
                    return Ok(Effects::default());
                }
                self.record_mut().live.slow_mode_ms = ms;
                Ok(self.changed(vec![Outgoing {
                    to: Audience::MembersExcept(vec![by.clone()]),
                    event: ChatRoomEvent::SlowModeChanged {
                        room_id,
                        cooldown,
                        operator: Some(by),
                        operator_reason: None,
                    },
                }]))
            }
            M::Freeze(duration) => {
                check_permission(Operation::Freeze, self.role_of(&by), None)?;
                let until = match duration {
                    MuteDuration::For(d) if d.is_zero() => {
                        return Err(ChatError::InvalidParam(
                            "a freeze cannot last zero time (MuteDuration::Forever for no end)"
                                .into(),
                        ))
                    }
                    MuteDuration::For(d) => crate::room::end_after(now, d),
                    MuteDuration::Forever => crate::UNTIL_LIFTED,
                };
                if self.record().live.frozen_until == Some(until) {
                    // Already frozen so: nothing changes, nothing is said or logged.
                    return Ok(Effects::default());
                }
                self.record_mut().live.frozen_until = Some(until);
                let mut fx = self.changed(vec![Outgoing {
                    to: Audience::MembersExcept(vec![by.clone()]),
                    event: ChatRoomEvent::FreezeChanged {
                        room_id,
                        frozen: true,
                        until: (until != crate::UNTIL_LIFTED).then_some(until),
                        operator: Some(by),
                        operator_reason: None,
                    },
                }]);
                if until != crate::UNTIL_LIFTED {
                    fx.timers.push(Timer::FreezeEnd { at: until });
                } else {
                    fx.cancelled
                        .push((crate::room::room_timer_user(), TimerKind::FreezeEnd));
                }
                Ok(fx)
            }
            M::Unfreeze => {
                check_permission(Operation::Freeze, self.role_of(&by), None)?;
                if self.record().live.frozen_until.is_none() {
                    return Ok(Effects::default());
                }
                self.record_mut().live.frozen_until = None;
                let mut fx = self.changed(vec![Outgoing {
                    to: Audience::MembersExcept(vec![by.clone()]),
                    event: ChatRoomEvent::FreezeChanged {
                        room_id,
                        frozen: false,
                        until: None,
                        operator: Some(by),
                        operator_reason: None,
                    },
                }]);
                fx.cancelled
                    .push((crate::room::room_timer_user(), TimerKind::FreezeEnd));
                Ok(fx)
            }
            M::Block(targets) => {
                let targets = dedup(targets);
                non_empty(&targets)?;
                self.check_targets(Operation::Block, &by, &targets, false)?;
                if targets.contains(&by) {
                    return Err(ChatError::PermissionDenied("cannot block oneself".into()));
                }
                let mut fx = Effects::default();
                for t in targets {
                    // Blocked until unblocked: a timed block's end goes, and its timer.
                    if self.record_mut().live.block_until.remove(&t).is_some() {
                        fx.cancelled.push((t.clone(), TimerKind::BlockEnd));
                    }
                    fx.merge(self.block(t, &by));
                }
                fx.record_changed = true;
                Ok(fx)
            }
            M::BlockFor { targets, duration } => {
                let targets = dedup(targets);
                non_empty(&targets)?;
                if duration.is_zero() {
                    return Err(ChatError::InvalidParam(
                        "a timed block cannot last zero time (block_chat_room_members for no end)"
                            .into(),
                    ));
                }
                self.check_targets(Operation::Block, &by, &targets, false)?;
                if targets.contains(&by) {
                    return Err(ChatError::PermissionDenied("cannot block oneself".into()));
                }
                let until = crate::room::end_after(now, duration);
                let mut fx = Effects::default();
                for t in targets {
                    self.record_mut().live.block_until.insert(t.clone(), until);
                    fx.timers.push(Timer::BlockEnd {
                        user: t.clone(),
                        at: until,
                    });
                    fx.merge(self.block(t, &by));
                }
                fx.record_changed = true;
                Ok(fx)
            }
            M::Unblock(targets) => {
                let targets = dedup(targets);
                non_empty(&targets)?;
                check_permission(Operation::Unblock, self.role_of(&by), None)?;
                let mut fx = Effects::default();
                let mut unblocked = Vec::new();
                for t in targets {
                    if self.record_mut().block_list.remove(&t) {
                        unblocked.push(t.clone());
                    }
                    if self.record_mut().live.block_until.remove(&t).is_some() {
                        fx.cancelled.push((t, TimerKind::BlockEnd));
                    }
                }
                // Nobody was blocked: nothing changed, nothing is logged.
                fx.record_changed = !unblocked.is_empty() || !fx.cancelled.is_empty();
                fx.audit_targets = Some(unblocked);
                Ok(fx)
            }
            M::Mute { targets, duration } => {
                let targets = dedup(targets);
                non_empty(&targets)?;
                if duration == MuteDuration::For(std::time::Duration::ZERO) {
                    return Err(ChatError::InvalidParam(
                        "a mute cannot last zero time (MuteDuration::Forever for no end)".into(),
                    ));
                }
                self.check_targets(Operation::Mute, &by, &targets, true)?;
                // The record keeps Agora's -1 for "no end"; the API never shows it.
                let expire = match duration {
                    MuteDuration::Forever => -1,
                    MuteDuration::For(d) => crate::room::end_after(now, d),
                };
                for t in &targets {
                    self.record_mut().mute_list.insert(t.clone(), expire);
                }
                let to = Audience::MembersAmong(self.staff_and(&targets, Some(&by)));
                let mut fx = self.changed(vec![Outgoing {
                    to,
                    event: ChatRoomEvent::MuteListAdded {
                        operator_reason: None,
                        room_id,
                        members: targets.clone(),
                        expire_time: (expire >= 0).then_some(expire),
                        operator: Some(by),
                    },
                }]);
                if expire >= 0 {
                    fx.timers = targets
                        .into_iter()
                        .map(|user| Timer::MuteExpiry { user, at: expire })
                        .collect();
                } else {
                    // Muted for good: an expiry pending from an earlier mute is moot.
                    fx.cancelled = targets
                        .into_iter()
                        .map(|user| (user, TimerKind::MuteExpiry))
                        .collect();
                }
                Ok(fx)
            }
            M::Unmute(targets) => {
                let targets = dedup(targets);
                non_empty(&targets)?;
                let actor = self.role_of(&by);
                check_permission(Operation::Unmute, actor, None)?;
                for t in &targets {
                    check_permission(Operation::Unmute, actor, Some(self.role_of(t)))?;
                }
                let unmuted: Vec<UserId> = targets
                    .into_iter()
                    .filter(|t| self.record_mut().mute_list.remove(t).is_some())
                    .collect();
                if unmuted.is_empty() {
                    return Ok(Effects::default());
                }
                let to = Audience::MembersAmong(self.staff_and(&unmuted, Some(&by)));
                let cancelled = unmuted
                    .iter()
                    .map(|user| (user.clone(), TimerKind::MuteExpiry))
                    .collect();
                let mut fx = self.changed(vec![Outgoing {
                    to,
                    event: ChatRoomEvent::MuteListRemoved {
                        operator_reason: None,
                        room_id,
                        members: unmuted,
                        operator: Some(by),
                    },
                }]);
                fx.cancelled = cancelled;
                Ok(fx)
            }
            M::MuteAll(on) => {
                check_permission(Operation::MuteAll, self.role_of(&by), None)?;
                if self.record().all_muted == on {
                    return Ok(Effects::default());
                }
                self.record_mut().all_muted = on;
                Ok(self.changed(vec![Outgoing {
                    to: Audience::MembersExcept(vec![by.clone()]),
                    event: ChatRoomEvent::AllMemberMuteStateChanged {
                        operator_reason: None,
                        room_id,
                        is_all_muted: on,
                        operator: Some(by),
                    },
                }]))
            }
            M::AllowListAdd(targets) => {
                let targets = dedup(targets);
                non_empty(&targets)?;
                self.check_targets(Operation::EditAllowList, &by, &targets, true)?;
                for t in &targets {
                    self.record_mut().allow_list.insert(t.clone());
                }
                let to = Audience::MembersAmong(self.staff_and(&targets, Some(&by)));
                Ok(self.changed(vec![Outgoing {
                    to,
                    event: ChatRoomEvent::AllowListAdded {
                        operator_reason: None,
                        room_id,
                        members: targets,
                        operator: Some(by),
                    },
                }]))
            }
            M::AllowListRemove(targets) => {
                let targets = dedup(targets);
                non_empty(&targets)?;
                check_permission(Operation::EditAllowList, self.role_of(&by), None)?;
                let removed: Vec<UserId> = targets
                    .into_iter()
                    .filter(|t| self.record_mut().allow_list.remove(t))
                    .collect();
                if removed.is_empty() {
                    return Ok(Effects::default());
                }
                let to = Audience::MembersAmong(self.staff_and(&removed, Some(&by)));
                Ok(self.changed(vec![Outgoing {
                    to,
                    event: ChatRoomEvent::AllowListRemoved {
                        operator_reason: None,
                        room_id,
                        members: removed,
                        operator: Some(by),
                    },
                }]))
            }
            M::ChangeName(name) => self.change_spec(&by, |spec| spec.name = name),
            M::ChangeDescription(description) => {
                self.change_spec(&by, |spec| spec.description = description)
            }
            M::ChangeLimits(change) => {
                check_permission(Operation::ChangeLimits, self.role_of(&by), None)?;
                self.set_room_limits(&change, now)?;
                let room = Box::new(self.snapshot(None));
                Ok(self.changed(vec![Outgoing {
                    to: Audience::MembersExcept(vec![by.clone()]),
                    event: ChatRoomEvent::SpecificationChanged {
                        operator_reason: None,
                        room,
                        operator: Some(by),
                    },
                }]))
            }
            M::ChangeMaxUsers(max) => {
                // The role first: a member gets 703 whatever the value (the first rule broken).
                check_permission(Operation::ChangeSpecification, self.role_of(&by), None)?;
                if (max as usize) < self.member_count() {
                    return Err(ChatError::InvalidParam(format!(
                        "max members {max} is below the {} members in the room",
                        self.member_count()
                    )));
                }
                self.change_spec(&by, |spec| spec.max_users = max)
            }
            M::UpdateAnnouncement(text) => {
                check_permission(Operation::UpdateAnnouncement, self.role_of(&by), None)?;
                let max = self.limits().announcement_max_chars;
                let chars = text.chars().count();
                if chars > max {
                    return Err(ChatError::InvalidParam(format!(
                        "announcement is {chars} characters, over the limit of {max}"
                    )));
                }
                self.record_mut().announcement = text.clone();
                Ok(self.changed(vec![Outgoing {
                    to: Audience::MembersExcept(vec![by.clone()]),
                    event: ChatRoomEvent::AnnouncementChanged {
                        operator_reason: None,
                        room_id,
                        announcement: text,
                        operator: Some(by),
                    },
                }]))
            }
            M::DeleteMessage(message) => self.delete_message(&by, message, now),
            M::PinMessage(message) => self.pin_message(&by, message, now),
            M::UnpinMessage(seq) => self.unpin_message(&by, seq),
            M::ShadowBan(targets) => {
                let targets = dedup(targets);
                non_empty(&targets)?;
                self.check_targets(Operation::ShadowBan, &by, &targets, false)?;
                let added: Vec<UserId> = targets
                    .into_iter()
                    .filter(|t| self.record_mut().live.shadow_banned.insert(t.clone()))
                    .collect();
                let mut fx = self.shadow_ban_changed(by, added.clone(), true);
                fx.audit_targets = Some(added);
                Ok(fx)
            }
            M::ShadowUnban(targets) => {
                let targets = dedup(targets);
                non_empty(&targets)?;
                check_permission(Operation::ShadowUnban, self.role_of(&by), None)?;
                let removed: Vec<UserId> = targets
                    .into_iter()
                    .filter(|t| self.record_mut().live.shadow_banned.remove(t))
                    .collect();
                let mut fx = self.shadow_ban_changed(by, removed.clone(), false);
                fx.audit_targets = Some(removed);
                Ok(fx)
            }
        }
    }

    /// The effects of a shadow-ban change of `members` (none if empty): the owner and admins
    /// but `by` are told; the members themselves never are.
    fn shadow_ban_changed(&self, by: UserId, members: Vec<UserId>, banned: bool) -> Effects {
        if members.is_empty() {
            return Effects::default();
        }
        let to = Audience::MembersAmong(self.staff_and(&[], Some(&by)));
        self.changed(vec![Outgoing {
            to,
            event: ChatRoomEvent::ShadowBanChanged {
                room_id: self.id(),
                members,
                banned,
                operator: Some(by),
                operator_reason: None,
            },
        }])
    }

    fn change_spec(
        &mut self,
        by: &UserId,
        change: impl FnOnce(&mut crate::RoomSpec),
    ) -> Result<Effects, ChatError> {
        check_permission(Operation::ChangeSpecification, self.role_of(by), None)?;
        let mut spec = self.record().spec.clone();
        change(&mut spec);
        spec.validate(self.limits())?;
        self.record_mut().spec = spec;
        let room = Box::new(self.snapshot(None));
        Ok(self.changed(vec![Outgoing {
            to: Audience::MembersExcept(vec![by.clone()]),
            event: ChatRoomEvent::SpecificationChanged {
                operator_reason: None,
                room,
                operator: Some(by.clone()),
            },
        }]))
    }

    /// A kicked or blocked admin stops being an admin first, with the admin-removed event: a role
    /// does not outlive the removal (rejoining after a kick, or after being unblocked, is as a
    /// member).
    fn demote(&mut self, target: &UserId, by: &UserId) -> Effects {
        if !self.record().admins.contains(target) {
            return Effects::default();
        }
        let room_id = self.id();
        let to = Audience::MembersAmong(self.staff_and(std::slice::from_ref(target), Some(by)));
        self.record_mut().admins.retain(|a| a != target);
        self.changed(vec![Outgoing {
            to,
            event: ChatRoomEvent::AdminRemoved {
                operator_reason: None,
                room_id,
                admin: target.clone(),
                operator: Some(by.clone()),
            },
        }])
    }

    /// Puts `target` on the block list, demoting it and removing it if it is a member.
    fn block(&mut self, target: UserId, by: &UserId) -> Effects {
        let mut fx = self.demote(&target, by);
        self.record_mut().block_list.insert(target.clone());
        if self.is_member(&target) {
            fx.merge(self.remove_member(target, LeaveReason::Kicked, Some(by.clone())));
        }
        fx
    }

    /// `user`'s timed block may have ended: take it off the block list if so (no event: Agora
    /// has none for the block list), logged as the engine's `BlockExpired` at its end.
    pub(crate) fn expire_block(&mut self, user: UserId, now: Timestamp) -> Effects {
        let ended = match self.record().live.block_until.get(&user) {
            Some(&until) if until <= now => until,
            _ => return Effects::default(),
        };
        self.record_mut().live.block_until.remove(&user);
        self.record_mut().block_list.remove(&user);
        let mut fx = self.changed(Vec::new());
        self.audit(
            &mut fx,
            ended,
            None,
            crate::AuditAction::BlockExpired,
            vec![user],
            None,
        );
        fx
    }

    /// The room's freeze may have ended: lift it if so, with an event to every member.
    pub(crate) fn expire_freeze(&mut self, now: Timestamp) -> Effects {
        let ended = match self.record().live.frozen_until {
            Some(until) if until != crate::UNTIL_LIFTED && until <= now => until,
            _ => return Effects::default(),
        };
        self.record_mut().live.frozen_until = None;
        let room_id = self.id();
        let mut fx = self.changed(vec![Outgoing {
            to: Audience::Members,
            event: ChatRoomEvent::FreezeChanged {
                room_id,
                frozen: false,
                until: None,
                operator: None,
                operator_reason: None,
            },
        }]);
        self.audit(
            &mut fx,
            ended,
            None,
            crate::AuditAction::FreezeEnded,
            Vec::new(),
            None,
        );
        fx
    }

    /// A mute may have expired: lift it if so.
    pub(crate) fn expire_mute(&mut self, user: UserId, now: Timestamp) -> Effects {
        let ended = match self.record().mute_list.get(&user) {
            Some(&until) if until >= 0 && until <= now => until,
            _ => return Effects::default(),
        };
        self.record_mut().mute_list.remove(&user);
        let to = Audience::MembersAmong(self.staff_and(std::slice::from_ref(&user), None));
        let room_id = self.id();
        let mut fx = self.changed(vec![Outgoing {
            to,
            event: ChatRoomEvent::MuteListRemoved {
                operator_reason: None,
                room_id,
                members: vec![user.clone()],
                operator: None,
            },
        }]);
        // Logged at the time it ended, though noticed a little later.
        self.audit(
            &mut fx,
            ended,
            None,
            crate::AuditAction::MuteExpired,
            vec![user],
            None,
        );
        fx
    }
}

#[cfg(test)]
mod tests {
    //! The permission table: every operation, by every role, on every kind of target, through
    //! the room's real commands. A change to the rules is a change to this table.

    use super::*;
    use crate::test_support::{room_of, uid};
    use crate::{Command, Limits};

    /// A room owned by `o`, with admins `a` and `a2`, members `m` and `m2`; `x` is not in it.
    fn room() -> Room {
        let mut r = room_of("o", &["a", "a2", "m", "m2"], 100, &Limits::default());
        for a in ["a", "a2"] {
            r.apply(Command::Moderate {
                reason: None,
                by: uid("o"),
                action: Moderation::AddAdmin(uid(a)),
                now: 0,
            })
            .unwrap();
        }
        r
    }

    #[derive(Clone, Copy, Debug)]
    enum Actor {
        Owner,
        Admin,
        Member,
        Stranger,
    }

    impl Actor {
        fn id(self) -> UserId {
            uid(match self {
                Actor::Owner => "o",
                Actor::Admin => "a",
                Actor::Member => "m",
                Actor::Stranger => "x",
            })
        }
    }

    /// Targets, in table column order: the owner, another admin, another member, a stranger.
    fn target(actor: Actor, column: usize) -> UserId {
        uid(match (column, actor) {
            (0, _) => "o",
            (1, Actor::Admin) => "a2",
            (1, _) => "a",
            (2, Actor::Member) => "m2",
            (2, _) => "m",
            _ => "x",
        })
    }

    const OK: u32 = 0;
    use Actor::*;

    type Make = fn(UserId) -> Moderation;

    /// (operation, actor, [on owner, on another admin, on another member, on a stranger]).
    #[rustfmt::skip]
    fn targeted() -> Vec<(&'static str, Make, Actor, [u32; 4])> {
        let add_admin: Make = Moderation::AddAdmin;
        let remove_admin: Make = Moderation::RemoveAdmin;
        let change_owner: Make = Moderation::ChangeOwner;
        let kick: Make = |u| Moderation::Kick(vec![u]);
        let block: Make = |u| Moderation::Block(vec![u]);
        let unblock: Make = |u| Moderation::Unblock(vec![u]);
        let mute: Make = |u| Moderation::Mute { targets: vec![u], duration: MuteDuration::For(std::time::Duration::from_secs(1)) };
        let unmute: Make = |u| Moderation::Unmute(vec![u]);
        let allow: Make = |u| Moderation::AllowListAdd(vec![u]);
        let disallow: Make = |u| Moderation::AllowListRemove(vec![u]);
        let kick_ban: Make = |u| Moderation::KickWithRejoinBan { targets: vec![u], ban: std::time::Duration::from_secs(60) };
        let block_for: Make = |u| Moderation::BlockFor { targets: vec![u], duration: std::time::Duration::from_secs(600) };
        let shadow_ban: Make = |u| Moderation::ShadowBan(vec![u]);
        let shadow_unban: Make = |u| Moderation::ShadowUnban(vec![u]);
        vec![
            ("block for a while", block_for, Owner, [703, OK, OK, OK]),
            ("block for a while", block_for, Admin, [703, 703, OK, OK]),
            ("block for a while", block_for, Member, [703, 703, 703, 703]),
            ("block for a while", block_for, Stranger, [703, 703, 703, 703]),
            ("shadow ban", shadow_ban, Owner, [703, 703, OK, OK]),
            ("shadow ban", shadow_ban, Admin, [703, 703, OK, OK]),
            ("shadow ban", shadow_ban, Member, [703, 703, 703, 703]),
            ("shadow ban", shadow_ban, Stranger, [703, 703, 703, 703]),
            ("shadow unban", shadow_unban, Owner, [OK, OK, OK, OK]),
            ("shadow unban", shadow_unban, Admin, [OK, OK, OK, OK]),
            ("shadow unban", shadow_unban, Member, [703, 703, 703, 703]),
            ("shadow unban", shadow_unban, Stranger, [703, 703, 703, 703]),
            ("kick with rejoin ban", kick_ban, Owner, [703, OK, OK, 702]),
            ("kick with rejoin ban", kick_ban, Admin, [703, 703, OK, 702]),
            ("kick with rejoin ban", kick_ban, Member, [703, 703, 703, 703]),
            ("kick with rejoin ban", kick_ban, Stranger, [703, 703, 703, 703]),
            ("add admin", add_admin, Owner, [703, OK, OK, 702]),
            ("add admin", add_admin, Admin, [703, 703, 703, 703]),
            ("add admin", add_admin, Member, [703, 703, 703, 703]),
            ("add admin", add_admin, Stranger, [703, 703, 703, 703]),
            ("remove admin", remove_admin, Owner, [703, OK, 110, 110]),
            ("remove admin", remove_admin, Admin, [703, 703, 703, 703]),
            ("remove admin", remove_admin, Member, [703, 703, 703, 703]),
            ("change owner", change_owner, Owner, [703, OK, OK, 702]),
            ("change owner", change_owner, Admin, [703, 703, 703, 703]),
            ("change owner", change_owner, Member, [703, 703, 703, 703]),
            ("kick", kick, Owner, [703, OK, OK, 702]),
            ("kick", kick, Admin, [703, 703, OK, 702]),
            ("kick", kick, Member, [703, 703, 703, 703]),
            ("kick", kick, Stranger, [703, 703, 703, 703]),
            ("block", block, Owner, [703, OK, OK, OK]),
            ("block", block, Admin, [703, 703, OK, OK]),
            ("block", block, Member, [703, 703, 703, 703]),
            ("unblock", unblock, Owner, [OK, OK, OK, OK]),
            ("unblock", unblock, Admin, [OK, OK, OK, OK]),
            ("unblock", unblock, Member, [703, 703, 703, 703]),
            ("mute", mute, Owner, [703, OK, OK, 702]),
            ("mute", mute, Admin, [703, 703, OK, 702]),
            ("mute", mute, Member, [703, 703, 703, 703]),
            ("mute", mute, Stranger, [703, 703, 703, 703]),
            ("unmute", unmute, Owner, [703, OK, OK, OK]),
            ("unmute", unmute, Admin, [703, 703, OK, OK]),
            ("unmute", unmute, Member, [703, 703, 703, 703]),
            ("allow", allow, Owner, [OK, OK, OK, 702]),
            ("allow", allow, Admin, [OK, OK, OK, 702]),
            ("allow", allow, Member, [703, 703, 703, 703]),
            ("disallow", disallow, Owner, [OK, OK, OK, OK]),
            ("disallow", disallow, Admin, [OK, OK, OK, OK]),
            ("disallow", disallow, Member, [703, 703, 703, 703]),
        ]
    }

    /// (operation, [by owner, by admin, by member, by stranger]).
    #[rustfmt::skip]
    fn untargeted() -> Vec<(&'static str, Moderation, [u32; 4])> {
        vec![
            ("mute all", Moderation::MuteAll(true), [OK, OK, 703, 703]),
            ("slow mode", Moderation::SetSlowMode(Some(std::time::Duration::from_secs(5))), [OK, OK, 703, 703]),
            ("slow mode off", Moderation::SetSlowMode(None), [OK, OK, 703, 703]),
            ("hold", Moderation::SetHold(Some(std::time::Duration::from_secs(5))), [OK, OK, 703, 703]),
            ("hold off", Moderation::SetHold(None), [OK, OK, 703, 703]),
            ("freeze", Moderation::Freeze(MuteDuration::For(std::time::Duration::from_secs(5))), [OK, OK, 703, 703]),
            ("freeze forever", Moderation::Freeze(MuteDuration::Forever), [OK, OK, 703, 703]),
            ("unfreeze", Moderation::Unfreeze, [OK, OK, 703, 703]),
            ("unmute all", Moderation::MuteAll(false), [OK, OK, 703, 703]),
            ("name", Moderation::ChangeName("n".into()), [OK, OK, 703, 703]),
            ("description", Moderation::ChangeDescription("d".into()), [OK, OK, 703, 703]),
            ("max members", Moderation::ChangeMaxUsers(50), [OK, OK, 703, 703]),
            ("announcement", Moderation::UpdateAnnouncement("hi".into()), [OK, OK, 703, 703]),
            ("room limits", Moderation::ChangeLimits(crate::RoomLimits::default().with_join_replay_count(3)), [OK, 703, 703, 703]),
            ("delete message", Moderation::DeleteMessage(message_of("m2")), [OK, OK, 703, 703]),
            ("pin message", Moderation::PinMessage(message_of("m2")), [OK, OK, 703, 703]),
            ("unpin message", Moderation::UnpinMessage(1), [OK, OK, 703, 703]),
        ]
    }

    /// Message 1 of the room, sent by `from` at time 0.
    fn message_of(from: &str) -> MessageRef {
        MessageRef {
            seq: 1,
            msg_id: crate::MessageId::from_u64(1),
            from: uid(from),
            server_time: 0,
            recalled: false,
            shadowed: false,
            held_until: None,
        }
    }

    fn code(r: Result<Effects, ChatError>) -> u32 {
        r.map_or_else(|e| e.code(), |_| OK)
    }

    #[test]
    fn the_permission_table() {
        for (name, make, actor, expected) in targeted() {
            for (column, want) in expected.into_iter().enumerate() {
                let mut r = room();
                let target = target(actor, column);
                let got = code(r.apply(Command::Moderate {
                    reason: None,
                    by: actor.id(),
                    action: make(target.clone()),
                    now: 0,
                }));
                assert_eq!(got, want, "{name} by {actor:?} on {target}");
            }
        }
        for (name, action, expected) in untargeted() {
            for (actor, want) in [Owner, Admin, Member, Stranger].into_iter().zip(expected) {
                let mut r = room();
                let got = code(r.apply(Command::Moderate {
                    reason: None,
                    by: actor.id(),
                    action: action.clone(),
                    now: 0,
                }));
                assert_eq!(got, want, "{name} by {actor:?}");
            }
        }
        type Read = fn(&Room, &UserId) -> Result<(), ChatError>;
        let reads: [(&str, Read, [u32; 4]); 6] = [
            (
                "shadow-ban list",
                |r, u| r.shadow_ban_list(u, 1, 10).map(drop),
                [OK, OK, 703, 703],
            ),
            (
                "mute list",
                |r, u| r.mute_list(u, 0, 1, 10).map(drop),
                [OK, OK, 703, 703],
            ),
            (
                "allow list",
                |r, u| r.allow_list(u, 1, 10).map(drop),
                [OK, OK, 703, 703],
            ),
            (
                "block list",
                |r, u| r.block_list(u, 0, 1, 10).map(drop),
                [OK, OK, 703, 703],
            ),
            (
                "announcement",
                |r, u| r.announcement(u).map(drop),
                [OK, OK, OK, 702],
            ),
            (
                "members",
                |r, u| r.members_page(u, None, 10).map(drop),
                [OK, OK, OK, 702],
            ),
        ];
        for (name, read, expected) in reads {
            for (actor, want) in [Owner, Admin, Member, Stranger].into_iter().zip(expected) {
                let got = read(&room(), &actor.id()).map_or_else(|e| e.code(), |_| OK);
                assert_eq!(got, want, "{name} by {actor:?}");
            }
        }
        for (actor, want) in [Owner, Admin, Member, Stranger]
            .into_iter()
            .zip([OK, 703, 703, 703])
        {
            let got = code(room().apply(Command::Destroy { user: actor.id() }));
            assert_eq!(got, want, "destroy by {actor:?}");
        }
    }

    #[test]
    fn hold_for_review_marks_messages_of_non_staff_and_hides_them_until_released() {
        use std::time::Duration;
        let mut r = room();
        let by = |u: &str, action| Command::Moderate {
            reason: Some("raid".into()),
            by: uid(u),
            action,
            now: 1_000,
        };
        for bad in [
            Duration::ZERO,
            Duration::from_millis(999),
            Duration::from_secs(61),
        ] {
            assert_eq!(code(r.apply(by("o", Moderation::SetHold(Some(bad))))), 110);
        }
        assert_eq!(
            code(r.apply(by("m", Moderation::SetHold(Some(Duration::from_secs(5)))))),
            703
        );
        let fx = r
            .apply(by("a", Moderation::SetHold(Some(Duration::from_secs(5)))))
            .unwrap();
        assert!(fx.record_changed);
        assert!(matches!(&fx.events[0].to, Audience::MembersExcept(u) if *u == vec![uid("a")]));
        assert!(matches!(
            &fx.events[0].event,
            ChatRoomEvent::HoldChanged { hold: Some(h), operator: Some(o), .. }
                if *h == Duration::from_secs(5) && *o == uid("a")
        ));
        assert_eq!(fx.events[0].event.operator_reason(), Some("raid"));
        assert_eq!(
            fx.audit[0].action,
            crate::AuditAction::Hold {
                hold_ms: Some(5_000)
            }
        );
        assert_eq!(r.snapshot(None).hold, Some(Duration::from_secs(5)));
        // The same hold again changes nothing.
        let again = r
            .apply(by("o", Moderation::SetHold(Some(Duration::from_secs(5)))))
            .unwrap();
        assert_eq!(again, Effects::default());
        let send = |r: &mut Room, from: &str, now| {
            r.apply(Command::SendMessage {
                from: uid(from),
                message: crate::OutgoingMessage::text(r.id(), "hi"),
                msg_id: crate::MessageId::from_u64(r.last_seq() + 1),
                now,
            })
            .unwrap()
            .message
            .unwrap()
        };
        let m = send(&mut r, "m", 2_000);
        assert_eq!(m.held_until(), Some(7_000));
        assert!(m.is_held_at(6_999) && !m.is_held_at(7_000));
        // Hidden from other members until then; the staff see it marked; its sender at once.
        assert!(m.seen_by(&uid("m2"), false, 6_999).is_none());
        assert!(!m.seen_by(&uid("m2"), false, 7_000).unwrap().is_held());
        assert!(m.seen_by(&uid("a"), true, 2_000).unwrap().is_held());
        assert!(m.seen_by(&uid("m"), false, 2_000).is_some());
        // Staff messages are never held.
        assert!(!send(&mut r, "o", 2_000).is_held());
        assert!(!send(&mut r, "a", 2_000).is_held());
        // A deletion during the hold is told to its sender and the staff only; after it, to all.
        let held = MessageRef::of(m.data());
        let fx = r
            .apply(Command::Moderate {
                reason: None,
                by: uid("o"),
                action: Moderation::DeleteMessage(held),
                now: 3_000,
            })
            .unwrap();
        assert!(matches!(&fx.events[0].to, Audience::MembersAmong(to)
            if to.contains(&uid("m")) && to.contains(&uid("a")) && !to.contains(&uid("m2"))));
        let later = send(&mut r, "m2", 3_000);
        let fx = r
            .apply(Command::Moderate {
                reason: None,
                by: uid("o"),
                action: Moderation::DeleteMessage(MessageRef::of(later.data())),
                now: 8_000,
            })
            .unwrap();
        assert!(matches!(&fx.events[0].to, Audience::MembersExcept(_)));
        // Off: later messages are not held.
        r.apply(by("o", Moderation::SetHold(None))).unwrap();
        assert_eq!(r.snapshot(None).hold, None);
        assert!(!send(&mut r, "m", 9_000).is_held());
    }

    #[test]
    fn shadow_banned_messages_are_marked_and_only_staff_hear_of_the_ban() {
        let mut r = room();
        let by = |u: &str, action| Command::Moderate {
            reason: Some("spam".into()),
            by: uid(u),
            action,
            now: 0,
        };
        let fx = r
            .apply(by(
                "a",
                Moderation::ShadowBan(vec![uid("m"), uid("x"), uid("m")]),
            ))
            .unwrap();
        assert!(fx.record_changed);
        let [Outgoing {
            to: Audience::MembersAmong(to),
            event,
        }] = fx.events.as_slice()
        else {
            panic!("one event: {:?}", fx.events);
        };
        assert_eq!(to, &vec![uid("o"), uid("a2")], "the staff but the operator");
        assert!(
            matches!(event, ChatRoomEvent::ShadowBanChanged { members, banned: true, .. }
            if *members == vec![uid("m"), uid("x")])
        );
        assert_eq!(event.operator_reason(), Some("spam"));
        assert_eq!(fx.audit[0].action, crate::AuditAction::ShadowBan);
        // Again: nothing changes, nothing is told or logged.
        let again = r
            .apply(by("o", Moderation::ShadowBan(vec![uid("m")])))
            .unwrap();
        assert_eq!(again, Effects::default());
        let send = |r: &mut Room, from: &str| {
            r.apply(Command::SendMessage {
                from: uid(from),
                message: crate::OutgoingMessage::text(r.id(), "hi"),
                msg_id: crate::MessageId::from_u64(r.last_seq() + 1),
                now: 0,
            })
            .unwrap()
            .message
            .unwrap()
        };
        let m = send(&mut r, "m");
        assert!(m.is_shadowed());
        assert!(m.seen_by(&uid("m2"), false, 0).is_none());
        assert!(!m.seen_by(&uid("m"), false, 0).unwrap().is_shadowed());
        assert!(m.seen_by(&uid("a"), true, 0).unwrap().is_shadowed());
        assert!(!send(&mut r, "m2").is_shadowed());
        // A shadowed message cannot be pinned; its deletion is told to its sender and the staff.
        let shadowed = MessageRef::of(m.data());
        assert_eq!(
            code(r.apply(by("o", Moderation::PinMessage(shadowed.clone())))),
            500
        );
        let fx = r
            .apply(by("o", Moderation::DeleteMessage(shadowed)))
            .unwrap();
        assert!(matches!(&fx.events[0].to, Audience::MembersAmong(to)
            if to.contains(&uid("m")) && to.contains(&uid("a")) && !to.contains(&uid("m2"))));
        assert_eq!(
            r.shadow_ban_list(&uid("o"), 1, 10).unwrap().data,
            vec![uid("m"), uid("x")]
        );
        let fx = r
            .apply(by("o", Moderation::ShadowUnban(vec![uid("m"), uid("m2")])))
            .unwrap();
        assert!(
            matches!(&fx.events[0].event, ChatRoomEvent::ShadowBanChanged { members, banned: false, .. }
            if *members == vec![uid("m")])
        );
        assert!(!send(&mut r, "m").is_shadowed());
        // Lifting a ban nobody has changes nothing.
        let none = r
            .apply(by("o", Moderation::ShadowUnban(vec![uid("m")])))
            .unwrap();
        assert_eq!(none, Effects::default());
    }

    #[test]
    fn ownership_transfer_moves_every_right() {
        let mut r = room();
        let by = |u: &str, action| Command::Moderate {
            reason: None,
            by: uid(u),
            action,
            now: 0,
        };
        r.apply(by("o", Moderation::ChangeOwner(uid("a")))).unwrap();
        assert_eq!(r.owner(), &uid("a"));
        assert!(
            !r.record().admins.contains(&uid("a")),
            "the new owner is no longer an admin"
        );
        assert_eq!(r.role_of(&uid("o")), Role::Member);
        assert_eq!(
            code(r.apply(by("o", Moderation::Kick(vec![uid("m")])))),
            703
        );
        assert_eq!(code(r.apply(Command::Destroy { user: uid("o") })), 703);
        assert_eq!(code(r.apply(by("a", Moderation::Kick(vec![uid("o")])))), OK);
    }

    #[test]
    fn blocking_removes_and_bars_until_unblocked() {
        let mut r = room();
        let by = |action| Command::Moderate {
            reason: None,
            by: uid("a"),
            action,
            now: 0,
        };
        let fx = r
            .apply(by(Moderation::Block(vec![uid("m"), uid("x")])))
            .unwrap();
        assert_eq!(
            fx.left,
            vec![uid("m")],
            "members among the blocked are removed"
        );
        assert_eq!(
            code(r.apply(Command::Join {
                user: uid("m"),
                now: 0
            })),
            707
        );
        assert_eq!(
            code(r.apply(Command::Join {
                user: uid("x"),
                now: 0
            })),
            707
        );
        r.apply(by(Moderation::Unblock(vec![uid("m")]))).unwrap();
        assert_eq!(
            code(r.apply(Command::Join {
                user: uid("m"),
                now: 0
            })),
            OK
        );
        assert_eq!(
            code(r.apply(Command::Join {
                user: uid("x"),
                now: 0
            })),
            707
        );
    }

    #[test]
    fn timed_blocks_end_by_themselves() {
        let mut r = room();
        let by = |action, now| Command::Moderate {
            reason: Some("spam".into()),
            by: uid("a"),
            action,
            now,
        };
        let ten_s = std::time::Duration::from_secs(10);
        let block_for = |targets: &[&str], duration| Moderation::BlockFor {
            targets: targets.iter().map(|u| uid(u)).collect(),
            duration,
        };
        // A member and a stranger: the member is removed, both are listed with the end.
        let fx = r.apply(by(block_for(&["m", "x"], ten_s), 1_000)).unwrap();
        assert_eq!(fx.left, vec![uid("m")]);
        assert_eq!(
            fx.timers,
            vec![
                Timer::BlockEnd {
                    user: uid("m"),
                    at: 11_000
                },
                Timer::BlockEnd {
                    user: uid("x"),
                    at: 11_000
                }
            ]
        );
        assert_eq!(
            fx.audit[0].action,
            crate::AuditAction::BlockFor { until: 11_000 }
        );
        assert_eq!(fx.audit[0].reason.as_deref(), Some("spam"));
        let listed = |r: &Room, now| -> Vec<(String, Option<Timestamp>)> {
            let page = r.block_list(&uid("o"), now, 1, 10).unwrap();
            assert_eq!(page.total, page.data.len());
            page.data
                .into_iter()
                .map(|b| (b.user_id.to_string(), b.expire_time))
                .collect()
        };
        assert_eq!(
            listed(&r, 10_999),
            vec![("m".into(), Some(11_000)), ("x".into(), Some(11_000))]
        );
        let join = |r: &mut Room, u: &str, now| code(r.apply(Command::Join { user: uid(u), now }));
        assert_eq!(join(&mut r, "m", 10_999), 707);
        // Ended at its end, even before its timer lifted it.
        assert_eq!(listed(&r, 11_000), vec![]);
        // An unblock clears the end and the timer.
        let fx = r
            .apply(by(Moderation::Unblock(vec![uid("x")]), 2_000))
            .unwrap();
        assert_eq!(fx.cancelled, vec![(uid("x"), TimerKind::BlockEnd)]);
        assert!(!r.record().live.block_until.contains_key(&uid("x")));
        assert!(!r.record().block_list.contains(&uid("x")));
        // An early check does nothing; the due one lifts the block, logged as the engine's.
        let expire = |now| Command::ExpireBlock {
            user: uid("m"),
            now,
        };
        assert_eq!(r.apply(expire(10_999)).unwrap(), Effects::default());
        let fx = r.apply(expire(12_000)).unwrap();
        assert!(fx.record_changed && fx.events.is_empty());
        let entry = &fx.audit[0];
        assert_eq!(
            (entry.action.clone(), entry.time, entry.operator.clone()),
            (crate::AuditAction::BlockExpired, 11_000, None)
        );
        assert_eq!(entry.targets, vec![uid("m")]);
        assert!(r.record().block_list.is_empty() && r.record().live.block_until.is_empty());
        assert_eq!(join(&mut r, "m", 12_000), OK);
        // A plain block over a timed one lasts until unblocked; a timed one over it, until
        // its end again. Zero time is 110.
        r.apply(by(block_for(&["m2"], ten_s), 20_000)).unwrap();
        let fx = r
            .apply(by(Moderation::Block(vec![uid("m2")]), 21_000))
            .unwrap();
        assert_eq!(fx.cancelled, vec![(uid("m2"), TimerKind::BlockEnd)]);
        assert_eq!(listed(&r, 40_000), vec![("m2".into(), None)]);
        assert_eq!(
            r.apply(Command::ExpireBlock {
                user: uid("m2"),
                now: 40_000
            })
            .unwrap(),
            Effects::default(),
            "a stale timer does not lift a plain block"
        );
        r.apply(by(block_for(&["m2"], ten_s), 41_000)).unwrap();
        assert_eq!(listed(&r, 41_000), vec![("m2".into(), Some(51_000))]);
        assert_eq!(
            code(r.apply(by(block_for(&["m2"], std::time::Duration::ZERO), 41_000))),
            110
        );
        // A blocked member cannot send (210) until the end.
        let mut r = room();
        r.apply(by(block_for(&["m"], ten_s), 0)).unwrap();
        r.restore_member(uid("m"));
        let send = |r: &Room, now| {
            r.check_send(&uid("m"), crate::MessagePriority::Normal, now)
                .map_or_else(|e| e.code(), |_| OK)
        };
        assert_eq!(send(&r, 9_999), 210);
        assert_eq!(send(&r, 10_000), OK);
    }

    #[test]
    fn a_kicked_or_blocked_admin_is_demoted_first() {
        for action in [
            Moderation::Kick(vec![uid("a")]),
            Moderation::Block(vec![uid("a")]),
        ] {
            let mut r = room();
            let fx = r
                .apply(Command::Moderate {
                    reason: None,
                    by: uid("o"),
                    action: action.clone(),
                    now: 0,
                })
                .unwrap();
            assert!(!r.record().admins.contains(&uid("a")), "{action:?}");
            assert!(fx.record_changed);
            assert!(
                matches!(
                    &fx.events[0].event,
                    ChatRoomEvent::AdminRemoved { admin, operator: Some(o), .. }
                        if *admin == uid("a") && *o == uid("o")
                ),
                "{action:?}: the admin-removed event comes first: {:?}",
                fx.events
            );
            assert!(fx.left.contains(&uid("a")));
            if matches!(action, Moderation::Kick(_)) {
                r.apply(Command::Join {
                    user: uid("a"),
                    now: 0,
                })
                .unwrap();
                assert_eq!(
                    r.role_of(&uid("a")),
                    Role::Member,
                    "back as a member, not an admin"
                );
            }
        }
    }

    #[test]
    fn mutes_end_by_themselves_and_beat_the_allow_list() {
        let mut r = room();
        let by = |action| Command::Moderate {
            reason: None,
            by: uid("o"),
            action,
            now: 1_000,
        };
        r.apply(by(Moderation::AllowListAdd(vec![uid("m")])))
            .unwrap();
        let fx = r
            .apply(by(Moderation::Mute {
                targets: vec![uid("m")],
                duration: MuteDuration::For(std::time::Duration::from_millis(500)),
            }))
            .unwrap();
        assert_eq!(
            fx.timers,
            vec![Timer::MuteExpiry {
                user: uid("m"),
                at: 1_500
            }]
        );
        assert_eq!(
            r.check_send(&uid("m"), crate::MessagePriority::Low, 1_499)
                .unwrap_err()
                .code(),
            215
        );
        assert_eq!(r.mute_list(&uid("o"), 1_499, 1, 10).unwrap().data.len(), 1);
        assert_eq!(
            r.mute_list(&uid("o"), 1_500, 1, 10).unwrap().data.len(),
            0,
            "an ended mute is not listed"
        );
        // An early check does nothing; the due one lifts the mute and tells the target and staff.
        assert_eq!(
            r.apply(Command::ExpireMute {
                user: uid("m"),
                now: 1_499
            })
            .unwrap(),
            Effects::default()
        );
        let fx = r
            .apply(Command::ExpireMute {
                user: uid("m"),
                now: 1_500,
            })
            .unwrap();
        assert!(matches!(
            &fx.events[0],
            Outgoing { to: Audience::MembersAmong(to), event: ChatRoomEvent::MuteListRemoved { operator: None, .. } }
                if to.contains(&uid("m")) && to.contains(&uid("o")) && to.contains(&uid("a2"))
        ));
        assert!(r.record().mute_list.is_empty());
        // Mute-all and the mute list are independent.
        r.apply(by(Moderation::Mute {
            targets: vec![uid("m2")],
            duration: MuteDuration::Forever,
        }))
        .unwrap();
        r.apply(by(Moderation::MuteAll(true))).unwrap();
        r.apply(by(Moderation::MuteAll(false))).unwrap();
        assert_eq!(r.record().mute_list.get(&uid("m2")), Some(&-1));
        assert_eq!(
            code(r.apply(by(Moderation::Mute {
                targets: vec![uid("m")],
                duration: MuteDuration::For(std::time::Duration::ZERO)
            }))),
            110
        );
    }

    #[test]
    fn max_members_cannot_go_below_the_count() {
        let mut r = room();
        let by = |action| Command::Moderate {
            reason: None,
            by: uid("o"),
            action,
            now: 0,
        };
        assert_eq!(code(r.apply(by(Moderation::ChangeMaxUsers(4)))), 110);
        assert_eq!(code(r.apply(by(Moderation::ChangeMaxUsers(5)))), OK);
        assert_eq!(
            code(r.apply(Command::Join {
                user: uid("x"),
                now: 0
            })),
            704
        );
        assert_eq!(
            code(r.apply(by(Moderation::ChangeName(String::new())))),
            110
        );
        assert_eq!(
            code(r.apply(by(Moderation::UpdateAnnouncement("a".repeat(513))))),
            110
        );
        assert_eq!(
            code(r.apply(by(Moderation::UpdateAnnouncement("a".repeat(512))))),
            OK
        );
    }

    #[test]
    fn at_most_99_admins() {
        let names: Vec<String> = (0..100).map(|n| format!("u{n}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut r = room_of("o", &names, 200, &Limits::default());
        for n in 0..99 {
            let add = Moderation::AddAdmin(uid(&format!("u{n}")));
            r.apply(Command::Moderate {
                reason: None,
                by: uid("o"),
                action: add,
                now: 0,
            })
            .unwrap();
        }
        let add = Moderation::AddAdmin(uid("u99"));
        assert_eq!(
            code(r.apply(Command::Moderate {
                reason: None,
                by: uid("o"),
                action: add,
                now: 0
            })),
            4
        );
    }
}
