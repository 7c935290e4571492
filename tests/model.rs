//! Model test: random sequences of operations, with restarts, against an in-memory model.
//! "roomcast should act like the model, even after restarts": after every step the engine's
//! public room list, member counts, history and attributes match the model's.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use roomcast::{
    ChatClient, CreateChatRoomOptions, Engine, HistoryQuery, OutgoingMessage, RoomId, SetAttributes,
};
use roomcast_workspace::harness_limits;

const USERS: [&str; 3] = ["ann", "bob", "cat"];

#[derive(Debug, Clone)]
enum Op {
    Create,
    Destroy(usize),
    Join(usize, usize),
    Leave(usize, usize),
    Send(usize, usize),
    SetAttribute(usize, usize, u8),
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Create),
        1 => (0..4usize).prop_map(Op::Destroy),
        4 => (0..3usize, 0..4usize).prop_map(|(u, r)| Op::Join(u, r)),
        2 => (0..3usize, 0..4usize).prop_map(|(u, r)| Op::Leave(u, r)),
        5 => (0..3usize, 0..4usize).prop_map(|(u, r)| Op::Send(u, r)),
        2 => (0..3usize, 0..4usize, 0..3u8).prop_map(|(u, r, k)| Op::SetAttribute(u, r, k)),
        1 => Just(Op::Restart),
    ]
}

#[derive(Default, Debug)]
struct ModelRoom {
    name: String,
    members: BTreeSet<usize>,
    messages: Vec<String>,
    attributes: BTreeMap<String, (usize, String)>,
}

#[derive(Default, Debug)]
struct Model {
    /// Live rooms, by id; `order` lists every room ever created, for picking by index.
    rooms: BTreeMap<RoomId, ModelRoom>,
    order: Vec<RoomId>,
}

struct Real {
    dir: tempfile::TempDir,
    engine: Engine,
    admin: ChatClient,
    users: Vec<ChatClient>,
}

async fn start(dir: &std::path::Path) -> (Engine, ChatClient, Vec<ChatClient>) {
    let engine = Engine::builder()
        .data_dir(dir)
        .limits(harness_limits())
        .build()
        .await
        .unwrap();
    engine.add_super_admin("admin").await.unwrap();
    let admin = engine.login("admin").await.unwrap();
    let mut users = Vec::new();
    for u in USERS {
        users.push(engine.login(u).await.unwrap());
    }
    (engine, admin, users)
}

impl Real {
    async fn new() -> Real {
        let dir = tempfile::tempdir().unwrap();
        let (engine, admin, users) = start(dir.path()).await;
        Real {
            dir,
            engine,
            admin,
            users,
        }
    }
}

/// Applies `op` to both; the engine's answer must be the model's.
async fn step(real: &mut Real, model: &mut Model, op: &Op, n: usize) {
    let pick = |i: usize| model.order.get(i % model.order.len().max(1)).copied();
    match *op {
        Op::Create => {
            let name = format!("room{n}");
            let room = real
                .admin
                .chat_room_manager()
                .create_chat_room(CreateChatRoomOptions::new(name.clone()))
                .await
                .unwrap();
            // The creator is in the room; it leaves so that only the three users are members.
            real.admin
                .chat_room_manager()
                .leave_chat_room(&room.room_id)
                .await
                .unwrap();
            model.order.push(room.room_id);
            model.rooms.insert(
                room.room_id,
                ModelRoom {
                    name,
                    ..ModelRoom::default()
                },
            );
        }
        Op::Destroy(r) => {
            let Some(id) = pick(r) else { return };
            let got = real.admin.chat_room_manager().destroy_chat_room(&id).await;
            match model.rooms.remove(&id) {
                Some(_) => got.unwrap(),
                None => assert_eq!(got.unwrap_err().code(), 705),
            }
        }
        Op::Join(u, r) => {
            let Some(id) = pick(r) else { return };
            let got = real.users[u].chat_room_manager().join_chat_room(&id).await;
            let expect = match model.rooms.get_mut(&id) {
                None => Err(705),
                Some(room) if room.members.contains(&u) => Err(701),
                Some(room) => {
                    room.members.insert(u);
                    Ok(())
                }
            };
            assert_eq!(got.map(drop).map_err(|e| e.code()), expect, "{op:?}");
        }
        Op::Leave(u, r) => {
            let Some(id) = pick(r) else { return };
            let got = real.users[u].chat_room_manager().leave_chat_room(&id).await;
            // Nothing is set with delete-when-left, so attributes stay when members leave.
            let expect = match model.rooms.get_mut(&id) {
                None => Err(705),
                Some(room) if !room.members.contains(&u) => Err(702),
                Some(room) => {
                    room.members.remove(&u);
                    Ok(())
                }
            };
            assert_eq!(got.map_err(|e| e.code()), expect, "{op:?}");
        }
        Op::Send(u, r) => {
            let Some(id) = pick(r) else { return };
            let text = format!("m{n}");
            let got = real.users[u]
                .chat_manager()
                .send_message(OutgoingMessage::text(id, text.clone()))
                .await;
            let expect = match model.rooms.get_mut(&id) {
                None => Err(705),
                Some(room) if !room.members.contains(&u) => Err(702),
                Some(room) => {
                    room.messages.push(text);
                    Ok(room.messages.len() as u64)
                }
            };
            assert_eq!(got.map(|m| m.seq()).map_err(|e| e.code()), expect, "{op:?}");
        }
        Op::SetAttribute(u, r, k) => {
            let Some(id) = pick(r) else { return };
            let key = format!("k{k}");
            let value = format!("v{n}");
            let got = real.users[u]
                .chat_room_manager()
                .set_chat_room_attributes(&id, SetAttributes::new([(key.clone(), value.clone())]))
                .await;
            let expect: Result<Vec<u32>, u32> = match model.rooms.get_mut(&id) {
                None => Err(705),
                Some(room) if !room.members.contains(&u) => Err(702),
                Some(room) => match room.attributes.get(&key) {
                    Some((owner, _)) if *owner != u => Ok(vec![703]),
                    _ => {
                        room.attributes.insert(key, (u, value));
                        Ok(vec![])
                    }
                },
            };
            let got = got
                .map(|failed| failed.iter().map(|(_, e)| e.code()).collect::<Vec<_>>())
                .map_err(|e| e.code());
            assert_eq!(got, expect, "{op:?}");
        }
        Op::Restart => {
            real.engine.shutdown().await;
            let (engine, admin, users) = start(real.dir.path()).await;
            real.engine = engine;
            real.admin = admin;
            real.users = users;
            for room in model.rooms.values_mut() {
                room.members.clear();
            }
        }
    }
}

/// After every step: the engine shows what the model holds.
async fn compare(real: &Real, model: &Model) {
    let page = real
        .admin
        .chat_room_manager()
        .fetch_public_chat_rooms(1, 100, None)
        .await
        .unwrap();
    let listed: BTreeMap<RoomId, (String, u32)> = page
        .data
        .iter()
        .map(|r| (r.room_id, (r.name.clone(), r.member_count)))
        .collect();
    let expected: BTreeMap<RoomId, (String, u32)> = model
        .rooms
        .iter()
        .map(|(id, r)| (*id, (r.name.clone(), r.members.len() as u32)))
        .collect();
    assert_eq!(listed, expected);
    for (id, room) in &model.rooms {
        let Some(&member) = room.members.iter().next() else {
            continue;
        };
        let reader = &real.users[member];
        let history = reader
            .chat_manager()
            .fetch_history_messages(id, HistoryQuery::after(0, 200))
            .await
            .unwrap();
        let texts: Vec<String> = history
            .data
            .iter()
            .map(|m| m.text().unwrap().to_string())
            .collect();
        assert_eq!(texts, room.messages, "history of {id}");
        let attrs = reader
            .chat_room_manager()
            .fetch_all_chat_room_attributes(id)
            .await
            .unwrap();
        let expected: BTreeMap<String, String> = room
            .attributes
            .iter()
            .map(|(k, (_, v))| (k.clone(), v.clone()))
            .collect();
        assert_eq!(attrs, expected, "attributes of {id}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_engine_acts_like_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut real = Real::new().await;
            let mut model = Model::default();
            step(&mut real, &mut model, &Op::Create, 0).await;
            for (n, op) in ops.iter().enumerate() {
                step(&mut real, &mut model, op, n + 1).await;
                compare(&real, &model).await;
            }
            real.engine.shutdown().await;
        });
    }
}
