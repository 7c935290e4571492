//! Delivery shards: how one event reaches every member of a room without one actor message,
//! task or clone per member.
//!
//! There is one shard thread per core. Each member's mailbox belongs to exactly one shard
//! (`mailbox id % shards`), and each shard keeps, per room, the plain list of its members'
//! mailboxes. A room actor hands one job per shard for a broadcast (one `Arc` of the event each);
//! the shard walks its slice of the room and pushes the `Arc` into each mailbox.
//!
//! **Ordering invariant:** every delivery to a member, broadcast or targeted, goes through that
//! member's one shard, and a room actor sends its jobs in the order it applied its commands, over
//! FIFO channels. So a member sees a room's events in the room's order.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;
use roomcast_model::RoomId;

use crate::dispatch::{DispatchPool, WakeBatch};
use crate::mailbox::ticket;
use crate::session::Session;
use crate::ClientEvent;

enum Job {
    Add {
        room: RoomId,
        member: Arc<Session>,
    },
    Remove {
        room: RoomId,
        mailbox_id: u64,
    },
    Broadcast {
        room: RoomId,
        item: ClientEvent,
        except: Except,
        at: u64,
    },
    SendTo {
        member: Arc<Session>,
        items: Vec<ClientEvent>,
        at: u64,
    },
    SendBatch {
        member: Arc<Session>,
        items: Arc<[ClientEvent]>,
        at: u64,
    },
    DropRoom {
        room: RoomId,
    },
    Stop,
}

/// How many members of one room each shard holds, kept by the room's actor as it adds and
/// removes them, so that a broadcast goes only to the shards that have someone to deliver to.
#[derive(Debug)]
pub(crate) struct RoomShards(Box<[u32]>);

/// A handle to the shards. Cloning is shallow.
#[derive(Clone)]
pub(crate) struct Fanout {
    senders: Arc<[mpsc::Sender<Job>]>,
}

/// Owns the shard threads, to join them at shutdown.
pub(crate) struct FanoutThreads {
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Fanout {
    pub(crate) fn start(
        shards: usize,
        pool: Arc<DispatchPool>,
    ) -> std::io::Result<(Fanout, FanoutThreads)> {
        let mut senders = Vec::with_capacity(shards.max(1));
        let mut threads = Vec::with_capacity(shards.max(1));
        for n in 0..shards.max(1) {
            let (tx, rx) = mpsc::channel();
            senders.push(tx);
            let pool = pool.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("roomcast-fanout-{n}"))
                    .spawn(move || run_shard(rx, &pool))?,
            );
        }
        Ok((
            Fanout {
                senders: senders.into(),
            },
            FanoutThreads {
                threads: Mutex::new(threads),
            },
        ))
    }

    fn shard_of(&self, mailbox_id: u64) -> &mpsc::Sender<Job> {
        &self.senders[self.index_of(mailbox_id)]
    }

    fn send(tx: &mpsc::Sender<Job>, job: Job) {
        // A send fails only once the shards are stopping (engine shutdown); the delivery is moot.
        let _ = tx.send(job);
    }

    fn index_of(&self, mailbox_id: u64) -> usize {
        (mailbox_id % self.senders.len() as u64) as usize
    }

    /// A room's count of members per shard, all zero.
    pub(crate) fn room_shards(&self) -> RoomShards {
        RoomShards(vec![0; self.senders.len()].into_boxed_slice())
    }

    pub(crate) fn add(&self, room: RoomId, member: Arc<Session>, shards: &mut RoomShards) {
        let at = self.index_of(member.mailbox().id());
        shards.0[at] = shards.0[at].saturating_add(1);
        Self::send(&self.senders[at], Job::Add { room, member });
    }

    pub(crate) fn remove(&self, room: RoomId, member: &Session, shards: &mut RoomShards) {
        let mailbox_id = member.mailbox().id();
        let at = self.index_of(mailbox_id);
        shards.0[at] = shards.0[at].saturating_sub(1);
        Self::send(&self.senders[at], Job::Remove { room, mailbox_id });
    }

    /// Delivers `item` to every member of `room` but the mailboxes in `except`: a job for each
    /// shard that holds members of the room (a small room's members often sit on one shard;
    /// the others are not woken).
    pub(crate) fn broadcast(
        &self,
        room: RoomId,
        item: ClientEvent,
        except: Except,
        shards: &RoomShards,
    ) {
        let at = ticket();
        let with_members = self
            .senders
            .iter()
            .zip(shards.0.iter())
            .filter(|(_, n)| **n > 0);
        for (tx, _) in with_members {
            Self::send(
                tx,
                Job::Broadcast {
                    room,
                    item: item.clone(),
                    except: except.clone(),
                    at,
                },
            );
        }
    }

    /// Delivers `items` to one member, in order with that member's broadcasts.
    pub(crate) fn send_to(&self, member: Arc<Session>, items: Vec<ClientEvent>) {
        if !items.is_empty() {
            let shard = self.shard_of(member.mailbox().id());
            let at = ticket();
            Self::send(shard, Job::SendTo { member, items, at });
        }
    }

    /// Delivers `items` to one member as one entry of its queue (see `mailbox::Queued::Many`), in
    /// order with that member's other deliveries.
    pub(crate) fn send_batch_to(&self, member: Arc<Session>, items: Arc<[ClientEvent]>) {
        if !items.is_empty() {
            let shard = self.shard_of(member.mailbox().id());
            let at = ticket();
            Self::send(shard, Job::SendBatch { member, items, at });
        }
    }

    pub(crate) fn drop_room(&self, room: RoomId) {
        for tx in self.senders.iter() {
            Self::send(tx, Job::DropRoom { room });
        }
    }
}

impl Fanout {
    /// Stops every shard after the jobs already queued (idempotent).
    pub(crate) fn stop(&self) {
        for tx in self.senders.iter() {
            Self::send(tx, Job::Stop);
        }
    }
}

impl FanoutThreads {
    /// Waits for the shard threads to end (after [`Fanout::stop`]).
    pub(crate) fn join(&self) {
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
    }
}

#[derive(Default)]
struct RoomSlice {
    members: Vec<Arc<Session>>,
    index: HashMap<u64, usize>,
}

/// Most jobs a shard takes off its channel at once.
const BATCH: usize = 1024;

/// The mailboxes a broadcast skips: at most two (the member who acted and the one it acted
/// on), by id; 0 is no mailbox. A message released after its hold for review also skips the
/// staff, who had it at once: a list shared by the whole broadcast.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Except([u64; 2], Option<Arc<[u64]>>);

impl Except {
    /// Skips nobody.
    pub(crate) const NONE: Except = Except([0, 0], None);

    /// Skips the mailboxes of `ids` (at most two are kept).
    pub(crate) fn of(ids: impl IntoIterator<Item = u64>) -> Except {
        let mut e = [0; 2];
        for (slot, id) in e.iter_mut().zip(ids) {
            *slot = id;
        }
        Except(e, None)
    }

    /// Skips the mailboxes of `more` too (the room's staff).
    pub(crate) fn and(mut self, more: Arc<[u64]>) -> Except {
        self.1 = Some(more);
        self
    }

    /// Skips the mailbox `id` too (a staff member who joined during a hold and had the message
    /// in its join replay).
    pub(crate) fn also(mut self, id: u64) -> Except {
        let mut more: Vec<u64> = self.1.as_deref().unwrap_or_default().to_vec();
        more.push(id);
        self.1 = Some(more.into());
        self
    }

    pub(crate) fn contains(&self, id: u64) -> bool {
        self.0[0] == id || self.0[1] == id || self.1.as_ref().is_some_and(|m| m.contains(&id))
    }
}

/// A run of consecutive broadcasts to one room, delivered to each member under one lock.
struct Run {
    room: RoomId,
    items: Vec<(ClientEvent, Except, u64)>,
}

fn flush(
    rooms: &HashMap<RoomId, RoomSlice>,
    run: &mut Option<Run>,
    wakes: &mut WakeBatch,
    pool: &DispatchPool,
) {
    let Some(run) = run.take() else {
        return;
    };
    let Some(slice) = rooms.get(&run.room) else {
        return;
    };
    let mut delivered = 0u64;
    if let [(item, except, at)] = run.items.as_slice() {
        for member in &slice.members {
            let mailbox = member.mailbox();
            if !except.contains(mailbox.id()) {
                wakes.add(
                    mailbox.push_many(std::iter::once((item.clone(), *at))),
                    pool,
                );
                delivered += 1;
            }
        }
    } else {
        for member in &slice.members {
            let mailbox = member.mailbox();
            let id = mailbox.id();
            let mine = |(_, except, _): &&(ClientEvent, Except, u64)| !except.contains(id);
            // Counted here, not as the mailbox takes them: a mailbox that is not live takes
            // none (as in the single-item case above, a delivery is a push to a member).
            delivered += run.items.iter().filter(mine).count() as u64;
            let items = run
                .items
                .iter()
                .filter(mine)
                .map(|(item, _, at)| (item.clone(), *at));
            wakes.add(mailbox.push_many(items), pool);
        }
    }
    crate::obs::delivered(delivered);
}

fn run_shard(rx: mpsc::Receiver<Job>, pool: &DispatchPool) {
    let mut rooms: HashMap<RoomId, RoomSlice> = HashMap::new();
    let mut jobs: Vec<Job> = Vec::with_capacity(BATCH);
    let mut run: Option<Run> = None;
    let mut wakes = WakeBatch::default();
    while let Ok(first) = rx.recv() {
        jobs.push(first);
        while jobs.len() < BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        for job in jobs.drain(..) {
            match job {
                Job::Broadcast {
                    room,
                    item,
                    except,
                    at,
                } => {
                    match &mut run {
                        Some(r) if r.room == room => r.items.push((item, except, at)),
                        _ => {
                            flush(&rooms, &mut run, &mut wakes, pool);
                            run = Some(Run {
                                room,
                                items: vec![(item, except, at)],
                            });
                        }
                    }
                    continue;
                }
                other => {
                    flush(&rooms, &mut run, &mut wakes, pool);
                    if !apply(&mut rooms, other, &mut wakes, pool) {
                        wakes.flush(pool);
                        return;
                    }
                }
            }
        }
        flush(&rooms, &mut run, &mut wakes, pool);
        // Every session this batch gave something to goes to the pool now, in a few queue
        // operations instead of one per member.
        wakes.flush(pool);
    }
}

/// Applies a job; false for `Stop`.
fn apply(
    rooms: &mut HashMap<RoomId, RoomSlice>,
    job: Job,
    wakes: &mut WakeBatch,
    pool: &DispatchPool,
) -> bool {
    match job {
        Job::Add { room, member } => {
            let slice = rooms.entry(room).or_default();
            let id = member.mailbox().id();
            if let std::collections::hash_map::Entry::Vacant(v) = slice.index.entry(id) {
                v.insert(slice.members.len());
                slice.members.push(member);
            }
        }
        Job::Remove { room, mailbox_id } => {
            if let Some(slice) = rooms.get_mut(&room) {
                if let Some(at) = slice.index.remove(&mailbox_id) {
                    slice.members.swap_remove(at);
                    if let Some(moved) = slice.members.get(at) {
                        slice.index.insert(moved.mailbox().id(), at);
                    }
                }
                if slice.members.is_empty() {
                    rooms.remove(&room);
                }
            }
        }
        Job::SendTo { member, items, at } => {
            let items = items.into_iter().map(|item| (item, at));
            wakes.add(member.mailbox().push_many(items), pool);
        }
        Job::SendBatch { member, items, at } => {
            wakes.add(member.mailbox().push_batch(items, at), pool);
        }
        Job::DropRoom { room } => {
            rooms.remove(&room);
        }
        Job::Broadcast {
            room,
            item,
            except,
            at,
        } => {
            flush(
                rooms,
                &mut Some(Run {
                    room,
                    items: vec![(item, except, at)],
                }),
                wakes,
                pool,
            );
        }
        Job::Stop => return false,
    }
    true
}
