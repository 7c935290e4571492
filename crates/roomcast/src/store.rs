//! Offline tools for a store directory: check it, and salvage what is readable.
//!
//! Run them on a directory no engine has open (sled locks it). `examples/store_check.rs` wraps
//! both in a command:
//!
//! ```sh
//! cargo run --release --example store_check -- DIR [--salvage NEW_DIR]
//! ```

use std::path::Path;

use roomcast_model::{ChatError, StorageFailure};

pub use roomcast_store::{CheckReport, Problem};

/// Reads every record of the store in `dir` (rooms, sequence numbers, retained messages, local
/// copies, super admins) and reports what is corrupt and which invariants are broken (a room's
/// last sequence number against its newest message, messages of rooms that are gone). An error
/// (902, with the cause as its source) only if the store cannot be opened at all.
///
/// ```
/// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
/// let dir = tempfile::tempdir().unwrap();
/// let engine = roomcast::Engine::builder().data_dir(dir.path()).build().await?;
/// engine.add_super_admin("alice").await?;
/// engine.shutdown().await;
/// let report = roomcast::store::check(dir.path())?;
/// assert!(report.is_clean());
/// assert_eq!(report.super_admins, 1);
/// # Ok(()) }
/// ```
pub fn check(dir: impl AsRef<Path>) -> Result<CheckReport, ChatError> {
    let dir = dir.as_ref();
    roomcast_store::check(dir).map_err(|e| {
        ChatError::Storage(StorageFailure::new(
            format!("cannot check the store in {}", dir.display()),
            e,
        ))
    })
}

/// Checks the store in `from` as [`check`] does and copies every readable record into a new
/// store in `to` (a directory that holds no store yet), leaving out corrupt records and messages
/// of rooms that are gone. The new store opens cleanly with every invariant.
///
/// ```
/// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
/// use roomcast::{CreateChatRoomOptions, Engine};
/// let old = tempfile::tempdir().unwrap();
/// let engine = Engine::builder().data_dir(old.path()).build().await?;
/// engine.add_super_admin("host").await?;
/// let rooms = engine.login("host").await?.chat_room_manager();
/// let room = rooms.create_chat_room(CreateChatRoomOptions::new("kept")).await?;
/// engine.shutdown().await;
///
/// let new = tempfile::tempdir().unwrap();
/// let report = roomcast::store::salvage(old.path(), new.path())?;
/// assert!(report.is_clean());
/// assert_eq!((report.rooms, report.super_admins), (1, 1));
/// let engine = Engine::builder().data_dir(new.path()).build().await?;
/// let rooms = engine.login("host").await?.chat_room_manager();
/// assert_eq!(rooms.fetch_chat_room_info(&room.room_id).await?.name, "kept");
/// engine.shutdown().await;
/// # Ok(()) }
/// ```
pub fn salvage(from: impl AsRef<Path>, to: impl AsRef<Path>) -> Result<CheckReport, ChatError> {
    let (from, to) = (from.as_ref(), to.as_ref());
    roomcast_store::salvage(from, to).map_err(|e| {
        ChatError::Storage(StorageFailure::new(
            format!("cannot salvage {} into {}", from.display(), to.display()),
            e,
        ))
    })
}
