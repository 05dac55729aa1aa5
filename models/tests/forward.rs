//! The model engine against independent references: PyTorch's logits, the
//! measured accuracies, and the invariants of the gated forward.

mod common;

use aevis_models::backend::Cpu;
use aevis_models::data::{Preprocess, Split, decode_image, read_classes};
use aevis_models::net::{Gate, Gates};
use aevis_models::ops;
use aevis_models::weights::{HostTensor, Weights};
use aevis_models::zoo::Arch;
use aevis_models::Error;
use burn::tensor::{Tensor, TensorData};
use common::*;

type B = Cpu;

fn cifar_records(n: usize) -> (Tensor<B, 4>, Vec<usize>) {
    let split = Split::read_cifar("test", &data().join("cifar10/test_first1000_exact.bin"), Some(n)).unwrap();
    let imgs: Vec<_> = (0..n).map(|i| split.image(i).unwrap()).collect();
    let refs: Vec<_> = imgs.iter().collect();
    (ops::batch::<B>(&refs, &Default::default()).unwrap(), split.labels.clone())
}

#[test]
fn cifar_resnets_match_pytorch_logits() {
    let reference = json("models/reference_outputs.json");
    let (x, labels) = cifar_records(2);
    assert_eq!(labels, vec![3, 8]);
    for depth in [20, 32, 44, 56] {
        let net = cifar(depth);
        let logits = ops::rows(net.logits(x.clone()).inner());
        for (i, row) in logits.iter().enumerate() {
            let want = floats(&reference["cifar10_resnet_akamaster"]["logits"][format!("resnet{depth}")][i]);
            let d = max_abs_diff(row, &want);
            assert!(d < 1e-3, "resnet{depth} image {i}: max |diff| {d}");
        }
    }
}

#[test]
fn resnet56_has_the_documented_gated_layers() {
    let net = cifar(56);
    let g = net.graph();
    assert_eq!(g.layers.len(), 55);
    assert_eq!(g.total_gates(), 2032);
    assert_eq!(g.layers[0].name, "conv1");
    let out = g.index_of("layer2.0.out").unwrap();
    let l = &g.layers[out];
    assert_eq!((l.channels, l.height, l.width), (32, 16, 16));
    // The block output reads its inner layer and, through the shortcut, the previous block.
    let prev = g.index_of("layer1.8.out").unwrap();
    let inner = g.index_of("layer2.0.conv1").unwrap();
    assert_eq!(l.inputs, vec![prev, inner]);
    assert_eq!(g.hierarchy().len(), 4);
    let err = net.layer("layer9.0.out").unwrap_err().to_string();
    assert!(err.contains("layer9.0.out") && err.contains("55"), "{err}");
}

#[test]
fn cifar_top1_matches_the_measured_accuracy() {
    let split = Split::read_cifar("test", &data().join("cifar10/test_first1000_exact.bin"), None).unwrap();
    for (depth, want) in [(20, 91.5), (32, 92.8), (44, 93.3), (56, 92.6)] {
        let net = cifar(depth);
        let mut correct = 0;
        for start in (0..1000).step_by(100) {
            let imgs: Vec<_> = (start..start + 100).map(|i| split.image(i).unwrap()).collect();
            let refs: Vec<_> = imgs.iter().collect();
            let x = ops::batch::<B>(&refs, &Default::default()).unwrap();
            for (k, row) in ops::rows(net.logits(x).inner()).iter().enumerate() {
                correct += usize::from(ops::argmax(row) == split.labels[start + k]);
            }
        }
        let acc = correct as f32 / 10.0;
        assert!((acc - want).abs() <= 0.2 + 1e-4, "resnet{depth}: {acc}% (expected {want} ± 0.2)");
    }
}

#[test]
fn efficientnet_matches_pytorch_logits() {
    let reference = json("models/reference_outputs.json");
    let r = &reference["imagenet_efficientnet_lite0"];
    let net = efficientnet();
    let dir = data().join("imagenet/nips2017_dev_subset");
    for (i, f) in r["files"].as_array().unwrap().iter().enumerate() {
        let bytes = std::fs::read(dir.join(f.as_str().unwrap())).unwrap();
        let img = decode_image(&bytes, Preprocess::CenterCrop, 224, 224).unwrap();
        let x = ops::batch::<B>(&[&img], &Default::default()).unwrap();
        let logits = ops::rows(net.logits(x).inner()).remove(0);
        let first8 = floats(&r["logits_first8"][i]);
        assert!(max_abs_diff(&logits[..8], &first8) < 1e-3, "image {i}: {:?} vs {first8:?}", &logits[..8]);
        let idx: Vec<usize> = r["top5_indices"][i].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        let vals = floats(&r["top5_logits"][i]);
        for (k, &c) in idx.iter().enumerate() {
            assert!((logits[c] - vals[k]).abs() < 1e-3, "image {i} class {c}: {} vs {}", logits[c], vals[k]);
        }
    }
}

#[test]
fn efficientnet_top1_on_the_dev_photos() {
    let net = efficientnet();
    let split = Split::read_folder("dev", &data().join("imagenet/nips2017_dev_subset"), "true_label", Preprocess::Resize, 224, 224).unwrap();
    assert_eq!(split.len(), 180);
    let mut correct = 0;
    for start in (0..180).step_by(20) {
        let imgs: Vec<_> = (start..start + 20).map(|i| split.image(i).unwrap()).collect();
        let refs: Vec<_> = imgs.iter().collect();
        let x = ops::batch::<B>(&refs, &Default::default()).unwrap();
        for (k, row) in ops::rows(net.logits(x).inner()).iter().enumerate() {
            correct += usize::from(ops::argmax(row) == split.labels[start + k]);
        }
    }
    assert!((162..=164).contains(&correct), "{correct}/180 (expected 163 ± 1)");
    let classes = read_classes(&data().join("imagenet/imagenet_classes.txt")).unwrap();
    assert_eq!(classes.len(), 1000);
}

fn fixture_input(size: usize) -> Tensor<B, 4> {
    let mut v = vec![0.0f32; 3 * size * size];
    for c in 0..3 {
        for h in 0..size {
            for w in 0..size {
                v[c * size * size + h * size + w] = ((c * 7 + h * 3 + w * 5) % 17) as f32 / 16.0 - 0.5;
            }
        }
    }
    Tensor::from_data(TensorData::new(v, [1, 3, size, size]), &Default::default())
}

#[test]
fn torchvision_fixtures_match_reference_logits() {
    let reference = json("fixtures/reference_logits.json");
    for (name, arch, classes) in [
        ("torchvision_resnet18_random", Arch::TorchvisionBasic { layers: [2, 2, 2, 2] }, 1000),
        ("torchvision_bottleneck_1111_random", Arch::TorchvisionBottleneck { layers: [1, 1, 1, 1] }, 10),
    ] {
        let w = Weights::load(&data().join(format!("fixtures/{name}.safetensors")), name).unwrap();
        let r = &reference["models"][name];
        for size in [64usize, 224] {
            // The fixture inputs are already normalised: identity preprocessing.
            let net = arch.build::<B>(&w, name, [3, size, size], classes, [0.0; 3], [1.0; 3], &Default::default()).unwrap();
            let logits = ops::rows(net.logits(fixture_input(size)).inner()).remove(0);
            let want = floats(&r[format!("logits_{size}")]);
            let d = max_abs_diff(&logits[..10], &want);
            assert!(d < 1e-3, "{name} at {size}: max |diff| {d}");
            assert_eq!(ops::argmax(&logits) as u64, r[format!("argmax_{size}")].as_u64().unwrap());
        }
    }
}

fn all_ones(net: &aevis_models::net::Network<B>, n: usize) -> Gates<B> {
    net.graph()
        .layers
        .iter()
        .map(|l| Some(Gate { z: Tensor::ones([n, l.channels], &Default::default()), mask: None }))
        .collect()
}

#[test]
fn gates_at_one_reproduce_the_logits_exactly_and_batch_size_does_not_matter() {
    let net = cifar(56);
    let (x, _) = cifar_records(7);
    let plain = ops::host(net.logits(x.clone()).inner());
    let gated = ops::host(net.forward(x.clone(), &all_ones(&net, 7), &[]).logits.inner());
    assert_eq!(plain, gated, "all-ones gates change the logits");
    // On the autodiff backend with gates requiring grad (what extraction runs), still the reference.
    let reference = json("models/reference_outputs.json");
    let mut gates = all_ones(&net, 2);
    for g in gates.iter_mut().flatten() {
        g.z = g.z.clone().require_grad();
    }
    let two = ops::rows(net.forward(x.clone().narrow(0, 0, 2), &gates, &[]).logits.inner());
    for (i, row) in two.iter().enumerate() {
        let want = floats(&reference["cifar10_resnet_akamaster"]["logits"]["resnet56"][i]);
        assert!(max_abs_diff(row, &want) < 1e-3);
    }
    // Image 3 alone and inside the batch of 7.
    let alone = ops::host(net.logits(x.clone().narrow(0, 3, 1)).inner());
    let d = max_abs_diff(&alone, &plain[30..40]);
    assert!(d < 1e-5, "batch-size dependence {d}");
}

#[test]
fn a_closed_gate_equals_zeroing_the_activation() {
    let net = cifar(56);
    let (x, _) = cifar_records(1);
    let layer = net.layer("layer2.3.conv1").unwrap();
    let width = net.graph().layers[layer].channels;
    // The most active channel, so that closing it must change the logits.
    let act = net.forward(x.clone(), &vec![], &[layer]).captured.remove(0);
    let maxes = ops::host(act.reshape([width, 256]).max_dim(1).reshape([width]).inner());
    let channel = ops::argmax(&maxes);
    let mut z = vec![1.0f32; width];
    z[channel] = 0.0;
    let mut gates: Gates<B> = vec![None; net.num_layers()];
    gates[layer] = Some(Gate { z: Tensor::from_data(TensorData::new(z, [1, width]), &Default::default()), mask: None });
    let gated = ops::host(net.forward(x.clone(), &gates, &[]).logits.inner());
    // Independent path: zero the channel of the captured activation and rerun the rest.
    let reference = net.logits_with_zeroed_channel(x, layer, channel);
    let d = max_abs_diff(&gated, &ops::host(reference.inner()));
    assert!(d < 1e-5, "gate 0 differs from zeroing by {d}");
    assert!(max_abs_diff(&gated, &ops::host(net.logits(cifar_records(1).0).inner())) > 1e-4, "closing a channel changed nothing");
}

#[test]
fn gate_gradients_match_central_differences() {
    type B64 = B;
    let net = cifar_on::<B64>(20);
    let split = Split::read_cifar("test", &data().join("cifar10/test_first1000_exact.bin"), Some(1)).unwrap();
    let img = split.image(0).unwrap();
    let x = ops::batch::<B64>(&[&img], &Default::default()).unwrap();
    let objective = |gates: &Gates<B64>| net.forward(x.clone(), gates, &[]).logits.narrow(1, 3, 1).sum();
    let base: Vec<Vec<f32>> = net.graph().layers.iter().map(|l| (0..l.channels).map(|c| 0.6 + 0.03 * (c % 7) as f32).collect()).collect();
    let to_gates = |vals: &[Vec<f32>], grad: bool| -> Gates<B64> {
        vals.iter()
            .map(|v| {
                let t = Tensor::<B64, 2>::from_data(TensorData::new(v.clone(), [1, v.len()]), &Default::default());
                Some(Gate { z: if grad { t.require_grad() } else { t }, mask: None })
            })
            .collect()
    };
    let value = |vals: &[Vec<f32>], l: usize, c: usize, d: f64| -> f64 {
        let mut g = to_gates(vals, false);
        let z = g[l].as_ref().unwrap().z.clone();
        let w = z.dims()[1];
        let mut bump = vec![0.0f32; w];
        bump[c] = d as f32;
        g[l] = Some(Gate { z: z + Tensor::from_data(TensorData::new(bump, [1, w]), &Default::default()), mask: None });
        f64::from(ops::host(objective(&g).inner())[0])
    };
    let gates = to_gates(&base, true);
    let grads = objective(&gates).backward();
    // f32 differences of a logit near 20 resolve about 1e-4: check the
    // channels with the largest gradients, with a step small enough to
    // rarely cross a ReLU kink.
    let h = 5e-3f64;
    let mut checked = 0;
    for l in [0usize, 5, 12, 18] {
        let g = ops::host(gates[l].as_ref().unwrap().z.grad(&grads).unwrap());
        let mut order: Vec<usize> = (0..g.len()).collect();
        order.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
        for &c in &order[..4] {
            let fd = (value(&base, l, c, h) - value(&base, l, c, -h)) / (2.0 * h);
            let rel = (f64::from(g[c]) - fd).abs() / fd.abs().max(f64::from(g[c].abs())).max(1e-6);
            assert!(rel < 1e-2, "layer {l} channel {c}: autodiff {} vs finite difference {fd} (rel {rel})", g[c]);
            checked += 1;
        }
    }
    assert_eq!(checked, 16);
}

#[test]
fn bad_weights_get_clear_errors() {
    let missing = data().join("models/nope.safetensors");
    let err = Weights::load(&missing, "cifar_resnet").unwrap_err();
    assert!(matches!(err, Error::WeightFile { .. }) && err.to_string().contains("nope.safetensors"), "{err}");
    // A torchvision ResNet-18 file loaded as a CIFAR ResNet: the stem has another shape.
    let w = Weights::load(&data().join("fixtures/torchvision_resnet18_random.safetensors"), "cifar_resnet20").unwrap();
    let err = Arch::CifarResNet { n: 3 }.build::<B>(&w, "x", [3, 32, 32], 10, CIFAR_MEAN, CIFAR_STD, &Default::default()).unwrap_err();
    match &err {
        Error::ShapeMismatch { tensor, expected, found, .. } => {
            assert_eq!(tensor, "conv1.weight");
            assert_eq!(expected, &vec![16, 3, 3, 3]);
            assert_eq!(found, &vec![64, 3, 7, 7]);
        }
        other => panic!("expected a shape mismatch, got {other}"),
    }
    // ResNet-20 weights as ResNet-56: a missing block.
    let w = Weights::load(&data().join("models/cifar10_resnet_akamaster/resnet20-12fca82f.safetensors"), "cifar_resnet56").unwrap();
    let err = Arch::CifarResNet { n: 9 }.build::<B>(&w, "x", [3, 32, 32], 10, CIFAR_MEAN, CIFAR_STD, &Default::default()).unwrap_err();
    assert!(matches!(&err, Error::MissingTensor { tensor, .. } if tensor == "layer1.3.conv1.weight"), "{err}");
    // The .pt copy loads through burn's PyTorch reader and gives the same tensors.
    let pt = Weights::load(&data().join("models/cifar10_resnet_akamaster/resnet20-12fca82f.pt"), "cifar_resnet20").unwrap();
    let st = Weights::load(&data().join("models/cifar10_resnet_akamaster/resnet20-12fca82f.safetensors"), "cifar_resnet20").unwrap();
    let a: &HostTensor = pt.get("layer3.2.conv2.weight", &[64, 64, 3, 3]).unwrap();
    let b: &HostTensor = st.get("layer3.2.conv2.weight", &[64, 64, 3, 3]).unwrap();
    assert_eq!(a, b);
}
