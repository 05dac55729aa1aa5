//! The gated-layer graph of a model: what every view, cache key and request
//! names a layer by.

use serde::{Deserialize, Serialize};

/// One gated layer: the output of a convolution after its activation (for a
/// residual block also the block output after the addition), one gate per
/// channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatedLayer {
    /// Stable name, e.g. `layer2.3.out`.
    pub name: String,
    /// Number of channels (feature maps).
    pub channels: usize,
    /// Spatial height of the feature maps.
    pub height: usize,
    /// Spatial width of the feature maps.
    pub width: usize,
    /// Indices (into [`LayerGraph::layers`]) of the gated layers this one reads
    /// from, skip connections included. Empty for the first layer (it reads the image).
    pub inputs: Vec<usize>,
    /// Hierarchy: stage (e.g. `layer2`).
    pub stage: String,
    /// Hierarchy: block (e.g. `layer2.3`); equal to the stage for a stem or head.
    pub block: String,
}

/// All gated layers of a model in topological order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerGraph {
    /// Model id, as in the registry.
    pub model: String,
    /// Input shape `[channels, height, width]`.
    pub input: [usize; 3],
    /// Number of classes of the classifier.
    pub num_classes: usize,
    /// Gated layers in topological order of the DAG.
    pub layers: Vec<GatedLayer>,
}

impl LayerGraph {
    /// Index of the layer with this name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.layers.iter().position(|l| l.name == name)
    }

    /// Total number of gates (channels over all gated layers).
    pub fn total_gates(&self) -> usize {
        self.layers.iter().map(|l| l.channels).sum()
    }

    /// Channel counts per layer, the shape of a [`crate::datapath::Datapath`].
    pub fn widths(&self) -> Vec<usize> {
        self.layers.iter().map(|l| l.channels).collect()
    }

    /// Stages in order of first appearance, each with its blocks in order.
    pub fn hierarchy(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for l in &self.layers {
            match out.last_mut() {
                Some((stage, blocks)) if *stage == l.stage => {
                    if blocks.last() != Some(&l.block) {
                        blocks.push(l.block.clone());
                    }
                }
                _ => out.push((l.stage.clone(), vec![l.block.clone()])),
            }
        }
        out
    }

    /// Indices of the last gated layer of each block, in order: the block
    /// outputs (for a residual block, the layer after the addition; for a
    /// stem, the stem). A per-layer series restricted to these no longer
    /// alternates between a block's inner layers and its output.
    pub fn block_outputs(&self) -> Vec<usize> {
        (0..self.layers.len()).filter(|&i| self.layers.get(i + 1).is_none_or(|next| next.block != self.layers[i].block)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(name: &str, block: &str) -> GatedLayer {
        GatedLayer { name: name.into(), channels: 1, height: 1, width: 1, inputs: vec![], stage: "s".into(), block: block.into() }
    }

    #[test]
    fn block_outputs_are_the_last_layer_of_each_block() {
        let g = LayerGraph {
            model: "m".into(),
            input: [3, 1, 1],
            num_classes: 2,
            layers: vec![layer("conv1", "conv1"), layer("b0.conv1", "b0"), layer("b0.out", "b0"), layer("b1.conv1", "b1"), layer("b1.conv2", "b1"), layer("b1.out", "b1")],
        };
        assert_eq!(g.block_outputs(), vec![0, 2, 5]);
        let empty = LayerGraph { layers: vec![], ..g };
        assert!(empty.block_outputs().is_empty());
    }
}
