//! `ChatClient`: one user's handle on the engine.

use std::sync::Arc;

use roomcast_engine::{Core, EventStream, Session};
use roomcast_model::{ChatError, UserId};

use crate::{ChatManager, ChatOptions, ChatRoomManager};

/// Keeps the session online while any clone of a client lives.
pub(crate) struct ClientGuard {
    pub(crate) core: Core,
    pub(crate) session: Arc<Session>,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.core.close_client(&self.session);
    }
}

/// A logged-in user (the SDK's `ChatClient`). Cloning is shallow.
///
/// While any clone of any client of a user lives (and it is not disconnected), the user is
/// online: it gets pushes. When the last one is dropped, or on [`ChatClient::disconnect`], it
/// goes offline: it gets no pushes, and after each room's grace period (5 minutes by default) it
/// is removed from the rooms it is in, unless it is the owner, an admin or allow-listed there.
#[derive(Clone)]
pub struct ChatClient {
    pub(crate) guard: Arc<ClientGuard>,
    pub(crate) options: Arc<ChatOptions>,
}

impl std::fmt::Debug for ChatClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatClient")
            .field("user", self.current_user_id())
            .field("online", &self.is_online())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl ChatClient {
    pub(crate) fn new(core: Core, session: Arc<Session>, options: ChatOptions) -> ChatClient {
        ChatClient {
            guard: Arc::new(ClientGuard { core, session }),
            options: Arc::new(options),
        }
    }

    pub(crate) fn core(&self) -> &Core {
        &self.guard.core
    }

    pub(crate) fn session(&self) -> &Arc<Session> {
        &self.guard.session
    }

    /// The user this client is logged in as (lower case).
    pub fn current_user_id(&self) -> &UserId {
        self.session().user()
    }

    /// This client's options.
    pub fn options(&self) -> &ChatOptions {
        &self.options
    }

    /// The chat-room manager (the SDK's `ChatClient.chatRoomManager`).
    pub fn chat_room_manager(&self) -> ChatRoomManager {
        ChatRoomManager {
            client: self.clone(),
        }
    }

    /// The chat manager: messages (the SDK's `ChatClient.chatManager`).
    pub fn chat_manager(&self) -> ChatManager {
        ChatManager {
            client: self.clone(),
        }
    }

    /// A `Stream` of every event this user receives from now on, the same events the handlers
    /// get. It ends when the engine stops. It is bounded (see
    /// [`crate::EngineBuilder::event_queue_capacity`]): if not polled it drops its oldest events
    /// and yields [`crate::ClientEvent::Missed`] with their count.
    pub fn events(&self) -> EventStream {
        self.session().events()
    }

    /// Takes the user offline, as if its connection dropped: no pushes until
    /// [`ChatClient::reconnect`] or a new login of the user, and removal from each room after
    /// its grace period. Applies to the user's session, so to every client of the user.
    pub fn disconnect(&self) -> Result<(), ChatError> {
        self.core().set_connected(self.session(), false)
    }

    /// Brings the user back online after [`ChatClient::disconnect`]. Within the grace period it
    /// is still a member of its rooms; what it missed can be fetched from history after the last
    /// sequence number it saw. If it was removed meanwhile, its handlers now get
    /// `on_removed_from_chat_room` with reason `Offline`.
    pub fn reconnect(&self) -> Result<(), ChatError> {
        self.core().set_connected(self.session(), true)
    }

    /// True if the user is online.
    pub fn is_online(&self) -> bool {
        self.session().is_online()
    }
}
