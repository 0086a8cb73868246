//! Plugin status and control: `GET /v1/plugins`, forced reloads, projection
//! rebuilds, config reload, and a look at a plugin's state.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::reload::{Outcome, Request};
use crate::runtime::Runtime;
use crate::transport::http::error;

/// Entries one state request returns at most.
const MAX_STATE_ENTRIES: usize = 10_000;

pub async fn list(State(rt): State<Arc<Runtime>>) -> Json<serde_json::Value> {
    let config = rt.live_config();
    let stages = crate::sync::read(&rt.plugins).clone();
    let plugins: Vec<_> = stages
        .iter()
        .map(|(name, stage)| {
            let p = &stage.plugin;
            let (calls, errors) = p.counts();
            let status = rt.statuses.view(name);
            let cfg = config.plugins.get(name);
            json!({
                "name": name,
                "version": p.version(),
                "digest": p.digest(),
                "path": p.spec().path,
                "projection": cfg.is_some_and(|c| c.projection),
                "namespace": stage.namespace,
                "loadedAt": status.loaded_at,
                "calls": calls,
                "errors": errors,
                "lastError": p.last_error(),
                "lastReload": status.history.last(),
                "reloads": status.history,
                "rebuild": status.rebuild,
                "breaker": p.breaker().view(),
            })
        })
        .collect();
    Json(json!({ "plugins": plugins }))
}

async fn ask(rt: &Runtime, request: Request) -> Response {
    let Some(handle) = rt.reload.get() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "reload is not running",
            json!([]),
        );
    };
    match handle.request(request, "api").await {
        Some(outcome) => answer(outcome),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the router is stopping",
            json!([]),
        ),
    }
}

fn answer(outcome: Outcome) -> Response {
    let status = if !outcome.is_failure() {
        StatusCode::OK
    } else if outcome
        .reason
        .as_deref()
        .is_some_and(|r| r.starts_with("no plugin named"))
    {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    (status, Json(outcome)).into_response()
}

pub async fn reload(State(rt): State<Arc<Runtime>>, Path(name): Path<String>) -> Response {
    ask(&rt, Request::Plugin(name)).await
}

pub async fn rebuild(State(rt): State<Arc<Runtime>>, Path(name): Path<String>) -> Response {
    ask(&rt, Request::Rebuild(name)).await
}

/// The config in force and how its reloads went.
pub async fn config(State(rt): State<Arc<Runtime>>) -> Json<serde_json::Value> {
    let live = rt.live_config();
    let history = rt.statuses.config_history();
    let routes: Vec<_> = live
        .routes
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "match": r.patterns.iter().map(|p| p.get_ref()).collect::<Vec<_>>(),
                "pipeline": r.pipeline.iter().map(|p| p.get_ref()).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!({
        "file": live.file,
        "routes": routes,
        "lastReload": history.last(),
        "reloads": history,
    }))
}

pub async fn reload_config(State(rt): State<Arc<Runtime>>) -> Response {
    ask(&rt, Request::Config).await
}

#[derive(Debug, Deserialize)]
pub struct StateQuery {
    prefix: Option<String>,
    limit: Option<usize>,
}

/// The plugin's live state entries (values shown as JSON when they are JSON).
pub async fn state(
    State(rt): State<Arc<Runtime>>,
    Path(name): Path<String>,
    Query(q): Query<StateQuery>,
) -> Response {
    let Some(stage) = rt.stage(&name) else {
        return error(
            StatusCode::NOT_FOUND,
            "no such plugin",
            json!([{ "field": "name", "reason": format!("no plugin named {name:?}") }]),
        );
    };
    let limit = q.limit.unwrap_or(1000).clamp(1, MAX_STATE_ENTRIES);
    match rt
        .store
        .kv_scan(&stage.namespace, q.prefix.as_deref().unwrap_or(""), limit)
    {
        Ok(entries) => {
            let entries: serde_json::Map<String, serde_json::Value> = entries
                .into_iter()
                .map(|(k, v)| {
                    let v = serde_json::from_slice(&v)
                        .unwrap_or_else(|_| json!(String::from_utf8_lossy(&v)));
                    (k, v)
                })
                .collect();
            Json(json!({ "plugin": name, "namespace": stage.namespace, "entries": entries }))
                .into_response()
        }
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store unavailable",
            json!([{ "field": "store", "reason": e.to_string() }]),
        ),
    }
}
