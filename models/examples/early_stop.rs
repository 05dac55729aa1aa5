//! How many Adam steps a datapath needs: full-mode triplets of CIFAR-10
//! ResNet-56 (MI-FGSM adversarial, one target) with 100 steps against early
//! stopping (`tolerance`, `patience`) and the fast mode's warm start. Prints,
//! per setting, the seconds, the steps each stage took, the loss of each
//! datapath relative to the 100-step one, and the gate distance to it.
//!
//! `GAMMAS=0.05,0.001` runs each setting at each γ (default 0.05) and adds
//! the distances between the three datapaths; `SWEEP_ONLY=1` keeps only the
//! early-stopping setting per γ (the γ sweep on test images 0–2 quoted in
//! TESTING.md). Exploration on test images only: tuning uses `aevis tune`
//! on training images.
//!
//! `cargo run --release -p aevis-models --example early_stop [-- N_SOURCES]`

use aevis_models::data::default_data_dir;
use aevis_models::{Engine, EngineConfig};
use aevis_shared::protocol::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args().nth(1).map_or(Ok(4), |s| s.parse())?;
    let mut cfg = EngineConfig::default_for(default_data_dir());
    cfg.models = Some(vec!["cifar10-resnet56".into()]);
    let engine = Engine::open(cfg)?;
    let model = "cifar10-resnet56";
    let gammas: Vec<f32> = match std::env::var("GAMMAS") {
        Ok(v) => v.split(',').map(|g| g.parse()).collect::<Result<_, _>>()?,
        Err(_) => vec![0.05],
    };
    let mut settings: Vec<(String, f32, usize, bool, f32)> = vec![];
    for &g in &gammas {
        if std::env::var("SWEEP_ONLY").is_err() {
            settings.push((format!("γ {g} 100 steps"), 0.0, 10, false, g));
            settings.push((format!("γ {g} tol 1e-3 p5"), 1e-3, 5, false, g));
            settings.push((format!("γ {g} warm tol 1e-3 p5"), 1e-3, 5, true, g));
        } else {
            settings.push((format!("γ {g} tol 1e-3 p5"), 1e-3, 5, false, g));
        }
    }
    for source in 0..n {
        let mut base: Option<SessionResult> = None;
        for (name, tol, patience, warm, gamma) in settings.iter().cloned() {
            let mut extract = ExtractParams::default_for(0.01);
            extract.tolerance = tol;
            extract.patience = patience;
            extract.warm_start = warm;
            extract.gamma = gamma;
            let req = CreateSession {
                model: model.into(),
                source: ImageRef::Dataset { split: "test".into(), index: source },
                adversarial: AdversarialSpec::Attack(AttackParams::mi_fgsm(8.0 / 255.0)),
                target_class: None,
                n_targets: 1,
                target_split: "test".into(),
                extract,
            };
            let t0 = std::time::Instant::now();
            let s = engine.run_session(&req, &mut |_| true)?;
            let secs = t0.elapsed().as_secs_f32();
            let paths = [&s.adversarial, &s.source, &s.targets[0]];
            let steps: Vec<usize> = paths.iter().map(|p| p.faithfulness.steps).collect();
            let b = base.get_or_insert_with(|| s.clone());
            let bpaths = [&b.adversarial, &b.source, &b.targets[0]];
            let ratio: Vec<String> = paths.iter().zip(&bpaths).map(|(p, q)| format!("{:.3}", p.faithfulness.loss / q.faithfulness.loss)).collect();
            let dist: Vec<String> = paths
                .iter()
                .zip(&bpaths)
                .map(|(p, q)| {
                    let (a, c) = (p.datapath.flat(), q.datapath.flat());
                    format!("{:.2}", a.iter().zip(&c).map(|(x, y)| (x - y) * (x - y)).sum::<f32>().sqrt())
                })
                .collect();
            let kept: Vec<String> = paths.iter().map(|p| format!("{:.2}{}", p.faithfulness.kept_overall, if p.faithfulness.binarised_keeps_top1 { "" } else { "!" })).collect();
            println!(
                "src {source} | {name:<24} | {secs:6.2} s | steps {steps:?} | loss/base {ratio:?} | dist {dist:?} | kept {kept:?} | d(a,s) {:.2} d(a,t) {:.2} d(s,t) {:.2} | div {:?} merge {:?} pattern {}",
                total(&s.adversarial, &s.source), total(&s.adversarial, &s.targets[0]), total(&s.source, &s.targets[0]),
                s.analysis.diverging, s.analysis.merging, s.analysis.pattern.holds
            );
        }
    }
    Ok(())
}

fn total(a: &ExtractedPath, b: &ExtractedPath) -> f32 {
    a.datapath.flat().iter().zip(b.datapath.flat()).map(|(x, y)| (x - y) * (x - y)).sum::<f32>().sqrt()
}
