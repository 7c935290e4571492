//! The seed page's flow: create a room, list rooms, join, read the room's info, listen for
//! events, leave, destroy. Run it with `cargo run --release --example quickstart`.

use std::time::Duration;

use roomcast::{
    ChatError, ChatRoomEventHandler, ClientEvent, CreateChatRoomOptions, Engine, LeaveReason,
    RoomId, UserId,
};

/// Prints every lifecycle event this example's users receive.
struct Printer(&'static str);

impl ChatRoomEventHandler for Printer {
    fn on_member_joined_from_chat_room(&self, room_id: &RoomId, participant: &UserId) {
        println!("  [{}] {participant} joined room {room_id}", self.0);
    }
    fn on_member_exited_from_chat_room(&self, room_id: &RoomId, _name: &str, who: &UserId) {
        println!("  [{}] {who} left room {room_id}", self.0);
    }
    fn on_chat_room_destroyed(&self, room_id: &RoomId, room_name: &str) {
        println!("  [{}] room {room_id} ({room_name}) was destroyed", self.0);
    }
    fn on_removed_from_chat_room(
        &self,
        room_id: &RoomId,
        _name: &str,
        _me: &UserId,
        reason: LeaveReason,
        _operator: Option<&UserId>,
    ) {
        println!("  [{}] removed from room {room_id}: {reason:?}", self.0);
    }
}

#[tokio::main]
async fn main() -> Result<(), ChatError> {
    // An engine on a temporary store; `.data_dir("path")` keeps rooms across restarts.
    let engine = Engine::builder().build().await?;
    engine.add_super_admin("streamer").await?;

    let streamer = engine.login("streamer").await?;
    let rooms = streamer.chat_room_manager();
    rooms.add_event_handler("printer", Printer("streamer"));

    println!("creating a room as the super admin 'streamer'");
    let room = rooms
        .create_chat_room(
            CreateChatRoomOptions::new("Friday night speedruns")
                .with_description("any% attempts, chat welcome")
                .with_max_users(10_000),
        )
        .await?;
    println!("  created room {} owned by {}", room.room_id, room.owner);

    let viewer = engine.login("viewer_1").await?;
    let viewer_rooms = viewer.chat_room_manager();
    viewer_rooms.add_event_handler("printer", Printer("viewer_1"));
    let mut viewer_events = viewer.events();

    println!("listing public rooms as 'viewer_1'");
    let page = viewer_rooms.fetch_public_chat_rooms(1, 20, None).await?;
    for r in &page.data {
        println!("  {} {:?} ({} members)", r.room_id, r.name, r.member_count);
    }

    println!("joining, then more viewers join");
    viewer_rooms.join_chat_room(&room.room_id).await?;
    for n in 2..=3 {
        let v = engine.login(format!("viewer_{n}")).await?;
        v.chat_room_manager().join_chat_room(&room.room_id).await?;
    }

    let info = viewer_rooms.fetch_chat_room_info(&room.room_id).await?;
    println!(
        "room info: {:?}, owner {}, {}/{} members, my role {:?}",
        info.name, info.owner, info.member_count, info.max_users, info.permission_type
    );

    println!("the viewer's event stream saw:");
    for _ in 0..2 {
        match tokio::time::timeout(Duration::from_secs(5), next(&mut viewer_events)).await {
            Ok(Some(ClientEvent::Room(event))) => println!("  stream: {event:?}"),
            other => println!("  stream: {other:?}"),
        }
    }

    println!("viewer_3 leaves");
    engine
        .login("viewer_3")
        .await?
        .chat_room_manager()
        .leave_chat_room(&room.room_id)
        .await?;

    println!("the owner destroys the room");
    rooms.destroy_chat_room(&room.room_id).await?;
    match viewer_rooms.join_chat_room(&room.room_id).await {
        Err(e) => println!("  joining it now fails: {e} (code {})", e.code()),
        Ok(_) => println!("  unexpected: the room still exists"),
    }

    // Give the callback threads a moment to print before the engine stops.
    let _ = tokio::time::timeout(Duration::from_millis(200), next(&mut viewer_events)).await;
    engine.shutdown().await;
    println!("done");
    Ok(())
}

async fn next(stream: &mut roomcast::EventStream) -> Option<ClientEvent> {
    use std::pin::Pin;
    std::future::poll_fn(|cx| futures_core::Stream::poll_next(Pin::new(&mut *stream), cx)).await
}
