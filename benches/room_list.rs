//! Cost of one page of the public room list, newest first, at 1,000 to 100,000 rooms: the list
//! is an id order beside the room map, so a page costs O(page), not O(rooms). With a name
//! filter, the first page walks the rooms once and the next pages read the remembered matches.
//!
//! `cargo bench --bench room_list`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use roomcast_workspace::scale::{empty_rooms, report_engine};

fn room_list(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("public_room_list_page");
    for rooms in [1_000usize, 10_000, 100_000] {
        let (engine, viewer) = rt.block_on(async {
            let (engine, owner) = report_engine(None).await;
            empty_rooms(&owner, 0..rooms).await;
            let viewer = engine.login("viewer").await.unwrap();
            (engine, viewer)
        });
        let list = viewer.chat_room_manager();
        group.bench_with_input(BenchmarkId::new("newest", rooms), &rooms, |b, _| {
            b.iter(|| {
                rt.block_on(async {
                    black_box(list.fetch_public_chat_rooms(1, 20, None).await.unwrap())
                })
            });
        });
        let middle = (rooms / 40).max(1) as u32;
        group.bench_with_input(BenchmarkId::new("middle", rooms), &rooms, |b, _| {
            b.iter(|| {
                rt.block_on(async {
                    black_box(
                        list.fetch_public_chat_rooms(middle, 20, None)
                            .await
                            .unwrap(),
                    )
                })
            });
        });
        group.bench_with_input(
            BenchmarkId::new("filtered_next_page", rooms),
            &rooms,
            |b, _| {
                b.iter(|| {
                    rt.block_on(async {
                        black_box(
                            list.fetch_public_chat_rooms(2, 20, Some("room 1"))
                                .await
                                .unwrap(),
                        )
                    })
                });
            },
        );
        rt.block_on(engine.shutdown());
    }
    group.finish();
}

criterion_group!(benches, room_list);
criterion_main!(benches);
