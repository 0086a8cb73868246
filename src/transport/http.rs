//! HTTP ingest: `POST /v1/events`.
//!
//! Answers `202` only after every event of the request is durable; `400` with
//! the field and reason for anything malformed or invalid, `415` for a content
//! type it does not understand, `413` above the body limit, `422` for an event
//! type no route takes or that a direct-delivery route's plugin refuses, and
//! `503` with details when the store cannot write or (direct delivery) the
//! broker did not accept the outputs.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

use super::{IngestError, Problem, ingest};
use crate::envelope::{EnvelopeError, decode_http};
use crate::runtime::Runtime;

/// The ingest routes, with the configured body limit.
pub fn routes(rt: Arc<Runtime>) -> axum::Router {
    let limit = rt.config.server.max_body_bytes;
    axum::Router::new()
        .route("/v1/events", post(post_events))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(rt)
}

/// A JSON error answer: `{"error": ..., "details": [...]}`.
pub fn error(status: StatusCode, error: &str, details: serde_json::Value) -> Response {
    (status, Json(json!({ "error": error, "details": details }))).into_response()
}

/// Counts a refused request by reason (`switchyard_rejected_total`).
fn rejected(reason: &str) {
    crate::obs::metrics().rejected.inc(["http", reason]);
}

async fn post_events(
    State(rt): State<Arc<Runtime>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            rejected("too-large");
            let limit = rt.config.server.max_body_bytes;
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large",
                json!([{ "field": "body", "reason": format!("the limit is {limit} bytes") }]),
            );
        }
        Err(rejection) => {
            rejected("unreadable");
            return error(
                rejection.status(),
                "cannot read request body",
                json!([{ "field": "body", "reason": rejection.body_text() }]),
            );
        }
    };
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
            r.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
            r
        }
        Err(IngestError::Unavailable(e)) => {
            tracing::error!(error = %e, "ingest could not write");
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "events could not be written durably; nothing was accepted",
                json!([{ "field": "store", "reason": e.to_string() }]),
            );
            r.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
            r
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
