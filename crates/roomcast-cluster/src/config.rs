//! [`ClusterConfig`]: where NATS is, which cluster and node this is, and the timings.

use std::time::Duration;

use crate::error::{ClusterError, ErrorKind};

/// The default [`ClusterConfig::lease_ttl`]: 5 s.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);

/// The default [`ClusterConfig::request_timeout`]: 2 s.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The default [`ClusterConfig::compaction_bytes`]: 4 MiB.
pub const DEFAULT_COMPACTION_BYTES: u64 = 4 << 20;

/// The shortest `lease_ttl` accepted: nats-server refuses a bucket `max_age` under 100 ms.
pub const MIN_LEASE_TTL: Duration = Duration::from_millis(100);

/// The longest cluster or node name.
pub const MAX_NAME_LEN: usize = 32;

/// How to join a cluster: validated by [`Cluster::connect`](crate::Cluster::connect).
///
/// Every node of one cluster must use the same `cluster` name and `lease_ttl` (the lease
/// bucket's `max_age` is the TTL; a node with another one fails to connect with
/// [`ErrorKind::ConfigMismatch`]), and a node id of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// NATS server URLs, e.g. `nats://127.0.0.1:4222` (at least one). The client fails over
    /// between them and reconnects by itself.
    pub servers: Vec<String>,
    /// The cluster's name, `[A-Za-z0-9_-]`, 1 to 32 characters. It names the NATS bucket
    /// (`roomcast_<cluster>_owners`), stream (`roomcast_<cluster>_rooms`) and subjects
    /// (`roomcast.<cluster>.…`), so several clusters can share one NATS.
    pub cluster: String,
    /// This node's id, same rule as `cluster`. It is the value of the leases this node holds
    /// and the address of its calls (`roomcast.<cluster>.node.<node>.call`).
    pub node: String,
    /// How long a lease lives without renewal (default 5 s, at least 100 ms). A lease's owner
    /// renews it well before (the background renewer every `lease_ttl / 3`); when the owner
    /// dies, another node can take the room after at most this long.
    pub lease_ttl: Duration,
    /// The longest any one call to NATS may take (default 2 s): connecting, a JetStream write
    /// awaiting its ack, a read, a node-to-node request. Past it the call fails with
    /// [`ErrorKind::Unavailable`].
    pub request_timeout: Duration,
    /// How much a room's log may grow before its owner compacts it (default 4 MiB): once the
    /// entries since the room's last snapshot exceed this, and twice that snapshot's size, the
    /// owner appends a new snapshot of the room and removes the entries before it. A node that
    /// takes the room replays from the snapshot on.
    pub compaction_bytes: u64,
    /// How many copies JetStream keeps of the cluster's streams and buckets (default 1, at
    /// most 5): more than one needs a NATS cluster of at least that many servers, and survives
    /// the loss of all but a majority of them. Used when the streams are made (by the first
    /// node); an existing stream keeps its own.
    pub replicas: usize,
}

impl ClusterConfig {
    /// A configuration with the default timings.
    pub fn new(
        servers: impl IntoIterator<Item = impl Into<String>>,
        cluster: impl Into<String>,
        node: impl Into<String>,
    ) -> Self {
        ClusterConfig {
            servers: servers.into_iter().map(Into::into).collect(),
            cluster: cluster.into(),
            node: node.into(),
            lease_ttl: DEFAULT_LEASE_TTL,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            compaction_bytes: DEFAULT_COMPACTION_BYTES,
            replicas: 1,
        }
    }

    /// The same configuration with another `lease_ttl`.
    pub fn with_lease_ttl(mut self, lease_ttl: Duration) -> Self {
        self.lease_ttl = lease_ttl;
        self
    }

    /// The same configuration with another `request_timeout`.
    pub fn with_request_timeout(mut self, request_timeout: Duration) -> Self {
        self.request_timeout = request_timeout;
        self
    }

    /// The same configuration with another `compaction_bytes`.
    pub fn with_compaction_bytes(mut self, compaction_bytes: u64) -> Self {
        self.compaction_bytes = compaction_bytes;
        self
    }

    /// The same configuration with another `replicas`.
    pub fn with_replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// Checks every field; [`Cluster::connect`](crate::Cluster::connect) calls it first.
    pub fn validate(&self) -> Result<(), ClusterError> {
        if self.servers.is_empty() || self.servers.iter().any(|s| s.trim().is_empty()) {
            return Err(invalid("at least one NATS server URL is needed"));
        }
        validate_name("cluster", &self.cluster)?;
        validate_name("node", &self.node)?;
        if self.lease_ttl < MIN_LEASE_TTL {
            return Err(invalid(format!(
                "lease_ttl must be at least {MIN_LEASE_TTL:?}, got {:?}",
                self.lease_ttl
            )));
        }
        if self.request_timeout.is_zero() {
            return Err(invalid("request_timeout must not be zero"));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(invalid(format!(
                "replicas must be 1 to 5, got {}",
                self.replicas
            )));
        }
        Ok(())
    }
}

/// Checks a cluster or node name: `[A-Za-z0-9_-]`, 1 to 32 characters.
pub(crate) fn validate_name(what: &str, name: &str) -> Result<(), ClusterError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{what} name {name:?} must be 1 to {MAX_NAME_LEN} characters of [A-Za-z0-9_-]"
        )))
    }
}

fn invalid(message: impl Into<String>) -> ClusterError {
    ClusterError::new(ErrorKind::InvalidConfig, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ClusterConfig {
        ClusterConfig::new(["nats://127.0.0.1:4222"], "prod-eu_1", "node-a")
    }

    #[test]
    fn defaults() {
        let c = config();
        assert_eq!(c.lease_ttl, Duration::from_secs(5));
        assert_eq!(c.request_timeout, Duration::from_secs(2));
        assert_eq!((c.compaction_bytes, c.replicas), (4 << 20, 1));
        c.validate().unwrap();
        for bad in [0, 6] {
            let e = config().with_replicas(bad).validate().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
        }
        config().with_replicas(3).validate().unwrap();
    }

    #[test]
    fn names_are_checked() {
        for bad in ["", "a.b", "a b", "a*", "a>", "é", &"x".repeat(33)] {
            let mut c = config();
            c.cluster = bad.to_string();
            assert_eq!(c.validate().unwrap_err().kind(), ErrorKind::InvalidConfig);
            let mut c = config();
            c.node = bad.to_string();
            assert_eq!(c.validate().unwrap_err().kind(), ErrorKind::InvalidConfig);
        }
        let mut c = config();
        c.node = "x".repeat(32);
        c.validate().unwrap();
    }

    #[test]
    fn servers_and_timings_are_checked() {
        let mut c = config();
        c.servers.clear();
        assert!(c.validate().is_err());
        assert!(config()
            .with_lease_ttl(Duration::from_millis(99))
            .validate()
            .is_err());
        assert!(config()
            .with_request_timeout(Duration::ZERO)
            .validate()
            .is_err());
        config()
            .with_lease_ttl(Duration::from_millis(100))
            .validate()
            .unwrap();
    }
}
