//! Who a connection is: an [`Authenticator`] turns a login's credentials into a [`UserId`].
//!
//! A [`crate::Gateway`] cannot be built without one. [`TokenAuthenticator`] checks signed,
//! expiring tokens (JWT, HS256, through the `jsonwebtoken` crate) that the embedding service
//! issues after its own login; [`InsecureAuthenticator`] trusts the user id a client types, for
//! local demos only, says so in the log, and refuses the engine's super admins. Super-admin
//! rights come from the embedding service ([`roomcast::Engine::add_super_admin`]), never from a
//! name typed by a client.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use roomcast::UserId;
use serde::{Deserialize, Serialize};

/// What a client sent in its `login` frame.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// A token, if the client gave one.
    pub token: Option<String>,
    /// A user id, if the client gave one (trusted by [`InsecureAuthenticator`] only).
    pub user: Option<String>,
}

impl std::fmt::Debug for Credentials {
    /// Never prints the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("user", &self.user)
            .finish()
    }
}

/// Why credentials were refused: the connection closes with
/// [`crate::protocol::close::AUTH_FAILED`] and this reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError {
    reason: String,
}

impl AuthError {
    /// A refusal with this reason (shown to the client: say nothing secret).
    pub fn new(reason: impl Into<String>) -> AuthError {
        AuthError {
            reason: reason.into(),
        }
    }

    /// The reason.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for AuthError {}

/// The future an [`Authenticator`] returns.
pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<UserId, AuthError>> + Send + 'a>>;

/// Turns a login's credentials into the user it logs in as, or refuses them.
///
/// Implement it to check your service's own sessions or tokens (it may await a database).
///
/// ```
/// use roomcast::UserId;
/// use roomcast_gateway::{AuthError, AuthFuture, Authenticator, Credentials};
///
/// /// Accepts `secret-<user>` tokens (an example: use real signatures).
/// struct Prefixed;
/// impl Authenticator for Prefixed {
///     fn authenticate<'a>(&'a self, credentials: &'a Credentials) -> AuthFuture<'a> {
///         Box::pin(async move {
///             let token = credentials.token.as_deref().ok_or(AuthError::new("no token"))?;
///             let user = token.strip_prefix("secret-").ok_or(AuthError::new("bad token"))?;
///             UserId::new(user).map_err(|e| AuthError::new(e.to_string()))
///         })
///     }
/// }
/// ```
pub trait Authenticator: Send + Sync + 'static {
    /// The user these credentials log in as.
    fn authenticate<'a>(&'a self, credentials: &'a Credentials) -> AuthFuture<'a>;

    /// True if this authenticator trusts what the client typed. The gateway then refuses the
    /// engine's super admins (their rights must not be one typed name away). Default false.
    fn is_insecure(&self) -> bool {
        false
    }
}

/// The claims of a [`TokenAuthenticator`] token.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    iat: u64,
    iss: String,
}

/// The issuer written into and required of every token.
const ISSUER: &str = "roomcast";

/// Signed, expiring tokens: HS256 JWTs with the user id as subject, issued by the embedding
/// service with [`TokenAuthenticator::issue`] and checked at login (signature, issuer, expiry,
/// with 5 s of leeway for clock skew).
///
/// ```
/// use std::time::Duration;
/// use roomcast_gateway::{Authenticator, Credentials, TokenAuthenticator};
/// # #[tokio::main] async fn main() {
/// let auth = TokenAuthenticator::new(b"a secret of at least thirty-two bytes!").unwrap();
/// let token = auth.issue("alice", Duration::from_secs(3600)).unwrap();
/// let credentials = Credentials { token: Some(token), user: None };
/// assert_eq!(auth.authenticate(&credentials).await.unwrap().as_str(), "alice");
/// let forged = Credentials { token: Some("e30.e30.AAAA".into()), user: None };
/// assert!(auth.authenticate(&forged).await.is_err());
/// # }
/// ```
pub struct TokenAuthenticator {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuthenticator").finish_non_exhaustive()
    }
}

/// The shortest secret [`TokenAuthenticator::new`] takes (HS256 wants at least 256 bits).
pub const MIN_SECRET_BYTES: usize = 32;

impl TokenAuthenticator {
    /// An authenticator with this secret, shared with whatever issues the tokens. Refuses a
    /// secret shorter than [`MIN_SECRET_BYTES`].
    pub fn new(secret: &[u8]) -> Result<TokenAuthenticator, AuthError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(AuthError::new(format!(
                "the token secret must be at least {MIN_SECRET_BYTES} bytes"
            )));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        validation.leeway = 5;
        let bad = |e: jsonwebtoken::errors::Error| AuthError::new(format!("bad secret: {e}"));
        Ok(TokenAuthenticator {
            encoding: EncodingKey::from_secret(secret).map_err(bad)?,
            decoding: DecodingKey::from_secret(secret).map_err(bad)?,
            validation,
        })
    }

    /// A token for `user`, valid for `ttl` from now.
    pub fn issue(&self, user: &str, ttl: Duration) -> Result<String, AuthError> {
        self.issue_until(user, SystemTime::now() + ttl)
    }

    /// A token for `user`, valid until `expires_at`.
    pub fn issue_until(&self, user: &str, expires_at: SystemTime) -> Result<String, AuthError> {
        let user = UserId::new(user).map_err(|e| AuthError::new(e.to_string()))?;
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let claims = Claims {
            sub: user.to_string(),
            exp: secs(expires_at),
            iat: secs(SystemTime::now()),
            iss: ISSUER.into(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AuthError::new(format!("cannot sign the token: {e}")))
    }
}

impl Authenticator for TokenAuthenticator {
    fn authenticate<'a>(&'a self, credentials: &'a Credentials) -> AuthFuture<'a> {
        Box::pin(async move {
            let token = credentials
                .token
                .as_deref()
                .ok_or_else(|| AuthError::new("a token is required"))?;
            let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
                .map_err(|e| match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                        AuthError::new("the token has expired")
                    }
                    _ => AuthError::new("the token is not valid"),
                })?;
            UserId::new(&data.claims.sub).map_err(|e| AuthError::new(e.to_string()))
        })
    }
}

/// Trusts the user id the client types: for local demos only. Anyone can be anyone (but a
/// super admin of the engine, whom it refuses), so constructing one logs a warning.
///
/// ```
/// use roomcast_gateway::{Authenticator, Credentials, InsecureAuthenticator};
/// # #[tokio::main] async fn main() {
/// let auth = InsecureAuthenticator::trust_client_user_ids();
/// let credentials = Credentials { token: None, user: Some("bob".into()) };
/// assert_eq!(auth.authenticate(&credentials).await.unwrap().as_str(), "bob");
/// assert!(auth.is_insecure());
/// # }
/// ```
#[derive(Debug)]
pub struct InsecureAuthenticator(());

impl InsecureAuthenticator {
    /// The insecure authenticator (logs a warning).
    pub fn trust_client_user_ids() -> InsecureAuthenticator {
        tracing::warn!(
            "roomcast gateway: INSECURE authentication: any client may log in as any user \
             (super admins excepted); use it for local demos only"
        );
        InsecureAuthenticator(())
    }
}

impl Authenticator for InsecureAuthenticator {
    fn authenticate<'a>(&'a self, credentials: &'a Credentials) -> AuthFuture<'a> {
        Box::pin(async move {
            let user = credentials
                .user
                .as_deref()
                .ok_or_else(|| AuthError::new("a user id is required"))?;
            UserId::new(user).map_err(|e| AuthError::new(e.to_string()))
        })
    }

    fn is_insecure(&self) -> bool {
        true
    }
}
