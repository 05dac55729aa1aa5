//! The model registry: a model is architecture + weights + preprocessing +
//! class names + its data set, described in TOML. The embedded default
//! (`registry/default.toml`) needs no configuration beyond the data folder.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::data::Preprocess;
use crate::error::{Error, Result};

/// The registry shipped inside the binary.
pub const DEFAULT_REGISTRY: &str = include_str!("../registry/default.toml");

/// Id of the embedded default model.
pub const DEFAULT_MODEL: &str = "cifar10-resnet56";

/// A data split of a model.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SplitSpec {
    /// Split name.
    pub name: String,
    /// `cifar` (binary records) or `folder` (images + labels.csv).
    pub kind: String,
    /// Path, relative to the data folder unless absolute.
    pub path: PathBuf,
    /// Label column of a folder's `labels.csv`.
    #[serde(default)]
    pub label_column: Option<String>,
}

/// One model of the registry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ModelSpec {
    /// Id, e.g. `cifar10-resnet56`.
    pub id: String,
    /// Architecture name (see [`crate::zoo::Arch::parse`]).
    pub arch: String,
    /// Weight file (`.safetensors`, `.pt`, `.pth`).
    pub weights: PathBuf,
    /// Data set name.
    pub dataset: String,
    /// Class names file, one per line.
    pub classes: PathBuf,
    /// Input `[c, h, w]`.
    pub input: [usize; 3],
    /// Normalisation mean on `[0, 1]` pixels.
    pub mean: [f32; 3],
    /// Normalisation std on `[0, 1]` pixels.
    pub std: [f32; 3],
    /// How images become the input.
    pub preprocess: Preprocess,
    /// Tuned sparsity weight of extraction.
    pub lambda: f32,
    /// Tuned coupling γ of the constrained chain (ALGORITHMS.md's 0.05 when absent).
    #[serde(default = "default_gamma")]
    pub gamma: f32,
    /// Default attack budget ε.
    pub epsilon: f32,
    /// Split used for learned features and adversarial scores.
    pub features_split: String,
    /// How many images of that split the learned features scan.
    pub features_limit: usize,
    /// Data splits.
    pub splits: Vec<SplitSpec>,
}

fn default_gamma() -> f32 {
    0.05
}

#[derive(Debug, Deserialize)]
struct File {
    model: Vec<ModelSpec>,
}

/// Parses a registry TOML text.
pub fn parse(text: &str) -> Result<Vec<ModelSpec>> {
    let f: File = toml::from_str(text).map_err(|e| Error::Registry(e.to_string()))?;
    for m in &f.model {
        crate::zoo::Arch::parse(&m.arch)?;
        if m.splits.is_empty() {
            return Err(Error::Registry(format!("model `{}` has no data splits", m.id)));
        }
    }
    Ok(f.model)
}

/// Reads a registry file, or the embedded default when `path` is `None`.
pub fn load(path: Option<&Path>) -> Result<Vec<ModelSpec>> {
    match path {
        None => parse(DEFAULT_REGISTRY),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| Error::Registry(format!("{e}: {}", p.display())))?;
            parse(&text)
        }
    }
}

/// Resolves a path of the registry against the data folder.
pub fn resolve(data_dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() { p.to_path_buf() } else { data_dir.join(p) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_registry_parses() {
        let models = load(None).unwrap();
        assert!(models.iter().any(|m| m.id == DEFAULT_MODEL));
        let eff = models.iter().find(|m| m.arch == "efficientnet_lite0").unwrap();
        assert_eq!(eff.input, [3, 224, 224]);
        assert_eq!(eff.preprocess, Preprocess::Resize);
    }

    #[test]
    fn unknown_architecture_is_named() {
        let text = DEFAULT_REGISTRY.replacen("cifar_resnet56", "resnet9000", 1);
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("resnet9000"), "{err}");
    }
}
