//! Fan-out throughput of roomcast: one room, one publisher, N online members each with a
//! counting `ChatEventHandler`; one iteration is a burst of messages, timed until every member's
//! handler has accounted for every message. Member counts 1k, 10k and 100k (one bench id each).
//!
//! `cargo bench --bench fanout`. For the side-by-side comparison with tokio broadcast, mpsc per
//! member and the actix ChatServer pattern, run `cargo run --release --example fanout_report`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use roomcast_workspace::fanout::roomcast_contender::Roomcast;
use roomcast_workspace::fanout::{burst, Contender};

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout_burst");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for (members, messages) in [(1_000usize, 500usize), (10_000, 500), (100_000, 100)] {
        let mut rc = Roomcast::new(members, 1024, None);
        group.throughput(Throughput::Elements((members * messages) as u64));
        group.bench_with_input(BenchmarkId::from_parameter(members), &members, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let run = burst(&mut rc as &mut dyn Contender, members, messages);
                    assert!(run.complete && run.lost == 0, "incomplete run: {run:?}");
                    total += run.elapsed;
                }
                total
            });
        });
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
