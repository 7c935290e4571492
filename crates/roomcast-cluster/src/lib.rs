//! roomcast's cluster foundation: what several roomcast nodes share through NATS JetStream.
//!
//! A [`Cluster`] is one node's handle on one cluster (a name, so that several clusters can
//! share a NATS). It offers five primitives, each a thin layer over a NATS feature, with no
//! consensus of its own:
//!
//! - **Room leases** ([`Cluster::acquire`], [`Lease`], [`LeaseKeeper`]): at most one node owns a
//!   room at a time. A lease is a key of the KV bucket `roomcast_<cluster>_owners` whose value
//!   is the owner's node id; the bucket's `max_age` is the lease TTL, so a lease that is not
//!   renewed disappears and another node can take the room. Every change is a compare-and-set
//!   on the key's revision, decided by JetStream.
//! - **Per-room command logs with fencing** ([`Cluster::append`], [`Cluster::replay`]): one
//!   JetStream stream `roomcast_<cluster>_rooms`, one subject per room. An append names the
//!   room log's last sequence the writer has seen; JetStream refuses it if the log moved on
//!   ([`ErrorKind::Fenced`]), so a node that lost its lease and has a stale view cannot write.
//! - **Node-to-node calls** ([`Cluster::serve`], [`Cluster::request`]): core NATS
//!   request/reply on `roomcast.<cluster>.node.<node>.call`.
//! - **Room events** ([`Cluster::publish_room`], [`Cluster::subscribe_room`]): core NATS
//!   publish/subscribe on `roomcast.<cluster>.room.<room>.events` (at most once, not stored).
//! - **User subjects** ([`Cluster::publish_user`], [`Cluster::subscribe_user`]): core NATS on
//!   `roomcast.<cluster>.user.<hex of the user id>`, for the nodes where one user has sessions.
//!
//! # Target server
//! nats-server 2.9 with JetStream (`-js`). Nothing here needs 2.10 or later: leases use the
//! bucket-wide `max_age` (2.9 has no per-message TTL), and no subject transform, multi-filter
//! consumer or batch get is used.
//!
//! # Errors and time
//! Every call returns a [`ClusterError`] with a stable [`ErrorKind`]; no async-nats type
//! appears in this crate's API. Every call is bounded by
//! [`ClusterConfig::request_timeout`] (a replay: each step of it) and fails with
//! [`ErrorKind::Unavailable`] when NATS is unreachable or too slow; a call made while the
//! connection is known to be down fails at once. The client reconnects by itself in the
//! background (at most a second between attempts), so later calls succeed again once NATS is
//! back.
//!
//! # Tests
//! The `testing` feature adds `testing::NatsServer`, a throwaway local `nats-server` for
//! tests (this crate's own run against a real server).

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod config;
mod directory;
mod error;
mod lease;
mod log;
mod messaging;
mod nats;
#[cfg(feature = "testing")]
pub mod testing;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self, stream};

pub use bytes::Bytes;
pub use config::{
    ClusterConfig, DEFAULT_COMPACTION_BYTES, DEFAULT_LEASE_TTL, DEFAULT_REQUEST_TIMEOUT,
    MAX_NAME_LEN, MIN_LEASE_TTL,
};
pub use directory::{DirectoryChange, RoomDirectory};
pub use error::{ClusterError, ErrorKind};
pub use lease::{Lease, LeaseKeeper, LeaseStatus};
pub use log::LogEntry;
pub use messaging::{NodeRequest, NodeRequests, RoomEvents, UserMessage, UserMessages};

use nats::Names;

/// Bytes of the server's `max_payload` kept for the headers this crate adds to a message;
/// [`Cluster::max_payload`] is what is left for the payload.
pub const HEADER_ALLOWANCE: usize = 512;

/// The longest wait between two reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// What a node knows of its connection to NATS ([`Cluster::connection`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Connection {
    /// Whether the connection is up.
    pub connected: bool,
    /// How many times, since [`Cluster::connect`], the node may have missed room events: the
    /// connection went down, or the server dropped messages for a slow subscriber. Core NATS
    /// delivers at most once, so whoever relies on room events catches up after each.
    pub outages: u64,
}

/// One node's handle on a cluster: cheap to clone (clones share one NATS connection).
///
/// Dropping the last clone closes the connection. Leases this node holds then expire after
/// `lease_ttl` unless released first.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClusterConfig,
    names: Names,
    client: async_nats::Client,
    jetstream: jetstream::Context,
    owners: stream::Stream,
    rooms: stream::Stream,
    /// The room directory's bucket, opened on first use.
    directory: tokio::sync::OnceCell<async_nats::jetstream::kv::Store>,
    connection: tokio::sync::watch::Sender<Connection>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("cluster", &self.inner.config.cluster)
            .field("node", &self.inner.config.node)
            .field("servers", &self.inner.config.servers)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl Cluster {
    /// Connects to NATS and creates, or binds to, this cluster's lease bucket and log stream.
    ///
    /// Idempotent: every node calls it, at once if it likes; the first creates the bucket and
    /// the stream, the others find them. Fails with [`ErrorKind::InvalidConfig`] for a bad
    /// configuration, [`ErrorKind::Unavailable`] when no server answers (or JetStream is not
    /// enabled on it), and [`ErrorKind::ConfigMismatch`] when the bucket exists with another
    /// `lease_ttl`.
    pub async fn connect(config: ClusterConfig) -> Result<Cluster, ClusterError> {
        config.validate()?;
        let mut servers = Vec::with_capacity(config.servers.len());
        for server in &config.servers {
            let addr = server.parse::<async_nats::ServerAddr>().map_err(|e| {
                ClusterError::with_source(
                    ErrorKind::InvalidConfig,
                    format!("bad NATS server address {server:?}"),
                    e,
                )
            })?;
            servers.push(addr);
        }
        let timeout = config.request_timeout;
        let (connection, _) = tokio::sync::watch::channel(Connection::default());
        let events = connection.clone();
        let client = async_nats::ConnectOptions::new()
            .event_callback(move |event| {
                match event {
                    async_nats::Event::Connected => events.send_modify(|c| c.connected = true),
                    async_nats::Event::Disconnected => events.send_modify(|c| {
                        c.connected = false;
                        c.outages += 1;
                    }),
                    async_nats::Event::SlowConsumer(_) => events.send_modify(|c| c.outages += 1),
                    _ => {}
                }
                std::future::ready(())
            })
            .name(format!("roomcast {}/{}", config.cluster, config.node))
            .connection_timeout(timeout)
            .request_timeout(Some(timeout))
            .reconnect_delay_callback(reconnect_delay)
            .connect(servers)
            .await
            .map_err(nats::connect)?;
        // Up (its first event may still be on its way), unless it went down already.
        connection.send_if_modified(|c| {
            let up = !c.connected && c.outages == 0;
            c.connected |= up;
            up
        });
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(timeout)
            .ack_timeout(timeout)
            .build(client.clone());
        let names = Names::new(&config.cluster);

        let owners = ensure_stream(
            &jetstream,
            timeout,
            owners_stream_config(&config, &names),
            |existing| {
                if existing.max_age != config.lease_ttl {
                    return Err(format!(
                        "the lease bucket {} has lease_ttl (max_age) {:?}, this node {:?}: every \
                         node of a cluster must use the same lease_ttl",
                        names.owners_bucket, existing.max_age, config.lease_ttl
                    ));
                }
                if existing.max_messages_per_subject != 1 {
                    return Err(format!(
                        "the lease bucket {} keeps {} revisions per key, not 1",
                        names.owners_bucket, existing.max_messages_per_subject
                    ));
                }
                Ok(())
            },
        )
        .await?;
        let rooms = ensure_stream(
            &jetstream,
            timeout,
            rooms_stream_config(&config, &names),
            |existing| {
                if existing.max_age != Duration::ZERO
                    || existing.max_messages > 0
                    || existing.max_bytes > 0
                    || existing.max_messages_per_subject > 0
                {
                    return Err(format!(
                        "the room log stream {} has limits that would drop log entries",
                        names.rooms_stream
                    ));
                }
                Ok(())
            },
        )
        .await?;

        Ok(Cluster {
            inner: Arc::new(Inner {
                config,
                names,
                client,
                jetstream,
                owners,
                rooms,
                directory: tokio::sync::OnceCell::new(),
                connection,
            }),
        })
    }

    /// The configuration this handle was connected with.
    pub fn config(&self) -> &ClusterConfig {
        &self.inner.config
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.inner.config.node
    }

    /// Whether the connection to NATS is up right now (it reconnects by itself when not).
    pub fn is_connected(&self) -> bool {
        self.inner.client.connection_state() == State::Connected
    }

    /// The connection's state, as it changes: whether it is up, and how many outages (or
    /// dropped room events) there were. Subscriptions are renewed by the client on reconnection
    /// before anything sent after it.
    pub fn connection(&self) -> tokio::sync::watch::Receiver<Connection> {
        self.inner.connection.subscribe()
    }

    /// The largest payload of an append, a request, a response or a room event: the server's
    /// `max_payload` (1 MiB unless the server is configured otherwise) less
    /// [`HEADER_ALLOWANCE`]. A larger one fails with [`ErrorKind::PayloadTooLarge`] before
    /// anything is sent.
    pub fn max_payload(&self) -> usize {
        self.inner
            .client
            .server_info()
            .max_payload
            .saturating_sub(HEADER_ALLOWANCE)
    }

    pub(crate) fn check_payload(&self, what: &str, len: usize) -> Result<(), ClusterError> {
        let max = self.max_payload();
        if len > max {
            return Err(ClusterError::new(
                ErrorKind::PayloadTooLarge,
                format!(
                    "{what}: the payload is {len} bytes, the limit is {max} (the server's \
                     max_payload less {HEADER_ALLOWANCE} bytes for headers)"
                ),
            ));
        }
        Ok(())
    }

    /// Fails at once when the connection is known to be down, so that a call made during an
    /// outage neither waits for its timeout nor gets queued to be sent after a reconnect.
    pub(crate) fn ensure_connected(&self, what: &str) -> Result<(), ClusterError> {
        match self.inner.client.connection_state() {
            State::Connected => Ok(()),
            state => Err(nats::disconnected(what, &state)),
        }
    }

    /// Runs `call` under the request timeout.
    pub(crate) async fn bounded<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, ClusterError>>,
    ) -> Result<T, ClusterError> {
        bounded(self.inner.config.request_timeout, what, call).await
    }

    pub(crate) fn names(&self) -> &Names {
        &self.inner.names
    }

    pub(crate) fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    pub(crate) fn jetstream(&self) -> &jetstream::Context {
        &self.inner.jetstream
    }

    pub(crate) fn owners(&self) -> &stream::Stream {
        &self.inner.owners
    }

    pub(crate) fn rooms(&self) -> &stream::Stream {
        &self.inner.rooms
    }

    pub(crate) fn directory_cell(
        &self,
    ) -> &tokio::sync::OnceCell<async_nats::jetstream::kv::Store> {
        &self.inner.directory
    }
}

async fn bounded<T>(
    timeout: Duration,
    what: &str,
    call: impl Future<Output = Result<T, ClusterError>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result,
        Err(_) => Err(nats::timed_out(what, timeout)),
    }
}

/// No wait before the first attempt, then 50 ms doubling up to [`MAX_RECONNECT_DELAY`].
fn reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let exp = u32::try_from(attempts - 2).unwrap_or(u32::MAX).min(10);
    (Duration::from_millis(50) * 2u32.pow(exp)).min(MAX_RECONNECT_DELAY)
}

/// The lease bucket's stream, as a NATS KV bucket of history 1 (readable with `nats kv`).
fn owners_stream_config(config: &ClusterConfig, names: &Names) -> stream::Config {
    stream::Config {
        name: names.owners_stream.clone(),
        description: Some(format!(
            "roomcast cluster {}: room leases (KV bucket {})",
            config.cluster, names.owners_bucket
        )),
        subjects: vec![names.owners_subjects()],
        max_messages_per_subject: 1,
        max_age: config.lease_ttl,
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        deny_purge: false,
        allow_direct: true,
        ..Default::default()
    }
}

/// The room logs' stream: on disk, no limits (a room's entries go only by [`Cluster::purge`]).
fn rooms_stream_config(config: &ClusterConfig, names: &Names) -> stream::Config {
    stream::Config {
        name: names.rooms_stream.clone(),
        description: Some(format!(
            "roomcast cluster {}: one command log per room",
            config.cluster
        )),
        subjects: vec![names.logs()],
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        allow_direct: true,
        ..Default::default()
    }
}

/// Creates a stream, or binds to it when it exists. JetStream answers a create of an existing
/// stream with the same configuration with success; a stream that exists with another
/// configuration (an operator's change, another version's description) is accepted if
/// `check` finds what matters the same. Nodes racing here all succeed: on nats-server 2.9 the
/// losers of a race may be told that the subjects overlap with an existing stream (the
/// winner's), so that answer too is followed by reading the stream by name.
pub(crate) async fn ensure_stream(
    jetstream: &jetstream::Context,
    timeout: Duration,
    config: stream::Config,
    check: impl Fn(&stream::Config) -> Result<(), String>,
) -> Result<stream::Stream, ClusterError> {
    let name = config.name.clone();
    let subjects = config.subjects.clone();
    let what = format!("creating the stream {name}");
    let created = bounded(timeout, &what, async {
        match jetstream.create_stream(config).await {
            Ok(stream) => Ok(Some(stream)),
            Err(e) if nats::is_stream_in_the_way(&e) => Ok(None),
            Err(e) => Err(nats::create_stream(&what, e)),
        }
    })
    .await?;
    let stream = match created {
        Some(stream) => stream,
        None => {
            let what = format!("reading the stream {name}");
            bounded(timeout, &what, async {
                jetstream
                    .get_stream(&name)
                    .await
                    .map_err(|e| nats::get_stream(&what, e))
            })
            .await?
        }
    };
    let existing = &stream.cached_info().config;
    if existing.subjects != subjects {
        return Err(ClusterError::new(
            ErrorKind::ConfigMismatch,
            format!(
                "the stream {name} has subjects {:?}, expected {subjects:?}",
                existing.subjects
            ),
        ));
    }
    check(existing).map_err(|message| ClusterError::new(ErrorKind::ConfigMismatch, message))?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delay_grows_to_a_second() {
        assert_eq!(reconnect_delay(0), Duration::ZERO);
        assert_eq!(reconnect_delay(1), Duration::ZERO);
        assert_eq!(reconnect_delay(2), Duration::from_millis(50));
        assert_eq!(reconnect_delay(3), Duration::from_millis(100));
        assert_eq!(reconnect_delay(6), Duration::from_millis(800));
        assert_eq!(reconnect_delay(7), MAX_RECONNECT_DELAY);
        assert_eq!(reconnect_delay(usize::MAX), MAX_RECONNECT_DELAY);
    }
}
