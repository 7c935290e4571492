//! The cluster's room directory: a KV bucket (`roomcast_<cluster>_rooms`) holding each room's
//! public summary, written by the room's owning node and watched by every node, so that each
//! node lists every room of the cluster.

use std::pin::Pin;
use std::task::{Context, Poll};

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_core::Stream;

use crate::error::{ClusterError, ErrorKind};
use crate::nats;
use crate::Cluster;

/// A change of the directory ([`RoomDirectory`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DirectoryChange {
    /// The room.
    pub room: u64,
    /// Its summary, or `None`: the room was removed.
    pub summary: Option<Bytes>,
    /// True once the watch has delivered every room that existed when it started (this change
    /// included): what follows is live.
    pub current: bool,
}

/// The room directory's changes ([`Cluster::watch_rooms`]): first every room's current summary,
/// then each change as it happens. Stops when dropped.
pub struct RoomDirectory {
    watch: kv::Watch,
    empty: bool,
}

impl RoomDirectory {
    /// True if the directory held nothing when the watch started: nothing will come until
    /// a change (and so no change marked `current`).
    pub fn started_empty(&self) -> bool {
        self.empty
    }
}

impl std::fmt::Debug for RoomDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoomDirectory")
    }
}

impl Stream for RoomDirectory {
    type Item = Result<DirectoryChange, ClusterError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let entry = match Pin::new(&mut self.watch).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Some(Err(nats::unavailable(
                        "watching the room directory",
                        e,
                    ))))
                }
                Poll::Ready(Some(Ok(entry))) => entry,
            };
            // Keys that are not room ids are not ours: skipped.
            let Ok(room) = entry.key.parse::<u64>() else {
                continue;
            };
            let summary = match entry.operation {
                kv::Operation::Put => Some(entry.value),
                kv::Operation::Delete | kv::Operation::Purge => None,
            };
            return Poll::Ready(Some(Ok(DirectoryChange {
                room,
                summary,
                current: entry.seen_current,
            })));
        }
    }
}

impl Cluster {
    pub(crate) async fn directory(&self) -> Result<kv::Store, ClusterError> {
        self.directory_cell()
            .get_or_try_init(|| self.open_directory())
            .await
            .cloned()
    }

    async fn open_directory(&self) -> Result<kv::Store, ClusterError> {
        use async_nats::jetstream::stream;
        let bucket = self.names().rooms_bucket();
        let what = format!("opening the room directory {bucket}");
        // The bucket's stream is made here with a KV bucket's settings (async-nats's own
        // create cannot read nats-server 2.9's answer), then bound to as a bucket.
        let config = stream::Config {
            name: format!("KV_{bucket}"),
            description: Some("roomcast: every room's public summary".into()),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            storage: stream::StorageType::File,
            num_replicas: self.config().replicas,
            discard: stream::DiscardPolicy::New,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            ..Default::default()
        };
        crate::ensure_stream(
            self.jetstream(),
            self.config().request_timeout,
            config,
            |_| Ok(()),
        )
        .await?;
        self.bounded(&what, async {
            self.ensure_connected(&what)?;
            self.jetstream()
                .get_key_value(bucket.clone())
                .await
                .map_err(|e| nats::unavailable(&what, e))
        })
        .await
    }

    /// Puts `room`'s summary in the cluster's room directory (its owner does, when the room is
    /// created and when its public state changes).
    pub async fn put_room_summary(
        &self,
        room: u64,
        summary: impl Into<Bytes>,
    ) -> Result<(), ClusterError> {
        let summary = summary.into();
        let what = format!("putting room {room} in the directory");
        self.check_payload(&what, summary.len())?;
        let store = self.directory().await?;
        self.bounded(&what, async {
            self.ensure_connected(&what)?;
            store
                .put(room.to_string(), summary)
                .await
                .map(drop)
                .map_err(|e| nats::unavailable(&what, e))
        })
        .await
    }

    /// Removes `room` from the cluster's room directory (it was destroyed).
    pub async fn remove_room_summary(&self, room: u64) -> Result<(), ClusterError> {
        let what = format!("removing room {room} from the directory");
        let store = self.directory().await?;
        self.bounded(&what, async {
            self.ensure_connected(&what)?;
            store
                .delete(room.to_string())
                .await
                .map_err(|e| nats::unavailable(&what, e))
        })
        .await
    }

    /// Watches the cluster's room directory: every room's current summary, then each change.
    pub async fn watch_rooms(&self) -> Result<RoomDirectory, ClusterError> {
        let what = "watching the room directory";
        let store = self.directory().await?;
        let stream = format!("KV_{}", self.names().rooms_bucket());
        self.bounded(what, async {
            self.ensure_connected(what)?;
            let mut info = self
                .jetstream()
                .get_stream(&stream)
                .await
                .map_err(|e| nats::get_stream(what, e))?;
            let empty = info
                .info()
                .await
                .map_err(|e| {
                    ClusterError::with_source(ErrorKind::Unavailable, what.to_string(), e)
                })?
                .state
                .messages
                == 0;
            let watch = store.watch_with_history(">").await.map_err(|e| {
                ClusterError::with_source(ErrorKind::Unavailable, what.to_string(), e)
            })?;
            Ok(RoomDirectory { watch, empty })
        })
        .await
    }
}
