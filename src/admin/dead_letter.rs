//! The dead-letter topic as a replayable log: `GET /v1/dead-letter` lists its
//! records with filters (and the keys held or parked per route), `POST /v1/dead-letter/replay` re-injects them (see
//! `pipeline::replay`).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{DEFAULT_PAGE, MAX_PAGE, unavailable};
use crate::pipeline::replay::{self, Filter};
use crate::runtime::Runtime;
use crate::transport::http::error;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    from: Option<u64>,
    limit: Option<usize>,
    plugin: Option<String>,
    reason: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    replayed: Option<bool>,
}

/// `GET /v1/dead-letter?from&limit&plugin&reason&type&replayed`.
pub async fn list(
    State(rt): State<Arc<Runtime>>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad query",
                json!([{ "field": "query", "reason": e.body_text() }]),
            );
        }
    };
    let filter = Filter {
        plugin: q.plugin,
        reason: q.reason,
        event_type: q.event_type,
        replayed: q.replayed,
    };
    let limit = q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let topic = &rt.config.router.dead_letter_topic;
    let listed = replay::list(&rt.store, topic, &filter, q.from.unwrap_or(0), limit)
        .and_then(|page| Ok((page, crate::pipeline::held_keys(&rt.store)?)));
    match listed {
        Ok(((records, next), held)) => {
            // Keys held or parked on a route, in a stable order.
            let mut held: Vec<_> = held.into_values().collect();
            held.sort_by(|a, b| (&a.route, &a.key).cmp(&(&b.route, &b.key)));
            Json(json!({ "topic": topic, "records": records, "next": next, "held": held }))
                .into_response()
        }
        Err(e) => unavailable(e),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReplayBody {
    plugin: Option<String>,
    reason: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

/// `POST /v1/dead-letter/replay` with an optional JSON body
/// `{"plugin", "reason", "type", "dryRun"}`.
pub async fn replay(
    State(rt): State<Arc<Runtime>>,
    body: Result<Json<ReplayBody>, JsonRejection>,
) -> Response {
    let body = match body {
        Ok(Json(b)) => b,
        // No body (or no content type) means: replay everything.
        Err(JsonRejection::MissingJsonContentType(_)) => ReplayBody::default(),
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad replay request",
                json!([{ "field": "body", "reason": e.body_text() }]),
            );
        }
    };
    let filter = Filter {
        plugin: body.plugin,
        reason: body.reason,
        event_type: body.event_type,
        replayed: None,
    };
    // Under the pipeline's gate: no batch is between reading and writing the
    // held keys this may release, and replays run one at a time.
    let _gate = rt.gate.lock().await;
    match replay::replay(
        &rt.store,
        &rt.routes(),
        &rt.config.ingest.topic,
        &rt.config.router.dead_letter_topic,
        &filter,
        body.dry_run,
    )
    .await
    {
        Ok(report) => Json(report).into_response(),
        Err(e) => unavailable(e),
    }
}
