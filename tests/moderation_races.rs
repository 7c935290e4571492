//! The "beyond Agora" moderation features raced and broken as a new user embedding roomcast in a
//! live-stream service would (a fresh-context review, from README.md, docs/semantics.md and the
//! public API). Tests marked `// FINDING:` failed before their fix.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_core::Stream;
use parking_lot::Mutex;
use roomcast::{
    AuditAction, AuditEntry, ChatClient, ChatError, ChatRoomEvent, ChatRoomEventHandler,
    ClientEvent, CreateChatRoomOptions, Engine, EventStream, HistoryQuery, Limits, ManualClock,
    MessageBody, MuteDuration, OutgoingMessage, PreSendDecision, PreSendFuture, PreSendHook,
    RoomId, UserId,
};

const T0: i64 = 1_700_000_000_000;
const DEADLINE: Duration = Duration::from_secs(20);

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn unthrottled() -> Limits {
    Limits::default()
        .with_room_delivery_rate(None)
        .with_api_calls_per_user_per_second(None)
        .with_user_messages_per_window(None)
}

/// A stream room: `host` (super admin, owner), admins `mod1` and `mod2`, members `bob`, `carol`.
struct Cast {
    engine: Engine,
    clock: ManualClock,
    room: RoomId,
    host: ChatClient,
    mod1: ChatClient,
    mod2: ChatClient,
    bob: ChatClient,
    carol: ChatClient,
}

async fn cast_on(builder: roomcast::EngineBuilder, clock: ManualClock) -> Cast {
    let engine = builder.clock(clock.clone()).build().await.unwrap();
    engine.add_super_admin("host").await.unwrap();
    let host = engine.login("host").await.unwrap();
    let room = host
        .chat_room_manager()
        .create_chat_room(CreateChatRoomOptions::new("stream"))
        .await
        .unwrap()
        .room_id;
    let mut joined = Vec::new();
    for who in ["mod1", "mod2", "bob", "carol"] {
        let c = engine.login(who).await.unwrap();
        c.chat_room_manager().join_chat_room(&room).await.unwrap();
        joined.push(c);
    }
    for who in ["mod1", "mod2"] {
        host.chat_room_manager()
            .add_chat_room_admin(&room, who)
            .await
            .unwrap();
    }
    let carol = joined.pop().unwrap();
    let bob = joined.pop().unwrap();
    let mod2 = joined.pop().unwrap();
    let mod1 = joined.pop().unwrap();
    Cast {
        engine,
        clock,
        room,
        host,
        mod1,
        mod2,
        bob,
        carol,
    }
}

async fn cast() -> Cast {
    let clock = ManualClock::new(T0);
    cast_on(Engine::builder().limits(unthrottled()), clock).await
}

async fn next_event(stream: &mut EventStream) -> ClientEvent {
    tokio::time::timeout(DEADLINE, poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)))
        .await
        .expect("timed out waiting for a stream event")
        .expect("stream open")
}

/// Reads `stream` until the message whose text is `sentinel`; returns what came before it.
async fn until_sentinel(stream: &mut EventStream, sentinel: &str) -> Vec<ClientEvent> {
    let mut seen = Vec::new();
    loop {
        let e = next_event(stream).await;
        if let ClientEvent::Message(m) = &e {
            if m.text() == Some(sentinel) {
                return seen;
            }
        }
        seen.push(e);
    }
}

fn room_events(events: &[ClientEvent]) -> Vec<ChatRoomEvent> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Room(r) => Some((**r).clone()),
            _ => None,
        })
        .collect()
}

async fn say(c: &ChatClient, room: RoomId, text: &str) -> Result<roomcast::ChatMessage, ChatError> {
    c.chat_manager()
        .send_message(OutgoingMessage::text(room, text))
        .await
}

async fn audit(c: &ChatClient, room: RoomId) -> Vec<AuditEntry> {
    let mut all = Vec::new();
    let mut before = None;
    loop {
        let page = c
            .chat_room_manager()
            .fetch_chat_room_audit_log(&room, before, 1000)
            .await
            .unwrap();
        all.extend(page.data);
        match page.cursor {
            Some(c) => before = Some(c),
            None => return all,
        }
    }
}

/// Polls `f` until it holds, up to the deadline, yielding to the runtime between tries.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if f().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Timed freeze
// ---------------------------------------------------------------------------------------------

/// A freeze replaced by a new one (or unfrozen and frozen again) must not be ended by the old
/// freeze's timer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replaced_freeze_is_not_ended_by_the_old_timer() {
    let c = cast().await;
    let rooms = c.host.chat_room_manager();
    // Timed, then unfrozen, then frozen for ever.
    rooms
        .freeze_chat_room(&c.room, MuteDuration::For(Duration::from_secs(60)))
        .await
        .unwrap();
    rooms.unfreeze_chat_room(&c.room).await.unwrap();
    rooms
        .freeze_chat_room(&c.room, MuteDuration::Forever)
        .await
        .unwrap();
    c.clock.advance(Duration::from_secs(61));
    // Whatever the stale timer did, it has had its chance once a later call is answered.
    let _ = rooms.fetch_chat_room_info(&c.room).await.unwrap();
    let err = say(&c.bob, c.room, "sneak").await.unwrap_err();
    assert!(matches!(err, ChatError::RoomFrozen(None)), "{err:?}");
    let info = rooms.fetch_chat_room_info(&c.room).await.unwrap();
    assert!(info.frozen && info.frozen_until.is_none());

    // Timed 60 s replaced by timed 300 s: still frozen at 61 s.
    rooms.unfreeze_chat_room(&c.room).await.unwrap();
    rooms
        .freeze_chat_room(&c.room, MuteDuration::For(Duration::from_secs(60)))
        .await
        .unwrap();
    rooms
        .freeze_chat_room(&c.room, MuteDuration::For(Duration::from_secs(300)))
        .await
        .unwrap();
    let end = T0 + 61_000 + 300_000;
    c.clock.advance(Duration::from_secs(61));
    let _ = rooms.fetch_chat_room_info(&c.room).await.unwrap();
    let err = say(&c.bob, c.room, "sneak").await.unwrap_err();
    assert!(
        matches!(err, ChatError::RoomFrozen(Some(e)) if e == end),
        "{err:?}"
    );
    let log = audit(&c.host, c.room).await;
    assert!(
        !log.iter().any(|e| e.action == AuditAction::FreezeEnded),
        "no freeze ended: {log:#?}"
    );
    c.engine.shutdown().await;
}

// FINDING: the end of a timed freeze is applied by a timer message after the room has already
// started accepting viewers' messages (its send check compares the clock): a viewer's first
// message after the end reaches the other members *before* `FreezeChanged(frozen: false)`, so
// a client that greys out the chat box on a freeze sees a viewer talk in a frozen room, and
// `fetch_chat_room_info` right after the end still says `frozen` with `frozen_until` = now.
/// When a timed freeze ends, every member (the one who froze included) hears it with no
/// operator, before any message a viewer sends after the end (the room's order).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_freeze_end_reaches_everyone_before_the_first_viewer_message() {
    let c = cast().await;
    let mut carol = c.carol.events();
    let mut mod1 = c.mod1.events();
    c.mod1
        .chat_room_manager()
        .with_reason("raid")
        .freeze_chat_room(&c.room, MuteDuration::For(Duration::from_secs(60)))
        .await
        .unwrap();
    let end = T0 + 60_000;
    // carol hears the freeze with the reason; mod1 (the operator) does not.
    let ev = room_events(&[next_event(&mut carol).await]);
    assert!(
        matches!(&ev[0], ChatRoomEvent::FreezeChanged { frozen: true, until: Some(u), operator: Some(o), operator_reason: Some(r), .. }
            if *u == end && o.as_str() == "mod1" && r == "raid"),
        "{ev:?}"
    );
    c.clock.advance(Duration::from_secs(60));
    // bob speaks the moment the freeze is over (retrying while the end is being applied).
    eventually("bob may speak after the end", || async {
        say(&c.bob, c.room, "finally").await.is_ok()
    })
    .await;
    let seen = until_sentinel(&mut carol, "finally").await;
    let ends: Vec<_> = room_events(&seen)
        .into_iter()
        .filter(|e| matches!(e, ChatRoomEvent::FreezeChanged { .. }))
        .collect();
    assert_eq!(
        ends,
        vec![ChatRoomEvent::FreezeChanged {
            room_id: c.room,
            frozen: false,
            until: None,
            operator: None,
            operator_reason: None
        }],
        "carol hears the end before bob's message"
    );
    // The operator hears the engine's end too.
    say(&c.host, c.room, "sentinel").await.unwrap();
    let seen = room_events(&until_sentinel(&mut mod1, "sentinel").await);
    assert!(
        seen.iter().any(|e| matches!(
            e,
            ChatRoomEvent::FreezeChanged {
                frozen: false,
                operator: None,
                ..
            }
        )),
        "mod1 hears the end: {seen:?}"
    );
    let log = audit(&c.host, c.room).await;
    let ended: Vec<_> = log
        .iter()
        .filter(|e| e.action == AuditAction::FreezeEnded)
        .collect();
    assert_eq!(ended.len(), 1, "{log:#?}");
    assert_eq!((ended[0].time, ended[0].operator.clone()), (end, None));
    c.engine.shutdown().await;
}

// FINDING (intermittent, same cause as the test above): once a viewer's message has been
// accepted after the end, `fetch_chat_room_info` may still answer `frozen: true` with the
// past end, in about one run in four on this 2-core machine.
/// Sends racing a freeze's end: none is refused once the room's clock is past the end, and the
/// end is applied (event, log) exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sends_racing_the_end_of_a_freeze() {
    let c = cast().await;
    let rooms = c.host.chat_room_manager();
    let mut ends_logged = 0;
    for round in 0..5u64 {
        rooms
            .freeze_chat_room(&c.room, MuteDuration::For(Duration::from_secs(10)))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..16 {
            let bob = c.bob.clone();
            let room = c.room;
            tasks.push(tokio::spawn(async move {
                say(&bob, room, &format!("r{round}-{i}")).await
            }));
        }
        c.clock.advance(Duration::from_secs(10));
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) | Err(ChatError::RoomFrozen(_)) => {}
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        // After the end every send passes.
        say(&c.bob, c.room, &format!("after-{round}"))
            .await
            .unwrap();
        let info = rooms.fetch_chat_room_info(&c.room).await.unwrap();
        assert!(!info.frozen && info.frozen_until.is_none());
        ends_logged += 1;
        let log = audit(&c.host, c.room).await;
        let n = log
            .iter()
            .filter(|e| e.action == AuditAction::FreezeEnded)
            .count();
        assert_eq!(n, ends_logged, "one FreezeEnded per freeze: {log:#?}");
    }
    c.engine.shutdown().await;
}

// FINDING: "at once if its end passed meanwhile" does not hold: after a restart the first
// call that loads the room (here a viewer's join) answers `frozen: true, frozen_until: <60 s
// ago>`, and the room serves further calls (the host's message) before the thaw is applied
// and told. Fails in most runs (the thaw races the first calls).
/// A freeze whose end passes while the engine is down is ended when the room loads, logged at
/// its end time, and the room's info agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_freeze_that_ends_while_the_engine_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let open = || Engine::builder().data_dir(dir.path()).limits(unthrottled());
    let c = cast_on(open(), clock.clone()).await;
    c.host
        .chat_room_manager()
        .with_reason("raid")
        .freeze_chat_room(&c.room, MuteDuration::For(Duration::from_secs(60)))
        .await
        .unwrap();
    c.host
        .chat_room_manager()
        .with_reason("spam")
        .set_chat_room_slow_mode(&c.room, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    let before = audit(&c.host, c.room).await;
    let room = c.room;
    c.engine.shutdown().await;
    drop(c);
    clock.advance(Duration::from_secs(120));
    let engine = open().clock(clock.clone()).build().await.unwrap();
    // A viewer arrives first after the restart (its join loads the room).
    let bob = engine.login("bob").await.unwrap();
    let mut bob_events = bob.events();
    let joined = bob.chat_room_manager().join_chat_room(&room).await.unwrap();
    let host = engine.login("host").await.unwrap();
    host.chat_room_manager()
        .join_chat_room(&room)
        .await
        .unwrap();
    let info = host
        .chat_room_manager()
        .fetch_chat_room_info(&room)
        .await
        .unwrap();
    say(&host, room, "sentinel").await.unwrap();
    let heard = room_events(&until_sentinel(&mut bob_events, "sentinel").await);
    let heard_thaw = heard
        .iter()
        .any(|e| matches!(e, ChatRoomEvent::FreezeChanged { frozen: false, .. }));
    // "at once if its end passed meanwhile": the room is thawed when it loads.
    assert_eq!(
        (joined.frozen, joined.frozen_until, info.frozen),
        (false, None, false),
        "the join's answer and the info say frozen until {:?} (60 s ago); bob heard a thaw: {heard_thaw}",
        joined.frozen_until
    );
    assert_eq!(info.slow_mode, Some(Duration::from_secs(30)));
    let after = audit(&host, room).await;
    assert_eq!(after.len(), before.len() + 1, "{after:#?}");
    assert_eq!(
        &after[1..],
        &before[..],
        "the log before the restart is kept as it was"
    );
    assert_eq!(after[0].action, AuditAction::FreezeEnded);
    assert_eq!(
        (after[0].time, after[0].operator.clone()),
        (T0 + 60_000, None)
    );
    say(&bob, room, "hi").await.unwrap();
    engine.shutdown().await;
}

// FINDING: same after a sleep: the room hibernated (checked), the freeze's end passed, and the
// call that wakes it reports the room frozen until a time long past.
/// A frozen room that falls asleep is thawed when its end passes, as after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_freeze_that_ends_while_the_room_sleeps() {
    let clock = ManualClock::new(T0);
    let limits = unthrottled().with_room_hibernate_after(Some(Duration::ZERO));
    let c = cast_on(Engine::builder().limits(limits), clock.clone()).await;
    c.host
        .chat_room_manager()
        .freeze_chat_room(&c.room, MuteDuration::For(Duration::from_secs(600)))
        .await
        .unwrap();
    for who in [&c.bob, &c.carol] {
        who.chat_room_manager()
            .leave_chat_room(&c.room)
            .await
            .unwrap();
    }
    for who in [&c.host, &c.mod1, &c.mod2] {
        who.disconnect().unwrap();
    }
    // Let it sleep (the check runs about once a minute of the engine's clock).
    for _ in 0..8 {
        clock.advance(Duration::from_secs(61));
        if c.engine.rooms_in_memory() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let slept = c.engine.rooms_in_memory() == 0;
    clock.advance(Duration::from_secs(600));
    c.host.reconnect().unwrap();
    let info = c
        .host
        .chat_room_manager()
        .fetch_chat_room_info(&c.room)
        .await
        .unwrap();
    assert!(
        !info.frozen,
        "thawed at once on waking (slept: {slept}); info says frozen until {:?}, now {}",
        info.frozen_until,
        T0 + 8 * 61_000 + 600_000
    );
    let log = audit(&c.host, c.room).await;
    assert_eq!(log[0].action, AuditAction::FreezeEnded, "{log:#?}");
    assert_eq!(log[0].time, T0 + 600_000);
    c.bob
        .chat_room_manager()
        .join_chat_room(&c.room)
        .await
        .unwrap();
    say(&c.bob, c.room, "hi").await.unwrap();
    c.engine.shutdown().await;
}

// FINDING: freezing a room already frozen for ever is logged again (a second
// `Freeze { until: None }`) and every member is told again, although "one that changed
// nothing (muting someone already muted for ever) logs nothing". Slow mode and unfreeze get
// this right.
/// Freezing for ever twice, unfreezing a room that is not frozen, setting the same slow mode
/// again: "one that changed nothing logs nothing" and tells no one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acts_that_change_nothing_log_nothing() {
    let c = cast().await;
    let rooms = c.host.chat_room_manager();
    let mut carol = c.carol.events();
    rooms.unfreeze_chat_room(&c.room).await.unwrap();
    rooms
        .freeze_chat_room(&c.room, MuteDuration::Forever)
        .await
        .unwrap();
    rooms
        .freeze_chat_room(&c.room, MuteDuration::Forever)
        .await
        .unwrap();
    rooms
        .set_chat_room_slow_mode(&c.room, Some(Duration::from_secs(5)))
        .await
        .unwrap();
    rooms
        .set_chat_room_slow_mode(&c.room, Some(Duration::from_secs(5)))
        .await
        .unwrap();
    rooms.set_chat_room_slow_mode(&c.room, None).await.unwrap();
    rooms.set_chat_room_slow_mode(&c.room, None).await.unwrap();
    say(&c.host, c.room, "sentinel").await.unwrap();
    let seen = room_events(&until_sentinel(&mut carol, "sentinel").await);
    let log = audit(&c.host, c.room).await;
    let acts: Vec<_> = log
        .iter()
        .filter(|e| !matches!(e.action, AuditAction::AddAdmin))
        .map(|e| e.action.clone())
        .collect();
    assert_eq!(
        (seen.len(), acts.clone()),
        (
            3,
            vec![
                AuditAction::SlowMode { cooldown_ms: None },
                AuditAction::SlowMode {
                    cooldown_ms: Some(5_000)
                },
                AuditAction::Freeze { until: None },
            ]
        ),
        "one event and one entry per change; carol heard {seen:#?}"
    );
    c.engine.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Reasons on every new call
// ---------------------------------------------------------------------------------------------

/// A 10k-character reason is refused with 110 by every moderation call and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_overlong_reason_is_refused_by_every_new_call() {
    let c = cast().await;
    let sent = say(&c.bob, c.room, "hello").await.unwrap();
    let rooms = c.host.chat_room_manager();
    rooms
        .pin_chat_room_message(&c.room, sent.seq())
        .await
        .unwrap();
    let log_before = audit(&c.host, c.room).await.len();
    let long = rooms.with_reason("x".repeat(10_000));
    let r = &c.room;
    let codes = vec![
        (
            "slow",
            long.set_chat_room_slow_mode(r, Some(Duration::from_secs(5)))
                .await,
        ),
        (
            "freeze",
            long.freeze_chat_room(r, MuteDuration::Forever).await,
        ),
        (
            "ban",
            long.remove_chat_room_members_with_rejoin_ban(r, ["bob"], Duration::from_secs(60))
                .await,
        ),
        ("delete", long.delete_chat_room_message(r, sent.seq()).await),
        ("unpin", long.unpin_chat_room_message(r, sent.seq()).await),
    ];
    for (what, res) in codes {
        assert_eq!(res.map_err(|e| e.code()), Err(110), "{what}");
    }
    let info = rooms.fetch_chat_room_info(&c.room).await.unwrap();
    assert!(!info.frozen && info.slow_mode.is_none());
    assert_eq!(info.pinned_messages.len(), 1);
    assert_eq!(info.member_count, 5);
    let page = c
        .host
        .chat_manager()
        .fetch_history_messages(&c.room, HistoryQuery::newest(1))
        .await
        .unwrap();
    assert!(!page.data[0].is_recalled());
    assert_eq!(audit(&c.host, c.room).await.len(), log_before);
    // 512 characters of a multi-byte letter are fine.
    rooms
        .with_reason("é".repeat(512))
        .freeze_chat_room(&c.room, MuteDuration::Forever)
        .await
        .unwrap();
    c.engine.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Kick with a rejoin ban
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rejoin_bans_respect_roles_and_are_atomic() {
    let c = cast().await;
    let r = &c.room;
    let ban = Duration::from_secs(600);
    let code = |res: Result<(), ChatError>| res.map_err(|e| e.code());
    let m1 = c.mod1.chat_room_manager();
    let host = c.host.chat_room_manager();
    assert_eq!(
        code(
            m1.remove_chat_room_members_with_rejoin_ban(r, ["host"], ban)
                .await
        ),
        Err(703)
    );
    assert_eq!(
        code(
            m1.remove_chat_room_members_with_rejoin_ban(r, ["mod2"], ban)
                .await
        ),
        Err(703)
    );
    assert_eq!(
        code(
            m1.remove_chat_room_members_with_rejoin_ban(r, ["mod1"], ban)
                .await
        ),
        Err(703)
    );
    assert_eq!(
        code(
            host.remove_chat_room_members_with_rejoin_ban(r, ["host"], ban)
                .await
        ),
        Err(703)
    );
    let bob = c.bob.chat_room_manager();
    assert_eq!(
        code(
            bob.remove_chat_room_members_with_rejoin_ban(r, ["carol"], ban)
                .await
        ),
        Err(703)
    );
    // One bad target: nobody is removed.
    assert_eq!(
        code(
            m1.remove_chat_room_members_with_rejoin_ban(r, ["bob", "host"], ban)
                .await
        ),
        Err(703)
    );
    assert_eq!(
        code(
            m1.remove_chat_room_members_with_rejoin_ban(r, ["bob", "nobody"], ban)
                .await
        ),
        Err(702)
    );
    let info = host.fetch_chat_room_info(r).await.unwrap();
    assert_eq!(info.member_count, 5);
    // A stranger.
    let eve = c.engine.login("eve").await.unwrap();
    let res = eve
        .chat_room_manager()
        .remove_chat_room_members_with_rejoin_ban(r, ["bob"], ban)
        .await;
    assert!(
        matches!(res.as_ref().map_err(|e| e.code()), Err(702) | Err(703)),
        "{res:?}"
    );
    // Nothing was logged for any of it.
    let log = audit(&c.host, c.room).await;
    assert!(
        log.iter().all(|e| e.action == AuditAction::AddAdmin),
        "{log:#?}"
    );
    // The owner bans an admin: demoted, removed, may come back after the ban as a member.
    host.with_reason("abuse")
        .remove_chat_room_members_with_rejoin_ban(r, ["mod2"], ban)
        .await
        .unwrap();
    let err = c
        .mod2
        .chat_room_manager()
        .join_chat_room(r)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ChatError::RejoinBanned(t) if t == T0 + 600_000),
        "{err:?}"
    );
    assert_eq!(err.code(), 707);
    c.clock.advance(ban);
    c.mod2.chat_room_manager().join_chat_room(r).await.unwrap();
    let info = host.fetch_chat_room_info(r).await.unwrap();
    assert_eq!(info.admin_list, vec![uid("mod1")]);
    c.engine.shutdown().await;
}

/// Degenerate ban lengths: a zero ban and a ban of `Duration::MAX` ("means for ever").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rejoin_ban_lengths_zero_and_for_ever() {
    let c = cast().await;
    let r = &c.room;
    let host = c.host.chat_room_manager();
    host.remove_chat_room_members_with_rejoin_ban(r, ["carol"], Duration::MAX)
        .await
        .unwrap();
    c.clock.advance(Duration::from_secs(10 * 365 * 24 * 3600));
    let err = c
        .carol
        .chat_room_manager()
        .join_chat_room(r)
        .await
        .unwrap_err();
    assert_eq!(err.code(), 707, "{err:?}");
    // Zero: refused as a zero mute is (110), or a plain kick; never a ban.
    match host
        .remove_chat_room_members_with_rejoin_ban(r, ["bob"], Duration::ZERO)
        .await
    {
        Err(e) => assert_eq!(e.code(), 110),
        Ok(()) => {
            c.bob.chat_room_manager().join_chat_room(r).await.unwrap();
        }
    }
    c.engine.shutdown().await;
}

/// The ban persists with the room: after a restart and after the room slept.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rejoin_ban_survives_a_restart_and_ends_on_time() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let open = || Engine::builder().data_dir(dir.path()).limits(unthrottled());
    let c = cast_on(open(), clock.clone()).await;
    let mut carol = c.carol.events();
    c.mod1
        .chat_room_manager()
        .with_reason("timeout")
        .remove_chat_room_members_with_rejoin_ban(&c.room, ["bob"], Duration::from_secs(600))
        .await
        .unwrap();
    let ev = room_events(&[next_event(&mut carol).await]);
    assert!(
        matches!(&ev[0], ChatRoomEvent::MemberExited { participant, .. } if participant.as_str() == "bob")
    );
    let room = c.room;
    c.engine.shutdown().await;
    drop(c);
    clock.advance(Duration::from_secs(300));
    let engine = open().clock(clock.clone()).build().await.unwrap();
    let bob = engine.login("bob").await.unwrap();
    let err = bob
        .chat_room_manager()
        .join_chat_room(&room)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ChatError::RejoinBanned(t) if t == T0 + 600_000),
        "{err:?}"
    );
    let host = engine.login("host").await.unwrap();
    let log = audit(&host, room).await;
    assert_eq!(
        (
            log[0].action.clone(),
            log[0].targets.clone(),
            log[0].operator.clone(),
            log[0].reason.clone(),
            log[0].time
        ),
        (
            AuditAction::KickWithRejoinBan {
                until: T0 + 600_000
            },
            vec![uid("bob")],
            Some(uid("mod1")),
            Some("timeout".to_string()),
            T0
        )
    );
    clock.advance(Duration::from_secs(300));
    bob.chat_room_manager().join_chat_room(&room).await.unwrap();
    engine.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Slow mode
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_mode_bounds_and_roles() {
    let c = cast().await;
    let r = &c.room;
    let host = c.host.chat_room_manager();
    for bad in [
        Duration::ZERO,
        Duration::from_millis(999),
        Duration::from_millis(120_001),
        Duration::MAX,
    ] {
        let res = host.set_chat_room_slow_mode(r, Some(bad)).await;
        assert_eq!(res.map_err(|e| e.code()), Err(110), "{bad:?}");
    }
    let res = c
        .bob
        .chat_room_manager()
        .set_chat_room_slow_mode(r, Some(Duration::from_secs(5)))
        .await;
    assert_eq!(res.map_err(|e| e.code()), Err(703));
    c.mod1
        .chat_room_manager()
        .set_chat_room_slow_mode(r, Some(Duration::from_secs(120)))
        .await
        .unwrap();
    host.set_chat_room_slow_mode(r, Some(Duration::from_secs(1)))
        .await
        .unwrap();
    say(&c.bob, c.room, "a").await.unwrap();
    let err = say(&c.bob, c.room, "b").await.unwrap_err();
    assert!(
        matches!(err, ChatError::SlowMode(w) if w == Duration::from_secs(1)),
        "{err:?}"
    );
    c.clock.advance(Duration::from_secs(1));
    say(&c.bob, c.room, "c").await.unwrap();
    c.engine.shutdown().await;
}

/// A retry of an accepted keyed message inside the cooldown returns the first message: "the
/// repeat is answered before any rule ... and counts against no message limit".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idempotent_retry_is_not_refused_by_slow_mode_or_a_freeze() {
    let c = cast().await;
    c.host
        .chat_room_manager()
        .set_chat_room_slow_mode(&c.room, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    let keyed = OutgoingMessage::text(c.room, "gg").with_idempotency_key("k-1");
    let first = c
        .bob
        .chat_manager()
        .send_message(keyed.clone())
        .await
        .unwrap();
    let again = c
        .bob
        .chat_manager()
        .send_message(keyed.clone())
        .await
        .unwrap();
    assert_eq!((again.msg_id(), again.seq()), (first.msg_id(), first.seq()));
    // The retry did not restart the cooldown.
    c.clock.advance(Duration::from_secs(10));
    let err = say(&c.bob, c.room, "x").await.unwrap_err();
    assert!(
        matches!(err, ChatError::SlowMode(w) if w == Duration::from_secs(20)),
        "{err:?}"
    );
    // Frozen meanwhile: the retry still gets its first answer.
    c.host
        .chat_room_manager()
        .freeze_chat_room(&c.room, MuteDuration::Forever)
        .await
        .unwrap();
    let again = c.bob.chat_manager().send_message(keyed).await.unwrap();
    assert_eq!(again.msg_id(), first.msg_id());
    c.engine.shutdown().await;
}

/// "A room does not hibernate while a cooldown runs": a member who went offline and comes back
/// inside its cooldown still waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cooldown_outlives_going_offline_and_the_hibernation_check() {
    let clock = ManualClock::new(T0);
    let limits = unthrottled().with_room_hibernate_after(Some(Duration::ZERO));
    let c = cast_on(Engine::builder().limits(limits), clock.clone()).await;
    c.host
        .chat_room_manager()
        .set_chat_room_slow_mode(&c.room, Some(Duration::from_secs(120)))
        .await
        .unwrap();
    say(&c.bob, c.room, "one").await.unwrap();
    c.carol
        .chat_room_manager()
        .leave_chat_room(&c.room)
        .await
        .unwrap();
    for who in [&c.host, &c.mod1, &c.mod2, &c.bob] {
        who.disconnect().unwrap();
    }
    clock.advance(Duration::from_secs(61));
    // Give the hibernation check its chance, then come back.
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    c.bob.reconnect().unwrap();
    let err = say(&c.bob, c.room, "two").await.unwrap_err();
    assert!(
        matches!(err, ChatError::SlowMode(w) if w == Duration::from_secs(59)),
        "{err:?}"
    );
    // And leaving and rejoining does not reset it.
    c.bob
        .chat_room_manager()
        .leave_chat_room(&c.room)
        .await
        .unwrap();
    c.bob
        .chat_room_manager()
        .join_chat_room(&c.room)
        .await
        .unwrap();
    let err = say(&c.bob, c.room, "three").await.unwrap_err();
    assert_eq!(err.code(), 509);
    c.engine.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Idempotent sends
// ---------------------------------------------------------------------------------------------

/// 64 tasks retrying one key at once: one message, one delivery, one answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_retries_of_one_key_deliver_once() {
    let c = cast().await;
    let mut carol = c.carol.events();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let bob = c.bob.clone();
        let room = c.room;
        tasks.push(tokio::spawn(async move {
            bob.chat_manager()
                .send_message(OutgoingMessage::text(room, "vote A").with_idempotency_key("vote"))
                .await
                .unwrap()
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let first = &answers[0];
    assert!(answers
        .iter()
        .all(|m| (m.msg_id(), m.seq(), m.server_time())
            == (first.msg_id(), first.seq(), first.server_time())));
    say(&c.host, c.room, "sentinel").await.unwrap();
    let seen = until_sentinel(&mut carol, "sentinel").await;
    let votes = seen
        .iter()
        .filter(|e| matches!(e, ClientEvent::Message(m) if m.text() == Some("vote A")))
        .count();
    assert_eq!(votes, 1);
    let page = c
        .host
        .chat_manager()
        .fetch_history_messages(&c.room, HistoryQuery::newest(100))
        .await
        .unwrap();
    assert_eq!(
        page.data
            .iter()
            .filter(|m| m.text() == Some("vote A"))
            .count(),
        1
    );
    // Another sender's key of the same text is another key; past the window, a new message.
    let carols = c
        .carol
        .chat_manager()
        .send_message(OutgoingMessage::text(c.room, "vote A").with_idempotency_key("vote"))
        .await
        .unwrap();
    assert_ne!(carols.msg_id(), first.msg_id());
    c.clock
        .advance(roomcast::IDEMPOTENCY_WINDOW + Duration::from_millis(1));
    let later = c
        .bob
        .chat_manager()
        .send_message(OutgoingMessage::text(c.room, "vote A").with_idempotency_key("vote"))
        .await
        .unwrap();
    assert_ne!(later.msg_id(), first.msg_id());
    // Malformed keys.
    for key in [String::new(), "k".repeat(129), "a\nb".to_string()] {
        let res = c
            .bob
            .chat_manager()
            .send_message(OutgoingMessage::text(c.room, "x").with_idempotency_key(key.clone()))
            .await;
        assert_eq!(res.map_err(|e| e.code()).err(), Some(110), "{key:?}");
    }
    c.engine.shutdown().await;
}

/// A retry after the sender was kicked (with a ban) and the room restarted still gets its
/// first answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_after_a_ban_and_a_restart_gets_its_first_answer() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let open = || Engine::builder().data_dir(dir.path()).limits(unthrottled());
    let c = cast_on(open(), clock.clone()).await;
    let keyed = OutgoingMessage::text(c.room, "buy now").with_idempotency_key("spam-1");
    let first = c
        .bob
        .chat_manager()
        .send_message(keyed.clone())
        .await
        .unwrap();
    c.host
        .chat_room_manager()
        .remove_chat_room_members_with_rejoin_ban(&c.room, ["bob"], Duration::from_secs(600))
        .await
        .unwrap();
    let again = c
        .bob
        .chat_manager()
        .send_message(keyed.clone())
        .await
        .unwrap();
    assert_eq!(again.msg_id(), first.msg_id());
    c.engine.shutdown().await;
    drop(c);
    clock.advance(Duration::from_secs(60));
    let engine = open().clock(clock.clone()).build().await.unwrap();
    let bob = engine.login("bob").await.unwrap();
    let again = bob.chat_manager().send_message(keyed).await.unwrap();
    assert_eq!((again.msg_id(), again.seq()), (first.msg_id(), first.seq()));
    engine.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// The pre-send hook
// ---------------------------------------------------------------------------------------------

type Decide = dyn Fn(&UserId, &OutgoingMessage) -> PreSendDecision + Send + Sync;

struct Hook {
    decide: Box<Decide>,
    calls: Arc<AtomicUsize>,
    gate: Option<Arc<tokio::sync::Semaphore>>,
}

impl PreSendHook for Hook {
    fn pre_send<'a>(&'a self, from: &'a UserId, m: &'a OutgoingMessage) -> PreSendFuture<'a> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if let Some(gate) = &self.gate {
                let _permit = gate.acquire().await.unwrap();
            }
            (self.decide)(from, m)
        })
    }
}

/// A rewrite names another room: "the room and the idempotency key stay".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rewrite_cannot_move_a_message_to_another_room() {
    let clock = ManualClock::new(T0);
    let elsewhere = Arc::new(OnceLock::<RoomId>::new());
    let e2 = elsewhere.clone();
    let hook = Hook {
        decide: Box::new(move |_, m| {
            let mut out = OutgoingMessage::text(*e2.get().unwrap(), "rewritten");
            out.priority = m.priority;
            PreSendDecision::Rewrite(out)
        }),
        calls: Arc::default(),
        gate: None,
    };
    let c = cast_on(
        Engine::builder().limits(unthrottled()).pre_send_hook(hook),
        clock,
    )
    .await;
    let other = c
        .host
        .chat_room_manager()
        .create_chat_room(CreateChatRoomOptions::new("other"))
        .await
        .unwrap()
        .room_id;
    elsewhere.set(other).unwrap();
    let sent = say(&c.bob, c.room, "hi").await.unwrap();
    assert_eq!(sent.room_id(), c.room);
    assert_eq!(sent.text(), Some("rewritten"));
    let h = c
        .host
        .chat_manager()
        .fetch_history_messages(&other, HistoryQuery::newest(10))
        .await
        .unwrap();
    assert!(
        h.data.is_empty(),
        "nothing reached the other room: {:?}",
        h.data
    );
    c.engine.shutdown().await;
}

/// A rejected message takes no slow-mode cooldown; concurrent keyed retries held in a slow hook
/// are sent once; a hook that panics lets the message through (the default policy).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hook_rejections_cooldowns_and_keyed_retries_held_in_the_hook() {
    let clock = ManualClock::new(T0);
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let hook = Hook {
        decide: Box::new(|_, m| match &m.body {
            MessageBody::Text { content } if content.contains("http") => {
                PreSendDecision::Reject("no links".into())
            }
            MessageBody::Text { content } if content == "boom" => panic!("hook bug"),
            _ => PreSendDecision::Allow,
        }),
        calls: calls.clone(),
        gate: Some(gate.clone()),
    };
    let c = cast_on(
        Engine::builder().limits(unthrottled()).pre_send_hook(hook),
        clock,
    )
    .await;
    gate.add_permits(1_000);
    c.host
        .chat_room_manager()
        .set_chat_room_slow_mode(&c.room, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    let err = say(&c.bob, c.room, "see http://x").await.unwrap_err();
    assert_eq!(err.code(), 508);
    say(&c.bob, c.room, "no link now").await.unwrap();
    // A panicking hook: allowed by default (carol has no cooldown yet).
    say(&c.carol, c.room, "boom").await.unwrap();

    // Keyed retries that all wait in the hook at once.
    c.host
        .chat_room_manager()
        .set_chat_room_slow_mode(&c.room, None)
        .await
        .unwrap();
    gate.forget_permits(gate.available_permits());
    let mut carol = c.carol.events();
    let before = calls.load(Ordering::SeqCst);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let bob = c.bob.clone();
        let room = c.room;
        tasks.push(tokio::spawn(async move {
            bob.chat_manager()
                .send_message(OutgoingMessage::text(room, "once").with_idempotency_key("held"))
                .await
        }));
    }
    let waiting = calls.clone();
    eventually("all 8 in the hook", || {
        let waiting = waiting.clone();
        async move { waiting.load(Ordering::SeqCst) >= before + 8 }
    })
    .await;
    gate.add_permits(1_000);
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().unwrap().msg_id());
    }
    assert!(ids.iter().all(|i| *i == ids[0]));
    say(&c.host, c.room, "sentinel").await.unwrap();
    let seen = until_sentinel(&mut carol, "sentinel").await;
    let n = seen
        .iter()
        .filter(|e| matches!(e, ClientEvent::Message(m) if m.text() == Some("once")))
        .count();
    assert_eq!(n, 1);
    c.engine.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Broadcast
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broadcasts_count_only_what_was_sent_and_race_the_limit_exactly() {
    let clock = ManualClock::new(T0);
    let limits = unthrottled().with_broadcasts_per_window(Some((3, Duration::from_secs(60))));
    let c = cast_on(Engine::builder().limits(limits), clock.clone()).await;
    c.host
        .chat_room_manager()
        .freeze_chat_room(&c.room, MuteDuration::Forever)
        .await
        .unwrap();
    let notice = OutgoingMessage::text(c.room, "maintenance");
    // Refused calls count for nothing.
    for _ in 0..5 {
        let res = c
            .bob
            .chat_manager()
            .broadcast_to_chat_rooms(notice.clone())
            .await;
        assert_eq!(res.map_err(|e| e.code()), Err(703));
        let empty = OutgoingMessage::text(c.room, "");
        let res = c.host.chat_manager().broadcast_to_chat_rooms(empty).await;
        assert_eq!(res.map_err(|e| e.code()), Err(500));
    }
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let host = c.host.clone();
        let n = notice.clone();
        tasks.push(tokio::spawn(async move {
            host.chat_manager().broadcast_to_chat_rooms(n).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(1) => ok += 1,
            Err(e) if e.code() == 4 => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(ok, 3, "exactly the limit");
    // A frozen room took them; history has three.
    let page = c
        .bob
        .chat_manager()
        .fetch_history_messages(&c.room, HistoryQuery::newest(50))
        .await
        .unwrap();
    assert_eq!(
        page.data
            .iter()
            .filter(|m| m.text() == Some("maintenance"))
            .count(),
        3
    );
    clock.advance(Duration::from_secs(60));
    assert_eq!(
        c.host
            .chat_manager()
            .broadcast_to_chat_rooms(notice)
            .await
            .unwrap(),
        1
    );
    c.engine.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Recall, delete, pins
// ---------------------------------------------------------------------------------------------

/// Two moderators and the sender recall one message at once: one event, one log entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_deletes_of_one_message_act_once() {
    let c = cast().await;
    let mut carol = c.carol.events();
    for round in 0..10 {
        let sent = say(&c.bob, c.room, &format!("msg-{round}")).await.unwrap();
        let seq = sent.seq();
        let (a, b, s) = tokio::join!(
            tokio::spawn({
                let m = c.mod1.clone();
                let r = c.room;
                async move {
                    m.chat_room_manager()
                        .with_reason("a")
                        .delete_chat_room_message(&r, seq)
                        .await
                }
            }),
            tokio::spawn({
                let m = c.mod2.clone();
                let r = c.room;
                async move {
                    m.chat_room_manager()
                        .with_reason("b")
                        .delete_chat_room_message(&r, seq)
                        .await
                }
            }),
            tokio::spawn({
                let m = c.bob.clone();
                let r = c.room;
                async move { m.chat_manager().recall_message(&r, seq).await }
            }),
        );
        a.unwrap().unwrap();
        b.unwrap().unwrap();
        s.unwrap().unwrap();
    }
    say(&c.host, c.room, "sentinel").await.unwrap();
    let seen = room_events(&until_sentinel(&mut carol, "sentinel").await);
    let recalls = seen
        .iter()
        .filter(|e| matches!(e, ChatRoomEvent::MessageRecalled { .. }))
        .count();
    assert_eq!(recalls, 10);
    let log = audit(&c.host, c.room).await;
    let acts = log
        .iter()
        .filter(|e| {
            matches!(
                e.action,
                AuditAction::DeleteMessage { .. } | AuditAction::RecallMessage { .. }
            )
        })
        .count();
    assert_eq!(acts, 10, "{log:#?}");
    c.engine.shutdown().await;
}

/// Two admins pinning 15 messages at once with room for 10: exactly 10 pins, 10 log entries;
/// pins racing recalls never leave a recalled message pinned.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_pins_respect_the_bound_and_recalls() {
    let c = cast().await;
    let mut seqs = Vec::new();
    for i in 0..15 {
        seqs.push(say(&c.bob, c.room, &format!("p{i}")).await.unwrap().seq());
    }
    let mut tasks = Vec::new();
    for (i, seq) in seqs.iter().copied().enumerate() {
        let who = if i % 2 == 0 {
            c.mod1.clone()
        } else {
            c.mod2.clone()
        };
        let room = c.room;
        tasks.push(tokio::spawn(async move {
            who.chat_room_manager()
                .pin_chat_room_message(&room, seq)
                .await
        }));
        // bob recalls every third one at the same time.
        if i % 3 == 0 {
            let bob = c.bob.clone();
            tasks.push(tokio::spawn(async move {
                bob.chat_manager().recall_message(&room, seq).await
            }));
        }
    }
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => {}
            Err(e) if e.code() == 4 || e.code() == 500 => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    let info = c
        .host
        .chat_room_manager()
        .fetch_chat_room_info(&c.room)
        .await
        .unwrap();
    assert!(info.pinned_messages.len() <= 10);
    let page = c
        .host
        .chat_manager()
        .fetch_history_messages(&c.room, HistoryQuery::newest(50))
        .await
        .unwrap();
    for pin in &info.pinned_messages {
        let m = page.data.iter().find(|m| m.seq() == pin.seq).unwrap();
        assert!(!m.is_recalled(), "pinned and recalled: {}", pin.seq);
    }
    // Every pin in the room's info was logged, by the admin who pinned it.
    let log = audit(&c.host, c.room).await;
    for pin in &info.pinned_messages {
        assert!(log
            .iter()
            .any(|e| e.action == AuditAction::PinMessage { seq: pin.seq }
                && e.operator.as_ref() == Some(&pin.by)));
    }
    c.engine.shutdown().await;
}

/// Who hears a delete, what the log says, bad input.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delete_reaches_the_sender_not_the_operator_and_bad_input_is_refused() {
    let c = cast().await;
    let mut bob = c.bob.events();
    let mut mod1 = c.mod1.events();
    let sent = say(&c.carol, c.room, "spoiler").await.unwrap();
    let _ = until_sentinel(&mut bob, "spoiler").await;
    let _ = until_sentinel(&mut mod1, "spoiler").await;
    let mut carol = c.carol.events();
    c.mod1
        .chat_room_manager()
        .with_reason("spoilers")
        .delete_chat_room_message(&c.room, sent.seq())
        .await
        .unwrap();
    say(&c.host, c.room, "sentinel").await.unwrap();
    for (who, stream) in [("bob", &mut bob), ("carol", &mut carol)] {
        let seen = room_events(&until_sentinel(stream, "sentinel").await);
        assert!(
            seen.iter().any(|e| matches!(e, ChatRoomEvent::MessageRecalled { operator: Some(o), operator_reason: Some(r), from, .. }
                if o.as_str() == "mod1" && r == "spoilers" && from.as_str() == "carol")),
            "{who}: {seen:?}"
        );
    }
    let seen = room_events(&until_sentinel(&mut mod1, "sentinel").await);
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, ChatRoomEvent::MessageRecalled { .. })),
        "the operator is not told: {seen:?}"
    );
    let log = audit(&c.host, c.room).await;
    assert_eq!(
        log[0].action,
        AuditAction::DeleteMessage { seq: sent.seq() }
    );
    assert_eq!(log[0].targets, vec![uid("carol")]);
    assert_eq!(log[0].operator, Some(uid("mod1")));
    assert_eq!(log[0].reason.as_deref(), Some("spoilers"));
    let rooms = c.host.chat_room_manager();
    for seq in [0, 999, u64::MAX] {
        assert_eq!(
            rooms
                .delete_chat_room_message(&c.room, seq)
                .await
                .unwrap_err()
                .code(),
            500
        );
        assert_eq!(
            c.host
                .chat_manager()
                .recall_message(&c.room, seq)
                .await
                .unwrap_err()
                .code(),
            500
        );
        assert_eq!(
            rooms
                .pin_chat_room_message(&c.room, seq)
                .await
                .unwrap_err()
                .code(),
            500
        );
    }
    let nowhere = RoomId::from_u64(424242);
    assert_eq!(
        rooms
            .delete_chat_room_message(&nowhere, 1)
            .await
            .unwrap_err()
            .code(),
        705
    );
    assert_eq!(
        c.bob
            .chat_room_manager()
            .delete_chat_room_message(&c.room, 1)
            .await
            .unwrap_err()
            .code(),
        703
    );
    // A recalled message cannot be pinned.
    assert_eq!(
        rooms
            .pin_chat_room_message(&c.room, sent.seq())
            .await
            .unwrap_err()
            .code(),
        500
    );
    c.engine.shutdown().await;
}

/// The recall window's boundary is included; one ms past it is 504.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_recall_window_boundary() {
    let c = cast().await;
    let a = say(&c.bob, c.room, "a").await.unwrap();
    let b = say(&c.bob, c.room, "b").await.unwrap();
    c.clock.advance(Duration::from_secs(120));
    c.bob
        .chat_manager()
        .recall_message(&c.room, a.seq())
        .await
        .unwrap();
    c.clock.advance(Duration::from_millis(1));
    let err = c
        .bob
        .chat_manager()
        .recall_message(&c.room, b.seq())
        .await
        .unwrap_err();
    assert_eq!(err.code(), 504);
    // A member who left cannot recall (702).
    c.carol
        .chat_room_manager()
        .leave_chat_room(&c.room)
        .await
        .unwrap();
    let err = c
        .carol
        .chat_manager()
        .recall_message(&c.room, b.seq())
        .await
        .unwrap_err();
    assert_eq!(err.code(), 702);
    let log = audit(&c.host, c.room).await;
    assert_eq!(log[0].action, AuditAction::RecallMessage { seq: a.seq() });
    assert_eq!(
        (log[0].operator.clone(), log[0].targets.clone()),
        (Some(uid("bob")), vec![uid("bob")])
    );
    c.engine.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// The audit log: access, paging
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_audit_log_pages_and_admits_only_staff() {
    let c = cast().await;
    let rooms = c.host.chat_room_manager();
    for i in 0..25 {
        rooms
            .with_reason(format!("r{i}"))
            .set_chat_room_slow_mode(&c.room, Some(Duration::from_secs(1 + i)))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = rooms
            .fetch_chat_room_audit_log(&c.room, before, 7)
            .await
            .unwrap();
        assert!(page.data.len() <= 7);
        seen.extend(page.data.iter().map(|e| e.seq));
        match page.cursor {
            Some(cur) => before = Some(cur),
            None => break,
        }
    }
    let expected: Vec<u64> = (1..=27).rev().collect();
    assert_eq!(seen, expected);
    for size in [0, 1001] {
        let e = rooms
            .fetch_chat_room_audit_log(&c.room, None, size)
            .await
            .unwrap_err();
        assert_eq!(e.code(), 110);
    }
    let e = c
        .bob
        .chat_room_manager()
        .fetch_chat_room_audit_log(&c.room, None, 10)
        .await
        .unwrap_err();
    assert_eq!(e.code(), 703);
    rooms.remove_chat_room_admin(&c.room, "mod2").await.unwrap();
    let e = c
        .mod2
        .chat_room_manager()
        .fetch_chat_room_audit_log(&c.room, None, 10)
        .await
        .unwrap_err();
    assert_eq!(e.code(), 703);
    let eve = c.engine.login("eve").await.unwrap();
    let e = eve
        .chat_room_manager()
        .fetch_chat_room_audit_log(&c.room, None, 10)
        .await
        .unwrap_err();
    assert!(e.code() == 703 || e.code() == 702, "{e:?}");
    c.engine.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Handlers that call back into the engine, block or panic
// ---------------------------------------------------------------------------------------------

/// A bot whose handler, on the freeze's end, blocks on a call into the engine (announcing that
/// chat is open again), and a handler that panics on every event.
struct Bot {
    client: ChatClient,
    rt: tokio::runtime::Handle,
    said: Arc<Mutex<Vec<Result<u64, u32>>>>,
}

impl ChatRoomEventHandler for Bot {
    fn on_chat_room_freeze_changed(
        &self,
        room_id: &RoomId,
        frozen: bool,
        _until: Option<i64>,
        _operator: Option<&UserId>,
        _reason: Option<&str>,
    ) {
        if !frozen {
            let res = self
                .rt
                .block_on(say(&self.client, *room_id, "chat is open again"))
                .map(|m| m.seq())
                .map_err(|e| e.code());
            self.said.lock().push(res);
        }
    }
}

struct Panicker;
impl ChatRoomEventHandler for Panicker {
    fn on_chat_room_event(&self, _: &ChatRoomEvent) {
        panic!("a buggy handler");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handler_that_calls_back_into_the_engine_on_a_freeze_end() {
    let c = cast().await;
    let said = Arc::new(Mutex::new(Vec::new()));
    c.mod1.chat_room_manager().add_event_handler(
        "bot",
        Bot {
            client: c.mod1.clone(),
            rt: tokio::runtime::Handle::current(),
            said: said.clone(),
        },
    );
    c.bob.chat_room_manager().add_event_handler("bug", Panicker);
    let mut carol = c.carol.events();
    c.host
        .chat_room_manager()
        .freeze_chat_room(&c.room, MuteDuration::For(Duration::from_secs(30)))
        .await
        .unwrap();
    c.clock.advance(Duration::from_secs(30));
    let s = said.clone();
    eventually("the bot spoke", || {
        let s = s.clone();
        async move { !s.lock().is_empty() }
    })
    .await;
    assert!(said.lock()[0].is_ok(), "{:?}", said.lock());
    let _ = until_sentinel(&mut carol, "chat is open again").await;
    // bob's buggy handler did not stop anything: bob may still talk.
    say(&c.bob, c.room, "still here").await.unwrap();
    c.engine.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Consistency after a restart
// ---------------------------------------------------------------------------------------------

/// Room info, history and the audit log agree with each other after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn info_history_and_the_log_agree_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let open = || Engine::builder().data_dir(dir.path()).limits(unthrottled());
    let c = cast_on(open(), clock.clone()).await;
    let rooms = c.host.chat_room_manager().with_reason("stream rules");
    let a = say(&c.bob, c.room, "a").await.unwrap();
    let b = say(&c.carol, c.room, "b").await.unwrap();
    let p = say(&c.host, c.room, "poll").await.unwrap();
    rooms.pin_chat_room_message(&c.room, p.seq()).await.unwrap();
    rooms.pin_chat_room_message(&c.room, b.seq()).await.unwrap();
    clock.advance(Duration::from_secs(1));
    rooms
        .delete_chat_room_message(&c.room, b.seq())
        .await
        .unwrap();
    c.bob
        .chat_manager()
        .recall_message(&c.room, a.seq())
        .await
        .unwrap();
    rooms
        .set_chat_room_slow_mode(&c.room, Some(Duration::from_secs(10)))
        .await
        .unwrap();
    rooms
        .freeze_chat_room(&c.room, MuteDuration::For(Duration::from_secs(3600)))
        .await
        .unwrap();
    let info_before = c
        .host
        .chat_room_manager()
        .fetch_chat_room_info(&c.room)
        .await
        .unwrap();
    let log_before = audit(&c.host, c.room).await;
    let hist_before = c
        .host
        .chat_manager()
        .fetch_history_messages(&c.room, HistoryQuery::newest(50))
        .await
        .unwrap()
        .data;
    assert_eq!(
        info_before.pinned_messages.len(),
        1,
        "the deleted one was unpinned"
    );
    let room = c.room;
    c.engine.shutdown().await;
    drop(c);
    let engine = open().clock(clock.clone()).build().await.unwrap();
    let host = engine.login("host").await.unwrap();
    host.chat_room_manager().join_chat_room(&room).await.ok();
    let info = host
        .chat_room_manager()
        .fetch_chat_room_info(&room)
        .await
        .unwrap();
    assert_eq!(info.pinned_messages, info_before.pinned_messages);
    assert_eq!(info.slow_mode, info_before.slow_mode);
    assert_eq!(
        (info.frozen, info.frozen_until),
        (info_before.frozen, info_before.frozen_until)
    );
    assert_eq!(audit(&host, room).await, log_before);
    let hist = host
        .chat_manager()
        .fetch_history_messages(&room, HistoryQuery::newest(50))
        .await
        .unwrap()
        .data;
    let key = |v: &[roomcast::ChatMessage]| {
        v.iter()
            .map(|m| (m.seq(), m.text().map(str::to_string), m.recalled().cloned()))
            .collect::<Vec<_>>()
    };
    assert_eq!(key(&hist), key(&hist_before));
    engine.shutdown().await;
}

/// A bot replying from inside the hook: "goes neither through the hook nor through the lane
/// ... it is accepted before that message".
struct PingBot {
    client: Arc<OnceLock<ChatClient>>,
}

impl PreSendHook for PingBot {
    fn pre_send<'a>(&'a self, _from: &'a UserId, m: &'a OutgoingMessage) -> PreSendFuture<'a> {
        Box::pin(async move {
            if matches!(&m.body, MessageBody::Text { content } if content == "!ping") {
                let bot = self.client.get().unwrap();
                say(bot, m.room_id, "pong").await.unwrap();
            }
            PreSendDecision::Allow
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hook_that_sends_from_inside_itself() {
    let bot = Arc::new(OnceLock::new());
    let hook = PingBot {
        client: bot.clone(),
    };
    let c = cast_on(
        Engine::builder().limits(unthrottled()).pre_send_hook(hook),
        ManualClock::new(T0),
    )
    .await;
    bot.set(c.mod1.clone()).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let bob = c.bob.clone();
        let room = c.room;
        tasks.push(tokio::spawn(async move {
            say(&bob, room, "!ping").await.unwrap().seq()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let page = c
        .host
        .chat_manager()
        .fetch_history_messages(&c.room, HistoryQuery::after(0, 100))
        .await
        .unwrap();
    let texts: Vec<_> = page
        .data
        .iter()
        .map(|m| m.text().unwrap().to_string())
        .collect();
    assert_eq!(texts.len(), 20);
    assert_eq!(texts.iter().filter(|t| *t == "pong").count(), 10);
    assert_eq!(texts[0], "pong", "{texts:?}");
    c.engine.shutdown().await;
}
