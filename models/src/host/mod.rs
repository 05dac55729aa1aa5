//! The gated forward pass and its backward pass to the gates on host memory,
//! for the networks whose operations it covers: convolutions (groups = 1 or
//! depthwise), ReLU and ReLU6, additions, option-A shortcuts, global average
//! pooling, flatten and linear layers — the CIFAR ResNets and
//! EfficientNet-Lite0. Full-mode extraction on the CPU backend
//! runs its gate steps here ([`crate::extract::StepEngine`]); every other
//! analysis, and any network with another operation (max pooling: the
//! torchvision ResNets, VGG), runs on burn.
//!
//! Why: at batch 1 on CIFAR shapes, burn-flex spends most of a convolution
//! on layout work around the product, and its autodiff graph adds a node per
//! operation; a ResNet-56 gate step took ≈ 34 ms there. The maths is the
//! same (im2col + gemm, the same `gemm` crate), checked against burn's
//! autodiff gradients in `models/tests/analyses.rs` and in the unit tests.

mod conv;
mod gemm;

use burn::tensor::backend::Backend;

use crate::net::{Act, Network, Op};
use crate::ops;
use conv::{Conv, out_size};

#[derive(Debug, Clone)]
enum HostOp {
    Input,
    Normalize { mean: Vec<f32>, inv_std: Vec<f32> },
    Conv { conv: Conv, act: Act },
    Add { act: Act },
    ShortcutA { pad: usize },
    GlobalAvgPool,
    Flatten,
    /// Weight `[in, out]`.
    Linear { w: Vec<f32>, b: Vec<f32>, act: Act },
}

#[derive(Debug, Clone)]
struct HostNode {
    op: HostOp,
    inputs: Vec<usize>,
    /// `[c, h, w]` of one image.
    shape: [usize; 3],
}

impl HostNode {
    fn len(&self) -> usize {
        self.shape.iter().product()
    }

    fn act(&self) -> Act {
        match self.op {
            HostOp::Conv { act, .. } | HostOp::Add { act } | HostOp::Linear { act, .. } => act,
            _ => Act::None,
        }
    }
}

/// A [`Network`]'s operations with host copies of its weights.
#[derive(Debug, Clone)]
pub(crate) struct HostNet {
    nodes: Vec<HostNode>,
    gate_of: Vec<Option<usize>>,
    /// Offset of each gated layer in the flat gate vector.
    offsets: Vec<usize>,
    total: usize,
    /// Whether a node's output depends on some gate (only those need a gradient).
    needs_grad: Vec<bool>,
}

/// The values a backward pass needs: every node's output (after its gate)
/// and, for gated nodes, the output before the gate.
#[derive(Debug)]
pub(crate) struct Tape {
    vals: Vec<Vec<f32>>,
    pre: Vec<Option<Vec<f32>>>,
}

impl Tape {
    /// The logits.
    pub fn logits(&self) -> &[f32] {
        self.vals.last().map_or(&[], Vec::as_slice)
    }
}

impl HostNet {
    /// Copies the network's operations and weights, or says which operation it does not cover.
    pub fn from_network<B: Backend>(net: &Network<B>) -> Result<Self, String> {
        let mut nodes: Vec<HostNode> = vec![];
        for node in net.nodes() {
            let shape_of = |k: usize| nodes[node.inputs[k]].shape;
            let (op, shape) = match &node.op {
                Op::Input => (HostOp::Input, net.graph().input),
                Op::Normalize { mean, inv_std } => {
                    let (mean, inv_std) = (ops::host(mean.clone()), ops::host(inv_std.clone()));
                    let shape = shape_of(0);
                    if mean.len() != shape[0] || inv_std.len() != shape[0] {
                        return Err("a normalisation with other than one value per channel".into());
                    }
                    (HostOp::Normalize { mean, inv_std }, shape)
                }
                Op::Conv { weight, bias, kernel, stride, pad, groups, act } => {
                    let [c, h, w] = shape_of(0);
                    let [cout, cin, kh, kw] = weight.dims();
                    let depthwise = *groups == c && cin == 1 && cout == c;
                    if *groups != 1 && !depthwise {
                        return Err(format!("a grouped convolution ({groups} groups of {cin} channels)"));
                    }
                    if kh != kw || kh != *kernel || cin * groups != c || *stride == 0 {
                        return Err(format!("a {kh}×{kw} convolution of {cin} channels on {c}"));
                    }
                    let too_small = || format!("a {kh}×{kw} convolution on a {h}×{w} input");
                    let oh = out_size(h, kh, *stride, pad[0], pad[2]).ok_or_else(too_small)?;
                    let ow = out_size(w, kh, *stride, pad[1], pad[3]).ok_or_else(too_small)?;
                    let conv = Conv { w: ops::host(weight.clone()), b: ops::host(bias.clone()), cin: c, cout, k: kh, stride: *stride, pad: *pad, h, w_in: w, oh, ow, depthwise };
                    (HostOp::Conv { conv, act: *act }, [cout, oh, ow])
                }
                Op::Add { act } => {
                    let shape = shape_of(0);
                    if (1..node.inputs.len()).any(|k| shape_of(k) != shape) {
                        return Err("an addition of differently shaped values".into());
                    }
                    (HostOp::Add { act: *act }, shape)
                }
                Op::ShortcutA { pad } => {
                    let [c, h, w] = shape_of(0);
                    (HostOp::ShortcutA { pad: *pad }, [c + 2 * pad, h.div_ceil(2), w.div_ceil(2)])
                }
                Op::GlobalAvgPool => (HostOp::GlobalAvgPool, [shape_of(0)[0], 1, 1]),
                Op::Flatten => (HostOp::Flatten, [shape_of(0).iter().product(), 1, 1]),
                Op::Linear { weight, bias, act } => {
                    let [inp, out] = weight.dims();
                    if inp != shape_of(0).iter().product::<usize>() {
                        return Err(format!("a linear layer of {inp} inputs on {:?}", shape_of(0)));
                    }
                    (HostOp::Linear { w: ops::host(weight.clone()), b: ops::host(bias.clone()), act: *act }, [out, 1, 1])
                }
                Op::MaxPool { .. } => return Err("max pooling".into()),
                Op::AdaptiveAvgPool { .. } => return Err("adaptive average pooling".into()),
            };
            nodes.push(HostNode { op, inputs: node.inputs.clone(), shape });
        }
        let mut gate_of = vec![None; nodes.len()];
        let mut offsets = vec![];
        let mut total = 0;
        for (l, &node) in net.gated_nodes().iter().enumerate() {
            gate_of[node] = Some(l);
            offsets.push(total);
            total += nodes[node].shape[0];
        }
        let mut needs_grad = vec![false; nodes.len()];
        for i in 0..nodes.len() {
            needs_grad[i] = gate_of[i].is_some() || nodes[i].inputs.iter().any(|&j| needs_grad[j]);
        }
        Ok(Self { nodes, gate_of, offsets, total, needs_grad })
    }

    /// Values per input image.
    pub fn input_len(&self) -> usize {
        self.nodes[0].len()
    }

    /// Forward pass of one image (`[c, h, w]` pixels in `[0, 1]`) with flat gates `z`.
    #[allow(clippy::needless_range_loop)] // node `i` indexes four parallel vectors
    pub fn forward(&self, x: &[f32], z: &[f32]) -> Tape {
        assert_eq!(x.len(), self.input_len(), "host forward: image size");
        assert_eq!(z.len(), self.total, "host forward: gate count");
        let n = self.nodes.len();
        let mut vals: Vec<Vec<f32>> = Vec::with_capacity(n);
        let mut pre = vec![None; n];
        let mut scratch = vec![];
        vals.push(x.to_vec());
        for i in 1..n {
            let node = &self.nodes[i];
            let arg = |k: usize| vals[node.inputs[k]].as_slice();
            let mut v = match &node.op {
                HostOp::Input => unreachable!("only node 0 is the input"),
                HostOp::Normalize { mean, inv_std } => {
                    let hw = node.shape[1] * node.shape[2];
                    let mut v = arg(0).to_vec();
                    for (c, plane) in v.chunks_mut(hw).enumerate() {
                        plane.iter_mut().for_each(|p| *p = (*p - mean[c]) * inv_std[c]);
                    }
                    v
                }
                HostOp::Conv { conv, .. } => {
                    let mut v = vec![0.0; node.len()];
                    conv.forward(arg(0), &mut v, &mut scratch);
                    v
                }
                HostOp::Add { .. } => {
                    let mut v = arg(0).to_vec();
                    for k in 1..node.inputs.len() {
                        v.iter_mut().zip(arg(k)).for_each(|(a, b)| *a += b);
                    }
                    v
                }
                HostOp::ShortcutA { pad } => {
                    let [c, h, w] = self.nodes[node.inputs[0]].shape;
                    let [_, oh, ow] = node.shape;
                    let x = arg(0);
                    let mut v = vec![0.0; node.len()];
                    for ci in 0..c {
                        for oy in 0..oh {
                            for ox in 0..ow {
                                v[((ci + pad) * oh + oy) * ow + ox] = x[(ci * h + 2 * oy) * w + 2 * ox];
                            }
                        }
                    }
                    v
                }
                HostOp::GlobalAvgPool => {
                    let [_, h, w] = self.nodes[node.inputs[0]].shape;
                    arg(0).chunks(h * w).map(|p| p.iter().sum::<f32>() / (h * w) as f32).collect()
                }
                HostOp::Flatten => arg(0).to_vec(),
                HostOp::Linear { w, b, .. } => {
                    let out = node.shape[0];
                    let mut v = b.clone();
                    for (xi, row) in arg(0).iter().zip(w.chunks(out)) {
                        v.iter_mut().zip(row).for_each(|(a, wv)| *a += xi * wv);
                    }
                    v
                }
            };
            match node.act() {
                Act::None => {}
                Act::Relu => v.iter_mut().for_each(|a| *a = a.max(0.0)),
                Act::Relu6 => v.iter_mut().for_each(|a| *a = a.clamp(0.0, 6.0)),
            }
            if let Some(l) = self.gate_of[i] {
                let hw = node.shape[1] * node.shape[2];
                let zl = &z[self.offsets[l]..self.offsets[l] + node.shape[0]];
                let before = v.clone();
                for (plane, &g) in v.chunks_mut(hw).zip(zl) {
                    plane.iter_mut().for_each(|a| *a *= g);
                }
                pre[i] = Some(before);
            }
            vals.push(v);
        }
        Tape { vals, pre }
    }

    /// Gradient with respect to the flat gates of `⟨dlogits, logits⟩` at the
    /// point `tape` was recorded with gates `z`.
    pub fn backward(&self, tape: &Tape, z: &[f32], dlogits: &[f32]) -> Vec<f32> {
        let n = self.nodes.len();
        let mut dz = vec![0.0; self.total];
        let mut grads: Vec<Option<Vec<f32>>> = vec![None; n];
        let mut scratch = vec![];
        if self.needs_grad[n - 1] {
            grads[n - 1] = Some(dlogits.to_vec());
        }
        for i in (1..n).rev() {
            let Some(mut g) = grads[i].take() else { continue };
            let node = &self.nodes[i];
            let out: &[f32] = match (self.gate_of[i], &tape.pre[i]) {
                (Some(l), Some(before)) => {
                    let hw = node.shape[1] * node.shape[2];
                    let off = self.offsets[l];
                    for (c, (gp, bp)) in g.chunks_mut(hw).zip(before.chunks(hw)).enumerate() {
                        dz[off + c] = gp.iter().zip(bp).map(|(a, b)| a * b).sum();
                        gp.iter_mut().for_each(|a| *a *= z[off + c]);
                    }
                    before
                }
                _ => &tape.vals[i],
            };
            match node.act() {
                Act::None => {}
                // burn's rule: no gradient where the output is ≤ 0.
                Act::Relu => g.iter_mut().zip(out).for_each(|(a, &o)| {
                    if o <= 0.0 {
                        *a = 0.0;
                    }
                }),
                // None where the input was clamped. From the output alone an
                // input of exactly 0 or 6 (where burn's clamp passes the
                // gradient) reads as clamped: a set of measure zero.
                Act::Relu6 => g.iter_mut().zip(out).for_each(|(a, &o)| {
                    if o <= 0.0 || o >= 6.0 {
                        *a = 0.0;
                    }
                }),
            }
            for &j in &node.inputs {
                if !self.needs_grad[j] {
                    continue;
                }
                let len = self.nodes[j].len();
                let dst = grads[j].get_or_insert_with(|| vec![0.0; len]);
                match &node.op {
                    HostOp::Input | HostOp::Normalize { .. } => {}
                    HostOp::Conv { conv, .. } => conv.backward_input(&g, dst, &mut scratch),
                    HostOp::Add { .. } | HostOp::Flatten => dst.iter_mut().zip(&g).for_each(|(a, b)| *a += b),
                    HostOp::ShortcutA { pad } => {
                        let [c, h, w] = self.nodes[j].shape;
                        let [_, oh, ow] = node.shape;
                        for ci in 0..c {
                            for oy in 0..oh {
                                for ox in 0..ow {
                                    dst[(ci * h + 2 * oy) * w + 2 * ox] += g[((ci + pad) * oh + oy) * ow + ox];
                                }
                            }
                        }
                    }
                    HostOp::GlobalAvgPool => {
                        let [_, h, w] = self.nodes[j].shape;
                        let inv = 1.0 / (h * w) as f32;
                        for (plane, &gc) in dst.chunks_mut(h * w).zip(&g) {
                            plane.iter_mut().for_each(|a| *a += gc * inv);
                        }
                    }
                    HostOp::Linear { w, .. } => {
                        let out = node.shape[0];
                        for (a, row) in dst.iter_mut().zip(w.chunks(out)) {
                            *a += row.iter().zip(&g).map(|(wv, gv)| wv * gv).sum::<f32>();
                        }
                    }
                }
            }
        }
        dz
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Builder;
    use crate::weights::HostTensor;

    type B = burn::backend::Flex;

    fn t(shape: &[usize], f: impl Fn(usize) -> f32) -> HostTensor {
        HostTensor { shape: shape.to_vec(), values: (0..shape.iter().product()).map(f).collect() }
    }

    /// normalise → 3×3 conv (ReLU, gated) → [max pool] → global pool → linear.
    fn tiny(pool: bool) -> Network<B> {
        let mut b = Builder::<B>::new(&Default::default());
        let x = b.normalize([0.5; 3], [0.25; 3]);
        let w = t(&[2, 3, 3, 3], |i| ((i * 5 % 7) as f32 - 3.0) / 4.0);
        let c = b.conv(x, (w, t(&[2], |i| i as f32 - 0.5)), 1, [1; 4], 1, Act::Relu);
        b.gate(c, "conv", "stem", "stem");
        let p = if pool { b.push(Op::MaxPool { kernel: 2, stride: 2, pad: 0 }, &[c]) } else { c };
        let g = b.push(Op::GlobalAvgPool, &[p]);
        b.linear(g, (t(&[2, 3], |i| i as f32 - 2.0), t(&[3], |i| i as f32)), Act::None);
        b.finish("tiny", [3, 4, 4], 3).unwrap()
    }

    #[test]
    fn logits_equal_burns_and_an_uncovered_operation_is_named() {
        let net = tiny(false);
        let host = HostNet::from_network(&net).unwrap();
        let pixels: Vec<f32> = (0..48).map(|i| (i * 7 % 11) as f32 / 10.0).collect();
        let z = [0.25, 1.0];
        let x = burn::tensor::Tensor::<B, 4>::from_data(burn::tensor::TensorData::new(pixels.clone(), [1, 3, 4, 4]), &Default::default());
        let gates = vec![Some(crate::net::Gate { z: ops::from_rows::<B>(&[z.to_vec()], &Default::default()), mask: None })];
        let want = ops::host(net.forward(x, &gates, &[]).logits);
        let got = host.forward(&pixels, &z);
        for (a, b) in got.logits().iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "host {:?} vs burn {want:?}", got.logits());
        }
        assert_eq!(HostNet::from_network(&tiny(true)).unwrap_err(), "max pooling");
    }
}
