//! The daemon's HTTP API: request and response bodies, versioned.
//!
//! Every body is bincode (see [`crate::codec`]) by default, or JSON when the
//! request says `Accept: application/json` (responses) or
//! `Content-Type: application/json` (requests). Every request carries the
//! header [`VERSION_HEADER`]; a daemon answers a different major version with
//! `409` and an [`ErrorBody`] of kind [`ErrorKind::ProtocolVersion`].
//!
//! Endpoints (all under `/v1`):
//!
//! | method | path | body → answer |
//! |---|---|---|
//! | GET | `/info` | → [`DaemonInfo`] |
//! | GET | `/models/{model}/graph` | → [`crate::graph::LayerGraph`] |
//! | GET | `/models/{model}/images?split=&offset=&limit=&class=` | → [`ImagePage`] |
//! | GET | `/models/{model}/images/{split}/{index}/png` | → PNG bytes |
//! | POST | `/models/{model}/attack` | [`AttackRequest`] → [`AttackReport`] |
//! | POST | `/models/{model}/candidates` | [`CandidatesRequest`] → [`JobCreated`] |
//! | GET | `/models/{model}/candidates` | → [`CandidateList`] (latest finished) |
//! | POST | `/sessions` | [`CreateSession`] → [`SessionCreated`] |
//! | GET | `/sessions` | → `Vec<`[`SessionSummary`]`>` |
//! | GET | `/sessions/{id}` | → [`SessionResult`] |
//! | GET | `/sessions/{id}/layers/{layer}` | → [`LayerDetail`] |
//! | GET | `/sessions/{id}/layers/{layer}/channels/{channel}` | → [`NeuronDetail`] |
//! | POST | `/sessions/{id}/contribution` | [`ContributionRequest`] → [`ContributionResult`] |
//! | GET | `/jobs/{id}` | → [`JobStatus`] |
//! | GET | `/jobs/{id}/events` | → server-sent events, each a JSON [`JobStatus`] |
//! | POST | `/jobs/{id}/cancel` | → [`JobStatus`] |

use serde::{Deserialize, Serialize};

use crate::datapath::{Datapath, DistanceForm, TripletAnalysis};
use crate::sets::SetRegions;

/// Protocol version; the major part must match between client and daemon.
pub const PROTOCOL_VERSION: u32 = 2;

/// Header that carries [`PROTOCOL_VERSION`].
pub const VERSION_HEADER: &str = "x-aevis-protocol";

/// What went wrong, one HTTP status each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// 400: the body could not be decoded or a field is out of range.
    BadRequest,
    /// 401: a token is required and was missing or wrong.
    Unauthorized,
    /// 404: no such model, layer, channel, session, job or image.
    NotFound,
    /// 409: the client speaks another protocol version.
    ProtocolVersion,
    /// 413: the body is larger than the daemon accepts.
    TooLarge,
    /// 415: an upload is not a decodable image.
    UnsupportedMedia,
    /// 422: the request is well-formed but cannot be done (e.g. attack failed).
    Unprocessable,
    /// 503: the job queue is full; try again later.
    Busy,
    /// 500: a fault in the daemon.
    Internal,
}

impl ErrorKind {
    /// The HTTP status code of this kind.
    pub fn status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::NotFound => 404,
            Self::ProtocolVersion => 409,
            Self::TooLarge => 413,
            Self::UnsupportedMedia => 415,
            Self::Unprocessable => 422,
            Self::Busy => 503,
            Self::Internal => 500,
        }
    }
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct ErrorBody {
    /// The kind, which fixes the status.
    pub kind: ErrorKind,
    /// What went wrong, in words a researcher understands, with what was expected.
    pub message: String,
}

/// Answer of `GET /v1/info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonInfo {
    /// Crate version of the daemon.
    pub version: String,
    /// [`PROTOCOL_VERSION`] of the daemon.
    pub protocol: u32,
    /// Compute backend, e.g. `flex (CPU)` or `cuda`.
    pub backend: String,
    /// Device description.
    pub device: String,
    /// Models the daemon serves.
    pub models: Vec<ModelInfo>,
}

/// One model of the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Registry id, e.g. `cifar10-resnet56`.
    pub id: String,
    /// Architecture, e.g. `cifar_resnet56`.
    pub arch: String,
    /// Data set name.
    pub dataset: String,
    /// Input shape `[c, h, w]`.
    pub input: [usize; 3],
    /// Class names in label order.
    pub classes: Vec<String>,
    /// Number of gated layers.
    pub gated_layers: usize,
    /// Total number of gates.
    pub gates: usize,
    /// The tuned λ shipped with the model.
    pub lambda: f32,
    /// The tuned coupling γ of the constrained chain shipped with the model.
    pub gamma: f32,
    /// Data splits available (e.g. `test`, `train`).
    pub splits: Vec<String>,
}

/// An image the daemon knows or is given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ImageRef {
    /// Image `index` of a split of the model's data set.
    Dataset {
        /// Split name.
        split: String,
        /// Index within the split.
        index: usize,
    },
    /// An encoded image (PNG or JPEG), preprocessed as the model says.
    Upload {
        /// File bytes.
        bytes: Vec<u8>,
    },
}

/// One image of a data set listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageEntry {
    /// Index within the split.
    pub index: usize,
    /// True label.
    pub label: usize,
    /// The model's top-1.
    pub predicted: usize,
    /// Softmax probability of the top-1.
    pub confidence: f32,
}

/// A page of a data set listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImagePage {
    /// Split name.
    pub split: String,
    /// Number of images in the split (before the class filter).
    pub total: usize,
    /// The entries of this page.
    pub entries: Vec<ImageEntry>,
}

/// Which attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttackKind {
    /// One signed-gradient step of size ε.
    Fgsm,
    /// T steps of size α = ε/T, projected.
    IFgsm,
    /// I-FGSM from a uniform random start in the ε-ball (seeded).
    Pgd,
    /// Momentum iterative FGSM (Dong et al. 2018), the paper's attack.
    MiFgsm,
}

/// Attack settings, in pixel units on `[0, 1]` images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttackParams {
    /// Which attack.
    pub kind: AttackKind,
    /// L∞ budget ε in `[0, 1]` (8/255 = 8 grey levels).
    pub epsilon: f32,
    /// Number of iterations T (ignored by FGSM).
    pub steps: usize,
    /// Momentum μ (MI-FGSM).
    pub momentum: f32,
    /// `Some(class)` for a targeted attack.
    pub target: Option<usize>,
    /// Seed of PGD's random start.
    pub seed: u64,
}

impl AttackParams {
    /// The paper's default: MI-FGSM, T = 10, μ = 1, non-targeted, ε given.
    pub fn mi_fgsm(epsilon: f32) -> Self {
        Self { kind: AttackKind::MiFgsm, epsilon, steps: 10, momentum: 1.0, target: None, seed: 0 }
    }
}

/// `POST /v1/models/{model}/attack`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttackRequest {
    /// The clean image.
    pub image: ImageRef,
    /// Settings.
    pub params: AttackParams,
}

/// The adversary's own numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttackReport {
    /// Clean top-1 and its probability.
    pub clean: (usize, f32),
    /// Adversarial top-1 and its probability (float image).
    pub adversarial: (usize, f32),
    /// Adversarial top-1 after quantising to 8 bits.
    pub adversarial_quantised: (usize, f32),
    /// L∞ size of the perturbation (pixel units).
    pub linf: f32,
    /// L2 size of the perturbation (pixel units).
    pub l2: f32,
    /// The attack succeeded (top-1 changed, or reached the target) after quantisation.
    pub success: bool,
    /// The adversarial image as an 8-bit PNG.
    pub png: Vec<u8>,
}

/// `POST /v1/models/{model}/candidates`: attack a slice of a split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidatesRequest {
    /// Split to attack.
    pub split: String,
    /// First index.
    pub offset: usize,
    /// How many images.
    pub limit: usize,
    /// Attack settings.
    pub params: AttackParams,
}

/// One adversarial example a user can pick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Index of the source image in its split.
    pub source: usize,
    /// True class.
    pub true_class: usize,
    /// Clean top-1 probability.
    pub clean_prob: f32,
    /// Adversarial class (after quantisation).
    pub adversarial_class: usize,
    /// Its probability.
    pub adversarial_prob: f32,
    /// Adversarial score (K-density under the predicted class's training images).
    pub score: f32,
}

/// The candidate list of a split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateList {
    /// Split that was attacked.
    pub split: String,
    /// Settings used.
    pub params: AttackParams,
    /// Misclassified adversarial examples.
    pub candidates: Vec<Candidate>,
    /// Images attacked (correctly classified ones only).
    pub attacked: usize,
}

/// Which optimiser and loss extract a datapath.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExtractMethod {
    /// Constrained chain (Eq. 4–5) with Adam; γ = 0 gives the DGR baseline with this loss.
    Constrained,
    /// DGR's own loss: cross-entropy to the ungated softmax + λ·L1, SGD with momentum.
    DgrLoss,
    /// The quadratic approximation: one forward and one backward per image.
    Fast,
}

/// Extraction settings (ALGORITHMS.md defaults via [`ExtractParams::default_for`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtractParams {
    /// Method.
    pub method: ExtractMethod,
    /// Sparsity weight λ.
    pub lambda: f32,
    /// Coupling γ to the datapaths already extracted (0 = independent, DGR).
    pub gamma: f32,
    /// Optimiser steps.
    pub steps: usize,
    /// Learning rate.
    pub lr: f32,
    /// Critical-set threshold τ.
    pub tau: f32,
    /// Stop early when the relative loss change stays below this for `patience` steps (0 = never).
    pub tolerance: f32,
    /// Steps the loss must settle for before stopping early.
    pub patience: usize,
    /// Start the full optimisation from the fast mode's answer.
    pub warm_start: bool,
    /// Distance form of the per-layer distances.
    pub distance: DistanceForm,
    /// `r` of the pattern test.
    pub pattern_r: usize,
}

impl ModelInfo {
    /// The attack budget the commands use when none is given: 16/255 for
    /// ImageNet-size inputs (the paper's NIPS 2017 setting), 8/255 for CIFAR-size ones.
    pub fn default_epsilon(&self) -> f32 {
        if self.input[1] > 64 { 16.0 / 255.0 } else { 8.0 / 255.0 }
    }
}

impl ExtractParams {
    /// The defaults with the λ and γ tuned for a model (its registry entry).
    pub fn for_model(model: &ModelInfo) -> Self {
        Self { gamma: model.gamma, ..Self::default_for(model.lambda) }
    }

    /// ALGORITHMS.md defaults (γ = 0.05) with the model's tuned λ.
    pub fn default_for(lambda: f32) -> Self {
        Self {
            method: ExtractMethod::Constrained,
            lambda,
            gamma: 0.05,
            steps: 100,
            lr: 0.1,
            tau: 0.5,
            tolerance: 0.0,
            patience: 10,
            warm_start: false,
            distance: DistanceForm::L2,
            pattern_r: 8,
        }
    }
}

/// How the adversarial of a session is given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AdversarialSpec {
    /// Made by the daemon from the source with these settings.
    Attack(AttackParams),
    /// Brought by the user (any attack, any tool).
    Image(ImageRef),
}

/// `POST /v1/sessions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateSession {
    /// Model id.
    pub model: String,
    /// The normal source image.
    pub source: ImageRef,
    /// Its adversarial version.
    pub adversarial: AdversarialSpec,
    /// Class of the normal targets; `None` = the adversarial's top-1.
    pub target_class: Option<usize>,
    /// How many normal target images to extract (the representative is the most similar).
    pub n_targets: usize,
    /// Split the targets are drawn from (images the model classifies as the target class).
    pub target_split: String,
    /// Extraction settings.
    pub extract: ExtractParams,
}

/// Answer of `POST /v1/sessions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionCreated {
    /// Session id (a content hash: identical requests share it).
    pub session: String,
    /// The job that computes it; `None` when the result is already cached.
    pub job: Option<String>,
    /// The result was found in the cache.
    pub cached: bool,
}

/// A job's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    /// Waiting in the queue.
    Queued,
    /// Running.
    Running,
    /// Finished; the result is stored.
    Done,
    /// Stopped by a cancel request.
    Cancelled,
    /// Failed; see `error`.
    Failed,
}

impl JobState {
    /// The job will not change any more.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Done | Self::Cancelled | Self::Failed)
    }
}

/// Progress of a long computation.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Progress {
    /// What is being done, e.g. `adversarial datapath` or `target 3/5`.
    pub stage: String,
    /// Step within the stage.
    pub step: usize,
    /// Steps of the stage.
    pub total: usize,
    /// Current loss (extraction).
    pub loss: f32,
    /// Fraction of gates at or above τ.
    pub sparsity: f32,
    /// The current iterate keeps the top-1.
    pub kept_top1: bool,
    /// Overall fraction done, `0..=1`.
    pub fraction: f32,
}

/// `GET /v1/jobs/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    /// Job id.
    pub id: String,
    /// What the job computes (`session`, `candidates`).
    pub kind: String,
    /// The session it computes, if any.
    pub session: Option<String>,
    /// State.
    pub state: JobState,
    /// Progress.
    pub progress: Progress,
    /// Why it failed.
    pub error: Option<String>,
}

/// `POST /v1/jobs` answers for non-session jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobCreated {
    /// Job id.
    pub job: String,
}

/// Role of an image in a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// The normal source image.
    Source,
    /// Its adversarial version.
    Adversarial,
    /// The representative normal target image.
    Target,
}

impl Role {
    /// The three roles in the order the views use.
    pub const ALL: [Role; 3] = [Role::Source, Role::Adversarial, Role::Target];

    /// Position in [`Role::ALL`].
    pub fn index(self) -> usize {
        match self {
            Role::Source => 0,
            Role::Adversarial => 1,
            Role::Target => 2,
        }
    }
}

/// An image of a session with its prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionImage {
    /// Where it came from (`test #12`, `upload`, `MI-FGSM of test #12`).
    pub origin: String,
    /// True label, when known.
    pub label: Option<usize>,
    /// Top-1 with all gates open.
    pub predicted: usize,
    /// Its probability.
    pub confidence: f32,
    /// The image as an 8-bit PNG (model input size).
    pub png: Vec<u8>,
}

/// Faithfulness of one datapath.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Faithfulness {
    /// The network with the binarised gates keeps the top-1.
    pub binarised_keeps_top1: bool,
    /// The continuous (best feasible) gates keep the top-1.
    pub continuous_keeps_top1: bool,
    /// Fraction of channels kept per layer.
    pub kept_per_layer: Vec<f32>,
    /// Fraction of channels kept overall.
    pub kept_overall: f32,
    /// Final loss.
    pub loss: f32,
    /// Optimiser steps taken.
    pub steps: usize,
}

/// One extracted datapath with its image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtractedPath {
    /// The image.
    pub image: SessionImage,
    /// Its datapath.
    pub datapath: Datapath,
    /// How faithful it is.
    pub faithfulness: Faithfulness,
}

/// Summary line of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSummary {
    /// Session id.
    pub id: String,
    /// Model id.
    pub model: String,
    /// Source origin.
    pub source: String,
    /// Source top-1 → adversarial top-1.
    pub classes: (usize, usize),
    /// The result is computed.
    pub ready: bool,
}

/// `GET /v1/sessions/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionResult {
    /// Session id.
    pub id: String,
    /// The request that made it.
    pub request: CreateSession,
    /// Source datapath.
    pub source: ExtractedPath,
    /// Adversarial datapath.
    pub adversarial: ExtractedPath,
    /// All target datapaths, in the order drawn.
    pub targets: Vec<ExtractedPath>,
    /// Index into `targets` of the representative target.
    pub representative: usize,
    /// Similarity of each target to the adversarial.
    pub target_similarity: Vec<f32>,
    /// Distances, diff, pattern, diverging and merging points (with the representative).
    pub analysis: TripletAnalysis,
    /// The attack's numbers, when the daemon made the adversarial.
    pub attack: Option<AttackReport>,
    /// Seconds the extraction took.
    pub seconds: f32,
}

impl SessionResult {
    /// The datapath of a role (the representative target for [`Role::Target`]).
    pub fn path(&self, role: Role) -> &ExtractedPath {
        match role {
            Role::Source => &self.source,
            Role::Adversarial => &self.adversarial,
            Role::Target => &self.targets[self.representative],
        }
    }
}

/// `GET /v1/sessions/{id}/layers/{layer}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerDetail {
    /// Layer index.
    pub layer: usize,
    /// Layer name.
    pub name: String,
    /// Critical sets in [`Role::ALL`] order (A = source, B = adversarial, C = target).
    pub critical: [Vec<usize>; 3],
    /// The seven regions of those sets.
    pub regions: SetRegions,
    /// Per role, per channel: the maximum activation of the feature map.
    pub max_activation: [Vec<f32>; 3],
    /// Per role, per channel: the gate value.
    pub gates: [Vec<f32>; 3],
}

/// A patch of a data-set image that activates a feature map strongly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Patch {
    /// Index of the image in the model's learned-features split.
    pub image: usize,
    /// The activation at the arg-max.
    pub activation: f32,
    /// Crop box in input pixels `[x, y, w, h]`.
    pub rect: [usize; 4],
    /// The patch as an 8-bit PNG.
    pub png: Vec<u8>,
}

/// `GET /v1/sessions/{id}/layers/{layer}/channels/{channel}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeuronDetail {
    /// Layer index.
    pub layer: usize,
    /// Channel.
    pub channel: usize,
    /// Feature-map height.
    pub height: usize,
    /// Feature-map width.
    pub width: usize,
    /// Activation maps in [`Role::ALL`] order, row-major `height × width`.
    pub maps: [Vec<f32>; 3],
    /// Shared colour scale `(min, max)` over the three maps.
    pub scale: (f32, f32),
    /// Learned features (top patches), when computed.
    pub learned: Vec<Patch>,
}

/// A rectangle of neurons `[y0, y1) × [x0, x1)` in feature-map coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    /// First row.
    pub y0: usize,
    /// One past the last row.
    pub y1: usize,
    /// First column.
    pub x0: usize,
    /// One past the last column.
    pub x1: usize,
}

/// What the contribution is to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ContributionTarget {
    /// A feature map (or a region of it) of a gated layer (Eq. 7–8).
    FeatureMap {
        /// Layer index.
        layer: usize,
        /// Channel.
        channel: usize,
        /// Region; `None` = the whole feature map.
        region: Option<Region>,
    },
    /// The logit of each image's predicted class (the merging analysis).
    Prediction,
}

/// `POST /v1/sessions/{id}/contribution`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContributionRequest {
    /// What to explain.
    pub target: ContributionTarget,
    /// Index of the earlier gated layer whose feature maps get gates.
    pub earlier: usize,
    /// Fast (quadratic) or SGD.
    pub fast: bool,
    /// λ of Eq. 7–8.
    pub lambda: f32,
    /// γ of Eq. 7–8.
    pub gamma: f32,
    /// SGD steps.
    pub steps: usize,
    /// A client counter: a newer request from the same client supersedes this one.
    pub request_id: u64,
}

/// Contributions of the earlier layer's feature maps, per image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContributionResult {
    /// The request.
    pub request: ContributionRequest,
    /// In [`Role::ALL`] order: contribution `z_k` of each channel of the earlier layer.
    pub contributions: [Vec<f32>; 3],
    /// In [`Role::ALL`] order: top channels by contribution `(channel, z, activation difference vs source)`.
    pub top: [Vec<(usize, f32, f32)>; 3],
    /// The receptive-field box of the region in the earlier layer `(y0, y1, x0, x1)`, if a region was given.
    pub receptive_field: Option<Region>,
    /// Milliseconds of compute.
    pub millis: f32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_epsilon_follows_the_input_size() {
        let info = |side: usize| ModelInfo {
            id: "m".into(),
            arch: "a".into(),
            dataset: "d".into(),
            input: [3, side, side],
            classes: vec![],
            gated_layers: 0,
            gates: 0,
            lambda: 0.01,
            gamma: 0.001,
            splits: vec![],
        };
        assert_eq!(info(32).default_epsilon(), 8.0 / 255.0);
        assert_eq!(info(224).default_epsilon(), 16.0 / 255.0);
    }
}
