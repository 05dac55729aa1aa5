//! The river layout of the network level (paper §5.2, ALGORITHMS.md "River layout").
//!
//! One column per gated layer (or per collapsed block or stage), left to right
//! in topological order, with wider gaps where the block or the stage changes.
//! At each column the source curve sits at offset 0, the target at
//! `d1 = d(src,tgt)` scaled to the screen, and the adversarial between them at
//! the point that keeps `d2:d3 = d(adv,src):d(adv,tgt)`, i.e.
//! `y_adv = d1·d2/(d2+d3)` (0 when `d2 + d3 = 0`).
//!
//! ```
//! use aevis_shared::layout::river::adversarial_offset;
//! // d1 = 10, d2:d3 = 1:3 → a quarter of the way from the source.
//! assert_eq!(adversarial_offset(10.0, 1.0, 3.0), 2.5);
//! ```

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::datapath::TripletAnalysis;
use crate::graph::LayerGraph;

/// Distance `d` made safe for layout: NaN, infinite and negative values become 0.
fn clean(d: f32) -> f32 {
    if d.is_finite() && d > 0.0 { d } else { 0.0 }
}

/// The adversarial curve's offset from the source: `d1·d2/(d2+d3)`, 0 when
/// `d2 + d3 = 0`; bad values (NaN, negative) count as 0.
pub fn adversarial_offset(d1: f32, d2: f32, d3: f32) -> f32 {
    let (d1, d2, d3) = (clean(d1), clean(d2), clean(d3));
    let sum = d2 + d3;
    if sum <= 0.0 { 0.0 } else { d1 * d2 / sum }
}

/// Which parts of the hierarchy are drawn as a single column.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collapse {
    /// Stages drawn as one column.
    pub stages: BTreeSet<String>,
    /// Blocks drawn as one column (ignored inside a collapsed stage).
    pub blocks: BTreeSet<String>,
}

impl Collapse {
    /// Nothing collapsed: one column per layer.
    pub fn none() -> Self {
        Self::default()
    }

    /// Collapses a stage if open, opens it if collapsed.
    pub fn toggle_stage(&mut self, stage: &str) {
        if !self.stages.remove(stage) {
            self.stages.insert(stage.to_owned());
        }
    }

    /// Collapses a block if open, opens it if collapsed.
    pub fn toggle_block(&mut self, block: &str) {
        if !self.blocks.remove(block) {
            self.blocks.insert(block.to_owned());
        }
    }

    /// A collapse that leaves at most `max_columns` columns where the
    /// hierarchy allows: first every block of several layers is collapsed,
    /// then whole stages. Blocks and stages holding a layer in `keep_open`
    /// (e.g. the diverging and merging points) are collapsed last.
    pub fn auto(graph: &LayerGraph, max_columns: usize, keep_open: &[usize]) -> Self {
        let mut c = Self::none();
        if column_count(graph, &c) <= max_columns {
            return c;
        }
        let kept_blocks: BTreeSet<&str> =
            keep_open.iter().filter_map(|&i| graph.layers.get(i)).map(|l| l.block.as_str()).collect();
        let kept_stages: BTreeSet<&str> =
            keep_open.iter().filter_map(|&i| graph.layers.get(i)).map(|l| l.stage.as_str()).collect();
        let hierarchy = graph.hierarchy();
        let multi_blocks: Vec<&str> = hierarchy
            .iter()
            .flat_map(|(s, blocks)| blocks.iter().filter(move |b| *b != s))
            .map(String::as_str)
            .filter(|b| graph.layers.iter().filter(|l| l.block == *b).count() > 1)
            .collect();
        for pass_kept in [false, true] {
            for b in &multi_blocks {
                if kept_blocks.contains(b) == pass_kept {
                    c.blocks.insert((*b).to_owned());
                }
            }
            if column_count(graph, &c) <= max_columns {
                return c;
            }
        }
        for pass_kept in [false, true] {
            for (s, _) in &hierarchy {
                if kept_stages.contains(s.as_str()) == pass_kept {
                    c.stages.insert(s.clone());
                    if column_count(graph, &c) <= max_columns {
                        return c;
                    }
                }
            }
        }
        c
    }
}

/// Number of columns a collapse gives.
pub fn column_count(graph: &LayerGraph, collapse: &Collapse) -> usize {
    groups(graph, collapse).len()
}

/// What a column stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ColumnKind {
    /// One gated layer.
    Layer,
    /// A collapsed block.
    Block,
    /// A collapsed stage.
    Stage,
}

/// Spacing of the river, in screen units.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RiverParams {
    /// x of the first column.
    pub left: f32,
    /// Gap between consecutive columns of one block.
    pub column_gap: f32,
    /// Extra gap when the block changes.
    pub block_gap: f32,
    /// Extra gap when the stage changes.
    pub stage_gap: f32,
    /// Screen offset of the largest `d(src,tgt)`; all distances share this scale.
    pub spread: f32,
    /// Space after the last column.
    pub right: f32,
}

impl Default for RiverParams {
    fn default() -> Self {
        Self { left: 40.0, column_gap: 22.0, block_gap: 8.0, stage_gap: 24.0, spread: 160.0, right: 40.0 }
    }
}

/// One column of the river.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiverColumn {
    /// Indices of the gated layers it aggregates (one for [`ColumnKind::Layer`]).
    pub layers: Vec<usize>,
    /// What it stands for.
    pub kind: ColumnKind,
    /// Layer, block or stage name.
    pub label: String,
    /// Stage it belongs to.
    pub stage: String,
    /// Block it belongs to (the stage name for a collapsed stage).
    pub block: String,
    /// Screen x.
    pub x: f32,
    /// Mean `d(adv,src)` over its layers.
    pub adv_src: f32,
    /// Mean `d(adv,tgt)` over its layers.
    pub adv_tgt: f32,
    /// Mean `d(src,tgt)` over its layers.
    pub src_tgt: f32,
    /// Screen offsets of the curves in [`crate::protocol::Role::ALL`] order:
    /// source (always 0), adversarial, target (`d1` scaled).
    pub offsets: [f32; 3],
    /// Holds the diverging point.
    pub diverging: bool,
    /// Holds the merging point.
    pub merging: bool,
}

impl RiverColumn {
    /// The offsets moved so the riverbed is centred on 0: `offset − d1/2`.
    pub fn centred(&self) -> [f32; 3] {
        let half = self.offsets[2] / 2.0;
        self.offsets.map(|o| o - half)
    }
}

/// A horizontal extent of the hierarchy (a stage or a block) behind its columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Band {
    /// Stage or block name.
    pub name: String,
    /// First column index.
    pub first: usize,
    /// Last column index (inclusive).
    pub last: usize,
    /// Left screen edge (half a gap before the first column).
    pub x0: f32,
    /// Right screen edge.
    pub x1: f32,
    /// The band is collapsed into one column.
    pub collapsed: bool,
}

/// A link between two columns that are not neighbours (a skip connection of the DAG).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skip {
    /// Column read from.
    pub from: usize,
    /// Column that reads.
    pub to: usize,
}

/// The whole river.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiverLayout {
    /// Columns left to right.
    pub columns: Vec<RiverColumn>,
    /// Stage bands.
    pub stages: Vec<Band>,
    /// Block bands (blocks of more than one layer that are not the stage itself).
    pub blocks: Vec<Band>,
    /// Skip connections between non-adjacent columns.
    pub skips: Vec<Skip>,
    /// Screen units per unit of distance.
    pub scale: f32,
    /// Total screen width.
    pub width: f32,
    /// Column of each gated layer.
    pub column_of: Vec<usize>,
}

struct Group {
    layers: Vec<usize>,
    kind: ColumnKind,
    label: String,
    stage: String,
    block: String,
}

fn groups(graph: &LayerGraph, collapse: &Collapse) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    for (i, l) in graph.layers.iter().enumerate() {
        let (kind, label, block) = if collapse.stages.contains(&l.stage) {
            (ColumnKind::Stage, l.stage.clone(), l.stage.clone())
        } else if collapse.blocks.contains(&l.block) {
            (ColumnKind::Block, l.block.clone(), l.block.clone())
        } else {
            (ColumnKind::Layer, l.name.clone(), l.block.clone())
        };
        match out.last_mut() {
            Some(g) if kind != ColumnKind::Layer && g.kind == kind && g.label == label => g.layers.push(i),
            _ => out.push(Group { layers: vec![i], kind, label, stage: l.stage.clone(), block }),
        }
    }
    out
}

fn mean_at(values: &[f32], layers: &[usize]) -> f32 {
    let present: Vec<f32> = layers.iter().filter_map(|&i| values.get(i)).map(|&d| clean(d)).collect();
    if present.is_empty() { 0.0 } else { present.iter().sum::<f32>() / present.len() as f32 }
}

/// Lays out the river of one triplet over the layer graph.
///
/// Distances missing for a layer (a shorter analysis) count as 0; NaN and
/// negative distances count as 0.
pub fn river(analysis: &TripletAnalysis, graph: &LayerGraph, collapse: &Collapse, params: &RiverParams) -> RiverLayout {
    let groups = groups(graph, collapse);
    let mut columns: Vec<RiverColumn> = Vec::with_capacity(groups.len());
    let mut column_of = vec![0; graph.layers.len()];
    let mut x = params.left;
    for (ci, g) in groups.into_iter().enumerate() {
        if let Some(prev) = columns.last() {
            x += params.column_gap;
            if prev.stage != g.stage {
                x += params.stage_gap;
            } else if prev.block != g.block {
                x += params.block_gap;
            }
        }
        for &l in &g.layers {
            column_of[l] = ci;
        }
        let has = |p: Option<usize>| p.is_some_and(|p| g.layers.contains(&p));
        columns.push(RiverColumn {
            adv_src: mean_at(&analysis.adv_src, &g.layers),
            adv_tgt: mean_at(&analysis.adv_tgt, &g.layers),
            src_tgt: mean_at(&analysis.src_tgt, &g.layers),
            offsets: [0.0; 3],
            diverging: has(analysis.diverging),
            merging: has(analysis.merging),
            layers: g.layers,
            kind: g.kind,
            label: g.label,
            stage: g.stage,
            block: g.block,
            x,
        });
    }
    let max_d1 = columns.iter().map(|c| c.src_tgt).fold(0.0f32, f32::max);
    let scale = if max_d1 > 0.0 { params.spread / max_d1 } else { 0.0 };
    for c in &mut columns {
        let d1 = c.src_tgt * scale;
        c.offsets = [0.0, adversarial_offset(d1, c.adv_src, c.adv_tgt), d1];
    }
    let width = columns.last().map_or(params.left, |c| c.x) + params.right;
    let stages = bands(&columns, |c| c.stage.as_str(), |c| c.kind == ColumnKind::Stage, params);
    let blocks = bands(&columns, |c| c.block.as_str(), |c| c.kind == ColumnKind::Block, params)
        .into_iter()
        .filter(|b| {
            let first = &columns[b.first];
            first.kind != ColumnKind::Stage && first.block != first.stage && (b.last > b.first || b.collapsed)
        })
        .collect();
    let mut skips: Vec<Skip> = Vec::new();
    for (i, l) in graph.layers.iter().enumerate() {
        for &input in &l.inputs {
            if input >= column_of.len() {
                continue;
            }
            let (from, to) = (column_of[input], column_of[i]);
            if to > from + 1 && !skips.contains(&Skip { from, to }) {
                skips.push(Skip { from, to });
            }
        }
    }
    RiverLayout { columns, stages, blocks, skips, scale, width, column_of }
}

fn bands(
    columns: &[RiverColumn],
    key: impl Fn(&RiverColumn) -> &str,
    collapsed: impl Fn(&RiverColumn) -> bool,
    params: &RiverParams,
) -> Vec<Band> {
    let mut out: Vec<Band> = Vec::new();
    let pad = params.column_gap / 2.0;
    for (i, c) in columns.iter().enumerate() {
        match out.last_mut() {
            Some(b) if b.name == key(c) => {
                b.last = i;
                b.x1 = c.x + pad;
            }
            _ => out.push(Band {
                name: key(c).to_owned(),
                first: i,
                last: i,
                x0: c.x - pad,
                x1: c.x + pad,
                collapsed: collapsed(c),
            }),
        }
    }
    out
}

impl RiverLayout {
    /// The column nearest to screen `x`, if `x` is within half a gap of it.
    pub fn column_at(&self, x: f32, tolerance: f32) -> Option<usize> {
        let (i, d) =
            self.columns.iter().enumerate().map(|(i, c)| (i, (c.x - x).abs())).min_by(|a, b| a.1.total_cmp(&b.1))?;
        (d <= tolerance).then_some(i)
    }

    /// Largest centred offset magnitude: half the riverbed height.
    pub fn half_height(&self) -> f32 {
        self.columns.iter().flat_map(|c| c.centred()).fold(0.0f32, |m, o| m.max(o.abs()))
    }
}

/// A strip showing every layer of the network at a fixed width, for
/// orientation when the main river is collapsed or scrolled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MiniMap {
    /// x of each gated layer.
    pub xs: Vec<f32>,
    /// Centred curve offsets per layer, scaled to the strip height.
    pub offsets: Vec<[f32; 3]>,
    /// Stage extents `(name, x0, x1)`.
    pub stages: Vec<(String, f32, f32)>,
    /// Width of the strip.
    pub width: f32,
    /// Height of the strip.
    pub height: f32,
}

/// The mini-map of the whole network, one point per layer, `width × height`.
pub fn minimap(analysis: &TripletAnalysis, graph: &LayerGraph, width: f32, height: f32) -> MiniMap {
    let n = graph.layers.len();
    let step = if n > 1 { width / (n - 1) as f32 } else { 0.0 };
    let xs: Vec<f32> = (0..n).map(|i| if n > 1 { i as f32 * step } else { width / 2.0 }).collect();
    let d = |v: &[f32], i: usize| v.get(i).copied().map_or(0.0, clean);
    let max_d1 = (0..n).map(|i| d(&analysis.src_tgt, i)).fold(0.0f32, f32::max);
    let scale = if max_d1 > 0.0 { height.max(0.0) / max_d1 } else { 0.0 };
    let offsets = (0..n)
        .map(|i| {
            let d1 = d(&analysis.src_tgt, i) * scale;
            let adv = adversarial_offset(d1, d(&analysis.adv_src, i), d(&analysis.adv_tgt, i));
            [-d1 / 2.0, adv - d1 / 2.0, d1 / 2.0]
        })
        .collect();
    let mut stages: Vec<(String, f32, f32)> = Vec::new();
    for (i, l) in graph.layers.iter().enumerate() {
        match stages.last_mut() {
            Some((s, _, x1)) if *s == l.stage => *x1 = xs[i] + step / 2.0,
            _ => stages.push((l.stage.clone(), xs[i] - step / 2.0, xs[i] + step / 2.0)),
        }
    }
    for s in &mut stages {
        s.1 = s.1.max(0.0);
        s.2 = s.2.min(width);
    }
    MiniMap { xs, offsets, stages, width, height }
}

impl MiniMap {
    /// The layer under strip coordinate `x` (nearest), `None` for an empty network.
    pub fn layer_at(&self, x: f32) -> Option<usize> {
        self.xs.iter().enumerate().min_by(|a, b| (a.1 - x).abs().total_cmp(&(b.1 - x).abs())).map(|(i, _)| i)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::datapath::{DistanceForm, PatternTest};
    use crate::graph::GatedLayer;

    /// stem, then two stages of two blocks of two layers each (9 layers).
    pub(crate) fn graph() -> LayerGraph {
        let mut layers = vec![GatedLayer {
            name: "conv1".into(),
            channels: 4,
            height: 8,
            width: 8,
            inputs: vec![],
            stage: "conv1".into(),
            block: "conv1".into(),
        }];
        for s in 1..=2 {
            for b in 0..2 {
                for part in ["relu", "out"] {
                    let i = layers.len();
                    let inputs = if part == "out" && i >= 2 { vec![i - 1, i - 2] } else { vec![i - 1] };
                    layers.push(GatedLayer {
                        name: format!("layer{s}.{b}.{part}"),
                        channels: 4,
                        height: 8,
                        width: 8,
                        inputs,
                        stage: format!("layer{s}"),
                        block: format!("layer{s}.{b}"),
                    });
                }
            }
        }
        LayerGraph { model: "toy".into(), input: [3, 8, 8], num_classes: 10, layers }
    }

    pub(crate) fn analysis(adv_src: Vec<f32>, adv_tgt: Vec<f32>, src_tgt: Vec<f32>) -> TripletAnalysis {
        let diff = adv_src.iter().zip(&adv_tgt).map(|(a, b)| a - b).collect();
        TripletAnalysis {
            adv_src,
            adv_tgt,
            src_tgt,
            diff,
            pattern: PatternTest { n_l: 0, r: 8, peak_at_last: false, holds: false },
            diverging: Some(3),
            merging: Some(7),
            form: DistanceForm::L2,
        }
    }

    #[test]
    fn offsets_keep_the_ratio() {
        let g = graph();
        // d1 = 4 everywhere; d2:d3 = 1:3, 1:1, 3:1, 0:0 ...
        let adv_src = vec![1.0, 2.0, 3.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0];
        let adv_tgt = vec![3.0, 2.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0];
        let src_tgt = vec![4.0, 4.0, 4.0, 4.0, 2.0, 2.0, 2.0, 2.0, 2.0];
        let p = RiverParams { spread: 100.0, ..RiverParams::default() };
        let r = river(&analysis(adv_src, adv_tgt, src_tgt), &g, &Collapse::none(), &p);
        assert_eq!(r.columns.len(), 9);
        assert_eq!(r.scale, 25.0);
        let o: Vec<[f32; 3]> = r.columns.iter().map(|c| c.offsets).collect();
        assert_eq!(o[0], [0.0, 25.0, 100.0]);
        assert_eq!(o[1], [0.0, 50.0, 100.0]);
        assert_eq!(o[2], [0.0, 75.0, 100.0]);
        assert_eq!(o[3], [0.0, 0.0, 100.0], "d2 + d3 = 0 puts the adversarial on the source");
        assert_eq!(o[4], [0.0, 25.0, 50.0]);
        // The ratio d2:d3 is the ratio of the screen gaps.
        for (c, (d2, d3)) in r.columns.iter().zip([(1.0, 3.0), (2.0, 2.0), (3.0, 1.0)]) {
            let (g2, g3) = (c.offsets[1] - c.offsets[0], c.offsets[2] - c.offsets[1]);
            assert!((g2 / g3 - d2 / d3).abs() < 1e-6);
        }
        assert_eq!(r.columns[0].centred(), [-50.0, -25.0, 50.0]);
        assert!(r.columns[3].diverging && r.columns[7].merging);
        assert_eq!(r.columns.iter().filter(|c| c.diverging || c.merging).count(), 2);
    }

    #[test]
    fn positions_monotone_with_gaps() {
        let g = graph();
        let a = analysis(vec![1.0; 9], vec![1.0; 9], vec![1.0; 9]);
        let p =
            RiverParams { left: 10.0, column_gap: 20.0, block_gap: 5.0, stage_gap: 30.0, spread: 10.0, right: 10.0 };
        let r = river(&a, &g, &Collapse::none(), &p);
        let xs: Vec<f32> = r.columns.iter().map(|c| c.x).collect();
        // conv1 | layer1.0 (relu, out) | layer1.1 | layer2.0 | layer2.1
        assert_eq!(xs, vec![10.0, 60.0, 80.0, 105.0, 125.0, 175.0, 195.0, 220.0, 240.0]);
        assert!(xs.windows(2).all(|w| w[1] > w[0]));
        assert_eq!(r.width, 250.0);
        assert_eq!(r.stages.len(), 3);
        assert_eq!((r.stages[1].name.as_str(), r.stages[1].first, r.stages[1].last), ("layer1", 1, 4));
        assert_eq!(r.blocks.len(), 4);
        // Residual inputs i-2 jump over a column.
        assert!(r.skips.contains(&Skip { from: 0, to: 2 }));
        assert_eq!(r.column_at(61.0, 5.0), Some(1));
        assert_eq!(r.column_at(70.0, 5.0), None);
    }

    #[test]
    fn collapsing_aggregates_means() {
        let g = graph();
        let adv_src = vec![0.0, 1.0, 3.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0];
        let adv_tgt = vec![0.0, 3.0, 1.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0];
        let src_tgt = vec![1.0, 2.0, 4.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
        let a = analysis(adv_src, adv_tgt, src_tgt);
        let mut c = Collapse::none();
        c.toggle_block("layer1.0");
        c.toggle_stage("layer2");
        let r = river(&a, &g, &c, &RiverParams { spread: 30.0, ..RiverParams::default() });
        // conv1, [layer1.0], layer1.1.relu, layer1.1.out, [layer2]
        assert_eq!(r.columns.len(), 5);
        assert_eq!(column_count(&g, &c), 5);
        let b = &r.columns[1];
        assert_eq!((b.kind, b.label.as_str(), b.layers.clone()), (ColumnKind::Block, "layer1.0", vec![1, 2]));
        assert_eq!((b.adv_src, b.adv_tgt, b.src_tgt), (2.0, 2.0, 3.0));
        // Max d1 is the block's 3 → scale 10; adversarial half way.
        assert_eq!(b.offsets, [0.0, 15.0, 30.0]);
        let s = &r.columns[4];
        assert_eq!((s.kind, s.layers.len()), (ColumnKind::Stage, 4));
        assert!(s.merging, "layer 7 is inside the collapsed stage");
        assert!(r.blocks.iter().any(|b| b.name == "layer1.0" && b.collapsed));
        assert_eq!(r.column_of, vec![0, 1, 1, 2, 3, 4, 4, 4, 4]);
        c.toggle_stage("layer2");
        assert_eq!(column_count(&g, &c), 8);
    }

    #[test]
    fn bad_data_does_not_panic() {
        let g = graph();
        let a = analysis(vec![f32::NAN, -1.0], vec![], vec![0.0, f32::INFINITY]);
        let r = river(&a, &g, &Collapse::none(), &RiverParams::default());
        assert_eq!(r.columns.len(), 9);
        assert!(r.columns.iter().all(|c| c.offsets.iter().all(|o| *o == 0.0)));
        assert_eq!(r.scale, 0.0);
        let empty = LayerGraph { model: "e".into(), input: [3, 1, 1], num_classes: 1, layers: vec![] };
        let r = river(&a, &empty, &Collapse::none(), &RiverParams::default());
        assert!(r.columns.is_empty() && r.column_at(0.0, 10.0).is_none());
        let m = minimap(&a, &empty, 100.0, 10.0);
        assert!(m.xs.is_empty() && m.layer_at(3.0).is_none());
    }

    #[test]
    fn auto_collapse_for_big_networks() {
        // 1 stem + 3 stages × 9 blocks × 2 layers = 55 layers, like ResNet-56.
        let mut layers = vec![graph().layers[0].clone()];
        for s in 1..=3 {
            for b in 0..9 {
                for part in ["relu", "out"] {
                    let i = layers.len();
                    layers.push(crate::graph::GatedLayer {
                        name: format!("layer{s}.{b}.{part}"),
                        inputs: vec![i - 1],
                        stage: format!("layer{s}"),
                        block: format!("layer{s}.{b}"),
                        ..layers[0].clone()
                    });
                }
            }
        }
        let g = LayerGraph { model: "r56".into(), input: [3, 32, 32], num_classes: 10, layers };
        assert_eq!(column_count(&g, &Collapse::none()), 55);
        assert_eq!(Collapse::auto(&g, 60, &[]), Collapse::none());
        let c = Collapse::auto(&g, 30, &[]);
        assert_eq!(column_count(&g, &c), 28);
        assert!(c.stages.is_empty());
        // Keeping layer 10 (layer1.4.out) open: its block stays expanded.
        let c = Collapse::auto(&g, 30, &[10]);
        assert!(!c.blocks.contains("layer1.4"));
        assert_eq!(column_count(&g, &c), 29);
        let c = Collapse::auto(&g, 12, &[50]);
        assert!(column_count(&g, &c) <= 12);
        assert!(!c.stages.contains("layer3"));
        let a = analysis(vec![1.0; 55], vec![1.0; 55], vec![2.0; 55]);
        let m = minimap(&a, &g, 540.0, 20.0);
        assert_eq!(m.xs.len(), 55);
        assert_eq!(m.xs[54], 540.0);
        assert_eq!(m.offsets[0], [-10.0, 0.0, 10.0]);
        assert_eq!(m.stages.len(), 4);
        assert_eq!(m.layer_at(101.0), Some(10));
    }
}
