//! What the daemon needs from the engine, as a trait: the real
//! `aevis_models::Engine` implements it (module `engine`), and unit tests use a
//! small stand-in so the HTTP, job and cache layers are tested without burn.
//!
//! Every method blocks; the daemon calls them only from its job workers or
//! from `web::block`, never on an async worker.

use aevis_shared::graph::LayerGraph;
use aevis_shared::protocol::{
    AttackReport, AttackRequest, CandidateList, CandidatesRequest, ContributionRequest, ContributionResult, CreateSession,
    ImagePage, LayerDetail, ModelInfo, NeuronDetail, Progress, SessionResult,
};
use serde::{Serialize, de::DeserializeOwned};

use crate::error::ComputeError;

/// The engine as the daemon sees it. A progress callback returns `false` to
/// cancel; the call then returns an error.
pub trait Compute: Send + Sync + 'static {
    /// The learned features of a model (stored in the cache as they are).
    type Learned: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// Compute backend, e.g. `flex (CPU)`.
    fn backend_name(&self) -> String;
    /// Device description.
    fn device_name(&self) -> String;
    /// The models served.
    fn models(&self) -> Vec<ModelInfo>;
    /// The gated-layer graph of a model.
    fn graph(&self, model: &str) -> Result<LayerGraph, ComputeError>;
    /// Hash of architecture and weights, for cache keys.
    fn fingerprint(&self, model: &str) -> Result<String, ComputeError>;
    /// A page of a data-set listing.
    fn list_images(
        &self,
        model: &str,
        split: &str,
        offset: usize,
        limit: usize,
        class: Option<usize>,
    ) -> Result<ImagePage, ComputeError>;
    /// One data-set image as PNG.
    fn image_png(&self, model: &str, split: &str, index: usize) -> Result<Vec<u8>, ComputeError>;
    /// One attack.
    fn attack(&self, model: &str, req: &AttackRequest) -> Result<AttackReport, ComputeError>;
    /// Attacks a slice of a split.
    fn candidates(
        &self,
        model: &str,
        req: &CandidatesRequest,
        progress: &mut dyn FnMut(Progress) -> bool,
    ) -> Result<CandidateList, ComputeError>;
    /// Extracts the datapaths of a session (the result's `id` is left empty).
    fn run_session(
        &self,
        req: &CreateSession,
        progress: &mut dyn FnMut(Progress) -> bool,
    ) -> Result<SessionResult, ComputeError>;
    /// Critical sets and activations of one layer.
    fn layer_detail(&self, s: &SessionResult, layer: usize) -> Result<LayerDetail, ComputeError>;
    /// Activation maps of one channel.
    fn neuron_detail(
        &self,
        s: &SessionResult,
        layer: usize,
        channel: usize,
        learned: Option<&Self::Learned>,
    ) -> Result<NeuronDetail, ComputeError>;
    /// Contributions of an earlier layer's feature maps.
    fn contribution(
        &self,
        s: &SessionResult,
        req: &ContributionRequest,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<ContributionResult, ComputeError>;
    /// Top patches per (layer, channel) of a model.
    fn learned_features(
        &self,
        model: &str,
        progress: &mut dyn FnMut(Progress) -> bool,
    ) -> Result<Self::Learned, ComputeError>;
}
