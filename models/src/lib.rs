//! `aevis-models`: real pretrained networks with a gate on every channel of
//! every gated layer, and the analyses that run them — attacks, datapath
//! extraction, contribution analysis, learned features.

pub mod attack;
pub mod contribution;
pub mod data;
pub mod error;
pub mod extract;
pub(crate) mod host;
pub mod net;
pub mod ops;
pub mod registry;
pub mod weights;
pub mod zoo;

pub use error::{Error, Result};

pub mod backend;
pub mod engine;

pub use backend::DevicePref;
pub use engine::{Engine, EngineConfig, LearnedFeatures};
