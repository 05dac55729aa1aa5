//! The daemon's own cache records and cache keys.

use aevis_cache::{Kind, Record, key_of};
use aevis_shared::codec;
use aevis_shared::protocol::{
    AttackRequest, CandidatesRequest, ContributionRequest, CreateSession, ImageRef, SessionSummary,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::error::ApiError;

/// A session: its request, and its summary once computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Session id.
    pub id: String,
    /// The request.
    pub request: CreateSession,
    /// When it was first asked for (ms since the epoch).
    pub created_ms: u64,
    /// Set when the result is stored.
    pub summary: Option<SessionSummary>,
}

impl Record for SessionRecord {
    const KIND: Kind = Kind::Session;
    const VERSION: u32 = 1;
}

impl SessionRecord {
    /// The summary line (a placeholder with `ready: false` until computed).
    pub fn summary(&self) -> SessionSummary {
        self.summary.clone().unwrap_or_else(|| SessionSummary {
            id: self.id.clone(),
            model: self.request.model.clone(),
            source: describe(&self.request.source),
            classes: (0, 0),
            ready: false,
        })
    }
}

/// Words for an image reference (`test #12`, `upload`).
pub fn describe(r: &ImageRef) -> String {
    match r {
        ImageRef::Dataset { split, index } => format!("{split} #{index}"),
        ImageRef::Upload { bytes } => format!("upload ({} bytes)", bytes.len()),
    }
}

/// A model's learned features, as the engine made them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound = "L: Serialize + DeserializeOwned")]
pub struct LearnedRecord<L>(pub L);

impl<L: Serialize + DeserializeOwned> Record for LearnedRecord<L> {
    const KIND: Kind = Kind::LearnedFeatures;
    const VERSION: u32 = 1;
}

fn bytes_of<T: Serialize>(v: &T) -> Result<Vec<u8>, ApiError> {
    codec::encode(v).map_err(|e| ApiError::internal(e.to_string()))
}

/// Session id: the content hash of the model fingerprint and the request.
pub fn session_id(fingerprint: &str, req: &CreateSession) -> Result<String, ApiError> {
    Ok(key_of(&[b"session", fingerprint.as_bytes(), &bytes_of(req)?]))
}

/// Key of an attack answer.
pub fn attack_key(fingerprint: &str, req: &AttackRequest) -> Result<String, ApiError> {
    Ok(key_of(&[b"attack", fingerprint.as_bytes(), &bytes_of(req)?]))
}

/// Key of a candidate list.
pub fn candidates_key(fingerprint: &str, req: &CandidatesRequest) -> Result<String, ApiError> {
    Ok(key_of(&[b"candidates", fingerprint.as_bytes(), &bytes_of(req)?]))
}

/// Key of the latest candidate list of a model.
pub fn latest_candidates_key(fingerprint: &str) -> String {
    key_of(&[b"candidates-latest", fingerprint.as_bytes()])
}

/// Key of a model's learned features.
pub fn learned_key(fingerprint: &str) -> String {
    key_of(&[b"learned-features", fingerprint.as_bytes()])
}

/// Key of a contribution answer; the client's `request_id` is not part of it.
pub fn contribution_key(session: &str, req: &ContributionRequest) -> Result<String, ApiError> {
    let mut r = req.clone();
    r.request_id = 0;
    Ok(key_of(&[b"contribution", session.as_bytes(), &bytes_of(&r)?]))
}
