//! The state every handler shares: engine, cache, jobs, limits.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aevis_cache::Cache;
use aevis_shared::protocol::{DaemonInfo, ErrorKind, PROTOCOL_VERSION, SessionResult};
use tokio::sync::Semaphore;

use crate::compute::Compute;
use crate::config::DaemonConfig;
use crate::error::ApiError;
use crate::jobs::{Core, Counters};
use crate::records::{LearnedRecord, SessionRecord, learned_key};

/// Online engine calls that may wait for a compute slot before `503 Busy`.
const MAX_WAITING: usize = 64;
/// Decoded session results kept in memory for detail requests.
const RESULT_MEMO: usize = 16;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Shared by all handlers (in a `web::Data`).
pub struct AppState<E: Compute> {
    pub(crate) core: Arc<Core<E>>,
    pub(crate) info: DaemonInfo,
    fingerprints: BTreeMap<String, String>,
    compute_slots: Semaphore,
    waiting: AtomicUsize,
    /// Newest contribution `request_id` per session.
    pub(crate) latest_contribution: Mutex<HashMap<String, u64>>,
    results: Mutex<HashMap<String, Arc<SessionResult>>>,
    learned: Mutex<HashMap<String, Arc<E::Learned>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    pub(crate) token: Option<String>,
    pub(crate) max_body_bytes: usize,
}

impl<E: Compute> std::fmt::Debug for AppState<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("info", &self.info)
            .field("cache", &self.core.cache.path())
            .field("counters", &self.counters())
            .finish_non_exhaustive()
    }
}

impl<E: Compute> AppState<E> {
    /// Builds the state, re-queues the unfinished jobs of an earlier daemon
    /// found in the cache, and starts the job workers. Blocks (it asks the
    /// engine for every model's fingerprint).
    pub fn new(engine: E, cache: Cache, cfg: &DaemonConfig) -> anyhow::Result<Self> {
        Self::with_shared_engine(Arc::new(engine), cache, cfg)
    }

    /// [`AppState::new`] with an engine shared with others (e.g. tests that
    /// restart the daemon without reloading the weights).
    pub fn with_shared_engine(engine: Arc<E>, cache: Cache, cfg: &DaemonConfig) -> anyhow::Result<Self> {
        cfg.validate()?;
        let models = engine.models();
        let mut fingerprints = BTreeMap::new();
        for m in &models {
            let fp = engine
                .fingerprint(&m.id)
                .map_err(|e| anyhow::anyhow!("cannot fingerprint model {}: {e}", m.id))?;
            fingerprints.insert(m.id.clone(), fp);
        }
        let info = DaemonInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            protocol: PROTOCOL_VERSION,
            backend: engine.backend_name(),
            device: engine.device_name(),
            models,
        };
        let core = Arc::new(Core::new(engine, Arc::new(cache), cfg.queue_capacity));
        core.recover();
        let mut workers = Vec::new();
        for i in 0..cfg.job_workers {
            let core = core.clone();
            let handle = std::thread::Builder::new()
                .name(format!("aevis-job-{i}"))
                .spawn(move || core.work())
                .map_err(|e| anyhow::anyhow!("cannot start a job worker thread: {e}"))?;
            workers.push(handle);
        }
        tracing::info!(
            models = fingerprints.len(),
            backend = %info.backend,
            device = %info.device,
            workers = cfg.job_workers,
            "daemon state ready"
        );
        Ok(Self {
            core,
            info,
            fingerprints,
            compute_slots: Semaphore::new(cfg.compute_threads),
            waiting: AtomicUsize::new(0),
            latest_contribution: Mutex::new(HashMap::new()),
            results: Mutex::new(HashMap::new()),
            learned: Mutex::new(HashMap::new()),
            workers: Mutex::new(workers),
            token: cfg.token.clone(),
            max_body_bytes: cfg.max_body_bytes,
        })
    }

    /// Counters (jobs queued, cache hits, …) since this state was built.
    pub fn counters(&self) -> Counters {
        self.core.counters.snapshot()
    }

    /// The cache.
    pub fn cache(&self) -> &Cache {
        &self.core.cache
    }

    /// What `GET /v1/info` answers.
    pub fn info(&self) -> &DaemonInfo {
        &self.info
    }

    /// Stops the job workers: a running job is interrupted at its next
    /// progress report and left queued for the next start; waits up to
    /// `grace` for the workers to return. Blocks.
    pub fn shutdown(&self, grace: Duration) {
        self.core.stop();
        let handles: Vec<_> = lock(&self.workers).drain(..).collect();
        let deadline = Instant::now() + grace;
        for h in handles {
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if h.is_finished() {
                if h.join().is_err() {
                    tracing::error!("a job worker panicked");
                }
            } else {
                tracing::warn!("a job worker is still inside an engine call; its job is re-queued at the next start");
            }
        }
        if let Err(e) = self.core.cache.flush() {
            tracing::error!(error = %e, "cache flush at shutdown failed");
        }
        tracing::info!("job workers stopped");
    }

    /// The fingerprint of a served model, or 404.
    pub(crate) fn fingerprint(&self, model: &str) -> Result<&str, ApiError> {
        self.fingerprints.get(model).map(String::as_str).ok_or_else(|| {
            let known: Vec<&str> = self.fingerprints.keys().map(String::as_str).collect();
            ApiError::not_found(format!("no model `{model}`; this daemon serves: {}", known.join(", ")))
        })
    }

    /// A session's result (memoised), `Ok(None)` when not computed. Blocks.
    pub(crate) fn result(&self, id: &str) -> Option<Arc<SessionResult>> {
        if let Some(r) = lock(&self.results).get(id) {
            return Some(r.clone());
        }
        let r = Arc::new(self.core.cache.get::<SessionResult>(id)?);
        let mut memo = lock(&self.results);
        if memo.len() >= RESULT_MEMO
            && let Some(k) = memo.keys().next().cloned()
        {
            memo.remove(&k);
        }
        memo.insert(id.to_string(), r.clone());
        Some(r)
    }

    /// The result of a session or a 404 that says why. Blocks.
    pub(crate) fn result_or_404(&self, id: &str) -> Result<Arc<SessionResult>, ApiError> {
        if let Some(r) = self.result(id) {
            return Ok(r);
        }
        if self.core.cache.contains::<SessionRecord>(id) {
            Err(ApiError::not_found(format!("session {id} is not computed yet; follow its job")))
        } else {
            Err(ApiError::not_found(format!("no session {id}")))
        }
    }

    /// The learned features of a model when computed (memoised). Blocks.
    pub(crate) fn learned(&self, model: &str) -> Option<Arc<E::Learned>> {
        let fp = self.fingerprints.get(model)?;
        if let Some(l) = lock(&self.learned).get(model) {
            return Some(l.clone());
        }
        let LearnedRecord(l) = self.core.cache.get::<LearnedRecord<E::Learned>>(&learned_key(fp))?;
        let l = Arc::new(l);
        lock(&self.learned).insert(model.to_string(), l.clone());
        Some(l)
    }

    /// Is contribution `request_id` of `session` superseded by a newer one?
    pub(crate) fn superseded(&self, session: &str, request_id: u64) -> bool {
        lock(&self.latest_contribution).get(session).is_some_and(|&latest| latest > request_id)
    }

    /// Registers contribution `request_id` as the newest of `session`, or
    /// refuses it when a newer one was already seen.
    pub(crate) fn claim_contribution(&self, session: &str, request_id: u64) -> Result<(), ApiError> {
        let mut latest = lock(&self.latest_contribution);
        let entry = latest.entry(session.to_string()).or_insert(request_id);
        if *entry > request_id {
            return Err(superseded(session, request_id, *entry));
        }
        *entry = request_id;
        Ok(())
    }
}

/// The answer to a superseded contribution request.
pub(crate) fn superseded(session: &str, request_id: u64, newer: u64) -> ApiError {
    ApiError::new(
        ErrorKind::Unprocessable,
        format!("superseded: contribution request {request_id} of session {session} was replaced by request {newer}"),
    )
}

/// Runs a blocking engine call on the compute pool (bounded), off the async
/// workers; a panic in it is a 500, not a dead worker.
pub(crate) async fn compute<E, T, F>(state: &actix_web::web::Data<AppState<E>>, f: F) -> Result<T, ApiError>
where
    E: Compute,
    T: Send + 'static,
    F: FnOnce(&AppState<E>) -> Result<T, ApiError> + Send + 'static,
{
    if state.waiting.fetch_add(1, Ordering::AcqRel) >= MAX_WAITING {
        state.waiting.fetch_sub(1, Ordering::AcqRel);
        return Err(ApiError::busy("too many engine requests are waiting; try again shortly"));
    }
    let permit = state.compute_slots.acquire().await;
    state.waiting.fetch_sub(1, Ordering::AcqRel);
    let _permit = permit.map_err(|_| ApiError::busy("the daemon is shutting down"))?;
    let me = state.clone();
    match actix_web::web::block(move || f(&me)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "an engine call panicked");
            Err(ApiError::internal(format!("internal error in the engine: {e}")))
        }
    }
}
