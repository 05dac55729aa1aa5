//! Engine speed on the CPU backend (`Autodiff<Flex>`): forward, and forward +
//! backward to the gates (the extraction step: every gate requires grad),
//! for CIFAR ResNet-56 at batch 1 and 3 and EfficientNet-Lite0 at batch 1;
//! the machine's own f32 matmul rate as the peak; MI-FGSM throughput.
//!
//! `cargo bench --bench engine` (criterion; `-- FILTER` as usual).
//! After criterion's own report, a summary prints ms per step and GFLOP/s
//! beside the matmul peak. FLOPs are counted analytically from the
//! architectures (`2·k²·Cin/groups·Cout·Hout·Wout` per conv, `2·in·out` per
//! linear layer). Forward + backward counts 2× forward (the backward needs
//! only the input gradient of each conv: the weights are constants, burn's
//! autodiff does not compute their gradient) and, for comparison, the usual
//! 3× convention.

mod common;

use std::time::SystemTime;

use aevis_models::attack::attack;
use aevis_models::backend::Cpu;
use aevis_models::data::Image;
use aevis_models::net::{Gate, Gates, Network};
use aevis_models::ops;
use aevis_shared::protocol::AttackParams;
use burn::backend::Flex;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Distribution, Tensor, activation};
use criterion::{BenchmarkGroup, SamplingMode, Throughput, measurement::WallTime};

use common::*;

const GROUP: &str = "engine";

fn conv_flops(k: usize, cin: usize, cout: usize, groups: usize, h: usize, w: usize) -> f64 {
    2.0 * (k * k) as f64 * (cin / groups) as f64 * cout as f64 * (h * w) as f64
}

/// Forward FLOPs of CIFAR ResNet-(6n+2) for one 32×32 image.
fn cifar_resnet_flops(n: usize) -> f64 {
    let mut f = conv_flops(3, 3, 16, 1, 32, 32);
    let (mut cin, mut hw) = (16, 32);
    for (s, planes) in [16usize, 32, 64].into_iter().enumerate() {
        for i in 0..n {
            if s > 0 && i == 0 {
                hw /= 2;
            }
            f += conv_flops(3, cin, planes, 1, hw, hw) + conv_flops(3, planes, planes, 1, hw, hw);
            cin = planes;
        }
    }
    f + 2.0 * 64.0 * 10.0
}

/// `(kernel, stride, expand, in, out)` per block of EfficientNet-Lite0 (as in the zoo).
const LITE0: [(usize, usize, usize, usize, usize); 16] = [
    (3, 1, 1, 32, 16),
    (3, 2, 6, 16, 24),
    (3, 1, 6, 24, 24),
    (5, 2, 6, 24, 40),
    (5, 1, 6, 40, 40),
    (3, 2, 6, 40, 80),
    (3, 1, 6, 80, 80),
    (3, 1, 6, 80, 80),
    (5, 1, 6, 80, 112),
    (5, 1, 6, 112, 112),
    (5, 1, 6, 112, 112),
    (5, 2, 6, 112, 192),
    (5, 1, 6, 192, 192),
    (5, 1, 6, 192, 192),
    (5, 1, 6, 192, 192),
    (3, 1, 6, 192, 320),
];

/// Forward FLOPs of EfficientNet-Lite0 for one 224×224 image.
fn lite0_flops() -> f64 {
    let mut f = conv_flops(3, 3, 32, 1, 112, 112);
    let mut hw = 112;
    for (k, s, e, cin, cout) in LITE0 {
        let mid = cin * e;
        if e != 1 {
            f += conv_flops(1, cin, mid, 1, hw, hw);
        }
        hw /= s;
        f += conv_flops(k, mid, mid, mid, hw, hw) + conv_flops(1, mid, cout, 1, hw, hw);
    }
    assert_eq!(hw, 7);
    f + conv_flops(1, 320, 1280, 1, 7, 7) + 2.0 * 1280.0 * 1000.0
}

/// All-ones gates `[n, total]` requiring grad, split per gated layer.
fn open_gates(net: &Network<Cpu>, n: usize) -> (Tensor<Cpu, 2>, Gates<Cpu>) {
    let widths = net.graph().widths();
    let total: usize = widths.iter().sum();
    let z = Tensor::<Cpu, 2>::ones([n, total], net.device()).require_grad();
    let mut at = 0;
    let gates = widths
        .iter()
        .map(|&w| {
            let g = z.clone().narrow(1, at, w);
            at += w;
            Some(Gate { z: g, mask: None })
        })
        .collect();
    (z, gates)
}

/// One forward pass, logits copied to the host.
fn forward(net: &Network<Cpu>, x: &Tensor<Cpu, 4>) -> Vec<f32> {
    ops::host(net.logits(x.clone()).inner())
}

/// One extraction step: forward with every gate requiring grad, Eq. 5's fit
/// and sparsity terms, backward, the gate gradient copied to the host.
fn gate_step(net: &Network<Cpu>, x: &Tensor<Cpu, 4>, p0: &Tensor<Cpu, 2>) -> Vec<f32> {
    let (z, gates) = open_gates(net, x.dims()[0]);
    let logits = net.forward(x.clone(), &gates, &[]).logits;
    let fit = (p0.clone() - activation::softmax(logits, 1)).powf_scalar(2.0).sum_dim(1);
    let loss = fit + z.clone().mean_dim(1) * 0.01;
    let grads = loss.sum().backward();
    ops::host(z.grad(&grads).expect("gates require grad"))
}

struct Case {
    name: String,
    flops: f64,
    step_flops: f64,
}

fn bench_net(g: &mut BenchmarkGroup<'_, WallTime>, cases: &mut Vec<Case>, label: &str, net: &Network<Cpu>, imgs: &[&Image], fwd_flops: f64) {
    let x = ops::batch::<Cpu>(imgs, net.device()).expect("batch");
    let n = imgs.len();
    let p0 = activation::softmax(net.logits(x.clone()), 1).detach();
    let fwd = format!("{label}_b{n}_forward");
    let step = format!("{label}_b{n}_gate_step");
    g.throughput(Throughput::Elements((fwd_flops * n as f64) as u64));
    g.bench_function(&fwd, |b| b.iter(|| forward(net, &x)));
    g.throughput(Throughput::Elements((2.0 * fwd_flops * n as f64) as u64));
    g.bench_function(&step, |b| b.iter(|| gate_step(net, &x, &p0)));
    cases.push(Case { name: fwd, flops: fwd_flops * n as f64, step_flops: 0.0 });
    cases.push(Case { name: step, flops: 2.0 * fwd_flops * n as f64, step_flops: 3.0 * fwd_flops * n as f64 });
}

fn main() {
    let since = SystemTime::now();
    println!("machine: {}", machine());
    let mut c = criterion();
    let mut cases: Vec<Case> = vec![];

    // The peak: a large f32 matmul on the plain Flex backend.
    let mut peak_names = vec![];
    {
        let mut g = c.benchmark_group(GROUP);
        g.sampling_mode(SamplingMode::Flat);
        let dev = Default::default();
        for size in [512usize, 1024] {
            let a = Tensor::<Flex, 2>::random([size, size], Distribution::Default, &dev);
            let b = Tensor::<Flex, 2>::random([size, size], Distribution::Default, &dev);
            let flops = 2.0 * (size as f64).powi(3);
            let name = format!("matmul_{size}");
            g.throughput(Throughput::Elements(flops as u64));
            g.bench_function(&name, |bch| bch.iter(|| ops::host(a.clone().matmul(b.clone()))));
            cases.push(Case { name: name.clone(), flops, step_flops: 0.0 });
            peak_names.push(name);
        }
        // Typical single convolutions of ResNet-56 (batch 1), to see where the rate goes.
        for (cin, hw) in [(16usize, 32usize), (32, 16), (64, 8)] {
            let x = Tensor::<Flex, 4>::random([1, cin, hw, hw], Distribution::Default, &dev);
            let w = Tensor::<Flex, 4>::random([cin, cin, 3, 3], Distribution::Default, &dev);
            let bias = Tensor::<Flex, 1>::zeros([cin], &dev);
            let name = format!("conv3x3_{cin}ch_{hw}px_b1");
            let flops = conv_flops(3, cin, cin, 1, hw, hw);
            g.throughput(Throughput::Elements(flops as u64));
            g.bench_function(&name, |bch| {
                bch.iter(|| ops::host(conv2d(x.clone(), w.clone(), Some(bias.clone()), ConvOptions::new([1, 1], [1, 1], [1, 1], 1))))
            });
            cases.push(Case { name, flops, step_flops: 0.0 });
        }
        g.finish();
    }

    let r56 = cifar(56);
    let r56_flops = cifar_resnet_flops(9);
    let (imgs, labels) = cifar_test(32);
    let refs: Vec<&Image> = imgs.iter().collect();
    {
        let mut g = c.benchmark_group(GROUP);
        g.sampling_mode(SamplingMode::Flat);
        bench_net(&mut g, &mut cases, "resnet56", &r56, &refs[..1], r56_flops);
        bench_net(&mut g, &mut cases, "resnet56", &r56, &refs[..3], r56_flops);
        // The same forward without the autodiff wrapper, for its overhead.
        let plain = cifar_on::<Flex>(56);
        let x = ops::batch::<Flex>(&refs[..1], &Default::default()).expect("batch");
        g.throughput(Throughput::Elements(r56_flops as u64));
        g.bench_function("resnet56_b1_forward_plain_flex", |b| b.iter(|| ops::host(plain.logits(x.clone()))));
        cases.push(Case { name: "resnet56_b1_forward_plain_flex".into(), flops: r56_flops, step_flops: 0.0 });
        g.finish();
    }
    let eff = efficientnet();
    let eff_flops = lite0_flops();
    {
        let photos = dev_photos(1);
        let prefs: Vec<&Image> = photos.iter().collect();
        let mut g = c.benchmark_group(GROUP);
        g.sampling_mode(SamplingMode::Flat);
        bench_net(&mut g, &mut cases, "effnet_lite0", &eff, &prefs, eff_flops);
        g.finish();
    }
    // MI-FGSM (ε = 8/255, T = 10, μ = 1): images per second.
    let params = AttackParams::mi_fgsm(8.0 / 255.0);
    {
        let mut g = c.benchmark_group(GROUP);
        g.sampling_mode(SamplingMode::Flat);
        g.throughput(Throughput::Elements(1));
        g.bench_function("mifgsm_resnet56_b1", |b| b.iter(|| attack(&r56, &refs[..1], &labels[..1], &params).expect("attack")));
        g.finish();
    }
    // Batch 32 takes seconds per attack: a few plain runs, the median.
    let b32 = if selected("mifgsm_resnet56_b32") {
        let t = timed_runs(runs(3), true, || attack(&r56, &refs, &labels[..32], &params).expect("attack"));
        let m = median(&t);
        println!("{GROUP}/mifgsm_resnet56_b32: {} runs, median {:.2} s (min {:.2}, max {:.2})", t.len(), m, t[0].as_secs_f64(), t[t.len() - 1].as_secs_f64());
        Some(m)
    } else {
        None
    };
    c.final_summary();

    // The summary.
    let peak = peak_names.iter().filter_map(|n| median_s(GROUP, n, since).map(|s| cases.iter().find(|c| &c.name == n).unwrap().flops / s / 1e9)).fold(f64::NAN, f64::max);
    println!("\n== engine summary (medians; {}) ==", machine());
    println!("forward FLOPs per image: ResNet-56 {:.3} GFLOP, EfficientNet-Lite0 {:.3} GFLOP", r56_flops / 1e9, eff_flops / 1e9);
    println!("matmul peak (best of 512², 1024² f32 on Flex): {peak:.1} GFLOP/s");
    println!("{:<34} {:>10} {:>10} {:>9} {:>13}", "case", "ms", "GFLOP/s", "of peak", "GFLOP/s (3×)");
    for case in &cases {
        match median_s(GROUP, &case.name, since) {
            Some(s) => {
                let rate = case.flops / s / 1e9;
                let conv = if case.step_flops > 0.0 { format!("{:.1}", case.step_flops / s / 1e9) } else { String::new() };
                println!("{:<34} {:>10.2} {:>10.1} {:>8.0}% {:>13}", case.name, s * 1e3, rate, 100.0 * rate / peak, conv);
            }
            None => println!("{:<34} {:>10}", case.name, "not run"),
        }
    }
    if let Some(s) = median_s(GROUP, "mifgsm_resnet56_b1", since) {
        println!("MI-FGSM ResNet-56 batch 1: {:.0} ms per image, {:.2} images/s", s * 1e3, 1.0 / s);
    }
    if let Some(m) = b32 {
        println!("MI-FGSM ResNet-56 batch 32: {:.2} s per batch, {:.2} images/s", m, 32.0 / m);
    }
    if let (Some(s), true) = (median_s(GROUP, "resnet56_b1_gate_step", since), peak.is_finite()) {
        let rate = 2.0 * r56_flops / s / 1e9;
        let verdict = if rate >= peak / 4.0 { "met" } else { "MISSED" };
        println!("goal: ResNet-56 gate step (batch 1) ≥ ¼ of the matmul peak ({:.1} GFLOP/s): {rate:.1} GFLOP/s (2× count), {:.1} (3× count) — {verdict} on the 2× count", peak / 4.0, 1.5 * rate);
    }
}
