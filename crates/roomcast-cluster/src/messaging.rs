//! Core NATS between nodes: node-to-node request/reply and room events.
//!
//! Neither is stored: a request whose node is down fails, an event published while a node is
//! disconnected is not delivered to it. What must survive goes to the room's log.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;

use crate::config::validate_name;
use crate::error::{ClusterError, ErrorKind};
use crate::nats::{self, FROM_HEADER};
use crate::Cluster;

/// Subject of the round trip that confirms a subscription: nobody subscribes to it.
const SYNC_SUBJECT: &str = "roomcast._sync";

/// The queue group of a node's call subject: should two processes run with one node id, each
/// request reaches only one of them.
const CALL_QUEUE_GROUP: &str = "roomcast";

impl Cluster {
    /// Starts serving the requests addressed to this node (its subject
    /// `roomcast.<cluster>.node.<node>.call`). Once this returns, requests sent to this node
    /// through the NATS server this node is connected to reach the returned [`NodeRequests`]
    /// (the server has registered the subscription; servers of a NATS cluster learn of it a
    /// moment later). Requests stop reaching it when it is dropped.
    pub async fn serve(&self) -> Result<NodeRequests, ClusterError> {
        let what = format!("serving the calls of node {}", self.node());
        self.bounded(&what, async {
            self.ensure_connected(&what)?;
            let subscriber = self
                .client()
                .queue_subscribe(
                    self.names().calls(self.node()),
                    CALL_QUEUE_GROUP.to_string(),
                )
                .await
                .map_err(|e| nats::core(&what, e))?;
            self.sync_with_server(&what).await?;
            Ok(NodeRequests {
                cluster: self.clone(),
                subscriber,
            })
        })
        .await
    }

    /// Sends `payload` to node `node` and waits for its response, at most `request_timeout`.
    ///
    /// Errors: [`ErrorKind::NoResponders`] at once when no
    /// node serves that id, [`ErrorKind::Unavailable`] when the
    /// node did not respond in time (or NATS is unreachable),
    /// [`ErrorKind::InvalidConfig`] for a malformed node id.
    pub async fn request(
        &self,
        node: &str,
        payload: impl Into<Bytes>,
    ) -> Result<Bytes, ClusterError> {
        let payload = payload.into();
        let what = format!("calling node {node:?}");
        validate_name("node", node)?;
        self.check_payload(&what, payload.len())?;
        self.bounded(&what, async {
            self.ensure_connected(&what)?;
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(FROM_HEADER, self.node());
            let response = self
                .client()
                .request_with_headers(self.names().calls(node), headers, payload)
                .await
                .map_err(|e| nats::request(&what, e))?;
            Ok(response.payload)
        })
        .await
    }

    /// Publishes an event to `room`'s subscribers on every node (core NATS, at most once:
    /// not stored, not acknowledged; a subscriber that is disconnected misses it).
    pub async fn publish_room(
        &self,
        room: u64,
        payload: impl Into<Bytes>,
    ) -> Result<(), ClusterError> {
        let payload = payload.into();
        let what = format!("publishing to room {room}");
        self.check_payload(&what, payload.len())?;
        self.bounded(&what, async {
            self.ensure_connected(&what)?;
            self.client()
                .publish(self.names().events(room), payload)
                .await
                .map_err(|e| nats::core(&what, e))
        })
        .await
    }

    /// Subscribes to `room`'s events. Once this returns, every event published afterwards
    /// through the NATS server this node is connected to reaches the returned [`RoomEvents`]
    /// (the server has registered the subscription; servers of a NATS cluster learn of it a
    /// moment later), in the order each publisher sent them.
    pub async fn subscribe_room(&self, room: u64) -> Result<RoomEvents, ClusterError> {
        let what = format!("subscribing to room {room}");
        self.bounded(&what, async {
            self.ensure_connected(&what)?;
            let subscriber = self
                .client()
                .subscribe(self.names().events(room))
                .await
                .map_err(|e| nats::core(&what, e))?;
            self.sync_with_server(&what).await?;
            Ok(RoomEvents { room, subscriber })
        })
        .await
    }
}

/// User subjects: the nodes where a user has sessions hear of each other (a user's devices may
/// be on several nodes).
impl Cluster {
    /// Subscribes to `user`'s subject. Unsubscribes when dropped. Not awaited by the server:
    /// what this connection publishes afterwards reaches the server after the subscription, so
    /// answers to it are not missed.
    pub async fn subscribe_user(&self, user: &str) -> Result<UserMessages, ClusterError> {
        let what = "subscribing to a user's subject";
        self.bounded(what, async {
            self.ensure_connected(what)?;
            let subscriber = self
                .client()
                .subscribe(self.names().user(user))
                .await
                .map_err(|e| nats::core(what, e))?;
            Ok(UserMessages { subscriber })
        })
        .await
    }

    /// Publishes `payload` to the nodes subscribed to `user`'s subject (at most once).
    pub async fn publish_user(
        &self,
        user: &str,
        payload: impl Into<Bytes>,
    ) -> Result<(), ClusterError> {
        let payload = payload.into();
        let what = "publishing to a user's subject";
        self.check_payload(what, payload.len())?;
        self.bounded(what, async {
            self.ensure_connected(what)?;
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(FROM_HEADER, self.node());
            self.client()
                .publish_with_headers(self.names().user(user), headers, payload)
                .await
                .map_err(|e| nats::core(what, e))
        })
        .await
    }
}

impl Cluster {
    /// Waits until the server has handled everything this connection sent before (a new
    /// subscription above all). A flush only hands the bytes to the socket; this makes a
    /// request nobody answers, and the server's "no responders" answer comes after it handled
    /// every earlier message of this connection, in order.
    async fn sync_with_server(&self, what: &str) -> Result<(), ClusterError> {
        match self
            .client()
            .request(SYNC_SUBJECT, Bytes::new())
            .await
            .map_err(|e| nats::request(what, e))
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NoResponders => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The requests addressed to this node ([`Cluster::serve`]): a [`Stream`] of
/// [`NodeRequest`]s, each to be answered with [`NodeRequest::respond`].
///
/// Ends only when the connection is closed for good.
pub struct NodeRequests {
    cluster: Cluster,
    subscriber: async_nats::Subscriber,
}

impl std::fmt::Debug for NodeRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeRequests")
            .field("node", &self.cluster.node())
            .finish()
    }
}

impl NodeRequests {
    /// The next request.
    pub async fn next(&mut self) -> Option<NodeRequest> {
        futures_util::StreamExt::next(self).await
    }
}

impl Stream for NodeRequests {
    type Item = NodeRequest;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<NodeRequest>> {
        loop {
            let message = match Pin::new(&mut self.subscriber).poll_next(cx) {
                Poll::Ready(Some(message)) => message,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            };
            // A plain publish to a call subject cannot be answered: not a request.
            let Some(reply) = message.reply else {
                tracing::debug!("a message without a reply subject on a call subject, dropped");
                continue;
            };
            let from = message
                .headers
                .as_ref()
                .and_then(|headers| headers.get(FROM_HEADER))
                .map(|value| value.as_str().to_string());
            return Poll::Ready(Some(NodeRequest {
                cluster: self.cluster.clone(),
                from,
                payload: message.payload,
                reply: reply.to_string(),
            }));
        }
    }
}

/// One request to this node, with what it takes to answer it.
pub struct NodeRequest {
    cluster: Cluster,
    from: Option<String>,
    payload: Bytes,
    reply: String,
}

impl std::fmt::Debug for NodeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeRequest")
            .field("from", &self.from)
            .field("len", &self.payload.len())
            .finish()
    }
}

impl NodeRequest {
    /// The calling node's id (`None` if the caller was not a roomcast [`Cluster`]).
    pub fn from(&self) -> Option<&str> {
        self.from.as_deref()
    }

    /// The request's payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Answers the request. The caller gets it if it is still waiting (within its
    /// `request_timeout`); there is no acknowledgement.
    pub async fn respond(self, payload: impl Into<Bytes>) -> Result<(), ClusterError> {
        let payload = payload.into();
        let what = "responding to a node's call";
        self.cluster.check_payload(what, payload.len())?;
        self.cluster
            .bounded(what, async {
                self.cluster.ensure_connected(what)?;
                self.cluster
                    .client()
                    .publish(self.reply, payload)
                    .await
                    .map_err(|e| nats::core(what, e))
            })
            .await
    }
}

/// A room's events ([`Cluster::subscribe_room`]): a [`Stream`] of payloads. Unsubscribes when
/// dropped.
pub struct RoomEvents {
    room: u64,
    subscriber: async_nats::Subscriber,
}

impl std::fmt::Debug for RoomEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomEvents")
            .field("room", &self.room)
            .finish()
    }
}

impl RoomEvents {
    /// The room.
    pub fn room(&self) -> u64 {
        self.room
    }

    /// The next event.
    pub async fn next(&mut self) -> Option<Bytes> {
        futures_util::StreamExt::next(self).await
    }
}

impl Stream for RoomEvents {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        Pin::new(&mut self.subscriber)
            .poll_next(cx)
            .map(|message| message.map(|message| message.payload))
    }
}

/// What reaches a user's subject ([`Cluster::subscribe_user`]): a [`Stream`] of
/// [`UserMessage`]s.
pub struct UserMessages {
    subscriber: async_nats::Subscriber,
}

impl std::fmt::Debug for UserMessages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserMessages").finish_non_exhaustive()
    }
}

impl UserMessages {
    /// The next message.
    pub async fn next(&mut self) -> Option<UserMessage> {
        futures_util::StreamExt::next(self).await
    }
}

impl Stream for UserMessages {
    type Item = UserMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<UserMessage>> {
        Pin::new(&mut self.subscriber).poll_next(cx).map(|message| {
            message.map(|message| UserMessage {
                from: message
                    .headers
                    .as_ref()
                    .and_then(|headers| headers.get(FROM_HEADER))
                    .map(|value| value.as_str().to_string()),
                payload: message.payload,
            })
        })
    }
}

/// A message on a user's subject.
#[derive(Debug, Clone)]
pub struct UserMessage {
    /// The publishing node's id (`None` if the publisher was not a roomcast [`Cluster`]).
    pub from: Option<String>,
    /// The payload.
    pub payload: Bytes,
}
