//! The audit log: every act of moderation on a room, by a user or by the engine, with its time,
//! operator, targets, action and reason. Kept per room (the newest `Limits::audit_log_retention`
//! entries), persisted, and paged newest first for the owner and admins.

use serde::{Deserialize, Serialize};

use crate::{ChatError, Moderation, Timestamp, UserId};

/// The longest reason a moderation call may carry, in characters.
pub const REASON_MAX_CHARS: usize = 512;

/// Checks a moderation reason: at most [`REASON_MAX_CHARS`] characters (110 beyond). An empty
/// reason counts as none.
pub fn check_reason(reason: Option<String>) -> Result<Option<String>, ChatError> {
    match reason {
        Some(r) if r.chars().count() > REASON_MAX_CHARS => Err(ChatError::InvalidParam(format!(
            "a reason has at most {REASON_MAX_CHARS} characters"
        ))),
        Some(r) if r.is_empty() => Ok(None),
        other => Ok(other),
    }
}

/// What an audit entry records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AuditAction {
    /// Made the targets admins.
    AddAdmin,
    /// Took the targets' admin role.
    RemoveAdmin,
    /// Made the target the owner.
    ChangeOwner,
    /// Removed the targets from the room.
    Kick,
    /// Put the targets on the block list.
    Block,
    /// Took the targets off the block list.
    Unblock,
    /// Muted the targets, until `until` (engine clock; `None`: until unmuted).
    Mute {
        /// When the mute ends.
        until: Option<Timestamp>,
    },
    /// Unmuted the targets.
    Unmute,
    /// The targets' mute ended by itself (the operator is the engine: `None`).
    MuteExpired,
    /// Turned mute-all on.
    MuteAll,
    /// Turned mute-all off.
    UnmuteAll,
    /// Added the targets to the allow list.
    AllowListAdd,
    /// Removed the targets from the allow list.
    AllowListRemove,
    /// Renamed the room.
    ChangeName {
        /// The new name.
        name: String,
    },
    /// Changed the description.
    ChangeDescription,
    /// Changed max members.
    ChangeMaxUsers {
        /// The new maximum.
        max_users: u32,
    },
    /// Replaced the room's own limits.
    ChangeLimits,
    /// Changed the announcement.
    UpdateAnnouncement,
    /// Turned slow mode on (the cooldown in ms) or off (`None`).
    SlowMode {
        /// The cooldown.
        cooldown_ms: Option<u64>,
    },
    /// Froze the room until `until` (engine clock; `None`: until unfrozen).
    Freeze {
        /// When the freeze ends.
        until: Option<Timestamp>,
    },
    /// Ended a freeze.
    Unfreeze,
    /// The freeze ended by itself (the operator is the engine: `None`).
    FreezeEnded,
    /// Removed the targets, who may not join again before `until` (engine clock).
    KickWithRejoinBan {
        /// When they may join again.
        until: Timestamp,
    },
    /// The sender recalled its own message (the operator is the sender; the target too).
    RecallMessage {
        /// The message's sequence number.
        seq: u64,
    },
    /// Deleted a member's message (the target is its sender).
    DeleteMessage {
        /// The message's sequence number.
        seq: u64,
    },
    /// Pinned a message.
    PinMessage {
        /// The message's sequence number.
        seq: u64,
    },
    /// Unpinned a message.
    UnpinMessage {
        /// The message's sequence number.
        seq: u64,
    },
    /// Put the targets on the block list until `until` (engine clock), when the block ends by
    /// itself.
    BlockFor {
        /// When the block ends.
        until: Timestamp,
    },
    /// The target's timed block ended by itself (the operator is the engine: `None`).
    BlockExpired,
    /// Shadow-banned the targets.
    ShadowBan,
    /// Lifted the targets' shadow ban.
    ShadowUnban,
    /// Turned hold for review on (the hold in ms) or off (`None`).
    Hold {
        /// The hold.
        hold_ms: Option<u64>,
    },
}

/// One entry of a room's audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditEntry {
    /// Its number in the room's log: 1, 2, 3... (never reused).
    pub seq: u64,
    /// When (engine clock, ms since the Unix epoch).
    pub time: Timestamp,
    /// Who acted; `None` for the engine (an expiry).
    pub operator: Option<UserId>,
    /// What was done.
    pub action: AuditAction,
    /// To whom (empty for acts on the room itself).
    pub targets: Vec<UserId>,
    /// The reason the operator gave.
    pub reason: Option<String>,
}

impl AuditEntry {
    /// An entry (the engine numbers them; this is for tools and tests).
    pub fn new(
        seq: u64,
        time: Timestamp,
        operator: Option<UserId>,
        action: AuditAction,
        targets: Vec<UserId>,
        reason: Option<String>,
    ) -> AuditEntry {
        AuditEntry {
            seq,
            time,
            operator,
            action,
            targets,
            reason,
        }
    }
}

impl AuditAction {
    /// The action and targets a moderation call records (`now` places a mute's end).
    pub(crate) fn of(action: &Moderation, now: Timestamp) -> (AuditAction, Vec<UserId>) {
        use Moderation as M;
        match action {
            M::AddAdmin(u) => (AuditAction::AddAdmin, vec![u.clone()]),
            M::RemoveAdmin(u) => (AuditAction::RemoveAdmin, vec![u.clone()]),
            M::ChangeOwner(u) => (AuditAction::ChangeOwner, vec![u.clone()]),
            M::Kick(us) => (AuditAction::Kick, us.clone()),
            M::Block(us) => (AuditAction::Block, us.clone()),
            M::Unblock(us) => (AuditAction::Unblock, us.clone()),
            M::BlockFor { targets, duration } => (
                AuditAction::BlockFor {
                    until: crate::room::end_after(now, *duration),
                },
                targets.clone(),
            ),
            M::Mute { targets, duration } => {
                let until = match duration {
                    crate::MuteDuration::For(d) => Some(crate::room::end_after(now, *d)),
                    crate::MuteDuration::Forever => None,
                };
                (AuditAction::Mute { until }, targets.clone())
            }
            M::Unmute(us) => (AuditAction::Unmute, us.clone()),
            M::MuteAll(true) => (AuditAction::MuteAll, Vec::new()),
            M::MuteAll(false) => (AuditAction::UnmuteAll, Vec::new()),
            M::AllowListAdd(us) => (AuditAction::AllowListAdd, us.clone()),
            M::AllowListRemove(us) => (AuditAction::AllowListRemove, us.clone()),
            M::ChangeName(name) => (AuditAction::ChangeName { name: name.clone() }, Vec::new()),
            M::ChangeDescription(_) => (AuditAction::ChangeDescription, Vec::new()),
            M::ChangeMaxUsers(n) => (AuditAction::ChangeMaxUsers { max_users: *n }, Vec::new()),
            M::ChangeLimits(_) => (AuditAction::ChangeLimits, Vec::new()),
            M::UpdateAnnouncement(_) => (AuditAction::UpdateAnnouncement, Vec::new()),
            M::SetSlowMode(c) => (
                AuditAction::SlowMode {
                    cooldown_ms: c.map(crate::duration_ms),
                },
                Vec::new(),
            ),
            M::Freeze(d) => {
                let until = match d {
                    crate::MuteDuration::For(d) => Some(crate::room::end_after(now, *d)),
                    crate::MuteDuration::Forever => None,
                };
                (AuditAction::Freeze { until }, Vec::new())
            }
            M::Unfreeze => (AuditAction::Unfreeze, Vec::new()),
            M::KickWithRejoinBan { targets, ban } => (
                AuditAction::KickWithRejoinBan {
                    until: crate::room::end_after(now, *ban),
                },
                targets.clone(),
            ),
            M::DeleteMessage(m) => (
                AuditAction::DeleteMessage { seq: m.seq },
                vec![m.from.clone()],
            ),
            M::PinMessage(m) => (AuditAction::PinMessage { seq: m.seq }, Vec::new()),
            M::UnpinMessage(seq) => (AuditAction::UnpinMessage { seq: *seq }, Vec::new()),
            M::ShadowBan(us) => (AuditAction::ShadowBan, us.clone()),
            M::ShadowUnban(us) => (AuditAction::ShadowUnban, us.clone()),
            M::SetHold(h) => (
                AuditAction::Hold {
                    hold_ms: h.map(crate::duration_ms),
                },
                Vec::new(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{room_of, uid};
    use crate::{ChatRoomEvent, Command, Limits, MuteDuration};

    fn moderate(
        room: &mut crate::Room,
        by: &str,
        action: Moderation,
        now: Timestamp,
        reason: Option<&str>,
    ) -> Result<crate::Effects, ChatError> {
        room.apply(Command::Moderate {
            by: uid(by),
            action,
            now,
            reason: reason.map(str::to_string),
        })
    }

    #[test]
    fn every_act_is_logged_with_its_reason_and_its_events_carry_it() {
        let mut r = room_of("o", &["a", "m"], 100, &Limits::default());
        let mute = Moderation::Mute {
            targets: vec![uid("m")],
            duration: MuteDuration::For(std::time::Duration::from_secs(60)),
        };
        let fx = moderate(&mut r, "o", mute, 1_000, Some("spam")).unwrap();
        assert_eq!(
            fx.audit,
            vec![AuditEntry {
                seq: 1,
                time: 1_000,
                operator: Some(uid("o")),
                action: AuditAction::Mute {
                    until: Some(61_000)
                },
                targets: vec![uid("m")],
                reason: Some("spam".into()),
            }]
        );
        assert!(!fx.events.is_empty());
        assert!(fx
            .events
            .iter()
            .all(|o| o.event.operator_reason() == Some("spam")));
        // Refused: nothing logged, the numbering goes on from the last entry.
        let refused = moderate(&mut r, "m", Moderation::Kick(vec![uid("a")]), 2_000, None);
        assert_eq!(refused.unwrap_err().code(), 703);
        let fx = moderate(&mut r, "o", Moderation::MuteAll(true), 3_000, None).unwrap();
        assert_eq!(fx.audit[0].seq, 2);
        assert_eq!(fx.audit[0].action, AuditAction::MuteAll);
        // The engine's own act: the mute ends, operator none.
        let fx = r
            .apply(Command::ExpireMute {
                user: uid("m"),
                now: 61_000,
            })
            .unwrap();
        assert_eq!(fx.audit[0].action, AuditAction::MuteExpired);
        assert_eq!((fx.audit[0].seq, fx.audit[0].operator.clone()), (3, None));
        assert!(matches!(
            &fx.events[0].event,
            ChatRoomEvent::MuteListRemoved { operator: None, .. }
        ));
        // A too long reason is refused before anything happens.
        let long = "x".repeat(REASON_MAX_CHARS + 1);
        let refused = moderate(&mut r, "o", Moderation::MuteAll(false), 4_000, Some(&long));
        assert_eq!(refused.unwrap_err().code(), 110);
        assert!(r.record().all_muted);
        assert_eq!(r.audit_seq(), 3);
    }

    #[test]
    fn due_expiries_follow_every_end_also_in_a_restored_room() {
        let mut r = room_of("o", &["m", "b"], 100, &Limits::default());
        let mute = Moderation::Mute {
            targets: vec![uid("m")],
            duration: MuteDuration::For(std::time::Duration::from_secs(60)),
        };
        moderate(&mut r, "o", mute, 0, None).unwrap();
        let block = Moderation::BlockFor {
            targets: vec![uid("b")],
            duration: std::time::Duration::from_secs(30),
        };
        moderate(&mut r, "o", block, 0, None).unwrap();
        assert!(r.due_expiries(29_999).is_empty());
        assert_eq!(r.due_expiries(30_000).len(), 1);
        assert_eq!(r.due_expiries(60_000).len(), 2);
        let restored = crate::Room::from_record(r.record().clone(), &Limits::default(), 0, 0);
        assert_eq!(restored.due_expiries(60_000).len(), 2);
        // Applied, they are due no more.
        for c in r.due_expiries(60_000) {
            r.apply(c).unwrap();
        }
        assert!(r.due_expiries(i64::MAX - 1).is_empty());
    }

    #[test]
    fn reasons_are_bounded_and_empty_is_none() {
        assert_eq!(check_reason(None).unwrap(), None);
        assert_eq!(check_reason(Some(String::new())).unwrap(), None);
        let max = "é".repeat(REASON_MAX_CHARS);
        assert_eq!(check_reason(Some(max.clone())).unwrap(), Some(max));
        let over = "a".repeat(REASON_MAX_CHARS + 1);
        assert_eq!(check_reason(Some(over)).unwrap_err().code(), 110);
    }
}
