//! A room's idempotency keys: which message each (sender, key) got, for the engine's window.
//!
//! The room actor holds them (loaded with the room, so they hold across hibernation and
//! restarts), answers a repeat from them, and writes each new key in the write set of its
//! message. Keys whose window has ended are removed from memory and from the store with the
//! room's next message.

use std::collections::{HashMap, VecDeque};

use roomcast_model::{ChatMessage, Timestamp, UserId};
use roomcast_store::IdempotencyRecord;

/// A key the room remembers: its record, and the message itself if this actor accepted it.
pub(crate) struct KeyEntry {
    pub(crate) record: IdempotencyRecord,
    pub(crate) message: Option<ChatMessage>,
}

pub(crate) struct Keys {
    map: HashMap<(UserId, String), KeyEntry>,
    /// Every key by when its window started, oldest first.
    order: VecDeque<(Timestamp, UserId, String)>,
    window_ms: Timestamp,
}

impl Keys {
    pub(crate) fn new(mut records: Vec<IdempotencyRecord>) -> Keys {
        records.sort_by_key(|r| r.at);
        let mut keys = Keys {
            map: HashMap::with_capacity(records.len()),
            order: VecDeque::with_capacity(records.len()),
            window_ms: roomcast_model::ms_to_timestamp(roomcast_model::duration_ms(
                roomcast_model::IDEMPOTENCY_WINDOW,
            )),
        };
        for record in records {
            keys.insert(record, None);
        }
        keys
    }

    /// The message `from` sent with `key`, if its window is still open at `now`.
    pub(crate) fn get(&self, from: &UserId, key: &str, now: Timestamp) -> Option<&KeyEntry> {
        self.map
            .get(&(from.clone(), key.to_string()))
            .filter(|e| now.saturating_sub(e.record.at) < self.window_ms)
    }

    pub(crate) fn insert(&mut self, record: IdempotencyRecord, message: Option<ChatMessage>) {
        self.order
            .push_back((record.at, record.from.clone(), record.key.clone()));
        self.map.insert(
            (record.from.clone(), record.key.clone()),
            KeyEntry { record, message },
        );
    }

    /// Forgets the keys whose window ended by `now`; returns them, to remove from the store.
    pub(crate) fn take_expired(&mut self, now: Timestamp) -> Vec<(UserId, String)> {
        let mut gone = Vec::new();
        while let Some((at, _, _)) = self.order.front() {
            if now.saturating_sub(*at) < self.window_ms {
                break;
            }
            let Some((at, from, key)) = self.order.pop_front() else {
                break;
            };
            let id = (from, key);
            // A key used again after its window ended has a newer entry: that one stays.
            if self.map.get(&id).is_some_and(|e| e.record.at == at) {
                self.map.remove(&id);
                gone.push(id);
            }
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(from: &str, key: &str, seq: u64, at: Timestamp) -> IdempotencyRecord {
        IdempotencyRecord {
            room: roomcast_model::RoomId::from_u64(1),
            from: UserId::new(from).unwrap(),
            key: key.into(),
            msg_id: roomcast_model::MessageId::from_u64(seq),
            seq,
            at,
        }
    }

    #[test]
    fn keys_last_for_the_window_per_sender() {
        let window = 5 * 60 * 1000;
        let mut keys = Keys::new(vec![record("bob", "k", 1, 0)]);
        let bob = UserId::new("bob").unwrap();
        let ann = UserId::new("ann").unwrap();
        assert_eq!(keys.get(&bob, "k", window - 1).unwrap().record.seq, 1);
        assert!(keys.get(&ann, "k", 0).is_none());
        assert!(keys.get(&bob, "k", window).is_none());
        assert!(keys.take_expired(window - 1).is_empty());
        // Used again after its window: the new entry outlives the old one's trim.
        keys.insert(record("bob", "k", 2, window), None);
        assert!(keys.take_expired(window + 1).is_empty());
        assert_eq!(keys.get(&bob, "k", window + 1).unwrap().record.seq, 2);
        assert_eq!(keys.take_expired(2 * window), [(bob, "k".to_string())]);
    }
}
