//! Outbound HTTP for enrichment (the WIT `http` interface).
//!
//! Needs the `http` capability and the host on the plugin's `http_allow`
//! list in the router config. A URL whose host is not on the list fails the
//! event (the router dead-letters it as `capability-denied`) without any
//! connection; other failures (refused, timeout, body too large) come back
//! as `Err` for the plugin to handle, typically as [`Failure::transient`].
//!
//! An enrichment call is not replayed identically: a projection rebuild or
//! a replay of a dead-lettered event calls again and may get another answer.

use crate::Failure;
use crate::bindings::switchyard::plugin::http as host;
use serde::de::DeserializeOwned;

pub use host::{Request, Response};

/// Sends `req` and waits for the response (any status).
pub fn fetch(req: &Request) -> Result<Response, String> {
    host::fetch(req)
}

/// `GET url` with no headers.
pub fn get(url: &str) -> Result<Response, String> {
    fetch(&Request {
        method: "GET".into(),
        url: url.into(),
        headers: Vec::new(),
        body: Vec::new(),
    })
}

/// `GET url` expecting a 2xx JSON answer. A failed call or a 5xx is
/// [`Failure::transient`] (retried); a URL or request the host refuses as
/// malformed, another status, or a body that is not the expected JSON is
/// [`Failure::bad_event`].
pub fn get_json<T: DeserializeOwned>(url: &str) -> Result<T, Failure> {
    let resp = get(url).map_err(|e| {
        if e.starts_with("bad url") || e.starts_with("bad request") || e.starts_with("bad method") {
            Failure::bad_event(e)
        } else {
            Failure::transient(e)
        }
    })?;
    match resp.status {
        200..=299 => serde_json::from_slice(&resp.body)
            .map_err(|e| Failure::bad_event(format!("GET {url}: bad JSON: {e}"))),
        500..=599 => Err(Failure::transient(format!(
            "GET {url}: status {}",
            resp.status
        ))),
        s => Err(Failure::bad_event(format!("GET {url}: status {s}"))),
    }
}
