//! The middleware in front of every route: token, protocol version, request
//! log, and the rendering of every error answer as a typed [`ErrorBody`] in
//! the format the request asked for (actix's own errors included).

use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web;
use aevis_shared::protocol::{ErrorBody, ErrorKind, PROTOCOL_VERSION, VERSION_HEADER};

use crate::error::{ApiError, kind_of_status, render_body};
use crate::wire::Format;

/// What the guard checks, shared by all workers.
#[derive(Debug, Clone)]
pub struct Gate {
    /// Bearer token every request must carry, when set.
    pub token: Option<String>,
}

/// Compares without an early exit, so the time taken does not leak the token.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn check(req: &ServiceRequest) -> Result<(), ApiError> {
    if let Some(gate) = req.app_data::<web::Data<Gate>>()
        && let Some(token) = &gate.token
    {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match given {
            Some(t) if same(t.as_bytes(), token.as_bytes()) => {}
            Some(_) => return Err(ApiError::new(ErrorKind::Unauthorized, "the bearer token is wrong")),
            None => {
                return Err(ApiError::new(
                    ErrorKind::Unauthorized,
                    "this daemon requires `Authorization: Bearer <token>` on every request",
                ));
            }
        }
    }
    if let Some(v) = req.headers().get(VERSION_HEADER) {
        let text = v.to_str().unwrap_or("").trim();
        let major = text.split('.').next().and_then(|m| m.parse::<u32>().ok());
        if major != Some(PROTOCOL_VERSION) {
            return Err(ApiError::new(
                ErrorKind::ProtocolVersion,
                format!(
                    "the client speaks protocol `{text}` ({VERSION_HEADER}); this daemon speaks {PROTOCOL_VERSION}: update the client or the daemon"
                ),
            ));
        }
    }
    Ok(())
}

fn stamp(mut res: ServiceResponse<BoxBody>) -> ServiceResponse<BoxBody> {
    res.headers_mut()
        .insert(header::HeaderName::from_static(VERSION_HEADER), HeaderValue::from(PROTOCOL_VERSION));
    res
}

/// The middleware (for `actix_web::middleware::from_fn`).
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let format = Format::of_accept(req.headers());
    let method = req.method().clone();
    let path = req.path().to_string();
    if let Err(e) = check(&req) {
        tracing::info!(%method, path, status = e.kind().status(), "refused: {}", e.0.message);
        return Ok(stamp(req.into_response(e.render(format))));
    }
    let res = next.call(req).await?;
    let status = res.status();
    let res = if status.is_client_error() || status.is_server_error() {
        let body = match res.response().error() {
            Some(err) => match err.as_error::<ApiError>() {
                Some(api) => api.0.clone(),
                None => ErrorBody { kind: kind_of_status(err.as_response_error().status_code()), message: err.to_string() },
            },
            None => ErrorBody {
                kind: kind_of_status(status),
                message: match status.as_u16() {
                    404 => format!("no such endpoint: {method} {path}"),
                    405 => format!("method {method} is not allowed on {path}"),
                    _ => status.canonical_reason().unwrap_or("error").to_string(),
                },
            },
        };
        let (req, _) = res.into_parts();
        let level_500 = body.kind == ErrorKind::Internal;
        if level_500 {
            tracing::error!(%method, path, "internal error: {}", body.message);
        }
        ServiceResponse::new(req, render_body(&body, format))
    } else {
        res.map_into_boxed_body()
    };
    tracing::debug!(%method, path, status = res.status().as_u16(), ms = started.elapsed().as_millis() as u64, "request");
    Ok(stamp(res))
}
