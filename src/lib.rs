//! switchyard: an event router that runs sandboxed WebAssembly plugins.
//!
//! The map (see `ARCHITECTURE.md` for the invariants):
//!
//! * [`event`] — the one internal [`Event`] type.
//! * [`config`] — the TOML file model, defaults and validation with file/line/key errors.
//! * [`envelope`] — decoding HMPPS domain events and CloudEvents (structured, binary, batch).
//! * [`schema`] — the JSON Schema registry (base HMPPS schema + per-type schemas).
//! * [`router`] — the route table: event-type globs → pipelines.
//! * [`pipeline`] — the consumer: batches, keyed order, stages, kv, dead-letter, cursor;
//!   held (poison) keys and dead-letter replay.
//! * [`plugin`] — the wasmtime host (the only module that knows wasmtime) and each
//!   plugin version's circuit breaker.
//! * [`reload`] — hot reload: file watcher, verify-then-swap, projection rebuilds.
//! * [`store`] — the embedded durable log, cursors and plugin state, on `redb`.
//! * [`transport`] — sources and sinks: HTTP ingest, SQS sources, SNS/SQS sinks (outbox and direct).
//! * [`admin`] — read API (topics, events, live stream), health, metrics, event traces, the web page.
//! * [`obs`] — observability: the metrics registry, trace links, W3C trace context.
//! * `fuzzing` — harnesses shared by the fuzz targets and the corpus test (hidden).
//! * [`runtime`] / [`server`] — putting the parts together and running them.

pub mod admin;
pub mod config;
pub mod envelope;
pub mod event;
#[doc(hidden)]
pub mod fuzzing;
pub mod obs;
pub mod pipeline;
pub mod plugin;
pub mod reload;
pub mod router;
pub mod runtime;
pub mod schema;
pub mod server;
pub mod store;
mod sync;
pub mod transport;

pub use config::Config;
pub use event::Event;
pub use runtime::Runtime;
pub use store::Store;
