//! One ResNet-56 triplet's datapaths, as `run_session` chains them
//! (adversarial → source constrained by it → one target constrained by
//! both), in full mode (`Constrained`, 100 Adam steps per datapath) and fast
//! mode; and the contribution analysis of one region for the three images
//! (fast, and SGD/Adam with 50 steps).
//!
//! `cargo bench --bench extraction`. Fast mode and contribution run under
//! criterion; the full-mode triplets (≈ 3.5 s with the host step, ≈ 11 s
//! through burn's autodiff) are a few plain cold runs (`AEVIS_BENCH_RUNS`,
//! default 3) and their median. A filter matches by substring:
//! `-- triplet_full` runs all three full-mode rows. The triplet: CIFAR-10 test image 0 (source), its MI-FGSM
//! adversarial (ε = 8/255, T = 10, 8-bit quantised) and the first test image
//! of the adversarial class that the model gets right (target). λ = 0.01 and
//! γ = 0.001 (the registry's tuned values), the defaults otherwise;
//! `triplet_full_early` adds early stopping (tolerance 1e-3, patience 5);
//! `triplet_full_burn` runs the full mode's gate steps through burn's
//! autodiff instead of the host step (`StepEngine::Burn`), for comparison.
//!
//! Contribution: target = feature map 0 of `layer3.8.out` (the last gated
//! layer, 8×8), region rows 3..5 × columns 3..5; earlier layer = `layer2.8.out`,
//! the last layer of the stage before (so the span is one whole stage);
//! λ = 0.01, γ = 0.05, lr 0.1 (the engine's).

mod common;

use std::time::{Duration, SystemTime};

use aevis_models::attack::attack;
use aevis_models::backend::Cpu;
use aevis_models::contribution::{ContributionSettings, contribution};
use aevis_models::data::Image;
use aevis_models::extract::{Extracted, StepEngine, extract_batch_with};
use aevis_models::net::Network;
use aevis_models::ops;
use aevis_shared::datapath::Datapath;
use aevis_shared::protocol::{AttackParams, ContributionTarget, ExtractMethod, ExtractParams, Region};
use burn::tensor::Tensor;
use criterion::SamplingMode;

use common::*;

const GROUP: &str = "extraction";

struct Triplet {
    adv: Tensor<Cpu, 4>,
    src: Tensor<Cpu, 4>,
    tgt: Tensor<Cpu, 4>,
    three: Tensor<Cpu, 4>,
    classes: (usize, usize),
}

fn top1(net: &Network<Cpu>, img: &Image) -> usize {
    let x = ops::batch::<Cpu>(&[img], net.device()).expect("batch");
    ops::argmax(&ops::rows(net.logits(x).inner())[0])
}

fn triplet(net: &Network<Cpu>) -> Triplet {
    let (imgs, labels) = cifar_test(1000);
    let src = imgs[0].clone();
    let adv = attack(net, &[&src], &[labels[0]], &AttackParams::mi_fgsm(8.0 / 255.0)).expect("attack").remove(0).quantised();
    let (cs, ca) = (top1(net, &src), top1(net, &adv));
    assert_ne!(cs, ca, "the adversarial of test image 0 does not fool ResNet-56");
    let t = (1..imgs.len()).find(|&i| labels[i] == ca && top1(net, &imgs[i]) == ca).expect("a target image");
    let dev = net.device();
    let one = |i: &Image| ops::batch::<Cpu>(&[i], dev).expect("batch");
    Triplet {
        adv: one(&adv),
        src: one(&src),
        tgt: one(&imgs[t]),
        three: ops::batch::<Cpu>(&[&src, &adv, &imgs[t]], dev).expect("batch"),
        classes: (cs, ca),
    }
}

/// The chain of `run_session`: adversarial, source (fixed: adversarial), target (fixed: both).
fn chain(net: &Network<Cpu>, t: &Triplet, params: &ExtractParams, engine: StepEngine) -> [Extracted; 3] {
    let run = |x: &Tensor<Cpu, 4>, fixed: &[Datapath]| {
        extract_batch_with(net, x.clone(), fixed, params, "bench", &mut |_| true, engine).expect("extract").remove(0)
    };
    let a = run(&t.adv, &[]);
    let s = run(&t.src, &[a.datapath.clone()]);
    let g = run(&t.tgt, &[a.datapath.clone(), s.datapath.clone()]);
    [a, s, g]
}

fn main() {
    let since = SystemTime::now();
    println!("machine: {}", machine());
    let mut c = criterion();
    let net = cifar(56);
    let t = triplet(&net);
    println!("triplet: source class {}, adversarial class {}", t.classes.0, t.classes.1);
    // The registry's tuned λ and γ for ResNet-56.
    let full = ExtractParams { gamma: 0.001, ..ExtractParams::default_for(0.01) };
    // The same with early stopping (an option; off by default).
    let early = ExtractParams { tolerance: 1e-3, patience: 5, ..full.clone() };
    let fast = ExtractParams { method: ExtractMethod::Fast, ..full.clone() };

    let earlier = net.layer("layer2.8.out").expect("layer");
    let target_layer = net.layer("layer3.8.out").expect("layer");
    let settings = |fast: bool| ContributionSettings {
        target: ContributionTarget::FeatureMap { layer: target_layer, channel: 0, region: Some(Region { y0: 3, y1: 5, x0: 3, x1: 5 }) },
        earlier,
        fast,
        lambda: 0.01,
        gamma: 0.05,
        steps: 50,
        lr: 0.1,
    };
    {
        let mut g = c.benchmark_group(GROUP);
        g.sampling_mode(SamplingMode::Flat);
        g.bench_function("triplet_fast", |b| b.iter(|| chain(&net, &t, &fast, StepEngine::Auto)));
        g.bench_function("contribution_fast", |b| b.iter(|| contribution(&net, t.three.clone(), &settings(true), &|| false).expect("contribution")));
        g.measurement_time(Duration::from_secs(8));
        g.bench_function("contribution_sgd50", |b| b.iter(|| contribution(&net, t.three.clone(), &settings(false), &|| false).expect("contribution")));
        g.finish();
    }
    let plain = |name: &str, params: &ExtractParams, engine: StepEngine| {
        if !selected(name) {
            return None;
        }
        let mut kept = vec![];
        let times = timed_runs(runs(3), false, || {
            let r = chain(&net, &t, params, engine);
            kept.push(r.iter().map(|e| (e.faithfulness.steps, e.faithfulness.kept_overall)).collect::<Vec<_>>());
        });
        let m = median(&times);
        println!(
            "{GROUP}/{name}: {} runs, median {:.2} s (min {:.2}, max {:.2}); (steps, kept) per datapath {:?}",
            times.len(),
            m,
            times[0].as_secs_f64(),
            times[times.len() - 1].as_secs_f64(),
            kept.last()
        );
        Some(m)
    };
    let full_median = plain("triplet_full", &full, StepEngine::Auto);
    let early_median = plain("triplet_full_early", &early, StepEngine::Auto);
    // The same chain with burn's autodiff doing the gate steps (what the
    // CUDA backend and the networks the host step does not cover use).
    let burn_median = plain("triplet_full_burn", &full, StepEngine::Burn);
    c.final_summary();

    println!("\n== extraction summary (medians; {}) ==", machine());
    let row = |name: &str, s: Option<f64>, goal: f64| match s {
        Some(s) => println!("{name:<22} {:>10.1} ms   goal < {:.0} ms: {}", s * 1e3, goal * 1e3, if s < goal { "met" } else { "MISSED" }),
        None => println!("{name:<22} not run"),
    };
    row("triplet_full", full_median, 5.0);
    row("triplet_full_early", early_median, 5.0);
    row("triplet_full_burn", burn_median, 5.0);
    row("triplet_fast", median_s(GROUP, "triplet_fast", since), 0.3);
    row("contribution_fast", median_s(GROUP, "contribution_fast", since), 0.1);
    row("contribution_sgd50", median_s(GROUP, "contribution_sgd50", since), 1.0);
}
