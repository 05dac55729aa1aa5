//! Small hand-made protocol values (a 9-layer toy network and one session on
//! it), for tests, screenshots and demos without a daemon.

use std::io::Cursor;

use aevis_shared::datapath::{Datapath, DistanceForm, TripletAnalysis};
use aevis_shared::graph::{GatedLayer, LayerGraph};
use aevis_shared::protocol::{
    AdversarialSpec, AttackParams, Candidate, CandidateList, ContributionRequest, ContributionResult,
    ContributionTarget, CreateSession, DaemonInfo, ExtractParams, ExtractedPath, Faithfulness, ImageEntry, ImagePage,
    ImageRef, LayerDetail, ModelInfo, NeuronDetail, Patch, Region, SessionImage, SessionResult,
};
use aevis_shared::sets::SetRegions;

/// Channels of every toy layer.
pub const CHANNELS: usize = 8;

/// Class names of the toy model.
pub fn classes() -> Vec<String> {
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        .map(String::from)
        .to_vec()
}

/// A stem and two stages of two residual blocks of two gated layers each.
pub fn graph() -> LayerGraph {
    let mut layers = vec![GatedLayer {
        name: "conv1".into(),
        channels: CHANNELS,
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
                    channels: CHANNELS,
                    height: 8,
                    width: 8,
                    inputs,
                    stage: format!("layer{s}"),
                    block: format!("layer{s}.{b}"),
                });
            }
        }
    }
    LayerGraph { model: "toy-resnet".into(), input: [3, 8, 8], num_classes: 10, layers }
}

/// A `w × h` RGB PNG with a simple gradient, tinted by `seed`.
pub fn png(w: u32, h: u32, seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 255 / w.max(1)) as u8, (y * 255 / h.max(1)) as u8, seed.wrapping_mul(40)])
    });
    let mut out = Cursor::new(Vec::new());
    // In-memory PNG encoding of a valid buffer does not fail.
    let _ = img.write_to(&mut out, image::ImageFormat::Png);
    out.into_inner()
}

fn path(gates: Vec<Vec<f32>>, origin: &str, predicted: usize, seed: u8) -> ExtractedPath {
    let n = gates.len();
    ExtractedPath {
        image: SessionImage {
            origin: origin.into(),
            label: Some(predicted),
            predicted,
            confidence: 0.9,
            png: png(8, 8, seed),
        },
        datapath: Datapath { gates },
        faithfulness: Faithfulness {
            binarised_keeps_top1: true,
            continuous_keeps_top1: true,
            kept_per_layer: vec![0.5; n],
            kept_overall: 0.5,
            loss: 0.1,
            steps: 100,
        },
    }
}

/// Gates that drift from the source towards the target over depth.
fn datapaths() -> [Vec<Vec<f32>>; 3] {
    let layers = graph().layers.len();
    let src: Vec<Vec<f32>> =
        (0..layers).map(|_| (0..CHANNELS).map(|c| if c < 4 { 1.0 } else { 0.0 }).collect()).collect();
    let tgt: Vec<Vec<f32>> =
        (0..layers).map(|_| (0..CHANNELS).map(|c| if (3..7).contains(&c) { 1.0 } else { 0.0 }).collect()).collect();
    let adv: Vec<Vec<f32>> = (0..layers)
        .map(|l| {
            let t = l as f32 / (layers - 1) as f32;
            src[l].iter().zip(&tgt[l]).map(|(s, g)| s + (g - s) * t).collect()
        })
        .collect();
    [src, adv, tgt]
}

/// Model info of the toy model.
pub fn info() -> DaemonInfo {
    DaemonInfo {
        version: "0.1.0".into(),
        protocol: aevis_shared::protocol::PROTOCOL_VERSION,
        backend: "flex (CPU)".into(),
        device: "cpu".into(),
        models: vec![ModelInfo {
            id: "toy-resnet".into(),
            arch: "toy".into(),
            dataset: "cifar10".into(),
            input: [3, 8, 8],
            classes: classes(),
            gated_layers: 9,
            gates: 9 * CHANNELS,
            lambda: 0.05,
            gamma: 0.05,
            splits: vec!["test".into()],
        }],
    }
}

/// A page of the toy data set.
pub fn images() -> ImagePage {
    ImagePage {
        split: "test".into(),
        total: 3,
        entries: vec![
            ImageEntry { index: 0, label: 3, predicted: 3, confidence: 0.92 },
            ImageEntry { index: 1, label: 8, predicted: 8, confidence: 0.88 },
            ImageEntry { index: 2, label: 1, predicted: 9, confidence: 0.51 },
        ],
    }
}

/// Three candidates.
pub fn candidates() -> CandidateList {
    let c = |source, true_class, adversarial_class, score| Candidate {
        source,
        true_class,
        clean_prob: 0.9,
        adversarial_class,
        adversarial_prob: 0.7,
        score,
    };
    CandidateList {
        split: "test".into(),
        params: AttackParams::mi_fgsm(8.0 / 255.0),
        candidates: vec![c(0, 3, 5, 0.4), c(1, 8, 0, 0.9), c(4, 3, 2, 0.1)],
        attacked: 3,
    }
}

/// The session: source "cat" fooled into "dog".
pub fn session() -> SessionResult {
    let [src, adv, tgt] = datapaths();
    let a = |v: &Vec<Vec<f32>>| Datapath { gates: v.clone() };
    let analysis = TripletAnalysis::new(&a(&adv), &a(&src), &a(&tgt), DistanceForm::L2, 3);
    SessionResult {
        id: "s-toy".into(),
        request: CreateSession {
            model: "toy-resnet".into(),
            source: ImageRef::Dataset { split: "test".into(), index: 0 },
            adversarial: AdversarialSpec::Attack(AttackParams::mi_fgsm(8.0 / 255.0)),
            target_class: None,
            n_targets: 1,
            target_split: "test".into(),
            extract: ExtractParams::default_for(0.05),
        },
        source: path(src, "test #0", 3, 1),
        adversarial: path(adv, "MI-FGSM of test #0", 5, 2),
        targets: vec![path(tgt, "test #7", 5, 3)],
        representative: 0,
        target_similarity: vec![0.5],
        analysis,
        attack: None,
        seconds: 1.5,
    }
}

/// Layer detail of layer `layer`: hand-made critical sets that fill all
/// seven regions (S = {0,1,2,3}, A = {2,3,4,5}, T = {1,3,5,6,7}).
pub fn layer_detail(layer: usize) -> LayerDetail {
    let critical: [Vec<usize>; 3] = [vec![0, 1, 2, 3], vec![2, 3, 4, 5], vec![1, 3, 5, 6, 7]];
    let regions = SetRegions::new(&critical[0], &critical[1], &critical[2]);
    let act = |k: f32| (0..CHANNELS).map(|c| k * (c as f32 + 1.0) / CHANNELS as f32).collect::<Vec<f32>>();
    let gates = critical.clone().map(|set| (0..CHANNELS).map(|c| if set.contains(&c) { 0.9 } else { 0.1 }).collect());
    LayerDetail {
        layer,
        name: graph().layers.get(layer).map_or_else(|| format!("layer {layer}"), |l| l.name.clone()),
        critical,
        regions,
        max_activation: [act(1.0), act(2.0), act(0.5)],
        gates,
    }
}

/// Neuron detail of `(layer, channel)`: an 8 × 8 blob, brightest for the adversarial.
pub fn neuron_detail(layer: usize, channel: usize) -> NeuronDetail {
    let blob = |k: f32| -> Vec<f32> {
        (0..64)
            .map(|i| {
                let (y, x) = ((i / 8) as f32 - 3.5, (i % 8) as f32 - 3.5);
                k * (-(x * x + y * y) / 8.0).exp()
            })
            .collect()
    };
    NeuronDetail {
        layer,
        channel,
        height: 8,
        width: 8,
        maps: [blob(1.0), blob(2.0), blob(1.5)],
        scale: (0.0, 2.0),
        learned: (0..3)
            .map(|k| Patch { image: k, activation: 3.0 - k as f32, rect: [0, 0, 4, 4], png: png(4, 4, k as u8) })
            .collect(),
    }
}

/// A contribution of layer `earlier` to a region of `(layer, channel)`.
pub fn contribution(layer: usize, channel: usize, earlier: usize) -> ContributionResult {
    let z = |k: usize| (0..CHANNELS).map(|c| ((c + k) % CHANNELS) as f32 / CHANNELS as f32).collect::<Vec<f32>>();
    let top = |k: usize| {
        let mut t: Vec<(usize, f32, f32)> = z(k).into_iter().enumerate().map(|(c, v)| (c, v, 0.0)).collect();
        t.sort_by(|a, b| b.1.total_cmp(&a.1));
        t.truncate(3);
        t
    };
    let region = Region { y0: 2, y1: 5, x0: 1, x1: 4 };
    ContributionResult {
        request: ContributionRequest {
            target: ContributionTarget::FeatureMap { layer, channel, region: Some(region) },
            earlier,
            fast: true,
            lambda: 0.05,
            gamma: 0.05,
            steps: 100,
            request_id: 1,
        },
        contributions: [z(0), z(1), z(2)],
        top: [top(0), top(1), top(2)],
        receptive_field: Some(Region { y0: 1, y1: 6, x0: 0, x1: 5 }),
        millis: 12.0,
    }
}
