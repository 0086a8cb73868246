//! Ingest's bound on the router's lag (`ingest.max_lag`). The log takes
//! bursts, but a router that stays behind its producers would fill the disk
//! and delay every output without end; past the bound, HTTP ingest answers
//! 503 with `Retry-After` and SQS sources stop receiving (messages wait in
//! their queue) until the router is back within it.

use tokio::sync::watch;

use crate::store::Store;

/// How far the router is behind on the ingest topic, read from what the
/// store publishes after each commit (no store read per request).
#[derive(Clone)]
pub struct Backlog {
    len: watch::Receiver<u64>,
    cursor: watch::Receiver<u64>,
    max: u64,
}

impl Backlog {
    /// How far `consumer` is behind on `topic`, bounded by `max_lag`;
    /// `None` when that is 0 (no bound).
    pub fn new(store: &Store, topic: &str, consumer: &str, max_lag: u64) -> Option<Self> {
        (max_lag > 0).then(|| Self {
            len: store.watch(topic),
            cursor: store.watch_cursor(consumer),
            max: max_lag,
        })
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// Events of the ingest topic after the router's durable cursor.
    pub fn behind(&self) -> u64 {
        let len = *self.len.borrow();
        len.saturating_sub(*self.cursor.borrow())
    }

    /// How far behind the router is, when that is past the bound.
    pub fn over(&self) -> Option<u64> {
        Some(self.behind()).filter(|&b| b > self.max)
    }

    /// Returns once the router is within the bound, or `stop` turns true.
    pub async fn wait(&mut self, stop: &mut watch::Receiver<bool>) {
        while self.over().is_some() && !*stop.borrow() {
            tokio::select! {
                changed = self.cursor.changed() => {
                    // The store is gone: nothing will move the cursor.
                    if changed.is_err() {
                        return;
                    }
                }
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::WriteBatch;

    async fn append(store: &Store, n: usize) {
        let appends = (0..n)
            .map(|i| ("events".to_string(), crate::event::sample(&format!("e{i}"))))
            .collect();
        store
            .write(WriteBatch {
                appends,
                ..Default::default()
            })
            .await
            .unwrap();
    }

    async fn move_cursor(store: &Store, to: u64) {
        store
            .write(WriteBatch {
                cursors: vec![("router".into(), to)],
                ..Default::default()
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn counts_what_the_router_has_not_passed_and_waits_until_it_is_within_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(
            Backlog::new(&store, "events", "router", 0).is_none(),
            "0 is no bound"
        );
        let backlog = Backlog::new(&store, "events", "router", 3).unwrap();
        append(&store, 3).await;
        assert_eq!((backlog.behind(), backlog.over()), (3, None));
        append(&store, 2).await;
        assert_eq!(backlog.over(), Some(5));

        let (_stop_tx, mut stop) = watch::channel(false);
        let mut waiter = backlog.clone();
        let waiting = tokio::spawn(async move { waiter.wait(&mut stop).await });
        move_cursor(&store, 1).await;
        assert_eq!(backlog.over(), Some(4));
        // The waiter runs at each yield of this (one-thread) runtime: it
        // saw the cursor move and is still waiting.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(
            !waiting.is_finished(),
            "still 4 behind, past the bound of 3"
        );
        move_cursor(&store, 2).await;
        assert_eq!(backlog.over(), None);
        tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("wait returns once within the bound")
            .unwrap();
    }

    #[tokio::test]
    async fn a_stop_ends_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut backlog = Backlog::new(&store, "events", "router", 1).unwrap();
        append(&store, 5).await;
        let (stop_tx, mut stop) = watch::channel(false);
        let waiting = tokio::spawn(async move { backlog.wait(&mut stop).await });
        stop_tx.send_replace(true);
        tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("wait returns on stop")
            .unwrap();
    }
}
