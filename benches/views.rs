//! View building: the river (layout, scene, SVG string) for ResNet-56's real
//! gated-layer graph (55 layers) and for a synthetic 300-layer graph (all
//! columns open, and auto-collapsed to 60 columns as the export does), and
//! the treemap of a 64-cell layer (layout alone; layer scene + SVG).
//!
//! `cargo bench --bench views` (criterion). Datapaths are deterministic
//! pseudo-random gates; the rest of the session is `aevis_client::sample`'s.

mod common;

use std::time::SystemTime;

use aevis_client::sample;
use aevis_client::view::layer::{self, Fill, TREEMAP};
use aevis_client::view::river;
use aevis_shared::datapath::{Datapath, DistanceForm, TripletAnalysis};
use aevis_shared::graph::{GatedLayer, LayerGraph};
use aevis_shared::layout::river::{Collapse, river as river_layout};
use aevis_shared::layout::treemap::treemap;
use aevis_shared::protocol::{LayerDetail, SessionResult};
use aevis_shared::sets::SetRegions;
use burn::backend::Flex;
use criterion::black_box;

use common::*;

const GROUP: &str = "views";

/// A tiny deterministic generator (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn datapath(graph: &LayerGraph, rng: &mut Rng) -> Datapath {
    Datapath { gates: graph.layers.iter().map(|l| (0..l.channels).map(|_| rng.next()).collect()).collect() }
}

/// `sample::session()` with a triplet analysis on `graph`.
fn session_on(graph: &LayerGraph) -> SessionResult {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (a, s, t) = (datapath(graph, &mut rng), datapath(graph, &mut rng), datapath(graph, &mut rng));
    let mut session = sample::session();
    session.analysis = TripletAnalysis::new(&a, &s, &t, DistanceForm::L2, 8);
    session.adversarial.datapath = a;
    session.source.datapath = s;
    session.targets[0].datapath = t;
    session
}

/// A stem, then three stages of two-layer residual blocks, 300 gated layers in all.
fn synthetic(layers: usize) -> LayerGraph {
    let mut out = vec![GatedLayer { name: "conv1".into(), channels: 64, height: 8, width: 8, inputs: vec![], stage: "stem".into(), block: "stem".into() }];
    let per_stage = (layers - 1).div_ceil(3).div_ceil(2);
    'outer: for s in 1..=3 {
        for b in 0..per_stage {
            for part in ["conv1", "out"] {
                if out.len() == layers {
                    break 'outer;
                }
                let i = out.len();
                let inputs = if part == "out" && i >= 2 { vec![i - 1, i - 2] } else { vec![i - 1] };
                out.push(GatedLayer {
                    name: format!("layer{s}.{b}.{part}"),
                    channels: 64,
                    height: 8,
                    width: 8,
                    inputs,
                    stage: format!("layer{s}"),
                    block: format!("layer{s}.{b}"),
                });
            }
        }
    }
    assert_eq!(out.len(), layers);
    LayerGraph { model: format!("synthetic-{layers}"), input: [3, 32, 32], num_classes: 10, layers: out }
}

/// A layer of 64 channels whose three critical sets fill all seven regions.
fn detail64() -> LayerDetail {
    let mut d = sample::layer_detail(3);
    let mut crit: [Vec<usize>; 3] = Default::default();
    for ch in 0..64 {
        let mask = ch % 7 + 1;
        for (s, set) in crit.iter_mut().enumerate() {
            if mask & (1 << s) != 0 {
                set.push(ch);
            }
        }
    }
    let mut rng = Rng(7);
    d.regions = SetRegions::new(&crit[0], &crit[1], &crit[2]);
    d.critical = crit;
    d.max_activation = [0, 1, 2].map(|_| (0..64).map(|_| rng.next()).collect());
    d.gates = [0, 1, 2].map(|_| (0..64).map(|_| rng.next()).collect());
    d
}

fn main() {
    let since = SystemTime::now();
    println!("machine: {}", machine());
    let mut c = criterion();
    let classes = sample::classes();
    let r56 = cifar_on::<Flex>(56).graph().clone();
    let s56 = session_on(&r56);
    let g300 = synthetic(300);
    let s300 = session_on(&g300);
    let auto = Collapse::auto(&g300, 60, &[s300.analysis.diverging.unwrap_or(0), s300.analysis.merging.unwrap_or(0)]);
    let none = Collapse::none();
    let d64 = detail64();
    assert_eq!(treemap(&d64.regions, TREEMAP, true).cells.len(), 64);

    let mut names = vec![];
    {
        let mut g = c.benchmark_group(GROUP);
        for (label, graph, session, collapse) in
            [("resnet56", &r56, &s56, &none), ("synthetic300", &g300, &s300, &none), ("synthetic300_auto60", &g300, &s300, &auto)]
        {
            let p = river::params();
            let n = format!("river_{label}_layout");
            g.bench_function(&n, |b| b.iter(|| river_layout(&session.analysis, graph, collapse, &p)));
            names.push(n);
            let n = format!("river_{label}_scene");
            g.bench_function(&n, |b| b.iter(|| river::scene(session, graph, collapse, &classes)));
            names.push(n);
            let n = format!("river_{label}_scene_svg");
            g.bench_function(&n, |b| b.iter(|| river::scene(session, graph, collapse, &classes).0.to_svg()));
            names.push(n);
        }
        let n = "treemap64_layout".to_string();
        g.bench_function(&n, |b| b.iter(|| treemap(black_box(&d64.regions), TREEMAP, true)));
        names.push(n);
        let n = "treemap64_scene".to_string();
        g.bench_function(&n, |b| b.iter(|| layer::scene(&d64, Fill::default(), None)));
        names.push(n);
        let n = "treemap64_scene_svg".to_string();
        g.bench_function(&n, |b| b.iter(|| layer::scene(&d64, Fill::default(), None).0.to_svg()));
        names.push(n);
        g.finish();
    }
    c.final_summary();

    println!("\n== views summary (medians; {}) ==", machine());
    println!("columns: resnet56 {}, synthetic300 {}, synthetic300_auto60 {}", river::scene(&s56, &r56, &none, &classes).1.layout.columns.len(), river::scene(&s300, &g300, &none, &classes).1.layout.columns.len(), river::scene(&s300, &g300, &auto, &classes).1.layout.columns.len());
    for n in &names {
        match median_s(GROUP, n, since) {
            Some(s) => {
                let goal = if n.ends_with("_svg") { format!("   goal (layout + scene + SVG) < 16 ms: {}", if s < 0.016 { "met" } else { "MISSED" }) } else { String::new() };
                println!("{n:<36} {:>10.3} ms{goal}", s * 1e3)
            }
            None => println!("{n:<36} not run"),
        }
    }
}
