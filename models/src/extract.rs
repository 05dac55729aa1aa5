//! Datapath extraction (paper Eq. 1–5, ALGORITHMS.md "Datapath extraction").
//!
//! Gates `z ∈ [0,1]^n` on every channel of every gated layer start at 1 and
//! minimise, per image `i`,
//! `||p(x) − p(x; z)||² + λ·mean(z) + γ·Σ_j ||z − z_j||₂`
//! with Adam, projected to `[0, 1]` after each step, keeping the best
//! *feasible* iterate (lowest loss among iterates that keep the ungated
//! top-1; the all-ones start always qualifies). `z_j` are the datapaths
//! already extracted in the chain (Eq. 4): adversarial first, then the
//! source constrained by it, then the targets constrained by both — the
//! targets do not constrain each other, so they are optimised as one batch.
//! On the CPU backend the gate steps of the CIFAR ResNets and
//! EfficientNet-Lite0 run on the host ([`StepEngine`], `models/src/host`),
//! 2–3.5× faster than burn's autodiff at batch 1; the checks of each result
//! stay on burn.
//!
//! The fast mode linearises the network around `z = 1` with one backward
//! pass of the predicted class's logit margin and solves the resulting
//! box-constrained quadratic in closed form per coordinate (see
//! [`fast_solve`]), then binarises and checks that the top-1 holds.

use aevis_shared::datapath::Datapath;
use aevis_shared::protocol::{ExtractMethod, ExtractParams, Faithfulness, Progress};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData, activation};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::host::HostNet;
use crate::net::{Gate, Gates, Network};
use crate::ops;

/// One extracted datapath with its numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Extracted {
    /// The best feasible gates.
    pub datapath: Datapath,
    /// Faithfulness figures.
    pub faithfulness: Faithfulness,
    /// Ungated top-1.
    pub top1: usize,
}

/// Progress callback: return `false` to cancel.
pub type ProgressFn<'a> = dyn FnMut(Progress) -> bool + 'a;

fn check(params: &ExtractParams) -> Result<()> {
    let bad = |what: &str| Err(Error::BadInput(what.to_string()));
    if !(params.lambda >= 0.0) {
        return bad("λ must be ≥ 0");
    }
    if !(params.gamma >= 0.0) {
        return bad("γ must be ≥ 0");
    }
    if !(params.lr > 0.0) && params.method != ExtractMethod::Fast {
        return bad("the learning rate must be > 0");
    }
    if !(0.0..=1.0).contains(&params.tau) {
        return bad("τ must lie in [0, 1]");
    }
    Ok(())
}

/// Splits `[n, total]` gates into per-layer gates.
pub(crate) fn gates_from_flat<B: AutodiffBackend>(z: &Tensor<B, 2>, widths: &[usize]) -> Gates<B> {
    let mut at = 0;
    widths
        .iter()
        .map(|&w| {
            let g = z.clone().narrow(1, at, w);
            at += w;
            Some(Gate { z: g, mask: None })
        })
        .collect()
}

/// Top-1 of each image with the given flat gates (no gradient).
pub(crate) fn top1_with<B: AutodiffBackend>(net: &Network<B>, x: &Tensor<B, 4>, flat: &[Vec<f32>]) -> Vec<usize> {
    let widths = net.graph().widths();
    let z = ops::from_rows::<B>(flat, net.device());
    let logits = net.forward(x.clone(), &gates_from_flat(&z, &widths), &[]).logits;
    ops::rows(logits.inner()).iter().map(|r| ops::argmax(r)).collect()
}

/// Which implementation runs the gate steps of the full mode (forward,
/// loss and backward to the gates, 100 times per datapath). Both compute
/// the same loss and gradient (to float rounding; checked by tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StepEngine {
    /// The host step on the CPU backend when it covers the network, else burn.
    #[default]
    Auto,
    /// burn's autodiff on the network's own backend.
    Burn,
    /// The host step (`models/src/host`): CPU only, for networks of
    /// convolutions (groups = 1 or depthwise), ReLU and ReLU6, additions,
    /// option-A shortcuts, pooling to a vector and linear layers (the CIFAR
    /// ResNets and EfficientNet-Lite0; not max pooling, so not the
    /// torchvision ResNets or VGG).
    Host,
}

/// Extracts the datapaths of a batch of images that share the same
/// constraints (`fixed`, the datapaths already extracted in the chain).
///
/// # Shapes
/// - `x`: `[n, 3, h, w]`
pub fn extract_batch<B: AutodiffBackend>(
    net: &Network<B>,
    x: Tensor<B, 4>,
    fixed: &[Datapath],
    params: &ExtractParams,
    stage: &str,
    progress: &mut ProgressFn<'_>,
) -> Result<Vec<Extracted>> {
    extract_batch_with(net, x, fixed, params, stage, progress, StepEngine::Auto)
}

/// [`extract_batch`] with the gate-step implementation chosen (benchmarks
/// and the tests that compare the two use this).
///
/// # Shapes
/// - `x`: `[n, 3, h, w]`
pub fn extract_batch_with<B: AutodiffBackend>(
    net: &Network<B>,
    x: Tensor<B, 4>,
    fixed: &[Datapath],
    params: &ExtractParams,
    stage: &str,
    progress: &mut ProgressFn<'_>,
    engine: StepEngine,
) -> Result<Vec<Extracted>> {
    check(params)?;
    let [_, c, h, w] = x.dims();
    let input = net.graph().input;
    if [c, h, w] != input {
        return Err(Error::BadInput(format!(
            "{} takes images of {}×{}×{} (channels × height × width), got {c}×{h}×{w}",
            net.graph().model,
            input[0],
            input[1],
            input[2]
        )));
    }
    let widths = net.graph().widths();
    let total: usize = widths.iter().sum();
    for f in fixed {
        if f.gates.len() != widths.len() || f.flat().len() != total {
            return Err(Error::BadInput("a constraint datapath has another shape than this network".into()));
        }
    }
    let fixed_flat: Vec<Vec<f32>> = fixed.iter().map(Datapath::flat).collect();

    // Every forward counts (fast mode is one backward and a few forwards):
    // the ungated output comes with the fast mode's gradient when that runs,
    // and the loss and the continuous top-1 of the answer share one forward.
    let (top1, best, losses, cont_top, bin_top, steps) = match params.method {
        ExtractMethod::Fast => {
            let (p0_t, top1, fast) = fast_extract(net, &x, &fixed_flat, params)?;
            let (losses, cont_top) = evaluate(net, &x, &p0_t, &fast, &fixed_flat, params);
            // The fast answer is accepted only when its binarised form keeps the top-1 (all ones always does).
            let n = top1.len();
            (top1.clone(), fast, losses, cont_top, top1, vec![0; n])
        }
        ExtractMethod::Constrained | ExtractMethod::DgrLoss => {
            let (p0_t, top1, init) = if params.warm_start {
                fast_extract(net, &x, &fixed_flat, params)?
            } else {
                let p0_t = activation::softmax(net.logits(x.clone()), 1).detach();
                let top1: Vec<usize> = ops::rows(p0_t.clone().inner()).iter().map(|r| ops::argmax(r)).collect();
                let n = top1.len();
                (p0_t, top1, vec![vec![1.0; total]; n])
            };
            let (best, losses, steps) = match host_for(net, engine)? {
                Some(h) => {
                    let mut step = host_step(&h, &x, &p0_t, &fixed_flat, params);
                    optimise(net, &x, &p0_t, &top1, &fixed_flat, params, init, stage, progress, &mut step)?
                }
                None => {
                    let mut step = burn_step(net, &x, &p0_t, &fixed_flat, params);
                    optimise(net, &x, &p0_t, &top1, &fixed_flat, params, init, stage, progress, &mut step)?
                }
            };
            let binar: Vec<Vec<f32>> = best.iter().map(|z| z.iter().map(|&v| if v >= params.tau { 1.0 } else { 0.0 }).collect()).collect();
            let bin_top = top1_with(net, &x, &binar);
            // Checked by a forward of its own (one in a hundred steps), not taken from the bookkeeping.
            let cont_top = top1_with(net, &x, &best);
            (top1, best, losses, cont_top, bin_top, steps)
        }
    };
    Ok(best
        .into_iter()
        .enumerate()
        .map(|(i, z)| {
            let datapath = Datapath::from_flat(&z, &widths).expect("shape checked");
            let faithfulness = Faithfulness {
                binarised_keeps_top1: bin_top[i] == top1[i],
                continuous_keeps_top1: cont_top[i] == top1[i],
                kept_per_layer: datapath.kept_per_layer(params.tau),
                kept_overall: datapath.kept_overall(params.tau),
                loss: losses[i],
                steps: steps[i],
            };
            Extracted { datapath, faithfulness, top1: top1[i] }
        })
        .collect())
}

/// One gate step of the full mode at gates `z` (`[n][total]`), on the
/// chosen implementation: per-image loss, top-1 and gradient. For the tests
/// that hold the host step to burn's autodiff.
///
/// # Shapes
/// - `x`: `[n, 3, h, w]`
#[doc(hidden)]
#[allow(clippy::type_complexity)] // a public signature: the private alias would hide what it returns
pub fn gate_step<B: AutodiffBackend>(net: &Network<B>, x: Tensor<B, 4>, z: &[Vec<f32>], fixed: &[Datapath], params: &ExtractParams, engine: StepEngine) -> Result<(Vec<f32>, Vec<usize>, Vec<Vec<f32>>)> {
    let fixed: Vec<Vec<f32>> = fixed.iter().map(Datapath::flat).collect();
    let p0 = activation::softmax(net.logits(x.clone()), 1).detach();
    Ok(match host_for(net, engine)? {
        Some(h) => host_step(&h, &x, &p0, &fixed, params)(z),
        None => burn_step(net, &x, &p0, &fixed, params)(z),
    })
}

/// The host network when `engine` asks for it (`Auto`: on the CPU backend
/// and when the host step covers the network), else `None` (burn).
fn host_for<B: AutodiffBackend>(net: &Network<B>, engine: StepEngine) -> Result<Option<HostNet>> {
    Ok(match engine {
        StepEngine::Burn => None,
        StepEngine::Auto if std::any::TypeId::of::<B>() != std::any::TypeId::of::<crate::backend::Cpu>() => None,
        StepEngine::Auto => HostNet::from_network(net).ok(),
        StepEngine::Host => Some(HostNet::from_network(net).map_err(|what| {
            Error::BadInput(format!("the host gate step does not cover {}: it has {what}", net.graph().model))
        })?),
    })
}

/// One gate step: per-image loss, top-1 and gradient with respect to the gates at `z`.
type StepFn<'a> = dyn FnMut(&[Vec<f32>]) -> StepOut + 'a;

/// Per-image loss, top-1 and gate gradient.
type StepOut = (Vec<f32>, Vec<usize>, Vec<Vec<f32>>);

/// The gate step through burn's autodiff.
fn burn_step<'a, B: AutodiffBackend>(
    net: &'a Network<B>,
    x: &'a Tensor<B, 4>,
    p0: &'a Tensor<B, 2>,
    fixed: &[Vec<f32>],
    params: &'a ExtractParams,
) -> impl FnMut(&[Vec<f32>]) -> StepOut + 'a {
    let device = net.device().clone();
    let widths = net.graph().widths();
    let dgr = params.method == ExtractMethod::DgrLoss;
    let fixed_t: Vec<Tensor<B, 2>> = fixed.iter().map(|f| ops::from_rows::<B>(std::slice::from_ref(f), &device)).collect();
    move |z: &[Vec<f32>]| {
        let zt = ops::from_rows::<B>(z, &device).require_grad();
        let logits = net.forward(x.clone(), &gates_from_flat(&zt, &widths), &[]).logits;
        let fit = if dgr {
            // Cross-entropy to the ungated softmax, per image.
            (p0.clone() * activation::log_softmax(logits.clone(), 1)).sum_dim(1).neg()
        } else {
            (p0.clone() - activation::softmax(logits.clone(), 1)).powf_scalar(2.0).sum_dim(1)
        };
        let sparsity = if dgr { zt.clone().abs().sum_dim(1) * params.lambda } else { zt.clone().mean_dim(1) * params.lambda };
        let mut loss = fit + sparsity;
        if params.gamma > 0.0 {
            for f in &fixed_t {
                let d = (zt.clone() - f.clone()).powf_scalar(2.0).sum_dim(1).add_scalar(1e-12).sqrt();
                loss = loss + d * params.gamma;
            }
        }
        let per_image = ops::host(loss.clone().inner());
        let pred: Vec<usize> = ops::rows(logits.inner()).iter().map(|r| ops::argmax(r)).collect();
        let grads = loss.sum().backward();
        let g = ops::rows(zt.grad(&grads).expect("gates require grad"));
        (per_image, pred, g)
    }
}

/// The gate step on the host ([`HostNet`]), one image after another: the
/// same loss as [`burn_step`], its gradient written out.
fn host_step<'a, B: AutodiffBackend>(
    host: &'a HostNet,
    x: &Tensor<B, 4>,
    p0: &Tensor<B, 2>,
    fixed: &'a [Vec<f32>],
    params: &'a ExtractParams,
) -> impl FnMut(&[Vec<f32>]) -> StepOut + 'a {
    let pixels = ops::host(x.clone());
    let xs: Vec<Vec<f32>> = pixels.chunks(host.input_len()).map(<[f32]>::to_vec).collect();
    let p0 = ops::rows(p0.clone());
    // One image per core: the kernels are single-threaded (at batch 1 on
    // CIFAR shapes a second thread per layer costs more than it saves), so
    // the cores share the images of a batch. Each image's numbers do not
    // depend on which thread or batch computed them.
    move |z: &[Vec<f32>]| {
        let per: Vec<(f32, usize, Vec<f32>)> = xs
            .par_iter()
            .zip(z)
            .zip(&p0)
            .map(|((xi, zi), p0i)| {
                let tape = host.forward(xi, zi);
                let (loss, dlogits, mut g) = loss_and_grad(tape.logits(), p0i, zi, fixed, params);
                let through = host.backward(&tape, zi, &dlogits);
                g.iter_mut().zip(through).for_each(|(a, b)| *a += b);
                (loss, ops::argmax(tape.logits()), g)
            })
            .collect();
        let mut out = (vec![], vec![], vec![]);
        for (loss, pred, g) in per {
            out.0.push(loss);
            out.1.push(pred);
            out.2.push(g);
        }
        out
    }
}

/// One image's loss (Eq. 5, or DGR's) from its logits and gates, with the
/// gradient with respect to the logits and the direct gradient with respect
/// to the gates (sparsity and γ terms), as burn's autodiff computes them.
pub(crate) fn loss_and_grad(logits: &[f32], p0: &[f32], z: &[f32], fixed: &[Vec<f32>], params: &ExtractParams) -> (f32, Vec<f32>, Vec<f32>) {
    let dgr = params.method == ExtractMethod::DgrLoss;
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    let p: Vec<f32> = exp.iter().map(|e| e / sum).collect();
    let (fit, dlogits) = if dgr {
        let log_sum = sum.ln();
        let fit = -p0.iter().zip(logits).map(|(q, l)| q * (l - max - log_sum)).sum::<f32>();
        let mass: f32 = p0.iter().sum();
        (fit, p.iter().zip(p0).map(|(pk, qk)| pk * mass - qk).collect())
    } else {
        let fit = p0.iter().zip(&p).map(|(q, pk)| (q - pk) * (q - pk)).sum::<f32>();
        // ∂fit/∂p = 2(p − p0), then through the softmax Jacobian diag(p) − p pᵀ.
        let u: Vec<f32> = p.iter().zip(p0).map(|(pk, qk)| 2.0 * (pk - qk)).collect();
        let pu: f32 = p.iter().zip(&u).map(|(a, b)| a * b).sum();
        (fit, p.iter().zip(&u).map(|(pk, uk)| pk * (uk - pu)).collect())
    };
    let total = z.len() as f32;
    let (sparsity, mut dz): (f32, Vec<f32>) = if dgr {
        (params.lambda * z.iter().map(|v| v.abs()).sum::<f32>(), z.iter().map(|&v| params.lambda * if v > 0.0 { 1.0 } else if v < 0.0 { -1.0 } else { 0.0 }).collect())
    } else {
        (params.lambda * (z.iter().map(|&v| f64::from(v)).sum::<f64>() / f64::from(total)) as f32, vec![params.lambda / total; z.len()])
    };
    let mut loss = fit + sparsity;
    if params.gamma > 0.0 {
        for f in fixed {
            // Summed in f64: a plain f32 sum over the 21,008 gates of
            // EfficientNet-Lite0 drifted by 3·10⁻⁵ of the loss from burn's.
            let d2: f64 = z.iter().zip(f).map(|(a, b)| f64::from(a - b) * f64::from(a - b)).sum();
            let d = (d2 + 1e-12).sqrt() as f32;
            loss += params.gamma * d;
            dz.iter_mut().zip(z.iter().zip(f)).for_each(|(g, (a, b))| *g += params.gamma * (a - b) / d);
        }
    }
    (loss, dlogits, dz)
}

/// The gradient-based optimisation (Adam on Eq. 5, or DGR's own loss with SGD).
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn optimise<B: AutodiffBackend>(
    net: &Network<B>,
    x: &Tensor<B, 4>,
    p0: &Tensor<B, 2>,
    top1: &[usize],
    fixed: &[Vec<f32>],
    params: &ExtractParams,
    init: Vec<Vec<f32>>,
    stage: &str,
    progress: &mut ProgressFn<'_>,
    gate_step: &mut StepFn<'_>,
) -> Result<(Vec<Vec<f32>>, Vec<f32>, Vec<usize>)> {
    let widths = net.graph().widths();
    let total: usize = widths.iter().sum();
    let n = top1.len();
    let dgr = params.method == ExtractMethod::DgrLoss;
    let mut z = init;
    let mut best = vec![vec![1.0f32; total]; n];
    let mut best_loss = vec![f32::INFINITY; n];
    let (mut m, mut v) = (vec![vec![0.0f32; total]; n], vec![vec![0.0f32; total]; n]);
    let (b1, b2, eps_adam) = (0.9f32, 0.999f32, 1e-8f32);
    // Early stopping is per image (its own loss), so a datapath does not
    // depend on the other images of the batch; a settled image is frozen.
    let mut prev = vec![f32::INFINITY; n];
    let mut settled = vec![0usize; n];
    let mut active = vec![true; n];
    let mut steps_taken = vec![0usize; n];
    // The ungated start always keeps the top-1: it is the first feasible candidate.
    let ones_loss = params.lambda;
    for i in 0..n {
        best_loss[i] = if dgr { f32::INFINITY } else { ones_loss + params.gamma * dist_sum(&best[i], fixed) };
    }
    for step in 0..params.steps {
        let (per_image, pred, g) = gate_step(&z);
        for i in 0..n {
            if pred[i] == top1[i] && per_image[i] < best_loss[i] {
                best_loss[i] = per_image[i];
                best[i].clone_from(&z[i]);
            }
        }
        let t = (step + 1) as i32;
        for i in 0..n {
            if !active[i] {
                continue;
            }
            for k in 0..total {
                let gk = g[i][k];
                if dgr {
                    // SGD with momentum 0.9, clamp ≥ 0 (DGR's public code).
                    m[i][k] = 0.9 * m[i][k] + gk;
                    z[i][k] = (z[i][k] - params.lr * m[i][k]).max(0.0);
                } else {
                    m[i][k] = b1 * m[i][k] + (1.0 - b1) * gk;
                    v[i][k] = b2 * v[i][k] + (1.0 - b2) * gk * gk;
                    let mh = m[i][k] / (1.0 - b1.powi(t));
                    let vh = v[i][k] / (1.0 - b2.powi(t));
                    z[i][k] = (z[i][k] - params.lr * mh / (vh.sqrt() + eps_adam)).clamp(0.0, 1.0);
                }
            }
            steps_taken[i] = step + 1;
        }
        let mean_loss = per_image.iter().sum::<f32>() / n as f32;
        let kept = z.iter().map(|zi| zi.iter().filter(|&&v| v >= params.tau).count() as f32 / total as f32).sum::<f32>() / n as f32;
        let go_on = progress(Progress {
            stage: stage.into(),
            step: step + 1,
            total: params.steps,
            loss: mean_loss,
            sparsity: kept,
            kept_top1: pred.iter().zip(top1).all(|(a, b)| a == b),
            fraction: (step + 1) as f32 / params.steps as f32,
        });
        if !go_on {
            return Err(Error::Cancelled);
        }
        if params.tolerance > 0.0 {
            for i in 0..n {
                if !active[i] {
                    continue;
                }
                let rel = (prev[i] - per_image[i]).abs() / per_image[i].abs().max(1e-12);
                settled[i] = if rel < params.tolerance { settled[i] + 1 } else { 0 };
                prev[i] = per_image[i];
                if settled[i] >= params.patience.max(1) {
                    active[i] = false;
                }
            }
            if active.iter().all(|a| !a) {
                break;
            }
        }
    }
    // The last iterate has not been evaluated yet: check it too.
    let (last_loss, last_top) = evaluate(net, x, p0, &z, fixed, params);
    for i in 0..n {
        if last_top[i] == top1[i] && last_loss[i] < best_loss[i] {
            best_loss[i] = last_loss[i];
            best[i].clone_from(&z[i]);
        }
    }
    Ok((best, best_loss, steps_taken))
}

fn dist_sum(z: &[f32], fixed: &[Vec<f32>]) -> f32 {
    fixed.iter().map(|f| z.iter().zip(f).map(|(a, b)| (a - b) * (a - b)).sum::<f32>().sqrt()).sum()
}

/// The loss of each image at gates `z` and its top-1 there, from one forward.
fn evaluate<B: AutodiffBackend>(net: &Network<B>, x: &Tensor<B, 4>, p0: &Tensor<B, 2>, z: &[Vec<f32>], fixed: &[Vec<f32>], params: &ExtractParams) -> (Vec<f32>, Vec<usize>) {
    let widths = net.graph().widths();
    let zt = ops::from_rows::<B>(z, net.device());
    let logits = net.forward(x.clone(), &gates_from_flat(&zt, &widths), &[]).logits;
    let top = ops::rows(logits.clone().inner()).iter().map(|r| ops::argmax(r)).collect();
    let dgr = params.method == ExtractMethod::DgrLoss;
    let fit = if dgr {
        ops::host((p0.clone() * activation::log_softmax(logits, 1)).sum_dim(1).neg().inner())
    } else {
        ops::host((p0.clone() - activation::softmax(logits, 1)).powf_scalar(2.0).sum_dim(1).inner())
    };
    let losses = z
        .iter()
        .zip(fit)
        .map(|(zi, f)| {
            let sp = if dgr { zi.iter().map(|v| v.abs()).sum::<f32>() } else { zi.iter().sum::<f32>() / zi.len() as f32 };
            f + params.lambda * sp + params.gamma * dist_sum(zi, fixed)
        })
        .collect();
    (losses, top)
}

/// Gradient of each image's logit margin `logit_c − logit_r` (c = top-1,
/// r = runner-up at `z = 1`) with respect to every gate at `z = 1`, the
/// margins, the ungated softmax and the top-1 (one forward and one backward).
#[allow(clippy::type_complexity)]
pub(crate) fn margin_gradient<B: AutodiffBackend>(net: &Network<B>, x: &Tensor<B, 4>) -> (Vec<Vec<f32>>, Vec<f32>, Tensor<B, 2>, Vec<usize>) {
    let device = net.device().clone();
    let widths = net.graph().widths();
    let total: usize = widths.iter().sum();
    let n = x.dims()[0];
    let zt = ops::from_rows::<B>(&vec![vec![1.0; total]; n], &device).require_grad();
    let logits = net.forward(x.clone(), &gates_from_flat(&zt, &widths), &[]).logits;
    let p0 = activation::softmax(logits.clone(), 1).detach();
    let host_logits = ops::rows(logits.clone().inner());
    let top1: Vec<usize> = host_logits.iter().map(|r| ops::argmax(r)).collect();
    let top1 = top1.as_slice();
    let runner: Vec<usize> = host_logits
        .iter()
        .zip(top1)
        .map(|(r, &c)| {
            let mut best = if c == 0 { 1 } else { 0 };
            for (k, &v) in r.iter().enumerate() {
                if k != c && v > r[best] {
                    best = k;
                }
            }
            best
        })
        .collect();
    let idx = |v: &[usize]| Tensor::<B, 2, Int>::from_data(TensorData::new(v.iter().map(|&c| c as i64).collect::<Vec<_>>(), [n, 1]), &device);
    let margin = logits.clone().gather(1, idx(top1)) - logits.gather(1, idx(&runner));
    let margins = ops::host(margin.clone().inner());
    let grads = margin.sum().backward();
    (ops::rows(zt.grad(&grads).expect("gates require grad")), margins, p0, top1.to_vec())
}

/// Minimises, per image and coordinate, the diagonal quadratic
/// `a_k (1 − z_k)² + (λ/n) z_k + γ Σ_j ||z − z_j||₂` over `[0, 1]`, with
/// `a_k = (g_k / m)²` (the linearised change of the logit margin `m` when
/// channel `k` is closed, relative to `m`). The `γ` norms are handled by
/// majorisation (each `||z − z_j||` bounded by a quadratic at the current
/// point), so every round is an exact coordinate-wise minimisation.
///
/// The rank-one form `(gᵀ(z − 1))²` is exact to first order but lets
/// positive and negative effects cancel, which closes channels that matter;
/// the diagonal form (the Taylor criterion of Molchanov et al. 2017) does not.
pub fn fast_solve(g: &[f32], margin: f32, lambda: f32, gamma: f32, fixed: &[Vec<f32>], rounds: usize) -> Vec<f32> {
    let n = g.len() as f32;
    let m2 = (margin * margin).max(1e-12);
    let a: Vec<f32> = g.iter().map(|gk| gk * gk / m2).collect();
    let mut z: Vec<f32> = vec![1.0; g.len()];
    let rounds = if gamma > 0.0 && !fixed.is_empty() { rounds.max(1) } else { 1 };
    for _ in 0..rounds {
        let weights: Vec<f32> = fixed
            .iter()
            .map(|f| {
                let d = z.iter().zip(f).map(|(x, y)| (x - y) * (x - y)).sum::<f32>().sqrt().max(1e-3);
                if gamma > 0.0 { gamma / (2.0 * d) } else { 0.0 }
            })
            .collect();
        for k in 0..z.len() {
            let mut aa = a[k];
            let mut bb = a[k] - lambda / (2.0 * n);
            for (f, w) in fixed.iter().zip(&weights) {
                aa += w;
                bb += w * f[k];
            }
            z[k] = if aa <= 0.0 { if bb > 0.0 { 1.0 } else { 0.0 } } else { (bb / aa).clamp(0.0, 1.0) };
        }
    }
    z
}

/// The fast mode: one forward and backward per image, the quadratic solved,
/// then λ halved (a cheap host solve and one forward) until the binarised
/// datapath keeps the top-1; the all-ones datapath is the last resort.
#[allow(clippy::type_complexity)]
fn fast_extract<B: AutodiffBackend>(net: &Network<B>, x: &Tensor<B, 4>, fixed: &[Vec<f32>], params: &ExtractParams) -> Result<(Tensor<B, 2>, Vec<usize>, Vec<Vec<f32>>)> {
    let (g, margins, p0, top1) = margin_gradient(net, x);
    let total = g.first().map_or(0, Vec::len);
    let n = top1.len();
    let mut out = vec![vec![1.0f32; total]; n];
    let mut pending: Vec<usize> = (0..n).collect();
    let mut lambda = params.lambda;
    for _ in 0..8 {
        if pending.is_empty() {
            break;
        }
        let cand: Vec<Vec<f32>> = pending.iter().map(|&i| fast_solve(&g[i], margins[i], lambda, params.gamma, fixed, 5)).collect();
        let binar: Vec<Vec<f32>> = cand.iter().map(|z| z.iter().map(|&v| if v >= params.tau { 1.0 } else { 0.0 }).collect()).collect();
        let xs = x.clone().select(0, Tensor::<B, 1, Int>::from_data(TensorData::new(pending.iter().map(|&i| i as i64).collect::<Vec<_>>(), [pending.len()]), net.device()));
        let tops = top1_with(net, &xs, &binar);
        let mut still = vec![];
        for (j, &i) in pending.iter().enumerate() {
            if tops[j] == top1[i] {
                out[i].clone_from(&cand[j]);
            } else {
                still.push(i);
            }
        }
        pending = still;
        lambda *= 0.5;
    }
    Ok((p0, top1, out))
}
