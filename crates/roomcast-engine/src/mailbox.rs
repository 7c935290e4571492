//! A member's bounded inbox: the one queue every delivery to a session goes through.
//!
//! Fan-out pushes one `Arc` per event into each member's mailbox, under a short
//! `parking_lot::Mutex` (no await while held, so not a tokio mutex). The mailbox is bounded:
//! when full, the oldest item is dropped and counted, and the consumer is told how many it
//! missed before its next item, so a slow consumer never slows the room or the other members.
//!
//! A mailbox accepts pushes only while it is *live*: its session is online and something
//! consumes it (a handler or a stream). An offline member gets no pushes, except the notice that
//! it was removed from a room, which is kept until it is back online.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;
use roomcast_model::ChatRoomEvent;

use crate::dispatch::SessionWaker;
use crate::ClientEvent;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Largest queue buffer (in items) a mailbox keeps between batches.
const SMALL_QUEUE: usize = 8;

/// What a push did: whether the mailbox is open, who to wake, and how many of the oldest items
/// it dropped to make room (the caller counts them for its engine).
pub(crate) struct Pushed {
    pub(crate) open: bool,
    pub(crate) notifier: Option<Notifier>,
    pub(crate) dropped: u64,
}

impl Pushed {
    fn new(open: bool, notifier: Option<Notifier>, dropped: u64) -> Pushed {
        Pushed {
            open,
            notifier,
            dropped,
        }
    }
}

/// What a consumer takes out of a mailbox.
#[derive(Debug)]
pub(crate) enum Received {
    /// The oldest `n` items were dropped because the mailbox was full.
    Missed(u64),
    /// The next item.
    Item(ClientEvent),
}

/// Who is waiting for a mailbox to have something.
pub(crate) enum Notifier {
    /// A task polling an event stream.
    Task(Waker),
    /// A session waiting for the dispatch pool. Fan-out shards collect these and hand them to
    /// the pool in batches, one queue operation for many sessions.
    Session(Arc<SessionWaker>),
}

impl Notifier {
    /// Wakes the waiter now (one at a time; shards batch sessions instead).
    pub(crate) fn notify(self) {
        match self {
            Notifier::Task(w) => w.wake(),
            Notifier::Session(s) => s.schedule(),
        }
    }
}

/// The outcome of a session's drain.
pub(crate) enum Drain {
    /// Items were moved out; the number before them that were missed.
    Items(u64),
    /// Nothing queued: the session is registered to be scheduled on the next push.
    Empty,
    /// Closed and empty.
    Closed,
}

/// One queue entry: an event, or events a room sent one member together (the join and exit
/// events a big room holds for its staff), which take one place in the queue: a join storm of
/// thousands costs a staff member a few dozen entries, not thousands.
pub(crate) enum Queued {
    One(ClientEvent),
    Many(Arc<[ClientEvent]>),
}

pub(crate) struct Mailbox {
    id: u64,
    capacity: u32,
    state: Mutex<State>,
}

struct State {
    queue: VecDeque<Queued>,
    missed: u64,
    notifier: Option<Notifier>,
    closed: bool,
    online: bool,
    /// When the session last came online (a [`ticket`]): deliveries made before it are not
    /// queued, even if they reach the mailbox after (a shard running behind).
    online_since: u64,
    consumed: bool,
    /// Removal notices that arrived while offline, delivered when back online (boxed: rare, and
    /// every member pays for the field: 8 bytes boxed against 24 for a bare vector).
    #[allow(clippy::box_collection)]
    deferred: Option<Box<Vec<ClientEvent>>>,
}

/// A point in the engine's delivery order: nanoseconds on the monotonic clock since the first
/// ticket. Rooms stamp each delivery with one as they send it, and a mailbox stamps its
/// coming online with one, so that what was sent while its session was offline is never
/// pushed, however late the shard delivers it.
pub(crate) fn ticket() -> u64 {
    static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    // +1: ticket 0 stays below every delivery's.
    BASE.get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
        + 1
}

/// The ticket of a delivery that is never too old (an event stream's own pushes).
pub(crate) const ANY_TIME: u64 = u64::MAX;

fn is_removal(item: &ClientEvent) -> bool {
    matches!(item, ClientEvent::Room(e) if matches!(**e, ChatRoomEvent::RemovedFromChatRoom { .. }))
}

fn notify(n: Option<Notifier>) {
    if let Some(n) = n {
        n.notify();
    }
}

impl Mailbox {
    /// A mailbox that is online and consumed (a plain queue, as an event stream's).
    pub(crate) fn new(capacity: usize) -> Mailbox {
        Self::with_state(capacity, true, true)
    }

    /// A session's mailbox: online, not consumed until a handler or stream is added.
    pub(crate) fn for_session(capacity: usize) -> Mailbox {
        Self::with_state(capacity, true, false)
    }

    fn with_state(capacity: usize, online: bool, consumed: bool) -> Mailbox {
        Mailbox {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            capacity: capacity.clamp(1, u32::MAX as usize) as u32,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                missed: 0,
                notifier: None,
                closed: false,
                online,
                online_since: 0,
                consumed,
                deferred: None,
            }),
        }
    }

    /// How many items it holds at most.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// A process-unique id, used by fan-out shards to find the mailbox in a room.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Marks the mailbox consumed (a handler or stream now reads it).
    pub(crate) fn set_consumed(&self) {
        let mut state = self.state.lock();
        state.consumed = true;
    }

    /// Sets the session's presence. Going offline drops what is queued; coming back online
    /// queues the removal notices kept meanwhile.
    pub(crate) fn set_online(&self, online: bool) {
        let notifier = {
            let mut state = self.state.lock();
            if online && !state.online {
                state.online_since = ticket();
            }
            state.online = online;
            if online {
                if let Some(deferred) = state.deferred.take() {
                    state.queue.extend(deferred.into_iter().map(Queued::One));
                }
            } else {
                state.queue.clear();
            }
            if state.queue.is_empty() {
                None
            } else {
                state.notifier.take()
            }
        };
        notify(notifier);
    }

    /// Queues `item`; returns how many items it dropped to make room.
    fn enqueue(&self, state: &mut State, item: Queued) -> u64 {
        let mut dropped = 0;
        if state.queue.len() >= self.capacity() {
            dropped = match state.queue.pop_front() {
                Some(Queued::Many(items)) => items.len() as u64,
                _ => 1,
            };
            state.missed += dropped;
            crate::obs::lagged(dropped);
        }
        state.queue.push_back(item);
        dropped
    }

    /// Queues `item`, dropping the oldest if full, and wakes the consumer. `open` is false
    /// only if the mailbox is closed.
    pub(crate) fn push(&self, item: ClientEvent) -> Pushed {
        let mut pushed = self.push_many(std::iter::once((item, ANY_TIME)));
        notify(pushed.notifier.take());
        pushed
    }

    /// Queues `items` under one lock. Returns whether the mailbox is open, the waiting consumer
    /// (if any) for the caller to notify (a shard collects many and notifies them together), and
    /// how many old items were dropped.
    /// Each item comes with the [`ticket`] of its sending: one sent before the session came
    /// online is dropped (it was sent while the session was offline), but removal notices.
    pub(crate) fn push_many(&self, items: impl IntoIterator<Item = (ClientEvent, u64)>) -> Pushed {
        let mut state = self.state.lock();
        if state.closed {
            return Pushed::new(false, None, 0);
        }
        // Queued only while online and consumed (a handler or stream reads it).
        if !(state.online && state.consumed) {
            if !state.online {
                for (item, _) in items {
                    if is_removal(&item) {
                        let deferred = state.deferred.get_or_insert_with(Default::default);
                        if deferred.len() < self.capacity() {
                            deferred.push(item);
                        }
                    }
                }
            }
            return Pushed::new(true, None, 0);
        }
        let before = state.queue.len();
        let mut dropped = 0;
        let since = state.online_since;
        for (item, at) in items {
            if at < since && !is_removal(&item) {
                continue;
            }
            dropped += self.enqueue(&mut state, Queued::One(item));
        }
        if state.queue.len() == before && state.missed == 0 {
            return Pushed::new(true, None, dropped);
        }
        Pushed::new(true, state.notifier.take(), dropped)
    }

    /// Queues `items` as one entry (see [`Queued::Many`]). As [`Mailbox::push_many`] otherwise;
    /// `items` hold no removal notice (those are never batched).
    pub(crate) fn push_batch(&self, items: Arc<[ClientEvent]>, at: u64) -> Pushed {
        let mut state = self.state.lock();
        if state.closed {
            return Pushed::new(false, None, 0);
        }
        debug_assert!(!items.iter().any(is_removal), "removals are never batched");
        if !(state.online && state.consumed) || items.is_empty() || at < state.online_since {
            return Pushed::new(true, None, 0);
        }
        let dropped = self.enqueue(&mut state, Queued::Many(items));
        Pushed::new(true, state.notifier.take(), dropped)
    }

    /// Records that `count` items upstream of this mailbox were dropped, so that the consumer is
    /// told before its next item.
    pub(crate) fn push_missed(&self, count: u64) {
        let notifier = {
            let mut state = self.state.lock();
            if state.closed {
                return;
            }
            state.missed += count;
            state.notifier.take()
        };
        notify(notifier);
    }

    /// Closes the mailbox: pushes are refused, and the consumer ends after what is queued.
    pub(crate) fn close(&self) {
        let notifier = {
            let mut state = self.state.lock();
            state.closed = true;
            state.notifier.take()
        };
        notify(notifier);
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
        match state.queue.pop_front() {
            Some(Queued::One(item)) => return Poll::Ready(Some(Received::Item(item))),
            Some(Queued::Many(items)) => {
                // Unpacked in place: the rest stay at the front, in order.
                let mut items = items.iter().cloned();
                let first = items.next();
                for (at, item) in items.enumerate() {
                    state.queue.insert(at, Queued::One(item));
                }
                if let Some(item) = first {
                    return Poll::Ready(Some(Received::Item(item)));
                }
            }
            None => {}
        }
        if state.closed {
            return Poll::Ready(None);
        }
        state.notifier = Some(Notifier::Task(cx.waker().clone()));
        Poll::Pending
    }

    /// Moves everything queued into `out` (which must be empty), or registers `waiter` to be
    /// scheduled on the next push.
    pub(crate) fn drain(
        &self,
        waiter: &Arc<SessionWaker>,
        out: &mut VecDeque<ClientEvent>,
    ) -> Drain {
        let mut state = self.state.lock();
        if state.queue.is_empty() && state.missed == 0 {
            if state.closed {
                return Drain::Closed;
            }
            state.notifier = Some(Notifier::Session(waiter.clone()));
            return Drain::Empty;
        }
        // Items move to the dispatcher's own buffer; the mailbox keeps its buffer for the next
        // push (no allocation per delivery) unless a burst grew it large, in which case it is
        // released so that an idle member holds at most a small one.
        for queued in state.queue.drain(..) {
            match queued {
                Queued::One(item) => out.push_back(item),
                Queued::Many(items) => out.extend(items.iter().cloned()),
            }
        }
        if state.queue.capacity() > SMALL_QUEUE {
            state.queue = VecDeque::new();
        }
        Drain::Items(std::mem::take(&mut state.missed))
    }
}

#[cfg(test)]
mod tests {
    use roomcast_model::{ChatRoomEvent, LeaveReason, RoomId, UserId};

    use super::*;

    fn item(n: u64) -> ClientEvent {
        ClientEvent::Room(Arc::new(ChatRoomEvent::AllMemberMuteStateChanged {
            operator_reason: None,
            room_id: RoomId::from_u64(n),
            is_all_muted: false,
            operator: None,
        }))
    }

    fn removal(n: u64) -> ClientEvent {
        ClientEvent::Room(Arc::new(ChatRoomEvent::RemovedFromChatRoom {
            operator_reason: None,
            room_id: RoomId::from_u64(n),
            room_name: String::new(),
            participant: UserId::new("u").unwrap(),
            reason: LeaveReason::Offline,
            operator: None,
        }))
    }

    fn next(mb: &Mailbox) -> Option<Received> {
        let mut cx = Context::from_waker(Waker::noop());
        match mb.poll_recv(&mut cx) {
            Poll::Ready(r) => r,
            Poll::Pending => panic!("pending"),
        }
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
            assert!(mb.push(item(n)).open);
        }
        assert!(matches!(next(&mb), Some(Received::Missed(2))));
        assert_eq!(room_of(next(&mb)), 2);
        assert_eq!(room_of(next(&mb)), 3);
        assert_eq!(room_of(next(&mb)), 4);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(mb.poll_recv(&mut cx).is_pending());
        mb.close();
        assert!(!mb.push(item(9)).open);
        assert!(matches!(mb.poll_recv(&mut cx), Poll::Ready(None)));
    }

    #[test]
    fn only_a_live_mailbox_queues() {
        let mb = Mailbox::for_session(10);
        mb.push(item(1));
        mb.set_consumed();
        mb.push(item(2));
        mb.set_online(false);
        mb.push(item(3));
        mb.push(removal(4));
        mb.set_online(true);
        mb.push(item(5));
        assert_eq!(
            room_of(next(&mb)),
            4,
            "offline dropped 2 and 3, kept the removal"
        );
        assert_eq!(room_of(next(&mb)), 5);
    }

    /// A delivery sent while the session was offline and delivered late (its shard ran behind)
    /// is not pushed once the session is back; a removal notice is; what was sent after the
    /// return is.
    #[test]
    fn what_was_sent_while_offline_stays_out_however_late_it_arrives() {
        let mb = Mailbox::for_session(10);
        mb.set_consumed();
        mb.set_online(false);
        let while_away = ticket();
        mb.set_online(true);
        let after = ticket();
        mb.push_many([
            (item(1), while_away),
            (removal(2), while_away),
            (item(3), after),
        ]);
        mb.push_batch(Arc::from(vec![item(4)]), while_away);
        assert_eq!(room_of(next(&mb)), 2, "the removal notice is kept");
        assert_eq!(room_of(next(&mb)), 3);
        assert_eq!(mb.state.lock().queue.len(), 0, "the late batch was dropped");
    }
}
