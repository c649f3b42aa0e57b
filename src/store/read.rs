//! The reader pool.
//!
//! Owns the read-only connections. WAL lets any number of readers run beside the writer, each
//! seeing the last committed state. A read takes an idle connection (or opens one), runs on the
//! calling thread, and puts it back; at most [`READ_POOL_IDLE`] are kept. The async API runs
//! reads on `smol::unblock`'s pool so the executor thread never executes SQL; the blocking API
//! (CLI, tests) runs them in place. A pool was chosen over one reader behind a `Mutex` so a slow
//! listing (the CLI, `/metrics`) never queues the engine's point lookups behind it.
//!
//! This file must not write: its connections are opened `SQLITE_OPEN_READ_ONLY`.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::Connection;

use super::error::StoreError;
use super::schema;

/// Idle reader connections kept open. Each costs a file descriptor and a page cache (up to
/// ~2 MiB by default); the agent rarely has more than two reads in flight (engine + CLI), and
/// a burst beyond this opens extra connections that are closed afterwards.
pub const READ_POOL_IDLE: usize = 2;

pub(super) struct ReadPool {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    pub(super) fn new(path: PathBuf, busy_timeout: Duration) -> Self {
        ReadPool { path, busy_timeout, idle: Mutex::new(Vec::new()) }
    }

    /// Runs `f` on a pooled read-only connection.
    pub(super) fn run<T>(&self, f: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let conn = match self.lock().pop() {
            Some(conn) => conn,
            None => schema::open_reader(&self.path, self.busy_timeout)?,
        };
        let result = f(&conn);
        // A read never leaves a transaction open; if it somehow did, drop the connection
        // rather than hand a stale snapshot to the next reader.
        if conn.is_autocommit() {
            let mut idle = self.lock();
            if idle.len() < READ_POOL_IDLE {
                idle.push(conn);
            }
        }
        result
    }

    #[cfg(test)]
    pub(super) fn idle_count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // A panic while holding the lock cannot leave the Vec inconsistent.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::temp_store;
    use super::*;
    use std::sync::{Arc, Barrier};

    #[test]
    fn pool_keeps_at_most_read_pool_idle_connections() {
        let (_dir, store) = temp_store();
        let n = READ_POOL_IDLE + 3;
        let barrier = Arc::new(Barrier::new(n));
        let threads: Vec<_> = (0..n)
            .map(|_| {
                let store = store.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    store
                        .inner
                        .readers
                        .run(|c| {
                            // Hold every connection at once so the pool must open n of them.
                            barrier.wait();
                            Ok(c.query_row("SELECT count(*) FROM kv", [], |r| r.get::<_, i64>(0))?)
                        })
                        .unwrap()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), 0);
        }
        assert_eq!(store.inner.readers.idle_count(), READ_POOL_IDLE);
    }

    #[test]
    fn readers_cannot_write() {
        let (_dir, store) = temp_store();
        let err = store.inner.readers.run(|c| Ok(c.execute("DELETE FROM kv", [])?)).unwrap_err();
        assert!(err.to_string().contains("readonly"), "{err}");
    }
}
