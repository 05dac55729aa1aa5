//! The gated network: a small DAG of inference-mode operations (BatchNorm
//! folded) with a gate per channel on every gated layer.
//!
//! Every architecture of [`crate::zoo`] is built into a [`Network`], so the
//! analyses (attacks, extraction, contribution) are written once. A gate `z`
//! multiplies its layer's output channel-wise, `a' = a · z`; with a spatial
//! mask `m` only the masked neurons are gated, `a' = a · (1 + m·(z − 1))`.

use aevis_shared::graph::{GatedLayer, LayerGraph};
use burn::tensor::backend::Backend;
use burn::tensor::module::{conv2d, max_pool2d};
use burn::tensor::ops::PaddedConvOptions;
use burn::tensor::{Tensor, TensorData, activation};

use crate::error::{Error, Result};
use crate::weights::HostTensor;

/// Activation after an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// Identity.
    None,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
}

impl Act {
    fn apply<B: Backend>(self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self {
            Act::None => x,
            Act::Relu => activation::relu(x),
            Act::Relu6 => x.clamp(0.0, 6.0),
        }
    }
}

/// One operation of the DAG. Every value is a 4-D tensor `[n, c, h, w]`
/// (a vector is `[n, c, 1, 1]`).
#[derive(Debug, Clone)]
pub(crate) enum Op<B: Backend> {
    Input,
    /// `(x - mean) / std` per channel: the model's preprocessing, on `[0, 1]` pixels.
    Normalize { mean: Tensor<B, 4>, inv_std: Tensor<B, 4> },
    /// Convolution with folded BatchNorm; padding `[top, left, bottom, right]`.
    Conv { weight: Tensor<B, 4>, bias: Tensor<B, 1>, kernel: usize, stride: usize, pad: [usize; 4], groups: usize, act: Act },
    /// Sum of the inputs, then the activation.
    Add { act: Act },
    /// CIFAR ResNet option-A shortcut: `x[:, :, ::2, ::2]` zero-padded with `pad` channels on each side.
    ShortcutA { pad: usize },
    /// Max pooling, symmetric padding.
    MaxPool { kernel: usize, stride: usize, pad: usize },
    /// Mean over the spatial axes, to `[n, c, 1, 1]`.
    GlobalAvgPool,
    /// Adaptive average pooling to a fixed size (VGG).
    AdaptiveAvgPool { size: [usize; 2] },
    /// `[n, c, h, w]` to `[n, c·h·w, 1, 1]`.
    Flatten,
    /// Fully connected, weight `[in, out]`.
    Linear { weight: Tensor<B, 2>, bias: Tensor<B, 1>, act: Act },
}

#[derive(Debug, Clone)]
pub(crate) struct Node<B: Backend> {
    pub op: Op<B>,
    pub inputs: Vec<usize>,
}

/// A gate on one gated layer for a batch of images.
#[derive(Debug, Clone)]
pub struct Gate<B: Backend> {
    /// Gate values `[n, channels]` (or `[1, channels]`, broadcast).
    pub z: Tensor<B, 2>,
    /// Optional spatial mask `[n or 1, 1, h, w]` of the neurons the gate acts on.
    pub mask: Option<Tensor<B, 4>>,
}

/// Gates for some gated layers: `gates[l]` for layer `l`, `None` = open.
pub type Gates<B> = Vec<Option<Gate<B>>>;

/// What a forward pass returns.
#[derive(Debug, Clone)]
pub struct Forward<B: Backend> {
    /// Logits `[n, classes]`.
    pub logits: Tensor<B, 2>,
    /// The captured gated-layer outputs (after gating), in the order asked.
    pub captured: Vec<Tensor<B, 4>>,
}

/// A network with gates, on backend `B`.
#[derive(Debug, Clone)]
pub struct Network<B: Backend> {
    nodes: Vec<Node<B>>,
    /// Node index of each gated layer.
    gated: Vec<usize>,
    /// Gated layer of each node, if any.
    gate_of: Vec<Option<usize>>,
    graph: LayerGraph,
    device: B::Device,
}

/// Builds a [`Network`] node by node.
#[derive(Debug)]
pub(crate) struct Builder<B: Backend> {
    nodes: Vec<Node<B>>,
    gated: Vec<(usize, String, String, String)>,
    device: B::Device,
}

pub(crate) fn tensor4<B: Backend>(t: &HostTensor, device: &B::Device) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(t.values.clone(), t.shape.clone()), device)
}

pub(crate) fn tensor1<B: Backend>(t: &HostTensor, device: &B::Device) -> Tensor<B, 1> {
    Tensor::from_data(TensorData::new(t.values.clone(), [t.values.len()]), device)
}

pub(crate) fn tensor2<B: Backend>(t: &HostTensor, device: &B::Device) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(t.values.clone(), t.shape.clone()), device)
}

impl<B: Backend> Builder<B> {
    pub fn new(device: &B::Device) -> Self {
        Self { nodes: vec![Node { op: Op::Input, inputs: vec![] }], gated: vec![], device: device.clone() }
    }

    pub fn push(&mut self, op: Op<B>, inputs: &[usize]) -> usize {
        self.nodes.push(Node { op, inputs: inputs.to_vec() });
        self.nodes.len() - 1
    }

    pub fn normalize(&mut self, mean: [f32; 3], std: [f32; 3]) -> usize {
        let mean = Tensor::from_data(TensorData::new(mean.to_vec(), [1, 3, 1, 1]), &self.device);
        let inv: Vec<f32> = std.iter().map(|s| 1.0 / s).collect();
        let inv_std = Tensor::from_data(TensorData::new(inv, [1, 3, 1, 1]), &self.device);
        self.push(Op::Normalize { mean, inv_std }, &[0])
    }

    #[allow(clippy::too_many_arguments)]
    pub fn conv(&mut self, input: usize, (w, b): (HostTensor, HostTensor), stride: usize, pad: [usize; 4], groups: usize, act: Act) -> usize {
        let kernel = w.shape[2];
        let op = Op::Conv { weight: tensor4(&w, &self.device), bias: tensor1(&b, &self.device), kernel, stride, pad, groups, act };
        self.push(op, &[input])
    }

    pub fn linear(&mut self, input: usize, (w, b): (HostTensor, HostTensor), act: Act) -> usize {
        let op = Op::Linear { weight: tensor2(&w, &self.device), bias: tensor1(&b, &self.device), act };
        self.push(op, &[input])
    }

    /// Marks a node's output as a gated layer.
    pub fn gate(&mut self, node: usize, name: impl Into<String>, stage: impl Into<String>, block: impl Into<String>) {
        self.gated.push((node, name.into(), stage.into(), block.into()));
    }

    /// Finishes the network; runs one zero image through it to learn the shapes.
    pub fn finish(self, model: &str, input: [usize; 3], num_classes: usize) -> Result<Network<B>> {
        let n = self.nodes.len();
        let mut gate_of = vec![None; n];
        for (i, (node, ..)) in self.gated.iter().enumerate() {
            gate_of[*node] = Some(i);
        }
        let gated_nodes: Vec<usize> = self.gated.iter().map(|g| g.0).collect();
        let layers = self
            .gated
            .iter()
            .map(|(_, name, stage, block)| GatedLayer {
                name: name.clone(),
                channels: 0,
                height: 0,
                width: 0,
                inputs: vec![],
                stage: stage.clone(),
                block: block.clone(),
            })
            .collect();
        let mut net = Network {
            nodes: self.nodes,
            gated: gated_nodes,
            gate_of,
            graph: LayerGraph { model: model.into(), input, num_classes, layers },
            device: self.device,
        };
        let x = Tensor::<B, 4>::zeros([1, input[0], input[1], input[2]], &net.device);
        let outs = net.node_outputs(x, &vec![]);
        let last = outs.last().ok_or_else(|| Error::BadInput("empty network".into()))?;
        if last.dims()[1] != num_classes {
            return Err(Error::BadInput(format!("network ends in {} outputs, expected {num_classes}", last.dims()[1])));
        }
        for (i, &node) in net.gated.iter().enumerate() {
            let [_, c, h, w] = outs[node].dims();
            let inputs = net.gated_ancestors(node);
            let layer = &mut net.graph.layers[i];
            (layer.channels, layer.height, layer.width, layer.inputs) = (c, h, w, inputs);
        }
        Ok(net)
    }
}

impl<B: Backend> Network<B> {
    /// The gated-layer graph.
    pub fn graph(&self) -> &LayerGraph {
        &self.graph
    }

    /// The device the weights live on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// Number of gated layers.
    pub fn num_layers(&self) -> usize {
        self.gated.len()
    }

    /// Index of a gated layer by name, or a clear error listing a few names.
    pub fn layer(&self, name: &str) -> Result<usize> {
        self.graph.index_of(name).ok_or_else(|| {
            let some: Vec<&str> = self.graph.layers.iter().take(4).map(|l| l.name.as_str()).collect();
            Error::NotFound(format!(
                "no gated layer `{name}` in {} (it has {} gated layers: {}, …)",
                self.graph.model,
                self.gated.len(),
                some.join(", ")
            ))
        })
    }

    /// The operations, in evaluation order (node 0 is the input).
    pub(crate) fn nodes(&self) -> &[Node<B>] {
        &self.nodes
    }

    /// Node index of every gated layer.
    pub(crate) fn gated_nodes(&self) -> &[usize] {
        &self.gated
    }

    /// Node index of the logits.
    pub(crate) fn output_node(&self) -> usize {
        self.nodes.len() - 1
    }

    /// Node index of a gated layer.
    pub(crate) fn node_of(&self, layer: usize) -> usize {
        self.gated[layer]
    }

    fn gated_ancestors(&self, node: usize) -> Vec<usize> {
        let mut out = vec![];
        let mut stack: Vec<usize> = self.nodes[node].inputs.clone();
        let mut seen = vec![false; self.nodes.len()];
        while let Some(i) = stack.pop() {
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            match self.gate_of[i] {
                Some(l) => out.push(l),
                None => stack.extend(self.nodes[i].inputs.iter().copied()),
            }
        }
        out.sort_unstable();
        out
    }

    fn eval(&self, i: usize, vals: &[Option<Tensor<B, 4>>]) -> Tensor<B, 4> {
        let node = &self.nodes[i];
        let arg = |k: usize| vals[node.inputs[k]].clone().expect("inputs are computed before their users");
        match &node.op {
            Op::Input => unreachable!("the input is given"),
            Op::Normalize { mean, inv_std } => (arg(0) - mean.clone()) * inv_std.clone(),
            Op::Conv { weight, bias, stride, pad, groups, act, .. } => {
                let [t, l, b, r] = *pad;
                let opts = PaddedConvOptions::asymmetric([*stride, *stride], [t, l], [b, r], [1, 1], *groups);
                act.apply(conv2d(arg(0), weight.clone(), Some(bias.clone()), opts))
            }
            Op::Add { act } => {
                let mut sum = arg(0);
                for k in 1..node.inputs.len() {
                    sum = sum + arg(k);
                }
                act.apply(sum)
            }
            Op::ShortcutA { pad } => {
                let x = max_pool2d(arg(0), [1, 1], [2, 2], [0, 0], [1, 1], false);
                let [n, _, h, w] = x.dims();
                let z = Tensor::zeros([n, *pad, h, w], &x.device());
                Tensor::cat(vec![z.clone(), x, z], 1)
            }
            Op::MaxPool { kernel, stride, pad } => {
                max_pool2d(arg(0), [*kernel, *kernel], [*stride, *stride], [*pad, *pad], [1, 1], false)
            }
            Op::GlobalAvgPool => {
                let x = arg(0);
                let [n, c, h, w] = x.dims();
                x.reshape([n, c, h * w]).mean_dim(2).reshape([n, c, 1, 1])
            }
            Op::AdaptiveAvgPool { size } => burn::tensor::module::adaptive_avg_pool2d(arg(0), *size),
            Op::Flatten => {
                let x = arg(0);
                let [n, c, h, w] = x.dims();
                x.reshape([n, c * h * w, 1, 1])
            }
            Op::Linear { weight, bias, act } => {
                let x = arg(0);
                let [n, c, h, w] = x.dims();
                let y = x.reshape([n, c * h * w]).matmul(weight.clone()) + bias.clone().unsqueeze::<2>();
                let out = y.dims()[1];
                act.apply(y.reshape([n, out, 1, 1]))
            }
        }
    }

    fn apply_gate(x: Tensor<B, 4>, gate: &Gate<B>) -> Tensor<B, 4> {
        let [n, c] = gate.z.dims();
        let z = gate.z.clone().reshape([n, c, 1, 1]);
        match &gate.mask {
            None => x * z,
            Some(m) => x * ((z - 1.0) * m.clone() + 1.0),
        }
    }

    /// Every node's output (after gating), in node order.
    ///
    /// # Shapes
    /// - `x`: `[n, c, h, w]` pixels in `[0, 1]`
    pub(crate) fn node_outputs(&self, x: Tensor<B, 4>, gates: &Gates<B>) -> Vec<Tensor<B, 4>> {
        let mut vals: Vec<Option<Tensor<B, 4>>> = vec![None; self.nodes.len()];
        vals[0] = Some(x);
        for i in 1..self.nodes.len() {
            let mut v = self.eval(i, &vals);
            if let Some(Some(g)) = self.gate_of[i].and_then(|l| gates.get(l)) {
                v = Self::apply_gate(v, g);
            }
            vals[i] = Some(v);
        }
        vals.into_iter().map(|v| v.expect("all nodes computed")).collect()
    }

    /// Forward pass with gates, returning logits and the asked gated-layer outputs.
    ///
    /// `gates` may be shorter than the number of layers (missing = open).
    ///
    /// # Shapes
    /// - `x`: `[n, c, h, w]` pixels in `[0, 1]`
    /// - returns logits `[n, classes]`, captured `[n, channels, h_l, w_l]`
    pub fn forward(&self, x: Tensor<B, 4>, gates: &Gates<B>, capture: &[usize]) -> Forward<B> {
        let n = x.dims()[0];
        let mut vals: Vec<Option<Tensor<B, 4>>> = vec![None; self.nodes.len()];
        let keep: Vec<usize> = capture.iter().map(|&l| self.gated[l]).collect();
        let last_use = self.last_use();
        vals[0] = Some(x);
        for i in 1..self.nodes.len() {
            let mut v = self.eval(i, &vals);
            if let Some(Some(g)) = self.gate_of[i].and_then(|l| gates.get(l)) {
                v = Self::apply_gate(v, g);
            }
            vals[i] = Some(v);
            // Free what no later node reads, to keep memory flat on deep nets.
            for &j in &self.nodes[i].inputs {
                if last_use[j] == i && !keep.contains(&j) {
                    vals[j] = None;
                }
            }
        }
        let out = vals[self.output_node()].clone().expect("output computed");
        let classes = out.dims()[1];
        Forward {
            logits: out.reshape([n, classes]),
            captured: keep.iter().map(|&j| vals[j].clone().expect("kept")).collect(),
        }
    }

    fn last_use(&self) -> Vec<usize> {
        let mut last = vec![usize::MAX; self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for &j in &n.inputs {
                last[j] = i;
            }
        }
        last
    }

    /// Logits with all gates open.
    pub fn logits(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward(x, &vec![], &[]).logits
    }

    /// Nodes whose value depends on node `from`.
    fn descendants(&self, from: usize) -> Vec<bool> {
        let mut d = vec![false; self.nodes.len()];
        d[from] = true;
        for i in from + 1..self.nodes.len() {
            d[i] = self.nodes[i].inputs.iter().any(|&j| d[j]);
        }
        d
    }

    /// Recomputes only the span from gated layer `from` (with `gate` applied to
    /// its cached output) to node `to`, taking every other value from `cache`
    /// (the output of [`Network::node_outputs`]).
    pub(crate) fn forward_span(&self, cache: &[Tensor<B, 4>], from: usize, gate: &Gate<B>, to: usize) -> Tensor<B, 4> {
        let start = self.gated[from];
        let desc = self.descendants(start);
        let mut vals: Vec<Option<Tensor<B, 4>>> = vec![None; self.nodes.len()];
        vals[start] = Some(Self::apply_gate(cache[start].clone(), gate));
        for i in start + 1..=to {
            if desc[i] {
                // Inputs from outside the span come from the cache.
                for &j in &self.nodes[i].inputs {
                    if vals[j].is_none() {
                        vals[j] = Some(cache[j].clone());
                    }
                }
                vals[i] = Some(self.eval(i, &vals));
            }
        }
        vals[to].clone().unwrap_or_else(|| cache[to].clone())
    }

    /// Logits with channel `channel` of gated layer `layer` replaced by zeros
    /// (by slicing, not by a gate): the independent reference for the gate tests.
    #[doc(hidden)]
    pub fn logits_with_zeroed_channel(&self, x: Tensor<B, 4>, layer: usize, channel: usize) -> Tensor<B, 2> {
        let mut cache = self.node_outputs(x, &vec![]);
        let node = self.gated[layer];
        let a = cache[node].clone();
        let [n, c, h, w] = a.dims();
        let mut parts = vec![];
        if channel > 0 {
            parts.push(a.clone().narrow(1, 0, channel));
        }
        parts.push(Tensor::zeros([n, 1, h, w], &a.device()));
        if channel + 1 < c {
            parts.push(a.narrow(1, channel + 1, c - channel - 1));
        }
        cache[node] = Tensor::cat(parts, 1);
        let ones = Gate { z: Tensor::ones([n, c], &self.device), mask: None };
        let out = self.forward_span(&cache, layer, &ones, self.output_node());
        let k = out.dims()[1];
        out.reshape([n, k])
    }

    /// Whether node `to` depends on gated layer `from`.
    pub(crate) fn reaches(&self, from: usize, to: usize) -> bool {
        self.descendants(self.gated[from])[to]
    }

    /// The box of neurons of gated layer `from` that can influence the region
    /// `[y0, y1) × [x0, x1)` of node `to` (its receptive field), as
    /// `(y0, y1, x0, x1)`; `None` when `to` does not depend on `from`.
    pub(crate) fn receptive_box(&self, from: usize, to: usize, region: (usize, usize, usize, usize)) -> Option<(usize, usize, usize, usize)> {
        let start = self.gated[from];
        let l = &self.graph.layers[from];
        self.box_between(start, (l.height, l.width), to, region)
    }

    /// The input pixels `[x, y, w, h]` that can influence the region of gated layer `layer`.
    pub(crate) fn input_box(&self, layer: usize, region: (usize, usize, usize, usize)) -> [usize; 4] {
        let [_, h, w] = self.graph.input;
        let b = self.box_between(0, (h, w), self.gated[layer], region).unwrap_or((0, h, 0, w));
        [b.2, b.0, b.3 - b.2, b.1 - b.0]
    }

    /// Node feeding the last fully connected layer (penultimate features).
    pub(crate) fn penultimate_node(&self) -> usize {
        self.nodes[self.output_node()].inputs[0]
    }

    fn box_between(&self, start: usize, (h0, w0): (usize, usize), to: usize, region: (usize, usize, usize, usize)) -> Option<(usize, usize, usize, usize)> {
        let desc = self.descendants(start);
        if !desc[to] {
            return None;
        }
        let mut boxes: Vec<Option<(i64, i64, i64, i64)>> = vec![None; self.nodes.len()];
        let r = region;
        boxes[to] = Some((r.0 as i64, r.1 as i64, r.2 as i64, r.3 as i64));
        for i in (start + 1..=to).rev() {
            let Some(b) = boxes[i] else { continue };
            let into = match &self.nodes[i].op {
                Op::Conv { kernel, stride, pad, .. } => {
                    let (k, s) = (*kernel as i64, *stride as i64);
                    (b.0 * s - pad[0] as i64, (b.1 - 1) * s - pad[0] as i64 + k, b.2 * s - pad[1] as i64, (b.3 - 1) * s - pad[1] as i64 + k)
                }
                Op::MaxPool { kernel, stride, pad } => {
                    let (k, s, p) = (*kernel as i64, *stride as i64, *pad as i64);
                    (b.0 * s - p, (b.1 - 1) * s - p + k, b.2 * s - p, (b.3 - 1) * s - p + k)
                }
                Op::ShortcutA { .. } => (b.0 * 2, (b.1 - 1) * 2 + 1, b.2 * 2, (b.3 - 1) * 2 + 1),
                Op::Add { .. } | Op::Normalize { .. } => b,
                Op::GlobalAvgPool | Op::AdaptiveAvgPool { .. } | Op::Flatten | Op::Linear { .. } | Op::Input => {
                    (i64::MIN / 4, i64::MAX / 4, i64::MIN / 4, i64::MAX / 4)
                }
            };
            for &j in &self.nodes[i].inputs {
                if desc[j] {
                    boxes[j] = Some(match boxes[j] {
                        None => into,
                        Some(o) => (o.0.min(into.0), o.1.max(into.1), o.2.min(into.2), o.3.max(into.3)),
                    });
                }
            }
        }
        let b = boxes[start]?;
        let (h0, w0) = (h0 as i64, w0 as i64);
        let clamp = |v: i64, hi: i64| v.clamp(0, hi) as usize;
        let out = (clamp(b.0, h0), clamp(b.1, h0), clamp(b.2, w0), clamp(b.3, w0));
        (out.0 < out.1 && out.2 < out.3).then_some(out)
    }
}
