//! With the `metrics` feature, the engine reports through the `metrics` facade. This binary
//! installs a recording recorder (the application would install an exporter) and checks the
//! counters a small run moves.

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::MetricKind;
use roomcast::{CreateChatRoomOptions, Engine, Limits, MessagePriority, OutgoingMessage};

#[tokio::test]
async fn the_engine_reports_messages_deliveries_drops_rooms_and_members() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::set_global_recorder(recorder).unwrap();

    let mut limits = Limits::default();
    limits.room_delivery_rate = Some(1); // a bucket of 2: the third normal message is dropped
    limits.user_messages_per_window = None;
    let engine = Engine::builder().limits(limits).build().await.unwrap();
    engine.add_super_admin("host").await.unwrap();
    let host = engine.login("host").await.unwrap();
    let room = host
        .chat_room_manager()
        .create_chat_room(CreateChatRoomOptions::new("m"))
        .await
        .unwrap();
    let viewer = engine.login("viewer").await.unwrap();
    viewer
        .chat_room_manager()
        .join_chat_room(&room.room_id)
        .await
        .unwrap();
    let mut results = Vec::new();
    for _ in 0..3 {
        results.push(
            viewer
                .chat_manager()
                .send_message(
                    OutgoingMessage::text(room.room_id, "x").with_priority(MessagePriority::Normal),
                )
                .await
                .is_ok(),
        );
    }
    assert_eq!(results, [true, false, false]);
    engine.shutdown().await;

    let mut seen = std::collections::BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let (kind, key) = key.into_parts();
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        let value = match (kind, value) {
            (MetricKind::Counter, DebugValue::Counter(c)) => c as f64,
            (MetricKind::Gauge, DebugValue::Gauge(g)) => g.into_inner(),
            (_, DebugValue::Histogram(h)) => h.len() as f64,
            _ => continue,
        };
        seen.insert(name, value);
    }
    assert_eq!(
        seen.get("roomcast_messages_sent_total{}"),
        Some(&1.0),
        "{seen:?}"
    );
    assert_eq!(
        seen.get("roomcast_messages_dropped_total{priority=normal}"),
        Some(&2.0),
        "{seen:?}"
    );
    assert!(
        seen.get("roomcast_deliveries_total{}")
            .is_some_and(|d| *d >= 1.0),
        "{seen:?}"
    );
    assert_eq!(seen.get("roomcast_rooms{}"), Some(&1.0), "{seen:?}");
    assert_eq!(seen.get("roomcast_members{}"), Some(&2.0), "{seen:?}");
}
