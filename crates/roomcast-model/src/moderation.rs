//! Roles and moderation: who may do what to whom, as pure decisions, and the room's moderation
//! commands.
//!
//! [`check_permission`] is the policy: it takes the operation, the actor's role and the target's
//! role and says yes or which error. The room's commands ask it first and act after, so the rules
//! live in one place (and one table in the tests names every case).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::event::{Audience, ChatRoomEvent, LeaveReason, Outgoing};
use crate::room::{Effects, Room, Timer};
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
    /// Change the announcement.
    UpdateAnnouncement,
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
        Destroy | ChangeOwner | AddAdmin | RemoveAdmin => {
            if actor != Role::Owner {
                return deny("only the owner may");
            }
            if target == Some(Role::Owner) {
                return deny("not on the owner");
            }
            Ok(())
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
        | ChangeSpecification | UpdateAnnouncement => {
            if staff {
                Ok(())
            } else {
                deny("only the owner and admins may")
            }
        }
    }
}

/// A moderation command's action.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Mute these members for `duration_ms` (-1: until unmuted).
    Mute {
        /// Whom.
        targets: Vec<UserId>,
        /// For how long, in ms; -1 forever.
        duration_ms: i64,
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
    /// Change the announcement.
    UpdateAnnouncement(String),
}

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
    /// The owner, the admins and `targets`, each once, for events that go to the people
    /// concerned and the staff.
    fn staff_and(&self, targets: &[UserId]) -> Vec<UserId> {
        let r = self.record();
        let mut all: Vec<UserId> = Vec::with_capacity(targets.len() + r.admins.len() + 1);
        let mut seen = BTreeSet::new();
        for u in targets
            .iter()
            .chain(std::iter::once(&r.owner))
            .chain(&r.admins)
        {
            if seen.insert(u.clone()) {
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
                let to = Audience::MembersAmong(self.staff_and(std::slice::from_ref(&target)));
                Ok(self.changed(vec![Outgoing {
                    to,
                    event: ChatRoomEvent::AdminAdded {
                        room_id,
                        admin: target,
                        operator: Some(by),
                    },
                }]))
            }
            M::RemoveAdmin(target) => {
                check_permission(Operation::RemoveAdmin, self.role_of(&by), None)?;
                if !self.record().admins.contains(&target) {
                    return Err(ChatError::InvalidParam(format!("{target} is not an admin")));
                }
                let to = Audience::MembersAmong(self.staff_and(std::slice::from_ref(&target)));
                self.record_mut().admins.retain(|a| *a != target);
                Ok(self.changed(vec![Outgoing {
                    to,
                    event: ChatRoomEvent::AdminRemoved {
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
                    to: Audience::MembersExcept(by.clone()),
                    event: ChatRoomEvent::OwnerChanged {
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
                    fx.merge(self.remove_member(t, LeaveReason::Kicked, Some(by.clone())));
                }
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
                    self.record_mut().block_list.insert(t.clone());
                    if self.is_member(&t) {
                        fx.merge(self.remove_member(t, LeaveReason::Kicked, Some(by.clone())));
                    }
                }
                fx.record_changed = true;
                Ok(fx)
            }
            M::Unblock(targets) => {
                let targets = dedup(targets);
                non_empty(&targets)?;
                check_permission(Operation::Unblock, self.role_of(&by), None)?;
                for t in &targets {
                    self.record_mut().block_list.remove(t);
                }
                Ok(self.changed(Vec::new()))
            }
            M::Mute {
                targets,
                duration_ms,
            } => {
                let targets = dedup(targets);
                non_empty(&targets)?;
                if duration_ms == 0 || duration_ms < -1 {
                    return Err(ChatError::InvalidParam(
                        "mute duration must be positive ms, or -1 for forever".into(),
                    ));
                }
                self.check_targets(Operation::Mute, &by, &targets, true)?;
                let expire = if duration_ms < 0 {
                    -1
                } else {
                    now.saturating_add(duration_ms)
                };
                for t in &targets {
                    self.record_mut().mute_list.insert(t.clone(), expire);
                }
                let to = Audience::MembersAmong(self.staff_and(&targets));
                let mut fx = self.changed(vec![Outgoing {
                    to,
                    event: ChatRoomEvent::MuteListAdded {
                        room_id,
                        members: targets.clone(),
                        expire_time: expire,
                        operator: Some(by),
                    },
                }]);
                if expire >= 0 {
                    fx.timers = targets
                        .into_iter()
                        .map(|user| Timer::MuteExpiry { user, at: expire })
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
                let to = Audience::MembersAmong(self.staff_and(&unmuted));
                Ok(self.changed(vec![Outgoing {
                    to,
                    event: ChatRoomEvent::MuteListRemoved {
                        room_id,
                        members: unmuted,
                        operator: Some(by),
                    },
                }]))
            }
            M::MuteAll(on) => {
                check_permission(Operation::MuteAll, self.role_of(&by), None)?;
                if self.record().all_muted == on {
                    return Ok(Effects::default());
                }
                self.record_mut().all_muted = on;
                Ok(self.changed(vec![Outgoing {
                    to: Audience::MembersExcept(by.clone()),
                    event: ChatRoomEvent::AllMemberMuteStateChanged {
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
                let to = Audience::MembersAmong(self.staff_and(&targets));
                Ok(self.changed(vec![Outgoing {
                    to,
                    event: ChatRoomEvent::AllowListAdded {
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
                let to = Audience::MembersAmong(self.staff_and(&removed));
                Ok(self.changed(vec![Outgoing {
                    to,
                    event: ChatRoomEvent::AllowListRemoved {
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
            M::ChangeMaxUsers(max) => {
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
                    to: Audience::MembersExcept(by.clone()),
                    event: ChatRoomEvent::AnnouncementChanged {
                        room_id,
                        announcement: text,
                        operator: Some(by),
                    },
                }]))
            }
        }
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
            to: Audience::MembersExcept(by.clone()),
            event: ChatRoomEvent::SpecificationChanged {
                room,
                operator: Some(by.clone()),
            },
        }]))
    }

    /// A mute may have expired: lift it if so.
    pub(crate) fn expire_mute(&mut self, user: UserId, now: Timestamp) -> Effects {
        match self.record().mute_list.get(&user) {
            Some(&until) if until >= 0 && until <= now => {}
            _ => return Effects::default(),
        }
        self.record_mut().mute_list.remove(&user);
        let to = Audience::MembersAmong(self.staff_and(std::slice::from_ref(&user)));
        let room_id = self.id();
        self.changed(vec![Outgoing {
            to,
            event: ChatRoomEvent::MuteListRemoved {
                room_id,
                members: vec![user],
                operator: None,
            },
        }])
    }
}
