//! The admin token: every request that changes the router (reloads,
//! rebuilds, replays: any method but GET/HEAD/OPTIONS on any path but ingest)
//! needs `Authorization: Bearer <server.admin_token>` when a token is set.
//! A router listening beyond loopback refuses to start without one
//! (`ServerConfig::check_exposure`), so an exposed router is never open.
//!
//! The path rule is deliberately broad: an admin endpoint added later is
//! guarded without anyone remembering to list it.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::transport::http::error;

/// The one path a mutating request may take without the token.
const INGEST_PATH: &str = "/v1/events";

/// The configured token, kept as its SHA-256 digest: comparing digests of
/// equal length takes the same time whatever the candidate, so neither the
/// token's length nor its prefix leaks through timing.
#[derive(Clone)]
pub struct AdminToken(Option<Arc<[u8; 32]>>);

impl AdminToken {
    pub fn new(token: Option<&str>) -> Self {
        Self(token.map(|t| Arc::new(digest(t.as_bytes()))))
    }

    fn accepts(&self, candidate: &[u8]) -> bool {
        match &self.0 {
            None => true,
            Some(expected) => constant_time_eq(expected.as_ref(), &digest(candidate)),
        }
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Equality whose time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn needs_token(method: &Method, path: &str) -> bool {
    let reading = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    !reading && path != INGEST_PATH
}

/// Middleware: `401` for a mutating admin request without the right token.
pub async fn require_admin(State(token): State<AdminToken>, req: Request, next: Next) -> Response {
    if token.0.is_none() || !needs_token(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    let reason = match presented {
        Some(t) if token.accepts(t.as_bytes()) => return next.run(req).await,
        Some(_) => "the bearer token does not match server.admin_token",
        None => "this endpoint needs an Authorization: Bearer <server.admin_token> header",
    };
    tracing::warn!(
        method = %req.method(),
        path = req.uri().path(),
        "admin request refused: bad or missing token"
    );
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "admin token required",
        json!([{ "field": "authorization", "reason": reason }]),
    );
    r.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"switchyard\""),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_token_is_accepted() {
        let t = AdminToken::new(Some("0123456789abcdef"));
        assert!(t.accepts(b"0123456789abcdef"));
        assert!(!t.accepts(b"0123456789abcdeF"));
        assert!(!t.accepts(b""));
        assert!(AdminToken::new(None).accepts(b"anything"));
    }

    #[test]
    fn reads_and_ingest_are_open_other_writes_are_not() {
        assert!(!needs_token(&Method::GET, "/v1/plugins"));
        assert!(!needs_token(&Method::POST, "/v1/events"));
        assert!(needs_token(&Method::POST, "/v1/config/reload"));
        assert!(needs_token(&Method::POST, "/v1/plugins/x/rebuild"));
        assert!(needs_token(&Method::DELETE, "/v1/anything"));
        assert!(needs_token(&Method::POST, "/v1/events/"));
    }
}
