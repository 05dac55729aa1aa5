//! EfficientNet-Lite0 (lukemelas-style key names, PyPI `efficientnet-lite-pytorch`):
//! no squeeze-excitation, ReLU6, BatchNorm ε = 1e-3 and TensorFlow "SAME"
//! padding, which is asymmetric for the stride-2 layers.
//!
//! Gated layers: `_conv_stem`, per block `_blocks.i.expand` (when the block
//! expands), `_blocks.i.depthwise` and `_blocks.i.out` (projection plus skip),
//! and `_conv_head`.

use burn::tensor::backend::Backend;

use crate::error::{Error, Result};
use crate::net::{Act, Builder, Network, Op};
use crate::weights::Weights;

const EPS: f32 = 1e-3;

/// `(kernel, stride, expand, in, out, stage)` per block.
const BLOCKS: [(usize, usize, usize, usize, usize, usize); 16] = [
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (3, 1, 6, 24, 24, 2),
    (5, 2, 6, 24, 40, 3),
    (5, 1, 6, 40, 40, 3),
    (3, 2, 6, 40, 80, 4),
    (3, 1, 6, 80, 80, 4),
    (3, 1, 6, 80, 80, 4),
    (5, 1, 6, 80, 112, 5),
    (5, 1, 6, 112, 112, 5),
    (5, 1, 6, 112, 112, 5),
    (5, 2, 6, 112, 192, 6),
    (5, 1, 6, 192, 192, 6),
    (5, 1, 6, 192, 192, 6),
    (5, 1, 6, 192, 192, 6),
    (3, 1, 6, 192, 320, 7),
];

/// TF "SAME" padding `[top, left, bottom, right]` for an even input size.
fn same(kernel: usize, stride: usize) -> [usize; 4] {
    let total = if stride == 1 { kernel - 1 } else { kernel - 2 };
    let (lo, hi) = (total / 2, total - total / 2);
    [lo, lo, hi, hi]
}

/// Builds EfficientNet-Lite0. The paddings assume a 224×224 input.
#[allow(clippy::too_many_arguments)]
pub fn build<B: Backend>(
    w: &Weights,
    model: &str,
    input: [usize; 3],
    num_classes: usize,
    mean: [f32; 3],
    std: [f32; 3],
    device: &B::Device,
) -> Result<Network<B>> {
    if input[1] != 224 || input[2] != 224 {
        return Err(Error::BadInput(format!(
            "EfficientNet-Lite0's TF-SAME paddings are fixed for 224×224 input, got {}×{}",
            input[1], input[2]
        )));
    }
    let mut b = Builder::<B>::new(device);
    let x = b.normalize(mean, std);
    let mut cur = b.conv(x, w.conv_bn("_conv_stem", "_bn0", [32, 3, 3, 3], EPS)?, 2, same(3, 2), 1, Act::Relu6);
    b.gate(cur, "_conv_stem", "stem", "stem");
    for (i, &(k, s, e, cin, cout, st)) in BLOCKS.iter().enumerate() {
        let block = format!("_blocks.{i}");
        let stage = format!("stage{st}");
        let mid = cin * e;
        let mut h = cur;
        if e != 1 {
            let c = w.conv_bn(&format!("{block}._expand_conv"), &format!("{block}._bn0"), [mid, cin, 1, 1], EPS)?;
            h = b.conv(h, c, 1, [0; 4], 1, Act::Relu6);
            b.gate(h, format!("{block}.expand"), &stage, &block);
        }
        let c = w.conv_bn(&format!("{block}._depthwise_conv"), &format!("{block}._bn1"), [mid, 1, k, k], EPS)?;
        h = b.conv(h, c, s, same(k, s), mid, Act::Relu6);
        b.gate(h, format!("{block}.depthwise"), &stage, &block);
        let c = w.conv_bn(&format!("{block}._project_conv"), &format!("{block}._bn2"), [cout, mid, 1, 1], EPS)?;
        h = b.conv(h, c, 1, [0; 4], 1, Act::None);
        if s == 1 && cin == cout {
            h = b.push(Op::Add { act: Act::None }, &[h, cur]);
        }
        b.gate(h, format!("{block}.out"), &stage, &block);
        cur = h;
    }
    cur = b.conv(cur, w.conv_bn("_conv_head", "_bn1", [1280, 320, 1, 1], EPS)?, 1, [0; 4], 1, Act::Relu6);
    b.gate(cur, "_conv_head", "head", "head");
    let pooled = b.push(Op::GlobalAvgPool, &[cur]);
    b.linear(pooled, w.linear("_fc", 1280, num_classes)?, Act::None);
    b.finish(model, input, num_classes)
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn same_padding_matches_provenance() {
        assert_eq!(same(3, 2), [0, 0, 1, 1]);
        assert_eq!(same(5, 2), [1, 1, 2, 2]);
        assert_eq!(same(3, 1), [1, 1, 1, 1]);
        assert_eq!(same(5, 1), [2, 2, 2, 2]);
        assert_eq!(same(1, 1), [0, 0, 0, 0]);
    }
}
