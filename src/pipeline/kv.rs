//! Plugin state seen through the batch being processed.
//!
//! A plugin's `kv` writes are not written to the store when it makes them:
//! they are kept in memory and written in the same transaction as the outputs
//! and the cursor of the batch. So after a crash the state is exactly as it was
//! before the first uncommitted event, and replaying that event cannot apply
//! it twice (a projection's `eventCount` stays right).
//!
//! Two layers: [`BatchKv`] holds the writes of every (event, route) unit that
//! succeeded so far in the batch; [`UnitKv`] holds the writes of the unit in
//! progress and is merged into the batch only if the unit succeeds.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::plugin::KvAccess;
use crate::store::Store;
use crate::sync::lock;

type Key = (String, String);
type Writes = BTreeMap<Key, Option<Vec<u8>>>;

/// The writes of the batch's successful units, over the store.
pub struct BatchKv {
    store: Store,
    writes: Mutex<Writes>,
}

impl BatchKv {
    pub fn new(store: Store) -> Arc<Self> {
        Arc::new(Self {
            store,
            writes: Mutex::new(Writes::new()),
        })
    }

    /// The writes to commit with the batch.
    pub fn take(&self) -> Vec<(String, String, Option<Vec<u8>>)> {
        std::mem::take(&mut *lock(&self.writes))
            .into_iter()
            .map(|((ns, k), v)| (ns, k, v))
            .collect()
    }
}

/// One unit's view of state: its own writes, then the batch's, then the store.
pub struct UnitKv {
    batch: Arc<BatchKv>,
    writes: Mutex<Writes>,
}

impl UnitKv {
    pub fn new(batch: Arc<BatchKv>) -> Arc<Self> {
        Arc::new(Self {
            batch,
            writes: Mutex::new(Writes::new()),
        })
    }

    /// A handle scoped to one plugin's namespace.
    pub fn scoped(self: &Arc<Self>, namespace: &str) -> Arc<dyn KvAccess> {
        Arc::new(Scoped {
            unit: self.clone(),
            ns: namespace.to_string(),
        })
    }

    /// Makes this unit's writes part of the batch.
    pub fn commit(&self) {
        let mine = std::mem::take(&mut *lock(&self.writes));
        lock(&self.batch.writes).extend(mine);
    }

    fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        let k = (ns.to_string(), key.to_string());
        if let Some(v) = lock(&self.writes).get(&k) {
            return Ok(v.clone());
        }
        if let Some(v) = lock(&self.batch.writes).get(&k) {
            return Ok(v.clone());
        }
        self.batch.store.kv_get(ns, key).map_err(|e| e.to_string())
    }

    fn scan(&self, ns: &str, prefix: &str, limit: usize) -> Result<Vec<(String, Vec<u8>)>, String> {
        let mut merged: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        let overlay = |w: &Writes, merged: &mut BTreeMap<String, Option<Vec<u8>>>| {
            let from = (ns.to_string(), prefix.to_string());
            for ((n, k), v) in w.range(from..) {
                if n != ns || !k.starts_with(prefix) {
                    break;
                }
                merged.insert(k.clone(), v.clone());
            }
        };
        // Deleted-in-overlay entries may hide stored ones: read enough to fill `limit`.
        let batch = lock(&self.batch.writes);
        let unit = lock(&self.writes);
        let extra = batch.len() + unit.len();
        for (k, v) in self
            .batch
            .store
            .kv_scan(ns, prefix, limit.saturating_add(extra))
            .map_err(|e| e.to_string())?
        {
            merged.insert(k, Some(v));
        }
        overlay(&batch, &mut merged);
        overlay(&unit, &mut merged);
        Ok(merged
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .take(limit)
            .collect())
    }
}

struct Scoped {
    unit: Arc<UnitKv>,
    ns: String,
}

impl KvAccess for Scoped {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.unit.get(&self.ns, key)
    }

    fn put(&self, key: &str, value: Vec<u8>) -> Result<(), String> {
        lock(&self.unit.writes).insert((self.ns.clone(), key.to_string()), Some(value));
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), String> {
        lock(&self.unit.writes).insert((self.ns.clone(), key.to_string()), None);
        Ok(())
    }

    fn scan(&self, prefix: &str, limit: usize) -> Result<Vec<(String, Vec<u8>)>, String> {
        self.unit.scan(&self.ns, prefix, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::WriteBatch;

    #[tokio::test]
    async fn unit_writes_are_visible_to_the_unit_and_reach_the_batch_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .write(WriteBatch {
                kv: vec![
                    ("p".into(), "a/1".into(), Some(b"stored".to_vec())),
                    ("p".into(), "a/2".into(), Some(b"gone".to_vec())),
                ],
                ..Default::default()
            })
            .await
            .unwrap();
        let batch = BatchKv::new(store.clone());

        let failed = UnitKv::new(batch.clone());
        let kv = failed.scoped("p");
        kv.put("a/1", b"lost".to_vec()).unwrap();
        assert_eq!(kv.get("a/1").unwrap(), Some(b"lost".to_vec()));
        drop(failed); // the unit failed: nothing reaches the batch

        let ok = UnitKv::new(batch.clone());
        let kv = ok.scoped("p");
        assert_eq!(kv.get("a/1").unwrap(), Some(b"stored".to_vec()));
        kv.put("a/3", b"new".to_vec()).unwrap();
        kv.delete("a/2").unwrap();
        ok.scoped("q").put("a/9", vec![1]).unwrap();
        let keys: Vec<_> = kv
            .scan("a/", 10)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec!["a/1", "a/3"]);
        ok.commit();

        let next = UnitKv::new(batch.clone());
        assert_eq!(next.scoped("p").get("a/3").unwrap(), Some(b"new".to_vec()));
        assert_eq!(next.scoped("p").get("a/2").unwrap(), None);
        let mut writes = batch.take();
        writes.sort();
        assert_eq!(writes.len(), 3);
        assert_eq!(writes[0], ("p".into(), "a/2".into(), None));
    }
}
