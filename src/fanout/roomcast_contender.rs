//! roomcast itself as a contender: one room, one sender, `members` logged-in members each with
//! a `ChatEventHandler` (the consumer a user's code would register).

use std::sync::Arc;

use parking_lot::Mutex;
use roomcast::{
    ChatClient, ChatEventHandler, ChatMessage, CreateChatRoomOptions, Engine, EventStream,
    OutgoingMessage, RoomId,
};

use super::{Consumer, Contender, Probe};

/// The consumer slot of one member: swapped for a fresh one before each run.
#[derive(Default)]
struct Slot {
    current: Mutex<Option<(Arc<Consumer>, u64)>>,
}

struct Counting(Arc<Slot>);

impl ChatEventHandler for Counting {
    fn on_messages_received(&self, messages: &[ChatMessage]) {
        let slot = self.0.current.lock();
        if let Some((consumer, base_seq)) = &*slot {
            for m in messages {
                consumer.received((m.seq() - base_seq - 1) as usize);
            }
        }
    }

    fn on_events_missed(&self, count: u64) {
        if let Some((consumer, _)) = &*self.0.current.lock() {
            consumer.lost(count);
        }
    }
}

/// roomcast with `members` online members.
pub struct Roomcast {
    rt: tokio::runtime::Runtime,
    engine: Engine,
    room: RoomId,
    sender: ChatClient,
    /// The consumer slot of each healthy member.
    slots: Vec<Arc<Slot>>,
    _clients: Vec<ChatClient>,
    /// Streams of stalled members, held and never read.
    _stalled: Vec<EventStream>,
    last_seq: u64,
    await_each: bool,
    pending: Vec<tokio::task::JoinHandle<Result<ChatMessage, roomcast::ChatError>>>,
}

impl std::fmt::Debug for Roomcast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Roomcast").finish_non_exhaustive()
    }
}

impl Roomcast {
    /// An engine on a temporary store with one room of `members` members, each with a counting
    /// handler, except every `stall_every`-th member (if set), whose only consumer is a stream
    /// nobody reads. The per-room delivery threshold is off (the benchmark measures fan-out, not
    /// the limiter); `capacity` is each member's queue.
    pub fn new(members: usize, capacity: usize, stall_every: Option<usize>) -> Self {
        Self::with_store(members, capacity, stall_every, None)
    }

    /// As [`Roomcast::new`], on a data directory (durable sends, group commit) if `dir` is set.
    pub fn with_store(
        members: usize,
        capacity: usize,
        stall_every: Option<usize>,
        dir: Option<&std::path::Path>,
    ) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            // unwrap: a benchmark that cannot start a runtime has nothing to measure.
            .unwrap();
        let mut limits = crate::harness_limits();
        limits.max_users_cap = 1_000_000;
        limits.join_replay_count = 0;
        let (engine, room, sender, slots, clients, stalled) = rt.block_on(async {
            let mut builder = Engine::builder()
                .limits(limits)
                .event_queue_capacity(capacity);
            if let Some(dir) = dir {
                builder = builder.data_dir(dir);
            }
            let engine = builder.build().await.unwrap();
            engine.add_super_admin("streamer").await.unwrap();
            let sender = engine.login("streamer").await.unwrap();
            let room = sender
                .chat_room_manager()
                .create_chat_room(
                    CreateChatRoomOptions::new("bench").with_max_users(members as u32 + 1),
                )
                .await
                .unwrap()
                .room_id;
            let mut slots = Vec::with_capacity(members);
            let mut clients = Vec::with_capacity(members);
            let mut stalled = Vec::new();
            for i in 0..members {
                let c = engine.login(format!("viewer{i}")).await.unwrap();
                if stall_every.is_some_and(|k| i % k == 0) {
                    stalled.push(c.events());
                } else {
                    let slot = Arc::new(Slot::default());
                    c.chat_manager()
                        .add_event_handler("count", Counting(slot.clone()));
                    slots.push(slot);
                }
                c.chat_room_manager().join_chat_room(&room).await.unwrap();
                clients.push(c);
            }
            (engine, room, sender, slots, clients, stalled)
        });
        Roomcast {
            rt,
            engine,
            room,
            sender,
            slots,
            _clients: clients,
            _stalled: stalled,
            last_seq: 0,
            await_each: false,
            pending: Vec::new(),
        }
    }

    /// Makes the publisher wait for each send's answer before the next (one message in flight,
    /// the worst case for batching), instead of starting them all.
    pub fn awaiting_each_send(mut self) -> Self {
        self.await_each = true;
        self
    }

    /// The engine, for stats.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Members whose consumer is a handler (the healthy ones): the consumers of a run.
    pub fn healthy(&self) -> usize {
        self.slots.len()
    }

    /// Heap bytes per member that this harness (not the engine) holds: the `ChatClient` handle
    /// and its options, the counting handler and its slot, and the vectors' entries.
    pub fn harness_bytes_per_member(&self) -> usize {
        // The client's two Arc blocks (its guard: header + engine handle + session pointer; its
        // options: header + two flags, padded), the counting handler in its Arc, the slot in its
        // Arc, and this harness's vector entries.
        let client = (16 + 16) + (16 + 8);
        let handler = (16 + 8) + (16 + std::mem::size_of::<Slot>());
        client + handler + std::mem::size_of::<ChatClient>() + std::mem::size_of::<Arc<Slot>>()
    }

    /// Members whose stream is never read.
    pub fn stalled(&self) -> usize {
        self._stalled.len()
    }
}

impl Contender for Roomcast {
    fn name(&self) -> &'static str {
        if self.await_each {
            "roomcast, publisher awaits each send"
        } else {
            "roomcast"
        }
    }

    fn prepare(&mut self, probe: &Arc<Probe>) {
        for slot in &self.slots {
            *slot.current.lock() = Some((Consumer::new(probe.clone()), self.last_seq));
        }
    }

    /// Starts the send and returns without waiting for the room's answer, as the baselines'
    /// publishers do: a burst is many messages arriving at the room at once.
    fn publish(&mut self, index: usize) {
        let chat = self.sender.chat_manager();
        let message = OutgoingMessage::text(self.room, format!("message {index}"));
        self.pending.push(
            self.rt
                .spawn(async move { chat.send_message(message).await }),
        );
    }

    fn finish(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        let last = self.rt.block_on(async {
            let mut last = self.last_seq;
            for p in pending {
                // unwrap: the threshold is off and the sender is the owner; a failure is a bug.
                last = last.max(p.await.unwrap().unwrap().seq());
            }
            last
        });
        self.last_seq = last;
    }
}

impl Drop for Roomcast {
    fn drop(&mut self) {
        self.rt.block_on(self.engine.shutdown());
    }
}
