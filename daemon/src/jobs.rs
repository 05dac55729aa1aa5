//! Background jobs: a bounded queue, worker threads running engine calls,
//! progress through a `watch` channel per job, and job records persisted in
//! the cache so a restarted daemon knows what a killed one was doing.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aevis_cache::{Cache, Kind, Record, key_of};
use aevis_shared::protocol::{
    CandidateList, CandidatesRequest, CreateSession, JobState, JobStatus, Progress, SessionResult, SessionSummary,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::compute::Compute;
use crate::error::{ApiError, ComputeError};
use crate::records::{LearnedRecord, SessionRecord};

/// A job that was running this many times when a daemon died is not retried.
pub const MAX_ATTEMPTS: u32 = 2;

/// What a job computes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JobSpec {
    /// The datapaths of a session.
    Session {
        /// Session id.
        session: String,
        /// The request.
        request: CreateSession,
    },
    /// A candidate list.
    Candidates {
        /// Model id.
        model: String,
        /// Cache key of the list.
        key: String,
        /// Cache key of the model's latest list.
        latest: String,
        /// The request.
        request: CandidatesRequest,
    },
    /// Learned features of a model.
    LearnedFeatures {
        /// Model id.
        model: String,
        /// Cache key.
        key: String,
    },
}

impl JobSpec {
    /// The `kind` field of [`JobStatus`].
    pub fn kind(&self) -> &'static str {
        match self {
            JobSpec::Session { .. } => "session",
            JobSpec::Candidates { .. } => "candidates",
            JobSpec::LearnedFeatures { .. } => "learned-features",
        }
    }
    fn session(&self) -> Option<String> {
        match self {
            JobSpec::Session { session, .. } => Some(session.clone()),
            _ => None,
        }
    }
}

/// A job as stored in the cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Status (progress as of the last state change).
    pub status: JobStatus,
    /// What it computes.
    pub spec: JobSpec,
    /// Dedup key: an identical pending request gets this job.
    pub key: String,
    /// How many times a worker started it.
    pub attempts: u32,
    /// Submission order.
    pub seq: u64,
}

impl Record for JobRecord {
    const KIND: Kind = Kind::Job;
    const VERSION: u32 = 1;
}

/// Counters, for tests and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Jobs put in the queue by requests.
    pub jobs_queued: u64,
    /// Jobs of a previous daemon put back in the queue at start.
    pub jobs_requeued: u64,
    /// Jobs of a previous daemon marked failed at start.
    pub jobs_failed_at_start: u64,
    /// Jobs that a worker started computing.
    pub jobs_started: u64,
    /// Jobs that finished with a stored result.
    pub jobs_done: u64,
    /// Requests answered from the cache (session, attack, contribution, candidates, learned features).
    pub cache_hits: u64,
}

#[derive(Debug, Default)]
pub(crate) struct AtomicCounters {
    jobs_queued: AtomicU64,
    jobs_requeued: AtomicU64,
    jobs_failed_at_start: AtomicU64,
    jobs_started: AtomicU64,
    jobs_done: AtomicU64,
    pub(crate) cache_hits: AtomicU64,
}

impl AtomicCounters {
    pub(crate) fn snapshot(&self) -> Counters {
        Counters {
            jobs_queued: self.jobs_queued.load(Ordering::Relaxed),
            jobs_requeued: self.jobs_requeued.load(Ordering::Relaxed),
            jobs_failed_at_start: self.jobs_failed_at_start.load(Ordering::Relaxed),
            jobs_started: self.jobs_started.load(Ordering::Relaxed),
            jobs_done: self.jobs_done.load(Ordering::Relaxed),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
        }
    }
    pub(crate) fn hit(&self) {
        self.cache_hits.fetch_add(1, Ordering::Relaxed);
    }
}

/// A job of this daemon run.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) id: String,
    record: Mutex<JobRecord>,
    tx: watch::Sender<JobStatus>,
    cancel: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Job {
    fn new(record: JobRecord) -> Self {
        let (tx, _) = watch::channel(record.status.clone());
        Self { id: record.status.id.clone(), record: Mutex::new(record), tx, cancel: AtomicBool::new(false) }
    }
    pub(crate) fn status(&self) -> JobStatus {
        self.tx.borrow().clone()
    }
    pub(crate) fn subscribe(&self) -> watch::Receiver<JobStatus> {
        self.tx.subscribe()
    }
    fn cancel_requested(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
    fn spec(&self) -> JobSpec {
        lock(&self.record).spec.clone()
    }
    fn key(&self) -> String {
        lock(&self.record).key.clone()
    }
    fn progress(&self, p: Progress) {
        self.tx.send_modify(|s| s.progress = p);
    }
    /// Sets the state, publishes it and persists the record (flushed).
    fn set_state(&self, cache: &Cache, state: JobState, error: Option<String>, attempts_delta: i32) {
        let mut r = lock(&self.record);
        self.update(cache, &mut r, state, error, attempts_delta);
    }

    /// [`Job::set_state`] with the record lock already held.
    fn update(&self, cache: &Cache, r: &mut JobRecord, state: JobState, error: Option<String>, attempts_delta: i32) {
        r.status.progress = self.tx.borrow().progress.clone();
        r.status.state = state;
        r.status.error = error;
        r.attempts = r.attempts.saturating_add_signed(attempts_delta);
        if state == JobState::Done {
            r.status.progress.fraction = 1.0;
        }
        if let Err(e) = cache.put_flushed(&self.id, &*r) {
            tracing::error!(job = %self.id, error = %e, "could not persist the job state");
        }
        self.tx.send_replace(r.status.clone());
    }

    /// Moves a queued job to running; false when it was cancelled or is final.
    fn try_start(&self, cache: &Cache) -> bool {
        let mut r = lock(&self.record);
        if r.status.state.is_final() {
            return false;
        }
        if self.cancel_requested() {
            self.update(cache, &mut r, JobState::Cancelled, None, 0);
            return false;
        }
        self.update(cache, &mut r, JobState::Running, None, 1);
        true
    }
}

/// What a job id refers to.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// A job of this run.
    Live(Arc<Job>),
    /// A finished job of an earlier run.
    Stored(JobStatus),
}

/// The job side of the daemon: queue, workers' shared state, live jobs.
pub(crate) struct Core<E: Compute> {
    pub(crate) engine: Arc<E>,
    pub(crate) cache: Arc<Cache>,
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    pending: Mutex<HashMap<String, String>>,
    queue: SyncSender<Arc<Job>>,
    receiver: Mutex<Receiver<Arc<Job>>>,
    stopping: AtomicBool,
    pub(crate) counters: AtomicCounters,
    seq: AtomicU64,
}

impl<E: Compute> std::fmt::Debug for Core<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").field("cache", &self.cache.path()).finish_non_exhaustive()
    }
}

fn now_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// Milliseconds since the epoch.
pub(crate) fn now_millis() -> u64 {
    (now_nanos() / 1_000_000) as u64
}

impl<E: Compute> Core<E> {
    pub(crate) fn new(engine: Arc<E>, cache: Arc<Cache>, capacity: usize) -> Self {
        let (queue, receiver) = mpsc::sync_channel(capacity);
        Self {
            engine,
            cache,
            jobs: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            queue,
            receiver: Mutex::new(receiver),
            stopping: AtomicBool::new(false),
            counters: AtomicCounters::default(),
            seq: AtomicU64::new(0),
        }
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    fn new_id(&self, key: &str, seq: u64) -> String {
        let id = key_of(&[b"job", key.as_bytes(), &seq.to_le_bytes(), &now_nanos().to_le_bytes()]);
        id[..32].to_string()
    }

    /// Queues a job for `key`, or returns the pending one with that key.
    pub(crate) fn submit(&self, key: String, spec: JobSpec) -> Result<JobStatus, ApiError> {
        if self.stopping() {
            return Err(ApiError::busy("the daemon is shutting down; try again after it restarts"));
        }
        let mut pending = lock(&self.pending);
        if let Some(id) = pending.get(&key)
            && let Some(job) = lock(&self.jobs).get(id)
        {
            let status = job.status();
            if !status.state.is_final() {
                return Ok(status);
            }
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let id = self.new_id(&key, seq);
        let record = JobRecord {
            status: JobStatus {
                id: id.clone(),
                kind: spec.kind().to_string(),
                session: spec.session(),
                state: JobState::Queued,
                progress: Progress::default(),
                error: None,
            },
            spec,
            key: key.clone(),
            attempts: 0,
            seq,
        };
        // Persist before queueing, so a crash right after still knows the job.
        self.cache.put_flushed(&id, &record)?;
        let status = record.status.clone();
        let job = Arc::new(Job::new(record));
        lock(&self.jobs).insert(id.clone(), job.clone());
        match self.queue.try_send(job) {
            Ok(()) => {}
            Err(e) => {
                lock(&self.jobs).remove(&id);
                if let Err(err) = self.cache.remove::<JobRecord>(&id) {
                    tracing::warn!(job = %id, error = %err, "could not remove a job that was not queued");
                }
                return Err(match e {
                    TrySendError::Full(_) => ApiError::busy("the job queue is full; try again when a job has finished"),
                    TrySendError::Disconnected(_) => ApiError::busy("the daemon is shutting down"),
                });
            }
        }
        pending.insert(key, id.clone());
        self.counters.jobs_queued.fetch_add(1, Ordering::Relaxed);
        tracing::info!(job = %id, kind = status.kind, "job queued");
        Ok(status)
    }

    /// Records a job that is already done (its result was cached) so the
    /// client gets a job id to poll like any other.
    pub(crate) fn done_job(&self, key: String, spec: JobSpec) -> Result<JobStatus, ApiError> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let id = self.new_id(&key, seq);
        let record = JobRecord {
            status: JobStatus {
                id: id.clone(),
                kind: spec.kind().to_string(),
                session: spec.session(),
                state: JobState::Done,
                progress: Progress { stage: "cached".into(), fraction: 1.0, ..Progress::default() },
                error: None,
            },
            spec,
            key,
            attempts: 0,
            seq,
        };
        self.cache.put_flushed(&id, &record)?;
        let status = record.status.clone();
        lock(&self.jobs).insert(id, Arc::new(Job::new(record)));
        Ok(status)
    }

    /// A job of this run or a stored one.
    pub(crate) fn lookup(&self, id: &str) -> Option<Lookup> {
        if let Some(job) = lock(&self.jobs).get(id) {
            return Some(Lookup::Live(job.clone()));
        }
        self.cache.get::<JobRecord>(id).map(|r| Lookup::Stored(r.status))
    }

    /// The pending job of a dedup key, if any.
    pub(crate) fn pending_job(&self, key: &str) -> Option<JobStatus> {
        let id = lock(&self.pending).get(key).cloned()?;
        let job = lock(&self.jobs).get(&id).cloned()?;
        let status = job.status();
        (!status.state.is_final()).then_some(status)
    }

    /// Asks a job to stop; a queued one is cancelled at once.
    pub(crate) fn cancel(&self, id: &str) -> Option<JobStatus> {
        match self.lookup(id)? {
            Lookup::Stored(s) => Some(s),
            Lookup::Live(job) => {
                job.cancel.store(true, Ordering::Relaxed);
                // Under the record lock, so a worker cannot start it in between.
                let cancelled_now = {
                    let mut r = lock(&job.record);
                    let queued = r.status.state == JobState::Queued;
                    if queued {
                        job.update(&self.cache, &mut r, JobState::Cancelled, None, 0);
                    }
                    queued
                };
                if cancelled_now {
                    self.release(&job);
                }
                Some(job.status())
            }
        }
    }

    fn release(&self, job: &Job) {
        let key = job.key();
        let mut pending = lock(&self.pending);
        if pending.get(&key) == Some(&job.id) {
            pending.remove(&key);
        }
    }

    /// Puts the unfinished jobs of an earlier daemon back in the queue, or
    /// marks them failed when they already brought a daemon down.
    pub(crate) fn recover(&self) {
        let mut records: Vec<JobRecord> = self.cache.all::<JobRecord>().into_iter().map(|(_, r)| r).collect();
        records.sort_by_key(|r| r.seq);
        let next = records.iter().map(|r| r.seq + 1).max().unwrap_or(0);
        self.seq.store(next, Ordering::Relaxed);
        for record in records.into_iter().filter(|r| !r.status.state.is_final()) {
            let was = record.status.state;
            let id = record.status.id.clone();
            let key = record.key.clone();
            let job = Arc::new(Job::new(record.clone()));
            lock(&self.jobs).insert(id.clone(), job.clone());
            if was == JobState::Running && record.attempts >= MAX_ATTEMPTS {
                let msg = format!(
                    "daemon stopped during the job ({} times); not retried, submit it again",
                    record.attempts
                );
                tracing::warn!(job = %id, attempts = record.attempts, "job failed at start: daemon stopped during it");
                job.set_state(&self.cache, JobState::Failed, Some(msg), 0);
                self.counters.jobs_failed_at_start.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            job.set_state(&self.cache, JobState::Queued, None, 0);
            match self.queue.try_send(job.clone()) {
                Ok(()) => {
                    lock(&self.pending).insert(key, id.clone());
                    self.counters.jobs_requeued.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(job = %id, was = ?was, "job of an earlier daemon re-queued");
                }
                Err(_) => {
                    job.set_state(
                        &self.cache,
                        JobState::Failed,
                        Some("daemon stopped during the job and the queue was full at restart; submit it again".into()),
                        0,
                    );
                    self.counters.jobs_failed_at_start.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// The loop of one worker thread.
    pub(crate) fn work(&self) {
        loop {
            if self.stopping() {
                break;
            }
            let next = lock(&self.receiver).recv_timeout(Duration::from_millis(100));
            match next {
                Ok(job) => self.run(&job),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
    }

    fn run(&self, job: &Arc<Job>) {
        if !job.try_start(&self.cache) {
            self.release(job);
            return;
        }
        self.counters.jobs_started.fetch_add(1, Ordering::Relaxed);
        tracing::info!(job = %job.id, "job started");
        let started = std::time::Instant::now();
        let spec = job.spec();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let mut progress = |p: Progress| {
                job.progress(p);
                !job.cancel_requested() && !self.stopping()
            };
            self.execute(&spec, &mut progress)
        }));
        let seconds = started.elapsed().as_secs_f32();
        match outcome {
            Ok(Ok(())) => {
                job.set_state(&self.cache, JobState::Done, None, 0);
                self.counters.jobs_done.fetch_add(1, Ordering::Relaxed);
                tracing::info!(job = %job.id, seconds, "job done");
            }
            Ok(Err(_)) if job.cancel_requested() => {
                job.set_state(&self.cache, JobState::Cancelled, None, 0);
                tracing::info!(job = %job.id, seconds, "job cancelled");
            }
            Ok(Err(_)) if self.stopping() => {
                // Not the job's fault: give the attempt back and leave it queued for the next start.
                job.set_state(&self.cache, JobState::Queued, None, -1);
                tracing::info!(job = %job.id, "job interrupted by shutdown; it is re-queued at the next start");
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(job = %job.id, seconds, error = %e, "job failed");
                job.set_state(&self.cache, JobState::Failed, Some(e.message), 0);
            }
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                tracing::error!(job = %job.id, panic = %what, "the engine panicked in a job");
                job.set_state(&self.cache, JobState::Failed, Some(format!("internal error in the engine: {what}")), 0);
            }
        }
        self.release(job);
    }

    fn execute(&self, spec: &JobSpec, progress: &mut dyn FnMut(Progress) -> bool) -> Result<(), ComputeError> {
        let store = |e: aevis_cache::CacheError| ComputeError::new(aevis_shared::protocol::ErrorKind::Internal, e.to_string());
        match spec {
            JobSpec::Session { session, request } => {
                if self.cache.contains::<SessionResult>(session) {
                    return Ok(());
                }
                let mut result = self.engine.run_session(request, progress)?;
                result.id = session.clone();
                self.cache.put(session, &result).map_err(store)?;
                let mut record = self.cache.get::<SessionRecord>(session).unwrap_or_else(|| SessionRecord {
                    id: session.clone(),
                    request: request.clone(),
                    created_ms: now_millis(),
                    summary: None,
                });
                record.summary = Some(SessionSummary {
                    id: session.clone(),
                    model: request.model.clone(),
                    source: result.source.image.origin.clone(),
                    classes: (result.source.image.predicted, result.adversarial.image.predicted),
                    ready: true,
                });
                self.cache.put_flushed(session, &record).map_err(store)?;
            }
            JobSpec::Candidates { model, key, latest, request } => {
                let list: CandidateList = self.engine.candidates(model, request, progress)?;
                self.cache.put(key, &list).map_err(store)?;
                self.cache.put_flushed(latest, &list).map_err(store)?;
            }
            JobSpec::LearnedFeatures { model, key } => {
                let learned = self.engine.learned_features(model, progress)?;
                self.cache.put_flushed(key, &LearnedRecord(learned)).map_err(store)?;
            }
        }
        Ok(())
    }
}
