//! torchvision ResNet-18/34/50/101/152 with torchvision's key names, so a
//! downloaded `resnet101-*.pth` state_dict loads as it is.
//!
//! Gated layers: `conv1` (stem, before the max-pool), per block
//! `layerS.B.conv1`, `layerS.B.conv2` (bottleneck only) and `layerS.B.out`.

use burn::tensor::backend::Backend;

use crate::error::Result;
use crate::net::{Act, Builder, Network, Op};
use crate::weights::Weights;

const EPS: f32 = 1e-5;

/// Builds a torchvision ResNet; `bottleneck` selects the block type.
#[allow(clippy::too_many_arguments)]
pub fn build<B: Backend>(
    w: &Weights,
    layers: [usize; 4],
    bottleneck: bool,
    model: &str,
    input: [usize; 3],
    num_classes: usize,
    mean: [f32; 3],
    std: [f32; 3],
    device: &B::Device,
) -> Result<Network<B>> {
    let expansion = if bottleneck { 4 } else { 1 };
    let mut b = Builder::<B>::new(device);
    let x = b.normalize(mean, std);
    let stem = b.conv(x, w.conv_bn("conv1", "bn1", [64, 3, 7, 7], EPS)?, 2, [3; 4], 1, Act::Relu);
    b.gate(stem, "conv1", "stem", "stem");
    let mut cur = b.push(Op::MaxPool { kernel: 3, stride: 2, pad: 1 }, &[stem]);
    let mut inplanes = 64;
    for (s, (&blocks, planes)) in layers.iter().zip([64usize, 128, 256, 512]).enumerate() {
        let stage = format!("layer{}", s + 1);
        for i in 0..blocks {
            let block = format!("{stage}.{i}");
            let stride = if s > 0 && i == 0 { 2 } else { 1 };
            let out_planes = planes * expansion;
            let p = |n: &str| format!("{block}.{n}");
            let h = if bottleneck {
                let h1 = b.conv(cur, w.conv_bn(&p("conv1"), &p("bn1"), [planes, inplanes, 1, 1], EPS)?, 1, [0; 4], 1, Act::Relu);
                b.gate(h1, p("conv1"), &stage, &block);
                let h2 = b.conv(h1, w.conv_bn(&p("conv2"), &p("bn2"), [planes, planes, 3, 3], EPS)?, stride, [1; 4], 1, Act::Relu);
                b.gate(h2, p("conv2"), &stage, &block);
                b.conv(h2, w.conv_bn(&p("conv3"), &p("bn3"), [out_planes, planes, 1, 1], EPS)?, 1, [0; 4], 1, Act::None)
            } else {
                let h1 = b.conv(cur, w.conv_bn(&p("conv1"), &p("bn1"), [planes, inplanes, 3, 3], EPS)?, stride, [1; 4], 1, Act::Relu);
                b.gate(h1, p("conv1"), &stage, &block);
                b.conv(h1, w.conv_bn(&p("conv2"), &p("bn2"), [planes, planes, 3, 3], EPS)?, 1, [1; 4], 1, Act::None)
            };
            let short = if stride != 1 || inplanes != out_planes {
                let ds = w.conv_bn(&p("downsample.0"), &p("downsample.1"), [out_planes, inplanes, 1, 1], EPS)?;
                b.conv(cur, ds, stride, [0; 4], 1, Act::None)
            } else {
                cur
            };
            cur = b.push(Op::Add { act: Act::Relu }, &[h, short]);
            b.gate(cur, p("out"), &stage, &block);
            inplanes = out_planes;
        }
    }
    let pooled = b.push(Op::GlobalAvgPool, &[cur]);
    b.linear(pooled, w.linear("fc", 512 * expansion, num_classes)?, Act::None);
    b.finish(model, input, num_classes)
}
