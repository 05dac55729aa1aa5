//! Helpers shared by the benches: the real networks and images, the machine
//! description, criterion's own medians read back for the printed summaries,
//! and a plain "run a few times, report the median" timer for the slow cases.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use aevis_models::backend::Cpu;
use aevis_models::data::{Image, Split, default_data_dir};
use aevis_models::net::Network;
use aevis_models::weights::Weights;
use aevis_models::zoo::Arch;
use burn::tensor::backend::Backend;

pub const CIFAR_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const CIFAR_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The real data folder (`AEVIS_DATA` or `shared/data` beside the checkout).
pub fn data() -> PathBuf {
    default_data_dir()
}

/// CIFAR ResNet-(6n+2) on backend `B`, built the way `models/tests/common.rs` does.
pub fn cifar_on<B: Backend>(depth: usize) -> Network<B> {
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

/// CIFAR ResNet on the engine's CPU backend (`Autodiff<Flex>`).
pub fn cifar(depth: usize) -> Network<Cpu> {
    cifar_on::<Cpu>(depth)
}

/// EfficientNet-Lite0 with the registry's preprocessing.
pub fn efficientnet() -> Network<Cpu> {
    let path = data().join("models/imagenet_efficientnet_lite0/efficientnet-lite0-57934424.safetensors");
    let w = Weights::load(&path, "efficientnet_lite0").expect("weights load");
    let mean = [127.0 / 255.0; 3];
    let std = [128.0 / 255.0; 3];
    Arch::EfficientNetLite0.build::<Cpu>(&w, "effnet", [3, 224, 224], 1000, mean, std, &Default::default()).expect("builds")
}

/// The first `n` CIFAR-10 test images (exact PNG-equivalent bytes) and their labels.
pub fn cifar_test(n: usize) -> (Vec<Image>, Vec<usize>) {
    let split = Split::read_cifar("test", &data().join("cifar10/test_first1000_exact.bin"), Some(n)).expect("CIFAR test split");
    ((0..n).map(|i| split.image(i).expect("image")).collect(), split.labels.clone())
}

/// The first `n` photos of the NIPS 2017 DEV subset at 224×224.
pub fn dev_photos(n: usize) -> Vec<Image> {
    let split = Split::read_folder(
        "dev",
        &data().join("imagenet/nips2017_dev_subset"),
        "true_label",
        aevis_models::data::Preprocess::Resize,
        224,
        224,
    )
    .expect("DEV split");
    (0..n).map(|i| split.image(i).expect("image")).collect()
}

/// One line about the machine: cores, CPU model, load average.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!("{cores} cores ({cpu}), load average {} (1, 5, 15 min) when printed (the bench's own work counts in it)", load.join(" "))
}

/// Where criterion writes its results (the same rule criterion uses by default).
pub fn criterion_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("criterion")
}

/// A criterion configuration for this suite: few samples, short runs.
pub fn criterion() -> criterion::Criterion {
    criterion::Criterion::default()
        .output_directory(&criterion_dir())
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .without_plots()
        .configure_from_args()
}

/// Criterion's median (seconds) of `group/name`, if it was measured by this process.
pub fn median_s(group: &str, name: &str, since: SystemTime) -> Option<f64> {
    let path = criterion_dir().join(group).join(name).join("new/estimates.json");
    let meta = std::fs::metadata(&path).ok()?;
    if meta.modified().ok()? < since {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()?;
    Some(v["median"]["point_estimate"].as_f64()? * 1e-9)
}

/// Runs `f` once to warm up (when `warm`), then `runs` times; returns the sorted durations.
pub fn timed_runs<T>(runs: usize, warm: bool, mut f: impl FnMut() -> T) -> Vec<Duration> {
    if warm {
        std::hint::black_box(f());
    }
    let mut out: Vec<Duration> = (0..runs.max(1))
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed()
        })
        .collect();
    out.sort();
    out
}

/// Median of sorted durations, in seconds.
pub fn median(sorted: &[Duration]) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 { sorted[n / 2].as_secs_f64() } else { (sorted[n / 2 - 1] + sorted[n / 2]).as_secs_f64() / 2.0 }
}

/// How many runs the slow cases do (`AEVIS_BENCH_RUNS`, default `default`).
pub fn runs(default: usize) -> usize {
    std::env::var("AEVIS_BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// Whether a slow case named `name` should run under the criterion-style
/// filter given on the command line (`cargo bench --bench x -- FILTER`).
pub fn selected(name: &str) -> bool {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    args.is_empty() || args.iter().any(|a| name.contains(a.as_str()))
}
