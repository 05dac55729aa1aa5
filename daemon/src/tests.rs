//! HTTP, job and cache behaviour against a small stand-in engine (no burn,
//! no data): negotiation, typed errors, auth, queue limits, dedup, cancel,
//! events, restart recovery, contribution superseding.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{test, web};
use aevis_cache::Cache;
use aevis_shared::codec;
use aevis_shared::datapath::{Datapath, DistanceForm, TripletAnalysis};
use aevis_shared::graph::{GatedLayer, LayerGraph};
use aevis_shared::protocol::*;
use aevis_shared::sets::SetRegions;
use serde::de::DeserializeOwned;

use crate::error::ComputeError;
use crate::jobs::{JobRecord, JobSpec};
use crate::{AppState, Compute, DaemonConfig, app};

/// Stand-in engine: one model `toy` with two gated layers of 3 channels.
#[derive(Debug)]
struct Fake {
    steps: usize,
    step: Duration,
    sessions_run: Arc<AtomicUsize>,
    contributions_run: Arc<AtomicUsize>,
}

impl Fake {
    fn new(steps: usize, step: Duration) -> Self {
        Self {
            steps,
            step,
            sessions_run: Arc::new(AtomicUsize::new(0)),
            contributions_run: Arc::new(AtomicUsize::new(0)),
        }
    }
}

fn model_err(model: &str) -> ComputeError {
    ComputeError::new(ErrorKind::NotFound, format!("no model {model}"))
}

fn image(origin: &str, predicted: usize) -> SessionImage {
    SessionImage { origin: origin.into(), label: Some(0), predicted, confidence: 0.75, png: vec![1, 2, 3] }
}

fn path(origin: &str, predicted: usize, g: f32) -> ExtractedPath {
    ExtractedPath {
        image: image(origin, predicted),
        datapath: Datapath { gates: vec![vec![g, 1.0, 0.0], vec![0.5, g, 1.0]] },
        faithfulness: Faithfulness {
            binarised_keeps_top1: true,
            continuous_keeps_top1: true,
            kept_per_layer: vec![0.5, 0.25],
            kept_overall: 0.375,
            loss: 0.125,
            steps: 3,
        },
    }
}

impl Compute for Fake {
    type Learned = Vec<String>;

    fn backend_name(&self) -> String {
        "fake".into()
    }
    fn device_name(&self) -> String {
        "none".into()
    }
    fn models(&self) -> Vec<ModelInfo> {
        vec![ModelInfo {
            id: "toy".into(),
            arch: "toy".into(),
            dataset: "none".into(),
            input: [3, 4, 4],
            classes: vec!["a".into(), "b".into()],
            gated_layers: 2,
            gates: 6,
            lambda: 0.5,
            gamma: 0.05,
            splits: vec!["test".into()],
        }]
    }
    fn graph(&self, model: &str) -> Result<LayerGraph, ComputeError> {
        if model != "toy" {
            return Err(model_err(model));
        }
        let layer = |name: &str, inputs: Vec<usize>| GatedLayer {
            name: name.into(),
            channels: 3,
            height: 2,
            width: 2,
            inputs,
            stage: "s".into(),
            block: "s".into(),
        };
        Ok(LayerGraph { model: "toy".into(), input: [3, 4, 4], num_classes: 2, layers: vec![layer("l0", vec![]), layer("l1", vec![0])] })
    }
    fn fingerprint(&self, model: &str) -> Result<String, ComputeError> {
        if model == "toy" { Ok("fp-toy".into()) } else { Err(model_err(model)) }
    }
    fn list_images(&self, _: &str, split: &str, offset: usize, limit: usize, _: Option<usize>) -> Result<ImagePage, ComputeError> {
        Ok(ImagePage {
            split: split.into(),
            total: 10,
            entries: (offset..(offset + limit).min(10))
                .map(|i| ImageEntry { index: i, label: i % 2, predicted: i % 2, confidence: 0.5 })
                .collect(),
        })
    }
    fn image_png(&self, _: &str, _: &str, index: usize) -> Result<Vec<u8>, ComputeError> {
        if index >= 10 {
            return Err(ComputeError::new(ErrorKind::NotFound, format!("no image {index}")));
        }
        Ok(vec![0x89, b'P', b'N', b'G', index as u8])
    }
    fn attack(&self, _: &str, req: &AttackRequest) -> Result<AttackReport, ComputeError> {
        Ok(AttackReport {
            clean: (0, 0.9),
            adversarial: (1, 0.8),
            adversarial_quantised: (1, 0.7),
            linf: req.params.epsilon,
            l2: 0.5,
            success: true,
            png: vec![9],
        })
    }
    fn candidates(&self, _: &str, req: &CandidatesRequest, progress: &mut dyn FnMut(Progress) -> bool) -> Result<CandidateList, ComputeError> {
        progress(Progress { stage: "attack".into(), step: 1, total: 1, fraction: 1.0, ..Progress::default() });
        Ok(CandidateList { split: req.split.clone(), params: req.params.clone(), candidates: vec![], attacked: req.limit })
    }
    fn run_session(&self, req: &CreateSession, progress: &mut dyn FnMut(Progress) -> bool) -> Result<SessionResult, ComputeError> {
        for step in 0..self.steps {
            std::thread::sleep(self.step);
            let p = Progress {
                stage: "adversarial datapath".into(),
                step: step + 1,
                total: self.steps,
                loss: 1.0 / (step + 1) as f32,
                sparsity: 0.5,
                kept_top1: true,
                fraction: (step + 1) as f32 / self.steps as f32,
            };
            if !progress(p) {
                return Err(ComputeError::new(ErrorKind::Unprocessable, "cancelled"));
            }
        }
        self.sessions_run.fetch_add(1, Ordering::SeqCst);
        let (src, adv, tgt) = (path("test #0", 0, 0.0), path("attack", 1, 1.0), path("test #5", 1, 0.9));
        let analysis = TripletAnalysis::new(&adv.datapath, &src.datapath, &tgt.datapath, DistanceForm::L2, 1);
        Ok(SessionResult {
            id: String::new(),
            request: req.clone(),
            source: src,
            adversarial: adv,
            targets: vec![tgt],
            representative: 0,
            target_similarity: vec![0.75],
            analysis,
            attack: None,
            seconds: 0.5,
        })
    }
    fn layer_detail(&self, _: &SessionResult, layer: usize) -> Result<LayerDetail, ComputeError> {
        if layer >= 2 {
            return Err(ComputeError::new(ErrorKind::NotFound, format!("no layer {layer}; the model has 2")));
        }
        Ok(LayerDetail {
            layer,
            name: format!("l{layer}"),
            critical: [vec![0], vec![1], vec![1, 2]],
            regions: SetRegions::new(&[0], &[1], &[1, 2]),
            max_activation: [vec![1.0; 3], vec![2.0; 3], vec![3.0; 3]],
            gates: [vec![1.0; 3], vec![0.0; 3], vec![0.5; 3]],
        })
    }
    fn neuron_detail(&self, _: &SessionResult, layer: usize, channel: usize, learned: Option<&Vec<String>>) -> Result<NeuronDetail, ComputeError> {
        Ok(NeuronDetail {
            layer,
            channel,
            height: 1,
            width: 1,
            maps: [vec![0.0], vec![1.0], vec![2.0]],
            scale: (0.0, 2.0),
            learned: learned
                .map(|l| l.iter().enumerate().map(|(i, _)| Patch { image: i, activation: 1.0, rect: [0, 0, 1, 1], png: vec![] }).collect())
                .unwrap_or_default(),
        })
    }
    fn contribution(&self, _: &SessionResult, req: &ContributionRequest, cancelled: &dyn Fn() -> bool) -> Result<ContributionResult, ComputeError> {
        // `steps` is the number of 10 ms slices to work for.
        for _ in 0..req.steps {
            if cancelled() {
                return Err(ComputeError::new(ErrorKind::Unprocessable, "cancelled"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.contributions_run.fetch_add(1, Ordering::SeqCst);
        Ok(ContributionResult {
            request: req.clone(),
            contributions: [vec![0.5; 3], vec![0.25; 3], vec![0.125; 3]],
            top: [vec![(0, 0.5, 0.0)], vec![(1, 0.25, 0.1)], vec![(2, 0.125, 0.2)]],
            receptive_field: None,
            millis: 1.0,
        })
    }
    fn learned_features(&self, _: &str, progress: &mut dyn FnMut(Progress) -> bool) -> Result<Vec<String>, ComputeError> {
        progress(Progress::default());
        Ok(vec!["patch a".into(), "patch b".into()])
    }
}

fn cfg() -> DaemonConfig {
    DaemonConfig { queue_capacity: 4, max_body_bytes: 64 << 10, ..DaemonConfig::default() }
}

fn state(dir: &std::path::Path, fake: Fake, cfg: &DaemonConfig) -> web::Data<AppState<Fake>> {
    web::Data::new(AppState::new(fake, Cache::open(dir).unwrap(), cfg).unwrap())
}

fn session_req(index: usize) -> CreateSession {
    CreateSession {
        model: "toy".into(),
        source: ImageRef::Dataset { split: "test".into(), index },
        adversarial: AdversarialSpec::Attack(AttackParams::mi_fgsm(8.0 / 255.0)),
        target_class: None,
        n_targets: 1,
        target_split: "test".into(),
        extract: ExtractParams { method: ExtractMethod::Fast, ..ExtractParams::default_for(0.5) },
    }
}

fn bin<T: serde::Serialize>(v: &T) -> Vec<u8> {
    codec::encode(v).unwrap()
}

fn de<T: DeserializeOwned>(bytes: &[u8]) -> T {
    codec::decode(bytes).unwrap()
}

macro_rules! service {
    ($state:expr) => {
        test::init_service(app($state.clone())).await
    };
}

/// Sends a request; returns status, content type and body.
macro_rules! send {
    ($svc:expr, $req:expr) => {{
        let res = test::call_service(&$svc, $req.to_request()).await;
        let status = res.status();
        let ct = res
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or("").to_string())
            .unwrap_or_default();
        let body = test::read_body(res).await;
        (status, ct, body.to_vec())
    }};
}

/// Polls a job until it is final.
macro_rules! wait_job {
    ($svc:expr, $id:expr) => {{
        let id = $id;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (s, _, b) = send!($svc, test::TestRequest::get().uri(&format!("/v1/jobs/{}", id)));
            assert_eq!(s, StatusCode::OK);
            let st: JobStatus = de(&b);
            if st.state.is_final() {
                break st;
            }
            assert!(Instant::now() < deadline, "job {} did not finish: {st:?}", id);
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    }};
}

fn error_body(status: StatusCode, bytes: &[u8]) -> ErrorBody {
    let e: ErrorBody = de(bytes);
    assert_eq!(e.kind.status(), status.as_u16(), "{e:?}");
    e
}

#[actix_web::test]
async fn session_round_trip_bincode_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path(), Fake::new(3, Duration::from_millis(5)), &cfg());
    let svc = service!(st);

    let req = session_req(0);
    let (s, ct, b) = send!(svc, test::TestRequest::post().uri("/v1/sessions").set_payload(bin(&req)));
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ct, "application/octet-stream");
    let created: SessionCreated = de(&b);
    assert!(!created.cached);
    let job = created.job.clone().unwrap();

    // The same request in JSON is the same session and the same pending job.
    let (s, ct, b) = send!(
        svc,
        test::TestRequest::post()
            .uri("/v1/sessions")
            .insert_header(("content-type", "application/json"))
            .insert_header(("accept", "application/json"))
            .set_payload(serde_json::to_vec(&req).unwrap())
    );
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ct, "application/json");
    let again: SessionCreated = serde_json::from_slice(&b).unwrap();
    assert_eq!(again.session, created.session);
    assert_eq!(again.job.as_deref(), Some(job.as_str()));

    let done = wait_job!(svc, job);
    assert_eq!(done.state, JobState::Done);
    assert_eq!(done.session.as_deref(), Some(created.session.as_str()));
    assert_eq!(done.progress.fraction, 1.0);

    let uri = format!("/v1/sessions/{}", created.session);
    let (s, _, b) = send!(svc, test::TestRequest::get().uri(&uri));
    assert_eq!(s, StatusCode::OK);
    let r_bin: SessionResult = de(&b);
    let (_, ct, b) = send!(svc, test::TestRequest::get().uri(&uri).insert_header(("accept", "application/json")));
    assert_eq!(ct, "application/json");
    let r_json: SessionResult = serde_json::from_slice(&b).unwrap();
    assert_eq!(r_bin, r_json);
    assert_eq!(r_bin.id, created.session);
    assert_eq!(r_bin.request, req);

    // Listing, details.
    let (_, _, b) = send!(svc, test::TestRequest::get().uri("/v1/sessions"));
    let list: Vec<SessionSummary> = de(&b);
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].ready, list[0].classes, list[0].source.as_str()), (true, (0, 1), "test #0"));
    let (s, _, b) = send!(svc, test::TestRequest::get().uri(&format!("{uri}/layers/1")));
    assert_eq!(s, StatusCode::OK);
    assert_eq!(de::<LayerDetail>(&b).name, "l1");

    // Posting it again is a cache hit and runs nothing.
    let before = st.counters();
    let (_, _, b) = send!(svc, test::TestRequest::post().uri("/v1/sessions").set_payload(bin(&req)));
    let cached: SessionCreated = de(&b);
    assert_eq!((cached.cached, cached.job), (true, None));
    assert_eq!(st.counters().cache_hits, before.cache_hits + 1);
    assert_eq!(st.counters().jobs_queued, before.jobs_queued);
    st.shutdown(Duration::from_secs(5));
}

#[actix_web::test]
async fn bad_requests_get_typed_4xx() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path(), Fake::new(1, Duration::ZERO), &cfg());
    let svc = service!(st);
    let full = bin(&session_req(0));

    // Truncated bincode.
    let (s, ct, b) = send!(svc, test::TestRequest::post().uri("/v1/sessions").set_payload(full[..full.len() / 2].to_vec()));
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(ct, "application/octet-stream");
    let e = error_body(s, &b);
    assert!(e.message.contains("CreateSession"), "{e:?}");

    // Garbage JSON, answered in JSON.
    let (s, ct, b) = send!(
        svc,
        test::TestRequest::post()
            .uri("/v1/sessions")
            .insert_header(("content-type", "application/json"))
            .insert_header(("accept", "application/json"))
            .set_payload("{\"model\": 3,,")
    );
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(ct, "application/json");
    let e: ErrorBody = serde_json::from_slice(&b).unwrap();
    assert_eq!(e.kind, ErrorKind::BadRequest);

    // Trailing bytes after a valid value.
    let mut longer = full.clone();
    longer.extend_from_slice(&[0, 0]);
    let (s, _, b) = send!(svc, test::TestRequest::post().uri("/v1/sessions").set_payload(longer));
    assert_eq!(error_body(s, &b).kind, ErrorKind::BadRequest);

    // Wrong protocol version; a matching one passes.
    let (other, ours) = ((PROTOCOL_VERSION + 1).to_string(), PROTOCOL_VERSION.to_string());
    let (s, _, b) = send!(svc, test::TestRequest::get().uri("/v1/info").insert_header((VERSION_HEADER, other.as_str())));
    assert_eq!(error_body(s, &b).kind, ErrorKind::ProtocolVersion);
    let (s, _, b) = send!(svc, test::TestRequest::get().uri("/v1/info").insert_header((VERSION_HEADER, ours.as_str())));
    assert_eq!(s, StatusCode::OK);
    assert_eq!(de::<DaemonInfo>(&b).models[0].id, "toy");

    // Unknown model, session, layer, job, route.
    let mut req = session_req(0);
    req.model = "nope".into();
    let (s, _, b) = send!(svc, test::TestRequest::post().uri("/v1/sessions").set_payload(bin(&req)));
    let e = error_body(s, &b);
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(e.message.contains("toy"), "{e:?}");
    let (s, _, b) = send!(svc, test::TestRequest::get().uri("/v1/models/nope/graph"));
    assert_eq!(error_body(s, &b).kind, ErrorKind::NotFound);
    let (s, _, b) = send!(svc, test::TestRequest::get().uri("/v1/sessions/abc"));
    assert_eq!(error_body(s, &b).kind, ErrorKind::NotFound);
    let (s, _, b) = send!(svc, test::TestRequest::get().uri("/v1/jobs/abc"));
    assert_eq!(error_body(s, &b).kind, ErrorKind::NotFound);
    let (s, _, b) = send!(svc, test::TestRequest::get().uri("/v2/whatever"));
    assert_eq!(error_body(s, &b).kind, ErrorKind::NotFound);
    let (s, _, b) = send!(svc, test::TestRequest::delete().uri("/v1/info"));
    assert!(s.is_client_error());
    error_body(s, &b);
    // A non-numeric path segment and a bad query.
    let (s, _, b) = send!(svc, test::TestRequest::get().uri("/v1/sessions/abc/layers/x"));
    assert_eq!(error_body(s, &b).kind, ErrorKind::BadRequest);
    let (s, _, b) = send!(svc, test::TestRequest::get().uri("/v1/models/toy/images?offset=-1"));
    assert_eq!(error_body(s, &b).kind, ErrorKind::BadRequest);

    // Non-image upload; a body of an unknown type.
    let mut req = session_req(0);
    req.source = ImageRef::Upload { bytes: b"GIF89a? no, plain text".to_vec() };
    let (s, _, b) = send!(svc, test::TestRequest::post().uri("/v1/sessions").set_payload(bin(&req)));
    assert_eq!(error_body(s, &b).kind, ErrorKind::UnsupportedMedia);
    let (s, _, b) = send!(
        svc,
        test::TestRequest::post().uri("/v1/sessions").insert_header(("content-type", "text/plain")).set_payload(full.clone())
    );
    assert_eq!(error_body(s, &b).kind, ErrorKind::UnsupportedMedia);

    // Out-of-range fields.
    let mut req = session_req(0);
    req.n_targets = 0;
    let (s, _, b) = send!(svc, test::TestRequest::post().uri("/v1/sessions").set_payload(bin(&req)));
    assert_eq!(error_body(s, &b).kind, ErrorKind::BadRequest);

    // Oversized body (limit 64 KiB).
    let (s, _, b) = send!(svc, test::TestRequest::post().uri("/v1/sessions").set_payload(vec![7u8; 200 << 10]));
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_body(s, &b).kind, ErrorKind::TooLarge);

    // Every answer names the protocol.
    let res = test::call_service(&svc, test::TestRequest::get().uri("/v1/info").to_request()).await;
    assert_eq!(res.headers().get(VERSION_HEADER).unwrap().to_str().unwrap(), PROTOCOL_VERSION.to_string());
    st.shutdown(Duration::from_secs(5));
}

#[actix_web::test]
async fn token_is_required_when_set() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = DaemonConfig { token: Some("s3cret".into()), ..cfg() };
    let st = state(dir.path(), Fake::new(1, Duration::ZERO), &cfg);
    let svc = service!(st);
    let (s, _, b) = send!(svc, test::TestRequest::get().uri("/v1/info"));
    assert_eq!(error_body(s, &b).kind, ErrorKind::Unauthorized);
    let (s, _, b) = send!(svc, test::TestRequest::get().uri("/v1/info").insert_header(("authorization", "Bearer wrong")));
    assert_eq!(error_body(s, &b).kind, ErrorKind::Unauthorized);
    let (s, _, _) = send!(svc, test::TestRequest::get().uri("/v1/info").insert_header(("authorization", "Bearer s3cret")));
    assert_eq!(s, StatusCode::OK);

    // Binding a non-loopback address without a token is refused.
    let open = DaemonConfig { address: "0.0.0.0".parse().unwrap(), port: 0, ..crate::config::DaemonConfig::default() };
    let e = match crate::bind(&open, st.clone()) {
        Err(e) => e.to_string(),
        Ok((_, addr)) => panic!("bound {addr} without a token"),
    };
    assert!(e.contains("without a token"), "{e}");
    st.shutdown(Duration::from_secs(5));
}

#[actix_web::test]
async fn full_queue_is_busy_and_cancel_works() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = DaemonConfig { queue_capacity: 1, ..cfg() };
    let st = state(dir.path(), Fake::new(500, Duration::from_millis(10)), &cfg);
    let svc = service!(st);
    let post = |i: usize| test::TestRequest::post().uri("/v1/sessions").set_payload(bin(&session_req(i)));

    let (_, _, b) = send!(svc, post(0));
    let first = de::<SessionCreated>(&b).job.unwrap();
    // Wait until the worker holds it, so the queue is empty again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, b) = send!(svc, test::TestRequest::get().uri(&format!("/v1/jobs/{first}")));
        if de::<JobStatus>(&b).state == JobState::Running {
            break;
        }
        assert!(Instant::now() < deadline);
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    let (s, _, b) = send!(svc, post(1));
    assert_eq!(s, StatusCode::OK);
    let second = de::<SessionCreated>(&b).job.unwrap();
    let (s, _, b) = send!(svc, post(2));
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_body(s, &b).kind, ErrorKind::Busy);

    // Cancel the queued one (at once) and the running one (at its next step).
    let (_, _, b) = send!(svc, test::TestRequest::post().uri(&format!("/v1/jobs/{second}/cancel")));
    assert_eq!(de::<JobStatus>(&b).state, JobState::Cancelled);
    let (_, _, b) = send!(svc, test::TestRequest::post().uri(&format!("/v1/jobs/{first}/cancel")));
    assert!(matches!(de::<JobStatus>(&b).state, JobState::Running | JobState::Cancelled));
    let st1 = wait_job!(svc, first.clone());
    assert_eq!(st1.state, JobState::Cancelled);
    assert!(st1.progress.step >= 1, "{st1:?}");
    // A cancelled session can be asked for again: a new job.
    let (_, _, b) = send!(svc, post(0));
    let again = de::<SessionCreated>(&b).job.unwrap();
    assert_ne!(again, first);
    st.shutdown(Duration::from_secs(5));
}

#[actix_web::test]
async fn events_stream_progress_until_done() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path(), Fake::new(20, Duration::from_millis(20)), &cfg());
    let svc = service!(st);
    let (_, _, b) = send!(svc, test::TestRequest::post().uri("/v1/sessions").set_payload(bin(&session_req(3))));
    let job = de::<SessionCreated>(&b).job.unwrap();
    let (s, ct, body) = send!(svc, test::TestRequest::get().uri(&format!("/v1/jobs/{job}/events")));
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ct, "text/event-stream");
    let text = String::from_utf8(body).unwrap();
    let events: Vec<JobStatus> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(|j| serde_json::from_str(j).unwrap())
        .collect();
    assert!(events.len() >= 3, "{text}");
    assert_eq!(events.last().unwrap().state, JobState::Done);
    assert!(events.iter().all(|e| e.id == job));
    assert!(events.iter().any(|e| e.state == JobState::Running && e.progress.step > 0), "{text}");
    let steps: Vec<usize> = events.iter().map(|e| e.progress.step).collect();
    assert!(steps.windows(2).all(|w| w[0] <= w[1]), "{steps:?}");
    // A finished job's stream is its final status alone.
    let (_, _, body) = send!(svc, test::TestRequest::get().uri(&format!("/v1/jobs/{job}/events")));
    let text = String::from_utf8(body).unwrap();
    assert_eq!(text.matches("data: ").count(), 1, "{text}");
    st.shutdown(Duration::from_secs(5));
}

#[actix_web::test]
async fn restart_answers_from_cache_and_recovers_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let req = session_req(1);
    let session;
    {
        let st = state(dir.path(), Fake::new(2, Duration::ZERO), &cfg());
        let svc = service!(st);
        let (_, _, b) = send!(svc, test::TestRequest::post().uri("/v1/sessions").set_payload(bin(&req)));
        let created: SessionCreated = de(&b);
        wait_job!(svc, created.job.clone().unwrap());
        session = created.session;
        st.shutdown(Duration::from_secs(5));
    }
    // Plant the jobs a killed daemon would leave: one running once, one
    // running twice (it brought two daemons down), one queued.
    {
        let cache = Cache::open(dir.path()).unwrap();
        for (id, state, attempts, index) in
            [("j-run1", JobState::Running, 1, 7), ("j-run2", JobState::Running, 2, 8), ("j-queued", JobState::Queued, 0, 9)]
        {
            let r = session_req(index);
            let sid = crate::records::session_id("fp-toy", &r).unwrap();
            let rec = JobRecord {
                status: JobStatus {
                    id: id.into(),
                    kind: "session".into(),
                    session: Some(sid.clone()),
                    state,
                    progress: Progress::default(),
                    error: None,
                },
                spec: JobSpec::Session { session: sid, request: r },
                key: format!("session:{id}"),
                attempts,
                seq: 100 + index as u64,
            };
            cache.put_flushed(id, &rec).unwrap();
        }
    }
    let fake = Fake::new(2, Duration::ZERO);
    let runs = fake.sessions_run.clone();
    let st = state(dir.path(), fake, &cfg());
    let svc = service!(st);
    let c = st.counters();
    assert_eq!((c.jobs_requeued, c.jobs_failed_at_start), (2, 1));

    // The finished session is answered from the cache; no job runs for it.
    let (_, _, b) = send!(svc, test::TestRequest::post().uri("/v1/sessions").set_payload(bin(&req)));
    let created: SessionCreated = de(&b);
    assert_eq!((created.session.as_str(), created.cached, created.job.is_none()), (session.as_str(), true, true));
    let (s, _, b) = send!(svc, test::TestRequest::get().uri(&format!("/v1/sessions/{session}")));
    assert_eq!(s, StatusCode::OK);
    assert_eq!(de::<SessionResult>(&b).request, req);

    let failed = wait_job!(svc, "j-run2");
    assert_eq!(failed.state, JobState::Failed);
    assert!(failed.error.as_deref().unwrap_or("").contains("daemon stopped during the job"), "{failed:?}");
    assert_eq!(wait_job!(svc, "j-run1").state, JobState::Done);
    assert_eq!(wait_job!(svc, "j-queued").state, JobState::Done);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(st.counters().jobs_queued, 0);
    st.shutdown(Duration::from_secs(5));
}

#[actix_web::test]
async fn shutdown_leaves_the_running_job_queued() {
    let dir = tempfile::tempdir().unwrap();
    let job;
    {
        let st = state(dir.path(), Fake::new(1000, Duration::from_millis(10)), &cfg());
        let svc = service!(st);
        let (_, _, b) = send!(svc, test::TestRequest::post().uri("/v1/sessions").set_payload(bin(&session_req(4))));
        job = de::<SessionCreated>(&b).job.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while st.counters().jobs_started == 0 {
            assert!(Instant::now() < deadline);
            actix_web::rt::time::sleep(Duration::from_millis(10)).await;
        }
        st.shutdown(Duration::from_secs(5));
        let rec: JobRecord = st.cache().get(&job).unwrap();
        assert_eq!((rec.status.state, rec.attempts), (JobState::Queued, 0));
    }
    let st = state(dir.path(), Fake::new(2, Duration::ZERO), &cfg());
    assert_eq!(st.counters().jobs_requeued, 1);
    let svc = service!(st);
    assert_eq!(wait_job!(svc, job).state, JobState::Done);
    st.shutdown(Duration::from_secs(5));
}

#[actix_web::test]
async fn contribution_is_cached_and_superseded() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(1, Duration::ZERO);
    let runs = fake.contributions_run.clone();
    let st = state(dir.path(), fake, &cfg());
    let svc = service!(st);
    let (_, _, b) = send!(svc, test::TestRequest::post().uri("/v1/sessions").set_payload(bin(&session_req(0))));
    let created: SessionCreated = de(&b);
    wait_job!(svc, created.job.unwrap());
    let uri = format!("/v1/sessions/{}/contribution", created.session);
    let contrib = |rid: u64, steps: usize| ContributionRequest {
        target: ContributionTarget::FeatureMap { layer: 1, channel: 2, region: None },
        earlier: 0,
        fast: true,
        lambda: 0.1,
        gamma: 0.1,
        steps,
        request_id: rid,
    };

    // A slow request 1, then request 2 while it runs: 1 is superseded.
    let slow = test::TestRequest::post().uri(&uri).set_payload(bin(&contrib(1, 300))).to_request();
    let slow = test::call_service(&svc, slow);
    let fast = async {
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        test::call_service(&svc, test::TestRequest::post().uri(&uri).set_payload(bin(&contrib(2, 1))).to_request()).await
    };
    let (slow, fast) = futures_util::join!(slow, fast);
    assert_eq!(fast.status(), StatusCode::OK);
    let r: ContributionResult = de(&test::read_body(fast).await);
    assert_eq!(r.request.request_id, 2);
    let status = slow.status();
    let e = error_body(status, &test::read_body(slow).await);
    assert!(e.message.starts_with("superseded"), "{e:?}");
    // An older id arriving late is refused at once.
    let (s, _, b) = send!(svc, test::TestRequest::post().uri(&uri).set_payload(bin(&contrib(1, 1))));
    assert!(error_body(s, &b).message.starts_with("superseded"));
    // The same question with a newer id is a cache hit with that id.
    let hits = st.counters().cache_hits;
    let (s, _, b) = send!(svc, test::TestRequest::post().uri(&uri).set_payload(bin(&contrib(3, 1))));
    assert_eq!(s, StatusCode::OK);
    assert_eq!(de::<ContributionResult>(&b).request.request_id, 3);
    assert_eq!(st.counters().cache_hits, hits + 1);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    st.shutdown(Duration::from_secs(5));
}

#[actix_web::test]
async fn learned_features_reach_neuron_detail() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path(), Fake::new(1, Duration::ZERO), &cfg());
    let svc = service!(st);
    let (_, _, b) = send!(svc, test::TestRequest::post().uri("/v1/sessions").set_payload(bin(&session_req(0))));
    let created: SessionCreated = de(&b);
    wait_job!(svc, created.job.unwrap());
    let neuron = format!("/v1/sessions/{}/layers/1/channels/2", created.session);
    let (_, _, b) = send!(svc, test::TestRequest::get().uri(&neuron));
    assert!(de::<NeuronDetail>(&b).learned.is_empty());

    let (_, _, b) = send!(svc, test::TestRequest::post().uri("/v1/models/toy/learned-features"));
    let job = de::<JobCreated>(&b).job;
    assert_eq!(wait_job!(svc, job).state, JobState::Done);
    let (_, _, b) = send!(svc, test::TestRequest::get().uri(&neuron));
    let d: NeuronDetail = de(&b);
    assert_eq!((d.layer, d.channel, d.learned.len()), (1, 2, 2));
    // Asking again is answered by a job that is already done.
    let (_, _, b) = send!(svc, test::TestRequest::post().uri("/v1/models/toy/learned-features"));
    let job = de::<JobCreated>(&b).job;
    let (_, _, b) = send!(svc, test::TestRequest::get().uri(&format!("/v1/jobs/{job}")));
    assert_eq!(de::<JobStatus>(&b).state, JobState::Done);
    st.shutdown(Duration::from_secs(5));
}

#[actix_web::test]
async fn attack_images_and_candidates() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path(), Fake::new(1, Duration::ZERO), &cfg());
    let svc = service!(st);
    let areq = AttackRequest { image: ImageRef::Dataset { split: "test".into(), index: 2 }, params: AttackParams::mi_fgsm(0.03) };
    let (s, _, b) = send!(svc, test::TestRequest::post().uri("/v1/models/toy/attack").set_payload(bin(&areq)));
    assert_eq!(s, StatusCode::OK);
    assert_eq!(de::<AttackReport>(&b).linf, 0.03);
    let hits = st.counters().cache_hits;
    send!(svc, test::TestRequest::post().uri("/v1/models/toy/attack").set_payload(bin(&areq)));
    assert_eq!(st.counters().cache_hits, hits + 1);

    let (_, _, b) = send!(svc, test::TestRequest::get().uri("/v1/models/toy/images?split=test&offset=8&limit=5"));
    let page: ImagePage = de(&b);
    assert_eq!((page.total, page.entries.len(), page.entries[0].index), (10, 2, 8));
    let (s, ct, b) = send!(svc, test::TestRequest::get().uri("/v1/models/toy/images/test/3/png"));
    assert_eq!((s, ct.as_str(), b.last().copied()), (StatusCode::OK, "image/png", Some(3)));
    let (s, _, b) = send!(svc, test::TestRequest::get().uri("/v1/models/toy/images/test/30/png"));
    assert_eq!(error_body(s, &b).kind, ErrorKind::NotFound);

    let (s, _, b) = send!(svc, test::TestRequest::get().uri("/v1/models/toy/candidates"));
    assert_eq!(error_body(s, &b).kind, ErrorKind::NotFound);
    let creq = CandidatesRequest { split: "test".into(), offset: 0, limit: 4, params: AttackParams::mi_fgsm(0.03) };
    let (_, _, b) = send!(svc, test::TestRequest::post().uri("/v1/models/toy/candidates").set_payload(bin(&creq)));
    assert_eq!(wait_job!(svc, de::<JobCreated>(&b).job).state, JobState::Done);
    let (s, _, b) = send!(svc, test::TestRequest::get().uri("/v1/models/toy/candidates"));
    assert_eq!(s, StatusCode::OK);
    assert_eq!(de::<CandidateList>(&b).attacked, 4);
    st.shutdown(Duration::from_secs(5));
}
