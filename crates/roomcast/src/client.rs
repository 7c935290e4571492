//! `ChatClient`: one user's handle on the engine.

use std::sync::Arc;

use roomcast_engine::{Core, EventStream, Session};
use roomcast_model::UserId;

use crate::{ChatOptions, ChatRoomManager};

/// A logged-in user (the SDK's `ChatClient`). Cloning is shallow.
#[derive(Clone)]
pub struct ChatClient {
    pub(crate) core: Core,
    pub(crate) session: Arc<Session>,
    pub(crate) options: Arc<ChatOptions>,
}

impl ChatClient {
    pub(crate) fn new(core: Core, session: Arc<Session>, options: ChatOptions) -> ChatClient {
        ChatClient {
            core,
            session,
            options: Arc::new(options),
        }
    }

    /// The user this client is logged in as (lower case).
    pub fn current_user_id(&self) -> &UserId {
        self.session.user()
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

    /// A `Stream` of every event this user receives from now on, the same events the handlers
    /// get. It ends when the engine stops. It is bounded (see
    /// [`crate::EngineBuilder::event_queue_capacity`]): if not polled it drops its oldest events
    /// and yields [`crate::ClientEvent::Missed`] with their count.
    pub fn events(&self) -> EventStream {
        self.session.events()
    }
}
