//! The ingest request's guards: how many requests are handled at once, how
//! long a client may take to send its body, how large it may be, and how deep
//! its JSON may nest. Each refusal is a clear status before anything is
//! parsed or queued for the store.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::BytesMut;
use http_body_util::BodyExt;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::http::error;
use crate::config::ServerConfig;
use crate::pipeline::json_check::plain_run;

/// Seconds a saturated router asks clients to wait before they retry.
const RETRY_AFTER_S: &str = "1";

/// A refusal, ready to send (boxed: a `Response` is large for an `Err`).
pub type Refusal = Box<Response>;

/// The limits of `[server]` and the in-flight slots of the ingest route.
pub struct IngestLimits {
    /// One permit per ingest request being handled. Bounding them bounds the
    /// bodies held in memory and the writes queued for the store.
    permits: Arc<Semaphore>,
    max_in_flight: usize,
    max_body_bytes: usize,
    max_json_depth: usize,
    body_timeout: Duration,
}

impl IngestLimits {
    pub fn new(server: &ServerConfig) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(server.max_in_flight)),
            max_in_flight: server.max_in_flight,
            max_body_bytes: server.max_body_bytes,
            max_json_depth: server.max_json_depth,
            body_timeout: Duration::from_millis(server.request_timeout_ms),
        }
    }

    /// A slot for one request, or `503` with `Retry-After` when all are taken:
    /// back-pressure instead of an unbounded queue.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, Refusal> {
        self.permits.clone().try_acquire_owned().map_err(|_| {
            tracing::warn!(
                max_in_flight = self.max_in_flight,
                "ingest saturated; asking the client to retry"
            );
            Box::new(try_later(
                "too many requests in flight; nothing was accepted",
                "server.max_in_flight",
                format!(
                    "the router is handling its limit of {} ingest requests; retry after {RETRY_AFTER_S} s",
                    self.max_in_flight
                ),
            ))
        })
    }

    /// Reads the whole body within the size limit and the time limit. A
    /// body over the limit is read to its end and dropped (never held), so
    /// that the client, still sending, gets the `413` rather than a reset
    /// connection; the time limit bounds that too.
    pub async fn read_body(&self, headers: &HeaderMap, mut body: Body) -> Result<Bytes, Refusal> {
        let declared = headers
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut over = declared.is_some_and(|n| n > self.max_body_bytes as u64);
        // A body that arrives in one frame (the usual case) is kept as it
        // came; only a body in several frames is copied together.
        let mut kept = Kept::Empty;
        let deadline = tokio::time::Instant::now() + self.body_timeout;
        loop {
            match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(None) => break,
                Ok(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if over {
                        continue;
                    }
                    if kept.len() + data.len() > self.max_body_bytes {
                        over = true;
                        kept = Kept::Empty;
                    } else {
                        kept.push(data);
                    }
                }
                Ok(Some(Err(e))) => {
                    return Err(Box::new(error(
                        StatusCode::BAD_REQUEST,
                        "cannot read request body",
                        json!([{ "field": "body", "reason": e.to_string() }]),
                    )));
                }
                Err(_) if over => return Err(self.too_large()),
                Err(_) => {
                    let ms = self.body_timeout.as_millis();
                    tracing::warn!(timeout_ms = ms as u64, "request body not received in time");
                    return Err(Box::new(error(
                        StatusCode::REQUEST_TIMEOUT,
                        "request body not received in time",
                        json!([{ "field": "body", "reason": format!(
                            "the whole body must arrive within {ms} ms (server.request_timeout_ms)"
                        ) }]),
                    )));
                }
            }
        }
        if over {
            return Err(self.too_large());
        }
        Ok(kept.into_bytes())
    }

    /// Refuses a JSON body nested deeper than the limit, before any parser
    /// recurses into it.
    pub fn check_depth(&self, body: &[u8]) -> Result<(), Refusal> {
        json_depth_within(body, self.max_json_depth).map_err(|at| {
            Box::new(error(
                StatusCode::BAD_REQUEST,
                "malformed event",
                json!([{ "field": "body", "reason": format!(
                    "json nests deeper than {} levels (at byte {at}; server.max_json_depth)",
                    self.max_json_depth
                ) }]),
            ))
        })
    }

    fn too_large(&self) -> Refusal {
        let limit = self.max_body_bytes;
        Box::new(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large",
            json!([{ "field": "body", "reason": format!("the limit is {limit} bytes") }]),
        ))
    }
}

/// The body read so far.
enum Kept {
    Empty,
    One(Bytes),
    Many(BytesMut),
}

impl Kept {
    fn len(&self) -> usize {
        match self {
            Kept::Empty => 0,
            Kept::One(b) => b.len(),
            Kept::Many(b) => b.len(),
        }
    }

    fn push(&mut self, data: Bytes) {
        *self = match std::mem::replace(self, Kept::Empty) {
            Kept::Empty => Kept::One(data),
            Kept::One(first) => {
                let mut all = BytesMut::with_capacity(first.len() + data.len());
                all.extend_from_slice(&first);
                all.extend_from_slice(&data);
                Kept::Many(all)
            }
            Kept::Many(mut all) => {
                all.extend_from_slice(&data);
                Kept::Many(all)
            }
        };
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Kept::Empty => Bytes::new(),
            Kept::One(b) => b,
            Kept::Many(b) => b.freeze(),
        }
    }
}

/// Adds `Retry-After` to a refusal the client may simply repeat later.
pub fn retry_after(r: &mut Response) {
    r.headers_mut()
        .insert("retry-after", HeaderValue::from_static(RETRY_AFTER_S));
}

/// A `503` with `Retry-After` that nothing of the request was accepted
/// (`error`), naming the one `field` that refused it and why.
pub fn try_later(error_text: &str, field: &str, reason: String) -> Response {
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        error_text,
        json!([{ "field": field, "reason": reason }]),
    );
    retry_after(&mut r);
    r
}

/// Whether `text`'s arrays and objects nest at most `max` deep; otherwise the
/// byte offset where the limit is passed. Iterative and linear: brackets
/// inside strings (with their escapes) do not count. Malformed JSON is left
/// to the parser to describe.
pub fn json_depth_within(text: &[u8], max: usize) -> Result<(), usize> {
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        match b {
            b'"' => {
                // To the closing quote, eight bytes at a time between escapes
                // (control bytes inside are the parser's to refuse).
                i += 1;
                loop {
                    i += plain_run(text.get(i..).unwrap_or_default());
                    match text.get(i) {
                        None => return Ok(()),
                        Some(b'"') => break,
                        Some(b'\\') => i += 2,
                        Some(_) => i += 1,
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(i);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::json_depth_within;

    /// The byte-at-a-time scan the fast one replaced, as the reference.
    fn reference(text: &[u8], max: usize) -> Result<(), usize> {
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        for (i, &b) in text.iter().enumerate() {
            if in_string {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > max {
                        return Err(i);
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        Ok(())
    }

    /// Random texts over the bytes that matter (quotes, escapes, brackets,
    /// control bytes, and plain runs long enough for the eight-byte scan),
    /// at several limits: the fast scan answers as the reference does.
    #[test]
    fn agrees_with_the_byte_at_a_time_scan() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let pieces: [&[u8]; 12] = [
            b"\"",
            b"\\",
            b"\\\"",
            b"[",
            b"]",
            b"{",
            b"}",
            b"\n",
            b"\x01",
            b"abcdefghijklmnop",
            b"a",
            b"\xc3\xa9",
        ];
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let text: Vec<u8> = (0..len)
                .flat_map(|_| pieces[(next() % 12) as usize].iter().copied())
                .collect();
            for max in [0, 1, 2, 5] {
                assert_eq!(
                    json_depth_within(&text, max),
                    reference(&text, max),
                    "{:?} at {max}",
                    String::from_utf8_lossy(&text)
                );
            }
        }
    }

    #[test]
    fn depth_counts_nesting_and_ignores_strings() {
        assert!(json_depth_within(br#"{"a":[1,{"b":2}]}"#, 3).is_ok());
        assert_eq!(json_depth_within(br#"{"a":[1,{"b":2}]}"#, 2), Err(8));
        assert!(json_depth_within(br#"{"a":"[[[[[[\"[[[["}"#, 1).is_ok());
        let bomb = "[".repeat(100_000);
        assert_eq!(json_depth_within(bomb.as_bytes(), 64), Err(64));
        // Siblings do not add up.
        assert!(json_depth_within(b"[[],[],[],[]]", 2).is_ok());
    }
}
