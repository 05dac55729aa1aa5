//! Errors of the engine, each with the facts a user needs to fix the input.

use std::path::PathBuf;

use aevis_shared::protocol::ErrorKind;

/// Everything that can go wrong in `aevis_models`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A weight file could not be read at all.
    #[error("cannot read weights ({reason}): {}", path.display())]
    WeightFile {
        /// The file.
        path: PathBuf,
        /// What the reader said.
        reason: String,
    },
    /// A tensor the architecture needs is absent from the weight file.
    #[error("weight file lacks tensor `{tensor}` (expected shape {expected:?}) for {arch}: {}", path.display())]
    MissingTensor {
        /// Architecture being loaded.
        arch: String,
        /// Tensor name.
        tensor: String,
        /// Expected shape.
        expected: Vec<usize>,
        /// The file.
        path: PathBuf,
    },
    /// A tensor has another shape than the architecture needs.
    #[error("tensor `{tensor}` has shape {found:?}, expected {expected:?} for {arch} (is this a weight file of another architecture?): {}", path.display())]
    ShapeMismatch {
        /// Architecture being loaded.
        arch: String,
        /// Tensor name.
        tensor: String,
        /// Expected shape.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
        /// The file.
        path: PathBuf,
    },
    /// A data file is missing or malformed.
    #[error("data: {reason}: {}", path.display())]
    Data {
        /// What is wrong.
        reason: String,
        /// The file or folder.
        path: PathBuf,
    },
    /// An image could not be decoded.
    #[error("not a decodable image ({reason}); expected PNG or JPEG")]
    Image {
        /// What the decoder said.
        reason: String,
    },
    /// A name (model, layer, split, image, session) is unknown.
    #[error("{0}")]
    NotFound(String),
    /// A parameter or shape is out of range.
    #[error("{0}")]
    BadInput(String),
    /// The request is valid but cannot be carried out.
    #[error("{0}")]
    Unprocessable(String),
    /// The caller cancelled the work.
    #[error("cancelled")]
    Cancelled,
    /// The model registry (TOML) is malformed.
    #[error("model registry: {0}")]
    Registry(String),
}

impl Error {
    /// The protocol error kind (and so the HTTP status) of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::BadInput(_) => ErrorKind::BadRequest,
            Error::Image { .. } => ErrorKind::UnsupportedMedia,
            Error::Unprocessable(_) | Error::Cancelled => ErrorKind::Unprocessable,
            Error::WeightFile { .. }
            | Error::MissingTensor { .. }
            | Error::ShapeMismatch { .. }
            | Error::Data { .. }
            | Error::Registry(_) => ErrorKind::Internal,
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
