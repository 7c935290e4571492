//! The room directory: which rooms exist, their summaries, and their live actor if any.
//!
//! Written only by the supervisor (insert, remove) and by each room's own actor (its summary and
//! member count); read by every caller, so that finding a room's actor does not cost a trip
//! through the supervisor. The map is behind a `parking_lot::RwLock` (read-mostly, never held
//! across an await).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use actix::Addr;
use parking_lot::{Mutex, RwLock};
use roomcast_model::{ChatRoom, ChatRoomPermissionType, RoomId};

use crate::room_actor::RoomActor;

pub(crate) struct RoomEntry {
    pub(crate) id: RoomId,
    /// The room as the public list shows it (no caller role; member count kept apart).
    summary: Mutex<ChatRoom>,
    member_count: AtomicU32,
    /// The live actor and the generation it was spawned with.
    actor: Mutex<Option<(u64, Addr<RoomActor>)>>,
    destroyed: AtomicBool,
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
        })
    }

    pub(crate) fn summary(&self) -> ChatRoom {
        let mut room = self.summary.lock().clone();
        room.member_count = self.member_count.load(Ordering::Relaxed);
        room
    }

    pub(crate) fn set_summary(&self, mut snapshot: ChatRoom) {
        snapshot.permission_type = ChatRoomPermissionType::None;
        *self.summary.lock() = snapshot;
    }

    pub(crate) fn set_member_count(&self, n: usize) {
        self.member_count.store(n as u32, Ordering::Relaxed);
    }

    pub(crate) fn live_actor(&self) -> Option<Addr<RoomActor>> {
        self.actor
            .lock()
            .as_ref()
            .filter(|(_, addr)| addr.connected())
            .map(|(_, addr)| addr.clone())
    }

    pub(crate) fn set_actor(&self, generation: u64, addr: Addr<RoomActor>) {
        *self.actor.lock() = Some((generation, addr));
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

    pub(crate) fn mark_destroyed(&self) {
        self.destroyed.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_destroyed(&self) -> bool {
        self.destroyed.load(Ordering::SeqCst)
    }
}

#[derive(Default)]
pub(crate) struct Directory {
    rooms: RwLock<BTreeMap<RoomId, Arc<RoomEntry>>>,
}

impl Directory {
    pub(crate) fn get(&self, id: RoomId) -> Option<Arc<RoomEntry>> {
        self.rooms.read().get(&id).cloned()
    }

    pub(crate) fn insert(&self, entry: Arc<RoomEntry>) {
        self.rooms.write().insert(entry.id, entry);
    }

    pub(crate) fn remove(&self, id: RoomId) {
        self.rooms.write().remove(&id);
    }

    pub(crate) fn len(&self) -> usize {
        self.rooms.read().len()
    }

    pub(crate) fn max_id(&self) -> Option<RoomId> {
        self.rooms.read().keys().next_back().copied()
    }

    /// Page `page_num` (from 1) of `page_size` rooms, newest first, of the rooms whose name
    /// contains `name_filter` (case-insensitive), and how many rooms match in all.
    pub(crate) fn page(
        &self,
        page_num: u32,
        page_size: u32,
        name_filter: Option<&str>,
    ) -> (Vec<ChatRoom>, usize) {
        let filter = name_filter.map(str::to_lowercase);
        let rooms = self.rooms.read();
        let skip = (page_num as usize - 1).saturating_mul(page_size as usize);
        let mut total = 0;
        let mut page = Vec::with_capacity(page_size as usize);
        for entry in rooms.values().rev() {
            if entry.is_destroyed() {
                continue;
            }
            if let Some(f) = &filter {
                if !entry
                    .summary
                    .lock()
                    .name
                    .to_lowercase()
                    .contains(f.as_str())
                {
                    continue;
                }
            }
            if total >= skip && page.len() < page_size as usize {
                page.push(entry.summary());
            }
            total += 1;
        }
        (page, total)
    }
}
