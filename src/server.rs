//! Runs a router: the HTTP listener and the pipeline, until shutdown.
//!
//! Shutdown (mini-redis style): one `watch` signal reaches every task; the
//! listener stops accepting and finishes in-flight requests, the pipeline
//! finishes and commits its batch in progress, and then the store's writer
//! drains its queue and stops.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::pipeline::Pipeline;
use crate::runtime::Runtime;

/// The whole HTTP surface of a router.
pub fn app(rt: Arc<Runtime>) -> axum::Router {
    crate::transport::http::routes(rt.clone()).merge(crate::admin::routes(rt))
}

/// Serves `rt` on `listener` until `shutdown` becomes true.
pub async fn serve(
    rt: Arc<Runtime>,
    listener: TcpListener,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let pipeline = Pipeline::new(
        rt.store.clone(),
        rt.routes.clone(),
        rt.gate.clone(),
        &rt.config.ingest.topic,
        &rt.config.router,
    );
    let reload = crate::reload::start(rt.clone(), rt.config.reload.watch);
    let _ = rt.reload.set(reload);
    let consumer = tokio::spawn(pipeline.run(shutdown.clone()));
    let mut http_stop = shutdown.clone();
    let stopping = rt.stopping.clone();
    let served = axum::serve(listener, app(rt.clone()))
        .with_graceful_shutdown(async move {
            let _ = http_stop.wait_for(|s| *s).await;
            stopping.send_replace(true);
        })
        .await;
    if let Err(e) = consumer.await {
        tracing::error!(error = %e, "pipeline task ended abnormally");
    }
    rt.store.close();
    tracing::info!("router stopped");
    served
}
