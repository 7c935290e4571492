//! Store tests: codec envelope checks, reopen, group commit, corrupt records.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

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
            offline_grace_ms: Some(1_000),
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
    }
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
    let bytes = codec::encode(RecordKind::Room, &r).unwrap();
    let back: RoomRecord = codec::decode(RecordKind::Room, &bytes).unwrap();
    assert_eq!(back, r);
}

#[test]
fn codec_rejects_every_single_byte_corruption_without_panicking() {
    let bytes = codec::encode(RecordKind::Room, &record(7, "room")).unwrap();
    for at in 0..bytes.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = bytes.clone();
            bad[at] ^= flip;
            let got = codec::decode::<RoomRecord>(RecordKind::Room, &bad);
            assert!(
                matches!(got, Err(StoreError::Corrupt { .. })),
                "byte {at} ^ {flip:#x}"
            );
        }
    }
    for len in 0..bytes.len() {
        assert!(codec::decode::<RoomRecord>(RecordKind::Room, &bytes[..len]).is_err());
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(codec::decode::<RoomRecord>(RecordKind::Room, &longer).is_err());
}

#[test]
fn codec_checks_kind_version_and_length_limit() {
    let bytes = codec::encode(RecordKind::Room, &record(7, "room")).unwrap();
    let err = codec::decode::<RoomRecord>(RecordKind::SuperAdmin, &bytes).unwrap_err();
    assert!(err.to_string().contains("kind"), "{err}");

    let mut v2 = bytes.clone();
    v2[2] = 2;
    let err = codec::decode::<RoomRecord>(RecordKind::Room, &v2).unwrap_err();
    assert!(err.to_string().contains("version"), "{err}");

    let mut huge = bytes[..codec::HEADER_LEN].to_vec();
    huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = codec::decode::<RoomRecord>(RecordKind::Room, &huge).unwrap_err();
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
        RecordKind::Room,
        &Fake {
            id: 1,
            name: "NOT A USER".into(),
        },
    )
    .unwrap();
    assert!(matches!(
        codec::decode::<RoomRecord>(RecordKind::Room, &bytes),
        Err(StoreError::Corrupt { .. })
    ));
}

#[tokio::test]
async fn rooms_and_super_admins_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(&dir_config(dir.path())).unwrap();
        store.put_room(&record(1, "one")).unwrap();
        store.put_room(&record(2, "two")).unwrap();
        store.put_room(&record(3, "three")).unwrap();
        store.delete_room(RoomId::from_u64(2)).unwrap();
        store.put_super_admin(&uid("root")).unwrap();
        store.put_super_admin(&uid("zed")).unwrap();
        assert!(store.remove_super_admin(&uid("zed")).unwrap());
        assert!(!store.remove_super_admin(&uid("nobody")).unwrap());
        store.commit().await.unwrap();
    }
    let store = Store::open(&dir_config(dir.path())).unwrap();
    let rooms: Vec<RoomRecord> = store.rooms().collect::<Result<_, _>>().unwrap();
    assert_eq!(rooms, vec![record(1, "one"), record(3, "three")]);
    assert_eq!(
        store.room(RoomId::from_u64(3)).unwrap(),
        Some(record(3, "three"))
    );
    assert_eq!(store.room(RoomId::from_u64(2)).unwrap(), None);
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
            store.put_room(&record(i, "r")).unwrap();
            store.commit().await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(store.rooms().count(), 200);
}

#[test]
fn a_corrupt_record_is_an_error_item_and_the_rest_stays_readable() {
    let store = Store::open(&StoreConfig::default()).unwrap();
    store.put_room(&record(1, "one")).unwrap();
    store.put_room(&record(3, "three")).unwrap();
    store
        .inner
        .rooms
        .insert(2u64.to_be_bytes(), &b"RC garbage"[..])
        .unwrap();
    let items: Vec<_> = store.rooms().collect();
    assert_eq!(items.len(), 3);
    assert!(items[0].is_ok());
    let err = items[1].as_ref().unwrap_err();
    assert!(err.to_string().contains("room 2"), "{err}");
    assert!(items[2].is_ok());
    assert!(store.room(RoomId::from_u64(2)).is_err());
    assert!(store.room(RoomId::from_u64(3)).unwrap().is_some());
}

#[test]
fn a_locked_directory_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(&dir_config(dir.path())).unwrap();
    let second = Store::open(&dir_config(dir.path()));
    assert!(matches!(second, Err(StoreError::Io(_))));
}

mod fuzz {
    //! The record decoder against random and mutated bytes: an error or a value, never a panic.

    use proptest::prelude::*;

    use super::*;

    fn valid() -> Vec<u8> {
        codec::encode(RecordKind::Room, &record(7, "room")).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = codec::decode::<RoomRecord>(RecordKind::Room, &bytes);
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
            let _ = codec::decode::<RoomRecord>(RecordKind::Room, &bytes);
            let end = cut.index(bytes.len() + 1);
            let _ = codec::decode::<RoomRecord>(RecordKind::Room, &bytes[..end]);
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
            out.push(RecordKind::Room as u8);
            out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            let mut crc = crc32fast::Hasher::new();
            crc.update(&out[..8]);
            crc.update(&payload);
            out.extend_from_slice(&crc.finalize().to_le_bytes());
            out.extend_from_slice(&payload);
            let _ = codec::decode::<RoomRecord>(RecordKind::Room, &out);
            let _ = codec::decode::<roomcast_model::MessageData>(RecordKind::Room, &out);
        }
    }
}
