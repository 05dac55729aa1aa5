//! The real daemon over loopback: a cached session result fetched as bincode
//! and as JSON (median, p99, body size), then a load run of 32 concurrent
//! clients reading it for 10 s (requests per second, errors, latency).
//!
//! `cargo bench --bench daemon` (a plain main that prints its figures).
//! The daemon runs in-process (`aevis_daemon::bind` on 127.0.0.1:0, its
//! default 2 HTTP workers), with a temporary sled folder and
//! `cifar10-resnet20`; one fast-mode session (MI-FGSM adversarial of test
//! image 0, one target) is created first and waited for. The clients run in
//! the same process on a 2-thread tokio runtime: on a 2-core machine they
//! share the CPU with the server. `AEVIS_BENCH_LOAD_SECS` changes the 10 s.
//!
//! Then the end-to-end latency of contribution requests (issue 6's
//! request): a fast-mode ResNet-56 session of the same triplet, target
//! feature map 0 of `layer3.8.out`, a 2×2 region, earlier layer
//! `layer2.8.out`, λ = 0.01, γ = 0.05; 20 fast requests and 5 SGD requests
//! (50 Adam steps), each on a region not asked before (so each is computed,
//! not read from the cache), then one repeated (answered from the cache).
//! Time is from sending the bincode body to the decoded answer.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::web;
use aevis_cache::Cache;
use aevis_daemon::{AppState, DaemonConfig, Device, bind, open_engine};
use aevis_shared::codec;
use aevis_shared::protocol::*;

use common::*;

const MODEL: &str = "cifar10-resnet20";
const R56: &str = "cifar10-resnet56";
const CLIENTS: usize = 32;
const SEQUENTIAL: usize = 300;

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1].as_secs_f64()
}

struct Served {
    addr: std::net::SocketAddr,
    stop: Box<dyn FnOnce() + Send>,
}

/// Starts the daemon on its own actix system thread.
fn start(cfg: DaemonConfig) -> Served {
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let engine = Arc::new(open_engine(&cfg).expect("open the engine on shared/data"));
            let cache = Cache::open(&cfg.cache_dir).expect("open the cache");
            let state = web::Data::new(AppState::with_shared_engine(engine, cache, &cfg).expect("daemon state"));
            let (server, addr) = bind(&cfg, state.clone()).expect("bind");
            let handle = server.handle();
            let task = actix_web::rt::spawn(server);
            tx.send(addr).expect("send the address");
            let _ = web::block(move || stop_rx.recv()).await;
            handle.stop(true).await;
            let _ = task.await;
            web::block(move || state.shutdown(Duration::from_secs(30))).await.expect("shutdown");
        })
    });
    let addr = rx.recv().expect("the daemon started");
    Served {
        addr,
        stop: Box::new(move || {
            let _ = stop_tx.send(());
            let _ = thread.join();
        }),
    }
}

/// Creates a fast-mode session (MI-FGSM adversarial of test image 0, one target) and waits for it.
async fn session(c: &reqwest::Client, base: &str, model: &str) -> String {
    let req = CreateSession {
        model: model.into(),
        source: ImageRef::Dataset { split: "test".into(), index: 0 },
        adversarial: AdversarialSpec::Attack(AttackParams::mi_fgsm(8.0 / 255.0)),
        target_class: None,
        n_targets: 1,
        target_split: "test".into(),
        extract: ExtractParams { method: ExtractMethod::Fast, ..ExtractParams::default_for(0.01) },
    };
    let t = Instant::now();
    let res = c
        .post(format!("{base}/sessions"))
        .header("content-type", codec::BINARY_MIME)
        .body(codec::encode(&req).expect("encode"))
        .send()
        .await
        .expect("POST /sessions");
    assert!(res.status().is_success(), "POST /sessions: {}", res.status());
    let created: SessionCreated = codec::decode(&res.bytes().await.expect("body")).expect("SessionCreated");
    if let Some(job) = &created.job {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let s: JobStatus = codec::decode(&c.get(format!("{base}/jobs/{job}")).send().await.expect("job").bytes().await.expect("body")).expect("JobStatus");
            if s.state.is_final() {
                assert_eq!(s.state, JobState::Done, "{s:?}");
                break;
            }
            assert!(Instant::now() < deadline, "session job not done in 300 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!("{model}: fast-mode session {} computed in {:.2} s (incl. attack, job queue, polling)", created.session, t.elapsed().as_secs_f64());
    created.session
}

fn main() {
    println!("machine: {}", machine());
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = DaemonConfig {
        port: 0,
        cache_dir: dir.path().join("cache"),
        device: Device::Cpu,
        models: Some(vec![MODEL.to_string(), R56.to_string()]),
        ..DaemonConfig::default()
    };
    let t = Instant::now();
    let served = start(cfg.clone());
    println!("daemon up on {} in {:.1} s ({} HTTP workers)", served.addr, t.elapsed().as_secs_f64(), cfg.http_workers);
    let base = format!("http://127.0.0.1:{}/v1", served.addr.port());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let load_secs: u64 = std::env::var("AEVIS_BENCH_LOAD_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);

    rt.block_on(async {
        let c = reqwest::Client::new();
        let created = session(&c, &base, MODEL).await;
        let url = format!("{base}/sessions/{created}");


        // Sequential latency, keep-alive, one client.
        let mut sizes = [0usize; 2];
        let mut results: Vec<(String, Vec<Duration>)> = vec![];
        let mut decoded: Vec<SessionResult> = vec![];
        for (k, json) in [false, true].into_iter().enumerate() {
            let get = || {
                let r = c.get(&url);
                if json { r.header("accept", "application/json") } else { r }
            };
            for _ in 0..20 {
                let _ = get().send().await.expect("GET").bytes().await;
            }
            let mut lat = Vec::with_capacity(SEQUENTIAL);
            let mut last = vec![];
            for _ in 0..SEQUENTIAL {
                let t = Instant::now();
                let res = get().send().await.expect("GET");
                assert_eq!(res.status(), reqwest::StatusCode::OK);
                last = res.bytes().await.expect("body").to_vec();
                lat.push(t.elapsed());
            }
            lat.sort();
            sizes[k] = last.len();
            decoded.push(if json { serde_json::from_slice(&last).expect("JSON decodes") } else { codec::decode(&last).expect("bincode decodes") });
            results.push((if json { "JSON" } else { "bincode" }.to_string(), lat));
        }
        assert_eq!(decoded[0], decoded[1], "bincode and JSON answers differ");

        // Load: 32 clients (own connection pools), each reading the cached result in a loop.
        let ok = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let expected = sizes[0];
        let start = Instant::now();
        let deadline = start + Duration::from_secs(load_secs);
        let mut tasks = vec![];
        for _ in 0..CLIENTS {
            let (ok, errors, url) = (ok.clone(), errors.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                let c = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
                let mut lat = vec![];
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let good = match c.get(&url).send().await {
                        Ok(res) if res.status() == reqwest::StatusCode::OK => res.bytes().await.is_ok_and(|b| b.len() == expected),
                        _ => false,
                    };
                    lat.push(t.elapsed());
                    if good { ok.fetch_add(1, Ordering::Relaxed) } else { errors.fetch_add(1, Ordering::Relaxed) };
                }
                lat
            }));
        }
        let mut lat = vec![];
        let mut hung = 0;
        for t in tasks {
            match tokio::time::timeout(Duration::from_secs(load_secs + 30), t).await {
                Ok(Ok(l)) => lat.extend(l),
                _ => hung += 1,
            }
        }
        let wall = start.elapsed().as_secs_f64();
        lat.sort();
        let (ok, errors) = (ok.load(Ordering::Relaxed), errors.load(Ordering::Relaxed));

        println!("\n== daemon summary ({}) ==", machine());
        for ((name, l), size) in results.iter().zip(sizes) {
            println!(
                "GET /v1/sessions/{{id}} {name:<8} {SEQUENTIAL} sequential: median {:.2} ms, p99 {:.2} ms, body {size} bytes",
                pct(l, 50.0) * 1e3,
                pct(l, 99.0) * 1e3
            );
        }
        println!(
            "load: {CLIENTS} clients × {load_secs} s (bincode): {ok} ok, {errors} errors, {hung} clients hung; {:.0} requests/s; latency median {:.1} ms, p99 {:.1} ms",
            ok as f64 / wall,
            pct(&lat, 50.0) * 1e3,
            pct(&lat, 99.0) * 1e3
        );
        println!("goal: zero errors under load: {}", if errors == 0 && hung == 0 { "met" } else { "MISSED" });

        // Contribution requests end to end, ResNet-56.
        let id = session(&c, &base, R56).await;
        let graph: aevis_shared::graph::LayerGraph =
            codec::decode(&c.get(format!("{base}/models/{R56}/graph")).send().await.expect("graph").bytes().await.expect("body")).expect("LayerGraph");
        let (target, earlier) = (graph.index_of("layer3.8.out").expect("layer3.8.out"), graph.index_of("layer2.8.out").expect("layer2.8.out"));
        let mut rid = 0u64;
        let mut ask = |fast: bool, y0: usize, x0: usize| {
            rid += 1;
            ContributionRequest {
                target: ContributionTarget::FeatureMap { layer: target, channel: 0, region: Some(Region { y0, y1: y0 + 2, x0, x1: x0 + 2 }) },
                earlier,
                fast,
                lambda: 0.01,
                gamma: 0.05,
                steps: 50,
                request_id: rid,
            }
        };
        let post = |r: ContributionRequest| {
            let c = c.clone();
            let url = format!("{base}/sessions/{id}/contribution");
            async move {
                let t = Instant::now();
                let res = c.post(url).header("content-type", codec::BINARY_MIME).body(codec::encode(&r).expect("encode")).send().await.expect("POST contribution");
                assert!(res.status().is_success(), "POST contribution: {}", res.status());
                let a: ContributionResult = codec::decode(&res.bytes().await.expect("body")).expect("ContributionResult");
                assert_eq!(a.contributions[0].len(), 32, "layer2.8.out has 32 feature maps");
                t.elapsed()
            }
        };
        let mut fast = vec![];
        for k in 0..20 {
            fast.push(post(ask(true, k / 4, 2 * (k % 4))).await);
        }
        let mut sgd = vec![];
        for k in 0..5 {
            sgd.push(post(ask(false, 6, k)).await);
        }
        let mut cached = vec![];
        for _ in 0..50 {
            cached.push(post(ask(true, 0, 0)).await);
        }
        for l in [&mut fast, &mut sgd, &mut cached] {
            l.sort();
        }
        println!("POST /v1/sessions/{{id}}/contribution, ResNet-56, 3 images, layer3.8.out ← layer2.8.out:");
        println!("  fast, 20 new regions: median {:.1} ms (min {:.1}, max {:.1}); goal < 100 ms: {}", pct(&fast, 50.0) * 1e3, fast[0].as_secs_f64() * 1e3, fast[19].as_secs_f64() * 1e3, if pct(&fast, 50.0) < 0.1 { "met" } else { "MISSED" });
        println!("  SGD 50 steps, 5 new regions: median {:.0} ms (min {:.0}, max {:.0}); goal < 1 s: {}", pct(&sgd, 50.0) * 1e3, sgd[0].as_secs_f64() * 1e3, sgd[4].as_secs_f64() * 1e3, if pct(&sgd, 50.0) < 1.0 { "met" } else { "MISSED" });
        println!("  cached (the same request 50 times): median {:.2} ms, p99 {:.2} ms", pct(&cached, 50.0) * 1e3, pct(&cached, 99.0) * 1e3);
    });
    (served.stop)();
}
