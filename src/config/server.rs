//! `[server]`: the HTTP listener and the limits that keep one client (or a
//! flood of them) from exhausting the router: body size, JSON nesting depth,
//! time to send a body, requests in flight, and the admin token.

use std::net::SocketAddr;

use serde::Deserialize;

use super::{Config, ConfigError, Locator};

/// Default body limit for one ingest request: large enough for a batch of a
/// few hundred HMPPS events, small enough that one client cannot exhaust memory.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default nesting limit of a JSON body. HMPPS and CloudEvents payloads nest a
/// handful of levels; a deeper document is a nesting bomb meant to blow the
/// parser's or the schema validator's stack (serde_json alone stops at 128).
pub const DEFAULT_MAX_JSON_DEPTH: usize = 64;
/// Default time a client has to send its whole request body. A client that
/// trickles bytes (slow-loris) holds a connection and an in-flight slot; past
/// this it gets 408.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;
/// Default ingest requests handled at once. Each holds its body in memory and
/// a place in the store writer's queue; past this the router answers 503 with
/// `Retry-After` instead of queueing without bound.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
/// The environment variable that sets (and overrides) `server.admin_token`.
pub const ADMIN_TOKEN_ENV: &str = "SWITCHYARD_ADMIN_TOKEN";
/// Shortest admin token accepted: a guessable token is no protection.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the HTTP listener (ingest, read API, admin).
    pub listen: SocketAddr,
    /// Largest accepted request body, in bytes (413 above it).
    pub max_body_bytes: usize,
    /// Deepest nesting of arrays and objects in a JSON body (400 above it).
    pub max_json_depth: usize,
    /// Time allowed to receive a request body, in milliseconds (408 after).
    pub request_timeout_ms: u64,
    /// Ingest requests handled at once (503 with `Retry-After` beyond).
    pub max_in_flight: usize,
    /// Bearer token the mutating admin endpoints require. Mandatory when the
    /// listener is not on a loopback address; `SWITCHYARD_ADMIN_TOKEN`
    /// overrides it.
    pub admin_token: Option<String>,
}

impl std::fmt::Debug for ServerConfig {
    // By hand so that the token never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_json_depth", &self.max_json_depth)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("max_in_flight", &self.max_in_flight)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_json_depth: DEFAULT_MAX_JSON_DEPTH,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            admin_token: None,
        }
    }
}

/// Why the router refuses to listen where it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum ExposureError {
    #[error(
        "refusing to listen on {addr} without an admin token: the admin endpoints would be \
         open beyond this machine; set server.admin_token in the config or {ADMIN_TOKEN_ENV} \
         (at least {MIN_ADMIN_TOKEN_LEN} characters), or listen on 127.0.0.1"
    )]
    NoToken { addr: SocketAddr },
    #[error("the admin token must be at least {MIN_ADMIN_TOKEN_LEN} characters")]
    ShortToken,
}

impl ServerConfig {
    /// Applies `SWITCHYARD_ADMIN_TOKEN` (the value from the environment) over
    /// the file's token.
    pub fn with_env_token(mut self, env: Option<String>) -> Self {
        if let Some(t) = env.filter(|t| !t.is_empty()) {
            self.admin_token = Some(t);
        }
        self
    }

    /// Refuses a listener beyond loopback with no admin token, and a token
    /// too short to protect anything (from the environment; the file's is
    /// checked at load).
    pub fn check_exposure(&self) -> Result<(), ExposureError> {
        if let Some(t) = &self.admin_token
            && t.chars().count() < MIN_ADMIN_TOKEN_LEN
        {
            return Err(ExposureError::ShortToken);
        }
        if self.listen.ip().is_loopback() || self.admin_token.is_some() {
            return Ok(());
        }
        Err(ExposureError::NoToken { addr: self.listen })
    }
}

pub(super) fn validate(cfg: &Config, at: &Locator<'_>) -> Result<(), ConfigError> {
    let s = &cfg.server;
    let whole = |key: &str, reason: String| at.error(None, key, reason);
    for (key, value) in [
        ("server.max_body_bytes", s.max_body_bytes as u64),
        ("server.max_json_depth", s.max_json_depth as u64),
        ("server.request_timeout_ms", s.request_timeout_ms),
        ("server.max_in_flight", s.max_in_flight as u64),
    ] {
        if value == 0 {
            return Err(whole(key, "must be at least 1".into()));
        }
    }
    if let Some(t) = &s.admin_token
        && t.chars().count() < MIN_ADMIN_TOKEN_LEN
    {
        return Err(whole(
            "server.admin_token",
            format!("must be at least {MIN_ADMIN_TOKEN_LEN} characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_needs_no_token_and_any_address_does() {
        let mut s = ServerConfig::default();
        assert!(s.check_exposure().is_ok());
        s.listen = "[::1]:0".parse().unwrap();
        assert!(s.check_exposure().is_ok());
        s.listen = "0.0.0.0:8080".parse().unwrap();
        let e = s.check_exposure().unwrap_err().to_string();
        assert!(e.contains("server.admin_token"), "{e}");
        assert!(e.contains(ADMIN_TOKEN_ENV), "{e}");
        let s = s.with_env_token(Some("0123456789abcdef".into()));
        assert!(s.check_exposure().is_ok());
    }

    #[test]
    fn debug_never_shows_the_token() {
        let s = ServerConfig::default().with_env_token(Some("very-secret-token-123".into()));
        assert!(!format!("{s:?}").contains("very-secret"));
    }
}
