//! The daemon's one error type: an [`ErrorBody`] whose kind fixes the status.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use aevis_shared::protocol::{ErrorBody, ErrorKind};

use crate::wire::{self, Format};

/// An error answer. Rendered as bincode here; the guard middleware renders it
/// again in the format the request asked for.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", .0.message)]
pub struct ApiError(pub ErrorBody);

impl ApiError {
    /// An error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self(ErrorBody { kind, message: message.into() })
    }
    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    /// 503.
    pub fn busy(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Busy, message)
    }
    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
    /// The kind.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }
    /// The body in `format`.
    pub fn render(&self, format: Format) -> HttpResponse {
        render_body(&self.0, format)
    }
}

/// The HTTP status of a kind.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    StatusCode::from_u16(kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The kind an HTTP status of someone else's error (actix's own) stands for.
pub fn kind_of_status(status: StatusCode) -> ErrorKind {
    match status.as_u16() {
        401 => ErrorKind::Unauthorized,
        404 => ErrorKind::NotFound,
        409 => ErrorKind::ProtocolVersion,
        413 => ErrorKind::TooLarge,
        415 => ErrorKind::UnsupportedMedia,
        422 => ErrorKind::Unprocessable,
        503 => ErrorKind::Busy,
        400..=499 => ErrorKind::BadRequest,
        _ => ErrorKind::Internal,
    }
}

/// An error body as a response in `format`.
pub fn render_body(body: &ErrorBody, format: Format) -> HttpResponse {
    let status = status_of(body.kind);
    match wire::encode(format, body) {
        Ok((bytes, mime)) => HttpResponse::build(status).content_type(mime).body(bytes),
        // An ErrorBody always encodes; keep a plain-text fallback rather than a panic.
        Err(_) => HttpResponse::build(status).content_type("text/plain").body(body.message.clone()),
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        status_of(self.0.kind)
    }
    fn error_response(&self) -> HttpResponse {
        self.render(Format::Bincode)
    }
}

/// What the engine (or a [`crate::Compute`] stand-in) reports.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ComputeError {
    /// The protocol kind.
    pub kind: ErrorKind,
    /// In words.
    pub message: String,
}

impl ComputeError {
    /// A new error.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
}

impl From<ComputeError> for ApiError {
    fn from(e: ComputeError) -> Self {
        ApiError::new(e.kind, e.message)
    }
}

impl From<aevis_cache::CacheError> for ApiError {
    fn from(e: aevis_cache::CacheError) -> Self {
        ApiError::internal(e.to_string())
    }
}
