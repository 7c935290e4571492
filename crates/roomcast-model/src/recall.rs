//! Recalling and deleting messages, and pinned messages: live-stream moderation beyond Agora's
//! chat rooms (Agora's recall and pin, Twitch's pinned message).
//!
//! Messages live in the store, not in the room: the engine reads the message first and hands
//! the room what it read ([`MessageRef`]); the room decides, and its effects say which message
//! to rewrite without its body ([`Effects::recalled`]).

use crate::event::{Audience, ChatRoomEvent, Outgoing};
use crate::moderation::{check_permission, MessageRef, Operation};
use crate::room::{Effects, Room};
use crate::{ChatError, Pin, Recall, Timestamp, UserId};

impl Room {
    /// The sender recalls its own message, within the recall window (504 past it). A member
    /// only (702); someone else's message is 703.
    pub(crate) fn recall_own(
        &mut self,
        by: UserId,
        message: MessageRef,
        now: Timestamp,
    ) -> Result<Effects, ChatError> {
        if !self.is_member(&by) {
            return Err(ChatError::NotJoined(by.to_string()));
        }
        if message.from != by {
            return Err(ChatError::PermissionDenied(
                "only its sender, the owner or an admin may recall a message".into(),
            ));
        }
        if message.recalled || self.recalled.contains(&message.seq) {
            return Ok(Effects::default());
        }
        let window = self.limits().message_recall_window;
        let age = now.saturating_sub(message.server_time);
        if age > crate::ms_to_timestamp(crate::duration_ms(window)) {
            return Err(ChatError::MessageRecallTimeLimit(window));
        }
        let seq = message.seq;
        let mut fx = self.recall_effects(&by, message, now);
        self.audit(
            &mut fx,
            now,
            Some(by.clone()),
            crate::AuditAction::RecallMessage { seq },
            vec![by],
            None,
        );
        Ok(fx)
    }

    /// The owner or an admin deletes a message (any member's, at any time).
    pub(crate) fn delete_message(
        &mut self,
        by: &UserId,
        message: MessageRef,
        now: Timestamp,
    ) -> Result<Effects, ChatError> {
        check_permission(Operation::DeleteMessage, self.role_of(by), None)?;
        if message.recalled || self.recalled.contains(&message.seq) {
            return Ok(Effects::default());
        }
        Ok(self.recall_effects(by, message, now))
    }

    /// What recalling `message` does: the message is rewritten without its body, the members
    /// but `by` are told, and a pin of it goes.
    fn recall_effects(&mut self, by: &UserId, message: MessageRef, now: Timestamp) -> Effects {
        let room_id = self.id();
        self.recalled.insert(message.seq);
        // A shadowed message was only ever seen by its sender and the staff, and so is one
        // still held for review: only they hear (the held one is then never released).
        let held = message.held_until.is_some_and(|until| now < until);
        let to = if message.shadowed || held {
            Audience::MembersAmong(self.staff_and(std::slice::from_ref(&message.from), Some(by)))
        } else {
            Audience::MembersExcept(vec![by.clone()])
        };
        let mut fx = Effects {
            recalled: Some((message.seq, Recall::new(by.clone(), now))),
            events: vec![Outgoing {
                to,
                event: ChatRoomEvent::MessageRecalled {
                    room_id,
                    msg_id: message.msg_id,
                    seq: message.seq,
                    from: message.from,
                    operator: Some(by.clone()),
                    operator_reason: None,
                },
            }],
            ..Effects::default()
        };
        fx.merge(self.drop_pin(by, message.seq));
        fx
    }

    /// Unpins `seq` if it is pinned, telling the members but `by`.
    fn drop_pin(&mut self, by: &UserId, seq: u64) -> Effects {
        let pins = &mut self.record_mut().live.pins;
        let before = pins.len();
        pins.retain(|p| p.seq != seq);
        if pins.len() == before {
            return Effects::default();
        }
        let room_id = self.id();
        self.changed(vec![Outgoing {
            to: Audience::MembersExcept(vec![by.clone()]),
            event: ChatRoomEvent::MessageUnpinned {
                room_id,
                seq,
                operator: Some(by.clone()),
                operator_reason: None,
            },
        }])
    }

    /// The owner or an admin pins a message: not a recalled one (500), at most
    /// `max_pinned_messages` (4 beyond); pinning a pinned message changes nothing.
    pub(crate) fn pin_message(
        &mut self,
        by: &UserId,
        message: MessageRef,
        now: Timestamp,
    ) -> Result<Effects, ChatError> {
        check_permission(Operation::PinMessage, self.role_of(by), None)?;
        if message.recalled || self.recalled.contains(&message.seq) {
            return Err(ChatError::MessageInvalid(format!(
                "message {} was recalled and cannot be pinned",
                message.seq
            )));
        }
        if message.shadowed {
            return Err(ChatError::MessageInvalid(format!(
                "message {} is shadowed and cannot be pinned",
                message.seq
            )));
        }
        if self.record().live.pins.iter().any(|p| p.seq == message.seq) {
            return Ok(Effects::default());
        }
        let max = self.limits().max_pinned_messages;
        if self.record().live.pins.len() >= max {
            return Err(ChatError::ExceedServiceLimit(format!(
                "a room has at most {max} pinned messages; unpin one first"
            )));
        }
        self.record_mut()
            .live
            .pins
            .push(Pin::new(message.seq, by.clone(), now));
        let room_id = self.id();
        Ok(self.changed(vec![Outgoing {
            to: Audience::MembersExcept(vec![by.clone()]),
            event: ChatRoomEvent::MessagePinned {
                room_id,
                msg_id: message.msg_id,
                seq: message.seq,
                operator: Some(by.clone()),
                operator_reason: None,
            },
        }]))
    }

    /// The owner or an admin unpins message `seq`; a message that is not pinned changes
    /// nothing.
    pub(crate) fn unpin_message(&mut self, by: &UserId, seq: u64) -> Result<Effects, ChatError> {
        check_permission(Operation::PinMessage, self.role_of(by), None)?;
        Ok(self.drop_pin(by, seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{room_of, uid};
    use crate::{AuditAction, Command, Limits, MessageId, Moderation};

    const MINUTE: Timestamp = 60_000;

    fn msg(seq: u64, from: &str, at: Timestamp) -> MessageRef {
        MessageRef {
            seq,
            msg_id: MessageId::from_u64(100 + seq),
            from: uid(from),
            server_time: at,
            recalled: false,
            shadowed: false,
            held_until: None,
        }
    }

    fn recall(r: &mut Room, by: &str, m: MessageRef, now: Timestamp) -> Result<Effects, ChatError> {
        r.apply(Command::RecallMessage {
            by: uid(by),
            message: m,
            now,
            reason: None,
        })
    }

    fn room() -> Room {
        let mut r = room_of("o", &["a", "m", "m2"], 100, &Limits::default());
        r.apply(Command::Moderate {
            reason: None,
            by: uid("o"),
            action: Moderation::AddAdmin(uid("a")),
            now: 0,
        })
        .unwrap();
        r
    }

    #[test]
    fn senders_recall_within_the_window_staff_at_any_time() {
        let mut r = room();
        let code = |res: Result<Effects, ChatError>| res.map(drop).map_err(|e| e.code());
        assert_eq!(
            code(recall(&mut r, "m", msg(1, "m", 0), 2 * MINUTE + 1)),
            Err(504)
        );
        assert_eq!(code(recall(&mut r, "m2", msg(1, "m", 0), 0)), Err(703));
        assert_eq!(code(recall(&mut r, "x", msg(1, "x", 0), 0)), Err(702));
        let fx = recall(&mut r, "m", msg(1, "m", 0), 2 * MINUTE).unwrap();
        assert_eq!(fx.recalled, Some((1, Recall::new(uid("m"), 2 * MINUTE))));
        assert_eq!(fx.events[0].to, Audience::MembersExcept(vec![uid("m")]));
        assert_eq!(fx.audit[0].action, AuditAction::RecallMessage { seq: 1 });
        assert_eq!(fx.audit[0].operator, Some(uid("m")));
        // Again (a racing recall, or one of a message read as recalled): nothing happens.
        assert_eq!(
            recall(&mut r, "m", msg(1, "m", 0), 2 * MINUTE).unwrap(),
            Effects::default()
        );
        let mut old = msg(2, "m", 0);
        old.recalled = true;
        assert_eq!(recall(&mut r, "o", old, 0).unwrap(), Effects::default());
        // Staff delete anyone's message at any time, with a reason, as moderation.
        for (by, seq) in [("a", 3), ("o", 4)] {
            let fx = r
                .apply(Command::RecallMessage {
                    by: uid(by),
                    message: msg(seq, "m2", 0),
                    now: 100 * MINUTE,
                    reason: Some("spoiler".into()),
                })
                .unwrap();
            assert_eq!(fx.recalled.as_ref().map(|r| r.0), Some(seq));
            assert_eq!(fx.events[0].event.operator_reason(), Some("spoiler"));
            assert_eq!(fx.audit[0].action, AuditAction::DeleteMessage { seq });
            assert_eq!(fx.audit[0].targets, vec![uid("m2")]);
        }
    }

    #[test]
    fn pins_are_bounded_and_a_recalled_message_is_unpinned() {
        let limits = Limits::default().with_max_pinned_messages(2);
        let mut r = room_of("o", &["m"], 100, &limits);
        let pin = |r: &mut Room, m: MessageRef| {
            r.apply(Command::Moderate {
                reason: Some("read this".into()),
                by: uid("o"),
                action: Moderation::PinMessage(m),
                now: 5,
            })
        };
        let fx = pin(&mut r, msg(1, "m", 0)).unwrap();
        assert!(fx.record_changed);
        assert!(matches!(
            &fx.events[0].event,
            ChatRoomEvent::MessagePinned {
                seq: 1,
                operator_reason: Some(_),
                ..
            }
        ));
        assert_eq!(fx.audit[0].action, AuditAction::PinMessage { seq: 1 });
        assert_eq!(pin(&mut r, msg(1, "m", 0)).unwrap(), Effects::default());
        pin(&mut r, msg(2, "m", 0)).unwrap();
        assert_eq!(pin(&mut r, msg(3, "m", 0)).unwrap_err().code(), 4);
        assert_eq!(
            r.snapshot(None).pinned_messages,
            vec![Pin::new(1, uid("o"), 5), Pin::new(2, uid("o"), 5)]
        );
        // The sender recalls a pinned message: it is unpinned too.
        let fx = recall(&mut r, "m", msg(2, "m", 0), 10).unwrap();
        assert!(fx.record_changed);
        assert!(matches!(
            &fx.events[1].event,
            ChatRoomEvent::MessageUnpinned { seq: 2, .. }
        ));
        assert_eq!(r.record().live.pins.len(), 1);
        assert_eq!(pin(&mut r, msg(2, "m", 0)).unwrap_err().code(), 500);
        // Unpinning is idempotent.
        let unpin = |r: &mut Room, by: &str, seq| {
            r.apply(Command::Moderate {
                reason: None,
                by: uid(by),
                action: Moderation::UnpinMessage(seq),
                now: 20,
            })
        };
        assert_eq!(unpin(&mut r, "m", 1).unwrap_err().code(), 703);
        assert_eq!(
            unpin(&mut r, "o", 1).unwrap().audit[0].action,
            AuditAction::UnpinMessage { seq: 1 }
        );
        assert_eq!(unpin(&mut r, "o", 1).unwrap(), Effects::default());
        assert!(r.record().live.pins.is_empty());
    }
}
