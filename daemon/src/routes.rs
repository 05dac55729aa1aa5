//! The handlers of the `/v1` endpoints (table in `aevis_shared::protocol`).

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use aevis_shared::protocol::{
    AdversarialSpec, AttackReport, AttackRequest, CandidateList, CandidatesRequest, ContributionRequest,
    ContributionResult, CreateSession, ErrorKind, ImageRef, JobCreated, JobStatus, SessionCreated, SessionResult,
    SessionSummary,
};
use futures_util::stream;
use serde::Deserialize;
use tokio::sync::watch;

use crate::compute::Compute;
use crate::error::ApiError;
use crate::jobs::{JobSpec, Lookup, now_millis};
use crate::records::{self, LearnedRecord, SessionRecord};
use crate::state::{AppState, compute, superseded};
use crate::wire::{Body, reply};

type State<E> = web::Data<AppState<E>>;
type Answer = Result<HttpResponse, ApiError>;

/// Largest page of an image listing.
const MAX_PAGE: usize = 1000;
/// Most normal targets a session may ask for.
const MAX_TARGETS: usize = 64;

/// Registers every `/v1` route.
pub fn configure<E: Compute>(cfg: &mut web::ServiceConfig) {
    cfg.route("/info", web::get().to(info::<E>))
        .route("/models/{model}/graph", web::get().to(graph::<E>))
        .route("/models/{model}/images", web::get().to(images::<E>))
        .route("/models/{model}/images/{split}/{index}/png", web::get().to(image_png::<E>))
        .route("/models/{model}/attack", web::post().to(attack::<E>))
        .route("/models/{model}/candidates", web::post().to(post_candidates::<E>))
        .route("/models/{model}/candidates", web::get().to(get_candidates::<E>))
        .route("/models/{model}/learned-features", web::post().to(post_learned::<E>))
        .route("/sessions", web::post().to(create_session::<E>))
        .route("/sessions", web::get().to(list_sessions::<E>))
        .route("/sessions/{id}", web::get().to(get_session::<E>))
        .route("/sessions/{id}/layers/{layer}", web::get().to(layer::<E>))
        .route("/sessions/{id}/layers/{layer}/channels/{channel}", web::get().to(neuron::<E>))
        .route("/sessions/{id}/contribution", web::post().to(contribution::<E>))
        .route("/jobs/{id}", web::get().to(job::<E>))
        .route("/jobs/{id}/events", web::get().to(job_events::<E>))
        .route("/jobs/{id}/cancel", web::post().to(cancel_job::<E>));
}

/// Answer for paths no route matches.
pub async fn no_route(req: HttpRequest) -> Answer {
    Err(ApiError::not_found(format!("no such endpoint: {} {}", req.method(), req.path())))
}

/// Refuses an upload that is not a PNG or JPEG before any work is queued.
fn check_image(r: &ImageRef, what: &str) -> Result<(), ApiError> {
    if let ImageRef::Upload { bytes } = r {
        match image::guess_format(bytes) {
            Ok(image::ImageFormat::Png | image::ImageFormat::Jpeg) => {}
            Ok(other) => {
                return Err(ApiError::new(
                    ErrorKind::UnsupportedMedia,
                    format!("the {what} upload is {other:?}; expected PNG or JPEG"),
                ));
            }
            Err(_) => {
                return Err(ApiError::new(
                    ErrorKind::UnsupportedMedia,
                    format!("the {what} upload ({} bytes) is not an image; expected PNG or JPEG", bytes.len()),
                ));
            }
        }
    }
    Ok(())
}

async fn info<E: Compute>(req: HttpRequest, state: State<E>) -> Answer {
    reply(&req, state.info())
}

async fn graph<E: Compute>(req: HttpRequest, state: State<E>, path: web::Path<String>) -> Answer {
    let model = path.into_inner();
    state.fingerprint(&model)?;
    let g = compute(&state, move |s| Ok(s.core.engine.graph(&model)?)).await?;
    reply(&req, &g)
}

#[derive(Debug, Deserialize)]
struct ImagesQuery {
    split: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
    class: Option<usize>,
}

async fn images<E: Compute>(
    req: HttpRequest,
    state: State<E>,
    path: web::Path<String>,
    q: web::Query<ImagesQuery>,
) -> Answer {
    let model = path.into_inner();
    state.fingerprint(&model)?;
    let q = q.into_inner();
    let limit = q.limit.unwrap_or(100);
    if limit > MAX_PAGE {
        return Err(ApiError::bad_request(format!("limit {limit} is above the largest page, {MAX_PAGE}")));
    }
    let split = q.split.unwrap_or_else(|| "test".into());
    let page = compute(&state, move |s| {
        Ok(s.core.engine.list_images(&model, &split, q.offset.unwrap_or(0), limit, q.class)?)
    })
    .await?;
    reply(&req, &page)
}

async fn image_png<E: Compute>(state: State<E>, path: web::Path<(String, String, usize)>) -> Answer {
    let (model, split, index) = path.into_inner();
    state.fingerprint(&model)?;
    let png = compute(&state, move |s| Ok(s.core.engine.image_png(&model, &split, index)?)).await?;
    Ok(HttpResponse::Ok().content_type("image/png").body(png))
}

async fn attack<E: Compute>(
    req: HttpRequest,
    state: State<E>,
    path: web::Path<String>,
    body: Body<AttackRequest>,
) -> Answer {
    let model = path.into_inner();
    let request = body.0;
    check_image(&request.image, "source")?;
    let key = records::attack_key(state.fingerprint(&model)?, &request)?;
    let report = compute(&state, move |s| {
        if let Some(r) = s.cache().get::<AttackReport>(&key) {
            s.core.counters.hit();
            return Ok(r);
        }
        let r = s.core.engine.attack(&model, &request)?;
        s.cache().put(&key, &r)?;
        Ok(r)
    })
    .await?;
    reply(&req, &report)
}

async fn post_candidates<E: Compute>(
    req: HttpRequest,
    state: State<E>,
    path: web::Path<String>,
    body: Body<CandidatesRequest>,
) -> Answer {
    let model = path.into_inner();
    let request = body.0;
    let fp = state.fingerprint(&model)?.to_string();
    let key = records::candidates_key(&fp, &request)?;
    let latest = records::latest_candidates_key(&fp);
    let spec = JobSpec::Candidates { model, key: key.clone(), latest: latest.clone(), request };
    let status = compute(&state, move |s| {
        if let Some(list) = s.cache().get::<CandidateList>(&key) {
            s.core.counters.hit();
            s.cache().put_flushed(&latest, &list)?;
            return s.core.done_job(key, spec);
        }
        s.core.submit(key, spec)
    })
    .await?;
    reply(&req, &JobCreated { job: status.id })
}

async fn get_candidates<E: Compute>(req: HttpRequest, state: State<E>, path: web::Path<String>) -> Answer {
    let model = path.into_inner();
    let latest = records::latest_candidates_key(state.fingerprint(&model)?);
    let list = compute(&state, move |s| {
        s.cache().get::<CandidateList>(&latest).ok_or_else(|| {
            ApiError::not_found(format!("no finished candidate list for model `{model}`; POST one first"))
        })
    })
    .await?;
    reply(&req, &list)
}

async fn post_learned<E: Compute>(req: HttpRequest, state: State<E>, path: web::Path<String>) -> Answer {
    let model = path.into_inner();
    let key = records::learned_key(state.fingerprint(&model)?);
    let spec = JobSpec::LearnedFeatures { model, key: key.clone() };
    let status = compute(&state, move |s| {
        if s.cache().contains::<LearnedRecord<E::Learned>>(&key) {
            s.core.counters.hit();
            return s.core.done_job(key, spec);
        }
        s.core.submit(key, spec)
    })
    .await?;
    reply(&req, &JobCreated { job: status.id })
}

async fn create_session<E: Compute>(req: HttpRequest, state: State<E>, body: Body<CreateSession>) -> Answer {
    let request = body.0;
    let fp = state.fingerprint(&request.model)?;
    check_image(&request.source, "source")?;
    if let AdversarialSpec::Image(r) = &request.adversarial {
        check_image(r, "adversarial")?;
    }
    if request.n_targets == 0 || request.n_targets > MAX_TARGETS {
        return Err(ApiError::bad_request(format!(
            "n_targets is {}; expected 1 to {MAX_TARGETS}",
            request.n_targets
        )));
    }
    let id = records::session_id(fp, &request)?;
    let created = compute(&state, move |s| {
        if s.cache().contains::<SessionResult>(&id) {
            s.core.counters.hit();
            return Ok(SessionCreated { session: id, job: None, cached: true });
        }
        let key = format!("session:{id}");
        if let Some(job) = s.core.pending_job(&key) {
            return Ok(SessionCreated { session: id, job: Some(job.id), cached: false });
        }
        if !s.cache().contains::<SessionRecord>(&id) {
            let record =
                SessionRecord { id: id.clone(), request: request.clone(), created_ms: now_millis(), summary: None };
            s.cache().put(&id, &record)?;
        }
        let job = s.core.submit(key, JobSpec::Session { session: id.clone(), request })?;
        Ok(SessionCreated { session: id, job: Some(job.id), cached: false })
    })
    .await?;
    reply(&req, &created)
}

async fn list_sessions<E: Compute>(req: HttpRequest, state: State<E>) -> Answer {
    let list: Vec<SessionSummary> = compute(&state, |s| {
        let mut all: Vec<SessionRecord> = s.cache().all::<SessionRecord>().into_iter().map(|(_, r)| r).collect();
        all.sort_by(|a, b| a.created_ms.cmp(&b.created_ms).then_with(|| a.id.cmp(&b.id)));
        Ok(all.iter().map(SessionRecord::summary).collect())
    })
    .await?;
    reply(&req, &list)
}

async fn get_session<E: Compute>(req: HttpRequest, state: State<E>, path: web::Path<String>) -> Answer {
    let id = path.into_inner();
    let r = compute(&state, move |s| s.result_or_404(&id)).await?;
    reply(&req, &*r)
}

async fn layer<E: Compute>(req: HttpRequest, state: State<E>, path: web::Path<(String, usize)>) -> Answer {
    let (id, layer) = path.into_inner();
    let d = compute(&state, move |s| {
        let r = s.result_or_404(&id)?;
        Ok(s.core.engine.layer_detail(&r, layer)?)
    })
    .await?;
    reply(&req, &d)
}

async fn neuron<E: Compute>(req: HttpRequest, state: State<E>, path: web::Path<(String, usize, usize)>) -> Answer {
    let (id, layer, channel) = path.into_inner();
    let d = compute(&state, move |s| {
        let r = s.result_or_404(&id)?;
        let learned = s.learned(&r.request.model);
        Ok(s.core.engine.neuron_detail(&r, layer, channel, learned.as_deref())?)
    })
    .await?;
    reply(&req, &d)
}

async fn contribution<E: Compute>(
    req: HttpRequest,
    state: State<E>,
    path: web::Path<String>,
    body: Body<ContributionRequest>,
) -> Answer {
    let id = path.into_inner();
    let request = body.0;
    let key = records::contribution_key(&id, &request)?;
    let result = compute(&state, move |s| {
        let session = s.result_or_404(&id)?;
        s.claim_contribution(&id, request.request_id)?;
        if let Some(mut r) = s.cache().get::<ContributionResult>(&key) {
            s.core.counters.hit();
            r.request = request;
            return Ok(r);
        }
        let rid = request.request_id;
        let cancelled = || s.superseded(&id, rid);
        if cancelled() {
            return Err(newer(s, &id, rid));
        }
        match s.core.engine.contribution(&session, &request, &cancelled) {
            Ok(r) => {
                s.cache().put(&key, &r)?;
                Ok(r)
            }
            Err(_) if cancelled() => Err(newer(s, &id, rid)),
            Err(e) => Err(e.into()),
        }
    })
    .await?;
    reply(&req, &result)
}

fn newer<E: Compute>(s: &AppState<E>, session: &str, rid: u64) -> ApiError {
    let latest = s
        .latest_contribution
        .lock()
        .map(|m| m.get(session).copied().unwrap_or(rid))
        .unwrap_or(rid);
    superseded(session, rid, latest)
}

fn lookup<E: Compute>(state: &AppState<E>, id: &str) -> Result<Lookup, ApiError> {
    state.core.lookup(id).ok_or_else(|| ApiError::not_found(format!("no job {id}")))
}

async fn job<E: Compute>(req: HttpRequest, state: State<E>, path: web::Path<String>) -> Answer {
    let status = match lookup(&state, &path)? {
        Lookup::Live(j) => j.status(),
        Lookup::Stored(s) => s,
    };
    reply(&req, &status)
}

async fn cancel_job<E: Compute>(req: HttpRequest, state: State<E>, path: web::Path<String>) -> Answer {
    let id = path.into_inner();
    let status = state.core.cancel(&id).ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    reply(&req, &status)
}

fn event(status: &JobStatus) -> web::Bytes {
    let json = serde_json::to_string(status).unwrap_or_else(|e| {
        format!("{{\"id\":{:?},\"error\":\"could not encode the status: {e}\"}}", status.id)
    });
    web::Bytes::from(format!("data: {json}\n\n"))
}

/// Server-sent events: the current status, then each change, until final.
async fn job_events<E: Compute>(state: State<E>, path: web::Path<String>) -> Answer {
    let rx = match lookup(&state, &path)? {
        Lookup::Live(j) => j.subscribe(),
        Lookup::Stored(s) => watch::channel(s).1,
    };
    let events = stream::unfold((Some(rx), true), |(rx, first)| async move {
        let mut rx = rx?;
        if !first {
            // A long job may not report for a while: a comment line keeps proxies from closing.
            match tokio::time::timeout(Duration::from_secs(15), rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    let last = rx.borrow().clone();
                    return (!last.state.is_final())
                        .then(|| (Ok::<_, std::convert::Infallible>(web::Bytes::from_static(b": job closed\n\n")), (None, false)));
                }
                Err(_) => return Some((Ok(web::Bytes::from_static(b": keep-alive\n\n")), (Some(rx), false))),
            }
        }
        let status = rx.borrow_and_update().clone();
        let next = if status.state.is_final() { None } else { Some(rx) };
        Some((Ok(event(&status)), (next, false)))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .streaming(events))
}
