//! The real engine behind [`Compute`], and [`serve`].

use std::time::Duration;

use actix_web::web;
use aevis_cache::Cache;
use aevis_models::{DevicePref, Engine, EngineConfig, LearnedFeatures};
use aevis_shared::graph::LayerGraph;
use aevis_shared::protocol::{
    AttackReport, AttackRequest, CandidateList, CandidatesRequest, ContributionRequest, ContributionResult, CreateSession,
    ImagePage, LayerDetail, ModelInfo, NeuronDetail, Progress, SessionResult,
};
use anyhow::Context;

use crate::compute::Compute;
use crate::config::{DaemonConfig, Device};
use crate::error::ComputeError;
use crate::state::AppState;

fn ce(e: aevis_models::Error) -> ComputeError {
    ComputeError::new(e.kind(), e.to_string())
}

impl Compute for Engine {
    type Learned = LearnedFeatures;

    fn backend_name(&self) -> String {
        Engine::backend_name(self)
    }
    fn device_name(&self) -> String {
        Engine::device_name(self)
    }
    fn models(&self) -> Vec<ModelInfo> {
        Engine::models(self)
    }
    fn graph(&self, model: &str) -> Result<LayerGraph, ComputeError> {
        Engine::graph(self, model).map_err(ce)
    }
    fn fingerprint(&self, model: &str) -> Result<String, ComputeError> {
        Engine::fingerprint(self, model).map_err(ce)
    }
    fn list_images(
        &self,
        model: &str,
        split: &str,
        offset: usize,
        limit: usize,
        class: Option<usize>,
    ) -> Result<ImagePage, ComputeError> {
        Engine::list_images(self, model, split, offset, limit, class).map_err(ce)
    }
    fn image_png(&self, model: &str, split: &str, index: usize) -> Result<Vec<u8>, ComputeError> {
        Engine::image_png(self, model, split, index).map_err(ce)
    }
    fn attack(&self, model: &str, req: &AttackRequest) -> Result<AttackReport, ComputeError> {
        Engine::attack(self, model, req).map_err(ce)
    }
    fn candidates(
        &self,
        model: &str,
        req: &CandidatesRequest,
        progress: &mut dyn FnMut(Progress) -> bool,
    ) -> Result<CandidateList, ComputeError> {
        Engine::candidates(self, model, req, progress).map_err(ce)
    }
    fn run_session(
        &self,
        req: &CreateSession,
        progress: &mut dyn FnMut(Progress) -> bool,
    ) -> Result<SessionResult, ComputeError> {
        Engine::run_session(self, req, progress).map_err(ce)
    }
    fn layer_detail(&self, s: &SessionResult, layer: usize) -> Result<LayerDetail, ComputeError> {
        Engine::layer_detail(self, s, layer).map_err(ce)
    }
    fn neuron_detail(
        &self,
        s: &SessionResult,
        layer: usize,
        channel: usize,
        learned: Option<&LearnedFeatures>,
    ) -> Result<NeuronDetail, ComputeError> {
        Engine::neuron_detail(self, s, layer, channel, learned).map_err(ce)
    }
    fn contribution(
        &self,
        s: &SessionResult,
        req: &ContributionRequest,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<ContributionResult, ComputeError> {
        Engine::contribution(self, s, req, cancelled).map_err(ce)
    }
    fn learned_features(
        &self,
        model: &str,
        progress: &mut dyn FnMut(Progress) -> bool,
    ) -> Result<LearnedFeatures, ComputeError> {
        Engine::learned_features(self, model, progress).map_err(ce)
    }
}

/// Opens the engine the configuration asks for. Blocks (loads weights).
pub fn open_engine(cfg: &DaemonConfig) -> anyhow::Result<Engine> {
    let device = match cfg.device {
        Device::Auto => DevicePref::Auto,
        Device::Cpu => DevicePref::Cpu,
        Device::Cuda => DevicePref::Cuda,
    };
    Engine::open(EngineConfig {
        data_dir: cfg.data_dir.clone(),
        registry: cfg.registry.clone(),
        device,
        models: cfg.models.clone(),
    })
    .with_context(|| format!("cannot open the engine on {}", cfg.data_dir.display()))
}

/// Opens the cache (first, so a folder in use fails fast) and the engine,
/// serves until SIGINT/SIGTERM, then stops the job workers: a running job is
/// left queued for the next start.
pub async fn serve(cfg: DaemonConfig) -> anyhow::Result<()> {
    cfg.validate()?;
    let cache = Cache::open(&cfg.cache_dir)?;
    let c = cfg.clone();
    let state = web::block(move || -> anyhow::Result<AppState<Engine>> {
        let engine = open_engine(&c)?;
        AppState::new(engine, cache, &c)
    })
    .await
    .context("the engine panicked while opening")??;
    let state = web::Data::new(state);
    let (server, addr) = crate::bind(&cfg, state.clone())?;
    tracing::info!(%addr, cache = %cfg.cache_dir.display(), "listening");
    // Tests and scripts that bind port 0 read the address from this line.
    println!("aevis-daemon listening on http://{addr}");
    server.await.context("the HTTP server failed")?;
    tracing::info!("HTTP server stopped; stopping the job workers");
    let s = state.clone();
    web::block(move || s.shutdown(Duration::from_secs(30))).await.context("shutdown panicked")?;
    Ok(())
}
