//! Per-room command logs with fencing, in one JetStream stream.
//!
//! The stream `roomcast_<cluster>_rooms` (file storage, no limits) holds every room's log, one
//! subject per room: `roomcast.<cluster>.room.<room>.log`. An entry's position is its *stream*
//! sequence: increasing within a room, with gaps (other rooms' entries in between).
//!
//! # Fencing
//! Every [`Cluster::append`] names the last sequence of the room's log its writer has seen
//! (`None`: the log is empty), sent as `Nats-Expected-Last-Subject-Sequence`; JetStream stores
//! the entry only if the room's log still ends there, atomically with the check. A node that
//! lost a room's lease has not seen the new owner's appends, so its next append is refused
//! with [`ErrorKind::Fenced`] and nothing of it is stored. There is no unconditional append.

use std::pin::pin;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::error::{ClusterError, ErrorKind};
use crate::nats::{self, WriteError, EXPECTED_LAST_SUBJECT_SEQUENCE, EXPECTED_STREAM};
use crate::Cluster;

/// One entry of a room's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// Its stream sequence: what [`Cluster::append`] returned for it.
    pub seq: u64,
    /// What was appended.
    pub payload: Bytes,
}

impl Cluster {
    /// Appends `payload` to `room`'s log if the log's last entry is `expected_last` (`None`:
    /// if the log is empty, i.e. this is the first entry, or the first after a
    /// [`purge`](Cluster::purge)). Returns the new entry's stream sequence once JetStream has
    /// stored it (acknowledged).
    ///
    /// Errors: [`ErrorKind::Fenced`] when the log does not end at `expected_last` (nothing was
    /// stored; [`ClusterError::last_seq`] tells where it ends), [`ErrorKind::PayloadTooLarge`]
    /// above [`Cluster::max_payload`], [`ErrorKind::Unavailable`] when NATS did not
    /// acknowledge in time: the entry may or may not have been stored. After `Unavailable`,
    /// read [`last_seq`](Cluster::last_seq) (and the entry) before appending again; a retry
    /// with the same `expected_last` cannot store the entry twice.
    pub async fn append(
        &self,
        room: u64,
        payload: impl Into<Bytes>,
        expected_last: Option<u64>,
    ) -> Result<u64, ClusterError> {
        let payload = payload.into();
        let what = format!("appending to room {room}'s log");
        self.check_payload(&what, payload.len())?;
        self.bounded(&what, async {
            self.ensure_connected(&what)?;
            let mut headers = async_nats::HeaderMap::new();
            let expected = expected_last.unwrap_or(0);
            headers.insert(
                EXPECTED_LAST_SUBJECT_SEQUENCE,
                expected.to_string().as_str(),
            );
            headers.insert(EXPECTED_STREAM, self.names().rooms_stream.as_str());
            let sent = async {
                self.jetstream()
                    .publish_with_headers(self.names().log(room), headers, payload)
                    .await?
                    .await
            };
            match sent.await {
                Ok(ack) => Ok(ack.sequence),
                Err(e) => match nats::write(&what, e) {
                    WriteError::WrongLastSequence(actual) => Err(ClusterError::new(
                        ErrorKind::Fenced,
                        format!(
                            "room {room}'s log does not end at {} but at {}: this node's view is \
                             stale",
                            describe(expected_last),
                            actual.map_or("another entry".to_string(), |seq| describe(
                                Some(seq).filter(|&seq| seq > 0)
                            )),
                        ),
                    )
                    .with_last_seq(actual)),
                    WriteError::Other(e) => Err(e),
                },
            }
        })
        .await
    }

    /// The stream sequence of the last entry of `room`'s log (`None`: the log is empty), as
    /// the stream's leader has it: every acknowledged append is seen.
    pub async fn last_seq(&self, room: u64) -> Result<Option<u64>, ClusterError> {
        let what = format!("reading the end of room {room}'s log");
        self.bounded(&what, async {
            self.ensure_connected(&what)?;
            match self
                .rooms()
                .get_last_raw_message_by_subject(&self.names().log(room))
                .await
            {
                Ok(message) => Ok(Some(message.sequence)),
                Err(e) if nats::is_no_message(&e) => Ok(None),
                Err(e) => Err(nats::last_message(&what, e)),
            }
        })
        .await
    }

    /// Every entry of `room`'s log after stream sequence `after` (0: from the start), in
    /// order, up to the log's last entry when the call began (entries appended meanwhile may
    /// be included or not).
    ///
    /// Reads through a JetStream ordered consumer filtered on the room's subject, so
    /// thousands of entries come in a few round trips. Each step (reading the end, creating
    /// the consumer, each next entry) is bounded by `request_timeout`, not the whole replay.
    pub async fn replay(&self, room: u64, after: u64) -> Result<Vec<LogEntry>, ClusterError> {
        let what = format!("replaying room {room}'s log");
        let last = match self.last_seq(room).await? {
            Some(last) if last > after => last,
            _ => return Ok(Vec::new()),
        };
        let consumer = self
            .bounded(&what, async {
                self.rooms()
                    .create_consumer(pull::OrderedConfig {
                        description: Some(format!("roomcast replay of room {room}")),
                        filter_subject: self.names().log(room),
                        deliver_policy: DeliverPolicy::ByStartSequence {
                            start_sequence: after + 1,
                        },
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| nats::consumer(&what, e))
            })
            .await?;
        if consumer.cached_info().num_pending == 0 {
            // Purged since `last` was read.
            return Ok(Vec::new());
        }
        let messages = self
            .bounded(&what, async {
                consumer
                    .messages()
                    .await
                    .map_err(|e| nats::unavailable(&what, e))
            })
            .await?;
        let mut messages = pin!(messages);
        let mut entries = Vec::new();
        loop {
            let next = self
                .bounded(&what, async {
                    match messages.next().await {
                        Some(Ok(message)) => Ok(message),
                        Some(Err(e)) => Err(nats::unavailable(&what, e)),
                        None => Err(ClusterError::new(
                            ErrorKind::Unavailable,
                            format!("{what}: the consumer ended early"),
                        )),
                    }
                })
                .await?;
            let (seq, pending) = next
                .info()
                .map(|info| (info.stream_sequence, info.pending))
                .map_err(|e| {
                    ClusterError::new(
                        ErrorKind::Server,
                        format!("{what}: a message without JetStream metadata: {e}"),
                    )
                })?;
            if seq > last {
                break;
            }
            entries.push(LogEntry {
                seq,
                payload: next.message.payload,
            });
            if seq == last || pending == 0 {
                break;
            }
        }
        Ok(entries)
    }

    /// Removes every entry of `room`'s log (a destroyed room's), leaving the other rooms'.
    /// Returns how many were removed. Afterwards the log is empty: the next append expects
    /// `None`.
    pub async fn purge(&self, room: u64) -> Result<u64, ClusterError> {
        let what = format!("purging room {room}'s log");
        self.bounded(&what, async {
            self.ensure_connected(&what)?;
            self.rooms()
                .purge()
                .filter(self.names().log(room))
                .await
                .map(|response| response.purged)
                .map_err(|e| nats::purge(&what, e))
        })
        .await
    }

    /// Removes `room`'s log entries before sequence `seq` (those a snapshot at `seq` made
    /// redundant); returns how many were removed.
    pub async fn purge_before(&self, room: u64, seq: u64) -> Result<u64, ClusterError> {
        let what = format!("compacting room {room}'s log");
        self.bounded(&what, async {
            self.ensure_connected(&what)?;
            self.rooms()
                .purge()
                .filter(self.names().log(room))
                .sequence(seq)
                .await
                .map(|response| response.purged)
                .map_err(|e| nats::purge(&what, e))
        })
        .await
    }
}

fn describe(seq: Option<u64>) -> String {
    match seq {
        Some(seq) => format!("sequence {seq}"),
        None => "nothing (empty)".to_string(),
    }
}
