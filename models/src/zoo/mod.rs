//! The architectures, each built from a weight file with its original key
//! names into a [`crate::net::Network`].

pub mod cifar_resnet;
pub mod efficientnet_lite;
pub mod torchvision_resnet;
pub mod vgg;

use burn::tensor::backend::Backend;

use crate::error::{Error, Result};
use crate::net::Network;
use crate::weights::Weights;

/// Architectures aevis knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// CIFAR ResNet-(6n+2) with option-A shortcuts (He et al. 2016), n blocks per stage.
    CifarResNet {
        /// Blocks per stage (3 = ResNet-20, 9 = ResNet-56, 18 = ResNet-110).
        n: usize,
    },
    /// EfficientNet-Lite0 (TF "SAME" padding, ReLU6, BN ε = 1e-3).
    EfficientNetLite0,
    /// torchvision ResNet with BasicBlocks (ResNet-18/34).
    TorchvisionBasic {
        /// Blocks per stage.
        layers: [usize; 4],
    },
    /// torchvision ResNet with Bottlenecks (ResNet-50/101/152).
    TorchvisionBottleneck {
        /// Blocks per stage.
        layers: [usize; 4],
    },
    /// torchvision VGG-16 (no BatchNorm).
    Vgg16,
}

impl Arch {
    /// Parses an architecture name as used in model TOML files.
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "cifar_resnet20" => Arch::CifarResNet { n: 3 },
            "cifar_resnet32" => Arch::CifarResNet { n: 5 },
            "cifar_resnet44" => Arch::CifarResNet { n: 7 },
            "cifar_resnet56" => Arch::CifarResNet { n: 9 },
            "cifar_resnet110" => Arch::CifarResNet { n: 18 },
            "efficientnet_lite0" => Arch::EfficientNetLite0,
            "resnet18" => Arch::TorchvisionBasic { layers: [2, 2, 2, 2] },
            "resnet34" => Arch::TorchvisionBasic { layers: [3, 4, 6, 3] },
            "resnet50" => Arch::TorchvisionBottleneck { layers: [3, 4, 6, 3] },
            "resnet101" => Arch::TorchvisionBottleneck { layers: [3, 4, 23, 3] },
            "resnet152" => Arch::TorchvisionBottleneck { layers: [3, 8, 36, 3] },
            "vgg16" => Arch::Vgg16,
            other => {
                return Err(Error::Registry(format!(
                    "unknown architecture `{other}`; known: cifar_resnet20/32/44/56/110, efficientnet_lite0, resnet18/34/50/101/152, vgg16"
                )));
            }
        })
    }

    /// Builds the network from weights, with the model's input size and normalisation.
    pub fn build<B: Backend>(
        self,
        weights: &Weights,
        model: &str,
        input: [usize; 3],
        num_classes: usize,
        mean: [f32; 3],
        std: [f32; 3],
        device: &B::Device,
    ) -> Result<Network<B>> {
        match self {
            Arch::CifarResNet { n } => cifar_resnet::build(weights, n, model, input, num_classes, mean, std, device),
            Arch::EfficientNetLite0 => efficientnet_lite::build(weights, model, input, num_classes, mean, std, device),
            Arch::TorchvisionBasic { layers } => {
                torchvision_resnet::build(weights, layers, false, model, input, num_classes, mean, std, device)
            }
            Arch::TorchvisionBottleneck { layers } => {
                torchvision_resnet::build(weights, layers, true, model, input, num_classes, mean, std, device)
            }
            Arch::Vgg16 => vgg::build(weights, model, input, num_classes, mean, std, device),
        }
    }
}
