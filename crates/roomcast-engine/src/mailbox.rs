//! A member's bounded inbox: the one queue every delivery to a session goes through.
//!
//! Fan-out pushes one `Arc` per event into each member's mailbox, under a short
//! `parking_lot::Mutex` (no await while held, so not a tokio mutex). The mailbox is bounded:
//! when full, the oldest item is dropped and counted, and the consumer is told how many it
//! missed before its next item, so a slow consumer never slows the room or the other members.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

use crate::ClientEvent;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// What a consumer takes out of a mailbox.
#[derive(Debug)]
pub(crate) enum Received {
    /// The oldest `n` items were dropped because the mailbox was full.
    Missed(u64),
    /// The next item.
    Item(ClientEvent),
}

pub(crate) struct Mailbox {
    id: u64,
    capacity: usize,
    state: Mutex<State>,
}

struct State {
    queue: VecDeque<ClientEvent>,
    missed: u64,
    waker: Option<Waker>,
    closed: bool,
}

impl Mailbox {
    pub(crate) fn new(capacity: usize) -> Mailbox {
        Mailbox {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            capacity: capacity.max(1),
            state: Mutex::new(State {
                queue: VecDeque::new(),
                missed: 0,
                waker: None,
                closed: false,
            }),
        }
    }

    /// A process-unique id, used by fan-out shards to find the mailbox in a room.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Queues `item`, dropping the oldest if full. False if the mailbox is closed.
    pub(crate) fn push(&self, item: ClientEvent) -> bool {
        let waker = {
            let mut state = self.state.lock();
            if state.closed {
                return false;
            }
            if state.queue.len() >= self.capacity {
                state.queue.pop_front();
                state.missed += 1;
            }
            state.queue.push_back(item);
            state.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// Records that `count` items upstream of this mailbox were dropped, so that the consumer is
    /// told before its next item.
    pub(crate) fn push_missed(&self, count: u64) {
        let waker = {
            let mut state = self.state.lock();
            if state.closed {
                return;
            }
            state.missed += count;
            state.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Closes the mailbox: pushes are refused, and the consumer ends after what is queued.
    pub(crate) fn close(&self) {
        let waker = {
            let mut state = self.state.lock();
            state.closed = true;
            state.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// Takes the next item (or the missed count first). `None` once closed and empty.
    pub(crate) fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Received>> {
        let mut state = self.state.lock();
        if state.missed > 0 {
            return Poll::Ready(Some(Received::Missed(std::mem::take(&mut state.missed))));
        }
        if let Some(item) = state.queue.pop_front() {
            return Poll::Ready(Some(Received::Item(item)));
        }
        if state.closed {
            return Poll::Ready(None);
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Moves everything queued into `out` (which must be empty) and returns how many items were
    /// missed before them. `None` once closed and empty.
    pub(crate) fn poll_drain(
        &self,
        cx: &mut Context<'_>,
        out: &mut VecDeque<ClientEvent>,
    ) -> Poll<Option<u64>> {
        let mut state = self.state.lock();
        if state.queue.is_empty() && state.missed == 0 {
            if state.closed {
                return Poll::Ready(None);
            }
            state.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        std::mem::swap(&mut state.queue, out);
        Poll::Ready(Some(std::mem::take(&mut state.missed)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use roomcast_model::{ChatRoomEvent, RoomId};

    use super::*;

    fn item(n: u64) -> ClientEvent {
        ClientEvent::Room(Arc::new(ChatRoomEvent::AllMemberMuteStateChanged {
            room_id: RoomId::from_u64(n),
            is_all_muted: false,
        }))
    }

    fn room_of(r: Option<Received>) -> u64 {
        match r {
            Some(Received::Item(ClientEvent::Room(e))) => e.room_id().as_u64(),
            other => panic!("expected an item, got {other:?}"),
        }
    }

    #[test]
    fn overflow_drops_oldest_and_reports_the_count_first() {
        let mb = Mailbox::new(3);
        for n in 0..5 {
            assert!(mb.push(item(n)));
        }
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let next = |cx: &mut Context<'_>| match mb.poll_recv(cx) {
            Poll::Ready(r) => r,
            Poll::Pending => panic!("pending"),
        };
        assert!(matches!(next(&mut cx), Some(Received::Missed(2))));
        assert_eq!(room_of(next(&mut cx)), 2);
        assert_eq!(room_of(next(&mut cx)), 3);
        assert_eq!(room_of(next(&mut cx)), 4);
        assert!(mb.poll_recv(&mut cx).is_pending());
        mb.close();
        assert!(!mb.push(item(9)));
        assert!(matches!(mb.poll_recv(&mut cx), Poll::Ready(None)));
    }
}
