//! CIFAR ResNet-(6n+2) (He et al. 2016) with option-A shortcuts, as in
//! akamaster/pytorch_resnet_cifar10.
//!
//! Gated layers: `conv1` (stem), and per block `layerS.B.conv1` (inner) and
//! `layerS.B.out` (after the addition and ReLU): ResNet-56 has 55 and 2,032 gates.

use burn::tensor::backend::Backend;

use crate::error::Result;
use crate::net::{Act, Builder, Network, Op};
use crate::weights::Weights;

const EPS: f32 = 1e-5;

/// Builds a CIFAR ResNet with `n` blocks per stage.
#[allow(clippy::too_many_arguments)]
pub fn build<B: Backend>(
    w: &Weights,
    n: usize,
    model: &str,
    input: [usize; 3],
    num_classes: usize,
    mean: [f32; 3],
    std: [f32; 3],
    device: &B::Device,
) -> Result<Network<B>> {
    let mut b = Builder::<B>::new(device);
    let x = b.normalize(mean, std);
    let mut cur = b.conv(x, w.conv_bn("conv1", "bn1", [16, 3, 3, 3], EPS)?, 1, [1; 4], 1, Act::Relu);
    b.gate(cur, "conv1", "stem", "stem");
    let mut planes_in = 16;
    for (s, planes) in [16usize, 32, 64].into_iter().enumerate() {
        let stage = format!("layer{}", s + 1);
        for i in 0..n {
            let block = format!("{stage}.{i}");
            let stride = if s > 0 && i == 0 { 2 } else { 1 };
            let c1 = w.conv_bn(&format!("{block}.conv1"), &format!("{block}.bn1"), [planes, planes_in, 3, 3], EPS)?;
            let h = b.conv(cur, c1, stride, [1; 4], 1, Act::Relu);
            b.gate(h, format!("{block}.conv1"), &stage, &block);
            let c2 = w.conv_bn(&format!("{block}.conv2"), &format!("{block}.bn2"), [planes, planes, 3, 3], EPS)?;
            let h2 = b.conv(h, c2, 1, [1; 4], 1, Act::None);
            let short = if stride != 1 || planes_in != planes {
                b.push(Op::ShortcutA { pad: planes / 4 }, &[cur])
            } else {
                cur
            };
            cur = b.push(Op::Add { act: Act::Relu }, &[h2, short]);
            b.gate(cur, format!("{block}.out"), &stage, &block);
            planes_in = planes;
        }
    }
    let pooled = b.push(Op::GlobalAvgPool, &[cur]);
    let fc = w.linear("linear", 64, num_classes)?;
    b.linear(pooled, fc, Act::None);
    b.finish(model, input, num_classes)
}
