//! Reading weight files through burn's store (safetensors and PyTorch
//! `.pt/.pth`, float16 or float32) with the original key names, and folding
//! BatchNorm into the preceding convolution.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::store::{ModuleStore, PytorchStore, SafetensorsStore};

use crate::error::{Error, Result};

/// A host tensor: shape and row-major f32 values.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Shape.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub values: Vec<f32>,
}

/// All tensors of a weight file by their original key, as f32.
#[derive(Debug, Clone)]
pub struct Weights {
    tensors: BTreeMap<String, HostTensor>,
    path: PathBuf,
    arch: String,
}

impl Weights {
    /// Reads a `.safetensors`, `.pt` or `.pth` file. A `state_dict` top-level
    /// key and a `module.` (DataParallel) prefix are handled.
    pub fn load(path: &Path, arch: &str) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::WeightFile { path: path.into(), reason: "no such file".into() });
        }
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        let raw = match ext.as_str() {
            "safetensors" => {
                let mut store = SafetensorsStore::from_file(path);
                collect(&mut store, path)?
            }
            "pt" | "pth" | "th" | "bin" => {
                let mut store = PytorchStore::from_file(path);
                let first = collect(&mut store, path)?;
                if first.keys().any(|k| k.starts_with("state_dict.")) || first.is_empty() {
                    let mut store = PytorchStore::from_file(path).with_top_level_key("state_dict");
                    collect(&mut store, path)?
                } else {
                    first
                }
            }
            other => {
                return Err(Error::WeightFile {
                    path: path.into(),
                    reason: format!("unknown extension `.{other}`; expected .safetensors, .pt or .pth"),
                });
            }
        };
        let tensors = raw
            .into_iter()
            .map(|(k, v)| (k.strip_prefix("module.").map(str::to_owned).unwrap_or(k), v))
            .collect();
        Ok(Self { tensors, path: path.into(), arch: arch.into() })
    }

    /// Builds weights from host tensors (tests, synthetic networks).
    pub fn from_map(tensors: BTreeMap<String, HostTensor>, arch: &str) -> Self {
        Self { tensors, path: PathBuf::from("<memory>"), arch: arch.into() }
    }

    /// The file the weights came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a tensor is present.
    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// A tensor that must have the given shape.
    pub fn get(&self, name: &str, expected: &[usize]) -> Result<&HostTensor> {
        let t = self.tensors.get(name).ok_or_else(|| Error::MissingTensor {
            arch: self.arch.clone(),
            tensor: name.into(),
            expected: expected.to_vec(),
            path: self.path.clone(),
        })?;
        if t.shape != expected {
            return Err(Error::ShapeMismatch {
                arch: self.arch.clone(),
                tensor: name.into(),
                expected: expected.to_vec(),
                found: t.shape.clone(),
                path: self.path.clone(),
            });
        }
        Ok(t)
    }

    /// Shape of a tensor, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|t| t.shape.as_slice())
    }

    /// A convolution weight `[out, in/groups, k, k]` followed by a BatchNorm,
    /// folded into `(weight, bias)`: `w' = w·γ/√(σ²+ε)`, `b' = β − μ·γ/√(σ²+ε)`.
    pub fn conv_bn(&self, conv: &str, bn: &str, shape: [usize; 4], eps: f32) -> Result<(HostTensor, HostTensor)> {
        let w = self.get(&format!("{conv}.weight"), &shape)?;
        let out = shape[0];
        let gamma = &self.get(&format!("{bn}.weight"), &[out])?.values;
        let beta = &self.get(&format!("{bn}.bias"), &[out])?.values;
        let mean = &self.get(&format!("{bn}.running_mean"), &[out])?.values;
        let var = &self.get(&format!("{bn}.running_var"), &[out])?.values;
        let per_out = shape[1] * shape[2] * shape[3];
        let mut values = w.values.clone();
        let mut bias = vec![0.0; out];
        for o in 0..out {
            let scale = gamma[o] / (var[o] + eps).sqrt();
            for v in &mut values[o * per_out..(o + 1) * per_out] {
                *v *= scale;
            }
            bias[o] = beta[o] - mean[o] * scale;
        }
        Ok((HostTensor { shape: shape.to_vec(), values }, HostTensor { shape: vec![out], values: bias }))
    }

    /// A convolution with its own bias (no BatchNorm).
    pub fn conv_bias(&self, conv: &str, shape: [usize; 4]) -> Result<(HostTensor, HostTensor)> {
        let w = self.get(&format!("{conv}.weight"), &shape)?.clone();
        let b = self.get(&format!("{conv}.bias"), &[shape[0]])?.clone();
        Ok((w, b))
    }

    /// A PyTorch `Linear` (`weight [out, in]`, `bias [out]`), returned as `[in, out]` and `[out]`.
    pub fn linear(&self, name: &str, inputs: usize, outputs: usize) -> Result<(HostTensor, HostTensor)> {
        let w = self.get(&format!("{name}.weight"), &[outputs, inputs])?;
        let b = self.get(&format!("{name}.bias"), &[outputs])?.clone();
        let mut t = vec![0.0; inputs * outputs];
        for o in 0..outputs {
            for i in 0..inputs {
                t[i * outputs + o] = w.values[o * inputs + i];
            }
        }
        Ok((HostTensor { shape: vec![inputs, outputs], values: t }, b))
    }
}

fn collect<S: ModuleStore>(store: &mut S, path: &Path) -> Result<BTreeMap<String, HostTensor>>
where
    S::Error: std::fmt::Display,
{
    let snapshots = store
        .get_all_snapshots()
        .map_err(|e| Error::WeightFile { path: path.into(), reason: e.to_string() })?;
    let mut out = BTreeMap::new();
    for (name, snap) in snapshots {
        if !snap.dtype.is_float() {
            continue; // num_batches_tracked and other integer bookkeeping
        }
        let data = snap
            .to_data()
            .map_err(|e| Error::WeightFile { path: path.into(), reason: format!("tensor `{name}`: {e}") })?;
        let shape = data.shape.to_vec();
        let values = data
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| Error::WeightFile { path: path.into(), reason: format!("tensor `{name}`: {e:?}") })?;
        out.insert(name.clone(), HostTensor { shape, values });
    }
    Ok(out)
}
