//! Attacks, extraction and contribution analysis on real CIFAR-10 images and
//! on hand-made cases.

mod common;

use aevis_models::attack::{attack, perturbation_size};
use aevis_models::backend::Cpu;
use aevis_models::data::{Image, Split};
use aevis_models::extract::{StepEngine, extract_batch, extract_batch_with, fast_solve, gate_step};
use aevis_models::ops;
use aevis_shared::protocol::{AttackKind, AttackParams, ExtractMethod, ExtractParams};
use common::*;

type B = Cpu;

fn test_images(n: usize) -> (Vec<Image>, Vec<usize>) {
    let split = Split::read_cifar("test", &data().join("cifar10/test_first1000_exact.bin"), Some(n)).unwrap();
    ((0..n).map(|i| split.image(i).unwrap()).collect(), split.labels.clone())
}

#[test]
fn attacks_stay_in_the_ball_fool_the_model_and_ignore_the_batch() {
    let net = cifar(20);
    let (imgs, labels) = test_images(7);
    let refs: Vec<&Image> = imgs.iter().collect();
    let eps = 8.0 / 255.0;
    for kind in [AttackKind::Fgsm, AttackKind::IFgsm, AttackKind::Pgd, AttackKind::MiFgsm] {
        let p = AttackParams { kind, epsilon: eps, steps: 10, momentum: 1.0, target: None, seed: 7 };
        let advs = attack(&net, &refs, &labels, &p).unwrap();
        for (a, c) in advs.iter().zip(&imgs) {
            let (linf, _) = perturbation_size(c, a);
            assert!(linf <= eps + 1e-6, "{kind:?}: L∞ {linf} > ε");
            assert!(a.pixels.iter().all(|&v| (0.0..=1.0).contains(&v)));
        }
        if kind == AttackKind::MiFgsm {
            let x = ops::batch::<B>(&advs.iter().collect::<Vec<_>>(), &Default::default()).unwrap();
            let fooled = ops::rows(net.logits(x).inner()).iter().zip(&labels).filter(|(r, l)| ops::argmax(r) != **l).count();
            assert!(fooled >= 6, "MI-FGSM fooled only {fooled}/7");
            // Image 4 alone gives the same adversarial as inside the batch of 7.
            let alone = attack(&net, &[&imgs[4]], &[labels[4]], &p).unwrap().remove(0);
            let d = alone.pixels.iter().zip(&advs[4].pixels).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(d <= 1e-6, "batch-size dependence: {d}");
        }
        if kind == AttackKind::Pgd {
            let again = attack(&net, &refs, &labels, &p).unwrap();
            assert_eq!(again, advs, "PGD with a fixed seed must repeat");
        }
    }
    // Targeted MI-FGSM reaches its target.
    let p = AttackParams { kind: AttackKind::MiFgsm, epsilon: 16.0 / 255.0, steps: 10, momentum: 1.0, target: Some(2), seed: 0 };
    let advs = attack(&net, &refs[..3], &labels[..3], &p).unwrap();
    let x = ops::batch::<B>(&advs.iter().collect::<Vec<_>>(), &Default::default()).unwrap();
    for r in ops::rows(net.logits(x).inner()) {
        assert_eq!(ops::argmax(&r), 2);
    }
    // Bad settings are named.
    let bad = AttackParams { epsilon: 1.5, ..p.clone() };
    assert!(attack(&net, &refs[..1], &labels[..1], &bad).unwrap_err().to_string().contains("outside [0, 1]"));
    let bad = AttackParams { target: Some(10), ..p };
    assert!(attack(&net, &refs[..1], &labels[..1], &bad).unwrap_err().to_string().contains("out of range"));
}

#[test]
fn fast_solve_by_hand() {
    // a = (g/m)² = [4, 0.25, 0]; λ/(2n) = 1/(2·3) with λ = 1.
    let z = fast_solve(&[2.0, 0.5, 0.0], 1.0, 1.0, 0.0, &[], 1);
    assert!((z[0] - (1.0 - (1.0 / 6.0) / 4.0)).abs() < 1e-6);
    assert!((z[1] - (1.0 - (1.0 / 6.0) / 0.25)).abs() < 1e-6);
    assert_eq!(z[2], 0.0);
    // A strong γ pulls towards the constraint.
    let pulled = fast_solve(&[0.0, 0.0, 0.0], 1.0, 0.0, 100.0, &[vec![1.0, 0.0, 1.0]], 5);
    assert!(pulled[0] > 0.9 && pulled[1] < 0.1 && pulled[2] > 0.9, "{pulled:?}");
}

fn quick(method: ExtractMethod, gamma: f32) -> ExtractParams {
    ExtractParams { method, gamma, steps: 12, ..ExtractParams::default_for(1.0) }
}

#[test]
fn extraction_keeps_the_top1_repeats_and_gamma_zero_decouples() {
    let net = cifar(20);
    let (imgs, _) = test_images(3);
    let x1 = ops::batch::<B>(&[&imgs[0]], &Default::default()).unwrap();
    let x3 = ops::batch::<B>(&imgs.iter().collect::<Vec<_>>(), &Default::default()).unwrap();
    let mut none = |_p| true;
    let alone = extract_batch(&net, x1.clone(), &[], &quick(ExtractMethod::Constrained, 0.0), "t", &mut none).unwrap().remove(0);
    assert!(alone.faithfulness.continuous_keeps_top1, "the best feasible iterate must keep the top-1");
    assert!(alone.faithfulness.kept_overall < 1.0, "nothing was pruned");
    let again = extract_batch(&net, x1.clone(), &[], &quick(ExtractMethod::Constrained, 0.0), "t", &mut none).unwrap().remove(0);
    assert_eq!(alone.datapath, again.datapath, "extraction must repeat");
    // γ = 0: a constraint changes nothing; in a batch, the same datapath as alone.
    let constrained0 = extract_batch(&net, x1.clone(), &[again.datapath.clone()], &quick(ExtractMethod::Constrained, 0.0), "t", &mut none).unwrap().remove(0);
    assert_eq!(constrained0.datapath, alone.datapath);
    let batch = extract_batch(&net, x3, &[], &quick(ExtractMethod::Constrained, 0.0), "t", &mut none).unwrap();
    let d = batch[0].datapath.flat().iter().zip(alone.datapath.flat()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(d < 1e-4, "batch changes the datapath by {d}");
    for e in &batch {
        assert!(e.faithfulness.continuous_keeps_top1);
    }
    // Early stopping is per image: a datapath neither depends on the batch nor on when the others settle.
    let early = ExtractParams { tolerance: 0.05, patience: 2, ..quick(ExtractMethod::Constrained, 0.0) };
    let e1 = extract_batch(&net, x1.clone(), &[], &early, "t", &mut none).unwrap().remove(0);
    let e3 = extract_batch(&net, ops::batch::<B>(&imgs.iter().collect::<Vec<_>>(), &Default::default()).unwrap(), &[], &early, "t", &mut none).unwrap();
    assert_eq!(e3[0].faithfulness.steps, e1.faithfulness.steps);
    let d = e3[0].datapath.flat().iter().zip(e1.datapath.flat()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(d < 1e-4, "with early stopping, the batch changes the datapath by {d}");
    // A tolerance nothing can miss stops each image after the first step plus `patience`.
    let settled = extract_batch(&net, x1.clone(), &[], &ExtractParams { tolerance: 10.0, ..early.clone() }, "t", &mut none).unwrap().remove(0);
    assert_eq!(settled.faithfulness.steps, 3);
    // γ > 0 pulls the datapath towards the constraint.
    let other = extract_batch(&net, ops::batch::<B>(&[&imgs[1]], &Default::default()).unwrap(), &[], &quick(ExtractMethod::Constrained, 0.0), "t", &mut none).unwrap().remove(0);
    let pulled = extract_batch(&net, x1.clone(), &[other.datapath.clone()], &quick(ExtractMethod::Constrained, 5.0), "t", &mut none).unwrap().remove(0);
    let dist = |a: &aevis_shared::datapath::Datapath| aevis_shared::datapath::total_distance(a, &other.datapath);
    assert!(dist(&pulled.datapath) < dist(&alone.datapath), "γ did not tie the datapaths together");
    // Fast mode and DGR's loss run and keep the top-1 with their binarised datapath.
    let fast = extract_batch(&net, x1.clone(), &[], &quick(ExtractMethod::Fast, 0.0), "t", &mut none).unwrap().remove(0);
    assert!(fast.faithfulness.binarised_keeps_top1);
    assert!(fast.faithfulness.kept_overall < 1.0, "fast mode pruned nothing");
    // The same claim checked by a forward of its own, with the binarised gates.
    let gates: aevis_models::net::Gates<B> = fast
        .datapath
        .gates
        .iter()
        .map(|l| {
            let bin: Vec<f32> = l.iter().map(|&v| if v >= 0.5 { 1.0 } else { 0.0 }).collect();
            Some(aevis_models::net::Gate { z: ops::from_rows::<B>(&[bin], &Default::default()), mask: None })
        })
        .collect();
    let top = ops::argmax(&ops::rows(net.forward(x1.clone(), &gates, &[]).logits.inner())[0]);
    assert_eq!(top, fast.top1, "the binarised fast datapath does not keep the top-1");
    let dgr = extract_batch(&net, x1.clone(), &[], &quick(ExtractMethod::DgrLoss, 0.0), "t", &mut none).unwrap().remove(0);
    assert!(dgr.faithfulness.continuous_keeps_top1);
    // Cancel between steps.
    let mut stop = |_p| false;
    assert!(matches!(extract_batch(&net, x1, &[], &quick(ExtractMethod::Constrained, 0.0), "t", &mut stop), Err(aevis_models::Error::Cancelled)));
}

#[test]
fn host_gate_step_equals_burn_autodiff() {
    // Loss, top-1 and gate gradient of one full-mode step, host against burn's
    // autodiff, at gates spread over [0, 1] (with exact 0s and 1s), two
    // constraints, both losses, on a batch of two real images (CIFAR test
    // images; DEV photos for EfficientNet-Lite0, which adds depthwise
    // convolutions at strides 1 and 2 with TF-SAME paddings, ReLU6, 1×1
    // convolutions and additions without activation).
    let (imgs, _) = test_images(2);
    let x = ops::batch::<B>(&imgs.iter().collect::<Vec<_>>(), &Default::default()).unwrap();
    let dev = aevis_models::data::Split::read_folder("dev", &data().join("imagenet/nips2017_dev_subset"), "true_label", aevis_models::data::Preprocess::Resize, 224, 224).unwrap();
    let photos: Vec<Image> = (0..2).map(|i| dev.image(i).unwrap()).collect();
    let photos = ops::batch::<B>(&photos.iter().collect::<Vec<_>>(), &Default::default()).unwrap();
    for (depth, net, x) in [("ResNet-20", cifar(20), x.clone()), ("ResNet-56", cifar(56), x), ("EfficientNet-Lite0", efficientnet(), photos)] {
        let widths = net.graph().widths();
        let total: usize = widths.iter().sum();
        let gates = |seed: usize| -> Vec<f32> { (0..total).map(|i| ((i * 37 + seed * 11) % 23) as f32 / 22.0).collect() };
        let z = vec![gates(1), gates(2)];
        let fixed: Vec<aevis_shared::datapath::Datapath> =
            [gates(3), gates(4)].iter().map(|f| aevis_shared::datapath::Datapath::from_flat(f, &widths).unwrap()).collect();
        for method in [ExtractMethod::Constrained, ExtractMethod::DgrLoss] {
            let params = ExtractParams { method, gamma: 0.05, ..ExtractParams::default_for(0.01) };
            let (lb, pb, gb) = gate_step(&net, x.clone(), &z, &fixed, &params, StepEngine::Burn).unwrap();
            let (lh, ph, gh) = gate_step(&net, x.clone(), &z, &fixed, &params, StepEngine::Host).unwrap();
            assert_eq!(pb, ph, "{depth} {method:?}: top-1");
            for i in 0..2 {
                assert!((lb[i] - lh[i]).abs() <= 1e-5 * lb[i].abs(), "{depth} {method:?}: loss {} vs {}", lb[i], lh[i]);
                let scale = gb[i].iter().fold(0.0f32, |a, g| a.max(g.abs()));
                let diff = max_abs_diff(&gb[i], &gh[i]);
                assert!(scale > 1e-4, "{depth}: a vanishing gradient proves nothing ({scale})");
                assert!(diff <= 1e-4 * scale, "{depth} {method:?}: gradients differ by {diff} (largest {scale})");
            }
        }
    }
}

#[test]
fn both_step_engines_extract_feasible_datapaths_that_repeat() {
    let net = cifar(20);
    let (imgs, _) = test_images(1);
    let x = ops::batch::<B>(&[&imgs[0]], &Default::default()).unwrap();
    let params = quick(ExtractMethod::Constrained, 0.0);
    let mut runs = vec![];
    for engine in [StepEngine::Burn, StepEngine::Host, StepEngine::Burn] {
        let e = extract_batch_with(&net, x.clone(), &[], &params, "t", &mut |_| true, engine).unwrap().remove(0);
        assert!(e.faithfulness.continuous_keeps_top1, "{engine:?}: the best feasible iterate lost the top-1");
        assert!(e.faithfulness.kept_overall < 1.0, "{engine:?}: nothing was pruned");
        runs.push(e);
    }
    assert_eq!(runs[0].datapath, runs[2].datapath, "burn's extraction must repeat");
    // An image of another size is refused with what was expected, on both engines.
    let big = burn::tensor::Tensor::<B, 4>::zeros([1, 3, 40, 32], &Default::default());
    for engine in [StepEngine::Burn, StepEngine::Host] {
        let err = extract_batch_with(&net, big.clone(), &[], &params, "t", &mut |_| true, engine).unwrap_err().to_string();
        assert!(err.contains("3×32×32") && err.contains("got 3×40×32"), "{engine:?}: {err}");
    }
    // The engines round differently (summation order), and Adam divides by
    // the gradient's running size, so the datapaths are close, not equal
    // (measured: 2·10⁻⁵ apart after these 12 steps).
    let (lb, lh) = (runs[0].faithfulness.loss, runs[1].faithfulness.loss);
    let apart = aevis_shared::datapath::total_distance(&runs[0].datapath, &runs[1].datapath);
    assert!(apart < 1e-2, "the burn and host datapaths are {apart} apart");
    assert!((lb - lh).abs() <= 1e-3 * lb, "losses {lb} (burn) and {lh} (host) differ");
}

#[test]
fn resnet56_datapaths_keep_the_top1_with_at_most_half_the_channels_on_average() {
    // Default settings (ALGORITHMS.md: Adam, 100 steps, lr 0.1, τ = 0.5) with the registry's λ.
    let lambda = aevis_models::registry::load(None).unwrap().into_iter().find(|m| m.id == "cifar10-resnet56").unwrap().lambda;
    let net = cifar(56);
    let (imgs, labels) = test_images(12);
    let x = ops::batch::<B>(&imgs.iter().collect::<Vec<_>>(), &Default::default()).unwrap();
    let correct: Vec<usize> = ops::rows(net.logits(x).inner()).iter().enumerate().filter(|(i, r)| ops::argmax(r) == labels[*i]).map(|(i, _)| i).take(6).collect();
    assert_eq!(correct.len(), 6);
    let refs: Vec<&Image> = correct.iter().map(|&i| &imgs[i]).collect();
    let x = ops::batch::<B>(&refs, &Default::default()).unwrap();
    let params = ExtractParams { gamma: 0.0, ..ExtractParams::default_for(lambda) };
    let out = extract_batch(&net, x, &[], &params, "t", &mut |_| true).unwrap();
    let kept = out.iter().filter(|e| e.faithfulness.binarised_keeps_top1).count();
    assert!(kept as f32 >= 0.95 * out.len() as f32, "binarised datapaths keep the top-1 for only {kept}/{}", out.len());
    for e in &out {
        let empty = e.faithfulness.kept_per_layer.iter().filter(|&&k| k == 0.0).count();
        eprintln!("kept {:.1}% of the channels, {empty} layers with none", 100.0 * e.faithfulness.kept_overall);
    }
    // On average over the images: a datapath whose every pruned iterate loses the top-1 or
    // costs more than λ keeps all channels (the best-feasible rule's all-ones start).
    let mean = out.iter().map(|e| e.faithfulness.kept_overall).sum::<f32>() / out.len() as f32;
    assert!(mean <= 0.5, "the datapaths keep {:.1}% of the channels on average", 100.0 * mean);
}
