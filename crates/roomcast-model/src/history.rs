//! A room's retained messages, in memory: replay on join and history pages.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::{ChatError, ChatMessage};

/// Which way a history page walks from its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SearchDirection {
    /// Towards older messages; the page is newest first.
    Up,
    /// Towards newer messages; the page is oldest first.
    Down,
}

/// One page of a cursor listing (history, members), with where to start the next.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatCursorResult<T> {
    /// The page's items, in the query's direction.
    pub data: Vec<T>,
    /// The start of the next page in the same direction, or `None` if no more is retained.
    pub cursor: Option<u64>,
}

impl<T> ChatCursorResult<T> {
    /// True if a next page may hold more (there is a cursor to pass).
    pub fn has_more(&self) -> bool {
        self.cursor.is_some()
    }

    /// The number of items on this page.
    pub fn page_count(&self) -> usize {
        self.data.len()
    }
}

/// What to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct HistoryQuery {
    /// Which way to walk.
    pub direction: SearchDirection,
    /// Start after this sequence number (exclusive). `None`: from the newest (up) or the
    /// oldest retained (down).
    pub start_seq: Option<u64>,
    /// Most messages in the page, 1 to the engine's `history_page_max` (200 by default).
    pub page_size: u32,
}

impl HistoryQuery {
    /// The newest `page_size` messages, newest first.
    pub fn newest(page_size: u32) -> HistoryQuery {
        HistoryQuery {
            direction: SearchDirection::Up,
            start_seq: None,
            page_size,
        }
    }

    /// Up to `page_size` messages older than `seq`, newest first.
    pub fn before(seq: u64, page_size: u32) -> HistoryQuery {
        HistoryQuery {
            direction: SearchDirection::Up,
            start_seq: Some(seq),
            page_size,
        }
    }

    /// Up to `page_size` messages newer than `seq`, oldest first: what a member that saw `seq`
    /// last has missed.
    pub fn after(seq: u64, page_size: u32) -> HistoryQuery {
        HistoryQuery {
            direction: SearchDirection::Down,
            start_seq: Some(seq),
            page_size,
        }
    }
}

/// The newest messages of a room, at most `retention` of them, in sequence order. Sequence
/// numbers in it are contiguous, so lookups are index arithmetic.
#[derive(Debug, Clone)]
pub struct History {
    retention: usize,
    messages: VecDeque<ChatMessage>,
    /// How many of `messages` are not shadowed.
    visible: usize,
    /// The oldest message held for review, if any: the retention counts the messages before it
    /// (what a viewer's replay can show meanwhile), so that a queue behind a held message does
    /// not push them out.
    floor: Option<u64>,
}

impl History {
    /// An empty history keeping at most `retention` messages.
    pub fn new(retention: usize) -> History {
        History {
            retention,
            messages: VecDeque::new(),
            visible: 0,
            floor: None,
        }
    }

    /// Sets the oldest message still held for review (`None`: none is): the replay of members
    /// who are not staff ends before it, so the messages before it are kept for them.
    pub fn set_floor(&mut self, floor: Option<u64>) {
        self.floor = floor;
        self.trim();
    }

    /// Messages everyone sees that count against the retention: all of them, or with a floor
    /// those before it.
    fn counted(&self) -> usize {
        match self.floor {
            None => self.visible,
            Some(floor) => self
                .messages
                .iter()
                .take_while(|m| m.seq() < floor)
                .filter(|m| !m.is_shadowed())
                .count(),
        }
    }

    /// Appends the room's next message (its seq must follow the last one's).
    pub fn push(&mut self, message: ChatMessage) {
        debug_assert!(self
            .messages
            .back()
            .is_none_or(|last| last.seq() + 1 == message.seq()));
        if self.retention == 0 {
            return;
        }
        if !message.is_shadowed() {
            self.visible += 1;
        }
        self.messages.push_back(message);
        self.trim();
    }

    fn trim(&mut self) {
        // Keep the newest `retention` messages that everyone sees, with the shadowed ones among
        // them (a troll's burst must not empty a new viewer's replay), up to a bound.
        while self.counted() > self.retention || self.messages.len() > self.retention * 8 {
            match self.messages.pop_front() {
                Some(m) if !m.is_shadowed() => self.visible -= 1,
                Some(_) => {}
                None => break,
            }
        }
        // Shadowed messages older than every message kept for viewers serve nobody.
        while self.floor.is_none()
            && self.visible == self.retention
            && self.messages.len() > self.retention
            && self.messages.front().is_some_and(ChatMessage::is_shadowed)
        {
            self.messages.pop_front();
        }
    }

    /// Marks message `seq` recalled, if it is held (its body goes).
    pub fn recall(&mut self, seq: u64, recall: &crate::Recall) {
        let Some(first) = self.messages.front().map(ChatMessage::seq) else {
            return;
        };
        let Some(index) = seq.checked_sub(first) else {
            return;
        };
        if let Some(m) = self.messages.get_mut(index as usize) {
            *m = m.recalled_by(recall.clone());
        }
    }

    /// The newest `n` messages, oldest first.
    pub fn newest(&self, n: usize) -> Vec<ChatMessage> {
        let skip = self.messages.len().saturating_sub(n);
        self.messages.iter().skip(skip).cloned().collect()
    }

    /// The newest `n` messages that `viewer` sees (`staff`: the owner or an admin), oldest
    /// first, each as it sees it ([`ChatMessage::seen_by`]), among those before sequence number
    /// `before`: a shadowed message of someone else or one still held for review at `now` is
    /// skipped, not counted, for a member who is not staff.
    pub fn newest_seen_by(
        &self,
        n: usize,
        viewer: &crate::UserId,
        staff: bool,
        now: crate::Timestamp,
        before: u64,
    ) -> Vec<ChatMessage> {
        let mut out: Vec<ChatMessage> = self
            .messages
            .iter()
            .rev()
            .filter(|m| m.seq() < before)
            .filter_map(|m| m.seen_by(viewer, staff, now))
            .take(n)
            .collect();
        out.reverse();
        out
    }

    /// How many messages are retained.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// True if nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// One page of history (110 for a page size of 0).
    pub fn page(&self, q: HistoryQuery) -> Result<ChatCursorResult<ChatMessage>, ChatError> {
        if q.page_size == 0 {
            return Err(ChatError::InvalidParam(
                "page size must be at least 1".into(),
            ));
        }
        let (Some(first), Some(last)) = (self.messages.front(), self.messages.back()) else {
            return Ok(ChatCursorResult {
                data: Vec::new(),
                cursor: None,
            });
        };
        let (first, last) = (first.seq(), last.seq());
        let index = |seq: u64| (seq - first) as usize;
        match q.direction {
            SearchDirection::Up => {
                // Messages with seq < start, newest first.
                let end = match q.start_seq {
                    None => last,
                    Some(s) if s <= first => {
                        return Ok(ChatCursorResult {
                            data: Vec::new(),
                            cursor: None,
                        })
                    }
                    Some(s) => (s - 1).min(last),
                };
                let from = end.saturating_sub(q.page_size as u64 - 1).max(first);
                let data: Vec<ChatMessage> = (from..=end)
                    .rev()
                    .map(|seq| self.messages[index(seq)].clone())
                    .collect();
                let cursor = (from > first).then_some(from);
                Ok(ChatCursorResult { data, cursor })
            }
            SearchDirection::Down => {
                // Messages with seq > start, oldest first.
                let begin = match q.start_seq {
                    None => first,
                    Some(s) if s >= last => {
                        return Ok(ChatCursorResult {
                            data: Vec::new(),
                            cursor: None,
                        })
                    }
                    Some(s) => (s + 1).max(first),
                };
                let to = begin.saturating_add(q.page_size as u64 - 1).min(last);
                let data: Vec<ChatMessage> = (begin..=to)
                    .map(|seq| self.messages[index(seq)].clone())
                    .collect();
                let cursor = (to < last).then_some(to);
                Ok(ChatCursorResult { data, cursor })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MessageBody, MessageData, MessageId, MessagePriority, RoomId, UserId};

    fn msg(seq: u64) -> ChatMessage {
        ChatMessage::new(MessageData {
            msg_id: MessageId::from_u64(seq),
            room_id: RoomId::from_u64(1),
            from: UserId::new("u").unwrap(),
            seq,
            server_time: 0,
            body: MessageBody::Text {
                content: "x".into(),
            },
            attributes: Default::default(),
            priority: MessagePriority::Normal,
            recalled: None,
            shadowed: false,
            held_until: None,
        })
    }

    fn history(retention: usize, count: u64) -> History {
        let mut h = History::new(retention);
        for seq in 1..=count {
            h.push(msg(seq));
        }
        h
    }

    fn seqs(r: &ChatCursorResult<ChatMessage>) -> Vec<u64> {
        r.data.iter().map(ChatMessage::seq).collect()
    }

    fn q(direction: SearchDirection, start_seq: Option<u64>, page_size: u32) -> HistoryQuery {
        HistoryQuery {
            direction,
            start_seq,
            page_size,
        }
    }

    #[test]
    fn retention_keeps_the_newest() {
        let h = history(5, 12);
        assert_eq!(h.len(), 5);
        assert_eq!(
            h.newest(3).iter().map(ChatMessage::seq).collect::<Vec<_>>(),
            [10, 11, 12]
        );
        assert_eq!(h.newest(50).len(), 5);
    }

    #[test]
    fn pages_walk_both_ways_without_gaps_or_duplicates() {
        use SearchDirection::*;
        let h = history(100, 250); // retains 151..=250
        let cases: Vec<(HistoryQuery, Vec<u64>, Option<u64>)> = vec![
            (q(Up, None, 3), vec![250, 249, 248], Some(248)),
            (q(Up, Some(248), 2), vec![247, 246], Some(246)),
            (q(Up, Some(152), 5), vec![151], None),
            (q(Up, Some(151), 5), vec![], None),
            (q(Up, Some(10), 5), vec![], None),
            (q(Up, Some(1_000), 2), vec![250, 249], Some(249)),
            (q(Down, None, 2), vec![151, 152], Some(152)),
            (q(Down, Some(152), 2), vec![153, 154], Some(154)),
            (q(Down, Some(247), 10), vec![248, 249, 250], None),
            (q(Down, Some(250), 10), vec![], None),
            (q(Down, Some(3), 2), vec![151, 152], Some(152)),
        ];
        for (query, expect, cursor) in cases {
            let page = h.page(query).unwrap();
            assert_eq!((seqs(&page), page.cursor), (expect, cursor), "{query:?}");
        }
        let mut walked = Vec::new();
        let mut start = None;
        loop {
            let page = h.page(q(Down, start, 7)).unwrap();
            walked.extend(seqs(&page));
            match page.cursor {
                Some(c) => start = Some(c),
                None => break,
            }
        }
        assert_eq!(walked, (151..=250).collect::<Vec<_>>());
        assert_eq!(h.page(q(Up, None, 0)).unwrap_err().code(), 110);
        assert!(History::new(10)
            .page(q(Up, None, 5))
            .unwrap()
            .data
            .is_empty());
    }
}
