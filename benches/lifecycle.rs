//! Round-trip cost of the lifecycle calls (join + leave through the room actor and back), with
//! the number of members already in the room as the parameter: a join fans its event out to
//! all of them, so this also shows the per-member cost of event delivery.
//!
//! `cargo bench --bench lifecycle`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use roomcast::{CreateChatRoomOptions, Engine};

fn join_leave(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("join_leave_round_trip");
    for members in [1usize, 100, 1_000] {
        let (engine, room, client) = rt.block_on(async {
            let engine = Engine::builder().build().await.unwrap();
            engine.add_super_admin("owner").await.unwrap();
            let owner = engine.login("owner").await.unwrap();
            let room = owner
                .chat_room_manager()
                .create_chat_room(CreateChatRoomOptions::new("bench").with_max_users(10_000))
                .await
                .unwrap();
            for n in 1..members {
                let c = engine.login(format!("m{n}")).await.unwrap();
                c.chat_room_manager()
                    .join_chat_room(&room.room_id)
                    .await
                    .unwrap();
            }
            let client = engine.login("bencher").await.unwrap();
            (engine, room.room_id, client)
        });
        group.throughput(Throughput::Elements(2 * members as u64));
        group.bench_with_input(BenchmarkId::from_parameter(members), &members, |b, _| {
            let rooms = client.chat_room_manager();
            b.iter(|| {
                rt.block_on(async {
                    black_box(rooms.join_chat_room(&room).await.unwrap());
                    rooms.leave_chat_room(&room).await.unwrap();
                })
            });
        });
        rt.block_on(engine.shutdown());
    }
    group.finish();
}

criterion_group!(benches, join_leave);
criterion_main!(benches);
