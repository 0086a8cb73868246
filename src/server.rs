//! Runs a router: the HTTP listener, the pipeline, and the SQS sources and
//! sink outboxes when configured, until shutdown.
//!
//! Shutdown (mini-redis style): one `watch` signal reaches every task; the
//! listener stops accepting and finishes in-flight requests, the pipeline
//! finishes and commits its batch in progress, the SQS sources finish the
//! batch in hand and the sinks abandon (unacknowledged) the delivery in
//! progress, and then the store's writer drains its queue and stops.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::pipeline::Pipeline;
use crate::runtime::Runtime;

/// The whole HTTP surface of a router; mutating admin requests need the
/// admin token when one is set.
pub fn app(rt: Arc<Runtime>) -> axum::Router {
    let token = crate::admin::AdminToken::new(rt.config.server.admin_token.as_deref());
    crate::transport::http::routes(rt.clone())
        .merge(crate::transport::aws::routes(rt.clone()))
        .merge(crate::admin::routes(rt))
        .layer(axum::middleware::from_fn_with_state(
            token,
            crate::admin::require_admin,
        ))
        .layer(axum::middleware::from_fn(close_if_body_unread))
}

/// Middleware: an answer sent before the request's body was read to its end
/// says `Connection: close`. hyper closes such a connection after the answer
/// (what is left of the body cannot be told from the next request) unless
/// the rest happens to be in its buffer already; without the header, a
/// client that pools connections sends its next request on a closed one and
/// meets an unexpected EOF. Every early answer gets it this way: a saturated
/// ingest's `503`, a `408` for a body that did not arrive, the admin `401`,
/// a `404` or `405` for a request with a body.
async fn close_if_body_unread(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (parts, body) = req.into_parts();
    if http_body::Body::is_end_stream(&body) {
        return next
            .run(axum::extract::Request::from_parts(parts, body))
            .await;
    }
    let read = Arc::new(AtomicBool::new(false));
    let body = axum::body::Body::new(Tracked {
        inner: body,
        read: read.clone(),
    });
    let mut answer = next
        .run(axum::extract::Request::from_parts(parts, body))
        .await;
    if !read.load(Ordering::Acquire) {
        answer.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    answer
}

/// A request body that records when it has been read to its end.
struct Tracked {
    inner: axum::body::Body,
    read: Arc<std::sync::atomic::AtomicBool>,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        let end = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => http_body::Body::is_end_stream(&this.inner),
            _ => false,
        };
        if end {
            this.read.store(true, std::sync::atomic::Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `rt` on `listener` until `shutdown` becomes true.
pub async fn serve(
    rt: Arc<Runtime>,
    listener: TcpListener,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    // The listener may differ from `server.listen` (a flag, port 0): check
    // what is actually bound.
    let mut bound = rt.config.server.clone();
    bound.listen = listener.local_addr()?;
    bound.check_exposure().map_err(std::io::Error::other)?;
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
    // SQS sources and the sinks' outbox loops.
    let mut aws_tasks = rt.aws.as_ref().map(|aws| aws.spawn(&rt, &shutdown));
    let mut http_stop = shutdown.clone();
    let stopping = rt.stopping.clone();
    let header_timeout = Duration::from_millis(rt.config.server.request_timeout_ms);
    let served = serve_http(listener, app(rt.clone()), header_timeout, async move {
        let _ = http_stop.wait_for(|s| *s).await;
        stopping.send_replace(true);
    })
    .await;
    if let Err(e) = consumer.await {
        tracing::error!(error = %e, "pipeline task ended abnormally");
    }
    if let Some(tasks) = aws_tasks.as_mut() {
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done {
                tracing::error!(error = %e, "aws task ended abnormally");
            }
        }
    }
    rt.store.close();
    tracing::info!("router stopped");
    served
}

/// Accepts connections until `stop` completes, then lets in-flight requests
/// finish. Unlike `axum::serve`, a client gets `header_timeout` to send a
/// request's headers (hyper needs a timer for that), so a slow client cannot
/// hold a connection open by trickling them.
async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    header_timeout: Duration,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // Answers are small and sent as soon as they are ready: without
        // this, Nagle's algorithm can hold a response back until the
        // client's delayed ACK (up to 40 ms on Linux).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(app.clone());
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
