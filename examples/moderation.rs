//! An owner and an admin moderating a room: roles, mute with expiry, mute-all with an allow list,
//! kick, block and unblock, announcement, attributes, ownership transfer.
//! `cargo run --release --example moderation`

use std::time::Duration;

use roomcast::{
    ChatClient, ChatError, ChatRoomEventHandler, CreateChatRoomOptions, Engine, ManualClock,
    OutgoingMessage, RoomId, SetAttributes, Timestamp, UserId,
};

/// Prints the moderation events a viewer sees.
struct Watch;

impl ChatRoomEventHandler for Watch {
    fn on_mute_list_added_from_chat_room(
        &self,
        _: &RoomId,
        members: &[UserId],
        expire_time: Option<Timestamp>,
        operator: Option<&UserId>,
    ) {
        let until = expire_time.map_or("unmuted".to_string(), |t| format!("{t} ms"));
        println!("  [viewer sees] {members:?} muted until {until} by {operator:?}");
    }
    fn on_mute_list_removed_from_chat_room(
        &self,
        _: &RoomId,
        members: &[UserId],
        operator: Option<&UserId>,
    ) {
        let by = operator.map_or("the clock".to_string(), |o| o.to_string());
        println!("  [viewer sees] {members:?} unmuted by {by}");
    }
    fn on_all_chat_room_member_mute_state_changed(
        &self,
        _: &RoomId,
        all: bool,
        operator: Option<&UserId>,
    ) {
        println!("  [viewer sees] mute-all {all} by {operator:?}");
    }
    fn on_announcement_changed_from_chat_room(&self, _: &RoomId, text: &str, _: Option<&UserId>) {
        println!("  [viewer sees] announcement: {text:?}");
    }
    fn on_member_exited_from_chat_room(&self, _: &RoomId, _: &str, who: &UserId) {
        println!("  [viewer sees] {who} left");
    }
    fn on_owner_changed_from_chat_room(
        &self,
        _: &RoomId,
        new: &UserId,
        old: &UserId,
        _: Option<&UserId>,
    ) {
        println!("  [viewer sees] owner is now {new} (was {old})");
    }
    fn on_attributes_updated(
        &self,
        _: &RoomId,
        attributes: &std::collections::BTreeMap<String, String>,
        from: &UserId,
    ) {
        println!("  [viewer sees] {from} set {attributes:?}");
    }
}

async fn say(client: &ChatClient, room: RoomId, text: &str) {
    match client
        .chat_manager()
        .send_message(OutgoingMessage::text(room, text))
        .await
    {
        Ok(m) => println!(
            "{} says {text:?} (seq {})",
            client.current_user_id(),
            m.seq()
        ),
        Err(e) => println!(
            "{} cannot say {text:?}: {e} (code {})",
            client.current_user_id(),
            e.code()
        ),
    }
}

/// Lets the callback threads print before the next step (this is a demo, not a test).
async fn pause() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::main]
async fn main() -> Result<(), ChatError> {
    let clock = ManualClock::new(1_700_000_000_000);
    let engine = Engine::builder().clock(clock.clone()).build().await?;
    engine.add_super_admin("streamer").await?;
    let streamer = engine.login("streamer").await?;
    let owner = streamer.chat_room_manager();
    let room = owner
        .create_chat_room(CreateChatRoomOptions::new("speedrun finals"))
        .await?;
    let id = room.room_id;

    let mut viewers = Vec::new();
    for name in ["mod_ana", "viewer", "spammer", "regular"] {
        let c = engine.login(name).await?;
        c.chat_room_manager().join_chat_room(&id).await?;
        viewers.push(c);
    }
    let [ana, viewer, spammer, regular] = [0, 1, 2, 3].map(|i| viewers[i].clone());
    viewer.chat_room_manager().add_event_handler("watch", Watch);

    println!("the streamer makes mod_ana an admin");
    owner.add_chat_room_admin(&id, "mod_ana").await?;
    let admin = ana.chat_room_manager();

    println!("\nthe admin mutes the spammer for 10 minutes");
    admin
        .mute_chat_room_members(&id, ["spammer"], Duration::from_secs(10 * 60))
        .await?;
    pause().await;
    say(&spammer, id, "BUY FOLLOWERS").await;
    println!(
        "mute list: {:?}",
        admin.fetch_chat_room_mute_list(&id, 1, 20).await?.data
    );
    clock.advance(Duration::from_secs(10 * 60));
    pause().await;
    say(&spammer, id, "sorry").await;

    println!("\nmute-all, with the regular on the allow list");
    admin
        .add_members_to_chat_room_allow_list(&id, ["regular"])
        .await?;
    admin.mute_all_chat_room_members(&id).await?;
    pause().await;
    say(&viewer, id, "hello?").await;
    say(&regular, id, "allow-listed, so I can talk").await;
    say(&ana, id, "admins can talk").await;
    admin.unmute_all_chat_room_members(&id).await?;

    println!("\nthe admin kicks the spammer, then blocks it");
    admin.remove_chat_room_members(&id, ["spammer"]).await?;
    spammer.chat_room_manager().join_chat_room(&id).await?;
    admin.block_chat_room_members(&id, ["spammer"]).await?;
    pause().await;
    let err = spammer
        .chat_room_manager()
        .join_chat_room(&id)
        .await
        .unwrap_err();
    println!("spammer rejoins while blocked: {err} (code {})", err.code());
    admin.unblock_chat_room_members(&id, ["spammer"]).await?;
    println!(
        "block list after unblock: {:?}",
        admin.fetch_chat_room_block_list(&id, 1, 20).await?
    );

    println!("\nannouncement and a pinned poll");
    admin
        .update_chat_room_announcement(&id, "final run starts at 9")
        .await?;
    admin
        .set_chat_room_attributes(&id, SetAttributes::new([("poll", "sub 2:00?")]))
        .await?
        .into_result()?;
    pause().await;

    println!("\nthe streamer hands the room to the admin");
    owner.change_owner(&id, "mod_ana").await?;
    pause().await;
    let err = owner.destroy_chat_room(&id).await.unwrap_err();
    println!(
        "the old owner tries to destroy it: {err} (code {})",
        err.code()
    );
    let info = admin.fetch_chat_room_info(&id).await?;
    println!(
        "owner {}, admins {:?}, {} members",
        info.owner, info.admin_list, info.member_count
    );
    engine.shutdown().await;
    Ok(())
}
