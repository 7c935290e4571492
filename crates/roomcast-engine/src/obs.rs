//! Observability: metrics through the `metrics` facade (with the `metrics` feature; without it
//! these are no-ops the compiler removes). The application picks the exporter.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `roomcast_messages_sent_total` | counter | | messages accepted by rooms |
//! | `roomcast_messages_dropped_total` | counter | `priority` | messages dropped by a room's delivery threshold |
//! | `roomcast_deliveries_total` | counter | | events and messages pushed to members' queues |
//! | `roomcast_lagged_total` | counter | | deliveries dropped from full queues (missed-N) |
//! | `roomcast_rooms` | gauge | | rooms in the directory |
//! | `roomcast_members` | gauge | | members across running rooms |
//! | `roomcast_flush_seconds` | histogram | | time from a durable write to its flush |
//!
//! Tracing: every engine call runs in a `roomcast.call` span naming the room and the operation,
//! and room actors log at debug level under the room's id; message bodies are never logged (a
//! `ChatMessage`'s `Debug` leaves the body out).

#[cfg(feature = "metrics")]
mod imp {
    use roomcast_model::MessagePriority;

    pub(crate) fn message_sent() {
        metrics::counter!("roomcast_messages_sent_total").increment(1);
    }
    pub(crate) fn message_dropped(priority: MessagePriority) {
        let p = match priority {
            MessagePriority::Low => "low",
            MessagePriority::Normal => "normal",
            MessagePriority::High => "high",
        };
        metrics::counter!("roomcast_messages_dropped_total", "priority" => p).increment(1);
    }
    pub(crate) fn delivered(n: u64) {
        metrics::counter!("roomcast_deliveries_total").increment(n);
    }
    pub(crate) fn lagged(n: u64) {
        metrics::counter!("roomcast_lagged_total").increment(n);
    }
    pub(crate) fn rooms(n: usize) {
        metrics::gauge!("roomcast_rooms").set(n as f64);
    }
    pub(crate) fn members_changed(delta: i64) {
        metrics::gauge!("roomcast_members").increment(delta as f64);
    }
    pub(crate) fn flushed(seconds: f64) {
        metrics::histogram!("roomcast_flush_seconds").record(seconds);
    }
}

#[cfg(not(feature = "metrics"))]
mod imp {
    use roomcast_model::MessagePriority;

    pub(crate) fn message_sent() {}
    pub(crate) fn message_dropped(_: MessagePriority) {}
    pub(crate) fn delivered(_: u64) {}
    pub(crate) fn lagged(_: u64) {}
    pub(crate) fn rooms(_: usize) {}
    pub(crate) fn members_changed(_: i64) {}
    pub(crate) fn flushed(_: f64) {}
}

pub(crate) use imp::*;
