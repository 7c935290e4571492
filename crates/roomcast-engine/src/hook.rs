//! The pre-send hook (Agora's pre-send callback) and the per-room lanes that keep a room's
//! accepted messages in the order their sends were called while hooks run concurrently.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use roomcast_model::{OutgoingMessage, RoomId, UserId};
use tokio::sync::oneshot;

/// What a [`PreSendHook`] decided about a message.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PreSendDecision {
    /// The message goes on as it is.
    Allow,
    /// The message is refused: the sender gets 508 (MESSAGE_EXTERNAL_LOGIC_BLOCKED) with this
    /// reason, and nothing is sent.
    Reject(String),
    /// The message goes on with this content instead (a profanity filter masking words, a
    /// link policy removing links): its body, attributes and priority. The room and the
    /// idempotency key stay the original's; the new form is checked again (500, 510).
    Rewrite(OutgoingMessage),
}

/// The future a [`PreSendHook`] returns.
pub type PreSendFuture<'a> = Pin<Box<dyn Future<Output = PreSendDecision> + Send + 'a>>;

/// The embedder's check of every message before a room accepts it (Agora's pre-send callback).
///
/// It runs in the sending call's task, never on a room, under the engine's pre-send timeout;
/// several run at once (for different sends), and a room still accepts its messages in the
/// order their sends were called. A hook that panics or does not answer in time is handled by
/// the [`OnHookFailure`] policy. Messages sent from inside a hook (in its task) do not go
/// through the hook again.
pub trait PreSendHook: Send + Sync + 'static {
    /// Decides about `message`, sent by `from`.
    fn pre_send<'a>(&'a self, from: &'a UserId, message: &'a OutgoingMessage) -> PreSendFuture<'a>;
}

/// What happens to a message whose hook gave no decision: it did not answer within the
/// timeout, or it panicked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnHookFailure {
    /// The message goes on as sent (the default: a slow or broken moderation service degrades
    /// moderation, it does not silence every room).
    #[default]
    Allow,
    /// The message is refused with 508.
    Reject,
}

/// The pre-send hook with its timeout and failure policy.
#[derive(Clone)]
pub struct PreSendConfig {
    /// The hook.
    pub hook: Arc<dyn PreSendHook>,
    /// How long it may take. Default 2 s.
    pub timeout: Duration,
    /// What a timeout or a panic means.
    pub on_failure: OnHookFailure,
}

impl std::fmt::Debug for PreSendConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreSendConfig")
            .field("timeout", &self.timeout)
            .field("on_failure", &self.on_failure)
            .finish_non_exhaustive()
    }
}

/// The default pre-send timeout.
pub const PRE_SEND_TIMEOUT: Duration = Duration::from_secs(2);

tokio::task_local! {
    static IN_HOOK: ();
}

/// True inside a pre-send hook's task.
pub(crate) fn in_hook() -> bool {
    IN_HOOK.try_with(|_| ()).is_ok()
}

/// Runs `fut` marked as a hook's.
pub(crate) fn as_hook<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    IN_HOOK.scope((), fut)
}

/// Per-room queues of sends taken when each send was called: a send hands its message to the
/// room only once the one before it in its room has (or has given up).
pub(crate) struct Lanes {
    /// Each room's newest turn and what fires when it is through.
    map: Mutex<HashMap<RoomId, (u64, oneshot::Receiver<()>)>>,
    next: AtomicU64,
    runtime: tokio::runtime::Handle,
}

/// A send's place in its room's lane.
pub(crate) struct Turn {
    lanes: Arc<Lanes>,
    room: RoomId,
    ticket: u64,
    prev: Option<oneshot::Receiver<()>>,
    done: Option<oneshot::Sender<()>>,
}

impl Lanes {
    pub(crate) fn new(runtime: tokio::runtime::Handle) -> Arc<Lanes> {
        Arc::new(Lanes {
            map: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            runtime,
        })
    }

    /// The next place in `room`'s lane.
    pub(crate) fn take(self: &Arc<Self>, room: RoomId) -> Turn {
        let (done, rx) = oneshot::channel();
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        let prev = self
            .map
            .lock()
            .insert(room, (ticket, rx))
            .map(|(_, prev)| prev);
        Turn {
            lanes: self.clone(),
            room,
            ticket,
            prev,
            done: Some(done),
        }
    }

    /// How many rooms have sends in their lane (for tests: lanes go when they empty).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().len()
    }

    fn finish(&self, room: RoomId, ticket: u64, done: Option<oneshot::Sender<()>>) {
        drop(done);
        let mut map = self.map.lock();
        if map.get(&room).is_some_and(|(t, _)| *t == ticket) {
            map.remove(&room);
        }
    }
}

impl Turn {
    /// Waits until every send before this one in its room is through.
    pub(crate) async fn wait(&mut self) {
        if let Some(prev) = self.prev.take() {
            let _ = prev.await;
        }
    }
}

impl Drop for Turn {
    /// Through: the next send may go. A send dropped before its turn came (cancelled, timed
    /// out) still lets the next one go only after the one before it.
    fn drop(&mut self) {
        let done = self.done.take();
        let (lanes, room, ticket) = (self.lanes.clone(), self.room, self.ticket);
        match self.prev.take() {
            None => lanes.finish(room, ticket, done),
            Some(prev) => {
                let runtime = lanes.runtime.clone();
                runtime.spawn(async move {
                    let _ = prev.await;
                    lanes.finish(room, ticket, done);
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn turns_go_in_order_even_when_one_gives_up_early() {
        let lanes = Lanes::new(tokio::runtime::Handle::current());
        let room = RoomId::from_u64(1);
        let first = lanes.take(room);
        let second = lanes.take(room);
        let mut third = lanes.take(room);
        let other = lanes.take(RoomId::from_u64(2));
        drop(other);
        drop(second); // gave up before its turn
        let waiting = tokio::spawn(async move {
            third.wait().await;
            third
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "the third went before the first");
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .unwrap()
            .unwrap();
        drop(third);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while lanes.len() > 0 {
            assert!(std::time::Instant::now() < deadline, "lanes left behind");
            tokio::task::yield_now().await;
        }
    }
}
