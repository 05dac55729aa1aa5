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
        Some(Command::Tune { model, split, images, lambdas, steps, common }) => tune(&open(&common, &model)?, &model, &split, images, &lambdas, steps),
        Some(Command::Topk { model, split, per_class, targets, steps, out, common }) => {
            topk(&open(&common, &model)?, &model, &split, per_class, targets, steps, &out)
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
    let default_eps = if info.input[1] > 64 { 16.0 / 255.0 } else { 8.0 / 255.0 };
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
    let eps = if info.input[1] > 64 { 16.0 / 255.0 } else { 8.0 / 255.0 };
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

/// One finished triplet group of the Top-K evaluation, kept on disk to resume.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct TopkRecord {
    source: usize,
    true_class: usize,
    adversarial_class: usize,
    /// Per method: `(similarity, pattern holds)` per target.
    dgr: Vec<(f32, bool)>,
    ours: Vec<(f32, bool)>,
}

fn topk(engine: &Engine, model: &str, split: &str, per_class: usize, n_targets: usize, steps: usize, out: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    let info = engine.models().into_iter().find(|m| m.id == model).context("model not loaded")?;
    let classes = info.classes.len();
    let eps = if info.input[1] > 64 { 16.0 / 255.0 } else { 8.0 / 255.0 };
    // Sources: the first `per_class` correctly classified images of each class that MI-FGSM fools.
    let page = engine.list_images(model, split, 0, 1000, None)?;
    let mut chosen: Vec<(usize, usize)> = vec![];
    let mut count = vec![0usize; classes];
    let pb = bar((per_class * classes) as u64, "choosing adversarials");
    for e in &page.entries {
        if e.label != e.predicted || count[e.label] >= per_class {
            continue;
        }
        let r = engine.attack(model, &AttackRequest { image: ImageRef::Dataset { split: split.into(), index: e.index }, params: AttackParams::mi_fgsm(eps) })?;
        if r.success {
            count[e.label] += 1;
            chosen.push((e.index, e.label));
            pb.inc(1);
        }
    }
    pb.finish_and_clear();
    let lambda = info.lambda;
    let pb = bar(chosen.len() as u64, "triplets");
    let mut records = vec![];
    for &(src, label) in &chosen {
        let path = out.join(format!("source-{src}.json"));
        if let Ok(text) = std::fs::read(&path)
            && let Ok(r) = serde_json::from_slice::<TopkRecord>(&text)
        {
            records.push(r);
            pb.inc(1);
            continue;
        }
        let mut rec = TopkRecord { source: src, true_class: label, adversarial_class: 0, dgr: vec![], ours: vec![] };
        for (gamma, slot) in [(0.0f32, 0), (0.05, 1)] {
            let mut p = ExtractParams::default_for(lambda);
            p.gamma = gamma;
            p.steps = steps;
            let req = CreateSession {
                model: model.into(),
                source: ImageRef::Dataset { split: split.into(), index: src },
                adversarial: AdversarialSpec::Attack(AttackParams::mi_fgsm(eps)),
                target_class: None,
                n_targets,
                target_split: split.into(),
                extract: p.clone(),
            };
            let s = engine.run_session(&req, &mut |_| true)?;
            rec.adversarial_class = s.adversarial.image.predicted;
            let pairs: Vec<(f32, bool)> = s
                .targets
                .iter()
                .map(|t| {
                    let a = TripletAnalysis::new(&s.adversarial.datapath, &s.source.datapath, &t.datapath, p.distance, p.pattern_r);
                    (similarity(&s.adversarial.datapath, &t.datapath), a.pattern.holds)
                })
                .collect();
            if slot == 0 { rec.dgr = pairs } else { rec.ours = pairs }
        }
        std::fs::write(&path, serde_json::to_vec(&rec)?)?;
        records.push(rec);
        pb.inc(1);
    }
    pb.finish_and_clear();
    // Table: per true class and on average, Top-1/3/5 for DGR and ours.
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
    println!("{table}");
    std::fs::write(out.join("table.md"), &table)?;
    let mut w = csv::Writer::from_path(out.join("table.csv"))?;
    w.write_record(["class", "n", "dgr_top1", "ours_top1", "dgr_top3", "ours_top3", "dgr_top5", "ours_top5"])?;
    for (name, n, vals) in &csv_rows {
        let mut row = vec![name.clone(), n.to_string()];
        row.extend(vals.iter().map(|v| format!("{v:.4}")));
        w.write_record(row)?;
    }
    w.flush()?;
    std::fs::write(out.join("table.json"), serde_json::to_vec_pretty(&csv_rows)?)?;
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
