//! `aevis`: explain why an adversarial example fools a CNN.
//!
//! `aevis` alone runs the main job: the daemon on the embedded default model
//! (CIFAR-10 ResNet-56 on the CIFAR-10 images of the data folder) and the GUI
//! connected to it. The other subcommands are the daemon, the GUI, the
//! headless export and the command-line analyses.

mod cli;
mod headless;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let args = cli::Args::parse();
    cli::run(args)
}
