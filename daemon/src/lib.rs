//! The aevis daemon: an actix-web API over the gated-network engine, with
//! background jobs and a sled cache.
//!
//! * [`app`] builds the `App` (used by [`bind`], `main` and the tests);
//! * [`AppState`] holds the engine (behind the [`Compute`] trait), the cache,
//!   the job queue and its workers;
//! * bodies are bincode unless the request asks for JSON ([`wire`]); every
//!   error is an [`ErrorBody`](aevis_shared::protocol::ErrorBody) with the
//!   status of its kind, actix's own errors included ([`guard`]);
//! * a long computation (session, candidate list, learned features) is a job
//!   in a bounded queue, run by worker threads, followed by polling or
//!   server-sent events; jobs and results live in the cache, so a restarted
//!   daemon answers from it and re-queues what a killed one left unfinished.
//!
//! The endpoint table is in [`aevis_shared::protocol`]; this crate adds
//! `POST /v1/models/{model}/learned-features` (→ `JobCreated`).

pub mod compute;
pub mod config;
#[cfg(feature = "engine")]
pub mod engine;
pub mod error;
pub mod guard;
pub mod jobs;
pub mod records;
pub mod routes;
pub mod state;
pub mod wire;

use std::net::SocketAddr;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context;

pub use compute::Compute;
pub use config::{Cli, DaemonConfig, Device};
#[cfg(feature = "engine")]
pub use engine::{open_engine, serve};
pub use error::{ApiError, ComputeError};
pub use jobs::Counters;
pub use state::AppState;

/// The application: routes under `/v1`, payload limit, error rendering,
/// token and protocol checks.
pub fn app<E: Compute>(
    state: web::Data<AppState<E>>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let gate = web::Data::new(guard::Gate { token: state.token.clone() });
    let limit = state.max_body_bytes;
    App::new()
        .app_data(state)
        .app_data(gate)
        .app_data(web::PayloadConfig::new(limit))
        .app_data(web::PathConfig::default().error_handler(|e, req| {
            ApiError::bad_request(format!("bad path {}: {e}", req.path())).into()
        }))
        .app_data(web::QueryConfig::default().error_handler(|e, _| ApiError::bad_request(format!("bad query: {e}")).into()))
        .wrap(from_fn(guard::guard))
        .service(web::scope("/v1").configure(routes::configure::<E>))
        .default_service(web::to(routes::no_route))
}

/// Binds the HTTP server (not yet awaited): the returned `Server` runs once
/// awaited or spawned; the address is the one bound (port 0 → a free port).
///
/// Refuses a non-loopback address without a token.
pub fn bind<E: Compute>(cfg: &DaemonConfig, state: web::Data<AppState<E>>) -> anyhow::Result<(Server, SocketAddr)> {
    cfg.validate()?;
    let server = HttpServer::new(move || app(state.clone()))
        .workers(cfg.http_workers)
        .shutdown_timeout(5)
        .bind((cfg.address, cfg.port))
        .with_context(|| format!("cannot bind {}:{}", cfg.address, cfg.port))?;
    let addr = server.addrs().first().copied().context("the server bound no address")?;
    Ok((server.run(), addr))
}

#[cfg(test)]
mod tests;
