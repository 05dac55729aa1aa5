//! Helpers shared by the models tests: paths into the real data and loaders.
#![allow(dead_code)]

use std::path::PathBuf;

use aevis_models::backend::Cpu;
use aevis_models::data::default_data_dir;
use aevis_models::net::Network;
use aevis_models::weights::Weights;
use aevis_models::zoo::Arch;

pub const CIFAR_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const CIFAR_STD: [f32; 3] = [0.229, 0.224, 0.225];

pub fn data() -> PathBuf {
    default_data_dir()
}

pub fn cifar(depth: usize) -> Network<Cpu> {
    cifar_on::<Cpu>(depth)
}

/// EfficientNet-Lite0 with the registry's preprocessing.
pub fn efficientnet() -> Network<Cpu> {
    let path = data().join("models/imagenet_efficientnet_lite0/efficientnet-lite0-57934424.safetensors");
    let w = Weights::load(&path, "efficientnet_lite0").expect("weights load");
    Arch::EfficientNetLite0.build::<Cpu>(&w, "effnet", [3, 224, 224], 1000, [127.0 / 255.0; 3], [128.0 / 255.0; 3], &Default::default()).expect("network builds")
}

pub fn cifar_on<B: burn::tensor::backend::Backend>(depth: usize) -> Network<B> {
    let file = match depth {
        20 => "resnet20-12fca82f",
        32 => "resnet32-d509ac18",
        44 => "resnet44-014dd654",
        56 => "resnet56-4bfd9763",
        _ => panic!("no weights for depth {depth}"),
    };
    let path = data().join(format!("models/cifar10_resnet_akamaster/{file}.safetensors"));
    let w = Weights::load(&path, "cifar_resnet").expect("weights load");
    Arch::CifarResNet { n: (depth - 2) / 6 }
        .build::<B>(&w, &format!("resnet{depth}"), [3, 32, 32], 10, CIFAR_MEAN, CIFAR_STD, &Default::default())
        .expect("network builds")
}

pub fn json(rel: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(data().join(rel)).expect("reference file");
    serde_json::from_str(&text).expect("json")
}

pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number") as f32).collect()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}
