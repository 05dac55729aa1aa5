//! Adversarial examples in pixel space `[0, 1]` with ε in pixel units:
//! FGSM, I-FGSM, PGD (seeded random start) and MI-FGSM (Dong et al. 2018),
//! non-targeted and targeted. MI-FGSM's L1 normalisation is per image, so an
//! image's adversarial does not depend on the batch it is attacked in.

use aevis_shared::protocol::{AttackKind, AttackParams};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData, activation};
use rand::{RngExt, SeedableRng, rngs::StdRng};

use crate::data::Image;
use crate::error::{Error, Result};
use crate::net::Network;
use crate::ops;

/// PGD's step is `PGD_STEP_FACTOR · ε / T` (Madry et al. use 2.5).
pub const PGD_STEP_FACTOR: f32 = 2.5;

/// Checks the settings against the model.
pub fn validate(params: &AttackParams, num_classes: usize) -> Result<()> {
    if !(0.0..=1.0).contains(&params.epsilon) || params.epsilon.is_nan() {
        return Err(Error::BadInput(format!("ε = {} is outside [0, 1] (pixel units; 8/255 ≈ 0.031)", params.epsilon)));
    }
    if params.kind != AttackKind::Fgsm && params.steps == 0 {
        return Err(Error::BadInput("an iterative attack needs at least 1 step".into()));
    }
    if let Some(t) = params.target
        && t >= num_classes
    {
        return Err(Error::BadInput(format!("target class {t} is out of range: the model has {num_classes} classes (0..{})", num_classes - 1)));
    }
    Ok(())
}

/// Gradient of the attack loss with respect to the input, per image:
/// `+∇ CE(x, y)` (non-targeted) or `−∇ CE(x, target)` (targeted), so the
/// attack always ascends it. The loss is summed (not averaged) over the batch,
/// so each image's gradient is independent of the others.
///
/// # Shapes
/// - `x`: `[n, 3, h, w]`; returns `[n, 3, h, w]`
fn input_gradient<B: AutodiffBackend>(net: &Network<B>, x: Tensor<B::InnerBackend, 4>, classes: &[usize], targeted: bool) -> Tensor<B::InnerBackend, 4> {
    let device = x.device();
    let x = Tensor::<B, 4>::from_inner(x).require_grad();
    let logits = net.logits(x.clone());
    let n = classes.len();
    let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(classes.iter().map(|&c| c as i64).collect::<Vec<_>>(), [n]), &device);
    let logp = activation::log_softmax(logits, 1);
    let picked = logp.gather(1, idx.reshape([n, 1]));
    // Ascending CE = descending log p(y); targeted: ascending log p(target).
    let objective = if targeted { picked.sum() } else { picked.sum().neg() };
    let grads = objective.backward();
    x.grad(&grads).expect("the input requires grad")
}

/// Attacks a batch of images. `labels` are the classes to move away from
/// (non-targeted; usually the clean top-1) and are ignored when targeted.
pub fn attack<B: AutodiffBackend>(net: &Network<B>, images: &[&Image], labels: &[usize], params: &AttackParams) -> Result<Vec<Image>> {
    validate(params, net.graph().num_classes)?;
    if images.len() != labels.len() {
        return Err(Error::BadInput(format!("{} images but {} labels", images.len(), labels.len())));
    }
    let device = net.device().clone();
    let x0: Tensor<B::InnerBackend, 4> = ops::batch::<B>(images, &device)?.inner();
    let [n, c, h, w] = x0.dims();
    let per = c * h * w;
    let eps = params.epsilon;
    let (classes, targeted) = match params.target {
        Some(t) => (vec![t; n], true),
        None => (labels.to_vec(), false),
    };
    let steps = if params.kind == AttackKind::Fgsm { 1 } else { params.steps };
    let alpha = match params.kind {
        AttackKind::Fgsm => eps,
        AttackKind::Pgd => PGD_STEP_FACTOR * eps / steps as f32,
        _ => eps / steps as f32,
    };
    let clean = ops::host(x0.clone());
    let mut x = clean.clone();
    if params.kind == AttackKind::Pgd {
        let mut rng = StdRng::seed_from_u64(params.seed);
        for (v, &c0) in x.iter_mut().zip(&clean) {
            *v = (c0 + rng.random_range(-eps..=eps)).clamp(0.0, 1.0);
        }
    }
    let mut momentum = vec![0.0f32; x.len()];
    for _ in 0..steps {
        let xt = Tensor::<B::InnerBackend, 4>::from_data(TensorData::new(x.clone(), [n, c, h, w]), &device);
        let g = ops::host(input_gradient(net, xt, &classes, targeted));
        for i in 0..n {
            let r = i * per..(i + 1) * per;
            let dir: Vec<f32> = if params.kind == AttackKind::MiFgsm {
                let l1: f32 = g[r.clone()].iter().map(|v| v.abs()).sum::<f32>().max(1e-12);
                for (m, &gv) in momentum[r.clone()].iter_mut().zip(&g[r.clone()]) {
                    *m = params.momentum * *m + gv / l1;
                }
                momentum[r.clone()].to_vec()
            } else {
                g[r.clone()].to_vec()
            };
            for ((v, &d), &c0) in x[r.clone()].iter_mut().zip(&dir).zip(&clean[r.clone()]) {
                let step = if d > 0.0 { alpha } else if d < 0.0 { -alpha } else { 0.0 };
                *v = (*v + step).clamp(c0 - eps, c0 + eps).clamp(0.0, 1.0);
            }
        }
    }
    Ok((0..n).map(|i| Image { height: h, width: w, pixels: x[i * per..(i + 1) * per].to_vec() }).collect())
}

/// L∞ and L2 size of a perturbation, in pixel units.
pub fn perturbation_size(clean: &Image, adv: &Image) -> (f32, f32) {
    let mut linf = 0.0f32;
    let mut l2 = 0.0f32;
    for (a, b) in clean.pixels.iter().zip(&adv.pixels) {
        let d = (a - b).abs();
        linf = linf.max(d);
        l2 += d * d;
    }
    (linf, l2.sqrt())
}
