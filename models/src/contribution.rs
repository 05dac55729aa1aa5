//! Contribution analysis (paper Eq. 7–8, ALGORITHMS.md "Contribution analysis").
//!
//! Target `f`: a feature map `t` of layer `L`, or a region `R` of its
//! neurons, or the logit of each image's predicted class. Gates `z` sit on the
//! feature maps of an earlier layer `P` — for a region (Eq. 8) only on the
//! neurons of `P` inside the receptive field of `R`. Per image `i` the loss is
//! `||f(x) − f(x; z)||² / ||f(x)||² + λ·mean(z) + γ·Σ_{j≠i} ||z_j − z_i||₂`,
//! optimised jointly over the compared images; `z_k` is the contribution of
//! feature map `k`. Forward passes start from the cached activations of `P`
//! and stop at `L`: no work outside that span.

use aevis_shared::protocol::{ContributionTarget, Region};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::extract::fast_solve;
use crate::net::{Gate, Network};
use crate::ops;

/// Settings of one contribution analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct ContributionSettings {
    /// What to explain.
    pub target: ContributionTarget,
    /// Index of the earlier gated layer.
    pub earlier: usize,
    /// Fast (one backward + closed-form quadratic) or Adam.
    pub fast: bool,
    /// λ.
    pub lambda: f32,
    /// γ.
    pub gamma: f32,
    /// Adam steps (SGD mode).
    pub steps: usize,
    /// Adam learning rate.
    pub lr: f32,
}

/// The answer: contributions per image.
#[derive(Debug, Clone, PartialEq)]
pub struct Contributions {
    /// `z[i][k]`: contribution of channel `k` of the earlier layer for image `i`.
    pub z: Vec<Vec<f32>>,
    /// Receptive-field box of the region in the earlier layer.
    pub receptive_field: Option<Region>,
    /// Maximum activation of each channel of the earlier layer, per image.
    pub max_activation: Vec<Vec<f32>>,
}

/// Runs the contribution analysis for a batch of images `[n, 3, h, w]`.
/// `cancelled` is polled between steps.
pub fn contribution<B: AutodiffBackend>(net: &Network<B>, x: Tensor<B, 4>, s: &ContributionSettings, cancelled: &dyn Fn() -> bool) -> Result<Contributions> {
    let graph = net.graph();
    let layers = graph.layers.len();
    if s.earlier >= layers {
        return Err(Error::NotFound(format!("earlier layer index {} (the model has {layers} gated layers)", s.earlier)));
    }
    if !(s.lambda >= 0.0 && s.gamma >= 0.0) {
        return Err(Error::BadInput("λ and γ must be ≥ 0".into()));
    }
    let n = x.dims()[0];
    let (to, channel, region) = match &s.target {
        ContributionTarget::FeatureMap { layer, channel, region } => {
            let l = graph.layers.get(*layer).ok_or_else(|| Error::NotFound(format!("layer index {layer} (the model has {layers} gated layers)")))?;
            if *channel >= l.channels {
                return Err(Error::NotFound(format!("channel {channel} of `{}` (it has {} channels)", l.name, l.channels)));
            }
            if *layer <= s.earlier {
                return Err(Error::BadInput(format!(
                    "the earlier layer (`{}`) must come before the target layer (`{}`)",
                    graph.layers[s.earlier].name, l.name
                )));
            }
            let r = region.unwrap_or(Region { y0: 0, y1: l.height, x0: 0, x1: l.width });
            if r.y0 >= r.y1 || r.x0 >= r.x1 || r.y1 > l.height || r.x1 > l.width {
                return Err(Error::BadInput(format!("region {r:?} is empty or outside the {}×{} feature map", l.height, l.width)));
            }
            (net.node_of(*layer), Some(*channel), region.map(|_| r))
        }
        ContributionTarget::Prediction => (net.output_node(), None, None),
    };
    if !net.reaches(s.earlier, to) {
        return Err(Error::BadInput(format!("`{}` does not feed the target", graph.layers[s.earlier].name)));
    }
    let device = net.device().clone();
    let cache = net.node_outputs(x.clone(), &vec![]);
    let start = net.node_of(s.earlier);
    let [_, c_prev, hp, wp] = cache[start].dims();
    let max_activation = ops::rows(cache[start].clone().reshape([n, c_prev, hp * wp]).max_dim(2).reshape([n, c_prev]).inner());

    let rf = match region {
        Some(r) => {
            let b = net
                .receptive_box(s.earlier, to, (r.y0, r.y1, r.x0, r.x1))
                .ok_or_else(|| Error::BadInput("the region's receptive field misses the earlier layer".into()))?;
            Some(Region { y0: b.0, y1: b.1, x0: b.2, x1: b.3 })
        }
        None => None,
    };
    let mask = rf.map(|r| {
        let mut m = vec![0.0f32; hp * wp];
        for y in r.y0..r.y1 {
            for xx in r.x0..r.x1 {
                m[y * wp + xx] = 1.0;
            }
        }
        Tensor::<B, 4>::from_data(TensorData::new(m, [1, 1, hp, wp]), &device)
    });

    // The predicted class of each image, for the merging analysis.
    let logits = ops::rows(cache[net.output_node()].clone().reshape([n, graph.num_classes]).inner());
    let predicted: Vec<i64> = logits.iter().map(|r| ops::argmax(r) as i64).collect();
    let select = |t: Tensor<B, 4>| -> Tensor<B, 2> {
        match channel {
            Some(ch) => {
                let r = region.unwrap_or(Region { y0: 0, y1: t.dims()[2], x0: 0, x1: t.dims()[3] });
                t.narrow(1, ch, 1).narrow(2, r.y0, r.y1 - r.y0).narrow(3, r.x0, r.x1 - r.x0).reshape([n as i32, -1])
            }
            None => {
                let k = t.dims()[1];
                let idx = Tensor::<B, 2, Int>::from_data(TensorData::new(predicted.clone(), [n, 1]), &device);
                t.reshape([n, k]).gather(1, idx)
            }
        }
    };
    let f0 = select(cache[to].clone()).detach();
    let f0_norm: Vec<f32> = ops::host(f0.clone().powf_scalar(2.0).sum_dim(1).inner());
    let run = |z: &Tensor<B, 2>| select(net.forward_span(&cache, s.earlier, &Gate { z: z.clone(), mask: mask.clone() }, to));

    let z = if s.fast {
        let zt = ops::from_rows::<B>(&vec![vec![1.0; c_prev]; n], &device).require_grad();
        let grads = run(&zt).sum().backward();
        let g = ops::rows(zt.grad(&grads).expect("gates require grad"));
        // Joint over images: each image's quadratic is coupled to the others' current answer.
        let mut z: Vec<Vec<f32>> = (0..n).map(|i| fast_solve(&g[i], f0_norm[i].sqrt(), s.lambda, 0.0, &[], 1)).collect();
        if s.gamma > 0.0 && n > 1 {
            for _ in 0..5 {
                let prev = z.clone();
                for i in 0..n {
                    let others: Vec<Vec<f32>> = (0..n).filter(|&j| j != i).map(|j| prev[j].clone()).collect();
                    z[i] = fast_solve(&g[i], f0_norm[i].sqrt(), s.lambda, s.gamma, &others, 5);
                }
            }
        }
        z
    } else {
        let mut z = vec![vec![1.0f32; c_prev]; n];
        let (mut m, mut v) = (vec![vec![0.0f32; c_prev]; n], vec![vec![0.0f32; c_prev]; n]);
        let denom = Tensor::<B, 1>::from_data(TensorData::new(f0_norm.iter().map(|v| v.max(1e-12)).collect::<Vec<_>>(), [n]), &device).reshape([n, 1]);
        for step in 0..s.steps {
            if cancelled() {
                return Err(Error::Cancelled);
            }
            let zt = ops::from_rows::<B>(&z, &device).require_grad();
            let fit = (f0.clone() - run(&zt)).powf_scalar(2.0).sum_dim(1) / denom.clone();
            let mut loss = fit.sum() + zt.clone().mean_dim(1).sum() * s.lambda;
            if s.gamma > 0.0 {
                for i in 0..n {
                    for j in 0..n {
                        if i != j {
                            let d = (zt.clone().narrow(0, i, 1) - zt.clone().narrow(0, j, 1)).powf_scalar(2.0).sum().add_scalar(1e-12).sqrt();
                            loss = loss + d * s.gamma;
                        }
                    }
                }
            }
            let grads = loss.backward();
            let g = ops::rows(zt.grad(&grads).expect("gates require grad"));
            let t = (step + 1) as i32;
            for i in 0..n {
                for k in 0..c_prev {
                    m[i][k] = 0.9 * m[i][k] + 0.1 * g[i][k];
                    v[i][k] = 0.999 * v[i][k] + 0.001 * g[i][k] * g[i][k];
                    let mh = m[i][k] / (1.0 - 0.9f32.powi(t));
                    let vh = v[i][k] / (1.0 - 0.999f32.powi(t));
                    z[i][k] = (z[i][k] - s.lr * mh / (vh.sqrt() + 1e-8)).clamp(0.0, 1.0);
                }
            }
        }
        z
    };
    Ok(Contributions { z, receptive_field: rf, max_activation })
}

/// The top `k` channels of one image by contribution, with the activation
/// difference against a reference image: `(channel, z, act − act_ref)`.
pub fn top_channels(z: &[f32], act: &[f32], act_ref: &[f32], k: usize) -> Vec<(usize, f32, f32)> {
    let mut order: Vec<usize> = (0..z.len()).collect();
    order.sort_by(|&a, &b| z[b].total_cmp(&z[a]).then(a.cmp(&b)));
    order.into_iter().take(k).map(|c| (c, z[c], act[c] - act_ref[c])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use crate::net::{Act, Builder, Op};
    use crate::weights::HostTensor;
    use burn::tensor::Tensor;

    fn ht(shape: &[usize], values: Vec<f32>) -> HostTensor {
        HostTensor { shape: shape.to_vec(), values }
    }

    /// `a0 = relu(x0 + x1 + x2)`, `a1 = relu(x0)` (1×1 convs), then
    /// `b = 2·a0 + 0.5·a1` through a 3×3 conv whose only non-zero taps are the centre.
    fn two_layer() -> Network<Cpu> {
        let dev = Default::default();
        let mut b = Builder::<Cpu>::new(&dev);
        let x = b.normalize([0.0; 3], [1.0; 3]);
        let a = b.conv(x, (ht(&[2, 3, 1, 1], vec![1.0, 1.0, 1.0, 1.0, 0.0, 0.0]), ht(&[2], vec![0.0, 0.0])), 1, [0; 4], 1, Act::Relu);
        b.gate(a, "a", "s", "s");
        let mut w = vec![0.0; 2 * 9];
        w[4] = 2.0; // channel 0, centre tap
        w[9 + 4] = 0.5; // channel 1, centre tap
        let bb = b.conv(a, (ht(&[1, 2, 3, 3], w), ht(&[1], vec![0.0])), 1, [1; 4], 1, Act::None);
        b.gate(bb, "b", "s", "s");
        let p = b.push(Op::GlobalAvgPool, &[bb]);
        b.linear(p, (ht(&[1, 2], vec![1.0, -1.0]), ht(&[2], vec![0.0, 0.0])), Act::None);
        b.finish("two-layer", [3, 4, 4], 2).unwrap()
    }

    /// A 4×4 image per channel; `x0` is zero in the top-left 2×2 corner.
    fn image(scale: f32) -> Vec<f32> {
        let mut v = vec![0.0f32; 48];
        for i in 0..16 {
            let (y, x) = (i / 4, i % 4);
            v[i] = if y < 2 && x < 2 { 0.0 } else { scale * (1.0 + i as f32 / 16.0) };
            v[16 + i] = 0.5;
            v[32 + i] = 0.25 * scale;
        }
        v
    }

    fn batch(images: &[Vec<f32>]) -> Tensor<Cpu, 4> {
        let flat: Vec<f32> = images.iter().flatten().copied().collect();
        Tensor::from_data(TensorData::new(flat, [images.len(), 3, 4, 4]), &Default::default())
    }

    fn settings(region: Option<Region>, fast: bool, gamma: f32) -> ContributionSettings {
        ContributionSettings {
            target: ContributionTarget::FeatureMap { layer: 1, channel: 0, region },
            earlier: 0,
            fast,
            lambda: 0.5,
            gamma,
            steps: 200,
            lr: 0.05,
        }
    }

    /// The fast-mode answer worked out by hand: `g_k = w_k Σ_R a_k`,
    /// `a'_k = g_k² / ||f||²`, `z_k = clamp(1 − λ / (2·n·a'_k))`.
    fn by_hand(x: &[f32], cells: &[(usize, usize)]) -> [f32; 2] {
        let a0 = |y: usize, xx: usize| x[y * 4 + xx] + x[16 + y * 4 + xx] + x[32 + y * 4 + xx];
        let a1 = |y: usize, xx: usize| x[y * 4 + xx];
        let g0: f32 = cells.iter().map(|&(y, xx)| 2.0 * a0(y, xx)).sum();
        let g1: f32 = cells.iter().map(|&(y, xx)| 0.5 * a1(y, xx)).sum();
        let f2: f32 = cells.iter().map(|&(y, xx)| (2.0 * a0(y, xx) + 0.5 * a1(y, xx)).powi(2)).sum();
        let z = |g: f32| if g == 0.0 { 0.0 } else { (1.0 - 0.5 / (2.0 * 2.0 * g * g / f2)).clamp(0.0, 1.0) };
        [z(g0), z(g1)]
    }

    #[test]
    fn contributions_equal_the_values_worked_out_by_hand() {
        let net = two_layer();
        let x = image(1.0);
        let all: Vec<(usize, usize)> = (0..16).map(|i| (i / 4, i % 4)).collect();
        let c = contribution(&net, batch(&[x.clone()]), &settings(None, true, 0.0), &|| false).unwrap();
        let want = by_hand(&x, &all);
        for k in 0..2 {
            assert!((c.z[0][k] - want[k]).abs() < 1e-4, "channel {k}: {} vs {}", c.z[0][k], want[k]);
        }
        assert!(c.z[0][0] > c.z[0][1] && c.z[0][1] > 0.0, "{:?}", c.z[0]);
        // SGD mode ranks the feature maps the same way.
        let s = contribution(&net, batch(&[x]), &settings(None, false, 0.0), &|| false).unwrap();
        assert!(s.z[0][0] > s.z[0][1], "{:?}", s.z[0]);
    }

    #[test]
    fn a_region_restricts_to_its_receptive_field() {
        let net = two_layer();
        let x = image(1.0);
        // Neuron (1,1) of the 3×3 conv reads rows and columns 0..3 of `a`.
        let one = Region { y0: 1, y1: 2, x0: 1, x1: 2 };
        assert_eq!(net.receptive_box(0, net.node_of(1), (1, 2, 1, 2)), Some((0, 3, 0, 3)));
        assert_eq!(net.receptive_box(0, net.node_of(1), (3, 4, 3, 4)), Some((2, 4, 2, 4)));
        let c = contribution(&net, batch(&[x.clone()]), &settings(Some(one), true, 0.0), &|| false).unwrap();
        assert_eq!(c.receptive_field, Some(Region { y0: 0, y1: 3, x0: 0, x1: 3 }));
        // Only the centre tap is non-zero, so only a(1,1) matters: x0 is 0 there, so a1 gives nothing.
        let want = by_hand(&x, &[(1, 1)]);
        assert!((c.z[0][0] - want[0]).abs() < 1e-4, "{} vs {}", c.z[0][0], want[0]);
        assert_eq!(c.z[0][1], 0.0, "a feature map that is silent in the receptive field must contribute 0");
        // The whole map does use a1.
        let whole = contribution(&net, batch(&[x]), &settings(None, true, 0.0), &|| false).unwrap();
        assert!(whole.z[0][1] > 0.0);
        // A region outside the map is a clear error.
        let bad = Region { y0: 3, y1: 9, x0: 0, x1: 1 };
        assert!(contribution(&net, batch(&[image(1.0)]), &settings(Some(bad), true, 0.0), &|| false).is_err());
    }

    #[test]
    fn gamma_zero_decouples_the_images() {
        let net = two_layer();
        let x = image(1.0);
        for fast in [true, false] {
            let with_a = contribution(&net, batch(&[x.clone(), image(3.0)]), &settings(None, fast, 0.0), &|| false).unwrap();
            let with_b = contribution(&net, batch(&[x.clone(), image(0.2)]), &settings(None, fast, 0.0), &|| false).unwrap();
            for k in 0..2 {
                assert!((with_a.z[0][k] - with_b.z[0][k]).abs() < 1e-5, "fast={fast}: image 0 depends on image 1 at γ = 0");
            }
            // With γ > 0 the other image pulls.
            let coupled_a = contribution(&net, batch(&[x.clone(), image(3.0)]), &settings(None, fast, 2.0), &|| false).unwrap();
            let coupled_b = contribution(&net, batch(&[x.clone(), image(0.2)]), &settings(None, fast, 2.0), &|| false).unwrap();
            let d: f32 = (0..2).map(|k| (coupled_a.z[0][k] - coupled_b.z[0][k]).abs()).sum();
            assert!(d > 1e-4, "fast={fast}: γ > 0 did not couple the images");
        }
    }

    #[test]
    fn the_top_channels_are_sorted() {
        let top = top_channels(&[0.1, 0.9, 0.5], &[1.0, 2.0, 3.0], &[1.0, 1.0, 1.0], 2);
        assert_eq!(top, vec![(1, 0.9, 1.0), (2, 0.5, 2.0)]);
    }
}
