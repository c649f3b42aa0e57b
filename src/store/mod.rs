//! SQLite persistence for packd: executions, trigger instances, enforcements, key/value,
//! packs, sensors and reload history.
//!
//! Owns `<data_dir>/packd.db` (WAL) and `<data_dir>/packd.key`. Shape (see DESIGN.md,
//! "Concurrency" and "Storage"):
//!
//! * **One writer thread** (`writer.rs`) owns the only read-write connection. Every write is a
//!   closure queued on a bounded channel and group-committed with whatever else is queued;
//!   the caller's future resolves only after COMMIT. "Acknowledged" therefore means
//!   "committed": a webhook's 202 awaits [`Store::insert_trigger_instance`].
//! * **Readers** (`read.rs`) are a small pool of read-only connections. Async reads run on
//!   `smol::unblock`, so no SQL ever runs on the executor thread.
//! * Every public operation has an async form and a `*_blocking` form (CLI, tests; never on the
//!   executor). Both are generated from one line by `api!`, so they cannot drift apart.
//! * Time is `i64` microseconds since the Unix epoch, UTC ([`Micros`]), from an injectable
//!   [`Clock`].
//! * Secrets in `kv` are AES-256-GCM ciphertext (`crypto.rs`); the plaintext never reaches
//!   SQLite.
//!
//! Dropping the last [`Store`] handle (or calling [`Store::close`]) closes the queue, lets the
//! writer commit everything already queued, and joins it.
//!
//! This module must not know about packs, rules or processes beyond the rows it stores, and it
//! must not be called with SQL from outside: callers use the typed methods.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;
use smol::channel::{Sender, TrySendError};

mod crypto;
mod error;
mod model;
mod read;
mod schema;
mod writer;

pub use crypto::{CIPHERTEXT_PREFIX, CryptoError, KEY_FILE_NAME, MAX_KEY_FILE_BYTES};
pub use error::StoreError;
pub use model::*;
pub use read::READ_POOL_IDLE;
pub use schema::WAL_SIZE_LIMIT_BYTES;
pub use writer::{MAX_BATCH, WRITE_QUEUE_CAPACITY, WriterStats};

use crypto::SecretBox;
use read::ReadPool;
use writer::{BoxJob, Counters, Pending};

/// Name of the database file inside the data directory.
pub const DB_FILE_NAME: &str = "packd.db";

/// Largest single document (a JSON column: parameters, context, result, payload) or output
/// stream (stdout, stderr) one write may carry. The runner and the webhook endpoint cap far
/// lower; this is the backstop that keeps one write from stalling every caller batched with it
/// and from bloating the WAL on a small device.
pub const MAX_DOC_BYTES: usize = 4 * 1024 * 1024;

/// Largest ref, scope or key name. Names are index keys and appear in templates, logs and CLI
/// tables; nothing legitimate comes close.
pub const MAX_NAME_BYTES: usize = 1024;

/// Largest key/value value (plaintext). The datastore holds settings and small JSON blobs, not
/// files; every `st2kv` lookup in a template reads the whole value.
pub const MAX_KV_VALUE_BYTES: usize = 1024 * 1024;

/// Most rows one listing returns (larger limits are clamped; 0 means this). Bounds the memory
/// and time of a single read; page with `before_id`.
pub const MAX_LIST_LIMIT: usize = 1000;

/// Rows deleted per write transaction by retention and TTL purges. Small batches keep each
/// transaction short, so ingest and results interleave with a large purge instead of waiting
/// behind it.
pub const PURGE_BATCH: usize = 500;

/// Tail of a sensor's stderr kept in `sensors.last_stderr`: enough for a traceback's last
/// lines, the part that says why it died.
pub const MAX_SENSOR_STDERR_BYTES: usize = 4096;

/// Durability of a commit (SQLite `PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// WAL + NORMAL: a commit survives a crash of packd; a power cut may lose the last few
    /// transactions, never corrupt the file.
    #[default]
    Normal,
    /// Every commit is fsynced: survives power loss. Group commit keeps the cost per batch.
    Full,
}

impl Synchronous {
    fn as_pragma(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// The source of "now" for timestamps and TTLs. Injectable so expiry is tested without sleeps.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Micros;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Micros {
        match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
            // A clock before 1970 is broken; 0 keeps ordering sane until it is fixed.
            Err(_) => 0,
        }
    }
}

/// Options for [`Store::open`].
#[derive(Clone)]
pub struct StoreOptions {
    pub synchronous: Synchronous,
    /// How long a connection waits for a lock held by another process before failing.
    pub busy_timeout: Duration,
    pub clock: Arc<dyn Clock>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            synchronous: Synchronous::Normal,
            busy_timeout: Duration::from_secs(5),
            clock: Arc::new(SystemClock),
        }
    }
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("synchronous", &self.synchronous)
            .field("busy_timeout", &self.busy_timeout)
            .finish_non_exhaustive()
    }
}

/// What an operation needs besides its arguments: the time and the secret key.
pub(crate) struct Env {
    clock: Arc<dyn Clock>,
    secrets: Arc<SecretBox>,
}

impl Env {
    fn now(&self) -> Micros {
        self.clock.now()
    }
}

/// A closure run on a connection: by the writer inside a batch transaction, or by a reader.
pub(crate) trait Work<T>: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static {}
impl<T, F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static> Work<T> for F {}

/// A handle to the store; cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    queue: Sender<BoxJob>,
    writer: Mutex<Option<JoinHandle<()>>>,
    readers: ReadPool,
    env: Env,
    counters: Arc<Counters>,
    db_path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("db_path", &self.inner.db_path).finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Inner {
    fn shutdown(&self) {
        // Closing lets the writer drain what is queued, then its recv fails and it returns.
        self.queue.close();
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        // Never join ourselves (a last handle dropped by a job on the writer thread).
        if let Some(handle) = handle
            && handle.thread().id() != std::thread::current().id()
        {
            let _ = handle.join();
        }
    }
}

impl Store {
    /// Opens (creating if needed) `<data_dir>/packd.db` and the key file, runs migrations, and
    /// starts the writer thread.
    pub fn open(data_dir: &Path, opts: StoreOptions) -> Result<Store, StoreError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let io = |action, path: &Path| {
            let path = path.to_owned();
            move |source| StoreError::Io { action, path, source }
        };
        // 0700: the database holds execution output and parameters; only the agent reads it.
        // An existing directory keeps its mode (systemd's StateDirectoryMode decides there).
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(io("create directory", data_dir))?;
        let secrets = Arc::new(SecretBox::load_or_create(data_dir)?);

        let db_path = data_dir.join(DB_FILE_NAME);
        // Create the file 0600 ourselves: SQLite gives -wal and -shm the database's mode.
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&db_path)
            .map_err(io("create", &db_path))?;
        let mut conn = schema::open_writer(&db_path, opts.synchronous, opts.busy_timeout)?;
        schema::migrate(&mut conn, &db_path)?;

        let (queue, rx) = smol::channel::bounded(WRITE_QUEUE_CAPACITY);
        let counters = Arc::new(Counters::default());
        let thread_counters = counters.clone();
        let handle = std::thread::Builder::new()
            .name("packd-store".into())
            .spawn(move || writer::run(conn, rx, thread_counters))
            .map_err(io("start the writer thread for", &db_path))?;
        Ok(Store {
            inner: Arc::new(Inner {
                queue,
                writer: Mutex::new(Some(handle)),
                readers: ReadPool::new(db_path.clone(), opts.busy_timeout),
                env: Env { clock: opts.clock, secrets },
                counters,
                db_path,
            }),
        })
    }

    /// Stops accepting writes, commits everything already queued and joins the writer.
    /// Idempotent; reads keep working. Blocks: call it at shutdown, off the executor.
    pub fn close(&self) {
        self.inner.shutdown();
    }

    /// Whether the writer stopped taking writes (after `close`, or if its thread ended).
    pub fn is_closed(&self) -> bool {
        self.inner.queue.is_closed()
    }

    /// Path of the database file.
    pub fn db_path(&self) -> &Path {
        &self.inner.db_path
    }

    /// Writer counters (commits, jobs, batch sizes).
    pub fn stats(&self) -> WriterStats {
        self.inner.counters.snapshot()
    }

    /// The store's notion of now.
    pub fn now(&self) -> Micros {
        self.inner.env.now()
    }

    /// Decrypt a secret value as stored (`v1:…`), for `decrypt_kv` in templates. No I/O.
    pub fn decrypt(&self, stored: &str) -> Result<String, StoreError> {
        self.inner.env.secrets.decrypt(stored).map_err(StoreError::from)
    }

    async fn write<T: Send + 'static>(&self, work: impl Work<T>) -> Result<T, StoreError> {
        let (tx, rx) = smol::channel::bounded(1);
        let job: BoxJob = Pending::new(work, tx);
        self.inner.queue.send(job).await.map_err(|_| StoreError::Closed)?;
        rx.recv().await.map_err(|_| StoreError::Closed)?
    }

    /// Like `write`, but a full queue is [`StoreError::Busy`] instead of a wait.
    async fn try_write<T: Send + 'static>(&self, work: impl Work<T>) -> Result<T, StoreError> {
        let (tx, rx) = smol::channel::bounded(1);
        let job: BoxJob = Pending::new(work, tx);
        match self.inner.queue.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(StoreError::Busy { capacity: WRITE_QUEUE_CAPACITY });
            }
            Err(TrySendError::Closed(_)) => return Err(StoreError::Closed),
        }
        rx.recv().await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T: Send + 'static>(&self, work: impl Work<T>) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        smol::unblock(move || inner.readers.run(work)).await
    }
}

/// The blocking counterparts of `Store::write`/`Store::read`, named alike so `api!` can pick
/// either by the same identifier.
struct Blocking<'a>(&'a Store);

impl Blocking<'_> {
    fn write<T: Send + 'static>(&self, work: impl Work<T>) -> Result<T, StoreError> {
        let (tx, rx) = smol::channel::bounded(1);
        let job: BoxJob = Pending::new(work, tx);
        self.0.inner.queue.send_blocking(job).map_err(|_| StoreError::Closed)?;
        rx.recv_blocking().map_err(|_| StoreError::Closed)?
    }

    fn read<T: Send + 'static>(&self, work: impl Work<T>) -> Result<T, StoreError> {
        self.0.inner.readers.run(work)
    }
}

/// Declares public operations. Each line
/// `write name / name_blocking (args) -> T = prepare_fn;` generates an async method and its
/// blocking twin; `prepare_fn(&Env, args)` validates the arguments on the caller's thread and
/// returns the closure that the writer (`write`) or a reader (`read`) runs.
macro_rules! api {
    ($(
        $(#[doc = $doc:literal])*
        $kind:ident $name:ident / $blocking:ident ($($arg:ident : $ty:ty),* $(,)?) -> $ret:ty
            = $prep:path;
    )*) => {
        impl super::Store {$(
            $(#[doc = $doc])*
            pub async fn $name(&self, $($arg: $ty),*) -> Result<$ret, super::StoreError> {
                let work = $prep(&self.inner.env, $($arg),*)?;
                self.$kind(work).await
            }

            #[doc = concat!("Blocking form of [`Store::", stringify!($name),
                "`](super::Store::", stringify!($name), ") for the CLI and tests; never call it \
                on the executor thread.")]
            pub fn $blocking(&self, $($arg: $ty),*) -> Result<$ret, super::StoreError> {
                let work = $prep(&self.inner.env, $($arg),*)?;
                super::Blocking(self).$kind(work)
            }
        )*}
    };
}

mod executions;
mod kv;
mod overrides;
mod packs;
mod retention;
mod sql;
mod triggers;

#[cfg(test)]
mod testutil {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};

    /// A clock tests move by hand.
    #[derive(Debug)]
    pub struct TestClock(pub AtomicI64);

    impl TestClock {
        pub fn advance(&self, by: Duration) {
            self.0.fetch_add(by.as_micros() as i64, Ordering::SeqCst);
        }
    }

    impl Clock for TestClock {
        fn now(&self) -> Micros {
            self.0.load(Ordering::SeqCst)
        }
    }

    pub fn temp_store() -> (tempfile::TempDir, Store) {
        let (dir, store, _) = temp_store_with_clock();
        (dir, store)
    }

    pub fn temp_store_with_clock() -> (tempfile::TempDir, Store, Arc<TestClock>) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(TestClock(AtomicI64::new(1_800_000_000_000_000)));
        let store =
            Store::open(&dir.path().join("var"), StoreOptions { clock: clock.clone(), ..StoreOptions::default() })
                .unwrap();
        (dir, store, clock)
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::temp_store;
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn open_creates_private_files_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("state/var");
        let store = Store::open(&data, StoreOptions::default()).unwrap();
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join(DB_FILE_NAME)), 0o600);
        assert_eq!(mode(&data.join(KEY_FILE_NAME)), 0o600);
        let id = store
            .insert_trigger_instance_blocking(NewTriggerInstance {
                trigger_ref: "core.st2.IntervalTimer".into(),
                payload: serde_json::json!({}),
                source: TiSource::Timer,
                occurred_at: None,
                target: None,
            })
            .unwrap();
        drop(store);
        // Second open: migrations are a no-op, data and key survive.
        let store =
            Store::open(&data, StoreOptions { synchronous: Synchronous::Full, ..StoreOptions::default() }).unwrap();
        assert!(store.get_trigger_instance_blocking(id).unwrap().is_some());
        let sync: i64 =
            Blocking(&store).write(|c| Ok(c.pragma_query_value(None, "synchronous", |r| r.get(0))?)).unwrap();
        assert_eq!(sync, 2, "FULL");
        let version: i64 =
            Blocking(&store).read(|c| Ok(c.pragma_query_value(None, "user_version", |r| r.get(0))?)).unwrap();
        assert_eq!(version, schema::current_version());
    }

    #[test]
    fn pragmas_are_as_documented() {
        let (_dir, store) = temp_store();
        let (mode, sync, limit, fk): (String, i64, i64, i64) = Blocking(&store)
            .write(|c| {
                Ok((
                    c.pragma_query_value(None, "journal_mode", |r| r.get(0))?,
                    c.pragma_query_value(None, "synchronous", |r| r.get(0))?,
                    c.pragma_query_value(None, "journal_size_limit", |r| r.get(0))?,
                    c.pragma_query_value(None, "foreign_keys", |r| r.get(0))?,
                ))
            })
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(sync, 1, "NORMAL");
        assert_eq!(limit, WAL_SIZE_LIMIT_BYTES);
        assert_eq!(fk, 1);
    }

    #[test]
    fn newer_database_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        Blocking(&store).write(|c| Ok(c.pragma_update(None, "user_version", 99)?)).unwrap();
        drop(store);
        let err = Store::open(dir.path(), StoreOptions::default()).unwrap_err();
        assert!(err.to_string().contains("schema version 99"), "{err}");
    }

    #[test]
    fn store_is_send_sync_clone() {
        fn assert_traits<T: Send + Sync + Clone + 'static>() {}
        assert_traits::<Store>();
    }
}
