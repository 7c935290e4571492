//! Store tests: codec envelope checks, reopen, group commit, corrupt records.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::codec::RecordKind;

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn record(id: u64, name: &str) -> RoomRecord {
    RoomRecord {
        id: RoomId::from_u64(id),
        spec: roomcast_model::RoomSpec {
            name: name.into(),
            description: "d".into(),
            welcome_message: String::new(),
            max_users: 300,
        },
        owner: uid("owner"),
        admins: vec![uid("adm")],
        announcement: "hi".into(),
        all_muted: true,
        mute_list: BTreeMap::from([(uid("m"), -1)]),
        allow_list: BTreeSet::from([uid("a")]),
        block_list: BTreeSet::from([uid("b")]),
        attributes: BTreeMap::from([(
            "pinned".to_string(),
            roomcast_model::RoomAttribute {
                value: "poll-7".into(),
                owner: uid("adm"),
                delete_when_left: true,
                version: 3,
            },
        )]),
        created_at: 42,
        limits: roomcast_model::RoomLimits::default()
            .with_offline_grace(std::time::Duration::from_secs(1))
            .with_room_delivery_rate(None),
        live: live(),
    }
}

fn live() -> roomcast_model::LiveModeration {
    let mut live = roomcast_model::LiveModeration::default();
    live.slow_mode_ms = Some(5_000);
    live.frozen_until = Some(roomcast_model::UNTIL_LIFTED);
    live.block_until.insert(uid("b"), 99);
    live.rejoin_banned_until.insert(uid("k"), 77);
    live.shadow_banned.insert(uid("s"));
    live.hold_ms = Some(3_000);
    live.pins.push(roomcast_model::Pin::new(4, uid("adm"), 55));
    live
}

/// A room record written by the first layout (before per-room limits) still reads, with its
/// offline grace as the room's own limit.
#[test]
fn first_layout_room_records_still_read() {
    #[derive(serde::Serialize)]
    struct SpecV1 {
        name: String,
        description: String,
        welcome_message: String,
        max_users: u32,
        offline_grace_ms: Option<u64>,
    }
    #[derive(serde::Serialize)]
    struct RecordV1 {
        id: RoomId,
        spec: SpecV1,
        owner: UserId,
        admins: Vec<UserId>,
        announcement: String,
        all_muted: bool,
        mute_list: BTreeMap<UserId, i64>,
        allow_list: BTreeSet<UserId>,
        block_list: BTreeSet<UserId>,
        attributes: BTreeMap<String, roomcast_model::RoomAttribute>,
        created_at: i64,
    }
    let now = record(7, "old");
    let v1 = RecordV1 {
        id: now.id,
        spec: SpecV1 {
            name: now.spec.name.clone(),
            description: now.spec.description.clone(),
            welcome_message: now.spec.welcome_message.clone(),
            max_users: now.spec.max_users,
            offline_grace_ms: Some(1_000),
        },
        owner: now.owner.clone(),
        admins: now.admins.clone(),
        announcement: now.announcement.clone(),
        all_muted: now.all_muted,
        mute_list: now.mute_list.clone(),
        allow_list: now.allow_list.clone(),
        block_list: now.block_list.clone(),
        attributes: now.attributes.clone(),
        created_at: now.created_at,
    };
    let bytes = codec::encode(RecordKind::Room, &v1).unwrap();
    let back = codec::decode_room(&bytes).unwrap();
    let expected = RoomRecord {
        limits: roomcast_model::RoomLimits::default()
            .with_offline_grace(std::time::Duration::from_secs(1)),
        live: Default::default(),
        ..now.clone()
    };
    assert_eq!(back, expected);
    // The current layout is written with its own kind, and reads back whole.
    let bytes = codec::encode_room(&now).unwrap();
    assert_eq!(bytes[3], RecordKind::RoomV3 as u8);
    assert_eq!(codec::decode_room(&bytes).unwrap(), now);
}

/// A room record written by the second layout (before live moderation) still reads, with live
/// moderation off.
#[test]
fn second_layout_room_records_still_read() {
    #[derive(serde::Serialize)]
    struct RecordV2 {
        id: RoomId,
        spec: roomcast_model::RoomSpec,
        owner: UserId,
        admins: Vec<UserId>,
        announcement: String,
        all_muted: bool,
        mute_list: BTreeMap<UserId, i64>,
        allow_list: BTreeSet<UserId>,
        block_list: BTreeSet<UserId>,
        attributes: BTreeMap<String, roomcast_model::RoomAttribute>,
        created_at: i64,
        limits: roomcast_model::RoomLimits,
    }
    let now = record(8, "second");
    let v2 = RecordV2 {
        id: now.id,
        spec: now.spec.clone(),
        owner: now.owner.clone(),
        admins: now.admins.clone(),
        announcement: now.announcement.clone(),
        all_muted: now.all_muted,
        mute_list: now.mute_list.clone(),
        allow_list: now.allow_list.clone(),
        block_list: now.block_list.clone(),
        attributes: now.attributes.clone(),
        created_at: now.created_at,
        limits: now.limits.clone(),
    };
    let bytes = codec::encode(RecordKind::RoomV2, &v2).unwrap();
    let back = codec::decode_room(&bytes).unwrap();
    assert_eq!(
        back,
        RoomRecord {
            live: Default::default(),
            ..now
        }
    );
}

fn dir_config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig {
        location: Location::Dir(dir.to_path_buf()),
        ..StoreConfig::default()
    }
}

#[test]
fn codec_round_trips() {
    let r = record(7, "room");
    let bytes = codec::encode(RecordKind::RoomV3, &r).unwrap();
    let back: RoomRecord = codec::decode(RecordKind::RoomV3, &bytes).unwrap();
    assert_eq!(back, r);
}

#[test]
fn codec_rejects_every_single_byte_corruption_without_panicking() {
    let bytes = codec::encode(RecordKind::RoomV3, &record(7, "room")).unwrap();
    for at in 0..bytes.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = bytes.clone();
            bad[at] ^= flip;
            let got = codec::decode::<RoomRecord>(RecordKind::RoomV3, &bad);
            assert!(
                matches!(got, Err(StoreError::Corrupt { .. })),
                "byte {at} ^ {flip:#x}"
            );
        }
    }
    for len in 0..bytes.len() {
        assert!(codec::decode::<RoomRecord>(RecordKind::RoomV3, &bytes[..len]).is_err());
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(codec::decode::<RoomRecord>(RecordKind::RoomV3, &longer).is_err());
}

#[test]
fn codec_checks_kind_version_and_length_limit() {
    let bytes = codec::encode(RecordKind::RoomV3, &record(7, "room")).unwrap();
    let err = codec::decode::<RoomRecord>(RecordKind::SuperAdmin, &bytes).unwrap_err();
    assert!(err.to_string().contains("kind"), "{err}");

    let mut v2 = bytes.clone();
    v2[2] = 2;
    let err = codec::decode::<RoomRecord>(RecordKind::RoomV3, &v2).unwrap_err();
    assert!(err.to_string().contains("version"), "{err}");

    let mut huge = bytes[..codec::HEADER_LEN].to_vec();
    huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = codec::decode::<RoomRecord>(RecordKind::RoomV3, &huge).unwrap_err();
    assert!(err.to_string().contains("limit"), "{err}");
}

#[test]
fn a_valid_envelope_around_a_bad_payload_is_corrupt() {
    // A well-formed envelope whose payload is not a RoomRecord (an invalid user id inside).
    #[derive(Serialize)]
    struct Fake {
        id: u64,
        name: String,
    }
    let bytes = codec::encode(
        RecordKind::RoomV3,
        &Fake {
            id: 1,
            name: "NOT A USER".into(),
        },
    )
    .unwrap();
    assert!(matches!(
        codec::decode::<RoomRecord>(RecordKind::RoomV3, &bytes),
        Err(StoreError::Corrupt { .. })
    ));
}

fn message(room: u64, seq: u64, time: i64) -> MessageData {
    MessageData {
        msg_id: roomcast_model::MessageId::from_u64(room * 1_000 + seq),
        room_id: RoomId::from_u64(room),
        from: uid("owner"),
        seq,
        server_time: time,
        body: roomcast_model::MessageBody::Text {
            content: format!("m{seq}"),
        },
        attributes: BTreeMap::new(),
        priority: roomcast_model::MessagePriority::Normal,
        recalled: None,
        shadowed: false,
        held_until: None,
    }
}

/// Submits a write set, awaits its commit, then a read queued after it (a temporary store
/// acknowledges once queued), so that the blocking reader sees it.
async fn apply(store: &Store, build: impl FnOnce(&mut WriteSet)) {
    let mut set = WriteSet::new();
    build(&mut set);
    store.submit(set).await.unwrap();
    store.read(|_| ()).await.unwrap();
}

#[tokio::test]
async fn rooms_and_super_admins_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(&dir_config(dir.path())).unwrap();
        apply(&store, |w| {
            w.put_room(&record(1, "one")).unwrap();
            w.put_room(&record(2, "two")).unwrap();
            w.put_room(&record(3, "three")).unwrap();
        })
        .await;
        apply(&store, |w| {
            w.delete_room(RoomId::from_u64(2));
            w.put_super_admin(&uid("root")).unwrap();
            w.put_super_admin(&uid("zed")).unwrap();
        })
        .await;
        apply(&store, |w| {
            w.remove_super_admin(&uid("zed"));
            w.remove_super_admin(&uid("nobody"));
        })
        .await;
    }
    let store = Store::open(&dir_config(dir.path())).unwrap();
    let rooms: Vec<RoomRecord> = store
        .rooms()
        .unwrap()
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rooms, vec![record(1, "one"), record(3, "three")]);
    let reader = store.blocking_reader();
    assert_eq!(
        reader.room(RoomId::from_u64(3)).unwrap(),
        Some(record(3, "three"))
    );
    assert_eq!(reader.room(RoomId::from_u64(2)).unwrap(), None);
    assert_eq!(store.super_admins().unwrap(), vec![uid("root")]);
}

#[tokio::test]
async fn concurrent_commits_all_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir_config(dir.path())).unwrap();
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut set = WriteSet::new();
            set.put_room(&record(i, "r")).unwrap();
            store.submit(set).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(store.rooms().unwrap().len(), 200);
    store.commit().await.unwrap();
}

#[tokio::test]
async fn messages_keep_the_last_sequence_and_retention_in_one_write() {
    let store = Store::open(&StoreConfig::default()).unwrap();
    let room = RoomId::from_u64(9);
    apply(&store, |w| w.put_room(&record(9, "r")).unwrap()).await;
    for seq in 1..=10 {
        apply(&store, |w| {
            w.put_message(&message(9, seq, seq as i64 * 100)).unwrap();
            if seq > 4 {
                w.trim_before(room, seq + 1 - 4);
            }
        })
        .await;
    }
    let reader = store.blocking_reader();
    assert_eq!(reader.message_bounds(room).unwrap(), Some((7, 10)));
    assert_eq!(reader.last_seq(room).unwrap(), 10);
    apply(&store, |w| w.trim_older_than(room, 900)).await;
    assert_eq!(reader.message_bounds(room).unwrap(), Some((9, 10)));
    // Retention that empties the room keeps its sequence number.
    apply(&store, |w| w.trim_before(room, 11)).await;
    assert_eq!(reader.message_bounds(room).unwrap(), None);
    assert_eq!(reader.last_seq(room).unwrap(), 10);
    apply(&store, |w| w.delete_room(room)).await;
    assert_eq!(reader.last_seq(room).unwrap(), 0);
    assert_eq!(reader.room(room).unwrap(), None);
}

#[tokio::test]
async fn a_failed_write_set_applies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir_config(dir.path())).unwrap();
    let room = RoomId::from_u64(5);
    // A retention step that meets a corrupt message fails the whole set: the message and the
    // sequence number put before it are not applied either.
    store
        .blocking_reader()
        .tree
        .insert(keys::message(room, 1), &b"RC garbage"[..])
        .unwrap();
    let mut set = WriteSet::new();
    set.put_message(&message(5, 2, 10)).unwrap();
    set.trim_older_than(room, 1_000);
    let (failed_tx, failed_rx) = std::sync::mpsc::channel();
    let commit = store.submit_or(set, move |e| failed_tx.send(e).unwrap());
    assert!(commit.await.is_err());
    assert!(failed_rx.try_recv().is_ok(), "the writer is told");
    let reader = store.blocking_reader();
    assert_eq!(reader.message_bounds(room).unwrap(), Some((1, 1)));
    assert_eq!(reader.last_seq(room).unwrap(), 1);
    // The store goes on.
    apply(&store, |w| w.put_room(&record(5, "r")).unwrap()).await;
    assert!(reader.room(room).unwrap().is_some());
}

#[tokio::test]
async fn copy_spans_never_overlap_and_reads_follow_writes() {
    let store = Store::open(&StoreConfig::default()).unwrap();
    let room = RoomId::from_u64(3);
    let user = uid("keeper");
    apply(&store, |w| w.open_copy(user.clone(), room, 1)).await;
    apply(&store, |w| w.close_copy(user.clone(), room, 5, 1, false)).await;
    // Rejoining replays from 3: the new span starts after the old one.
    let mut set = WriteSet::new();
    set.open_copy(user.clone(), room, 3);
    let commit = store.submit(set);
    let (u, r) = (user.clone(), room);
    let copy = store
        .read(move |reader| reader.copy(&u, r))
        .await
        .unwrap()
        .unwrap();
    commit.await.unwrap();
    assert_eq!(copy.unwrap().spans, vec![(1, Some(5)), (6, None)]);
    apply(&store, |w| w.close_copy(user.clone(), room, 9, 6, true)).await;
    assert_eq!(store.blocking_reader().copy(&user, room).unwrap(), None);
}

#[tokio::test]
async fn open_copies_are_closed_at_the_room_s_last_message_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let room = RoomId::from_u64(4);
    {
        let store = Store::open(&dir_config(dir.path())).unwrap();
        apply(&store, |w| {
            w.put_room(&record(4, "r")).unwrap();
            w.open_copy(uid("a"), room, 1);
            w.open_copy(uid("b"), room, 3);
            w.put_message(&message(4, 1, 1)).unwrap();
            w.put_message(&message(4, 2, 2)).unwrap();
        })
        .await;
    }
    let store = Store::open(&dir_config(dir.path())).unwrap();
    assert_eq!(store.close_open_copies().unwrap(), 2);
    let reader = store.blocking_reader();
    assert_eq!(
        reader.copy(&uid("a"), room).unwrap().unwrap().spans,
        vec![(1, Some(2))]
    );
    assert_eq!(
        reader.copy(&uid("b"), room).unwrap(),
        None,
        "an empty span is dropped"
    );
}

#[test]
fn a_corrupt_record_is_an_error_item_and_the_rest_stays_readable() {
    let store = Store::open(&StoreConfig::default()).unwrap();
    let reader = store.blocking_reader();
    for id in [1, 3] {
        reader
            .tree
            .insert(
                keys::room(RoomId::from_u64(id)),
                codec::encode(RecordKind::RoomV3, &record(id, "r")).unwrap(),
            )
            .unwrap();
    }
    reader
        .tree
        .insert(keys::room(RoomId::from_u64(2)), &b"RC garbage"[..])
        .unwrap();
    let items: Vec<_> = store.rooms().unwrap();
    assert_eq!(items.len(), 3);
    assert!(items[0].is_ok());
    let err = items[1].as_ref().unwrap_err();
    assert!(err.to_string().contains("room 2"), "{err}");
    assert!(items[2].is_ok());
    assert!(reader.room(RoomId::from_u64(2)).is_err());
    assert!(reader.room(RoomId::from_u64(3)).unwrap().is_some());
}

#[test]
fn a_locked_directory_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(&dir_config(dir.path())).unwrap();
    let second = Store::open(&dir_config(dir.path()));
    assert!(matches!(second, Err(StoreError::Io(_))));
}

/// A store directory with three rooms, their messages, a copy and a super admin.
async fn filled(dir: &std::path::Path) {
    let store = Store::open(&dir_config(dir)).unwrap();
    for id in 1..=3u64 {
        apply(&store, |w| w.put_room(&record(id, "r")).unwrap()).await;
        for seq in 1..=50 {
            apply(&store, |w| {
                w.put_message(&message(id, seq, seq as i64)).unwrap()
            })
            .await;
        }
    }
    apply(&store, |w| {
        w.open_copy(uid("keeper"), RoomId::from_u64(1), 1);
        w.put_super_admin(&uid("root")).unwrap();
    })
    .await;
}

#[tokio::test]
async fn the_checker_reads_a_clean_store() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path()).await;
    let report = check(dir.path()).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(
        (
            report.rooms,
            report.messages,
            report.copies,
            report.super_admins
        ),
        (3, 150, 1, 1)
    );
}

#[tokio::test]
async fn the_checker_finds_corrupt_records_and_salvage_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path()).await;
    {
        // Mangle records the way bit rot does: a flipped byte inside values.
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let tree = db.open_tree(TREE).unwrap();
        for key in [
            keys::message(RoomId::from_u64(2), 7).to_vec(),
            keys::room(RoomId::from_u64(3)).to_vec(),
        ] {
            let mut value = tree.get(&key).unwrap().unwrap().to_vec();
            let at = value.len() - 1;
            value[at] ^= 0x40;
            tree.insert(key, value).unwrap();
        }
        db.flush().unwrap();
    }
    let report = check(dir.path()).unwrap();
    let records: Vec<&str> = report.problems.iter().map(|p| p.record.as_str()).collect();
    assert!(records.contains(&"message 2#7"), "{records:?}");
    assert!(records.contains(&"room 3"), "{records:?}");
    assert!(
        records
            .iter()
            .any(|r| r.contains("room 3") && *r != "room 3"),
        "room 3's messages are orphans: {records:?}"
    );

    let to = tempfile::tempdir().unwrap();
    let out = to.path().join("salvaged");
    let salvaged = salvage(dir.path(), &out).unwrap();
    assert!(salvaged.salvaged > 0);
    let again = check(&out).unwrap();
    assert!(again.is_clean(), "{:?}", again.problems);
    assert_eq!(
        (again.rooms, again.messages),
        (2, 99),
        "room 3 and message 2#7 are left out"
    );
    let store = Store::open(&dir_config(&out)).unwrap();
    assert_eq!(
        store
            .blocking_reader()
            .last_seq(RoomId::from_u64(2))
            .unwrap(),
        50
    );
}

#[tokio::test]
async fn a_truncated_store_is_an_error_that_names_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path()).await;
    let db = dir.path().join("db");
    let len = std::fs::metadata(&db).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    // sled alone would open what is left before the cut; the write mark says writes were lost.
    let err = Store::open(&dir_config(dir.path()))
        .expect_err("a log cut after acknowledged writes does not open");
    assert!(err.to_string().contains("acknowledged"), "{err}");
    let report = check(dir.path()).unwrap();
    assert!(!report.is_clean(), "the checker reports the cut");
}

mod fuzz {
    //! The record decoder against random and mutated bytes: an error or a value, never a panic.

    use proptest::prelude::*;

    use super::*;

    fn valid() -> Vec<u8> {
        codec::encode(RecordKind::RoomV3, &record(7, "room")).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = codec::decode::<RoomRecord>(RecordKind::RoomV3, &bytes);
            let _ = codec::decode::<roomcast_model::MessageData>(RecordKind::Message, &bytes);
            let _ = codec::decode::<LocalCopy>(RecordKind::Copy, &bytes);
        }

        #[test]
        fn mutated_records_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = valid();
            for (at, value) in edits {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            let _ = codec::decode::<RoomRecord>(RecordKind::RoomV3, &bytes);
            let end = cut.index(bytes.len() + 1);
            let _ = codec::decode::<RoomRecord>(RecordKind::RoomV3, &bytes[..end]);
        }

        #[test]
        fn payloads_with_a_fixed_checksum_never_panic(
            payload in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            // A well-formed envelope (right checksum) around arbitrary payload bytes reaches
            // bincode itself, which must fail cleanly under its size limit.
            let mut out = Vec::new();
            out.extend_from_slice(b"RC");
            out.push(codec::FORMAT_BINCODE2);
            out.push(RecordKind::RoomV3 as u8);
            out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            let mut crc = crc32fast::Hasher::new();
            crc.update(&out[..8]);
            crc.update(&payload);
            out.extend_from_slice(&crc.finalize().to_le_bytes());
            out.extend_from_slice(&payload);
            let _ = codec::decode::<RoomRecord>(RecordKind::RoomV3, &out);
            let _ = codec::decode::<roomcast_model::MessageData>(RecordKind::RoomV3, &out);
        }
    }
}

/// A flipped bit or a cut in the middle of sled's log makes sled recover only up to it,
/// silently. The write mark beside the log turns that into an error at open (and a problem in
/// the checker), instead of a store that opens with acknowledged writes missing.
#[tokio::test]
async fn a_log_that_lost_acknowledged_writes_does_not_open() {
    for damage in ["flip", "cut", "empty"] {
        let dir = tempfile::tempdir().unwrap();
        filled(dir.path()).await;
        let db = dir.path().join("db");
        let mut bytes = std::fs::read(&db).unwrap();
        match damage {
            "flip" => {
                let at = bytes.len() / 3;
                bytes[at] ^= 0x10;
            }
            "cut" => bytes.truncate(bytes.len() / 3),
            _ => bytes.clear(),
        }
        std::fs::write(&db, &bytes).unwrap();
        match Store::open(&dir_config(dir.path())) {
            Ok(store) => {
                // Only if the damage missed everything the log still needs.
                let messages: usize = (1..=3)
                    .map(|r| {
                        store
                            .blocking_reader()
                            .messages(
                                RoomId::from_u64(r),
                                (Bound::Unbounded, Bound::Unbounded),
                                false,
                                1_000,
                            )
                            .map_or(0, |m| m.len())
                    })
                    .sum();
                assert_eq!(messages, 150, "{damage}: opened, so nothing may be missing");
            }
            Err(e) => {
                assert!(
                    e.to_string().contains("acknowledged")
                        || matches!(e, StoreError::Corrupt { .. }),
                    "{damage}: {e}"
                );
                let report = check(dir.path());
                if let Ok(report) = report {
                    assert!(!report.is_clean(), "{damage}: the checker sees it");
                }
            }
        }
    }
}

/// A write set that comes to no write (deleting a copy that was never stored: every leave of a
/// member whose copy goes on exit) writes nothing, not even the write mark, is acknowledged at
/// once, and leaves a store that reopens with its mark file in agreement.
#[tokio::test]
async fn a_write_set_that_comes_to_nothing_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path()).await;
    {
        let store = Store::open(&dir_config(dir.path())).unwrap();
        let mark_before = store.blocking_reader().mark().unwrap();
        for n in 0..100 {
            apply(&store, |w| {
                w.close_copy(uid(&format!("passer{n}")), RoomId::from_u64(1), 50, 1, true)
            })
            .await;
        }
        assert_eq!(
            store.blocking_reader().mark().unwrap(),
            mark_before,
            "no mark written"
        );
        // A real write after them: its mark is written, and the mark file follows it.
        apply(&store, |w| w.put_super_admin(&uid("late")).unwrap()).await;
        assert!(store.blocking_reader().mark().unwrap() > mark_before);
    }
    let store = Store::open(&dir_config(dir.path())).expect("the mark file agrees with the log");
    assert!(store.super_admins().unwrap().contains(&uid("late")));
    // Nothing but no-op groups after the last write: still agrees.
    for n in 0..10 {
        apply(&store, |w| {
            w.close_copy(uid(&format!("again{n}")), RoomId::from_u64(2), 50, 1, true)
        })
        .await;
    }
    drop(store);
    Store::open(&dir_config(dir.path())).expect("still agrees");
}

fn entry(seq: u64, reason: Option<&str>) -> roomcast_model::AuditEntry {
    roomcast_model::AuditEntry::new(
        seq,
        1_000 + seq as i64,
        Some(uid("adm")),
        roomcast_model::AuditAction::Kick,
        vec![uid("m")],
        reason.map(str::to_string),
    )
}

/// The audit log keeps the newest `retention` entries, reads newest first from any point,
/// survives a reopen, goes with its room, and the checker reads it.
#[tokio::test]
async fn the_audit_log_keeps_its_newest_entries_and_goes_with_its_room() {
    let dir = tempfile::tempdir().unwrap();
    let room = RoomId::from_u64(1);
    {
        let store = Store::open(&dir_config(dir.path())).unwrap();
        apply(&store, |w| w.put_room(&record(1, "one")).unwrap()).await;
        for seq in 1..=12 {
            apply(&store, |w| {
                w.put_audit(room, &entry(seq, Some("spam")), 5).unwrap()
            })
            .await;
        }
        let reader = store.blocking_reader();
        let seqs = |v: Vec<roomcast_model::AuditEntry>| v.iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(
            seqs(reader.audit_log(room, None, 100).unwrap()),
            [12, 11, 10, 9, 8]
        );
        assert_eq!(seqs(reader.audit_log(room, Some(10), 1).unwrap()), [9]);
        assert_eq!(
            reader.audit_log(room, None, 1).unwrap()[0],
            entry(12, Some("spam"))
        );
        assert_eq!(reader.last_audit_seq(room).unwrap(), 12);
        assert_eq!(reader.last_audit_seq(RoomId::from_u64(2)).unwrap(), 0);
        store.flush_blocking().unwrap();
    }
    let report = check(dir.path()).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    let store = Store::open(&dir_config(dir.path())).unwrap();
    assert_eq!(store.blocking_reader().last_audit_seq(room).unwrap(), 12);
    // An entry put in the same group as the room's deletion goes too.
    let mut put = WriteSet::new();
    put.put_audit(room, &entry(13, None), 5).unwrap();
    let mut delete = WriteSet::new();
    delete.delete_room(room);
    let (a, b) = (store.submit(put), store.submit(delete));
    a.await.unwrap();
    b.await.unwrap();
    store.read(|_| ()).await.unwrap();
    assert!(store
        .blocking_reader()
        .audit_log(room, None, 100)
        .unwrap()
        .is_empty());
}

/// A message written by the first message layout (before recall) still reads, not recalled;
/// messages are written in the second.
#[test]
fn first_layout_messages_still_read() {
    #[derive(serde::Serialize)]
    struct MessageV1 {
        msg_id: roomcast_model::MessageId,
        room_id: RoomId,
        from: UserId,
        seq: u64,
        server_time: i64,
        body: roomcast_model::MessageBody,
        attributes: BTreeMap<String, roomcast_model::AttributeValue>,
        priority: roomcast_model::MessagePriority,
    }
    let now = message(3, 4, 50);
    let v1 = MessageV1 {
        msg_id: now.msg_id,
        room_id: now.room_id,
        from: now.from.clone(),
        seq: now.seq,
        server_time: now.server_time,
        body: now.body.clone(),
        attributes: now.attributes.clone(),
        priority: now.priority,
    };
    let bytes = codec::encode(RecordKind::Message, &v1).unwrap();
    assert_eq!(codec::decode_message(&bytes).unwrap(), now);
    let written = codec::encode_message(&now).unwrap();
    assert_eq!(written[3], RecordKind::MessageV4 as u8);
    assert_eq!(codec::decode_message(&written).unwrap(), now);
    // The second layout (recall, before shadow bans) reads as not shadowed.
    #[derive(serde::Serialize)]
    struct MessageV2 {
        msg_id: roomcast_model::MessageId,
        room_id: RoomId,
        from: roomcast_model::UserId,
        seq: u64,
        server_time: i64,
        body: roomcast_model::MessageBody,
        attributes: BTreeMap<String, roomcast_model::AttributeValue>,
        priority: roomcast_model::MessagePriority,
        recalled: Option<roomcast_model::Recall>,
    }
    let recall = roomcast_model::Recall::new(uid("owner"), 60);
    let v2 = MessageV2 {
        msg_id: now.msg_id,
        room_id: now.room_id,
        from: now.from.clone(),
        seq: now.seq,
        server_time: now.server_time,
        body: now.body.clone(),
        attributes: now.attributes.clone(),
        priority: now.priority,
        recalled: Some(recall.clone()),
    };
    let bytes = codec::encode(RecordKind::MessageV2, &v2).unwrap();
    let mut want = now.clone();
    want.recalled = Some(recall);
    assert_eq!(codec::decode_message(&bytes).unwrap(), want);
    // A shadowed message keeps its mark.
    let mut shadowed = now.clone();
    shadowed.shadowed = true;
    let written = codec::encode_message(&shadowed).unwrap();
    assert_eq!(codec::decode_message(&written).unwrap(), shadowed);
    // The third layout (shadow bans, before hold for review) reads as not held.
    #[derive(serde::Serialize)]
    struct MessageV3 {
        msg_id: roomcast_model::MessageId,
        room_id: RoomId,
        from: roomcast_model::UserId,
        seq: u64,
        server_time: i64,
        body: roomcast_model::MessageBody,
        attributes: BTreeMap<String, roomcast_model::AttributeValue>,
        priority: roomcast_model::MessagePriority,
        recalled: Option<roomcast_model::Recall>,
        shadowed: bool,
    }
    let v3 = MessageV3 {
        msg_id: now.msg_id,
        room_id: now.room_id,
        from: now.from.clone(),
        seq: now.seq,
        server_time: now.server_time,
        body: now.body.clone(),
        attributes: now.attributes.clone(),
        priority: now.priority,
        recalled: None,
        shadowed: true,
    };
    let bytes = codec::encode(RecordKind::MessageV3, &v3).unwrap();
    assert_eq!(codec::decode_message(&bytes).unwrap(), shadowed);
    // A held message keeps when it is released.
    let mut held = now.clone();
    held.held_until = Some(5_000);
    let written = codec::encode_message(&held).unwrap();
    assert_eq!(codec::decode_message(&written).unwrap(), held);
}

/// Applies `sets` to `store` as one batch (one group commit), and reads back up to 10 of
/// `room`'s messages, oldest first.
fn apply_as_one_batch(store: &Store, sets: &[WriteSet], room: RoomId) -> Vec<MessageData> {
    let reader = store.blocking_reader();
    let batch = writeset::batch_of(sets, &reader.tree).unwrap();
    reader.tree.apply_batch(batch.into_batch()).unwrap();
    reader
        .messages(
            room,
            (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded),
            false,
            10,
        )
        .unwrap()
}

/// A recall rewrites the stored message without its body; one of a message that retention
/// removed earlier in the same batch does not bring it back.
#[tokio::test]
async fn a_recall_rewrites_the_message_and_never_revives_a_trimmed_one() {
    let store = Store::open(&StoreConfig::default()).unwrap();
    let room = RoomId::from_u64(9);
    apply(&store, |w| {
        w.put_room(&record(9, "r")).unwrap();
        for seq in 1..=3 {
            w.put_message(&message(9, seq, seq as i64)).unwrap();
        }
    })
    .await;
    let by = roomcast_model::Recall::new(uid("owner"), 77);
    apply(&store, |w| w.recall_message(room, 2, by.clone())).await;
    // Retention drops message 1, and a recall of it follows in the same batch.
    let mut trim = WriteSet::new();
    trim.trim_before(room, 2);
    let mut late = WriteSet::new();
    late.recall_message(room, 1, by.clone());
    let sets = [trim, late];
    let all = apply_as_one_batch(&store, &sets, room);
    assert_eq!(all.iter().map(|m| m.seq).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(all[0].recalled, Some(by));
    assert_eq!(
        all[0].body,
        roomcast_model::MessageBody::Text {
            content: String::new()
        }
    );
    assert_eq!(all[1], message(9, 3, 3));
}

/// A message and its recall in one batch (a cluster's log replayed in one group commit): the
/// recall applies to the message put earlier in the batch; a removal, or retention by age,
/// earlier in the batch is not undone by a recall after it.
#[tokio::test]
async fn a_recall_sees_the_message_put_earlier_in_its_batch() {
    let store = Store::open(&StoreConfig::default()).unwrap();
    let room = RoomId::from_u64(11);
    apply(&store, |w| w.put_room(&record(11, "r")).unwrap()).await;
    let by = roomcast_model::Recall::new(uid("admin"), 5);
    let mut sets = Vec::new();
    for seq in 1..=4 {
        let mut put = WriteSet::new();
        put.put_message(&message(11, seq, 10 * seq as i64)).unwrap();
        sets.push(put);
    }
    let mut recall = WriteSet::new();
    recall.recall_message(room, 2, by.clone());
    sets.push(recall);
    // Retention by age drops 1 (put in this batch), and a recall of it after does not revive it.
    let mut trim = WriteSet::new();
    trim.trim_older_than(room, 15);
    trim.recall_message(room, 1, by.clone());
    sets.push(trim);
    let all = apply_as_one_batch(&store, &sets, room);
    assert_eq!(all.iter().map(|m| m.seq).collect::<Vec<_>>(), [2, 3, 4]);
    assert_eq!(all[0].recalled, Some(by));
    assert_eq!(all[1].recalled, None);
    // The same through the replicated path, entries submitted back to back (the writer groups
    // them): the recall holds.
    let other = Store::open(&StoreConfig::default()).unwrap();
    let mut pending = Vec::new();
    for seq in 1..=50u64 {
        let mut put = WriteSet::new();
        put.put_message(&message(12, seq, seq as i64)).unwrap();
        pending.push(other.apply_replicated(&put.encode().unwrap()).unwrap());
        let mut recall = WriteSet::new();
        recall.recall_message(
            RoomId::from_u64(12),
            seq,
            roomcast_model::Recall::new(uid("a"), 1),
        );
        pending.push(other.apply_replicated(&recall.encode().unwrap()).unwrap());
    }
    for p in pending {
        p.await.unwrap();
    }
    other.read(|_| ()).await.unwrap();
    let all = other
        .blocking_reader()
        .messages(
            RoomId::from_u64(12),
            (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded),
            false,
            100,
        )
        .unwrap();
    assert_eq!(all.len(), 50);
    assert!(all.iter().all(|m| m.recalled.is_some()));
}

fn key_record(room: u64, from: &str, key: &str, seq: u64, at: i64) -> IdempotencyRecord {
    IdempotencyRecord {
        room: RoomId::from_u64(room),
        from: uid(from),
        key: key.into(),
        msg_id: roomcast_model::MessageId::from_u64(1000 + seq),
        seq,
        at,
    }
}

/// Idempotency keys are their own records: read per room, removed one by one, kept by the
/// checker and the salvager, and gone with their room (also when put in the same group).
#[tokio::test]
async fn idempotency_keys_are_their_own_records_and_go_with_their_room() {
    let dir = tempfile::tempdir().unwrap();
    let room = RoomId::from_u64(1);
    {
        let store = Store::open(&dir_config(dir.path())).unwrap();
        apply(&store, |w| w.put_room(&record(1, "one")).unwrap()).await;
        apply(&store, |w| w.put_room(&record(2, "two")).unwrap()).await;
        apply(&store, |w| {
            w.put_idempotency(&key_record(1, "bob", "k1", 1, 10))
                .unwrap();
            w.put_idempotency(&key_record(1, "ann", "k1", 2, 11))
                .unwrap();
            w.put_idempotency(&key_record(2, "bob", "k1", 1, 12))
                .unwrap();
        })
        .await;
        apply(&store, |w| w.remove_idempotency(room, &uid("ann"), "k1")).await;
        let reader = store.blocking_reader();
        assert_eq!(
            reader.idempotency_keys(room).unwrap(),
            [key_record(1, "bob", "k1", 1, 10)]
        );
        assert_eq!(
            reader.idempotency_keys(RoomId::from_u64(2)).unwrap().len(),
            1
        );
        store.flush_blocking().unwrap();
    }
    let report = check(dir.path()).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    let copy = tempfile::tempdir().unwrap();
    let to = copy.path().join("salvaged");
    salvage(dir.path(), &to).unwrap();
    {
        let salvaged = Store::open(&dir_config(&to)).unwrap();
        assert_eq!(
            salvaged
                .blocking_reader()
                .idempotency_keys(room)
                .unwrap()
                .len(),
            1
        );
    }
    let store = Store::open(&dir_config(dir.path())).unwrap();
    let mut put = WriteSet::new();
    put.put_idempotency(&key_record(1, "cat", "k2", 3, 13))
        .unwrap();
    let mut delete = WriteSet::new();
    delete.delete_room(room);
    let (a, b) = (store.submit(put), store.submit(delete));
    a.await.unwrap();
    b.await.unwrap();
    store.read(|_| ()).await.unwrap();
    let reader = store.blocking_reader();
    assert!(reader.idempotency_keys(room).unwrap().is_empty());
    assert_eq!(
        reader.idempotency_keys(RoomId::from_u64(2)).unwrap().len(),
        1
    );
}

/// An in-memory cluster log for the replication tests: entries per room in append order;
/// appends are acknowledged when the test says so.
#[derive(Default)]
struct MemoryLog {
    entries: parking_lot::Mutex<Vec<(Option<RoomId>, Vec<u8>)>>,
    waiting: parking_lot::Mutex<Vec<AppendDone>>,
    fail: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for MemoryLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryLog")
    }
}

impl MemoryLog {
    fn ack_all(&self) {
        let fail = self.fail.load(Ordering::SeqCst);
        for done in self.waiting.lock().drain(..) {
            done(if fail {
                Err(StoreError::Replication("fenced".into()))
            } else {
                Ok(())
            });
        }
    }
}

impl Replicator for MemoryLog {
    fn append(&self, room: Option<RoomId>, entry: Vec<u8>, done: AppendDone) {
        self.entries.lock().push((room, entry));
        self.waiting.lock().push(done);
    }

    fn barrier(&self, done: AppendDone) {
        self.waiting.lock().push(done);
    }
}

/// With a cluster log, a write is durable only once the log took it; the log's entries, applied
/// to another store in order, give the same rooms and messages; a refused append fails the
/// commit.
#[tokio::test]
async fn write_sets_go_to_the_cluster_log_and_replay_elsewhere() {
    let log = Arc::new(MemoryLog::default());
    let config = StoreConfig {
        replicator: Some(log.clone()),
        ..StoreConfig::default()
    };
    let store = Store::open(&config).unwrap();
    let mut set = WriteSet::new();
    set.put_room(&record(7, "seven")).unwrap();
    assert_eq!(set.room(), Some(RoomId::from_u64(7)));
    let created = store.submit(set);
    let mut set = WriteSet::new();
    set.put_message(&message(7, 1, 10)).unwrap();
    set.trim_before(RoomId::from_u64(7), 1);
    let sent = store.submit(set);
    let mut set = WriteSet::new();
    set.put_super_admin(&uid("root")).unwrap();
    assert_eq!(set.room(), None);
    let admin = store.submit(set);
    let barrier = store.commit();
    // Nothing is acknowledged before the log took it.
    let mut pending = Box::pin(async { (created.await, sent.await, admin.await, barrier.await) });
    assert!(futures_poll(&mut pending).is_none());
    log.ack_all();
    let (a, b, c, d) = pending.await;
    assert_eq!((a, b, c, d), (Ok(()), Ok(()), Ok(()), Ok(())));
    let entries = log.entries.lock().clone();
    assert_eq!(
        entries.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
        [Some(RoomId::from_u64(7)), Some(RoomId::from_u64(7)), None]
    );

    // Another node applies the log.
    let other = Store::open(&StoreConfig::default()).unwrap();
    for (_, entry) in &entries {
        other.apply_replicated(entry).unwrap().await.unwrap();
    }
    let (room, last, admins) = other
        .read(|reader| {
            (
                reader.room(RoomId::from_u64(7)).unwrap(),
                reader.last_seq(RoomId::from_u64(7)).unwrap(),
                reader.super_admins().unwrap(),
            )
        })
        .await
        .unwrap();
    assert_eq!(room, Some(record(7, "seven")));
    assert_eq!(last, 1);
    assert_eq!(admins, vec![uid("root")]);
    assert!(other.apply_replicated(b"garbage").is_err());

    // A refused append fails its commit.
    log.fail.store(true, Ordering::SeqCst);
    let mut set = WriteSet::new();
    set.put_message(&message(7, 2, 11)).unwrap();
    let refused = store.submit(set);
    log.ack_all();
    assert!(matches!(refused.await, Err(StoreError::Replication(_))));
}

/// Polls `f` once: its output if it is ready.
fn futures_poll<F: Future + Unpin>(f: &mut F) -> Option<F::Output> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match Pin::new(f).poll(&mut cx) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

/// A room's state read at one point, as snapshot parts applied to another store (that held
/// other things of the room, and other rooms), leaves the room exactly as read there, however
/// small the parts; other rooms are untouched.
#[tokio::test]
async fn a_room_snapshot_rebuilds_the_room_elsewhere() {
    let store = Store::open(&StoreConfig::default()).unwrap();
    let room = RoomId::from_u64(1);
    apply(&store, |w| w.put_room(&record(1, "one")).unwrap()).await;
    for seq in 1..=30 {
        apply(&store, |w| {
            w.put_message(&message(1, seq, seq as i64)).unwrap();
            w.put_audit(room, &entry(seq, Some("r")), 10).unwrap();
            w.trim_before(room, seq.saturating_sub(19).max(1));
        })
        .await;
    }
    apply(&store, |w| {
        w.put_idempotency(&key_record(1, "bob", "k1", 3, 10))
            .unwrap();
        w.open_copy(uid("keeper"), room, 12);
    })
    .await;
    let state = store
        .read(move |r| r.room_state(room))
        .await
        .unwrap()
        .unwrap();
    assert!(state.len() > 30, "{} keys", state.len());

    for max_bytes in [1, 600, 1 << 20] {
        let other = Store::open(&StoreConfig::default()).unwrap();
        // What the other store held of the room (an older copy) and of another room.
        apply(&other, |w| {
            w.put_room(&record(1, "stale")).unwrap();
            w.put_message(&message(1, 99, 99)).unwrap();
            w.put_room(&record(2, "two")).unwrap();
            w.put_message(&message(2, 1, 1)).unwrap();
        })
        .await;
        let parts = WriteSet::snapshot(room, state.clone(), max_bytes);
        if max_bytes == 1 {
            assert_eq!(parts.len(), state.len(), "one key per part at least");
        }
        for part in &parts {
            let bytes = part.encode().unwrap();
            other.apply_replicated(&bytes).unwrap().await.unwrap();
        }
        let (again, two) = other
            .read(move |r| {
                (
                    r.room_state(room).unwrap(),
                    r.room_state(RoomId::from_u64(2)).unwrap(),
                )
            })
            .await
            .unwrap();
        assert_eq!(again, state, "parts of {max_bytes} bytes");
        assert_eq!(two.len(), 3, "the other room: record, seq, message");
    }
}
