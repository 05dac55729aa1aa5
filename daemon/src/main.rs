//! `aevis-daemon`: serves the aevis API. Configuration: `--config file.toml`
//! and flags (see `--help`); logs with `RUST_LOG` (default `info`).

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let cfg = aevis_daemon::DaemonConfig::from_cli(aevis_daemon::Cli::parse())?;
    aevis_daemon::serve(cfg).await
}
