//! Room leases: one owning node per room at a time, on a NATS KV bucket.
//!
//! The bucket `roomcast_<cluster>_owners` keeps one revision per key (the key is the room id,
//! the value the owner's node id) and has `max_age = lease_ttl`: every write restarts the key's
//! clock, and a key not written for `lease_ttl` is removed by the server. Every write is a
//! compare-and-set on the key's revision (`Nats-Expected-Last-Subject-Sequence`), so JetStream
//! alone decides who wins a race:
//!
//! | call | write | refused when |
//! | --- | --- | --- |
//! | [`Cluster::acquire`] | the node id, expecting revision 0 (no key), or the revision of a delete marker, or of this node's own entry | another node's entry is there: [`ErrorKind::LeaseHeld`] |
//! | [`Lease::renew`] | the node id, expecting the lease's revision | the key no longer holds this node's id (another node took the room, or it expired or was released): [`ErrorKind::LeaseLost`] |
//! | [`Lease::release`] | a delete marker, expecting the lease's revision | same: [`ErrorKind::LeaseLost`] |
//!
//! A lease belongs to the node, not to one [`Lease`] value: when the key moved on but still
//! holds this node's id at a later revision (a renewal that timed out yet was stored, or this
//! node's own `acquire` again), a renewal or release is made at that revision.
//!
//! # What a lease guarantees
//! While a node's renewals succeed, no other node can acquire the room. A lease is a
//! *liveness* tool, not the safety net: a node can be paused past its TTL without noticing.
//! What keeps a room's state safe is the fenced log ([`Cluster::append`] with the last
//! sequence the writer has seen): a node that lost its lease and missed the new owner's
//! appends cannot append. [`Lease::expires_at`] is a conservative local bound: the lease is
//! surely not valid past it (it is measured from when the last successful write was *sent*).

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::error::{ClusterError, ErrorKind};
use crate::nats::{self, WriteError, EXPECTED_LAST_SUBJECT_SEQUENCE, KV_OPERATION};
use crate::Cluster;

/// Rounds of "write, read who is there" before `acquire` gives up on a key that keeps
/// changing under it.
const ACQUIRE_ROUNDS: usize = 4;

/// The latest entry of a lease key.
struct OwnerEntry {
    revision: u64,
    /// `None` for a delete or purge marker (released).
    owner: Option<String>,
}

impl Cluster {
    /// Takes the lease of `room` for this node.
    ///
    /// Succeeds when nobody holds the room (the key never existed, expired, or was released),
    /// and when this node already holds it (its entry is rewritten: a fresh revision and a
    /// fresh TTL). Leases are the node's: a [`Lease`] of an older revision of this node's is
    /// still valid, its next renewal picks the latest revision up. Fails with
    /// [`ErrorKind::LeaseHeld`] and the holder in [`ClusterError::owner`] when another node
    /// holds it. Of several nodes racing, exactly one wins.
    pub async fn acquire(&self, room: u64) -> Result<Lease, ClusterError> {
        let what = format!("acquiring room {room}");
        self.bounded(&what, async {
            self.ensure_connected(&what)?;
            let mut expected = 0;
            for _ in 0..ACQUIRE_ROUNDS {
                let sent = Instant::now();
                match self.write_owner(room, expected, false, &what).await {
                    Ok(revision) => return Ok(Lease::new(self.clone(), room, revision, sent)),
                    Err(WriteError::WrongLastSequence(_)) => {}
                    Err(WriteError::Other(e)) => return Err(e),
                }
                // The key is not what we expected: see what is there.
                match self.owner_entry(room, &what).await? {
                    None => expected = 0,
                    Some(OwnerEntry {
                        revision,
                        owner: None,
                    }) => expected = revision,
                    Some(OwnerEntry {
                        revision,
                        owner: Some(owner),
                    }) => {
                        if owner == self.node() {
                            expected = revision;
                        } else {
                            return Err(held(room, owner));
                        }
                    }
                }
            }
            Err(ClusterError::new(
                ErrorKind::LeaseHeld,
                format!("room {room}: its lease kept changing while this node tried to take it"),
            ))
        })
        .await
    }

    /// The node that holds the lease of `room`, if any. A read of the moment: the answer may be
    /// stale when it arrives.
    pub async fn owner_of(&self, room: u64) -> Result<Option<String>, ClusterError> {
        let what = format!("reading the owner of room {room}");
        self.bounded(&what, async {
            self.ensure_connected(&what)?;
            Ok(self
                .owner_entry(room, &what)
                .await?
                .and_then(|entry| entry.owner))
        })
        .await
    }

    /// Reads the latest entry of a lease key (from the stream's leader, not a direct get, so
    /// that it is never staler than the last acknowledged write).
    async fn owner_entry(&self, room: u64, what: &str) -> Result<Option<OwnerEntry>, ClusterError> {
        let key = self.names().owner_key(room);
        match self.owners().get_last_raw_message_by_subject(&key).await {
            Ok(message) => {
                let marker = message
                    .headers
                    .get(KV_OPERATION)
                    .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"));
                let owner = if marker {
                    None
                } else {
                    Some(String::from_utf8_lossy(&message.payload).into_owned())
                };
                Ok(Some(OwnerEntry {
                    revision: message.sequence,
                    owner,
                }))
            }
            Err(e) if nats::is_no_message(&e) => Ok(None),
            Err(e) => Err(nats::last_message(what, e)),
        }
    }

    /// Writes this node's id (or, with `delete`, a delete marker) to a lease key, if the key's
    /// latest revision is `expected` (0: no key). Returns the new revision.
    async fn write_owner(
        &self,
        room: u64,
        expected: u64,
        delete: bool,
        what: &str,
    ) -> Result<u64, WriteError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            EXPECTED_LAST_SUBJECT_SEQUENCE,
            expected.to_string().as_str(),
        );
        let payload = if delete {
            headers.insert(KV_OPERATION, "DEL");
            Bytes::new()
        } else {
            Bytes::copy_from_slice(self.node().as_bytes())
        };
        let ack = self
            .jetstream()
            .publish_with_headers(self.names().owner_key(room), headers, payload)
            .await
            .map_err(|e| nats::write(what, e))?
            .await
            .map_err(|e| nats::write(what, e))?;
        Ok(ack.sequence)
    }

    /// A write of this node's lease at `revision` (a renewal, or with `delete` a release).
    ///
    /// When the key moved on, it is still this node's if its latest entry holds this node's id
    /// at a later revision (a renewal that timed out but was stored, or this node's own
    /// `acquire` again): the write is then made at that revision. Otherwise the lease is lost.
    async fn write_own(
        &self,
        room: u64,
        revision: u64,
        delete: bool,
        what: &str,
    ) -> Result<u64, ClusterError> {
        match self.write_owner(room, revision, delete, what).await {
            Ok(revision) => return Ok(revision),
            Err(WriteError::WrongLastSequence(_)) => {}
            Err(WriteError::Other(e)) => return Err(e),
        }
        let latest = match self.owner_entry(room, what).await? {
            Some(OwnerEntry {
                revision: latest,
                owner: Some(owner),
            }) if owner == self.node() && latest > revision => latest,
            _ => return Err(lost(room, revision)),
        };
        match self.write_owner(room, latest, delete, what).await {
            Ok(revision) => Ok(revision),
            Err(WriteError::WrongLastSequence(_)) => Err(lost(room, latest)),
            Err(WriteError::Other(e)) => Err(e),
        }
    }
}

fn held(room: u64, owner: String) -> ClusterError {
    ClusterError::new(
        ErrorKind::LeaseHeld,
        format!("room {room} is owned by node {owner:?}"),
    )
    .with_owner(Some(owner))
}

fn lost(room: u64, revision: u64) -> ClusterError {
    ClusterError::new(
        ErrorKind::LeaseLost,
        format!(
            "the lease of room {room} at revision {revision} is no longer this node's (it \
             expired or another node took the room)"
        ),
    )
}

/// This node's lease of one room, as [`Cluster::acquire`] returned it.
///
/// Renew it ([`renew`](Lease::renew)) well within the TTL, or hand it to a background renewer
/// ([`keep_alive`](Lease::keep_alive)). Dropping it does nothing: the key expires after
/// `lease_ttl` unless [`release`](Lease::release)d first.
#[derive(Debug)]
pub struct Lease {
    cluster: Cluster,
    room: u64,
    revision: u64,
    expires_at: Instant,
}

impl Lease {
    fn new(cluster: Cluster, room: u64, revision: u64, sent: Instant) -> Self {
        let expires_at = sent + cluster.config().lease_ttl;
        Lease {
            cluster,
            room,
            revision,
            expires_at,
        }
    }

    /// The room.
    pub fn room(&self) -> u64 {
        self.room
    }

    /// The revision of the lease key this lease wrote last (the stream sequence of the write).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// A conservative bound: the lease is surely no longer valid after this instant unless
    /// renewed (the last successful write's send time plus `lease_ttl`).
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    /// Extends the lease by `lease_ttl` (compare-and-set on its revision).
    ///
    /// Fails with [`ErrorKind::LeaseLost`] when the key no longer holds this node's id
    /// (another node took the room, or the key expired or was released): the node must stop
    /// acting as the room's owner. With [`ErrorKind::Unavailable`] the outcome is unknown;
    /// renewing again is safe (a renewal that was stored after all is adopted).
    pub async fn renew(&mut self) -> Result<(), ClusterError> {
        let what = format!("renewing the lease of room {}", self.room);
        let cluster = self.cluster.clone();
        let sent = Instant::now();
        let revision = cluster
            .bounded(&what, async {
                cluster.ensure_connected(&what)?;
                cluster
                    .write_own(self.room, self.revision, false, &what)
                    .await
            })
            .await?;
        self.revision = revision;
        self.expires_at = sent + cluster.config().lease_ttl;
        Ok(())
    }

    /// Gives the room up at once (a delete marker, only if the key is still at this lease's
    /// revision), so that another node can acquire it without waiting for the TTL.
    ///
    /// Fails with [`ErrorKind::LeaseLost`] when the lease was no longer this node's (nothing is
    /// written then).
    pub async fn release(self) -> Result<(), ClusterError> {
        let what = format!("releasing the lease of room {}", self.room);
        self.cluster
            .bounded(&what, async {
                self.cluster.ensure_connected(&what)?;
                self.cluster
                    .write_own(self.room, self.revision, true, &what)
                    .await
                    .map(drop)
            })
            .await
    }

    /// Hands the lease to a background task (on the current tokio runtime) that renews it
    /// every `lease_ttl / 3`. See [`LeaseKeeper`] for what it reports.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn keep_alive(self) -> LeaseKeeper {
        let room = self.room;
        let (status_tx, status) = watch::channel(LeaseStatus::Held {
            revision: self.revision,
            expires_at: self.expires_at,
        });
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(renew_loop(self, status_tx, stop_rx));
        LeaseKeeper {
            room,
            status,
            stop: Some(stop),
            task: Some(task),
        }
    }
}

/// What a [`LeaseKeeper`] knows of its lease.
#[derive(Clone, Debug)]
pub enum LeaseStatus {
    /// Held: the last renewal succeeded.
    Held {
        /// The lease key's revision after the last renewal.
        revision: u64,
        /// The lease is surely not valid after this unless renewed again (see
        /// [`Lease::expires_at`]).
        expires_at: Instant,
    },
    /// Lost, for good: the renewer has stopped. The error is [`ErrorKind::LeaseLost`], and
    /// says whether another node took the room or renewals failed until the TTL ran out.
    Lost(ClusterError),
}

impl LeaseStatus {
    /// Whether the lease is held.
    pub fn is_held(&self) -> bool {
        matches!(self, LeaseStatus::Held { .. })
    }
}

/// A lease renewed by a background task ([`Lease::keep_alive`]).
///
/// # Semantics
/// - The task renews the lease every `lease_ttl / 3` (measured from the last successful
///   renewal) and publishes each success as [`LeaseStatus::Held`] on a `tokio::sync::watch`
///   channel ([`subscribe`](LeaseKeeper::subscribe)).
/// - A renewal refused by JetStream (another node took the room, or the key expired) ends the
///   task at once with [`LeaseStatus::Lost`].
/// - A renewal that fails because NATS is unavailable is retried every `lease_ttl / 10`; if no
///   renewal succeeds before the lease's [`expires_at`](Lease::expires_at), the task ends with
///   [`LeaseStatus::Lost`] (the key may have expired and another node may own the room), even
///   if NATS comes back later.
/// - Once lost, a lease stays lost: acquire the room again for a new one.
/// - [`release`](LeaseKeeper::release) stops the task, then releases the lease;
///   [`stop`](LeaseKeeper::stop) stops it and hands the [`Lease`] back. Dropping the keeper
///   stops the task without releasing: the lease then expires after `lease_ttl`.
#[derive(Debug)]
pub struct LeaseKeeper {
    room: u64,
    status: watch::Receiver<LeaseStatus>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Option<Lease>>>,
}

impl LeaseKeeper {
    /// The room.
    pub fn room(&self) -> u64 {
        self.room
    }

    /// The latest status.
    pub fn status(&self) -> LeaseStatus {
        self.status.borrow().clone()
    }

    /// Whether the lease is held (the last renewal succeeded and none was refused since).
    pub fn is_held(&self) -> bool {
        self.status.borrow().is_held()
    }

    /// A receiver of every status change, for a `tokio::select!` beside the room's work.
    pub fn subscribe(&self) -> watch::Receiver<LeaseStatus> {
        self.status.clone()
    }

    /// Waits until the lease is lost, and returns why.
    pub async fn lost(&self) -> ClusterError {
        let mut status = self.status.clone();
        let result = status
            .wait_for(|status| matches!(status, LeaseStatus::Lost(_)))
            .await;
        match result.as_deref() {
            Ok(LeaseStatus::Lost(error)) => error.clone(),
            _ => ClusterError::new(
                ErrorKind::LeaseLost,
                format!("the renewer of room {} stopped", self.room),
            ),
        }
    }

    /// Stops renewing and hands the lease back (still held, until its TTL runs out), or the
    /// error it was lost with.
    pub async fn stop(mut self) -> Result<Lease, ClusterError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take();
        let lease = match task {
            Some(task) => task.await.ok().flatten(),
            None => None,
        };
        match lease {
            Some(lease) => Ok(lease),
            None => Err(match self.status() {
                LeaseStatus::Lost(error) => error,
                LeaseStatus::Held { .. } => ClusterError::new(
                    ErrorKind::LeaseLost,
                    format!("the renewer of room {} stopped", self.room),
                ),
            }),
        }
    }

    /// Stops renewing and releases the lease (see [`Lease::release`]). Fails with
    /// [`ErrorKind::LeaseLost`] when it was lost before.
    pub async fn release(self) -> Result<(), ClusterError> {
        self.stop().await?.release().await
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn renew_loop(
    mut lease: Lease,
    status: watch::Sender<LeaseStatus>,
    mut stop: oneshot::Receiver<()>,
) -> Option<Lease> {
    let ttl = lease.cluster.config().lease_ttl;
    let period = ttl / 3;
    let retry = (ttl / 10).max(Duration::from_millis(10));
    let mut next = lease.expires_at - ttl + period;
    loop {
        tokio::select! {
            _ = &mut stop => return Some(lease),
            _ = tokio::time::sleep_until(next.into()) => {}
        }
        match lease.renew().await {
            Ok(()) => {
                status.send_replace(LeaseStatus::Held {
                    revision: lease.revision,
                    expires_at: lease.expires_at,
                });
                next = lease.expires_at - ttl + period;
            }
            Err(error) if error.kind() == ErrorKind::LeaseLost => {
                tracing::warn!(room = lease.room, %error, "lease lost");
                status.send_replace(LeaseStatus::Lost(error));
                return None;
            }
            Err(error) => {
                let now = Instant::now();
                if now + retry >= lease.expires_at {
                    tracing::warn!(room = lease.room, %error, "lease not renewed within its TTL");
                    status.send_replace(LeaseStatus::Lost(ClusterError::new(
                        ErrorKind::LeaseLost,
                        format!(
                            "the lease of room {} could not be renewed within lease_ttl ({ttl:?}); \
                             last error: {error}",
                            lease.room
                        ),
                    )));
                    return None;
                }
                tracing::debug!(room = lease.room, %error, "lease renewal failed; retrying");
                next = now + retry;
            }
        }
    }
}
