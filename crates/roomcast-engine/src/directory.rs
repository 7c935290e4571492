//! The room directory: which rooms exist, their summaries, and their live actor if any.
//!
//! Written only by the supervisor (insert, remove) and by each room's own actor (its summary and
//! member count); read by every caller, so that finding a room's actor does not cost a trip
//! through the supervisor. The map is behind a `parking_lot::RwLock` (read-mostly, never held
//! across an await).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use actix::Addr;
use parking_lot::{Mutex, RwLock};
use roomcast_model::{ChatRoom, ChatRoomPermissionType, RoomId, UserId};

use crate::room_actor::RoomActor;

pub(crate) struct RoomEntry {
    pub(crate) id: RoomId,
    /// The room as the public list shows it (no caller role; member count kept apart).
    summary: Mutex<ChatRoom>,
    member_count: AtomicU32,
    /// The live actor and the generation it was spawned with.
    actor: Mutex<Option<(u64, Addr<RoomActor>)>>,
    destroyed: AtomicBool,
    /// Calls holding the live actor's address (see [`RoomEntry::enter`]): a room does not
    /// hibernate while one is in flight.
    in_flight: AtomicU32,
    /// When a call last entered the room (engine clock).
    last_active: AtomicI64,
    /// The room left memory while idle; its next actor is a wake-up, not a recovery.
    hibernated: AtomicBool,
    /// The members of a sleeping room, in the order they joined.
    sleeping_members: Mutex<Vec<UserId>>,
    /// Actors started for the room so far. A load read from the store while none ran is
    /// fresh only if none started since (see `supervisor::Spawn`).
    starts: AtomicU64,
}

/// A call's hold on a room's live actor: while it lives the room does not hibernate, so the
/// message it sends is handled by that actor.
pub(crate) struct CallGuard(Arc<RoomEntry>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl RoomEntry {
    pub(crate) fn new(mut snapshot: ChatRoom) -> Arc<RoomEntry> {
        snapshot.permission_type = ChatRoomPermissionType::None;
        Arc::new(RoomEntry {
            id: snapshot.room_id,
            member_count: AtomicU32::new(snapshot.member_count),
            summary: Mutex::new(snapshot),
            actor: Mutex::new(None),
            destroyed: AtomicBool::new(false),
            in_flight: AtomicU32::new(0),
            last_active: AtomicI64::new(0),
            hibernated: AtomicBool::new(false),
            sleeping_members: Mutex::new(Vec::new()),
            starts: AtomicU64::new(0),
        })
    }

    /// The live actor, held for a call made now (engine clock); `None` if the room has none.
    pub(crate) fn enter(self: &Arc<Self>, now: i64) -> Option<(Addr<RoomActor>, CallGuard)> {
        let actor = self.actor.lock();
        let addr = actor
            .as_ref()
            .filter(|(_, addr)| addr.connected())
            .map(|(_, addr)| addr.clone())?;
        // Under the actor's lock: `hibernate` sees either this call or no actor to give.
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.last_active.fetch_max(now, Ordering::AcqRel);
        Some((addr, CallGuard(self.clone())))
    }

    /// Lets the actor of `generation` go if no call holds it and none entered since
    /// `idle_before`; true if it may stop (the next call loads the room again).
    pub(crate) fn hibernate(
        &self,
        generation: u64,
        idle_before: i64,
        members: Vec<UserId>,
    ) -> bool {
        let mut actor = self.actor.lock();
        let mine = actor.as_ref().is_some_and(|(g, _)| *g == generation);
        if !mine
            || self.in_flight.load(Ordering::Acquire) > 0
            || self.last_active.load(Ordering::Acquire) > idle_before
        {
            return false;
        }
        *actor = None;
        *self.sleeping_members.lock() = members;
        self.hibernated.store(true, Ordering::SeqCst);
        true
    }

    /// Once (for the actor that wakes the room): `Some` with the members it had, in join
    /// order, if the room hibernated.
    pub(crate) fn take_hibernated(&self) -> Option<Vec<UserId>> {
        if self.hibernated.swap(false, Ordering::SeqCst) {
            Some(std::mem::take(&mut *self.sleeping_members.lock()))
        } else {
            None
        }
    }

    /// The members of the room, in join order, if it is not in memory: asleep (hibernated,
    /// not woken yet), or never loaded since the engine started (then it has none: members
    /// come back only through a session that joins it, which loads it).
    pub(crate) fn sleeping(&self) -> Option<Vec<UserId>> {
        let actor = self.actor.lock();
        if actor.is_some() {
            return None;
        }
        if self.hibernated.load(Ordering::SeqCst) {
            return Some(self.sleeping_members.lock().clone());
        }
        (self.starts.load(Ordering::SeqCst) == 0).then(Vec::new)
    }

    /// True if the room has a live actor that no call entered since `idle_before`.
    fn idle_since(&self, idle_before: i64) -> Option<Addr<RoomActor>> {
        if self.last_active.load(Ordering::Acquire) > idle_before {
            return None;
        }
        self.live_actor()
    }

    pub(crate) fn summary(&self) -> ChatRoom {
        let mut room = self.summary.lock().clone();
        room.member_count = self.member_count.load(Ordering::Relaxed);
        room
    }

    /// Sets the summary; true if the name changed.
    fn set_summary(&self, mut snapshot: ChatRoom) -> bool {
        snapshot.permission_type = ChatRoomPermissionType::None;
        let mut summary = self.summary.lock();
        let renamed = summary.name != snapshot.name;
        *summary = snapshot;
        renamed
    }

    /// True if the name contains `filter` (already in lower case), ignoring case.
    fn name_contains(&self, filter: &str) -> bool {
        contains_ignoring_case(&self.summary.lock().name, filter)
    }

    pub(crate) fn set_member_count(&self, n: usize) {
        self.member_count.store(n as u32, Ordering::Relaxed);
    }

    /// How many actors were started for the room so far.
    pub(crate) fn starts(&self) -> u64 {
        self.starts.load(Ordering::SeqCst)
    }

    pub(crate) fn live_actor(&self) -> Option<Addr<RoomActor>> {
        self.actor
            .lock()
            .as_ref()
            .filter(|(_, addr)| addr.connected())
            .map(|(_, addr)| addr.clone())
    }

    /// Sets the live actor, started now (engine clock).
    pub(crate) fn set_actor(&self, generation: u64, addr: Addr<RoomActor>, now: i64) {
        *self.actor.lock() = Some((generation, addr));
        self.starts.fetch_add(1, Ordering::SeqCst);
        self.last_active.fetch_max(now, Ordering::AcqRel);
    }

    /// Forgets the actor if it is still the one of `generation`; true if it was.
    pub(crate) fn clear_actor(&self, generation: u64) -> bool {
        let mut actor = self.actor.lock();
        if actor.as_ref().is_some_and(|(g, _)| *g == generation) {
            *actor = None;
            true
        } else {
            false
        }
    }

    pub(crate) fn is_destroyed(&self) -> bool {
        self.destroyed.load(Ordering::SeqCst)
    }
}

/// True if `name` contains `lower` (a lower-cased filter), ignoring case. ASCII names are
/// compared in place (no allocation per room: the walk of a filtered listing reads every name);
/// others are lower-cased first, as `str::to_lowercase` does.
fn contains_ignoring_case(name: &str, lower: &str) -> bool {
    if name.is_ascii() && lower.is_ascii() {
        let (name, lower) = (name.as_bytes(), lower.as_bytes());
        if lower.is_empty() {
            return true;
        }
        return name.windows(lower.len()).any(|w| {
            w.iter()
                .zip(lower)
                .all(|(a, b)| a.to_ascii_lowercase() == *b)
        });
    }
    name.to_lowercase().contains(lower)
}

/// How many filtered listings are remembered (see [`Directory::page`]).
const FILTER_CACHE: usize = 16;

#[derive(Default)]
struct Rooms {
    by_id: HashMap<RoomId, Arc<RoomEntry>>,
    /// Every room's id, oldest first: ids grow with creation, so a room created now is pushed
    /// at the end, and a page of the newest-first list is a slice read from the end.
    order: Vec<RoomId>,
    /// Rooms marked destroyed and not removed yet (they are skipped and not counted).
    destroyed: usize,
}

/// A filtered listing, remembered until a room is created, removed or renamed: paging through
/// the rooms that match a filter walks the rooms once, not once per page.
struct Filtered {
    filter: String,
    version: u64,
    /// The matching rooms, newest first.
    ids: Arc<Vec<RoomId>>,
}

#[derive(Default)]
pub(crate) struct Directory {
    rooms: RwLock<Rooms>,
    /// Bumped whenever the set of rooms or a name changes.
    version: AtomicU64,
    filtered: Mutex<VecDeque<Filtered>>,
}

impl Directory {
    pub(crate) fn get(&self, id: RoomId) -> Option<Arc<RoomEntry>> {
        self.rooms.read().by_id.get(&id).cloned()
    }

    pub(crate) fn insert(&self, entry: Arc<RoomEntry>) {
        let mut rooms = self.rooms.write();
        let id = entry.id;
        if rooms.by_id.insert(id, entry).is_none() {
            // New rooms have the largest id; rooms loaded at start come in id order too. Any
            // other order still lands sorted.
            match rooms.order.last() {
                Some(last) if *last > id => {
                    let at = rooms.order.partition_point(|r| *r < id);
                    rooms.order.insert(at, id);
                }
                _ => rooms.order.push(id),
            }
        }
        self.version.fetch_add(1, Ordering::Release);
    }

    pub(crate) fn remove(&self, id: RoomId) {
        let mut rooms = self.rooms.write();
        if let Some(entry) = rooms.by_id.remove(&id) {
            if entry.is_destroyed() {
                rooms.destroyed = rooms.destroyed.saturating_sub(1);
            }
            if let Ok(at) = rooms.order.binary_search(&id) {
                rooms.order.remove(at);
            }
        }
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Marks `entry` destroyed: the list skips it from now on.
    pub(crate) fn mark_destroyed(&self, entry: &RoomEntry) {
        let mut rooms = self.rooms.write();
        if !entry.destroyed.swap(true, Ordering::SeqCst) && rooms.by_id.contains_key(&entry.id) {
            rooms.destroyed += 1;
        }
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Sets `entry`'s summary; a new name changes filtered listings, so a rename happens
    /// under the rooms' lock (a filtered page is one snapshot: its rooms match and its total
    /// counts them).
    pub(crate) fn set_summary(&self, entry: &RoomEntry, snapshot: ChatRoom) {
        let renamed = entry.summary.lock().name != snapshot.name;
        if renamed {
            let _rooms = self.rooms.write();
            entry.set_summary(snapshot);
            self.version.fetch_add(1, Ordering::Release);
        } else {
            entry.set_summary(snapshot);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.rooms.read().by_id.len()
    }

    /// The live actors of rooms no call entered since `idle_before` (engine clock): candidates
    /// to hibernate (each checks itself).
    pub(crate) fn idle_actors(&self, idle_before: i64) -> Vec<Addr<RoomActor>> {
        self.rooms
            .read()
            .by_id
            .values()
            .filter_map(|e| e.idle_since(idle_before))
            .collect()
    }

    /// The rooms a broadcast goes to: in memory (a live actor), not destroyed, with at least
    /// one member.
    pub(crate) fn active_rooms(&self) -> Vec<RoomId> {
        self.rooms
            .read()
            .by_id
            .values()
            .filter(|e| {
                !e.is_destroyed()
                    && e.member_count.load(Ordering::Relaxed) > 0
                    && e.live_actor().is_some()
            })
            .map(|e| e.id)
            .collect()
    }

    /// Cluster mode: every room of the cluster with at least one member (as its summary says),
    /// wherever it runs.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn rooms_with_members(&self) -> Vec<RoomId> {
        self.rooms
            .read()
            .by_id
            .values()
            .filter(|e| !e.is_destroyed() && e.member_count.load(Ordering::Relaxed) > 0)
            .map(|e| e.id)
            .collect()
    }

    /// How many rooms have a live actor (are in memory).
    pub(crate) fn live_count(&self) -> usize {
        self.rooms
            .read()
            .by_id
            .values()
            .filter(|e| e.live_actor().is_some())
            .count()
    }

    pub(crate) fn max_id(&self) -> Option<RoomId> {
        self.rooms.read().order.last().copied()
    }

    /// Page `page_num` (from 1) of `page_size` rooms, newest first, of the rooms whose name
    /// contains `name_filter` (case-insensitive), and how many rooms match in all.
    ///
    /// Without a filter it costs O(page): the page is a slice of the id order. With one, the
    /// first call walks the rooms and remembers the matches (a few filters at a time); later
    /// pages of the same filter cost O(page) until a room is created, removed or renamed.
    pub(crate) fn page(
        &self,
        page_num: u32,
        page_size: u32,
        name_filter: Option<&str>,
    ) -> (Vec<ChatRoom>, usize) {
        let skip = (page_num as usize - 1).saturating_mul(page_size as usize);
        let size = page_size as usize;
        let Some(filter) = name_filter.map(str::to_lowercase) else {
            let rooms = self.rooms.read();
            let total = rooms.order.len() - rooms.destroyed;
            let mut page = Vec::with_capacity(size.min(total));
            if rooms.destroyed == 0 {
                let end = rooms.order.len().saturating_sub(skip);
                let start = end.saturating_sub(size);
                for id in rooms.order[start..end].iter().rev() {
                    if let Some(e) = rooms.by_id.get(id) {
                        page.push(e.summary());
                    }
                }
            } else {
                // Rooms being destroyed (a moment between destroy and removal): skip them.
                let live = rooms
                    .order
                    .iter()
                    .rev()
                    .filter_map(|id| rooms.by_id.get(id))
                    .filter(|e| !e.is_destroyed());
                page.extend(live.skip(skip).take(size).map(|e| e.summary()));
            }
            return (page, total);
        };
        // One snapshot: every change of the set of rooms or of a name happens under the write
        // lock, so the matches and the names shown agree.
        let rooms = self.rooms.read();
        let ids = self.filtered(&rooms, &filter);
        let page = ids
            .iter()
            .skip(skip)
            .filter_map(|id| rooms.by_id.get(id))
            .filter(|e| !e.is_destroyed())
            .take(size)
            .map(|e| e.summary())
            .collect();
        (page, ids.len())
    }

    /// The rooms whose lower-cased name contains `filter`, newest first (`rooms` is held, so
    /// the version cannot change meanwhile).
    fn filtered(&self, rooms: &Rooms, filter: &str) -> Arc<Vec<RoomId>> {
        let version = self.version.load(Ordering::Acquire);
        {
            let mut cache = self.filtered.lock();
            if let Some(at) = cache.iter().position(|f| f.filter == filter) {
                if cache[at].version == version {
                    let hit = cache.remove(at).expect("found above");
                    let ids = hit.ids.clone();
                    cache.push_front(hit);
                    return ids;
                }
                cache.remove(at);
            }
        }
        let ids: Vec<RoomId> = rooms
            .order
            .iter()
            .rev()
            .filter_map(|id| rooms.by_id.get(id))
            .filter(|e| !e.is_destroyed() && e.name_contains(filter))
            .map(|e| e.id)
            .collect();
        let ids = Arc::new(ids);
        let mut cache = self.filtered.lock();
        cache.push_front(Filtered {
            filter: filter.to_string(),
            version,
            ids: ids.clone(),
        });
        cache.truncate(FILTER_CACHE);
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roomcast_model::{Limits, Room, RoomLimits, RoomSpec, UserId};

    fn snapshot(id: u64, name: &str) -> ChatRoom {
        let spec = RoomSpec {
            name: name.into(),
            description: String::new(),
            welcome_message: String::new(),
            max_users: 10,
        };
        let owner = UserId::new("o").unwrap();
        let limits = RoomLimits::default();
        Room::create(
            RoomId::from_u64(id),
            owner,
            spec,
            limits,
            vec![],
            &Limits::default(),
            0,
        )
        .unwrap()
        .snapshot(None)
    }

    fn ids(page: &(Vec<ChatRoom>, usize)) -> (Vec<u64>, usize) {
        (page.0.iter().map(|r| r.room_id.as_u64()).collect(), page.1)
    }

    #[test]
    fn pages_are_newest_first_and_skip_destroyed_rooms() {
        let d = Directory::default();
        for id in [3, 1, 2, 5, 4] {
            d.insert(RoomEntry::new(snapshot(id, &format!("room {id}"))));
        }
        assert_eq!(d.max_id(), Some(RoomId::from_u64(5)));
        assert_eq!(ids(&d.page(1, 2, None)), (vec![5, 4], 5));
        assert_eq!(ids(&d.page(3, 2, None)), (vec![1], 5));
        assert_eq!(ids(&d.page(4, 2, None)), (vec![], 5));
        let four = d.get(RoomId::from_u64(4)).unwrap();
        d.mark_destroyed(&four);
        assert_eq!(
            ids(&d.page(1, 2, None)),
            (vec![5, 3], 4),
            "destroyed: skipped"
        );
        d.remove(RoomId::from_u64(4));
        assert_eq!(ids(&d.page(1, 2, None)), (vec![5, 3], 4));
        assert_eq!(ids(&d.page(2, 2, None)), (vec![2, 1], 4));
    }

    #[test]
    fn names_match_ignoring_case_ascii_or_not() {
        for (name, filter, yes) in [
            ("Room 42", "room 4", true),
            ("ROOM", "room", true),
            ("room", "", true),
            ("ro", "room", false),
            ("Ärger Zone", "ärger", true),
            ("ÄRGER", "ärger", true),
            ("plain", "ärger", false),
            ("ärger", "rge", true),
        ] {
            assert_eq!(
                contains_ignoring_case(name, filter),
                yes,
                "{name:?} {filter:?}"
            );
        }
    }

    #[test]
    fn filtered_listings_follow_creations_removals_and_renames() {
        let d = Directory::default();
        for (id, name) in [(1, "Alpha"), (2, "beta"), (3, "ALPHABET")] {
            d.insert(RoomEntry::new(snapshot(id, name)));
        }
        assert_eq!(ids(&d.page(1, 10, Some("alpha"))), (vec![3, 1], 2));
        assert_eq!(
            ids(&d.page(2, 1, Some("alpha"))),
            (vec![1], 2),
            "from the cache"
        );
        d.insert(RoomEntry::new(snapshot(4, "alpha four")));
        assert_eq!(ids(&d.page(1, 10, Some("alpha"))), (vec![4, 3, 1], 3));
        let beta = d.get(RoomId::from_u64(2)).unwrap();
        d.set_summary(&beta, snapshot(2, "alpha now"));
        assert_eq!(ids(&d.page(1, 10, Some("alpha"))), (vec![4, 3, 2, 1], 4));
        d.remove(RoomId::from_u64(3));
        assert_eq!(ids(&d.page(1, 10, Some("alpha"))), (vec![4, 2, 1], 3));
        assert_eq!(ids(&d.page(1, 10, Some("nothing"))), (vec![], 0));
    }
}
