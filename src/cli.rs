//! The subcommands.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Instant;

use aevis_models::data::default_data_dir;
use aevis_models::registry::DEFAULT_MODEL;
use aevis_models::{DevicePref, Engine, EngineConfig};
use aevis_shared::datapath::{TripletAnalysis, similarity, top_k_count};
use aevis_shared::protocol::*;
use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

/// Explain why an adversarial example fools a CNN (AEVis, re-implemented).
#[derive(Debug, Parser)]
#[command(name = "aevis", version, about)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Options of the main job (when no subcommand is given).
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// Data folder (weights, images); default: $AEVIS_DATA or ../shared/data.
    #[arg(long, env = "AEVIS_DATA")]
    data: Option<PathBuf>,
    /// Model registry TOML (default: the embedded one).
    #[arg(long)]
    registry: Option<PathBuf>,
    /// Compute device: auto, cpu or cuda.
    #[arg(long, default_value = "auto")]
    device: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Port of the daemon (127.0.0.1).
    #[arg(long, default_value_t = 7341)]
    port: u16,
    /// Cache folder (default: $XDG_CACHE_HOME/aevis or ~/.cache/aevis).
    #[arg(long, env = "AEVIS_CACHE")]
    cache: Option<PathBuf>,
    /// Start only the daemon.
    #[arg(long, conflicts_with = "gui_only")]
    daemon_only: bool,
    /// Start only the GUI, connected to --url.
    #[arg(long)]
    gui_only: bool,
    /// Daemon URL for --gui-only.
    #[arg(long, default_value = "http://127.0.0.1:7341")]
    url: String,
    /// Models to load (default: all of the registry).
    #[arg(long, value_delimiter = ',')]
    models: Option<Vec<String>>,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The main job: daemon + GUI (the default).
    Run(RunArgs),
    /// Only the daemon (see `aevis daemon --help` for its flags).
    Daemon(aevis_daemon::Cli),
    /// Only the GUI, connected to a daemon.
    Gui {
        /// Daemon URL.
        #[arg(long, default_value = "http://127.0.0.1:7341")]
        url: String,
        /// Bearer token of a remote daemon.
        #[arg(long, env = "AEVIS_TOKEN")]
        token: Option<String>,
    },
    /// Headless: create a session through a daemon and write the three views as SVG/PNG.
    Export(crate::headless::ExportArgs),
    /// Top-1/top-5 of a model on a split.
    Evaluate {
        /// Model id.
        #[arg(long, default_value = DEFAULT_MODEL)]
        model: String,
        /// Split name.
        #[arg(long, default_value = "test")]
        split: String,
        #[command(flatten)]
        common: Common,
    },
    /// Attack a slice of a split and write the candidate list (CSV and JSON).
    Attack {
        /// Model id.
        #[arg(long, default_value = DEFAULT_MODEL)]
        model: String,
        /// Split name.
        #[arg(long, default_value = "test")]
        split: String,
        /// First image.
        #[arg(long, default_value_t = 0)]
        offset: usize,
        /// Number of images.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// L∞ budget in pixel units (default: the model's, 8/255 CIFAR, 16/255 ImageNet).
        #[arg(long)]
        epsilon: Option<f32>,
        /// fgsm, ifgsm, pgd or mifgsm.
        #[arg(long, default_value = "mifgsm")]
        kind: String,
        /// Iterations.
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// Target class (targeted attack).
        #[arg(long)]
        target: Option<usize>,
        /// Also measure how many adversarials transfer to this model.
        #[arg(long)]
        transfer_to: Option<String>,
        /// Output prefix: writes PREFIX.csv and PREFIX.json.
        #[arg(long, default_value = "candidates")]
        out: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Extract the datapaths of one triplet and print the analysis (writes JSON).
    Extract {
        /// Model id.
        #[arg(long, default_value = DEFAULT_MODEL)]
        model: String,
        /// Split of the source and targets.
        #[arg(long, default_value = "test")]
        split: String,
        /// Index of the source image.
        #[arg(long, default_value_t = 0)]
        source: usize,
        /// Number of target images.
        #[arg(long, default_value_t = 5)]
        targets: usize,
        /// constrained, dgr (γ = 0), dgr-loss or fast.
        #[arg(long, default_value = "constrained")]
        method: String,
        /// Optimiser steps.
        #[arg(long, default_value_t = 100)]
        steps: usize,
        /// λ (default: the model's tuned value).
        #[arg(long)]
        lambda: Option<f32>,
        /// Output JSON.
        #[arg(long, default_value = "session.json")]
        out: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Tune λ on training images: the sparsest λ whose binarised datapaths keep
    /// the top-1 for ≥ 95% of images with at least one channel in every layer.
    /// With `--gammas`, tune the chain's γ instead (at the model's λ): the
    /// strongest γ whose chained source and target datapaths keep the top-1.
    Tune {
        /// Model id.
        #[arg(long, default_value = DEFAULT_MODEL)]
        model: String,
        /// Split of training images.
        #[arg(long, default_value = "train")]
        split: String,
        /// Number of (correctly classified) images.
        #[arg(long, default_value_t = 10)]
        images: usize,
        /// Candidate λ values.
        #[arg(long, value_delimiter = ',', default_value = "0.01,0.03,0.1,0.3,1")]
        lambdas: Vec<f32>,
        /// Candidate γ values: tune γ on MI-FGSM triplets of `split` instead of λ.
        #[arg(long, value_delimiter = ',')]
        gammas: Option<Vec<f32>>,
        /// Optimiser steps.
        #[arg(long, default_value_t = 100)]
        steps: usize,
        #[command(flatten)]
        common: Common,
    },
    /// The Top-K evaluation of the paper's §6.1 (Table 1), resumable.
    Topk {
        /// Model id.
        #[arg(long, default_value = DEFAULT_MODEL)]
        model: String,
        /// Split of sources and targets.
        #[arg(long, default_value = "test")]
        split: String,
        /// Adversarial examples per source class.
        #[arg(long, default_value_t = 5)]
        per_class: usize,
        /// Targets per adversarial.
        #[arg(long, default_value_t = 20)]
        targets: usize,
        /// Optimiser steps per datapath.
        #[arg(long, default_value_t = 100)]
        steps: usize,
        /// γ of the constrained chain (default: the model's tuned value).
        #[arg(long)]
        gamma: Option<f32>,
        /// Run only every n-th adversarial, `k/n` (start n processes with k = 0..n-1 on one folder).
        #[arg(long, value_parser = parse_shard, default_value = "0/1")]
        shard: (usize, usize),
        /// Output folder (finished triplets are kept there; rerun to resume).
        #[arg(long, default_value = "topk")]
        out: PathBuf,
        #[command(flatten)]
        common: Common,
    },
}

/// Runs the parsed command line.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        None => run_main(args.run),
        Some(Command::Run(r)) => run_main(r),
        Some(Command::Daemon(mut cli)) => {
            if cli.cache_dir.is_none() && cli.config.is_none() {
                cli.cache_dir = Some(default_cache_dir());
            }
            let mut cfg = aevis_daemon::DaemonConfig::from_cli(cli)?;
            if !cfg.data_dir.is_dir() {
                cfg.data_dir = default_data_dir();
            }
            actix_rt_block(aevis_daemon::serve(cfg))
        }
        Some(Command::Gui { url, token }) => aevis_client::run_gui(url, token),
        Some(Command::Export(a)) => crate::headless::export(a),
        Some(Command::Evaluate { model, split, common }) => evaluate(&open(&common, &model)?, &model, &split),
        Some(Command::Attack { model, split, offset, limit, epsilon, kind, steps, target, transfer_to, out, common }) => {
            let mut ids = vec![model.clone()];
            ids.extend(transfer_to.clone());
            let engine = open_many(&common, ids)?;
            attack(&engine, &model, &split, offset, limit, epsilon, &kind, steps, target, transfer_to.as_deref(), &out)
        }
        Some(Command::Extract { model, split, source, targets, method, steps, lambda, out, common }) => {
            extract(&open(&common, &model)?, &model, &split, source, targets, &method, steps, lambda, &out)
        }
        Some(Command::Tune { model, split, images, gammas: Some(gammas), steps, common, .. }) => {
            tune_gamma(&open(&common, &model)?, &model, &split, images, &gammas, steps)
        }
        Some(Command::Tune { model, split, images, lambdas, gammas: None, steps, common }) => tune(&open(&common, &model)?, &model, &split, images, &lambdas, steps),
        Some(Command::Topk { model, split, per_class, targets, steps, gamma, shard, out, common }) => {
            topk(&open(&common, &model)?, &TopkArgs { model, split, per_class, n_targets: targets, steps, gamma, shard, out })
        }
    }
}

fn actix_rt_block<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    actix_web::rt::System::new().block_on(f)
}

fn engine_config(common: &Common, models: Option<Vec<String>>) -> anyhow::Result<EngineConfig> {
    let device: DevicePref = common.device.parse().map_err(anyhow::Error::msg)?;
    Ok(EngineConfig { data_dir: common.data.clone().unwrap_or_else(default_data_dir), registry: common.registry.clone(), device, models })
}

fn open(common: &Common, model: &str) -> anyhow::Result<Engine> {
    open_many(common, vec![model.to_string()])
}

fn open_many(common: &Common, models: Vec<String>) -> anyhow::Result<Engine> {
    let cfg = engine_config(common, Some(models))?;
    let dir = cfg.data_dir.clone();
    Engine::open(cfg).with_context(|| format!("cannot open the models on {}", dir.display()))
}

/// The default cache folder.
pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|s| !s.is_empty()) {
        return PathBuf::from(x).join("aevis");
    }
    std::env::var_os("HOME").map_or_else(|| PathBuf::from(".aevis-cache"), |h| PathBuf::from(h).join(".cache/aevis"))
}

fn run_main(r: RunArgs) -> anyhow::Result<()> {
    if r.gui_only {
        return aevis_client::run_gui(r.url, None);
    }
    let cfg = aevis_daemon::DaemonConfig {
        address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: r.port,
        data_dir: r.common.data.clone().unwrap_or_else(default_data_dir),
        registry: r.common.registry.clone(),
        cache_dir: r.cache.clone().unwrap_or_else(default_cache_dir),
        device: match r.common.device.parse::<DevicePref>().map_err(anyhow::Error::msg)? {
            DevicePref::Auto => aevis_daemon::Device::Auto,
            DevicePref::Cpu => aevis_daemon::Device::Cpu,
            DevicePref::Cuda => aevis_daemon::Device::Cuda,
        },
        models: r.models.clone(),
        ..Default::default()
    };
    let url = format!("http://127.0.0.1:{}", r.port);
    if r.daemon_only {
        return actix_rt_block(aevis_daemon::serve(cfg));
    }
    if !aevis_client::has_display() {
        eprintln!(
            "aevis: no display (DISPLAY and WAYLAND_DISPLAY are unset), so only the daemon starts.\n\
             Connect a GUI from another machine (`aevis gui --url {url}`, through an SSH tunnel or with --token),\n\
             or write the views headless: `aevis export --url {url} --out views`.\n\
             Press Ctrl-C to stop."
        );
        return actix_rt_block(aevis_daemon::serve(cfg));
    }
    let daemon = std::thread::spawn(move || actix_rt_block(aevis_daemon::serve(cfg)));
    // Give the daemon a moment to load the models; the GUI retries on its own.
    std::thread::sleep(std::time::Duration::from_millis(300));
    if daemon.is_finished() {
        return daemon.join().map_err(|_| anyhow::anyhow!("the daemon thread panicked"))?;
    }
    aevis_client::run_gui(url, None)
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(ProgressStyle::with_template("{msg:24} [{bar:40}] {pos}/{len} {elapsed_precise} eta {eta}").expect("valid template").progress_chars("=> "));
    pb.set_message(what.to_string());
    pb
}

fn evaluate(engine: &Engine, model: &str, split: &str) -> anyhow::Result<()> {
    let page = engine.list_images(model, split, 0, 1, None)?;
    let total = page.total;
    let pb = bar(total as u64, "evaluating");
    let (mut top1, mut top5) = (0usize, 0usize);
    for start in (0..total).step_by(100) {
        let n = (total - start).min(100);
        let mut imgs = vec![];
        let mut labels = vec![];
        for i in start..start + n {
            let (img, label, _) = engine.load_image(model, &ImageRef::Dataset { split: split.into(), index: i })?;
            imgs.push(img);
            labels.push(label.unwrap_or(usize::MAX));
        }
        let refs: Vec<_> = imgs.iter().collect();
        for (p, &l) in engine.predict(model, &refs)?.iter().zip(&labels) {
            let mut order: Vec<usize> = (0..p.len()).collect();
            order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
            top1 += usize::from(order[0] == l);
            top5 += usize::from(order.iter().take(5).any(|&c| c == l));
        }
        pb.inc(n as u64);
    }
    pb.finish_and_clear();
    println!(
        "{model} on {split}: top-1 {:.2}% ({top1}/{total}), top-5 {:.2}% ({top5}/{total})",
        100.0 * top1 as f32 / total as f32,
        100.0 * top5 as f32 / total as f32
    );
    Ok(())
}

fn attack_kind(kind: &str) -> anyhow::Result<AttackKind> {
    Ok(match kind {
        "fgsm" => AttackKind::Fgsm,
        "ifgsm" | "i-fgsm" => AttackKind::IFgsm,
        "pgd" => AttackKind::Pgd,
        "mifgsm" | "mi-fgsm" => AttackKind::MiFgsm,
        other => bail!("unknown attack `{other}`; expected fgsm, ifgsm, pgd or mifgsm"),
    })
}

#[allow(clippy::too_many_arguments)]
fn attack(
    engine: &Engine,
    model: &str,
    split: &str,
    offset: usize,
    limit: usize,
    epsilon: Option<f32>,
    kind: &str,
    steps: usize,
    target: Option<usize>,
    transfer_to: Option<&str>,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let info = engine.models().into_iter().find(|m| m.id == model).context("model not loaded")?;
    let default_eps = info.default_epsilon();
    let params = AttackParams { kind: attack_kind(kind)?, epsilon: epsilon.unwrap_or(default_eps), steps, momentum: 1.0, target, seed: 0 };
    let pb = bar(limit as u64, "attacking");
    let req = CandidatesRequest { split: split.into(), offset, limit, params: params.clone() };
    let t0 = Instant::now();
    let list = engine.candidates(model, &req, &mut |p: Progress| {
        pb.set_length(p.total as u64);
        pb.set_position(p.step as u64);
        true
    })?;
    pb.finish_and_clear();
    let secs = t0.elapsed().as_secs_f32();
    let rate = 100.0 * list.candidates.len() as f32 / list.attacked.max(1) as f32;
    println!(
        "{:?} ε={:.4} T={steps} on {model}/{split}[{offset}..{}]: {} of {} correctly classified images fooled ({rate:.1}%) after 8-bit quantisation, {secs:.1} s",
        params.kind,
        params.epsilon,
        offset + limit,
        list.candidates.len(),
        list.attacked
    );
    if let Some(other) = transfer_to {
        let mut imgs = vec![];
        let mut labels = vec![];
        for c in &list.candidates {
            let (clean, label, _) = engine.load_image(model, &ImageRef::Dataset { split: split.into(), index: c.source })?;
            let adv = engine.attack_batch(model, &[&clean], &[label.unwrap_or(c.true_class)], &params)?.remove(0).quantised();
            imgs.push(adv);
            labels.push(c.true_class);
        }
        let refs: Vec<_> = imgs.iter().collect();
        let fooled = engine.predict(other, &refs)?.iter().zip(&labels).filter(|(p, l)| aevis_models::ops::argmax(p) != **l).count();
        println!("transfer to {other}: {fooled} of {} adversarials fool it ({:.1}%)", imgs.len(), 100.0 * fooled as f32 / imgs.len().max(1) as f32);
    }
    let mut w = csv::Writer::from_path(out.with_extension("csv")).with_context(|| format!("cannot write {}", out.with_extension("csv").display()))?;
    w.write_record(["source", "true_class", "clean_prob", "adversarial_class", "adversarial_prob", "score"])?;
    let mut sorted = list.candidates.clone();
    sorted.sort_by(|a, b| b.score.total_cmp(&a.score));
    for c in &sorted {
        w.write_record([
            c.source.to_string(),
            info.classes[c.true_class].clone(),
            format!("{:.4}", c.clean_prob),
            info.classes[c.adversarial_class].clone(),
            format!("{:.4}", c.adversarial_prob),
            format!("{:.5}", c.score),
        ])?;
    }
    w.flush()?;
    std::fs::write(out.with_extension("json"), serde_json::to_vec_pretty(&list)?)?;
    println!("wrote {} and {}", out.with_extension("csv").display(), out.with_extension("json").display());
    Ok(())
}

fn method_params(method: &str, steps: usize, lambda: f32) -> anyhow::Result<ExtractParams> {
    let mut p = ExtractParams::default_for(lambda);
    p.steps = steps;
    match method {
        "constrained" => {}
        "dgr" => p.gamma = 0.0,
        "dgr-loss" => {
            p.method = ExtractMethod::DgrLoss;
            p.gamma = 0.0;
            p.steps = steps.min(30);
        }
        "fast" => p.method = ExtractMethod::Fast,
        other => bail!("unknown method `{other}`; expected constrained, dgr, dgr-loss or fast"),
    }
    Ok(p)
}

#[allow(clippy::too_many_arguments)]
fn extract(engine: &Engine, model: &str, split: &str, source: usize, targets: usize, method: &str, steps: usize, lambda: Option<f32>, out: &std::path::Path) -> anyhow::Result<()> {
    let info = engine.models().into_iter().find(|m| m.id == model).context("model not loaded")?;
    let eps = info.default_epsilon();
    let req = CreateSession {
        model: model.into(),
        source: ImageRef::Dataset { split: split.into(), index: source },
        adversarial: AdversarialSpec::Attack(AttackParams::mi_fgsm(eps)),
        target_class: None,
        n_targets: targets,
        target_split: split.into(),
        extract: method_params(method, steps, lambda.unwrap_or(info.lambda))?,
    };
    let pb = bar(1000, "extracting");
    let s = engine.run_session(&req, &mut |p: Progress| {
        pb.set_message(format!("{} (loss {:.4})", p.stage, p.loss));
        pb.set_position((p.fraction * 1000.0) as u64);
        true
    })?;
    pb.finish_and_clear();
    let name = |c: usize| info.classes[c].clone();
    println!("source {} ({}) → adversarial {} ; {} targets, representative #{}", s.source.image.origin, name(s.source.image.predicted), name(s.adversarial.image.predicted), s.targets.len(), s.representative);
    for (role, p) in [("source", &s.source), ("adversarial", &s.adversarial), ("target", &s.targets[s.representative])] {
        let f = &p.faithfulness;
        println!("  {role:12} kept {:5.1}% of channels, binarised keeps top-1: {}, loss {:.4}, {} steps", 100.0 * f.kept_overall, f.binarised_keeps_top1, f.loss, f.steps);
    }
    let a = &s.analysis;
    let g = engine.graph(model)?;
    let lname = |l: Option<usize>| l.map_or("none".to_string(), |i| g.layers[i].name.clone());
    println!("  diverging point {}, merging point {}, pattern (r={}): n_l={} holds={}", lname(a.diverging), lname(a.merging), a.pattern.r, a.pattern.n_l, a.pattern.holds);
    println!("  extraction took {:.2} s", s.seconds);
    std::fs::write(out, serde_json::to_vec_pretty(&s)?).with_context(|| format!("cannot write {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

/// What `aevis topk` was asked for.
struct TopkArgs {
    model: String,
    split: String,
    per_class: usize,
    n_targets: usize,
    steps: usize,
    gamma: Option<f32>,
    shard: (usize, usize),
    out: PathBuf,
}

fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("expected k/n with 0 ≤ k < n (e.g. 0/2), got `{s}`");
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let (k, n): (usize, usize) = (k.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
    if n == 0 || k >= n {
        return Err(bad());
    }
    Ok((k, n))
}

/// The settings of a Top-K run, kept in its folder: a folder is resumed only with the same settings.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct TopkSettings {
    model: String,
    split: String,
    per_class: usize,
    n_targets: usize,
    attack: AttackParams,
    ours: ExtractParams,
    dgr: ExtractParams,
}

/// One adversarial of the Top-K evaluation with its targets, kept on disk to resume.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct TopkRecord {
    source: usize,
    true_class: usize,
    adversarial_class: usize,
    /// Indices (in the split) of the targets, in the order of `dgr` and `ours`.
    targets: Vec<usize>,
    /// Per method: `(similarity to the adversarial, pattern holds)` per target.
    dgr: Vec<(f32, bool)>,
    ours: Vec<(f32, bool)>,
    /// Per method: the pattern test of each target (`n_l`, peak at the last layer).
    dgr_tests: Vec<aevis_shared::datapath::PatternTest>,
    ours_tests: Vec<aevis_shared::datapath::PatternTest>,
    /// Per method and target: `d_l(adv, src)` and `d_l(adv, tgt)` per gated layer (absent in
    /// records of the first runs), so other pattern rules can be checked afterwards.
    #[serde(default)]
    dgr_distances: Vec<(Vec<f32>, Vec<f32>)>,
    #[serde(default)]
    ours_distances: Vec<(Vec<f32>, Vec<f32>)>,
}

/// Writes a file whole or not at all (two shards may share the folder).
fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The Top-K evaluation of §6.1 (ALGORITHMS.md "Top-K score").
///
/// Per adversarial, `ours` is one constrained chain (adversarial → source →
/// the `n_targets` targets, each constrained by both). DGR is the same
/// extraction with γ = 0: its adversarial datapath is the chain's first one
/// (nothing constrains the first datapath, so the two are the same
/// computation), its source is extracted alone, and its target datapaths
/// depend on nothing but the target image, so they are extracted once per
/// target class and kept in the folder (`dgr-targets-<class>.json`).
fn topk(engine: &Engine, a: &TopkArgs) -> anyhow::Result<()> {
    let (model, split) = (a.model.as_str(), a.split.as_str());
    std::fs::create_dir_all(&a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
    let info = engine.models().into_iter().find(|m| m.id == model).context("model not loaded")?;
    let classes = info.classes.len();
    let eps = info.default_epsilon();
    let mut ours = ExtractParams::for_model(&info);
    ours.steps = a.steps;
    if let Some(g) = a.gamma {
        ours.gamma = g;
    }
    let dgr = ExtractParams { gamma: 0.0, ..ours.clone() };
    let settings = TopkSettings { model: model.into(), split: split.into(), per_class: a.per_class, n_targets: a.n_targets, attack: AttackParams::mi_fgsm(eps), ours: ours.clone(), dgr: dgr.clone() };
    let settings_path = a.out.join("settings.json");
    match std::fs::read(&settings_path) {
        Ok(text) => {
            let old: TopkSettings = serde_json::from_slice(&text).with_context(|| format!("{} is not a Top-K settings file", settings_path.display()))?;
            if old != settings {
                bail!("{} holds a run with other settings ({old:?}); give another --out or the same settings", a.out.display());
            }
        }
        Err(_) => write_atomic(&settings_path, &serde_json::to_vec_pretty(&settings)?)?,
    }
    println!("Top-K on {model}, split {split}: MI-FGSM ε = {eps:.4}, {} targets, ours γ = {}, DGR γ = 0, λ = {}, {} steps; folder {}", a.n_targets, ours.gamma, ours.lambda, ours.steps, a.out.display());

    // Sources: the first `per_class` correctly classified images of each class that MI-FGSM fools.
    let page = engine.list_images(model, split, 0, usize::MAX, None)?;
    let mut chosen: Vec<(usize, usize)> = vec![];
    let mut count = vec![0usize; classes];
    let pb = bar((a.per_class * classes) as u64, "choosing adversarials");
    for e in &page.entries {
        if e.label != e.predicted || count[e.label] >= a.per_class {
            continue;
        }
        let r = engine.attack(model, &AttackRequest { image: ImageRef::Dataset { split: split.into(), index: e.index }, params: settings.attack.clone() })?;
        if r.success {
            count[e.label] += 1;
            chosen.push((e.index, e.label));
            pb.inc(1);
        }
    }
    pb.finish_and_clear();
    // The targets of a class, as `run_session` draws them: the first correctly classified images of it.
    let targets_of = |c: usize| -> Vec<usize> { page.entries.iter().filter(|e| e.label == c && e.predicted == c).map(|e| e.index).take(a.n_targets).collect() };
    let record_path = |src: usize| a.out.join(format!("source-{src}.json"));
    let read_record = |src: usize| std::fs::read(record_path(src)).ok().and_then(|t| serde_json::from_slice::<TopkRecord>(&t).ok());

    let (k, n) = a.shard;
    let mine: Vec<(usize, usize)> = chosen.iter().enumerate().filter(|(j, _)| j % n == k).map(|(_, &c)| c).collect();
    let pb = bar(mine.len() as u64, "adversarials");
    for &(src, label) in &mine {
        if read_record(src).is_some() {
            pb.inc(1);
            continue;
        }
        let req = CreateSession {
            model: model.into(),
            source: ImageRef::Dataset { split: split.into(), index: src },
            adversarial: AdversarialSpec::Attack(settings.attack.clone()),
            target_class: None,
            n_targets: a.n_targets,
            target_split: split.into(),
            extract: ours.clone(),
        };
        let s = engine.run_session(&req, &mut |p: Progress| {
            pb.set_message(format!("#{src} {} {}/{}", p.stage, p.step, p.total));
            true
        })?;
        let c = s.adversarial.image.predicted;
        let tidx = targets_of(c);
        let origins: Vec<String> = tidx.iter().map(|i| format!("{split} #{i}")).collect();
        let drawn: Vec<&String> = s.targets.iter().map(|t| &t.image.origin).collect();
        if drawn.iter().map(|o| o.as_str()).ne(origins.iter().map(String::as_str)) {
            bail!("the session drew targets {drawn:?}, the DGR side expected {origins:?}");
        }
        // DGR: the source alone; the targets of class c once for the whole run.
        pb.set_message(format!("#{src} DGR source"));
        let (src_img, _, _) = engine.load_image(model, &ImageRef::Dataset { split: split.into(), index: src })?;
        let dgr_src = engine.extract_images(model, &[&src_img.quantised()], &dgr)?.remove(0).datapath;
        let cache = a.out.join(format!("dgr-targets-{c}.json"));
        let cached: Option<Vec<(usize, aevis_shared::datapath::Datapath)>> = std::fs::read(&cache).ok().and_then(|t| serde_json::from_slice(&t).ok());
        let dgr_targets = match cached {
            Some(t) if t.iter().map(|(i, _)| *i).eq(tidx.iter().copied()) => t,
            _ => {
                pb.set_message(format!("#{src} DGR targets of class {c}"));
                let imgs: Vec<_> = tidx.iter().map(|&i| engine.load_image(model, &ImageRef::Dataset { split: split.into(), index: i }).map(|r| r.0.quantised())).collect::<Result<_, _>>()?;
                let refs: Vec<_> = imgs.iter().collect();
                let t: Vec<_> = tidx.iter().copied().zip(engine.extract_images(model, &refs, &dgr)?.into_iter().map(|e| e.datapath)).collect();
                write_atomic(&cache, &serde_json::to_vec(&t)?)?;
                t
            }
        };
        let adv = &s.adversarial.datapath;
        let test = |src: &aevis_shared::datapath::Datapath, t: &aevis_shared::datapath::Datapath, p: &ExtractParams| {
            let a = TripletAnalysis::new(adv, src, t, p.distance, p.pattern_r);
            (similarity(adv, t), a.pattern, (a.adv_src, a.adv_tgt))
        };
        let d: Vec<_> = dgr_targets.iter().map(|(_, t)| test(&dgr_src, t, &dgr)).collect();
        let o: Vec<_> = s.targets.iter().map(|t| test(&s.source.datapath, &t.datapath, &ours)).collect();
        let rec = TopkRecord {
            source: src,
            true_class: label,
            adversarial_class: c,
            targets: tidx,
            dgr: d.iter().map(|(s, p, _)| (*s, p.holds)).collect(),
            ours: o.iter().map(|(s, p, _)| (*s, p.holds)).collect(),
            dgr_tests: d.iter().map(|x| x.1).collect(),
            ours_tests: o.iter().map(|x| x.1).collect(),
            dgr_distances: d.into_iter().map(|x| x.2).collect(),
            ours_distances: o.into_iter().map(|x| x.2).collect(),
        };
        write_atomic(&record_path(src), &serde_json::to_vec(&rec)?)?;
        pb.inc(1);
    }
    pb.finish_and_clear();

    // Table over every finished adversarial in the folder (all shards): per true class and on average.
    let records: Vec<TopkRecord> = chosen.iter().filter_map(|&(src, _)| read_record(src)).collect();
    if records.len() < chosen.len() {
        println!("{} of {} adversarials are done (other shards still running?); the table covers those", records.len(), chosen.len());
    }
    let mut table = String::from("| class | n | DGR top-1 | ours top-1 | DGR top-3 | ours top-3 | DGR top-5 | ours top-5 |\n|---|---|---|---|---|---|---|---|\n");
    let mut csv_rows = vec![];
    let score = |rs: &[&TopkRecord], k: usize, ours: bool| -> f32 {
        if rs.is_empty() {
            return 0.0;
        }
        rs.iter().map(|r| top_k_count(if ours { &r.ours } else { &r.dgr }, k) as f32).sum::<f32>() / rs.len() as f32
    };
    let mut groups: Vec<(String, Vec<&TopkRecord>)> = (0..classes).map(|c| (info.classes[c].clone(), records.iter().filter(|r| r.true_class == c).collect())).collect();
    groups.push(("average".into(), records.iter().collect()));
    for (name, rs) in &groups {
        let vals: Vec<f32> = [1, 3, 5].iter().flat_map(|&k| [score(rs, k, false), score(rs, k, true)]).collect();
        table.push_str(&format!("| {name} | {} | {} |\n", rs.len(), vals.iter().map(|v| format!("{v:.3}")).collect::<Vec<_>>().join(" | ")));
        csv_rows.push((name.clone(), rs.len(), vals));
    }
    let patterns = |ours: bool| records.iter().map(|r| (if ours { &r.ours } else { &r.dgr }).iter().filter(|p| p.1).count()).sum::<usize>();
    let triplets: usize = records.iter().map(|r| r.ours.len()).sum();
    println!("{table}");
    println!("patterns among all {triplets} triplets: DGR {}, ours {}", patterns(false), patterns(true));
    for (name, ours) in [("DGR", false), ("ours", true)] {
        let tests: Vec<&aevis_shared::datapath::PatternTest> = records.iter().flat_map(|r| if ours { &r.ours_tests } else { &r.dgr_tests }).collect();
        let mut hist = vec![0usize; tests.first().map_or(0, |t| t.r) + 1];
        let top = hist.len() - 1;
        for t in &tests {
            hist[t.n_l.min(top)] += 1;
        }
        let mean = tests.iter().map(|t| t.n_l as f32).sum::<f32>() / tests.len().max(1) as f32;
        println!("{name}: n_l mean {mean:.2} (histogram 0..=r: {hist:?}); diff peaks at the last layer in {} of {}", tests.iter().filter(|t| t.peak_at_last).count(), tests.len());
    }
    // The same test over the block outputs only (the per-layer series of a residual network
    // alternates between a block's inner layers and its output, which caps n_l near r/2).
    let outs = engine.graph(model)?.block_outputs();
    let ours_r = ours.pattern_r;
    for (name, ours) in [("DGR", false), ("ours", true)] {
        let series: Vec<&(Vec<f32>, Vec<f32>)> = records.iter().flat_map(|r| if ours { &r.ours_distances } else { &r.dgr_distances }).collect();
        let tests: Vec<aevis_shared::datapath::PatternTest> = series
            .iter()
            .map(|(s, t)| {
                let diff: Vec<f32> = outs.iter().filter_map(|&i| Some(s.get(i)? - t.get(i)?)).collect();
                aevis_shared::datapath::pattern_test(&diff, ours_r)
            })
            .collect();
        if tests.is_empty() {
            continue;
        }
        let mean = tests.iter().map(|t| t.n_l as f32).sum::<f32>() / tests.len() as f32;
        println!(
            "{name}, over the {} block outputs only ({} triplets with distances kept): patterns {}, n_l mean {mean:.2}, diff peaks at the last block in {}",
            outs.len(),
            tests.len(),
            tests.iter().filter(|t| t.holds).count(),
            tests.iter().filter(|t| t.peak_at_last).count()
        );
    }
    std::fs::write(a.out.join("table.md"), &table)?;
    let mut w = csv::Writer::from_path(a.out.join("table.csv"))?;
    w.write_record(["class", "n", "dgr_top1", "ours_top1", "dgr_top3", "ours_top3", "dgr_top5", "ours_top5"])?;
    for (name, n, vals) in &csv_rows {
        let mut row = vec![name.clone(), n.to_string()];
        row.extend(vals.iter().map(|v| format!("{v:.4}")));
        w.write_record(row)?;
    }
    w.flush()?;
    std::fs::write(a.out.join("table.json"), serde_json::to_vec_pretty(&serde_json::json!({ "settings": settings, "rows": csv_rows }))?)?;
    Ok(())
}

/// Tunes the chain's γ on MI-FGSM triplets of `split` (training images) at
/// the model's λ: the strongest γ at which the chained source and target
/// datapaths, binarised, still keep their top-1 for ≥ 95 % of them (the
/// adversarial's datapath comes first and does not depend on γ).
fn tune_gamma(engine: &Engine, model: &str, split: &str, images: usize, gammas: &[f32], steps: usize) -> anyhow::Result<()> {
    let info = engine.models().into_iter().find(|m| m.id == model).context("model not loaded")?;
    let eps = info.default_epsilon();
    let page = engine.list_images(model, split, 0, usize::MAX, None)?;
    let mut sources = vec![];
    for e in page.entries.iter().filter(|e| e.label == e.predicted) {
        if sources.len() >= images {
            break;
        }
        if engine.attack(model, &AttackRequest { image: ImageRef::Dataset { split: split.into(), index: e.index }, params: AttackParams::mi_fgsm(eps) })?.success {
            sources.push(e.index);
        }
    }
    println!("γ on {} MI-FGSM triplets of `{split}` (sources {sources:?}), λ = {}, {steps} steps", sources.len(), info.lambda);
    println!("| γ | source keeps top-1 | target keeps top-1 | d(adv, src) | d(adv, tgt) | d(src, tgt) | seconds |\n|---|---|---|---|---|---|---|");
    let mut best: Option<f32> = None;
    for &gamma in gammas {
        let t0 = Instant::now();
        let mut p = ExtractParams::for_model(&info);
        p.gamma = gamma;
        p.steps = steps;
        let (mut ks, mut kt, mut d) = (0usize, 0usize, [0.0f32; 3]);
        for &src in &sources {
            let req = CreateSession {
                model: model.into(),
                source: ImageRef::Dataset { split: split.into(), index: src },
                adversarial: AdversarialSpec::Attack(AttackParams::mi_fgsm(eps)),
                target_class: None,
                n_targets: 1,
                target_split: split.into(),
                extract: p.clone(),
            };
            let s = engine.run_session(&req, &mut |_| true)?;
            ks += s.source.faithfulness.binarised_keeps_top1 as usize;
            kt += s.targets[0].faithfulness.binarised_keeps_top1 as usize;
            let td = aevis_shared::datapath::total_distance;
            d[0] += td(&s.adversarial.datapath, &s.source.datapath);
            d[1] += td(&s.adversarial.datapath, &s.targets[0].datapath);
            d[2] += td(&s.source.datapath, &s.targets[0].datapath);
        }
        let m = sources.len().max(1) as f32;
        println!("| {gamma} | {ks}/{} | {kt}/{} | {:.2} | {:.2} | {:.2} | {:.1} |", sources.len(), sources.len(), d[0] / m, d[1] / m, d[2] / m, t0.elapsed().as_secs_f32());
        if (ks + kt) as f32 >= 0.95 * 2.0 * m {
            best = Some(best.map_or(gamma, |b: f32| b.max(gamma)));
        }
    }
    match best {
        Some(g) => println!("tuned γ = {g} (the strongest that keeps the chain faithful); put it in the model's registry entry"),
        None => println!("no γ qualified; try smaller values"),
    }
    Ok(())
}

fn tune(engine: &Engine, model: &str, split: &str, images: usize, lambdas: &[f32], steps: usize) -> anyhow::Result<()> {
    let page = engine.list_images(model, split, 0, 1000, None)?;
    let idx: Vec<usize> = page.entries.iter().filter(|e| e.label == e.predicted).map(|e| e.index).take(images).collect();
    let mut imgs = vec![];
    for &i in &idx {
        imgs.push(engine.load_image(model, &ImageRef::Dataset { split: split.into(), index: i })?.0);
    }
    let refs: Vec<_> = imgs.iter().collect();
    println!("| λ | binarised keeps top-1 | every layer keeps a channel | channels kept | seconds |\n|---|---|---|---|---|");
    let mut best: Option<f32> = None;
    for &lambda in lambdas {
        let mut p = ExtractParams::default_for(lambda);
        p.steps = steps;
        p.gamma = 0.0;
        let t0 = Instant::now();
        let out = engine.extract_images(model, &refs, &p)?;
        let keep = out.iter().filter(|e| e.faithfulness.binarised_keeps_top1).count();
        let connected = out.iter().filter(|e| e.faithfulness.kept_per_layer.iter().all(|&k| k > 0.0)).count();
        let ok = out.iter().filter(|e| e.faithfulness.binarised_keeps_top1 && e.faithfulness.kept_per_layer.iter().all(|&k| k > 0.0)).count();
        let kept = out.iter().map(|e| e.faithfulness.kept_overall).sum::<f32>() / out.len() as f32;
        println!("| {lambda} | {keep}/{} | {connected}/{} | {:.1}% | {:.1} |", out.len(), out.len(), 100.0 * kept, t0.elapsed().as_secs_f32());
        if ok as f32 >= 0.95 * out.len() as f32 {
            best = Some(best.map_or(lambda, |b: f32| b.max(lambda)));
        }
    }
    match best {
        Some(l) => println!("tuned λ = {l} (the sparsest that qualifies); put it in the model's registry entry"),
        None => println!("no λ qualified; try smaller values"),
    }
    Ok(())
}
