//! Group commit: many submitters, one transaction and one sync per batch.
//!
//! Submitters (tokio tasks, or threads through
//! [`GroupCommit::submit_blocking`]) hand jobs to a bounded queue. One
//! committer thread owns the store. It takes the first waiting job, then
//! whatever else is already queued (up to [`GroupCommitConfig::max_batch`]),
//! runs each job in its own savepoint inside one write transaction, commits
//! (one WAL sync for the batch) and only then answers each job. While a batch
//! syncs, the next one queues up, so batches grow with load without any
//! timer.
//!
//! Contract:
//! - A job's answer `Ok` means its writes are durable. No answer leaves
//!   before the commit that made it so.
//! - A job that returns `Err` or panics has all its own writes rolled back
//!   (savepoint); the other jobs of its batch are unaffected.
//! - [`SubmitError::CommitFailed`] and [`SubmitError::Lost`] mean the outcome
//!   is unknown: resubmit with the same transfer ids, which returns the stored
//!   result if the first attempt did commit.
//! - A job is accepted once it is queued: dropping the submitting future
//!   after that does not cancel it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::error::StoreError;
use crate::store::sealed::{Backend, Token};
use crate::store::{LedgerStore, LedgerTx};

/// Observer called after every batch (see [`GroupCommitConfig::on_batch`]).
pub type BatchHook = Arc<dyn Fn(&BatchReport) + Send + Sync>;

/// Sizes of the committer's queue and batches.
#[derive(Clone)]
pub struct GroupCommitConfig {
    /// Jobs that may wait for the committer. When it is full, submitters
    /// wait: memory stays bounded and so does the time a queued job waits
    /// (at most about `queue_capacity / throughput`), so overload shows up as
    /// back-pressure the host can time out on instead of an ever longer queue.
    pub queue_capacity: usize,
    /// Most jobs in one transaction. Bounds how long the write lock is held,
    /// how large one commit's WAL append is, and how long the first job of a
    /// batch waits for the last one to run.
    pub max_batch: usize,
    /// Called after every batch, before its jobs are answered, on the
    /// committer thread. Keep it cheap (it delays the answers and the next
    /// batch) and never let it panic (that stops the committer).
    pub on_batch: Option<BatchHook>,
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        GroupCommitConfig {
            queue_capacity: 4_096,
            max_batch: 512,
            on_batch: None,
        }
    }
}

impl std::fmt::Debug for GroupCommitConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommitConfig")
            .field("queue_capacity", &self.queue_capacity)
            .field("max_batch", &self.max_batch)
            .field("on_batch", &self.on_batch.is_some())
            .finish()
    }
}

/// What happened to one batch (passed to [`GroupCommitConfig::on_batch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchReport {
    /// Jobs in the batch.
    pub size: usize,
    /// Jobs that failed on their own (rolled back to their savepoint).
    pub failed_jobs: usize,
    /// Whether the transaction committed.
    pub committed: bool,
    /// Jobs left waiting in the queue when the batch finished.
    pub queue_depth: usize,
    /// Time from beginning the transaction to the end of its commit.
    pub duration: Duration,
}

/// A snapshot of the committer's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Jobs waiting in the queue now.
    pub queue_depth: usize,
    /// Capacity of the queue.
    pub queue_capacity: usize,
    /// Batches committed.
    pub batches_committed: u64,
    /// Batches that failed to begin or commit.
    pub batches_failed: u64,
    /// Jobs whose writes were committed.
    pub jobs_committed: u64,
    /// Jobs that failed on their own.
    pub jobs_failed: u64,
    /// Size of the latest batch.
    pub last_batch_size: u64,
    /// Largest batch so far.
    pub max_batch_size: u64,
}

#[derive(Debug, Default)]
struct Counters {
    batches_committed: AtomicU64,
    batches_failed: AtomicU64,
    jobs_committed: AtomicU64,
    jobs_failed: AtomicU64,
    last_batch_size: AtomicU64,
    max_batch_size: AtomicU64,
}

/// Why a submitted job did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError<E> {
    /// The job returned an error; its writes were rolled back. (Shown, not
    /// chained as a source, so any displayable error type works, `String`
    /// and `Box<dyn Error>` included.)
    #[error("job failed: {0}")]
    Job(E),
    /// The job panicked; its writes were rolled back.
    #[error("job panicked; its writes were rolled back")]
    Panicked,
    /// The job's writes were abandoned by a storage failure (of the batch
    /// before it committed, or of one of the job's own ledger writes that it
    /// did not return): nothing of the job was written.
    #[error("aborted, nothing written: {0}")]
    Aborted(#[source] Arc<StoreError>),
    /// The commit itself failed: the job's writes may or may not be durable.
    /// Resubmit with the same ids to find out.
    #[error("commit failed, outcome unknown: {0}")]
    CommitFailed(#[source] Arc<StoreError>),
    /// The committer is shut down; the job was not accepted.
    #[error("group commit is shut down")]
    Closed,
    /// The committer stopped after accepting the job without answering:
    /// outcome unknown.
    #[error("committer stopped before answering, outcome unknown")]
    Lost,
}

/// How a batch ended, as seen by each job in it.
#[derive(Clone, Debug)]
enum BatchEnd {
    Committed,
    Aborted(Arc<StoreError>),
    CommitFailed(Arc<StoreError>),
}

/// A job with its types erased, so one queue carries jobs of any result type.
trait ErasedJob<S: LedgerStore>: Send {
    /// Runs the job in the open transaction; whether it succeeded.
    fn run(&mut self, tx: &mut S::Tx<'_>) -> bool;
    /// Answers the submitter once the batch has ended.
    fn finish(self: Box<Self>, end: &BatchEnd);
}

type Reply<R, E> = oneshot::Sender<Result<R, SubmitError<E>>>;

struct TypedJob<F, R, E> {
    job: Option<F>,
    result: Option<Result<R, SubmitError<E>>>,
    reply: Reply<R, E>,
}

impl<S, F, R, E> ErasedJob<S> for TypedJob<F, R, E>
where
    S: LedgerStore,
    F: FnOnce(&mut S::Tx<'_>) -> Result<R, E> + Send,
    R: Send,
    E: Send,
{
    fn run(&mut self, tx: &mut S::Tx<'_>) -> bool {
        let Some(job) = self.job.take() else {
            return false;
        };
        let result = match catch_unwind(AssertUnwindSafe(|| job(&mut *tx))) {
            // The job ignored a failed ledger write: its savepoint is rolled
            // back like that of any failed job.
            Ok(Ok(_)) if tx.poisoned(Token::new()) => {
                Err(SubmitError::Aborted(Arc::new(StoreError::Poisoned)))
            }
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(SubmitError::Job(e)),
            Err(_) => Err(SubmitError::Panicked),
        };
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, end: &BatchEnd) {
        let answer = match (self.result, end) {
            // A failed job rolled back its own writes whatever the batch did.
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(r)), BatchEnd::Committed) => Ok(r),
            (_, BatchEnd::CommitFailed(e)) => Err(SubmitError::CommitFailed(e.clone())),
            (_, BatchEnd::Aborted(e)) => Err(SubmitError::Aborted(e.clone())),
            (None, BatchEnd::Committed) => {
                unreachable!("every job of a committed batch has run")
            }
        };
        // The submitter may have given up waiting; the outcome stands anyway.
        let _ = self.reply.send(answer);
    }
}

enum Message<S: LedgerStore> {
    Job(Box<dyn ErasedJob<S>>),
    Shutdown(oneshot::Sender<S>),
}

/// Handle to a group committer; clone it freely. The committer thread stops
/// when [`GroupCommit::shutdown`] is called or every handle is dropped, in
/// both cases after draining the queue.
pub struct GroupCommit<S: LedgerStore> {
    queue: mpsc::Sender<Message<S>>,
    counters: Arc<Counters>,
    thread: Arc<Mutex<Option<thread::JoinHandle<()>>>>,
}

impl<S: LedgerStore> Clone for GroupCommit<S> {
    fn clone(&self) -> Self {
        GroupCommit {
            queue: self.queue.clone(),
            counters: self.counters.clone(),
            thread: self.thread.clone(),
        }
    }
}

impl<S: LedgerStore> std::fmt::Debug for GroupCommit<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("metrics", &self.metrics())
            .finish()
    }
}

impl<S: LedgerStore> GroupCommit<S> {
    /// Starts the committer thread, which takes ownership of `store`.
    ///
    /// # Panics
    /// If `queue_capacity` or `max_batch` is zero, or the thread cannot be
    /// spawned.
    pub fn start(store: S, config: GroupCommitConfig) -> Self {
        assert!(config.queue_capacity > 0, "queue_capacity must be positive");
        assert!(config.max_batch > 0, "max_batch must be positive");
        let (queue, rx) = mpsc::channel(config.queue_capacity);
        let counters = Arc::new(Counters::default());
        let committer = Committer {
            store,
            rx,
            config,
            counters: counters.clone(),
        };
        let thread = thread::Builder::new()
            .name("ledger-commit".into())
            .spawn(move || committer.run())
            .expect("spawn the ledger committer thread");
        GroupCommit {
            queue,
            counters,
            thread: Arc::new(Mutex::new(Some(thread))),
        }
    }

    fn job<F, R, E>(job: F) -> (Message<S>, oneshot::Receiver<Result<R, SubmitError<E>>>)
    where
        F: FnOnce(&mut S::Tx<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = TypedJob {
            job: Some(job),
            result: None,
            reply,
        };
        (Message::Job(Box::new(job)), answer)
    }

    /// Queues `job` and waits until its batch has committed.
    ///
    /// The job runs on the committer thread inside the batch transaction; it
    /// may create accounts and transfers through [`LedgerTx`] and, on a store
    /// that offers it (see [`crate::SqliteTx::sql`]), write the caller's own
    /// rows. Keep jobs short: the whole batch waits for each.
    pub async fn submit<F, R, E>(&self, job: F) -> Result<R, SubmitError<E>>
    where
        F: FnOnce(&mut S::Tx<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: Send + 'static,
    {
        let (message, answer) = Self::job(job);
        self.queue
            .send(message)
            .await
            .map_err(|_| SubmitError::Closed)?;
        answer.await.unwrap_or(Err(SubmitError::Lost))
    }

    /// [`GroupCommit::submit`] for synchronous callers (command-line tools,
    /// threads outside an async runtime).
    ///
    /// # Panics
    /// If called from within an async runtime.
    pub fn submit_blocking<F, R, E>(&self, job: F) -> Result<R, SubmitError<E>>
    where
        F: FnOnce(&mut S::Tx<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: Send + 'static,
    {
        let (message, answer) = Self::job(job);
        self.queue
            .blocking_send(message)
            .map_err(|_| SubmitError::Closed)?;
        answer.blocking_recv().unwrap_or(Err(SubmitError::Lost))
    }

    /// Jobs waiting in the queue now.
    pub fn queue_depth(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> Metrics {
        let c = &self.counters;
        Metrics {
            queue_depth: self.queue_depth(),
            queue_capacity: self.queue.max_capacity(),
            batches_committed: c.batches_committed.load(Ordering::Relaxed),
            batches_failed: c.batches_failed.load(Ordering::Relaxed),
            jobs_committed: c.jobs_committed.load(Ordering::Relaxed),
            jobs_failed: c.jobs_failed.load(Ordering::Relaxed),
            last_batch_size: c.last_batch_size.load(Ordering::Relaxed),
            max_batch_size: c.max_batch_size.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting jobs, lets the committer finish every job already
    /// queued, and returns the store once the committer has stopped.
    ///
    /// Returns `None` if the committer had already stopped (another handle
    /// shut it down first, or it died).
    pub async fn shutdown(&self) -> Option<S> {
        let (reply, store) = oneshot::channel();
        self.queue.send(Message::Shutdown(reply)).await.ok()?;
        let store = store.await.ok()?;
        self.join();
        Some(store)
    }

    fn join(&self) {
        let handle = self
            .thread
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(handle) = handle {
            // The committer sent the store as its last act; joining only
            // reaps the thread. A panic there already failed its jobs.
            let _ = handle.join();
        }
    }
}

struct Committer<S: LedgerStore> {
    store: S,
    rx: mpsc::Receiver<Message<S>>,
    config: GroupCommitConfig,
    counters: Arc<Counters>,
}

impl<S: LedgerStore> Committer<S> {
    fn run(mut self) {
        let mut batch: Vec<Box<dyn ErasedJob<S>>> = Vec::with_capacity(self.config.max_batch);
        let mut shutdown: Option<oneshot::Sender<S>> = None;
        // Ends when the queue is closed (shutdown, or every handle dropped)
        // and drained. Each turn takes at most `max_batch` jobs.
        while let Some(first) = self.rx.blocking_recv() {
            let mut next = Some(first);
            while let Some(message) = next.take() {
                match message {
                    Message::Job(job) => batch.push(job),
                    Message::Shutdown(reply) => {
                        // Refuse new jobs; those already queued still run.
                        self.rx.close();
                        shutdown.get_or_insert(reply);
                    }
                }
                if batch.len() < self.config.max_batch {
                    next = self.rx.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.run_batch(&mut batch);
            }
        }
        if let Some(reply) = shutdown {
            let _ = reply.send(self.store);
        }
    }

    fn run_batch(&mut self, batch: &mut Vec<Box<dyn ErasedJob<S>>>) {
        let started = Instant::now();
        let mut failed_jobs = 0;
        let end = match self.execute(batch, &mut failed_jobs) {
            Ok(()) => BatchEnd::Committed,
            Err(end) => end,
        };
        let committed = matches!(end, BatchEnd::Committed);
        let size = batch.len();

        // Recorded before any answer leaves, so a submitter that has its
        // answer also sees its batch in the metrics.
        let c = &self.counters;
        if committed {
            c.batches_committed.fetch_add(1, Ordering::Relaxed);
            c.jobs_committed
                .fetch_add((size - failed_jobs) as u64, Ordering::Relaxed);
        } else {
            c.batches_failed.fetch_add(1, Ordering::Relaxed);
        }
        c.jobs_failed
            .fetch_add(failed_jobs as u64, Ordering::Relaxed);
        c.last_batch_size.store(size as u64, Ordering::Relaxed);
        c.max_batch_size.fetch_max(size as u64, Ordering::Relaxed);
        if let Some(hook) = &self.config.on_batch {
            hook(&BatchReport {
                size,
                failed_jobs,
                committed,
                queue_depth: self.rx.len(),
                duration: started.elapsed(),
            });
        }
        for job in batch.drain(..) {
            job.finish(&end);
        }
    }

    /// Runs every job of the batch in one transaction and commits it.
    fn execute(
        &mut self,
        batch: &mut [Box<dyn ErasedJob<S>>],
        failed_jobs: &mut usize,
    ) -> Result<(), BatchEnd> {
        let aborted = |e: StoreError| BatchEnd::Aborted(Arc::new(e));
        let mut tx = self.store.transaction().map_err(aborted)?;
        for job in batch.iter_mut() {
            tx.begin_job(Token::new()).map_err(aborted)?;
            let ok = job.run(&mut tx);
            if !ok {
                *failed_jobs += 1;
            }
            // If this fails the transaction is unusable (SQLite may already
            // have rolled it back): abort the batch, none of it is written.
            tx.end_job(Token::new(), ok).map_err(aborted)?;
        }
        tx.commit().map_err(|e| BatchEnd::CommitFailed(Arc::new(e)))
    }
}
