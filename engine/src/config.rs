//! Broker configuration: every option and every limit, read from a TOML file.
//!
//! Every table is `#[serde(default, deny_unknown_fields)]`: a file may set only
//! some keys (the rest keep their defaults) and a misspelt key is an error.
//! Units are part of the key names (`_bytes`, `_ms`, `_secs`, `_messages`).
//! With no file at all, [`Config::default`] listens on `127.0.0.1:1883` (TCP),
//! allows anonymous clients and runs one executor per online core.
//!
//! [`DEFAULT_CONFIG_TOML`] is the commented reference file; a unit test checks
//! that it parses to exactly [`Config::default`] and lists every key.
//!
//! Loading is `parse, then validate`: [`Config::from_toml_str`] and
//! [`Config::load`] do both. After changing a loaded config (command-line
//! overrides), call [`Config::validate`] again.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The commented default configuration file: every option with its default
/// value and a one-line explanation with its unit.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("default-config.toml");

/// The largest packet MQTT can express: a remaining length of 268,435,455
/// bytes plus a fixed header of at most 5 bytes.
pub const MQTT_MAX_PACKET_SIZE_BYTES: u32 = 268_435_460;

/// The smallest `limits.max_packet_size_bytes` accepted: below this even an
/// ordinary CONNECT would be refused.
pub const MIN_PACKET_SIZE_BYTES: u32 = 64;

/// The largest `cores` value accepted (a guard against typos).
pub const MAX_CORES: usize = 4096;

/// The smallest `runtime.io_memory_bytes` (glommio rounds smaller values up to this).
pub const MIN_IO_MEMORY_BYTES: u64 = 64 * 1024;

/// The largest `runtime.io_memory_bytes` accepted (per executor).
pub const MAX_IO_MEMORY_BYTES: u64 = 1 << 30;

/// The smallest `limits.overload_memory_bytes` other than 0: no broker process is smaller,
/// so a lower mark would refuse every new client from the start (a unit error, most likely).
pub const MIN_OVERLOAD_MEMORY_BYTES: u64 = 1024 * 1024;

/// The longest `listeners[].websocket.path` accepted.
pub const MAX_WEBSOCKET_PATH_BYTES: usize = 1024;

/// The default MQTT TCP listener address, `127.0.0.1:1883`.
pub const DEFAULT_BIND: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1883);

/// The whole broker configuration (the top level of the TOML file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Executors (threads, one per core) to run; 0 = one per online core.
    pub cores: usize,
    /// Accept clients that connect without a username.
    pub allow_anonymous: bool,
    /// The TCP listeners (`[[listeners]]` tables); at least one.
    pub listeners: Vec<ListenerConfig>,
    /// Protocol and resource limits (`[limits]`).
    pub limits: Limits,
    /// Runtime (executor, buffer, socket) settings (`[runtime]`).
    pub runtime: RuntimeConfig,
    /// Shared subscriptions (`[shared_subscriptions]`).
    pub shared_subscriptions: SharedSubscriptionsConfig,
    /// `$SYS` statistics topics (`[sys]`).
    pub sys: SysConfig,
    /// Logging (`[log]`).
    pub log: LogConfig,
    /// Durable sessions: the per-core log on disk (`[storage]`).
    pub storage: StorageConfig,
    /// Authentication and authorization (`[auth]`).
    pub auth: AuthConfig,
    /// The HTTP listener for operations: metrics and the admin API (`[admin]`).
    pub admin: AdminConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cores: 0,
            allow_anonymous: true,
            listeners: vec![ListenerConfig::default()],
            limits: Limits::default(),
            runtime: RuntimeConfig::default(),
            shared_subscriptions: SharedSubscriptionsConfig::default(),
            sys: SysConfig::default(),
            log: LogConfig::default(),
            storage: StorageConfig::default(),
            auth: AuthConfig::default(),
            admin: AdminConfig::default(),
        }
    }
}

/// The default admin (metrics and HTTP API) address, `127.0.0.1:18083`: loopback only.
pub const DEFAULT_ADMIN_BIND: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 18083);

/// The HTTP listener for operations (the `[admin]` table): `GET /metrics` (Prometheus) and the
/// JSON API under `/api/v1/`. It runs on core 0 and has no authentication: keep it on loopback
/// or a management network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Run the admin listener.
    pub enabled: bool,
    /// Its address.
    pub bind: SocketAddr,
    /// Admin connections open at once; more are answered 503 and closed.
    pub max_connections: u32,
    /// Largest request (request line, headers and body), in bytes; larger ones get 413.
    pub max_request_bytes: u32,
    /// Milliseconds a connection has to send its whole request; then 408.
    pub request_timeout_ms: u64,
    /// Milliseconds to wait for another core's answer to a per-client request; then 504.
    pub core_timeout_ms: u64,
    /// Largest page of a list endpoint (`limit`), and its default.
    pub max_page_size: u32,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            bind: DEFAULT_ADMIN_BIND,
            max_connections: 64,
            max_request_bytes: 8192,
            request_timeout_ms: 5000,
            core_timeout_ms: 2000,
            max_page_size: 1000,
        }
    }
}

/// Authentication and authorization (the `[auth]` table). `allow_anonymous` stays at the top
/// level of the file, where it has always been.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Password file in `mosquitto_passwd`'s format; clients with a user name must match it.
    /// Not set: user names are not checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// ACL file in Mosquitto's syntax; when set, anything it does not grant is denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acl_file: Option<PathBuf>,
    /// Failed logins allowed from one source address (IPv6: one /64) within
    /// `failed_login_window_secs`, counted per core; 0 = no limit.
    pub failed_login_limit: u32,
    /// The window of `failed_login_limit`, in seconds.
    pub failed_login_window_secs: u32,
    /// Source addresses tracked by the limiter per core; the oldest is forgotten when full.
    pub max_tracked_addresses: u32,
    /// Largest password or ACL file read, in bytes.
    pub max_file_bytes: u64,
    /// SCRAM-SHA-256 credentials for MQTT 5 enhanced authentication, one
    /// `user:SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` line per user
    /// (PostgreSQL's format; `ringmq passwd --scram`). Not set: enhanced authentication is
    /// refused (CONNACK 0x8C).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scram_file: Option<PathBuf>,
    /// JSON Web Tokens in the password field (`[auth.jwt]`); not set: off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtConfig>,
    /// The HTTP authentication hook (`[auth.http]`); not set: off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpAuthConfig>,
}

/// JWT authentication (the `[auth.jwt]` table): the client sends a signed token as its
/// password. At least one key: `hmac_secret` or `hmac_secret_file` (HS256/HS384/HS512), and/or
/// `rsa_public_key_file` (RS256/RS384/RS512).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// The HMAC secret, as UTF-8 text (prefer `hmac_secret_file`, kept out of the config).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hmac_secret: Option<String>,
    /// A file holding the HMAC secret (one trailing line break is not part of it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hmac_secret_file: Option<PathBuf>,
    /// A PEM file with the RSA public key (`BEGIN PUBLIC KEY` or `BEGIN RSA PUBLIC KEY`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rsa_public_key_file: Option<PathBuf>,
    /// Algorithms accepted (`HS256`, `HS384`, `HS512`, `RS256`, `RS384`, `RS512`); empty: all
    /// those of the keys configured.
    pub algorithms: Vec<String>,
    /// A claim that must equal the client's identity (e.g. `"sub"`); not set: no such check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub match_claim: Option<String>,
    /// What `match_claim` must equal: `username` or `client_id`.
    pub match_to: JwtClaimTarget,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_secs: u32,
    /// Refuse tokens without an `exp` claim.
    pub require_exp: bool,
    /// Longest token accepted, in bytes.
    pub max_token_bytes: u32,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            hmac_secret: None,
            hmac_secret_file: None,
            rsa_public_key_file: None,
            algorithms: Vec::new(),
            match_claim: None,
            match_to: JwtClaimTarget::Username,
            leeway_secs: 30,
            require_exp: false,
            max_token_bytes: 4096,
        }
    }
}

/// What `auth.jwt.match_claim` must equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JwtClaimTarget {
    /// The CONNECT's user name.
    Username,
    /// The CONNECT's client identifier.
    ClientId,
}

/// The HTTP authentication hook (the `[auth.http]` table): the broker POSTs
/// `{clientid, username, password, peerhost, protocol}` as JSON to `url`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpAuthConfig {
    /// `http://ADDRESS[:PORT]/PATH`; ADDRESS is an IP address or `localhost` (plain HTTP only).
    pub url: String,
    /// Time for the whole exchange (connect, request, answer), in milliseconds; then the
    /// client is refused as unavailable.
    pub timeout_ms: u64,
    /// Largest answer read (status line, headers, body), in bytes.
    pub max_response_bytes: u32,
    /// How long an answer is reused for the same credentials, in seconds; 0 = no cache.
    pub cache_ttl_secs: u32,
    /// Answers cached per core; the oldest goes when full.
    pub cache_max_entries: u32,
    /// Questions in flight per core; beyond, clients are refused as unavailable.
    pub max_pending_requests: u32,
}

impl Default for HttpAuthConfig {
    fn default() -> Self {
        HttpAuthConfig {
            url: String::new(),
            timeout_ms: 2000,
            max_response_bytes: 4096,
            cache_ttl_secs: 60,
            cache_max_entries: 10_000,
            max_pending_requests: 256,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            password_file: None,
            acl_file: None,
            failed_login_limit: 10,
            failed_login_window_secs: 60,
            max_tracked_addresses: 10_000,
            max_file_bytes: 16 * 1024 * 1024,
            scram_file: None,
            jwt: None,
            http: None,
        }
    }
}

impl AuthConfig {
    /// Whether any method checks the credentials of clients with a user name.
    pub fn checks_credentials(&self) -> bool {
        self.password_file.is_some() || self.jwt.is_some() || self.http.is_some()
    }

    /// The settings of the auth part (of a validated configuration).
    pub fn settings(&self, allow_anonymous: bool) -> crate::auth::AuthSettings {
        crate::auth::AuthSettings {
            allow_anonymous,
            password_file: self.password_file.clone(),
            acl_file: self.acl_file.clone(),
            max_file_bytes: self.max_file_bytes,
            limiter: crate::auth::LimiterSettings {
                limit: self.failed_login_limit,
                window: std::time::Duration::from_secs(u64::from(self.failed_login_window_secs)),
                max_tracked_addresses: self.max_tracked_addresses as usize,
            },
            scram_file: self.scram_file.clone(),
            jwt: self.jwt.as_ref().map(JwtConfig::settings),
            http: self.http.as_ref().and_then(HttpAuthConfig::settings),
        }
    }
}

impl JwtConfig {
    /// The algorithms accepted: those listed (known names only), or all those of the keys.
    fn algorithms(&self) -> Vec<crate::auth::jwt::Alg> {
        use crate::auth::jwt::{Alg, ALGORITHMS};
        let hmac = self.hmac_secret.is_some() || self.hmac_secret_file.is_some();
        let rsa = self.rsa_public_key_file.is_some();
        if self.algorithms.is_empty() {
            ALGORITHMS
                .into_iter()
                .filter(|a| if a.is_hmac() { hmac } else { rsa })
                .collect()
        } else {
            self.algorithms
                .iter()
                .filter_map(|n| Alg::from_name(n))
                .collect()
        }
    }

    fn settings(&self) -> crate::auth::jwt::JwtSettings {
        crate::auth::jwt::JwtSettings {
            hmac_secret: self.hmac_secret.clone(),
            hmac_secret_file: self.hmac_secret_file.clone(),
            rsa_public_key_file: self.rsa_public_key_file.clone(),
            algorithms: self.algorithms(),
            match_claim: self.match_claim.clone(),
            match_to: match self.match_to {
                JwtClaimTarget::Username => crate::auth::jwt::ClaimTarget::Username,
                JwtClaimTarget::ClientId => crate::auth::jwt::ClaimTarget::ClientId,
            },
            leeway_secs: u64::from(self.leeway_secs),
            require_exp: self.require_exp,
            max_token_bytes: self.max_token_bytes as usize,
        }
    }
}

impl HttpAuthConfig {
    /// The hook's settings; `None` if the URL is invalid (validation refuses it first).
    fn settings(&self) -> Option<crate::auth::http::HookSettings> {
        use std::time::Duration;
        Some(crate::auth::http::HookSettings {
            url: crate::auth::http::parse_url(&self.url).ok()?,
            timeout: Duration::from_millis(self.timeout_ms),
            max_response_bytes: self.max_response_bytes as usize,
            cache_ttl: Duration::from_secs(u64::from(self.cache_ttl_secs)),
            cache_max_entries: self.cache_max_entries as usize,
            max_pending_requests: self.max_pending_requests as usize,
        })
    }
}

/// One TCP listener (a `[[listeners]]` table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    /// Address and port to listen on, e.g. `"0.0.0.0:1883"` or `"[::]:1883"`
    /// (port 0 = an ephemeral port, useful in tests).
    pub bind: SocketAddr,
    /// Listen backlog passed to `listen(2)` (the kernel caps it at `net.core.somaxconn`).
    pub backlog: u32,
    /// Most connections open at once on this listener.
    pub max_connections: u64,
    /// TLS on this listener (`[listeners.tls]`); not set: plain TCP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// MQTT over WebSocket on this listener (`[listeners.websocket]`), over TLS when `tls` is
    /// set too; not set: MQTT directly on the byte stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub websocket: Option<WebSocketConfig>,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            bind: DEFAULT_BIND,
            backlog: 1024,
            max_connections: 100_000,
            tls: None,
            websocket: None,
        }
    }
}

impl ListenerConfig {
    /// The transport's short name, as logged and printed at start-up: `tcp`, `tls`, `ws`, `wss`.
    pub fn transport_name(&self) -> &'static str {
        match (self.tls.is_some(), self.websocket.is_some()) {
            (false, false) => "tcp",
            (true, false) => "tls",
            (false, true) => "ws",
            (true, true) => "wss",
        }
    }
}

/// TLS on a listener (a `[listeners.tls]` table). PEM files, read at start-up; a missing or
/// invalid file stops the broker (and `check-config`) with a message naming it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain (PEM, leaf first).
    pub cert_file: PathBuf,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to; when set, every client
    /// must present a valid certificate. Not set: no client certificates are asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Use the client certificate's subject common name (CN) as the username, instead of the
    /// one in CONNECT; the certificate then replaces the password check (the ACL still
    /// applies). Needs `ca_file`.
    #[serde(default)]
    pub use_identity_as_username: bool,
}

/// MQTT over WebSocket on a listener (a `[listeners.websocket]` table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketConfig {
    /// The HTTP path of the upgrade request; other paths get 404.
    pub path: String,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            path: "/mqtt".to_owned(),
        }
    }
}

/// Protocol and resource limits (the `[limits]` table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most client connections open at once, all listeners and cores together.
    pub max_connections: u64,
    /// Largest packet accepted or sent, fixed header included
    /// (`MIN_PACKET_SIZE_BYTES..=MQTT_MAX_PACKET_SIZE_BYTES`); announced as
    /// Maximum Packet Size to MQTT 5 clients.
    pub max_packet_size_bytes: u32,
    /// Time a new connection has to complete its CONNECT.
    pub connect_timeout_ms: u64,
    /// Time a new connection on a TLS or WebSocket listener has to complete the TLS handshake
    /// and the WebSocket upgrade (before `connect_timeout_ms` starts).
    pub handshake_timeout_ms: u64,
    /// Largest WebSocket upgrade request (request line and headers), in bytes; larger ones
    /// get 431 and are closed.
    pub max_websocket_handshake_bytes: u32,
    /// Longest keep-alive granted (1..=65535); an MQTT 5 client asking more
    /// (or 0, no keep-alive, unless this is 65535) gets this value back as
    /// Server Keep Alive.
    pub max_keep_alive_secs: u16,
    /// Outgoing QoS 1/2 messages in flight per session (awaiting PUBACK /
    /// PUBCOMP), and the Receive Maximum announced to MQTT 5 clients (1..=65535).
    pub max_inflight_messages: u16,
    /// Messages queued per session beyond the in-flight window (offline or slow
    /// subscriber).
    pub max_queued_messages: u32,
    /// Bytes of messages queued per session; at least `max_packet_size_bytes`.
    pub max_queued_bytes: u64,
    /// Back-pressure on publishers: when a connected session's queue of QoS 1/2 messages
    /// reaches this percentage of `max_queued_messages` (or `max_queued_bytes`), the broker
    /// stops reading QoS 1/2 PUBLISH packets from the publishers whose messages it queued,
    /// until the queue is back under half that mark. 0 = off (messages beyond the queue
    /// limits are dropped and counted, as for offline sessions always).
    pub publisher_backpressure_percent: u8,
    /// Longest time one publisher waits for a slow session, once per episode; after it the
    /// publisher goes on and the queue limits apply (a stuck subscriber cannot stall its
    /// publishers for longer).
    pub publisher_backpressure_max_wait_ms: u64,
    /// Publishers one session may pause at once; messages from further publishers are
    /// queued (or dropped at the queue limits) without pausing them.
    pub publisher_backpressure_max_publishers: u32,
    /// Most levels (`/`-separated parts) in a topic name or filter.
    pub max_topic_levels: u32,
    /// Longest topic name or filter, in bytes (1..=65535).
    pub max_topic_length_bytes: u16,
    /// Most subscriptions one client session may hold.
    pub max_subscriptions_per_client: u32,
    /// Topic Alias Maximum announced to MQTT 5 clients (0 = no topic aliases).
    pub max_topic_alias: u16,
    /// Longest client identifier accepted, in bytes (23..=65535; MQTT requires
    /// at least 23).
    pub max_client_id_length_bytes: u16,
    /// Longest session expiry granted; `u32::MAX` (4294967295) = sessions may
    /// never expire.
    pub session_expiry_max_secs: u32,
    /// Longest message expiry applied to stored messages; 0 = unbounded
    /// (messages keep the expiry their publisher set, or none).
    pub message_expiry_max_secs: u32,
    /// Highest QoS granted (0..=2); announced as Maximum QoS to MQTT 5 clients.
    pub max_qos: u8,
    /// Store retained messages; `false` announces Retain Available = 0.
    pub retain_available: bool,
    /// Most retained messages stored, all topics together.
    pub retained_messages_max: u64,
    /// Retained messages sent per executor loop turn when a new subscription
    /// matches many of them (the rest follow on later turns).
    pub retained_scan_budget_messages: u32,
    /// New connections accepted per second on each listener (spread evenly over the cores);
    /// beyond it a connection is closed at once and counted. 0 = no limit.
    pub max_connection_rate_per_second: u32,
    /// Bytes per second read from one client; beyond it the broker stops reading that client
    /// until the rate is back (TCP pushes back; nothing is buffered). 0 = no limit.
    pub max_client_bytes_per_second: u64,
    /// PUBLISH packets per second read from one client, enforced the same way. 0 = no limit.
    pub max_client_messages_per_second: u32,
    /// Resident memory of the broker process, in bytes, at which new connections are refused
    /// (CONNACK 0x89 Server busy; 3.x: 3) until it falls below `overload_resume_percent` of
    /// it. Clients resuming their session and open connections are still served. 0 = off
    /// (the default); else at least [`MIN_OVERLOAD_MEMORY_BYTES`].
    pub overload_memory_bytes: u64,
    /// Messages queued on one core (all its sessions' queues beyond their in-flight windows)
    /// at which that core refuses new connections the same way. 0 = off (the default).
    pub overload_queued_messages: u64,
    /// An overload mark is left when the value falls below this percentage of it
    /// (hysteresis; 50..=100).
    pub overload_resume_percent: u8,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connection_rate_per_second: 0,
            max_client_bytes_per_second: 0,
            max_client_messages_per_second: 0,
            max_connections: 1_000_000,
            max_packet_size_bytes: 1_048_576,
            connect_timeout_ms: 10_000,
            handshake_timeout_ms: 10_000,
            max_websocket_handshake_bytes: 16 * 1024,
            max_keep_alive_secs: 65_535,
            max_inflight_messages: 32,
            max_queued_messages: 1000,
            max_queued_bytes: 16 * 1024 * 1024,
            publisher_backpressure_percent: 50,
            publisher_backpressure_max_wait_ms: 2_000,
            publisher_backpressure_max_publishers: 1024,
            max_topic_levels: 128,
            max_topic_length_bytes: 65_535,
            max_subscriptions_per_client: 10_000,
            max_topic_alias: 64,
            max_client_id_length_bytes: 65_535,
            session_expiry_max_secs: u32::MAX,
            message_expiry_max_secs: 0,
            max_qos: 2,
            retain_available: true,
            retained_messages_max: 1_000_000,
            retained_scan_budget_messages: 1024,
            overload_memory_bytes: 0,
            overload_queued_messages: 0,
            overload_resume_percent: 90,
        }
    }
}

/// Runtime settings (the `[runtime]` table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Memory per executor for io_uring registered buffers (glommio's
    /// `io_memory`); a user without CAP_IPC_LOCK needs about 3× this per
    /// executor of locked memory.
    pub io_memory_bytes: u64,
    /// Read size of a quiet connection (and its buffer while idle); grows for a larger packet.
    pub read_buffer_bytes: u32,
    /// Largest read size: reads double while each fills its buffer (a busy connection), up to
    /// this, and halve back when they come back mostly empty.
    pub read_buffer_max_bytes: u32,
    /// Bytes pending to one connection above which no more is queued to it
    /// (back-pressure).
    pub write_buffer_high_water_bytes: u64,
    /// Messages buffered in the channel between each ordered pair of cores.
    pub cross_core_queue_capacity: u32,
    /// QoS 1/2 publications one core may have sent to another that the other has not handled
    /// yet; then readers stop handling QoS 1/2 PUBLISH until it has. Bounds what reaches a
    /// full session across cores before its back-pressure comes back (such a session may
    /// exceed `limits.max_queued_messages` by twice this, times cores - 1, plus
    /// `limits.publisher_backpressure_max_publishers`).
    pub cross_core_window_messages: u32,
    /// Pause before accepting again when `accept` fails with EMFILE/ENFILE.
    pub accept_backoff_ms: u64,
    /// Set TCP_NODELAY on client sockets.
    pub tcp_nodelay: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            io_memory_bytes: 1024 * 1024,
            read_buffer_bytes: 1024,
            read_buffer_max_bytes: 64 * 1024,
            write_buffer_high_water_bytes: 256 * 1024,
            cross_core_queue_capacity: 4096,
            cross_core_window_messages: 4096,
            accept_backoff_ms: 100,
            tcp_nodelay: true,
        }
    }
}

/// How a message published to a share group picks the member that gets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SharedSubscriptionStrategy {
    /// Members in turn (`"round_robin"`).
    #[default]
    RoundRobin,
    /// A member picked at random (`"random"`).
    Random,
    /// By a hash of the publisher's client identifier, so one publisher's
    /// messages go to the same member (`"hash_client_id"`).
    HashClientId,
    /// The same member until it leaves the group (`"sticky"`).
    Sticky,
}

impl SharedSubscriptionStrategy {
    /// The name used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            SharedSubscriptionStrategy::RoundRobin => "round_robin",
            SharedSubscriptionStrategy::Random => "random",
            SharedSubscriptionStrategy::HashClientId => "hash_client_id",
            SharedSubscriptionStrategy::Sticky => "sticky",
        }
    }
}

impl fmt::Display for SharedSubscriptionStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Shared subscriptions (the `[shared_subscriptions]` table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SharedSubscriptionsConfig {
    /// Accept `$share/{group}/{filter}` subscriptions; `false` announces
    /// Shared Subscription Available = 0.
    pub enabled: bool,
    /// How a member of a share group is picked for each message.
    pub strategy: SharedSubscriptionStrategy,
}

impl Default for SharedSubscriptionsConfig {
    fn default() -> Self {
        SharedSubscriptionsConfig {
            enabled: true,
            strategy: SharedSubscriptionStrategy::RoundRobin,
        }
    }
}

/// `$SYS` statistics topics (the `[sys]` table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SysConfig {
    /// Seconds between `$SYS/...` publishes; 0 = off.
    pub interval_secs: u32,
}

impl Default for SysConfig {
    fn default() -> Self {
        SysConfig { interval_secs: 10 }
    }
}

/// When appended records are forced to disk (`storage.fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// `"always"`: every write batch ends with an fsync; acknowledgements wait for it. Appends
    /// made while one batch is being written share the next fsync (group commit).
    Always,
    /// `"every N ms"`: batches are written at once and forced at most every N milliseconds;
    /// acknowledgements wait for the fsync that covers them (at most N ms later).
    EveryMs(u32),
    /// `"never"`: acknowledged once written to the operating system. Survives `kill -9`, not a
    /// power cut or kernel crash.
    Never,
}

impl Fsync {
    /// Parses `"always"`, `"never"`, `"every 10ms"` or `"every 10 ms"`.
    pub fn parse(text: &str) -> Result<Fsync, String> {
        let t = text.trim();
        match t {
            "always" => return Ok(Fsync::Always),
            "never" => return Ok(Fsync::Never),
            _ => {}
        }
        let ms = t
            .strip_prefix("every")
            .map(str::trim)
            .and_then(|r| r.strip_suffix("ms"))
            .map(str::trim)
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|n| (1..=60_000).contains(n));
        ms.map(Fsync::EveryMs).ok_or_else(|| {
            format!(
                "expected \"always\", \"never\" or \"every N ms\" with N from 1 to 60000, got {text:?}"
            )
        })
    }
}

impl fmt::Display for Fsync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fsync::Always => f.write_str("always"),
            Fsync::Never => f.write_str("never"),
            Fsync::EveryMs(n) => write!(f, "every {n} ms"),
        }
    }
}

/// Durable sessions (the `[storage]` table): persistent sessions, their subscriptions, queued
/// QoS 1/2 messages, in-flight state and retained messages are kept in an append-only log per
/// core under `data_dir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Keep durable state on disk; `false` keeps everything in memory only (lost on restart).
    pub enabled: bool,
    /// Directory of the logs (one sub-directory per core); created if missing.
    pub data_dir: PathBuf,
    /// `"always"`, `"every N ms"` or `"never"`: see [`Fsync`].
    pub fsync: String,
    /// Size of one segment file, bytes.
    pub segment_size_bytes: u64,
    /// Disk the logs of all cores may use together, bytes; when reached, new QoS 1/2 messages
    /// for persistent sessions are refused (PUBACK/PUBREC 0x97 Quota exceeded in MQTT 5).
    pub max_disk_bytes: u64,
    /// Bytes appended but not yet written, per core, above which new persistent messages are
    /// refused like a full disk (the disk is not keeping up).
    pub max_pending_bytes: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            enabled: true,
            data_dir: PathBuf::from("ringmq-data"),
            fsync: "always".to_owned(),
            segment_size_bytes: 64 * 1024 * 1024,
            max_disk_bytes: 8 * 1024 * 1024 * 1024,
            max_pending_bytes: 64 * 1024 * 1024,
        }
    }
}

impl StorageConfig {
    /// The fsync policy (validated by [`Config::validate`]).
    pub fn fsync_policy(&self) -> Fsync {
        Fsync::parse(&self.fsync).unwrap_or(Fsync::Always)
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (`"text"`).
    #[default]
    Text,
    /// One JSON object per line (`"json"`).
    Json,
}

/// Logging (the `[log]` table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `trace`, `debug`, `info`, `warn`, `error`, `off`, or a `tracing`
    /// filter such as `"info,ringmq::session=debug"` (see [`check_log_level`]).
    pub level: String,
    /// Line format.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The text is not valid TOML, has a value of the wrong type, or an
    /// unknown key (the TOML error gives line, column and key).
    #[error("{}{error}", parse_prefix(path.as_deref(), key.as_deref()))]
    Parse {
        /// The file, when loaded from one.
        path: Option<PathBuf>,
        /// The dotted key at the error's position (e.g. `limits.max_qos`,
        /// `listeners[1].bind`), when it could be found.
        key: Option<String>,
        /// The TOML error.
        error: Box<toml::de::Error>,
    },
    /// A value is out of range or inconsistent with another.
    #[error("{key}: {message}")]
    Invalid {
        /// The dotted key, e.g. `limits.max_inflight_messages` or `listeners[1].bind`.
        key: String,
        /// What is wrong, e.g. `must be between 1 and 65535, got 0`.
        message: String,
    },
}

fn parse_prefix(path: Option<&Path>, key: Option<&str>) -> String {
    let mut prefix = match path {
        Some(path) => format!("invalid config file {}: ", path.display()),
        None => "invalid config: ".to_owned(),
    };
    if let Some(key) = key {
        prefix.push_str(key);
        prefix.push_str(": ");
    }
    prefix
}

/// The dotted key of the TOML line holding byte `offset` of `text`:
/// `limits.max_qos` for a `max_qos = ...` line under `[limits]`,
/// `listeners[1].bind` under the second `[[listeners]]`, or the table name
/// for a header line. `None` for anything else (multi-line values, inline
/// tables, end of file). Used to name the key in TOML errors.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let mut table = String::new();
    let mut arrays: BTreeMap<String, usize> = BTreeMap::new();
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        let end = start + line.len();
        let trimmed = line.trim();
        let header = if let Some(rest) = trimmed.strip_prefix("[[") {
            let name = rest.split("]]").next().unwrap_or("").trim().to_owned();
            let count = arrays.entry(name.clone()).or_insert(0);
            *count += 1;
            Some(format!("{name}[{}]", *count - 1))
        } else {
            trimmed
                .strip_prefix('[')
                .map(|rest| rest.split(']').next().unwrap_or("").trim().to_owned())
        };
        if let Some(header) = &header {
            table.clone_from(header);
        }
        if (start..end).contains(&offset) {
            if header.is_some() {
                return Some(table).filter(|t| !t.is_empty());
            }
            let (key, _) = trimmed.split_once('=')?;
            let key = key.trim().trim_matches('"');
            if key.is_empty() || key.starts_with('#') {
                return None;
            }
            return Some(if table.is_empty() {
                key.to_owned()
            } else {
                format!("{table}.{key}")
            });
        }
        start = end;
    }
    None
}

impl ConfigError {
    /// The dotted key the error is about, when known.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Parse { key, .. } => key.as_deref(),
            ConfigError::Read { .. } => None,
        }
    }
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

fn check_range<T>(key: &str, value: T, min: T, max: T) -> Result<(), ConfigError>
where
    T: PartialOrd + fmt::Display + Copy,
{
    if value < min || value > max {
        return Err(invalid(
            key,
            format!("must be between {min} and {max}, got {value}"),
        ));
    }
    Ok(())
}

fn check_min<T>(key: &str, value: T, min: T) -> Result<(), ConfigError>
where
    T: PartialOrd + fmt::Display + Copy,
{
    if value < min {
        return Err(invalid(key, format!("must be at least {min}, got {value}")));
    }
    Ok(())
}

fn validate_jwt(j: &JwtConfig) -> Result<(), ConfigError> {
    use crate::auth::jwt::{Alg, ALGORITHM_NAMES};
    if j.hmac_secret.is_some() && j.hmac_secret_file.is_some() {
        return Err(invalid(
            "auth.jwt.hmac_secret",
            "set hmac_secret or hmac_secret_file, not both",
        ));
    }
    if j.hmac_secret.as_ref().is_some_and(String::is_empty) {
        return Err(invalid("auth.jwt.hmac_secret", "must not be empty"));
    }
    for (key, path) in [
        ("auth.jwt.hmac_secret_file", &j.hmac_secret_file),
        ("auth.jwt.rsa_public_key_file", &j.rsa_public_key_file),
    ] {
        if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err(invalid(
                key,
                "must not be empty (leave the key out for none)",
            ));
        }
    }
    let hmac = j.hmac_secret.is_some() || j.hmac_secret_file.is_some();
    let rsa = j.rsa_public_key_file.is_some();
    if !hmac && !rsa {
        return Err(invalid(
            "auth.jwt",
            "needs a key: hmac_secret, hmac_secret_file or rsa_public_key_file",
        ));
    }
    let names = ALGORITHM_NAMES.join(", ");
    for name in &j.algorithms {
        if name.eq_ignore_ascii_case("none") {
            return Err(invalid(
                "auth.jwt.algorithms",
                "\"none\" (unsigned tokens) is never accepted",
            ));
        }
        let Some(alg) = Alg::from_name(name) else {
            return Err(invalid(
                "auth.jwt.algorithms",
                format!("unknown algorithm {name:?} (expected {names})"),
            ));
        };
        if alg.is_hmac() && !hmac {
            return Err(invalid(
                "auth.jwt.algorithms",
                format!("{name} needs hmac_secret or hmac_secret_file"),
            ));
        }
        if !alg.is_hmac() && !rsa {
            return Err(invalid(
                "auth.jwt.algorithms",
                format!("{name} needs rsa_public_key_file"),
            ));
        }
    }
    if j.match_claim.as_ref().is_some_and(String::is_empty) {
        return Err(invalid(
            "auth.jwt.match_claim",
            "must not be empty (leave the key out for none)",
        ));
    }
    check_range("auth.jwt.leeway_secs", j.leeway_secs, 0, 3600)?;
    check_range("auth.jwt.max_token_bytes", j.max_token_bytes, 64, 65_535)?;
    Ok(())
}

const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Checks a log level or filter: a plain level (`trace`, `debug`, `info`,
/// `warn`, `error`, `off`, any case) or a `tracing` filter such as
/// `"info,ringmq::session=debug"`, where every part without `=` must be a level.
/// Returns what is wrong, without the key (the caller names it).
pub fn check_log_level(level: &str) -> Result<(), String> {
    let expected = "expected trace, debug, info, warn, error, off, \
                    or a filter like \"info,ringmq::session=debug\"";
    if level.trim().is_empty() {
        return Err(format!("must not be empty ({expected})"));
    }
    for part in level.split(',').map(str::trim) {
        if part.is_empty() || part.contains('=') || part.contains('[') {
            continue;
        }
        if !LOG_LEVELS.iter().any(|l| l.eq_ignore_ascii_case(part)) {
            return Err(format!("unknown level \"{part}\" ({expected})"));
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(level)
        .map(|_| ())
        .map_err(|e| format!("invalid filter \"{level}\": {e} ({expected})"))
}

/// The number of online CPU cores (at least 1), from `sysconf(_SC_NPROCESSORS_ONLN)`.
pub fn online_cores() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n < 1 {
        1
    } else {
        n as usize
    }
}

impl Config {
    /// Parses a TOML configuration and validates it.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let config = Config::parse_toml(text, None)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a TOML configuration file.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        let config = Config::parse_toml(&text, Some(path))?;
        config.validate()?;
        Ok(config)
    }

    fn parse_toml(text: &str, path: Option<&Path>) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|error| ConfigError::Parse {
            path: path.map(Path::to_owned),
            key: error.span().and_then(|span| key_at(text, span.start)),
            error: Box::new(error),
        })
    }

    /// The configuration as TOML (every key, no comments): the effective
    /// configuration after overrides, e.g. for `check-config`.
    pub fn to_toml_string(&self) -> String {
        toml::to_string(self).expect("a Config always serializes to TOML")
    }

    /// Executors to run given `online` cores: `cores`, or `online` when `cores` is 0.
    pub fn executors_for(&self, online: usize) -> usize {
        if self.cores == 0 {
            online.max(1)
        } else {
            self.cores
        }
    }

    /// Executors to run on this machine (see [`Config::executors_for`], [`online_cores`]).
    pub fn executors(&self) -> usize {
        self.executors_for(online_cores())
    }

    /// The most connections that can be open at once: `limits.max_connections`,
    /// or the sum of the listeners' `max_connections` if smaller.
    pub fn effective_max_connections(&self) -> u64 {
        let per_listener = self
            .listeners
            .iter()
            .fold(0u64, |sum, l| sum.saturating_add(l.max_connections));
        self.limits.max_connections.min(per_listener)
    }

    /// Checks every range and every cross-key rule; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_range("cores", self.cores, 0, MAX_CORES)?;
        self.validate_listeners()?;
        self.validate_limits()?;
        self.validate_runtime()?;
        self.validate_storage()?;
        if let Err(message) = check_log_level(&self.log.level) {
            return Err(invalid("log.level", message));
        }
        self.validate_auth()?;
        self.validate_auth_methods()?;
        self.validate_admin()?;
        Ok(())
    }

    fn validate_admin(&self) -> Result<(), ConfigError> {
        let a = &self.admin;
        check_range("admin.max_connections", a.max_connections, 1, 65_536)?;
        check_range("admin.max_request_bytes", a.max_request_bytes, 256, 1 << 20)?;
        check_range("admin.request_timeout_ms", a.request_timeout_ms, 1, 600_000)?;
        check_range("admin.core_timeout_ms", a.core_timeout_ms, 1, 600_000)?;
        check_range("admin.max_page_size", a.max_page_size, 1, 100_000)?;
        Ok(())
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        let a = &self.auth;
        for (key, path) in [
            ("auth.password_file", &a.password_file),
            ("auth.acl_file", &a.acl_file),
            ("auth.scram_file", &a.scram_file),
        ] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(invalid(
                    key,
                    "must not be empty (leave the key out for none)",
                ));
            }
        }
        check_range(
            "auth.failed_login_window_secs",
            a.failed_login_window_secs,
            1,
            86_400,
        )?;
        check_min("auth.max_tracked_addresses", a.max_tracked_addresses, 1)?;
        check_range("auth.max_file_bytes", a.max_file_bytes, 1, 1 << 30)?;
        Ok(())
    }

    /// `[auth.jwt]` and `[auth.http]`: keys, algorithms, the URL and the bounds.
    fn validate_auth_methods(&self) -> Result<(), ConfigError> {
        if let Some(j) = &self.auth.jwt {
            validate_jwt(j)?;
        }
        if let Some(h) = &self.auth.http {
            if h.url.is_empty() {
                return Err(invalid(
                    "auth.http.url",
                    "must be set, e.g. \"http://127.0.0.1:8080/mqtt/auth\"",
                ));
            }
            crate::auth::http::parse_url(&h.url).map_err(|e| invalid("auth.http.url", e))?;
            check_range("auth.http.timeout_ms", h.timeout_ms, 1, 60_000)?;
            check_range(
                "auth.http.max_response_bytes",
                h.max_response_bytes,
                64,
                1 << 20,
            )?;
            check_range("auth.http.cache_ttl_secs", h.cache_ttl_secs, 0, 86_400)?;
            check_range(
                "auth.http.cache_max_entries",
                h.cache_max_entries,
                1,
                10_000_000,
            )?;
            check_range(
                "auth.http.max_pending_requests",
                h.max_pending_requests,
                1,
                65_536,
            )?;
        }
        Ok(())
    }

    fn validate_listeners(&self) -> Result<(), ConfigError> {
        if self.listeners.is_empty() {
            return Err(invalid(
                "listeners",
                "at least one [[listeners]] table is required",
            ));
        }
        let mut seen: BTreeMap<SocketAddr, usize> = BTreeMap::new();
        for (i, listener) in self.listeners.iter().enumerate() {
            let key = |field: &str| format!("listeners[{i}].{field}");
            if listener.bind.port() != 0 {
                if let Some(first) = seen.insert(listener.bind, i) {
                    return Err(invalid(
                        key("bind"),
                        format!(
                            "{} is already used by listeners[{first}].bind",
                            listener.bind
                        ),
                    ));
                }
            }
            check_range(&key("backlog"), listener.backlog, 1, i32::MAX as u32)?;
            check_min(&key("max_connections"), listener.max_connections, 1)?;
            if let Some(tls) = &listener.tls {
                for (field, path) in [
                    ("tls.cert_file", Some(&tls.cert_file)),
                    ("tls.key_file", Some(&tls.key_file)),
                    ("tls.ca_file", tls.ca_file.as_ref()),
                ] {
                    if path.is_some_and(|p| p.as_os_str().is_empty()) {
                        return Err(invalid(key(field), "must not be empty"));
                    }
                }
                if tls.use_identity_as_username && tls.ca_file.is_none() {
                    return Err(invalid(
                        key("tls.use_identity_as_username"),
                        "needs tls.ca_file (client certificates must be required to use \
                         their identity)",
                    ));
                }
            }
            if let Some(ws) = &listener.websocket {
                let path = &ws.path;
                if !path.starts_with('/')
                    || path.len() > MAX_WEBSOCKET_PATH_BYTES
                    || !path.bytes().all(|b| b.is_ascii_graphic())
                    || path.contains(['?', '#'])
                {
                    return Err(invalid(
                        key("websocket.path"),
                        format!(
                            "must start with '/', hold only visible ASCII without '?' or '#', \
                             and be at most {MAX_WEBSOCKET_PATH_BYTES} bytes, got {path:?}"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        check_min("limits.max_connections", l.max_connections, 1)?;
        check_range(
            "limits.max_packet_size_bytes",
            l.max_packet_size_bytes,
            MIN_PACKET_SIZE_BYTES,
            MQTT_MAX_PACKET_SIZE_BYTES,
        )?;
        check_range(
            "limits.connect_timeout_ms",
            l.connect_timeout_ms,
            1,
            3_600_000,
        )?;
        check_range(
            "limits.handshake_timeout_ms",
            l.handshake_timeout_ms,
            1,
            3_600_000,
        )?;
        check_range(
            "limits.max_websocket_handshake_bytes",
            l.max_websocket_handshake_bytes,
            256,
            1024 * 1024,
        )?;
        check_range(
            "limits.max_keep_alive_secs",
            l.max_keep_alive_secs,
            1,
            u16::MAX,
        )?;
        check_range(
            "limits.max_inflight_messages",
            l.max_inflight_messages,
            1,
            u16::MAX,
        )?;
        check_min("limits.max_queued_messages", l.max_queued_messages, 1)?;
        check_range(
            "limits.publisher_backpressure_percent",
            l.publisher_backpressure_percent,
            0,
            100,
        )?;
        check_range(
            "limits.publisher_backpressure_max_wait_ms",
            l.publisher_backpressure_max_wait_ms,
            1,
            3_600_000,
        )?;
        check_range(
            "limits.publisher_backpressure_max_publishers",
            l.publisher_backpressure_max_publishers,
            1,
            1_000_000,
        )?;
        if l.max_queued_bytes < u64::from(l.max_packet_size_bytes) {
            return Err(invalid(
                "limits.max_queued_bytes",
                format!(
                    "must be at least limits.max_packet_size_bytes ({}), got {}",
                    l.max_packet_size_bytes, l.max_queued_bytes
                ),
            ));
        }
        check_range("limits.max_topic_levels", l.max_topic_levels, 1, 65_535)?;
        check_range(
            "limits.max_topic_length_bytes",
            l.max_topic_length_bytes,
            1,
            u16::MAX,
        )?;
        check_min(
            "limits.max_subscriptions_per_client",
            l.max_subscriptions_per_client,
            1,
        )?;
        check_range(
            "limits.max_client_id_length_bytes",
            l.max_client_id_length_bytes,
            23,
            u16::MAX,
        )?;
        check_range("limits.max_qos", l.max_qos, 0, 2)?;
        if l.retained_messages_max == 0 {
            return Err(invalid(
                "limits.retained_messages_max",
                "must be at least 1, got 0 (to turn retained messages off, \
                 set limits.retain_available = false)",
            ));
        }
        check_min(
            "limits.retained_scan_budget_messages",
            l.retained_scan_budget_messages,
            1,
        )?;
        if l.overload_memory_bytes != 0 && l.overload_memory_bytes < MIN_OVERLOAD_MEMORY_BYTES {
            return Err(invalid(
                "limits.overload_memory_bytes",
                format!(
                    "must be 0 (off) or at least {MIN_OVERLOAD_MEMORY_BYTES} (1 MiB), got {}",
                    l.overload_memory_bytes
                ),
            ));
        }
        check_range(
            "limits.overload_resume_percent",
            l.overload_resume_percent,
            50,
            100,
        )?;
        Ok(())
    }

    fn validate_storage(&self) -> Result<(), ConfigError> {
        let s = &self.storage;
        if let Err(message) = Fsync::parse(&s.fsync) {
            return Err(invalid("storage.fsync", message));
        }
        if s.data_dir.as_os_str().is_empty() {
            return Err(invalid("storage.data_dir", "must not be empty"));
        }
        check_range(
            "storage.segment_size_bytes",
            s.segment_size_bytes,
            64 * 1024,
            1 << 32,
        )?;
        check_min(
            "storage.max_disk_bytes",
            s.max_disk_bytes,
            4 * s.segment_size_bytes,
        )?;
        check_range(
            "storage.max_pending_bytes",
            s.max_pending_bytes,
            64 * 1024,
            1 << 32,
        )?;
        Ok(())
    }

    fn validate_runtime(&self) -> Result<(), ConfigError> {
        let r = &self.runtime;
        check_range(
            "runtime.io_memory_bytes",
            r.io_memory_bytes,
            MIN_IO_MEMORY_BYTES,
            MAX_IO_MEMORY_BYTES,
        )?;
        check_range(
            "runtime.read_buffer_bytes",
            r.read_buffer_bytes,
            64,
            16 * 1024 * 1024,
        )?;
        check_range(
            "runtime.read_buffer_max_bytes",
            r.read_buffer_max_bytes,
            r.read_buffer_bytes,
            16 * 1024 * 1024,
        )?;
        check_min(
            "runtime.write_buffer_high_water_bytes",
            r.write_buffer_high_water_bytes,
            1024,
        )?;
        check_min(
            "runtime.cross_core_queue_capacity",
            r.cross_core_queue_capacity,
            1,
        )?;
        check_range(
            "runtime.cross_core_window_messages",
            r.cross_core_window_messages,
            1,
            1_000_000,
        )?;
        check_range("runtime.accept_backoff_ms", r.accept_backoff_ms, 1, 60_000)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Every dotted key path of a TOML table (`limits.max_qos`, `listeners[0].bind`).
    fn key_paths(value: &toml::Value, prefix: &str, out: &mut HashSet<String>) {
        match value {
            toml::Value::Table(table) => {
                for (k, v) in table {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    key_paths(v, &path, out);
                }
            }
            toml::Value::Array(items)
                if items.iter().all(toml::Value::is_table) && !items.is_empty() =>
            {
                for (i, item) in items.iter().enumerate() {
                    key_paths(item, &format!("{prefix}[{i}]"), out);
                }
            }
            _ => {
                out.insert(prefix.to_owned());
            }
        }
    }

    fn invalid_key(text: &str) -> (String, String) {
        match Config::from_toml_str(text) {
            Err(ConfigError::Invalid { key, message }) => (key, message),
            other => panic!("expected a range error for {text:?}, got {other:?}"),
        }
    }

    fn parse_error(text: &str) -> String {
        match Config::from_toml_str(text) {
            Err(e @ ConfigError::Parse { .. }) => e.to_string(),
            other => panic!("expected a parse error for {text:?}, got {other:?}"),
        }
    }

    fn parse_error_key(text: &str) -> Option<String> {
        Config::from_toml_str(text)
            .unwrap_err()
            .key()
            .map(str::to_owned)
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::default();
        assert_eq!(c.cores, 0);
        assert!(c.allow_anonymous);
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(
            c.listeners[0].bind,
            "127.0.0.1:1883".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(c.listeners[0].backlog, 1024);
        assert_eq!(c.listeners[0].max_connections, 100_000);
        assert_eq!(c.limits.max_connections, 1_000_000);
        assert_eq!(c.limits.max_packet_size_bytes, 1_048_576);
        assert_eq!(c.limits.max_inflight_messages, 32);
        assert_eq!(c.limits.max_queued_bytes, 16 * 1024 * 1024);
        assert_eq!(c.limits.session_expiry_max_secs, u32::MAX);
        assert_eq!(c.runtime.io_memory_bytes, 1 << 20);
        assert_eq!(
            c.shared_subscriptions.strategy,
            SharedSubscriptionStrategy::RoundRobin
        );
        assert_eq!(c.sys.interval_secs, 10);
        assert_eq!(c.log.level, "info");
        assert_eq!(c.log.format, LogFormat::Text);
        assert!(c.admin.enabled);
        assert_eq!(
            c.admin.bind,
            "127.0.0.1:18083".parse::<SocketAddr>().unwrap()
        );
        c.validate().unwrap();
    }

    #[test]
    fn default_file_parses_to_default_config() {
        let parsed = Config::from_toml_str(DEFAULT_CONFIG_TOML).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn default_file_lists_every_key() {
        let code: toml::Value = toml::from_str(&Config::default().to_toml_string()).unwrap();
        let file: toml::Value = toml::from_str(DEFAULT_CONFIG_TOML).unwrap();
        let mut code_keys = HashSet::new();
        key_paths(&code, "", &mut code_keys);
        let mut file_keys = HashSet::new();
        key_paths(&file, "", &mut file_keys);
        let mut missing: Vec<_> = code_keys.difference(&file_keys).collect();
        missing.sort();
        assert!(
            missing.is_empty(),
            "keys missing from default-config.toml: {missing:?}"
        );
        let mut extra: Vec<_> = file_keys.difference(&code_keys).collect();
        extra.sort();
        assert!(
            extra.is_empty(),
            "keys in default-config.toml unknown to Config: {extra:?}"
        );
        assert!(code_keys.len() >= 30, "only {} keys", code_keys.len());
    }

    #[test]
    fn every_key_in_default_file_has_a_comment_line() {
        let lines: Vec<&str> = DEFAULT_CONFIG_TOML.lines().collect();
        let mut keys = 0;
        for (i, line) in lines.iter().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('[') {
                continue;
            }
            assert!(line.contains(" = "), "line {}: {line:?}", i + 1);
            keys += 1;
            let previous = if i == 0 { "" } else { lines[i - 1].trim() };
            assert!(
                previous.starts_with("# "),
                "line {}: key {line:?} has no comment line above it",
                i + 1
            );
        }
        assert!(keys >= 30);
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(Config::from_toml_str("").unwrap(), Config::default());
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let c = Config::from_toml_str(
            "cores = 2\n[limits]\nmax_inflight_messages = 100\n[log]\nformat = \"json\"\n",
        )
        .unwrap();
        assert_eq!(c.cores, 2);
        assert_eq!(c.limits.max_inflight_messages, 100);
        assert_eq!(c.limits.max_queued_messages, 1000);
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.level, "info");
        assert_eq!(c.listeners, vec![ListenerConfig::default()]);
    }

    #[test]
    fn listeners_replace_the_default_and_fill_their_own_defaults() {
        let c = Config::from_toml_str(
            "[[listeners]]\nbind = \"0.0.0.0:1883\"\n\n[[listeners]]\nbind = \"[::1]:8883\"\nbacklog = 4096\n",
        )
        .unwrap();
        assert_eq!(c.listeners.len(), 2);
        assert_eq!(
            c.listeners[0].bind,
            "0.0.0.0:1883".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(c.listeners[0].backlog, 1024);
        assert_eq!(
            c.listeners[1].bind,
            "[::1]:8883".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(c.listeners[1].backlog, 4096);
        assert_eq!(c.listeners[1].max_connections, 100_000);
        assert_eq!(c.effective_max_connections(), 200_000);
    }

    #[test]
    fn strategies_parse_by_lowercase_name() {
        for (name, want) in [
            ("round_robin", SharedSubscriptionStrategy::RoundRobin),
            ("random", SharedSubscriptionStrategy::Random),
            ("hash_client_id", SharedSubscriptionStrategy::HashClientId),
            ("sticky", SharedSubscriptionStrategy::Sticky),
        ] {
            let c =
                Config::from_toml_str(&format!("[shared_subscriptions]\nstrategy = \"{name}\"\n"))
                    .unwrap();
            assert_eq!(c.shared_subscriptions.strategy, want);
            assert_eq!(want.to_string(), name);
        }
        let e = parse_error("[shared_subscriptions]\nstrategy = \"RoundRobin\"\n");
        assert!(e.contains("strategy"), "{e}");
        assert!(e.contains("round_robin"), "{e}");
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        for (text, field, key) in [
            ("corez = 2\n", "corez", "corez"),
            (
                "[limits]\nmax_inflight = 5\n",
                "max_inflight",
                "limits.max_inflight",
            ),
            (
                "[[listeners]]\nbind = \"0.0.0.0:1\"\nport = 1\n",
                "port",
                "listeners[0].port",
            ),
            (
                "[runtime]\nio_memory = 1\n",
                "io_memory",
                "runtime.io_memory",
            ),
            ("[log]\nlevl = \"info\"\n", "levl", "log.levl"),
            ("[sys]\ninterval = 1\n", "interval", "sys.interval"),
            (
                "[shared_subscriptions]\nstrategie = \"random\"\n",
                "strategie",
                "shared_subscriptions.strategie",
            ),
            ("[nope]\n", "nope", "nope"),
        ] {
            let e = parse_error(text);
            assert!(e.contains("unknown field"), "{e}");
            assert!(e.contains(&format!("`{field}`")), "{text:?}: {e}");
            assert!(e.contains("line"), "{e}");
            assert_eq!(parse_error_key(text).as_deref(), Some(key), "{text:?}: {e}");
            assert!(e.starts_with(&format!("invalid config: {key}: ")), "{e}");
        }
    }

    #[test]
    fn bad_types_are_errors_naming_the_key() {
        for (text, key) in [
            ("cores = \"all\"\n", "cores"),
            ("allow_anonymous = 1\n", "allow_anonymous"),
            ("[limits]\nmax_connections = \"lots\"\n", "limits.max_connections"),
            (
                "[limits]\nmax_inflight_messages = 70000\n",
                "limits.max_inflight_messages",
            ),
            ("[limits]\nmax_qos = -1\n", "limits.max_qos"),
            ("[runtime]\ntcp_nodelay = \"yes\"\n", "runtime.tcp_nodelay"),
            (
                "[[listeners]]\nbind = \"localhost:1883\"\n",
                "listeners[0].bind",
            ),
            (
                "[[listeners]]\nbind = \"127.0.0.1:1\"\n\n[[listeners]]\n# second\nbind = \"127.0.0.1\"\n",
                "listeners[1].bind",
            ),
            ("[log]\nformat = \"xml\"\n", "log.format"),
            ("# c\nlisteners = 3\n", "listeners"),
        ] {
            let e = parse_error(text);
            assert!(e.contains(key), "{text:?}: {e}");
            assert!(e.contains("line"), "{text:?}: {e}");
            assert_eq!(parse_error_key(text).as_deref(), Some(key), "{text:?}: {e}");
        }
        // Not a key = value error: no key, but still line and column.
        let e = parse_error("[limits\n");
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn key_at_finds_the_key_of_a_line() {
        let text = "a = 1\n[t]\nb = 2\n[[l]]\nc = 3\n[[l]]\n  \"d\" = 4\n# x = 5\n";
        let at = |needle: &str| key_at(text, text.find(needle).unwrap());
        assert_eq!(at("a =").as_deref(), Some("a"));
        assert_eq!(at("[t]").as_deref(), Some("t"));
        assert_eq!(at("2").as_deref(), Some("t.b"));
        assert_eq!(at("c =").as_deref(), Some("l[0].c"));
        assert_eq!(at("4").as_deref(), Some("l[1].d"));
        assert_eq!(at("# x"), None);
        assert_eq!(key_at(text, text.len()), None);
    }

    #[test]
    fn parse_errors_from_a_file_name_the_file() {
        let dir = std::env::temp_dir().join(format!("ringmq-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, "[limits]\nmax_qos = \"two\"\n").unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(e.contains("bad.toml"), "{e}");
        assert!(e.contains("max_qos"), "{e}");
        let good = dir.join("good.toml");
        std::fs::write(&good, "cores = 1\n").unwrap();
        assert_eq!(Config::load(&good).unwrap().cores, 1);
        let missing = dir.join("missing.toml");
        let e = Config::load(&missing).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
        assert!(e.to_string().contains("missing.toml"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn range_error_message_format() {
        let e = Config::from_toml_str("[limits]\nmax_inflight_messages = 0\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "limits.max_inflight_messages: must be between 1 and 65535, got 0"
        );
        assert_eq!(e.key(), Some("limits.max_inflight_messages"));
    }

    #[test]
    fn out_of_range_values_name_the_key() {
        for (text, key) in [
            ("cores = 5000", "cores"),
            ("listeners = []", "listeners"),
            ("[[listeners]]\nbacklog = 0", "listeners[0].backlog"),
            (
                "[[listeners]]\nbacklog = 3000000000",
                "listeners[0].backlog",
            ),
            (
                "[[listeners]]\nmax_connections = 0",
                "listeners[0].max_connections",
            ),
            ("[limits]\nmax_connections = 0", "limits.max_connections"),
            (
                "[limits]\nmax_packet_size_bytes = 10",
                "limits.max_packet_size_bytes",
            ),
            (
                "[limits]\nmax_packet_size_bytes = 268435461",
                "limits.max_packet_size_bytes",
            ),
            (
                "[limits]\nconnect_timeout_ms = 0",
                "limits.connect_timeout_ms",
            ),
            (
                "[limits]\nmax_keep_alive_secs = 0",
                "limits.max_keep_alive_secs",
            ),
            (
                "[limits]\nmax_inflight_messages = 0",
                "limits.max_inflight_messages",
            ),
            (
                "[limits]\nmax_queued_messages = 0",
                "limits.max_queued_messages",
            ),
            (
                "[limits]\nmax_queued_bytes = 1000",
                "limits.max_queued_bytes",
            ),
            ("[limits]\nmax_topic_levels = 0", "limits.max_topic_levels"),
            (
                "[limits]\nmax_topic_levels = 70000",
                "limits.max_topic_levels",
            ),
            (
                "[limits]\nmax_topic_length_bytes = 0",
                "limits.max_topic_length_bytes",
            ),
            (
                "[limits]\nmax_subscriptions_per_client = 0",
                "limits.max_subscriptions_per_client",
            ),
            (
                "[limits]\nmax_client_id_length_bytes = 22",
                "limits.max_client_id_length_bytes",
            ),
            ("[limits]\nmax_qos = 3", "limits.max_qos"),
            (
                "[limits]\nretained_messages_max = 0",
                "limits.retained_messages_max",
            ),
            (
                "[limits]\nretained_scan_budget_messages = 0",
                "limits.retained_scan_budget_messages",
            ),
            (
                "[runtime]\nio_memory_bytes = 4096",
                "runtime.io_memory_bytes",
            ),
            (
                "[runtime]\nio_memory_bytes = 2000000000",
                "runtime.io_memory_bytes",
            ),
            (
                "[runtime]\nread_buffer_bytes = 0",
                "runtime.read_buffer_bytes",
            ),
            (
                "[runtime]\nwrite_buffer_high_water_bytes = 10",
                "runtime.write_buffer_high_water_bytes",
            ),
            (
                "[runtime]\ncross_core_queue_capacity = 0",
                "runtime.cross_core_queue_capacity",
            ),
            (
                "[runtime]\naccept_backoff_ms = 0",
                "runtime.accept_backoff_ms",
            ),
            ("[log]\nlevel = \"loud\"", "log.level"),
            ("[log]\nlevel = \"\"", "log.level"),
            ("[log]\nlevel = \"info,ringmq=loud\"", "log.level"),
        ] {
            let (got, message) = invalid_key(text);
            assert_eq!(got, key, "{text:?}: {message}");
            assert!(!message.is_empty());
        }
    }

    #[test]
    fn boundary_values_are_accepted() {
        Config::from_toml_str(
            "cores = 4096\n[limits]\nmax_packet_size_bytes = 268435460\nmax_queued_bytes = 268435460\n\
             max_inflight_messages = 65535\nmax_topic_alias = 0\nmax_client_id_length_bytes = 23\n\
             max_qos = 0\nsession_expiry_max_secs = 0\nmessage_expiry_max_secs = 4294967295\n\
             [sys]\ninterval_secs = 0\n",
        )
        .unwrap();
    }

    #[test]
    fn duplicate_listener_addresses_are_rejected() {
        let (key, message) = invalid_key(
            "[[listeners]]\nbind = \"0.0.0.0:1883\"\n[[listeners]]\nbind = \"0.0.0.0:1883\"\n",
        );
        assert_eq!(key, "listeners[1].bind");
        assert!(message.contains("listeners[0].bind"), "{message}");
        // Ephemeral ports may repeat.
        Config::from_toml_str(
            "[[listeners]]\nbind = \"127.0.0.1:0\"\n[[listeners]]\nbind = \"127.0.0.1:0\"\n",
        )
        .unwrap();
    }

    #[test]
    fn log_levels() {
        for ok in [
            "info",
            "DEBUG",
            "off",
            "warn,ringmq=trace",
            "ringmq::session=debug",
        ] {
            check_log_level(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["", "loud", "info,verbose", "ringmq=loud"] {
            assert!(check_log_level(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn executors_and_effective_connections() {
        let mut c = Config::default();
        assert_eq!(c.executors_for(8), 8);
        assert_eq!(c.executors_for(0), 1);
        assert!(c.executors() >= 1);
        c.cores = 3;
        assert_eq!(c.executors_for(8), 3);
        assert_eq!(c.effective_max_connections(), 100_000);
        c.limits.max_connections = 500;
        assert_eq!(c.effective_max_connections(), 500);
    }

    #[test]
    fn effective_config_round_trips_through_toml() {
        let mut c = Config {
            cores: 2,
            ..Config::default()
        };
        c.listeners.push(ListenerConfig {
            bind: "[::]:8883".parse().unwrap(),
            ..ListenerConfig::default()
        });
        c.shared_subscriptions.strategy = SharedSubscriptionStrategy::HashClientId;
        c.log.format = LogFormat::Json;
        c.listeners.push(ListenerConfig {
            bind: "[::]:8884".parse().unwrap(),
            tls: Some(TlsConfig {
                cert_file: "s.crt".into(),
                key_file: "s.key".into(),
                ca_file: Some("ca.crt".into()),
                use_identity_as_username: true,
            }),
            websocket: Some(WebSocketConfig::default()),
            ..ListenerConfig::default()
        });
        let text = c.to_toml_string();
        assert_eq!(Config::from_toml_str(&text).unwrap(), c);
    }

    #[test]
    fn the_largest_read_is_at_least_the_quiet_one() {
        let (key, message) =
            invalid_key("[runtime]\nread_buffer_bytes = 8192\nread_buffer_max_bytes = 4096\n");
        assert_eq!(key, "runtime.read_buffer_max_bytes");
        assert!(message.contains("8192"), "{message}");
        let ok = Config::from_toml_str(
            "[runtime]\nread_buffer_bytes = 512\nread_buffer_max_bytes = 512\n",
        );
        assert!(ok.is_ok());
    }

    #[test]
    fn tls_and_websocket_listeners() {
        let c = Config::from_toml_str(
            "[[listeners]]\nbind = \"0.0.0.0:8883\"\n[listeners.tls]\ncert_file = \"a.crt\"\n\
             key_file = \"a.key\"\n\n[[listeners]]\nbind = \"0.0.0.0:8080\"\n\
             [listeners.websocket]\n\n[[listeners]]\nbind = \"0.0.0.0:8081\"\n\
             websocket = { path = \"/ws\" }\ntls = { cert_file = \"a.crt\", key_file = \"a.key\", \
             ca_file = \"ca.crt\", use_identity_as_username = true }\n",
        )
        .unwrap();
        let names: Vec<_> = c.listeners.iter().map(|l| l.transport_name()).collect();
        assert_eq!(names, ["tls", "ws", "wss"]);
        assert_eq!(c.listeners[1].websocket.as_ref().unwrap().path, "/mqtt");
        assert_eq!(c.listeners[2].websocket.as_ref().unwrap().path, "/ws");
        assert!(
            c.listeners[2]
                .tls
                .as_ref()
                .unwrap()
                .use_identity_as_username
        );
        for (text, key) in [
            (
                "[[listeners]]\n[listeners.tls]\ncert_file = \"a\"\nkey_file = \"b\"\n\
                 use_identity_as_username = true\n",
                "listeners[0].tls.use_identity_as_username",
            ),
            (
                "[[listeners]]\n[listeners.tls]\ncert_file = \"\"\nkey_file = \"b\"\n",
                "listeners[0].tls.cert_file",
            ),
            (
                "[[listeners]]\n[listeners.websocket]\npath = \"mqtt\"\n",
                "listeners[0].websocket.path",
            ),
            (
                "[[listeners]]\n[listeners.websocket]\npath = \"/a b\"\n",
                "listeners[0].websocket.path",
            ),
            (
                "[limits]\nhandshake_timeout_ms = 0",
                "limits.handshake_timeout_ms",
            ),
            (
                "[limits]\nmax_websocket_handshake_bytes = 10",
                "limits.max_websocket_handshake_bytes",
            ),
        ] {
            assert_eq!(invalid_key(text).0, key, "{text}");
        }
        // cert_file and key_file are required; unknown keys are errors.
        assert!(
            Config::from_toml_str("[[listeners]]\n[listeners.tls]\ncert_file = \"a\"\n").is_err()
        );
        assert!(Config::from_toml_str(
            "[[listeners]]\n[listeners.tls]\ncert_file = \"a\"\nkey_file = \"b\"\ncafile = \"c\"\n"
        )
        .is_err());
    }

    #[test]
    fn overload_marks_are_off_by_default_and_checked() {
        let l = Config::default().limits;
        assert_eq!(
            (
                l.overload_memory_bytes,
                l.overload_queued_messages,
                l.overload_resume_percent
            ),
            (0, 0, 90)
        );
        let c = Config::from_toml_str(
            "[limits]\noverload_memory_bytes = 1048576\noverload_queued_messages = 1\n\
             overload_resume_percent = 100\n",
        )
        .unwrap();
        assert_eq!(c.limits.overload_memory_bytes, 1 << 20);
        assert_eq!(c.limits.overload_queued_messages, 1);
        // check-config prints them.
        let printed = c.to_toml_string();
        assert!(
            printed.contains("overload_memory_bytes = 1048576"),
            "{printed}"
        );
        assert!(
            printed.contains("overload_resume_percent = 100"),
            "{printed}"
        );
        for text in [
            "[limits]\noverload_memory_bytes = 1",
            "[limits]\noverload_memory_bytes = 1048575",
        ] {
            let e = Config::from_toml_str(text).unwrap_err();
            assert_eq!(e.key(), Some("limits.overload_memory_bytes"), "{text}");
            assert!(e.to_string().contains("0 (off) or at least 1048576"), "{e}");
        }
        for text in [
            "[limits]\noverload_resume_percent = 49",
            "[limits]\noverload_resume_percent = 101",
        ] {
            let e = Config::from_toml_str(text).unwrap_err();
            assert_eq!(e.key(), Some("limits.overload_resume_percent"), "{text}");
        }
    }
}
