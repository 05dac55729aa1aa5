//! torchvision VGG-16 (configuration "D", no BatchNorm), torchvision key names.
//!
//! Gated layers: every convolution after its ReLU, `features.N`.

use burn::tensor::backend::Backend;

use crate::error::Result;
use crate::net::{Act, Builder, Network, Op};
use crate::weights::Weights;

/// Channels per convolution, `0` = max-pool, in torchvision's `features` order.
const CFG: [usize; 18] = [64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0];

/// Builds VGG-16.
pub fn build<B: Backend>(
    w: &Weights,
    model: &str,
    input: [usize; 3],
    num_classes: usize,
    mean: [f32; 3],
    std: [f32; 3],
    device: &B::Device,
) -> Result<Network<B>> {
    let mut b = Builder::<B>::new(device);
    let mut cur = b.normalize(mean, std);
    let (mut index, mut cin, mut stage) = (0usize, 3usize, 1usize);
    for &c in &CFG {
        if c == 0 {
            cur = b.push(Op::MaxPool { kernel: 2, stride: 2, pad: 0 }, &[cur]);
            index += 1;
            stage += 1;
        } else {
            let name = format!("features.{index}");
            cur = b.conv(cur, w.conv_bias(&name, [c, cin, 3, 3])?, 1, [1; 4], 1, Act::Relu);
            let st = format!("block{stage}");
            b.gate(cur, name, &st, &st);
            cin = c;
            index += 2; // conv + ReLU
        }
    }
    cur = b.push(Op::AdaptiveAvgPool { size: [7, 7] }, &[cur]);
    cur = b.push(Op::Flatten, &[cur]);
    cur = b.linear(cur, w.linear("classifier.0", 512 * 49, 4096)?, Act::Relu);
    cur = b.linear(cur, w.linear("classifier.3", 4096, 4096)?, Act::Relu);
    b.linear(cur, w.linear("classifier.6", 4096, num_classes)?, Act::None);
    b.finish(model, input, num_classes)
}
