//! The real daemon on 127.0.0.1:0, a real sled folder and the real engine on
//! real CIFAR-10 data (`shared/data`): sessions through jobs and events,
//! bincode and JSON, restart from the cache, a killed daemon, bad requests.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::web;
use aevis_cache::{Cache, CacheError};
use aevis_daemon::{AppState, DaemonConfig, Device, bind, open_engine};
use aevis_models::Engine;
use aevis_shared::codec;
use aevis_shared::protocol::*;
use reqwest::StatusCode;
use serde::{Serialize, de::DeserializeOwned};

const MODEL: &str = "cifar10-resnet20";

fn data_dir() -> PathBuf {
    aevis_models::data::default_data_dir()
}

fn base_cfg(cache: &Path) -> DaemonConfig {
    DaemonConfig {
        port: 0,
        data_dir: data_dir(),
        cache_dir: cache.to_path_buf(),
        device: Device::Cpu,
        max_body_bytes: 256 << 10,
        // The smallest CIFAR-10 model keeps the tests cheap on a CPU.
        models: Some(vec![MODEL.to_string()]),
        ..DaemonConfig::default()
    }
}

/// One engine for every test of this binary (weights load once).
fn engine() -> Arc<Engine> {
    static ENGINE: OnceLock<Arc<Engine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| Arc::new(open_engine(&base_cfg(Path::new("unused"))).expect("open the engine on shared/data")))
        .clone()
}

/// The model served.
fn model() -> ModelInfo {
    engine().models().into_iter().find(|m| m.id == MODEL).expect("cifar10-resnet20 in the default registry")
}

struct Daemon {
    addr: SocketAddr,
    state: web::Data<AppState<Engine>>,
    handle: ServerHandle,
    task: actix_web::rt::task::JoinHandle<std::io::Result<()>>,
}

impl Daemon {
    async fn start(cfg: &DaemonConfig) -> Daemon {
        // After an in-process stop, actix's worker threads can still hold the
        // previous state (and so the folder's lock) for a moment: wait for it.
        let deadline = Instant::now() + Duration::from_secs(20);
        let cache = loop {
            match Cache::open(&cfg.cache_dir) {
                Ok(c) => break c,
                Err(CacheError::InUse { .. }) if Instant::now() < deadline => actix_web::rt::time::sleep(Duration::from_millis(50)).await,
                Err(e) => panic!("open the cache: {e:?}"),
            }
        };
        let state = web::Data::new(AppState::with_shared_engine(engine(), cache, cfg).expect("daemon state"));
        let (server, addr) = bind(cfg, state.clone()).expect("bind");
        let handle = server.handle();
        let task = actix_web::rt::spawn(server);
        Daemon { addr, state, handle, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/v1{path}", self.addr.port())
    }

    /// Graceful stop: no more requests, job workers stopped, cache closed.
    async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.task.await;
        let state = self.state.clone();
        web::block(move || state.shutdown(Duration::from_secs(30))).await.unwrap();
    }
}

fn bin<T: Serialize>(v: &T) -> Vec<u8> {
    codec::encode(v).unwrap()
}

async fn get_bin<T: DeserializeOwned>(c: &reqwest::Client, url: &str) -> T {
    let res = c.get(url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "GET {url}");
    codec::decode(&res.bytes().await.unwrap()).unwrap()
}

async fn get_json<T: DeserializeOwned>(c: &reqwest::Client, url: &str) -> T {
    let res = c.get(url).header("accept", "application/json").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "GET {url}");
    assert_eq!(res.headers()["content-type"], "application/json");
    let bytes = res.bytes().await.unwrap();
    serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        let text = String::from_utf8_lossy(&bytes);
        let at = e.column().saturating_sub(1).min(text.len());
        let lo = text[..at].char_indices().rev().nth(200).map_or(0, |(i, _)| i);
        panic!("GET {url}: JSON does not decode ({e}) near: …{}…", &text[lo..(at + 40).min(text.len())])
    })
}

async fn post_bin(c: &reqwest::Client, url: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let res = c.post(url).header("content-type", codec::BINARY_MIME).body(body).send().await.unwrap();
    (res.status(), res.bytes().await.unwrap().to_vec())
}

fn typed_error(status: StatusCode, body: &[u8]) -> ErrorBody {
    let e: ErrorBody = codec::decode(body).unwrap_or_else(|err| panic!("status {status}: not an ErrorBody ({err})"));
    assert_eq!(e.kind.status(), status.as_u16(), "{e:?}");
    e
}

fn cheap_session(model: &str, index: usize) -> CreateSession {
    let lambda = engine().models().iter().find(|m| m.id == model).map(|m| m.lambda).unwrap_or(0.05);
    CreateSession {
        model: model.to_string(),
        source: ImageRef::Dataset { split: "test".into(), index },
        adversarial: AdversarialSpec::Attack(AttackParams::mi_fgsm(8.0 / 255.0)),
        target_class: None,
        n_targets: 1,
        target_split: "test".into(),
        extract: ExtractParams { method: ExtractMethod::Fast, ..ExtractParams::default_for(lambda) },
    }
}

/// Reads a job's server-sent events until the stream ends.
async fn events(c: &reqwest::Client, url: &str) -> Vec<JobStatus> {
    let res = c.get(url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let text = tokio::time::timeout(Duration::from_secs(300), res.text()).await.expect("events end").unwrap();
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(|j| serde_json::from_str(j).unwrap_or_else(|e| panic!("bad event {j}: {e}")))
        .collect()
}

async fn wait_final(c: &reqwest::Client, d: &Daemon, job: &str, within: Duration) -> JobStatus {
    let deadline = Instant::now() + within;
    loop {
        let s: JobStatus = get_bin(c, &d.url(&format!("/jobs/{job}"))).await;
        if s.state.is_final() {
            return s;
        }
        assert!(Instant::now() < deadline, "job {job} not final: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[actix_web::test]
async fn session_through_events_then_restart_from_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = base_cfg(dir.path());
    let m = model();
    let c = reqwest::Client::new();
    // Three optimiser steps: cheap, and every float of the result is finite
    // (the fast mode reports `faithfulness.loss = NaN`, which JSON cannot carry).
    let mut req = cheap_session(&m.id, 0);
    req.extract.method = ExtractMethod::Constrained;
    req.extract.steps = 3;

    let d = Daemon::start(&cfg).await;
    let info: DaemonInfo = get_bin(&c, &d.url("/info")).await;
    assert_eq!(info.protocol, PROTOCOL_VERSION);
    assert!(info.models.iter().any(|x| x.id == m.id));
    let graph: aevis_shared::graph::LayerGraph = get_bin(&c, &d.url(&format!("/models/{}/graph", m.id))).await;
    assert_eq!(graph.layers.len(), m.gated_layers);
    assert_eq!(graph.total_gates(), m.gates);

    let (s, b) = post_bin(&c, &d.url("/sessions"), bin(&req)).await;
    assert_eq!(s, StatusCode::OK, "{:?}", codec::decode::<ErrorBody>(&b));
    let created: SessionCreated = codec::decode(&b).unwrap();
    assert!(!created.cached);
    let job = created.job.clone().expect("a job");
    let evs = events(&c, &d.url(&format!("/jobs/{job}/events"))).await;
    let last = evs.last().expect("at least one event");
    assert_eq!(last.state, JobState::Done, "{last:?}");
    assert!(evs.len() >= 2, "{evs:?}");
    assert!(evs.iter().all(|e| e.id == job && e.session.as_deref() == Some(created.session.as_str())));

    let sid = &created.session;
    let r_bin: SessionResult = get_bin(&c, &d.url(&format!("/sessions/{sid}"))).await;
    let r_json: SessionResult = get_json(&c, &d.url(&format!("/sessions/{sid}"))).await;
    assert_eq!(r_bin, r_json);
    assert_eq!(&r_bin.id, sid);
    assert_eq!(r_bin.request, req);
    assert_eq!(r_bin.source.datapath.gates.len(), m.gated_layers);
    assert_eq!(r_bin.analysis.adv_src.len(), m.gated_layers);
    assert!(r_bin.source.image.png.starts_with(b"\x89PNG"));

    let list: Vec<SessionSummary> = get_bin(&c, &d.url("/sessions")).await;
    assert_eq!(list.len(), 1);
    assert!(list[0].ready);
    assert_eq!(list[0].classes, (r_bin.source.image.predicted, r_bin.adversarial.image.predicted));

    let layer: LayerDetail = get_bin(&c, &d.url(&format!("/sessions/{sid}/layers/0"))).await;
    assert_eq!(layer.gates[0].len(), graph.layers[0].channels);
    let neuron: NeuronDetail = get_bin(&c, &d.url(&format!("/sessions/{sid}/layers/0/channels/0"))).await;
    assert_eq!(neuron.maps[0].len(), neuron.height * neuron.width);
    let res = c.get(d.url(&format!("/sessions/{sid}/layers/{}", m.gated_layers + 5))).send().await.unwrap();
    let s = res.status();
    assert_eq!(typed_error(s, &res.bytes().await.unwrap()).kind, ErrorKind::NotFound);

    let contrib = ContributionRequest {
        target: ContributionTarget::FeatureMap { layer: 1, channel: 0, region: None },
        earlier: 0,
        fast: true,
        lambda: 0.05,
        gamma: 0.05,
        steps: 5,
        request_id: 1,
    };
    let (s, b) = post_bin(&c, &d.url(&format!("/sessions/{sid}/contribution")), bin(&contrib)).await;
    assert_eq!(s, StatusCode::OK, "{:?}", codec::decode::<ErrorBody>(&b));
    let first: ContributionResult = codec::decode(&b).unwrap();
    assert_eq!(first.contributions[0].len(), graph.layers[0].channels);
    let hits = d.state.counters().cache_hits;
    let again = ContributionRequest { request_id: 2, ..contrib };
    let (s, b) = post_bin(&c, &d.url(&format!("/sessions/{sid}/contribution")), bin(&again)).await;
    assert_eq!(s, StatusCode::OK);
    let second: ContributionResult = codec::decode(&b).unwrap();
    assert_eq!(second.contributions, first.contributions);
    assert_eq!(second.request.request_id, 2);
    assert_eq!(d.state.counters().cache_hits, hits + 1);
    let counters = d.state.counters();
    assert_eq!((counters.jobs_queued, counters.jobs_done), (1, 1));
    d.stop().await;

    // Restart on the same folder: the session is there and nothing runs.
    let d = Daemon::start(&cfg).await;
    let (s, b) = post_bin(&c, &d.url("/sessions"), bin(&req)).await;
    assert_eq!(s, StatusCode::OK);
    let created2: SessionCreated = codec::decode(&b).unwrap();
    assert_eq!(created2, SessionCreated { session: sid.clone(), job: None, cached: true });
    let r_again: SessionResult = get_bin(&c, &d.url(&format!("/sessions/{sid}"))).await;
    assert_eq!(r_again, r_bin);
    let old_job: JobStatus = get_bin(&c, &d.url(&format!("/jobs/{job}"))).await;
    assert_eq!(old_job.state, JobState::Done);
    let counters = d.state.counters();
    assert_eq!((counters.jobs_queued, counters.jobs_requeued, counters.jobs_started), (0, 0, 0));
    assert_eq!(counters.cache_hits, 1);
    d.stop().await;
}

#[actix_web::test]
async fn bad_requests_get_typed_4xx() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = base_cfg(dir.path());
    let m = model();
    let c = reqwest::Client::new();
    let d = Daemon::start(&cfg).await;
    let full = bin(&cheap_session(&m.id, 1));

    let (s, b) = post_bin(&c, &d.url("/sessions"), full[..full.len() - 5].to_vec()).await;
    assert_eq!(typed_error(s, &b).kind, ErrorKind::BadRequest);
    let (s, b) = post_bin(&c, &d.url("/sessions"), b"\xff\xfe garbage \x00\x01".to_vec()).await;
    assert_eq!(typed_error(s, &b).kind, ErrorKind::BadRequest);
    let res = c
        .post(d.url("/sessions"))
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body("{\"model\":")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let e: ErrorBody = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(e.kind, ErrorKind::BadRequest);

    let res = c.get(d.url("/info")).header(VERSION_HEADER, "7").send().await.unwrap();
    let s = res.status();
    assert_eq!(typed_error(s, &res.bytes().await.unwrap()).kind, ErrorKind::ProtocolVersion);

    let mut unknown = cheap_session(&m.id, 1);
    unknown.model = "no-such-model".into();
    let (s, b) = post_bin(&c, &d.url("/sessions"), bin(&unknown)).await;
    assert_eq!(typed_error(s, &b).kind, ErrorKind::NotFound);
    let res = c.get(d.url("/sessions/0123456789abcdef")).send().await.unwrap();
    let s = res.status();
    assert_eq!(typed_error(s, &res.bytes().await.unwrap()).kind, ErrorKind::NotFound);
    let res = c.get(d.url(&format!("/models/{}/images/test/99999999/png", m.id))).send().await.unwrap();
    let s = res.status();
    assert!(s.is_client_error(), "{s}");
    typed_error(s, &res.bytes().await.unwrap());

    // A non-image upload, refused before any work.
    let attack = AttackRequest { image: ImageRef::Upload { bytes: b"%PDF-1.4 not an image".to_vec() }, params: AttackParams::mi_fgsm(0.03) };
    let (s, b) = post_bin(&c, &d.url(&format!("/models/{}/attack", m.id)), bin(&attack)).await;
    assert_eq!(typed_error(s, &b).kind, ErrorKind::UnsupportedMedia);
    // A PNG signature over garbage reaches the engine, which must also say 415 (or 400).
    let mut fake_png = b"\x89PNG\r\n\x1a\n".to_vec();
    fake_png.extend_from_slice(&[0u8; 64]);
    let attack = AttackRequest { image: ImageRef::Upload { bytes: fake_png }, params: AttackParams::mi_fgsm(0.03) };
    let (s, b) = post_bin(&c, &d.url(&format!("/models/{}/attack", m.id)), bin(&attack)).await;
    assert!(s.is_client_error(), "{s}: {:?}", codec::decode::<ErrorBody>(&b));
    typed_error(s, &b);

    // Oversized body (limit 256 KiB).
    let res = c.post(d.url("/sessions")).header("content-type", codec::BINARY_MIME).body(vec![1u8; 300 << 10]).send().await;
    match res {
        Ok(res) => {
            let s = res.status();
            assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
            assert_eq!(typed_error(s, &res.bytes().await.unwrap()).kind, ErrorKind::TooLarge);
        }
        // The daemon may answer 413 and close before the client finished sending.
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }
    assert_eq!(d.state.counters().jobs_queued, 0);
    d.stop().await;

    // Non-loopback without a token: refused; with one, requests need it.
    let open = DaemonConfig { address: "0.0.0.0".parse().unwrap(), ..base_cfg(dir.path()) };
    let e = DaemonConfig::validate(&open).unwrap_err().to_string();
    assert!(e.contains("without a token"), "{e}");
    let guarded = DaemonConfig { token: Some("tok-123".into()), ..open };
    let d = Daemon::start(&guarded).await;
    let res = c.get(d.url("/info")).send().await.unwrap();
    let s = res.status();
    assert_eq!(typed_error(s, &res.bytes().await.unwrap()).kind, ErrorKind::Unauthorized);
    let res = c.get(d.url("/info")).bearer_auth("tok-123").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    d.stop().await;
}

/// Starts the daemon binary; returns it and its address (read from stdout).
fn spawn_daemon(cache: &Path, model: &str) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aevis-daemon"))
        .args(["--port", "0", "--device", "cpu", "--models", model])
        .arg("--data-dir")
        .arg(data_dir())
        .arg("--cache-dir")
        .arg(cache)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start aevis-daemon");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .rsplit("http://")
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (child, addr)
}

#[actix_web::test]
async fn killed_daemon_leaves_a_job_that_is_requeued() {
    let dir = tempfile::tempdir().unwrap();
    let m = model();
    let c = reqwest::Client::new();
    let (mut child, addr) = spawn_daemon(dir.path(), &m.id);

    // The folder is held: a second daemon is refused with a clear error.
    match Cache::open(dir.path()) {
        Err(e @ CacheError::InUse { .. }) => assert!(e.to_string().starts_with("cache folder in use by another daemon")),
        other => panic!("expected InUse, got {other:?}"),
    }

    // A longer session (full extraction), killed while it runs.
    let mut req = cheap_session(&m.id, 2);
    req.extract.method = ExtractMethod::Constrained;
    req.extract.steps = 20;
    let url = |p: &str| format!("http://{addr}/v1{p}");
    let (s, b) = post_bin(&c, &url("/sessions"), bin(&req)).await;
    assert_eq!(s, StatusCode::OK, "{:?}", codec::decode::<ErrorBody>(&b));
    let created: SessionCreated = codec::decode(&b).unwrap();
    let job = created.job.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s: JobStatus = get_bin(&c, &url(&format!("/jobs/{job}"))).await;
        if s.state == JobState::Running {
            break;
        }
        assert!(!s.state.is_final(), "finished before it could be killed: {s:?}");
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // Restart on the folder: it opens cleanly and the job runs to the end.
    let cfg = base_cfg(dir.path());
    let d = Daemon::start(&cfg).await;
    assert_eq!(d.state.counters().jobs_requeued, 1);
    let done = wait_final(&c, &d, &job, Duration::from_secs(600)).await;
    assert_eq!(done.state, JobState::Done, "{done:?}");
    let r: SessionResult = get_bin(&c, &d.url(&format!("/sessions/{}", created.session))).await;
    assert_eq!(r.request, req);
    assert_eq!(d.state.counters().jobs_queued, 0);
    d.stop().await;
}
