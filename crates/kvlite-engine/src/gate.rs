//! Per-database turns: work on one database (compaction passes, a
//! migration) runs one at a time in this process, while different databases
//! proceed in parallel. The table holds an entry only while someone runs or
//! waits, so it never grows with the number of databases ever seen.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::cache::lock;

#[derive(Default)]
pub(crate) struct Gates {
    map: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl Gates {
    /// Run `f` when it is this caller's turn on `db`.
    pub fn run<T>(&self, db: &str, f: impl FnOnce() -> T) -> T {
        let gate = Arc::clone(lock(&self.map).entry(db.to_string()).or_default());
        let result = {
            let _turn = lock(&gate);
            f()
        };
        // Clones are made and dropped only under the map's lock, so the
        // count is exact: ours and the map's means nobody else waits.
        let mut map = lock(&self.map);
        if Arc::strong_count(&gate) == 2 {
            map.remove(db);
        }
        drop(gate);
        drop(map);
        result
    }

    /// Callers running or waiting on `db`.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn queued(&self, db: &str) -> usize {
        // The map holds one reference; each caller running or waiting, one more.
        lock(&self.map)
            .get(db)
            .map_or(0, |g| Arc::strong_count(g) - 1)
    }

    /// Databases with an entry.
    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_live_only_while_someone_runs_or_waits() {
        let gates = Arc::new(Gates::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let g = gates.clone();
        let t = std::thread::spawn(move || {
            g.run("a", || {
                tx.send(()).unwrap();
                go_rx.recv().unwrap();
            })
        });
        rx.recv().unwrap();
        assert_eq!(gates.queued("a"), 1);
        assert_eq!(gates.len(), 1);
        go_tx.send(()).unwrap();
        t.join().unwrap();
        assert_eq!(gates.len(), 0);
        assert_eq!(gates.run("b", || 7), 7);
        assert_eq!(gates.len(), 0);
    }
}
