//! `aevis export`: the headless client. It creates (or reuses) a session
//! through a daemon — a remote one, or one started in this process on
//! 127.0.0.1 — waits for the job, fetches the layer and neuron detail and a
//! contribution, and writes the three views as SVG and PNG.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use aevis_client::api::Api;
use aevis_models::data::default_data_dir;
use aevis_models::registry::DEFAULT_MODEL;
use aevis_shared::protocol::*;
use anyhow::{Context, anyhow, bail};
use futures_util::StreamExt;

/// Flags of `aevis export`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// Daemon URL; without it a daemon is started in this process.
    #[arg(long)]
    url: Option<String>,
    /// Bearer token of a remote daemon.
    #[arg(long, env = "AEVIS_TOKEN")]
    token: Option<String>,
    /// Reuse an existing session id instead of creating one.
    #[arg(long)]
    session: Option<String>,
    /// Model id.
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: String,
    /// Split of the source and the targets.
    #[arg(long)]
    split: Option<String>,
    /// Index of the source image in the split.
    #[arg(long, default_value_t = 0)]
    source: usize,
    /// A source image file instead of a split index (PNG or JPEG).
    #[arg(long)]
    source_file: Option<PathBuf>,
    /// Class of the normal targets; the attack is then targeted at it
    /// (default: non-targeted, the targets are of the adversarial's class).
    #[arg(long)]
    target_class: Option<usize>,
    /// Number of target images.
    #[arg(long, default_value_t = 3)]
    targets: usize,
    /// MI-FGSM ε in pixel units (default 8/255 for 32×32 models, 16/255 otherwise).
    #[arg(long)]
    epsilon: Option<f32>,
    /// Optimiser steps of the extraction (0 = the fast mode).
    #[arg(long, default_value_t = 100)]
    steps: usize,
    /// γ of the constrained chain (default: the model's tuned value from the registry).
    #[arg(long)]
    gamma: Option<f32>,
    /// Layer to show (name; default: the diverging point, else the merging point).
    #[arg(long)]
    layer: Option<String>,
    /// Feature map to show (default: the largest activation difference adversarial − source).
    #[arg(long)]
    channel: Option<usize>,
    /// How many gated layers back the contribution analysis goes (0 = none).
    #[arg(long, default_value_t = 2)]
    back: usize,
    /// Output folder.
    #[arg(long, default_value = "aevis-views")]
    out: PathBuf,
    /// Pixel scale of the PNGs.
    #[arg(long, default_value_t = 2.0)]
    scale: f32,
    /// Data folder for an in-process daemon.
    #[arg(long, env = "AEVIS_DATA")]
    data: Option<PathBuf>,
    /// Cache folder for an in-process daemon.
    #[arg(long, env = "AEVIS_CACHE")]
    cache: Option<PathBuf>,
}

/// Runs the export; prints the files written.
pub fn export(a: ExportArgs) -> anyhow::Result<()> {
    actix_web::rt::System::new().block_on(async move {
        let mut local = None;
        let url = match &a.url {
            Some(u) => u.clone(),
            None => {
                let cfg = aevis_daemon::DaemonConfig {
                    address: IpAddr::V4(Ipv4Addr::LOCALHOST),
                    port: 0,
                    data_dir: a.data.clone().unwrap_or_else(default_data_dir),
                    cache_dir: a.cache.clone().unwrap_or_else(crate::cli::default_cache_dir),
                    models: Some(vec![a.model.clone()]),
                    ..Default::default()
                };
                let (handle, addr, state) = start_local(cfg).await?;
                local = Some((handle, state));
                format!("http://{addr}")
            }
        };
        let result = run(&a, &url).await;
        if let Some((h, state)) = local {
            h.stop(true).await;
            // Stop the job workers and flush the cache, so a later run answers from it.
            let _ = actix_web::web::block(move || state.shutdown(std::time::Duration::from_secs(30))).await;
        }
        let files = result?;
        for f in files {
            println!("{}", f.display());
        }
        Ok(())
    })
}

type LocalState = actix_web::web::Data<aevis_daemon::AppState<aevis_models::Engine>>;

async fn start_local(cfg: aevis_daemon::DaemonConfig) -> anyhow::Result<(actix_web::dev::ServerHandle, std::net::SocketAddr, LocalState)> {
    let cache = aevis_cache::Cache::open(&cfg.cache_dir)?;
    let c = cfg.clone();
    let state = actix_web::web::block(move || -> anyhow::Result<_> {
        let engine = aevis_daemon::open_engine(&c)?;
        aevis_daemon::AppState::new(engine, cache, &c)
    })
    .await
    .context("the engine panicked while opening")??;
    let state = actix_web::web::Data::new(state);
    let (server, addr) = aevis_daemon::bind(&cfg, state.clone())?;
    let handle = server.handle();
    actix_web::rt::spawn(server);
    Ok((handle, addr, state))
}

async fn run(a: &ExportArgs, url: &str) -> anyhow::Result<Vec<PathBuf>> {
    let api = Api::new(url, a.token.clone())?;
    let info = api.info().await.with_context(|| format!("cannot reach the daemon at {url}"))?;
    let model = info.models.iter().find(|m| m.id == a.model).ok_or_else(|| {
        anyhow!("the daemon has no model `{}` (it has: {})", a.model, info.models.iter().map(|m| m.id.as_str()).collect::<Vec<_>>().join(", "))
    })?;
    let split = a.split.clone().unwrap_or_else(|| model.splits[0].clone());
    let session_id = match &a.session {
        Some(s) => s.clone(),
        None => {
            let eps = a.epsilon.unwrap_or(model.default_epsilon());
            let mut extract = ExtractParams::for_model(model);
            if let Some(g) = a.gamma {
                extract.gamma = g;
            }
            if a.steps == 0 {
                extract.method = ExtractMethod::Fast;
            } else {
                extract.steps = a.steps;
            }
            let source = match &a.source_file {
                Some(p) => ImageRef::Upload { bytes: std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))? },
                None => ImageRef::Dataset { split: split.clone(), index: a.source },
            };
            let req = CreateSession {
                model: a.model.clone(),
                source,
                adversarial: AdversarialSpec::Attack(AttackParams { target: a.target_class, ..AttackParams::mi_fgsm(eps) }),
                target_class: a.target_class,
                n_targets: a.targets,
                target_split: split.clone(),
                extract,
            };
            let created = api.create_session(&req).await?;
            if let Some(job) = &created.job {
                let mut events = api.job_progress(job);
                let mut last = None;
                while let Some(ev) = events.next().await {
                    let s = ev?;
                    eprint!("\r{:>5.1}% {:<28} loss {:.4}   ", 100.0 * s.progress.fraction, s.progress.stage, s.progress.loss);
                    let done = s.state.is_final();
                    last = Some(s);
                    if done {
                        break;
                    }
                }
                eprintln!();
                match last {
                    Some(s) if s.state == JobState::Done => {}
                    Some(s) => bail!("the extraction job ended {:?}: {}", s.state, s.error.unwrap_or_default()),
                    None => bail!("the job's progress stream ended early"),
                }
            } else {
                eprintln!("session {} answered from the cache", created.session);
            }
            created.session
        }
    };
    let session = api.session(&session_id).await?;
    let graph = api.graph(&a.model).await?;
    let layer = match &a.layer {
        Some(name) => graph.index_of(name).ok_or_else(|| anyhow!("no layer `{name}` in {}", a.model))?,
        None => session.analysis.diverging.or(session.analysis.merging).unwrap_or(graph.layers.len() / 2),
    };
    let detail = api.layer(&session_id, layer).await?;
    let channel = match a.channel {
        Some(c) => c,
        None => {
            // The adversarial's critical feature map with the largest activation difference to the source.
            let cands = if detail.critical[1].is_empty() { (0..detail.gates[1].len()).collect() } else { detail.critical[1].clone() };
            *cands
                .iter()
                .max_by(|&&x, &&y| {
                    let d = |c: usize| detail.max_activation[1][c] - detail.max_activation[0][c];
                    d(x).total_cmp(&d(y))
                })
                .unwrap_or(&0)
        }
    };
    let neuron = api.neuron(&session_id, layer, channel).await?;
    let contribution = if a.back > 0 && layer >= a.back {
        // A region around the largest difference of the adversarial's map.
        let (h, w) = (neuron.height, neuron.width);
        let diff: Vec<f32> = neuron.maps[1].iter().zip(&neuron.maps[0]).map(|(x, y)| x - y).collect();
        let at = aevis_models::ops::argmax(&diff);
        let (y, x) = (at / w, at % w);
        let r = (h / 8).max(1);
        let region = Region { y0: y.saturating_sub(r), y1: (y + r + 1).min(h), x0: x.saturating_sub(r), x1: (x + r + 1).min(w) };
        let req = ContributionRequest {
            target: ContributionTarget::FeatureMap { layer, channel, region: Some(region) },
            earlier: layer - a.back,
            fast: true,
            lambda: 1.0,
            gamma: 0.05,
            steps: 50,
            request_id: 1,
        };
        Some(api.contribution(&session_id, &req).await?)
    } else {
        None
    };
    let mut files = aevis_client::export::render_all(&session, &graph, &model.classes, &detail, &neuron, contribution.as_ref(), &a.out, a.scale)?;
    // The earlier layer, filled with the contribution (the treemap the GUI switches to).
    let earlier = match &contribution {
        Some(c) => {
            let d = api.layer(&session_id, c.request.earlier).await?;
            let (scene, _) = aevis_client::view::layer::scene(&d, aevis_client::view::layer::Fill::Contribution { role: Role::Adversarial }, Some(c));
            files.extend(aevis_client::export::write_scene(&scene, "contribution", &a.out, a.scale)?);
            Some(d)
        }
        None => None,
    };
    print!("{}", summary(&session, &graph, &model.classes, &detail, &neuron, contribution.as_ref(), earlier.as_ref()));
    Ok(files)
}

/// What the exported views show, in words and numbers (printed before the file list).
fn summary(
    s: &SessionResult,
    graph: &aevis_shared::graph::LayerGraph,
    classes: &[String],
    detail: &LayerDetail,
    neuron: &NeuronDetail,
    contribution: Option<&ContributionResult>,
    earlier: Option<&LayerDetail>,
) -> String {
    use std::fmt::Write;
    let class = |c: usize| classes.get(c).cloned().unwrap_or_else(|| format!("class {c}"));
    let layer = |l: Option<usize>| match l.and_then(|i| graph.layers.get(i).map(|g| (i, g))) {
        Some((i, g)) => format!("{} (#{i})", g.name),
        None => "none".into(),
    };
    let img = |p: &ExtractedPath| format!("{} (p = {:.4}, {})", class(p.image.predicted), p.image.confidence, p.image.origin);
    let mut o = String::new();
    let _ = writeln!(o, "session {} on {} ({:.1} s)", s.id, s.request.model, s.seconds);
    let _ = writeln!(o, "source:      {}", img(&s.source));
    let _ = writeln!(o, "adversarial: {}", img(&s.adversarial));
    for (i, t) in s.targets.iter().enumerate() {
        let rep = if i == s.representative { "  <- representative" } else { "" };
        let sim = s.target_similarity.get(i).map_or(String::new(), |v| format!(", similarity to the adversarial {v:.4}"));
        let _ = writeln!(o, "target {i}:    {}{sim}{rep}", img(t));
    }
    let a = &s.analysis;
    let _ = writeln!(o, "diverging point: {}; merging point: {}", layer(a.diverging), layer(a.merging));
    let _ = writeln!(o, "pattern test: {:?}", a.pattern);
    let _ = writeln!(
        o,
        "layer {}: critical feature maps source {}, adversarial {}, target {}",
        layer(Some(detail.layer)),
        detail.critical[0].len(),
        detail.critical[1].len(),
        detail.critical[2].len()
    );
    let mut by_diff: Vec<usize> = (0..detail.max_activation[0].len()).collect();
    let d = |c: usize| detail.max_activation[1][c] - detail.max_activation[0][c];
    by_diff.sort_by(|&x, &y| d(y).total_cmp(&d(x)));
    let top: Vec<String> = by_diff
        .iter()
        .take(5)
        .map(|&c| {
            let crit = if detail.critical[1].contains(&c) { "" } else { " (not critical for A)" };
            format!("{c}: {:+.4}{crit}", d(c))
        })
        .collect();
    let _ = writeln!(o, "largest max-activation difference adversarial − source (channel: difference): {}", top.join(", "));
    let peak = |r: usize| neuron.maps[r].iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let _ = writeln!(
        o,
        "feature map shown: channel {} of {} ({}×{}), max activation source {:.4}, adversarial {:.4}, target {:.4}",
        neuron.channel,
        layer(Some(neuron.layer)),
        neuron.height,
        neuron.width,
        peak(0),
        peak(1),
        peak(2)
    );
    if let Some(c) = contribution {
        let region = match &c.request.target {
            ContributionTarget::FeatureMap { region: Some(r), .. } => format!("rows {}..{}, columns {}..{}", r.y0, r.y1, r.x0, r.x1),
            ContributionTarget::FeatureMap { region: None, .. } => "the whole map".into(),
            ContributionTarget::Prediction => "the prediction".into(),
        };
        let _ = writeln!(o, "contribution to {region} from layer {} ({:.0} ms):", layer(Some(c.request.earlier)), c.millis);
        for role in Role::ALL {
            let list: Vec<String> = c.top[role.index()].iter().take(5).map(|(ch, z, da)| format!("{ch}: z {z:.4}, Δact {da:+.4}")).collect();
            let _ = writeln!(o, "  top contributors for the {role:?}: {}", list.join("; "));
        }
        if let Some(e) = earlier {
            let _ = writeln!(
                o,
                "  critical feature maps of {}: source {}, adversarial {}, target {}",
                layer(Some(e.layer)),
                e.critical[0].len(),
                e.critical[1].len(),
                e.critical[2].len()
            );
        }
    }
    o
}
