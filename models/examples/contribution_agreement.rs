//! Case check of contribution analysis on real data (issue "Contribution
//! analysis online"): an MI-FGSM triplet of CIFAR-10 ResNet-56, 20 regions
//! chosen where the adversarial's activation differs most from the source's,
//! contributions from the layer one stage back in fast and in SGD mode, and
//! how often the two modes agree on the top 3.
//!
//! `cargo run --release -p aevis-models --example contribution_agreement [-- SOURCE_INDEX]`

use aevis_models::data::default_data_dir;
use aevis_models::{Engine, EngineConfig};
use aevis_shared::protocol::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let source: usize = std::env::args().nth(1).map_or(Ok(0), |s| s.parse())?;
    let mut cfg = EngineConfig::default_for(default_data_dir());
    cfg.models = Some(vec!["cifar10-resnet56".into()]);
    let engine = Engine::open(cfg)?;
    let model = "cifar10-resnet56";
    let graph = engine.graph(model)?;
    let mut extract = ExtractParams::default_for(0.01);
    extract.method = ExtractMethod::Fast;
    let req = CreateSession {
        model: model.into(),
        source: ImageRef::Dataset { split: "test".into(), index: source },
        adversarial: AdversarialSpec::Attack(AttackParams::mi_fgsm(8.0 / 255.0)),
        target_class: None,
        n_targets: 1,
        target_split: "test".into(),
        extract,
    };
    let session = engine.run_session(&req, &mut |_| true)?;
    let target = graph.index_of("layer3.0.out").ok_or("no layer3.0.out")?;
    let earlier = graph.index_of("layer2.0.out").ok_or("no layer2.0.out")?;
    let detail = engine.layer_detail(&session, target)?;
    let mut order: Vec<usize> = (0..detail.gates[0].len()).collect();
    let diff = |c: usize| (detail.max_activation[1][c] - detail.max_activation[0][c]).abs();
    order.sort_by(|&a, &b| diff(b).total_cmp(&diff(a)));
    println!("source test #{source}: class {} → adversarial {}", session.source.image.predicted, session.adversarial.image.predicted);
    println!("target layer {} ← earlier layer {}", graph.layers[target].name, graph.layers[earlier].name);
    let (mut agree, mut overlap, mut fast_ms, mut sgd_ms) = (0usize, 0usize, vec![], vec![]);
    for (k, &channel) in order.iter().take(20).enumerate() {
        let n = engine.neuron_detail(&session, target, channel, None)?;
        let d: Vec<f32> = n.maps[1].iter().zip(&n.maps[0]).map(|(a, b)| a - b).collect();
        let at = d.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i);
        let (y, x) = (at / n.width, at % n.width);
        let region = Region { y0: y.saturating_sub(1), y1: (y + 2).min(n.height), x0: x.saturating_sub(1), x1: (x + 2).min(n.width) };
        let mut ask = ContributionRequest {
            target: ContributionTarget::FeatureMap { layer: target, channel, region: Some(region) },
            earlier,
            fast: true,
            lambda: 1.0,
            gamma: 0.05,
            steps: 50,
            request_id: k as u64,
        };
        let fast = engine.contribution(&session, &ask, &|| false)?;
        ask.fast = false;
        let sgd = engine.contribution(&session, &ask, &|| false)?;
        fast_ms.push(fast.millis);
        sgd_ms.push(sgd.millis);
        let top3 = |r: &ContributionResult| -> Vec<usize> { r.top[1].iter().take(3).map(|t| t.0).collect() };
        let (f, s) = (top3(&fast), top3(&sgd));
        let common = f.iter().filter(|c| s.contains(c)).count();
        overlap += common;
        agree += usize::from(common == 3);
        println!("region {k:2}: channel {channel:2} rows {}..{} cols {}..{}  fast top-3 {f:?}  sgd top-3 {s:?}  shared {common}", region.y0, region.y1, region.x0, region.x1);
    }
    let median = |v: &mut Vec<f32>| {
        v.sort_by(f32::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "top-3 identical (as sets) in {agree}/20 regions; mean shared {:.2} of 3; median fast {:.1} ms, SGD (50 steps) {:.1} ms",
        overlap as f32 / 20.0,
        median(&mut fast_ms),
        median(&mut sgd_ms)
    );
    Ok(())
}
