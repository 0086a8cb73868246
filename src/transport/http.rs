//! HTTP ingest: `POST /v1/events`.
//!
//! Answers `202` only after every event of the request is durable; `400` with
//! the field and reason for anything malformed or invalid, `415` for a content
//! type it does not understand, `413` above the body limit, `408` when the
//! body does not arrive in time, `422` for an event type no route takes or
//! that a direct-delivery route's plugin refuses, and `503` with
//! `Retry-After` when too many requests are in flight, the store cannot write
//! or (direct delivery) the broker did not accept the outputs.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

use super::limits::{IngestLimits, retry_after, try_later};
use super::{IngestError, Problem, ingest};
use crate::envelope::{EnvelopeError, decode_http};
use crate::runtime::Runtime;

/// The ingest route's shared state: the runtime and the request limits
/// (`[server]` takes effect at start, so they are fixed here).
#[derive(Clone)]
struct Ingest {
    rt: Arc<Runtime>,
    limits: Arc<IngestLimits>,
}

/// The ingest routes, with the configured request limits.
pub fn routes(rt: Arc<Runtime>) -> axum::Router {
    let limits = Arc::new(IngestLimits::new(&rt.config.server));
    axum::Router::new()
        .route("/v1/events", post(post_events))
        .with_state(Ingest { rt, limits })
}

/// A JSON error answer: `{"error": ..., "details": [...]}`.
pub fn error(status: StatusCode, error: &str, details: serde_json::Value) -> Response {
    (status, Json(json!({ "error": error, "details": details }))).into_response()
}

/// Counts a refused request by reason (`switchyard_rejected_total`).
fn rejected(reason: &str) {
    crate::obs::metrics().rejected.inc(["http", reason]);
}

/// Counts a refusal by one of the request limits, named by its status.
fn refused(r: Response) -> Response {
    rejected(match r.status() {
        StatusCode::PAYLOAD_TOO_LARGE => "too-large",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::SERVICE_UNAVAILABLE => "busy",
        _ => "unreadable",
    });
    r
}

async fn post_events(
    State(Ingest { rt, limits }): State<Ingest>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // The router is too far behind: nothing more until it catches up.
    if let Some(backlog) = &rt.backlog
        && let Some(behind) = backlog.over()
    {
        rejected("behind");
        tracing::warn!(
            behind,
            max_lag = backlog.max(),
            "router behind its bound; asking the client to retry"
        );
        return try_later(
            "the router is too far behind; nothing was accepted",
            "ingest.max_lag",
            format!(
                "the router is {behind} events behind on the ingest topic, past its bound of {}; retry later",
                backlog.max()
            ),
        );
    }
    // Held until the answer: bounds bodies in memory and queued writes.
    let _slot = match limits.admit() {
        Ok(slot) => slot,
        Err(r) => return refused(*r),
    };
    let body = match limits.read_body(&headers, body).await {
        Ok(b) => b,
        Err(r) => return refused(*r),
    };
    let json_body = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("json"));
    if json_body && let Err(r) = limits.check_depth(&body) {
        rejected("too-deep");
        return *r;
    }
    let decoded = match decode_http(&headers, &body, &rt.ingest) {
        Ok(d) => d,
        Err(e) => {
            rejected(if e.status() == 415 {
                "unsupported-media-type"
            } else {
                "malformed"
            });
            return envelope_error(&e);
        }
    };
    let batch = decoded.batch;
    let result = ingest(&rt, decoded.events, batch).await;
    match &result {
        Ok(accepted) => {
            for a in accepted {
                crate::obs::metrics().events_in.inc(["http", &a.event_type]);
            }
        }
        Err(e) => rejected(match e {
            IngestError::Invalid(_) => "schema",
            IngestError::Unrouted(_) => "no-route",
            IngestError::Rejected(_) => "refused",
            IngestError::Undelivered(_) => "undelivered",
            IngestError::Unavailable(_) => "unavailable",
        }),
    }
    match result {
        Ok(accepted) => {
            let topic = &rt.config.ingest.topic;
            let answer = match (batch, accepted.first()) {
                (false, Some(a)) => {
                    let mut one = json!({ "id": a.id, "type": a.event_type, "offset": a.offset, "topic": topic });
                    if !a.published.is_empty() {
                        one["published"] = json!(a.published);
                    }
                    one
                }
                _ => json!({ "topic": topic, "accepted": accepted }),
            };
            (StatusCode::ACCEPTED, Json(answer)).into_response()
        }
        Err(IngestError::Invalid(p)) => {
            problems(StatusCode::BAD_REQUEST, "event failed schema validation", p)
        }
        Err(IngestError::Unrouted(p)) => problems(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no route for event type",
            p,
        ),
        Err(IngestError::Rejected(p)) => problems(
            StatusCode::UNPROCESSABLE_ENTITY,
            "event refused by a direct-delivery route; nothing was accepted",
            p,
        ),
        Err(IngestError::Undelivered(p)) => {
            let mut r = problems(
                StatusCode::SERVICE_UNAVAILABLE,
                "event could not be published; nothing was accepted",
                p,
            );
            retry_after(&mut r);
            r
        }
        Err(IngestError::Unavailable(e)) => {
            tracing::error!(error = %e, "ingest could not write");
            try_later(
                "events could not be written durably; nothing was accepted",
                "store",
                e.to_string(),
            )
        }
    }
}

fn problems(status: StatusCode, msg: &str, p: Vec<Problem>) -> Response {
    error(status, msg, serde_json::to_value(p).unwrap_or_default())
}

fn envelope_error(e: &EnvelopeError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let msg = if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        "unsupported content type"
    } else {
        "malformed event"
    };
    let mut detail = json!({ "field": e.field, "reason": e.reason });
    if let Some(i) = e.index {
        detail["index"] = json!(i);
    }
    error(status, msg, json!([detail]))
}
