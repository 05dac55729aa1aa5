//! The engine: the registry's models loaded on one backend, and every
//! analysis the daemon serves, as blocking calls on plain protocol types.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use aevis_shared::datapath::{Datapath, TripletAnalysis, representative_target, similarity};
use aevis_shared::graph::LayerGraph;
use aevis_shared::protocol::*;
use aevis_shared::sets::SetRegions;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::backend::{self, DevicePref};
use crate::contribution::{ContributionSettings, contribution, top_channels};
use crate::data::{Image, Preprocess, Split, decode_image, read_classes};
use crate::error::{Error, Result};
use crate::extract::{Extracted, extract_batch};
use crate::net::Network;
use crate::registry::{self, ModelSpec};
use crate::weights::Weights;
use crate::zoo::Arch;
use crate::{attack, ops};

/// How to open an [`Engine`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where the data lives (weights, images), see [`crate::data::default_data_dir`].
    pub data_dir: PathBuf,
    /// A registry TOML; `None` = the embedded default.
    pub registry: Option<PathBuf>,
    /// Device preference.
    pub device: DevicePref,
    /// Load only these model ids (`None` = all of the registry).
    pub models: Option<Vec<String>>,
}

impl EngineConfig {
    /// The embedded default registry on the default data folder.
    pub fn default_for(data_dir: PathBuf) -> Self {
        Self { data_dir, registry: None, device: DevicePref::Auto, models: None }
    }
}

/// The top patches of every feature map of a model (learned features).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnedFeatures {
    /// Model id.
    pub model: String,
    /// Split scanned.
    pub split: String,
    /// Images scanned.
    pub images: usize,
    /// `top[layer][channel]`: `(image, activation, [x, y, w, h])`, best first.
    pub top: Vec<Vec<Vec<(usize, f32, [usize; 4])>>>,
}

/// Patches kept per feature map.
pub const TOP_PATCHES: usize = 9;

struct Loaded<B: AutodiffBackend> {
    spec: ModelSpec,
    net: Network<B>,
    classes: Vec<String>,
    splits: Vec<Split>,
    fingerprint: String,
    predictions: Vec<OnceLock<Vec<(usize, f32)>>>,
    features: OnceLock<Vec<(usize, Vec<f32>)>>,
}

struct Core<B: AutodiffBackend> {
    models: Vec<Arc<Loaded<B>>>,
}

enum Inner {
    Cpu(Core<backend::Cpu>),
    #[cfg(feature = "cuda")]
    Cuda(Core<backend::Cuda>),
}

/// All models on one backend; `Send + Sync`, every call blocking.
pub struct Engine {
    inner: Inner,
    backend: String,
    device: String,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("backend", &self.backend).field("device", &self.device).finish()
    }
}

macro_rules! dispatch {
    ($self:ident, $core:ident => $body:expr) => {
        match &$self.inner {
            Inner::Cpu($core) => $body,
            #[cfg(feature = "cuda")]
            Inner::Cuda($core) => $body,
        }
    };
}

impl Engine {
    /// Loads the registry's models (weights, class names, data splits).
    pub fn open(cfg: EngineConfig) -> Result<Engine> {
        let mut specs = registry::load(cfg.registry.as_deref())?;
        if let Some(only) = &cfg.models {
            for id in only {
                if !specs.iter().any(|s| &s.id == id) {
                    return Err(Error::NotFound(format!(
                        "model `{id}` is not in the registry (it has: {})",
                        specs.iter().map(|s| s.id.as_str()).collect::<Vec<_>>().join(", ")
                    )));
                }
            }
            specs.retain(|s| only.contains(&s.id));
        }
        let use_cuda = match cfg.device {
            DevicePref::Cpu => false,
            DevicePref::Auto => backend::cuda_built() && backend::cuda_driver_present(),
            DevicePref::Cuda => {
                if !backend::cuda_built() {
                    return Err(Error::BadInput("this build has no CUDA backend; rebuild with `--features cuda`".into()));
                }
                if !backend::cuda_driver_present() {
                    return Err(Error::BadInput("no CUDA driver (libcuda.so) found on this machine".into()));
                }
                true
            }
        };
        if cfg.device == DevicePref::Auto && backend::cuda_built() && !use_cuda {
            tracing::warn!("built with CUDA but no CUDA driver was found: using the CPU (flex) backend");
        }
        #[cfg(feature = "cuda")]
        if use_cuda {
            let device = burn::backend::cuda::CudaDevice::default();
            let core = Core::<backend::Cuda>::open(&specs, &cfg.data_dir, device)?;
            return Ok(Engine { inner: Inner::Cuda(core), backend: "cuda".into(), device: "CUDA device 0".into() });
        }
        let _ = use_cuda;
        let core = Core::<backend::Cpu>::open(&specs, &cfg.data_dir, burn::backend::flex::FlexDevice)?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Engine { inner: Inner::Cpu(core), backend: "flex (CPU)".into(), device: format!("CPU, {threads} threads") })
    }

    /// Backend name.
    pub fn backend_name(&self) -> String {
        self.backend.clone()
    }

    /// Device description.
    pub fn device_name(&self) -> String {
        self.device.clone()
    }

    /// The loaded models.
    pub fn models(&self) -> Vec<ModelInfo> {
        dispatch!(self, c => c.models.iter().map(|m| m.info()).collect())
    }

    /// A model's gated-layer graph.
    pub fn graph(&self, model: &str) -> Result<LayerGraph> {
        dispatch!(self, c => Ok(c.model(model)?.net.graph().clone()))
    }

    /// Hash of the architecture, weights and preprocessing, for cache keys.
    pub fn fingerprint(&self, model: &str) -> Result<String> {
        dispatch!(self, c => Ok(c.model(model)?.fingerprint.clone()))
    }

    /// A page of a split with labels and the model's predictions.
    pub fn list_images(&self, model: &str, split: &str, offset: usize, limit: usize, class: Option<usize>) -> Result<ImagePage> {
        dispatch!(self, c => c.model(model)?.list_images(split, offset, limit, class))
    }

    /// Image `index` of a split as PNG.
    pub fn image_png(&self, model: &str, split: &str, index: usize) -> Result<Vec<u8>> {
        dispatch!(self, c => { let m = c.model(model)?; Ok(m.split(split)?.image(index)?.to_png()) })
    }

    /// Decodes an image reference at the model's input size.
    pub fn load_image(&self, model: &str, image: &ImageRef) -> Result<(Image, Option<usize>, String)> {
        dispatch!(self, c => c.model(model)?.load_image(image))
    }

    /// Top-1 and probabilities of images.
    pub fn predict(&self, model: &str, images: &[&Image]) -> Result<Vec<Vec<f32>>> {
        dispatch!(self, c => c.model(model)?.probabilities(images))
    }

    /// Attacks one image.
    pub fn attack(&self, model: &str, req: &AttackRequest) -> Result<AttackReport> {
        dispatch!(self, c => c.model(model)?.attack_one(&req.image, &req.params).map(|(r, _)| r))
    }

    /// Attacks images of a split in batches.
    pub fn attack_batch(&self, model: &str, images: &[&Image], labels: &[usize], params: &AttackParams) -> Result<Vec<Image>> {
        dispatch!(self, c => attack::attack(&c.model(model)?.net, images, labels, params))
    }

    /// Attacks a slice of a split and lists the misclassified adversarials with scores.
    pub fn candidates(&self, model: &str, req: &CandidatesRequest, progress: &mut dyn FnMut(Progress) -> bool) -> Result<CandidateList> {
        dispatch!(self, c => c.model(model)?.candidates(req, progress))
    }

    /// Extracts a session's datapaths (adversarial → source → targets) and analyses them.
    pub fn run_session(&self, req: &CreateSession, progress: &mut dyn FnMut(Progress) -> bool) -> Result<SessionResult> {
        dispatch!(self, c => c.model(&req.model)?.run_session(req, progress))
    }

    /// Critical sets, regions, activations and gates of one layer of a session.
    pub fn layer_detail(&self, s: &SessionResult, layer: usize) -> Result<LayerDetail> {
        dispatch!(self, c => c.model(&s.request.model)?.layer_detail(s, layer))
    }

    /// Activation maps of one feature map for the three images, and its learned features.
    pub fn neuron_detail(&self, s: &SessionResult, layer: usize, channel: usize, learned: Option<&LearnedFeatures>) -> Result<NeuronDetail> {
        dispatch!(self, c => c.model(&s.request.model)?.neuron_detail(s, layer, channel, learned))
    }

    /// Contribution analysis for the three images of a session.
    pub fn contribution(&self, s: &SessionResult, req: &ContributionRequest, cancelled: &dyn Fn() -> bool) -> Result<ContributionResult> {
        dispatch!(self, c => c.model(&s.request.model)?.contribution(s, req, cancelled))
    }

    /// Extracts the datapaths of independent images (no chain; for tuning and tests).
    pub fn extract_images(&self, model: &str, images: &[&Image], params: &ExtractParams) -> Result<Vec<Extracted>> {
        dispatch!(self, c => { let m = c.model(model)?; extract_batch(&m.net, ops::batch(images, m.net.device())?, &[], params, "tune", &mut |_| true) })
    }

    /// The top patches of every feature map over the model's features split.
    pub fn learned_features(&self, model: &str, progress: &mut dyn FnMut(Progress) -> bool) -> Result<LearnedFeatures> {
        dispatch!(self, c => c.model(model)?.learned_features(progress))
    }
}

impl<B: AutodiffBackend> Core<B> {
    fn open(specs: &[ModelSpec], data_dir: &std::path::Path, device: B::Device) -> Result<Self> {
        if !data_dir.is_dir() {
            return Err(Error::Data {
                reason: "data folder not found; pass --data or set AEVIS_DATA (see README: where each public file comes from)".into(),
                path: data_dir.into(),
            });
        }
        let mut models = vec![];
        for spec in specs {
            let t = Instant::now();
            models.push(Arc::new(Loaded::open(spec.clone(), data_dir, &device)?));
            tracing::info!(model = %spec.id, ms = t.elapsed().as_millis() as u64, "model loaded");
        }
        Ok(Self { models })
    }

    fn model(&self, id: &str) -> Result<&Loaded<B>> {
        self.models.iter().find(|m| m.spec.id == id).map(|m| m.as_ref()).ok_or_else(|| {
            Error::NotFound(format!(
                "model `{id}` (loaded: {})",
                self.models.iter().map(|m| m.spec.id.as_str()).collect::<Vec<_>>().join(", ")
            ))
        })
    }
}

impl<B: AutodiffBackend> Loaded<B> {
    fn open(spec: ModelSpec, data_dir: &std::path::Path, device: &B::Device) -> Result<Self> {
        let arch = Arch::parse(&spec.arch)?;
        let wpath = registry::resolve(data_dir, &spec.weights);
        let weights = Weights::load(&wpath, &spec.arch)?;
        let classes = read_classes(&registry::resolve(data_dir, &spec.classes))?;
        let net = arch.build::<B>(&weights, &spec.id, spec.input, classes.len(), spec.mean, spec.std, device)?;
        let mut splits = vec![];
        for s in &spec.splits {
            let path = registry::resolve(data_dir, &s.path);
            splits.push(match s.kind.as_str() {
                "cifar" => Split::read_cifar(&s.name, &path, None)?,
                "folder" => Split::read_folder(
                    &s.name,
                    &path,
                    s.label_column.as_deref().unwrap_or("label"),
                    spec.preprocess,
                    spec.input[1],
                    spec.input[2],
                )?,
                other => return Err(Error::Registry(format!("split kind `{other}` (expected cifar or folder)"))),
            });
        }
        let mut h = blake3::Hasher::new();
        h.update(spec.arch.as_bytes());
        h.update(&std::fs::read(&wpath).map_err(|e| Error::WeightFile { path: wpath.clone(), reason: e.to_string() })?);
        h.update(format!("{:?}{:?}{:?}{:?}", spec.input, spec.mean, spec.std, spec.preprocess).as_bytes());
        let fingerprint = h.finalize().to_hex()[..32].to_string();
        let predictions = splits.iter().map(|_| OnceLock::new()).collect();
        Ok(Self { spec, net, classes, splits, fingerprint, predictions, features: OnceLock::new() })
    }

    fn info(&self) -> ModelInfo {
        let g = self.net.graph();
        ModelInfo {
            id: self.spec.id.clone(),
            arch: self.spec.arch.clone(),
            dataset: self.spec.dataset.clone(),
            input: self.spec.input,
            classes: self.classes.clone(),
            gated_layers: g.layers.len(),
            gates: g.total_gates(),
            lambda: self.spec.lambda,
            gamma: self.spec.gamma,
            splits: self.splits.iter().map(|s| s.name.clone()).collect(),
        }
    }

    fn split_index(&self, name: &str) -> Result<usize> {
        self.splits.iter().position(|s| s.name == name).ok_or_else(|| {
            Error::NotFound(format!(
                "split `{name}` of model `{}` (it has: {})",
                self.spec.id,
                self.splits.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
            ))
        })
    }

    fn split(&self, name: &str) -> Result<&Split> {
        Ok(&self.splits[self.split_index(name)?])
    }

    fn check_class(&self, c: usize) -> Result<()> {
        if c >= self.classes.len() {
            return Err(Error::BadInput(format!("class {c} is out of range: the model has {} classes", self.classes.len())));
        }
        Ok(())
    }

    fn probabilities(&self, images: &[&Image]) -> Result<Vec<Vec<f32>>> {
        let [_, h, w] = self.spec.input;
        let mut out = vec![];
        for chunk in images.chunks(64) {
            for img in chunk {
                img.expect_size(h, w)?;
            }
            let x = ops::batch::<B>(chunk, self.net.device())?;
            out.extend(ops::probabilities(self.net.logits(x).inner()));
        }
        Ok(out)
    }

    fn predictions(&self, split: usize) -> Result<&[(usize, f32)]> {
        if let Some(p) = self.predictions[split].get() {
            return Ok(p);
        }
        let s = &self.splits[split];
        let mut preds = Vec::with_capacity(s.len());
        for start in (0..s.len()).step_by(64) {
            let imgs: Vec<Image> = (start..(start + 64).min(s.len())).map(|i| s.image(i)).collect::<Result<_>>()?;
            let refs: Vec<&Image> = imgs.iter().collect();
            for p in self.probabilities(&refs)? {
                let c = ops::argmax(&p);
                preds.push((c, p[c]));
            }
        }
        Ok(self.predictions[split].get_or_init(|| preds))
    }

    fn list_images(&self, split: &str, offset: usize, limit: usize, class: Option<usize>) -> Result<ImagePage> {
        let si = self.split_index(split)?;
        if let Some(c) = class {
            self.check_class(c)?;
        }
        let s = &self.splits[si];
        let preds = self.predictions(si)?;
        let entries = (0..s.len())
            .filter(|&i| class.is_none_or(|c| s.labels[i] == c))
            .skip(offset)
            .take(limit.min(1000))
            .map(|i| ImageEntry { index: i, label: s.labels[i], predicted: preds[i].0, confidence: preds[i].1 })
            .collect();
        Ok(ImagePage { split: split.into(), total: s.len(), entries })
    }

    fn load_image(&self, image: &ImageRef) -> Result<(Image, Option<usize>, String)> {
        let [_, h, w] = self.spec.input;
        match image {
            ImageRef::Dataset { split, index } => {
                let s = self.split(split)?;
                Ok((s.image(*index)?, Some(s.label(*index)?), format!("{split} #{index}")))
            }
            ImageRef::Upload { bytes } => {
                let pre = match self.spec.preprocess {
                    Preprocess::Exact => Preprocess::Resize,
                    p => p,
                };
                Ok((decode_image(bytes, pre, h, w)?, None, "upload".into()))
            }
        }
    }

    fn attack_one(&self, image: &ImageRef, params: &AttackParams) -> Result<(AttackReport, Image)> {
        let (clean, _, _) = self.load_image(image)?;
        let p_clean = &self.probabilities(&[&clean])?[0];
        let c = ops::argmax(p_clean);
        let adv = attack::attack(&self.net, &[&clean], &[c], params)?.remove(0);
        let q = adv.quantised();
        let probs = self.probabilities(&[&adv, &q])?;
        let (a, aq) = (ops::argmax(&probs[0]), ops::argmax(&probs[1]));
        let (linf, l2) = attack::perturbation_size(&clean, &q);
        let success = match params.target {
            Some(t) => aq == t,
            None => aq != c,
        };
        let report = AttackReport {
            clean: (c, p_clean[c]),
            adversarial: (a, probs[0][a]),
            adversarial_quantised: (aq, probs[1][aq]),
            linf,
            l2,
            success,
            png: q.to_png(),
        };
        Ok((report, q))
    }

    /// Penultimate features of the features split, with labels (cached).
    fn feature_bank(&self) -> Result<&[(usize, Vec<f32>)]> {
        if let Some(f) = self.features.get() {
            return Ok(f);
        }
        let s = self.split(&self.spec.features_split)?;
        let n = s.len().min(self.spec.features_limit.max(1) * 4);
        let mut bank = Vec::with_capacity(n);
        for start in (0..n).step_by(64) {
            let imgs: Vec<Image> = (start..(start + 64).min(n)).map(|i| s.image(i)).collect::<Result<_>>()?;
            let refs: Vec<&Image> = imgs.iter().collect();
            for (k, f) in self.penultimate(&refs)?.into_iter().enumerate() {
                bank.push((s.labels[start + k], f));
            }
        }
        Ok(self.features.get_or_init(|| bank))
    }

    fn penultimate(&self, images: &[&Image]) -> Result<Vec<Vec<f32>>> {
        let x = ops::batch::<B>(images, self.net.device())?;
        let outs = self.net.node_outputs(x, &vec![]);
        let node = self.net.penultimate_node();
        let t = outs[node].clone();
        let [n, c, h, w] = t.dims();
        Ok(ops::rows(t.reshape([n, c * h * w]).inner()))
    }

    /// K-density of penultimate features under the class's training images (Feinman et al. 2017),
    /// with the bandwidth σ² = the class's mean squared distance to its centroid.
    fn kd_score(&self, image: &Image, class: usize) -> Result<f32> {
        let bank = self.feature_bank()?;
        let f = self.penultimate(&[image])?.remove(0);
        let members: Vec<&Vec<f32>> = bank.iter().filter(|(l, _)| *l == class).map(|(_, v)| v).collect();
        if members.is_empty() {
            return Ok(0.0);
        }
        let dim = f.len();
        let mut centroid = vec![0.0f32; dim];
        for m in &members {
            for (c, v) in centroid.iter_mut().zip(m.iter()) {
                *c += v / members.len() as f32;
            }
        }
        let d2 = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>();
        let sigma2 = (members.iter().map(|m| d2(m, &centroid)).sum::<f32>() / members.len() as f32).max(1e-6);
        Ok(members.iter().map(|m| (-d2(&f, m) / sigma2).exp()).sum::<f32>() / members.len() as f32)
    }

    fn candidates(&self, req: &CandidatesRequest, progress: &mut dyn FnMut(Progress) -> bool) -> Result<CandidateList> {
        attack::validate(&req.params, self.classes.len())?;
        let si = self.split_index(&req.split)?;
        let s = &self.splits[si];
        let preds = self.predictions(si)?.to_vec();
        let end = (req.offset + req.limit).min(s.len());
        let idx: Vec<usize> = (req.offset..end).filter(|&i| preds[i].0 == s.labels[i]).collect();
        let mut out = vec![];
        for (done, chunk) in idx.chunks(32).enumerate() {
            let imgs: Vec<Image> = chunk.iter().map(|&i| s.image(i)).collect::<Result<_>>()?;
            let refs: Vec<&Image> = imgs.iter().collect();
            let labels: Vec<usize> = chunk.iter().map(|&i| s.labels[i]).collect();
            let advs = attack::attack(&self.net, &refs, &labels, &req.params)?;
            let q: Vec<Image> = advs.iter().map(Image::quantised).collect();
            let qrefs: Vec<&Image> = q.iter().collect();
            let probs = self.probabilities(&qrefs)?;
            for (k, &i) in chunk.iter().enumerate() {
                let a = ops::argmax(&probs[k]);
                let ok = match req.params.target {
                    Some(t) => a == t,
                    None => a != s.labels[i],
                };
                if ok {
                    out.push(Candidate {
                        source: i,
                        true_class: s.labels[i],
                        clean_prob: preds[i].1,
                        adversarial_class: a,
                        adversarial_prob: probs[k][a],
                        score: self.kd_score(&q[k], a)?,
                    });
                }
            }
            let finished = ((done + 1) * 32).min(idx.len());
            let go = progress(Progress {
                stage: "attacking".into(),
                step: finished,
                total: idx.len(),
                fraction: finished as f32 / idx.len().max(1) as f32,
                ..Progress::default()
            });
            if !go {
                return Err(Error::Cancelled);
            }
        }
        Ok(CandidateList { split: req.split.clone(), params: req.params.clone(), candidates: out, attacked: idx.len() })
    }

    fn session_image(&self, img: &Image, label: Option<usize>, origin: String) -> Result<SessionImage> {
        let p = &self.probabilities(&[img])?[0];
        let c = ops::argmax(p);
        Ok(SessionImage { origin, label, predicted: c, confidence: p[c], png: img.to_png() })
    }

    fn run_session(&self, req: &CreateSession, progress: &mut dyn FnMut(Progress) -> bool) -> Result<SessionResult> {
        let t0 = Instant::now();
        if req.n_targets == 0 {
            return Err(Error::BadInput("n_targets must be at least 1".into()));
        }
        let (src, src_label, src_origin) = self.load_image(&req.source)?;
        let src = src.quantised();
        let (adv, attack_report, adv_origin) = match &req.adversarial {
            AdversarialSpec::Attack(params) => {
                let (report, q) = self.attack_one(&req.source, params)?;
                if !report.success {
                    return Err(Error::Unprocessable(format!(
                        "the attack did not fool the model after 8-bit quantisation (top-1 stays {}); try a larger ε or more steps",
                        self.classes[report.adversarial_quantised.0]
                    )));
                }
                (q, Some(report), format!("{:?} ε={:.4} of {src_origin}", params.kind, params.epsilon))
            }
            AdversarialSpec::Image(r) => {
                let (img, _, origin) = self.load_image(r)?;
                (img.quantised(), None, origin)
            }
        };
        let src_img = self.session_image(&src, src_label, src_origin)?;
        let adv_img = self.session_image(&adv, src_label, adv_origin)?;
        let target_class = req.target_class.unwrap_or(adv_img.predicted);
        self.check_class(target_class)?;
        if target_class == src_img.predicted {
            return Err(Error::Unprocessable(format!(
                "the target class ({}) is the source's own prediction: the adversarial does not change the top-1",
                self.classes[target_class]
            )));
        }
        // Normal targets: images of the target class that the model classifies correctly.
        let ti = self.split_index(&req.target_split)?;
        let ts = &self.splits[ti];
        let preds = self.predictions(ti)?;
        let skip = match &req.source {
            ImageRef::Dataset { split, index } if *split == req.target_split => Some(*index),
            _ => None,
        };
        let target_idx: Vec<usize> = (0..ts.len())
            .filter(|&i| ts.labels[i] == target_class && preds[i].0 == target_class && Some(i) != skip)
            .take(req.n_targets)
            .collect();
        if target_idx.is_empty() {
            return Err(Error::Unprocessable(format!(
                "split `{}` has no correctly classified image of class {} ({})",
                req.target_split, target_class, self.classes[target_class]
            )));
        }
        let tgt_imgs: Vec<Image> = target_idx.iter().map(|&i| ts.image(i)).collect::<Result<_>>()?;

        let device = self.net.device();
        let n_t = tgt_imgs.len();
        let run = |imgs: &[&Image], fixed: &[Datapath], stage: &str, base: f32, span: f32, p: &mut dyn FnMut(Progress) -> bool| -> Result<Vec<Extracted>> {
            let x = ops::batch::<B>(imgs, device)?;
            let mut cb = |mut pr: Progress| {
                pr.stage = stage.to_string();
                pr.fraction = base + span * pr.fraction;
                p(pr)
            };
            extract_batch(&self.net, x, fixed, &req.extract, stage, &mut cb)
        };
        let adv_x = run(&[&adv], &[], "adversarial datapath", 0.0, 1.0 / 3.0, progress)?.remove(0);
        if adv_x.top1 == src_img.predicted {
            return Err(Error::Unprocessable("the adversarial image is classified as its source: nothing to explain".into()));
        }
        let src_x = run(&[&src], &[adv_x.datapath.clone()], "source datapath", 1.0 / 3.0, 1.0 / 3.0, progress)?.remove(0);
        let trefs: Vec<&Image> = tgt_imgs.iter().collect();
        let tgt_x = run(
            &trefs,
            &[adv_x.datapath.clone(), src_x.datapath.clone()],
            &format!("{n_t} target datapaths"),
            2.0 / 3.0,
            1.0 / 3.0,
            progress,
        )?;
        let tpaths: Vec<Datapath> = tgt_x.iter().map(|e| e.datapath.clone()).collect();
        let representative = representative_target(&adv_x.datapath, &tpaths).unwrap_or(0);
        let analysis = TripletAnalysis::new(&adv_x.datapath, &src_x.datapath, &tpaths[representative], req.extract.distance, req.extract.pattern_r);
        let target_similarity = tpaths.iter().map(|t| similarity(&adv_x.datapath, t)).collect();
        let path = |e: Extracted, image: SessionImage| ExtractedPath { image, datapath: e.datapath, faithfulness: e.faithfulness };
        let mut targets = vec![];
        for (e, (&i, img)) in tgt_x.into_iter().zip(target_idx.iter().zip(&tgt_imgs)) {
            let si = self.session_image(img, Some(ts.labels[i]), format!("{} #{i}", req.target_split))?;
            targets.push(path(e, si));
        }
        Ok(SessionResult {
            id: String::new(),
            request: req.clone(),
            source: path(src_x, src_img),
            adversarial: path(adv_x, adv_img),
            targets,
            representative,
            target_similarity,
            analysis,
            attack: attack_report,
            seconds: t0.elapsed().as_secs_f32(),
        })
    }

    /// The three images of a session (source, adversarial, representative target).
    fn session_images(&self, s: &SessionResult) -> Result<Vec<Image>> {
        let [_, h, w] = self.spec.input;
        Role::ALL.iter().map(|&r| decode_image(&s.path(r).image.png, Preprocess::Exact, h, w)).collect()
    }

    fn layer_checked(&self, layer: usize) -> Result<&aevis_shared::graph::GatedLayer> {
        let g = self.net.graph();
        g.layers.get(layer).ok_or_else(|| Error::NotFound(format!("layer index {layer} (the model has {} gated layers: 0..{})", g.layers.len(), g.layers.len() - 1)))
    }

    fn layer_detail(&self, s: &SessionResult, layer: usize) -> Result<LayerDetail> {
        let l = self.layer_checked(layer)?.clone();
        let imgs = self.session_images(s)?;
        let refs: Vec<&Image> = imgs.iter().collect();
        let x = ops::batch::<B>(&refs, self.net.device())?;
        let act = self.net.forward(x, &vec![], &[layer]).captured.remove(0);
        let [n, c, h, w] = act.dims();
        let maxes = ops::rows(act.reshape([n, c, h * w]).max_dim(2).reshape([n, c]).inner());
        let tau = s.request.extract.tau;
        let crit = |r: Role| s.path(r).datapath.critical(tau)[layer].clone();
        let critical = [crit(Role::Source), crit(Role::Adversarial), crit(Role::Target)];
        let gates = Role::ALL.map(|r| s.path(r).datapath.gates[layer].clone());
        Ok(LayerDetail {
            layer,
            name: l.name,
            regions: SetRegions::new(&critical[0], &critical[1], &critical[2]),
            critical,
            max_activation: [maxes[0].clone(), maxes[1].clone(), maxes[2].clone()],
            gates,
        })
    }

    fn neuron_detail(&self, s: &SessionResult, layer: usize, channel: usize, learned: Option<&LearnedFeatures>) -> Result<NeuronDetail> {
        let l = self.layer_checked(layer)?.clone();
        if channel >= l.channels {
            return Err(Error::NotFound(format!("channel {channel} of `{}` (it has {} channels)", l.name, l.channels)));
        }
        let imgs = self.session_images(s)?;
        let refs: Vec<&Image> = imgs.iter().collect();
        let x = ops::batch::<B>(&refs, self.net.device())?;
        let act = self.net.forward(x, &vec![], &[layer]).captured.remove(0);
        let maps = ops::rows(act.narrow(1, channel, 1).reshape([3, l.height * l.width]).inner());
        let lo = maps.iter().flatten().copied().fold(f32::INFINITY, f32::min);
        let hi = maps.iter().flatten().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut patches = vec![];
        if let Some(lf) = learned.filter(|lf| lf.model == self.spec.id)
            && let Some(top) = lf.top.get(layer).and_then(|t| t.get(channel))
        {
            let split = self.split(&lf.split)?;
            for &(image, activation, rect) in top {
                let img = split.image(image)?;
                patches.push(Patch { image, activation, rect, png: crop(&img, rect).to_png() });
            }
        }
        Ok(NeuronDetail {
            layer,
            channel,
            height: l.height,
            width: l.width,
            maps: [maps[0].clone(), maps[1].clone(), maps[2].clone()],
            scale: (lo, hi),
            learned: patches,
        })
    }

    fn contribution(&self, s: &SessionResult, req: &ContributionRequest, cancelled: &dyn Fn() -> bool) -> Result<ContributionResult> {
        let t0 = Instant::now();
        let imgs = self.session_images(s)?;
        let refs: Vec<&Image> = imgs.iter().collect();
        let x = ops::batch::<B>(&refs, self.net.device())?;
        let settings = ContributionSettings {
            target: req.target.clone(),
            earlier: req.earlier,
            fast: req.fast,
            lambda: req.lambda,
            gamma: req.gamma,
            steps: req.steps,
            lr: 0.1,
        };
        let c = contribution(&self.net, x, &settings, cancelled)?;
        let top = [0, 1, 2].map(|i| top_channels(&c.z[i], &c.max_activation[i], &c.max_activation[0], 10));
        Ok(ContributionResult {
            request: req.clone(),
            contributions: [c.z[0].clone(), c.z[1].clone(), c.z[2].clone()],
            top,
            receptive_field: c.receptive_field,
            millis: t0.elapsed().as_secs_f32() * 1000.0,
        })
    }

    fn learned_features(&self, progress: &mut dyn FnMut(Progress) -> bool) -> Result<LearnedFeatures> {
        let s = self.split(&self.spec.features_split)?;
        let n = s.len().min(self.spec.features_limit);
        let g = self.net.graph().clone();
        let all: Vec<usize> = (0..g.layers.len()).collect();
        let mut top: Vec<Vec<Vec<(usize, f32, [usize; 4])>>> = g.layers.iter().map(|l| vec![vec![]; l.channels]).collect();
        let batch = if self.spec.input[1] > 64 { 8 } else { 50 };
        for start in (0..n).step_by(batch) {
            let idx: Vec<usize> = (start..(start + batch).min(n)).collect();
            let imgs: Vec<Image> = idx.iter().map(|&i| s.image(i)).collect::<Result<_>>()?;
            let refs: Vec<&Image> = imgs.iter().collect();
            let x = ops::batch::<B>(&refs, self.net.device())?;
            let caps = self.net.forward(x, &vec![], &all).captured;
            for (l, act) in caps.into_iter().enumerate() {
                let [b, c, h, w] = act.dims();
                let vals = ops::host(act.inner());
                for k in 0..b {
                    for ch in 0..c {
                        let map = &vals[(k * c + ch) * h * w..(k * c + ch + 1) * h * w];
                        let arg = ops::argmax(map);
                        let v = map[arg];
                        let list = &mut top[l][ch];
                        if list.len() < TOP_PATCHES || v > list[list.len() - 1].1 {
                            let (y, xx) = (arg / w, arg % w);
                            let rect = self.net.input_box(l, (y, y + 1, xx, xx + 1));
                            list.push((idx[k], v, rect));
                            list.sort_by(|a, b| b.1.total_cmp(&a.1));
                            list.truncate(TOP_PATCHES);
                        }
                    }
                }
            }
            let done = (start + batch).min(n);
            if !progress(Progress { stage: "learned features".into(), step: done, total: n, fraction: done as f32 / n as f32, ..Progress::default() }) {
                return Err(Error::Cancelled);
            }
        }
        Ok(LearnedFeatures { model: self.spec.id.clone(), split: s.name.clone(), images: n, top })
    }
}

/// Crops `[x, y, w, h]` of an image.
fn crop(img: &Image, [x0, y0, w, h]: [usize; 4]) -> Image {
    let (ih, iw) = (img.height, img.width);
    let (w, h) = (w.min(iw - x0.min(iw)), h.min(ih - y0.min(ih)));
    let mut pixels = Vec::with_capacity(3 * w * h);
    for c in 0..3 {
        for y in y0..y0 + h {
            pixels.extend_from_slice(&img.pixels[c * ih * iw + y * iw + x0..c * ih * iw + y * iw + x0 + w]);
        }
    }
    Image { height: h, width: w, pixels }
}
