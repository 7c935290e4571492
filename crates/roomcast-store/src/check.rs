//! The store checker: reads every record of a store directory, reports what is corrupt or
//! inconsistent, and can copy everything readable into a new directory that opens cleanly.

use std::collections::BTreeMap;
use std::path::Path;

use roomcast_model::{RoomId, RoomRecord};

use crate::codec::{self, RecordKind};
use crate::{guarded, keys, LocalCopy, StoreError, SuperAdminRecord, TREE};

/// One thing wrong with a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Which record (or part of the store).
    pub record: String,
    /// What is wrong.
    pub reason: String,
}

/// What the checker found (and, for [`salvage`], copied).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Readable room records.
    pub rooms: usize,
    /// Readable retained messages.
    pub messages: usize,
    /// Readable local copies.
    pub copies: usize,
    /// Readable super admins.
    pub super_admins: usize,
    /// Records that could not be read, and broken invariants.
    pub problems: Vec<Problem>,
    /// Records written to the new store ([`salvage`] only).
    pub salvaged: usize,
}

impl CheckReport {
    /// True if nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, record: impl Into<String>, reason: impl Into<String>) {
        self.problems.push(Problem {
            record: record.into(),
            reason: reason.into(),
        });
    }
}

/// Most read errors in a row the checker tolerates before it gives up on the rest of the tree.
const MAX_READ_ERRORS: usize = 1_000;

/// Checks the store in `dir`. An error only if it cannot be opened at all (the error names the
/// cause); everything else is a [`Problem`] in the report.
pub fn check(dir: &Path) -> Result<CheckReport, StoreError> {
    scan(dir, None)
}

/// Checks the store in `from` and copies every readable record into a new store in `to` (which
/// must not hold a store yet), leaving out what is corrupt and messages of rooms that are gone.
/// The new store opens cleanly and has every invariant.
pub fn salvage(from: &Path, to: &Path) -> Result<CheckReport, StoreError> {
    if to.join("db").exists() {
        return Err(StoreError::Io(format!(
            "{} already holds a store; salvage into a new directory",
            to.display()
        )));
    }
    let db = open(to)?;
    let tree = db.open_tree(TREE)?;
    let mut report = scan(from, Some(&tree))?;
    db.flush()?;
    report.salvaged = tree.len();
    Ok(report)
}

fn open(dir: &Path) -> Result<sled::Db, StoreError> {
    crate::open_with_retry(&sled::Config::new().path(dir))
}

fn scan(dir: &Path, into: Option<&sled::Tree>) -> Result<CheckReport, StoreError> {
    if !dir.join("db").exists() {
        return Err(StoreError::Io(format!("{} holds no store", dir.display())));
    }
    let db = open(dir)?;
    let mut report = CheckReport::default();
    let names: Vec<String> = db
        .tree_names()
        .iter()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    if names.iter().any(|n| n.ends_with("/v1")) {
        report.problem(
            "layout",
            "the store has the first layout (one tree per kind); opening it with roomcast moves it",
        );
    }
    let tree = guarded("opening the store's tree", || db.open_tree(TREE))??;
    let mut rooms: BTreeMap<RoomId, RoomRecord> = BTreeMap::new();
    let mut seqs: BTreeMap<RoomId, u64> = BTreeMap::new();
    let mut newest: BTreeMap<RoomId, u64> = BTreeMap::new();
    let mut messages: Vec<(Vec<u8>, Vec<u8>, RoomId)> = Vec::new();
    let mut audit: Vec<(Vec<u8>, Vec<u8>, RoomId)> = Vec::new();
    let mut idempotency: Vec<(Vec<u8>, Vec<u8>, RoomId)> = Vec::new();
    let mut departures: Vec<(Vec<u8>, Vec<u8>, RoomId)> = Vec::new();
    let mut errors = 0;
    let mut stored_mark = 0u64;
    let mut iter = tree.iter();
    loop {
        let item = match guarded("reading the store", || iter.next()) {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(e) => {
                report.problem("store", e.to_string());
                break;
            }
        };
        let (key, value) = match item {
            Ok(kv) => {
                errors = 0;
                kv
            }
            Err(e) => {
                report.problem("store", format!("a read failed: {e}"));
                errors += 1;
                if errors >= MAX_READ_ERRORS {
                    report.problem(
                        "store",
                        "too many read errors in a row; the rest was not read",
                    );
                    break;
                }
                continue;
            }
        };
        let what = keys::describe(&key);
        let keep = |report: &mut CheckReport, into: Option<&sled::Tree>| {
            if let Some(t) = into {
                if let Err(e) = t.insert(&key, &*value) {
                    report.problem(&what, format!("could not be copied: {e}"));
                }
            }
        };
        match key.first() {
            Some(&keys::ROOM) => match codec::decode_room(&value) {
                Ok(record) if keys::room_of(&key) == Some(record.id) => {
                    report.rooms += 1;
                    rooms.insert(record.id, record);
                    keep(&mut report, into);
                }
                Ok(record) => report.problem(&what, format!("holds room {}", record.id)),
                Err(e) => report.problem(&what, e.to_string()),
            },
            Some(&keys::SEQ) => match (
                codec::decode::<u64>(RecordKind::RoomSeq, &value),
                keys::room_of(&key),
            ) {
                (Ok(seq), Some(room)) => {
                    seqs.insert(room, seq);
                }
                (Err(e), _) => report.problem(&what, e.to_string()),
                (_, None) => report.problem(&what, "malformed key"),
            },
            Some(&keys::MESSAGE) => match codec::decode_message(&value) {
                Ok(m)
                    if keys::room_of(&key) == Some(m.room_id)
                        && keys::seq_of(&key) == Some(m.seq) =>
                {
                    report.messages += 1;
                    let n = newest.entry(m.room_id).or_default();
                    *n = (*n).max(m.seq);
                    messages.push((key.to_vec(), value.to_vec(), m.room_id));
                }
                Ok(m) => report.problem(&what, format!("holds message {}#{}", m.room_id, m.seq)),
                Err(e) => report.problem(&what, e.to_string()),
            },
            Some(&keys::COPY) => match codec::decode::<LocalCopy>(RecordKind::Copy, &value) {
                Ok(_) => {
                    report.copies += 1;
                    keep(&mut report, into);
                }
                Err(e) => report.problem(&what, e.to_string()),
            },
            _ if &*key == keys::MARK => match codec::decode::<u64>(RecordKind::Mark, &value) {
                Ok(m) => stored_mark = m,
                Err(e) => report.problem(&what, e.to_string()),
            },
            Some(&keys::ADMIN) => {
                match codec::decode::<SuperAdminRecord>(RecordKind::SuperAdmin, &value) {
                    Ok(_) => {
                        report.super_admins += 1;
                        keep(&mut report, into);
                    }
                    Err(e) => report.problem(&what, e.to_string()),
                }
            }
            Some(&keys::AUDIT) => {
                match codec::decode::<roomcast_model::AuditEntry>(RecordKind::Audit, &value) {
                    Ok(e) if keys::seq_of(&key) == Some(e.seq) => {
                        if let Some(room) = keys::room_of(&key) {
                            audit.push((key.to_vec(), value.to_vec(), room));
                        }
                    }
                    Ok(e) => report.problem(&what, format!("holds entry {}", e.seq)),
                    Err(e) => report.problem(&what, e.to_string()),
                }
            }
            Some(&keys::IDEMPOTENCY) => {
                match codec::decode::<crate::IdempotencyRecord>(RecordKind::Idempotency, &value) {
                    Ok(r) if key[..] == keys::idempotency(r.room, &r.from, &r.key)[..] => {
                        idempotency.push((key.to_vec(), value.to_vec(), r.room));
                    }
                    Ok(r) => report.problem(&what, format!("holds a key of room {}", r.room)),
                    Err(e) => report.problem(&what, e.to_string()),
                }
            }
            Some(&keys::DEPARTURE) => {
                match codec::decode::<crate::Departure>(RecordKind::Departure, &value) {
                    Ok(d) if key[..] == keys::departure(d.room, &d.user)[..] => {
                        departures.push((key.to_vec(), value.to_vec(), d.room));
                    }
                    Ok(d) => {
                        report.problem(&what, format!("holds a departure from room {}", d.room))
                    }
                    Err(e) => report.problem(&what, e.to_string()),
                }
            }
            _ => report.problem(&what, "unknown kind of record"),
        }
    }
    // The log against what was acknowledged as durable (see `mark.rs`).
    if let Some(acknowledged) = crate::mark::read(dir) {
        if stored_mark < acknowledged {
            let lost = crate::mark::lost(stored_mark, acknowledged);
            report.problem("the store's log", lost.to_string());
        }
    }
    // Invariants across records.
    for (room, &last) in &newest {
        if !rooms.contains_key(room) {
            report.problem(
                format!("room {room}"),
                "has messages but no readable record",
            );
        }
        match seqs.get(room) {
            Some(&seq) if seq != last => report.problem(
                format!("room {room}"),
                format!("last sequence number {seq}, newest message {last}"),
            ),
            None => report.problem(
                format!("room {room}"),
                "has messages but no sequence number",
            ),
            _ => {}
        }
    }
    for (_, _, room) in &audit {
        if !rooms.contains_key(room) {
            report.problem(
                format!("audit log of room {room}"),
                "belongs to no readable room",
            );
            break;
        }
    }
    for (_, _, room) in &idempotency {
        if !rooms.contains_key(room) {
            report.problem(
                format!("idempotency keys of room {room}"),
                "belong to no readable room",
            );
            break;
        }
    }
    for (_, _, room) in &departures {
        if !rooms.contains_key(room) {
            report.problem(
                format!("departures from room {room}"),
                "belong to no readable room",
            );
            break;
        }
    }
    for room in seqs.keys() {
        if !rooms.contains_key(room) {
            report.problem(
                format!("sequence of room {room}"),
                "belongs to no readable room",
            );
        }
    }
    if let Some(t) = into {
        for (key, value, room) in audit.into_iter().chain(idempotency).chain(departures) {
            if rooms.contains_key(&room) {
                t.insert(key, value)?;
            }
        }
        for (key, value, room) in messages {
            if rooms.contains_key(&room) {
                t.insert(key, value)?;
            }
        }
        for room in rooms.keys() {
            let seq = seqs
                .get(room)
                .copied()
                .unwrap_or(0)
                .max(newest.get(room).copied().unwrap_or(0));
            if seq > 0 {
                t.insert(keys::seq(*room), codec::encode(RecordKind::RoomSeq, &seq)?)?;
            }
        }
    }
    Ok(report)
}
