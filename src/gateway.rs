//! The gateway examples' demo: an engine with a super admin `host` who owns a room `lobby`, a
//! moderator `mod` (an admin of it), and a gateway that checks signed tokens (or, asked for,
//! trusts typed user ids: insecure, for local demos only).

use std::io::Read;
use std::time::Duration;

use roomcast::{ChatError, CreateChatRoomOptions, Engine, RoomId};
use roomcast_gateway::{Gateway, GatewayConfig, InsecureAuthenticator, TokenAuthenticator};

/// A demo: the gateway, its room, and a login link per demo user.
#[derive(Debug)]
pub struct Demo {
    /// The gateway (serve it with an adapter).
    pub gateway: Gateway,
    /// The room `lobby`.
    pub lobby: RoomId,
    /// `(user, token)` for `host` (super admin, owner), `mod` (admin), `alice` and `bob`;
    /// empty in insecure mode.
    pub tokens: Vec<(String, String)>,
}

impl Demo {
    /// Builds the demo; `insecure` trusts typed user ids instead of tokens.
    pub async fn new(insecure: bool) -> Result<Demo, Box<dyn std::error::Error>> {
        let engine = Engine::builder().build().await?;
        let lobby = setup(&engine).await?;
        let config = GatewayConfig::default();
        if insecure {
            let gateway = Gateway::new(
                engine,
                InsecureAuthenticator::trust_client_user_ids(),
                config,
            );
            return Ok(Demo {
                gateway,
                lobby,
                tokens: Vec::new(),
            });
        }
        let auth = TokenAuthenticator::new(&secret())?;
        let mut tokens = Vec::new();
        for user in ["host", "mod", "alice", "bob"] {
            let token = auth.issue(user, Duration::from_secs(12 * 3600))?;
            tokens.push((user.to_string(), token));
        }
        Ok(Demo {
            gateway: Gateway::new(engine, auth, config),
            lobby,
            tokens,
        })
    }

    /// Prints how to log in.
    pub fn print(&self, base: &str) {
        println!("room `lobby` is {}", self.lobby);
        if self.tokens.is_empty() {
            println!("INSECURE demo: log in at {base}/ with any user id (not `host`)");
        }
        for (user, token) in &self.tokens {
            println!("log in as {user:<5}: {base}/#token={token}");
        }
    }
}

async fn setup(engine: &Engine) -> Result<RoomId, ChatError> {
    engine.add_super_admin("host").await?;
    let host = engine.login("host").await?;
    let rooms = host.chat_room_manager();
    let room = rooms
        .create_chat_room(CreateChatRoomOptions::new("lobby").with_max_users(10_000))
        .await?
        .room_id;
    let moderator = engine.login("mod").await?;
    moderator.chat_room_manager().join_chat_room(&room).await?;
    rooms.add_chat_room_admin(&room, "mod").await?;
    // Neither keeps a client: they come back through the page (an owner and an admin stay
    // members while offline).
    moderator.logout();
    host.logout();
    Ok(room)
}

/// The token secret: `ROOMCAST_TOKEN_SECRET` if set, else 32 random bytes.
fn secret() -> Vec<u8> {
    if let Ok(s) = std::env::var("ROOMCAST_TOKEN_SECRET") {
        return s.into_bytes();
    }
    let mut bytes = [0u8; 32];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_err()
    {
        // No /dev/urandom: derive from the process's random hasher keys and the time.
        use std::hash::{BuildHasher, Hasher};
        for chunk in bytes.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            chunk.copy_from_slice(&h.finish().to_le_bytes()[..chunk.len()]);
        }
    }
    bytes.to_vec()
}
