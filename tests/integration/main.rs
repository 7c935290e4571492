//! roomcast's end-to-end tests, through the public API only. One binary, a module per area.

mod support;

/// Creating, destroying, joining, leaving and reading rooms: every rule and error code.
mod lifecycle;

/// Who receives which event, handler registration and removal, event streams.
mod events;

/// The public room list: order, pages, filters.
mod listing;

/// Reopening a data directory; what persists and what does not.
mod persistence;

/// Use from plain tokio runtimes, shutdown, concurrency, bad input.
mod runtime;

/// Sending, receiving, priorities, replay, history, ordering, slow consumers.
mod messages;

/// Online, offline, the grace period, automatic removal, resuming.
mod presence;

/// Roles, moderation lists, mutes, specification, announcement, member list, attributes.
mod moderation;

/// What survives a restart, local copies, crash recovery of rooms.
mod durability;

/// Plan and call-frequency limits, each with its code.
mod limits;

/// Idle rooms leave memory and come back.
mod hibernation;

/// Moderation reasons and the audit log.
mod audit;

/// Live-stream moderation beyond Agora: slow mode, timed freeze, kick with a rejoin ban.
mod live;
/// Recalling and deleting messages, pinned messages.
mod recall;
/// The send path beyond Agora: idempotent sends, the pre-send hook, broadcasts.
mod sendpath;

/// Shadow bans (Stream's): who sees a shadow-banned member's messages.
mod shadow;

/// Hold for review (Twitch's chat delay): held messages, staff, deletion, restart, races.
mod hold;
