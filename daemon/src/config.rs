//! Configuration: defaults, then a TOML file, then command-line flags.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// Which device the engine uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// CUDA when a working driver is found, else the CPU.
    #[default]
    Auto,
    /// The CPU (flex backend).
    Cpu,
    /// CUDA (fails to start without a driver).
    Cuda,
}

/// Everything the daemon is configured by.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    /// Address to bind; anything but loopback requires [`DaemonConfig::token`].
    pub address: IpAddr,
    /// Port (0 = any free port).
    pub port: u16,
    /// Folder of data sets and weights.
    pub data_dir: PathBuf,
    /// Model registry (TOML); `None` = the embedded default models.
    pub registry: Option<PathBuf>,
    /// Folder of the sled cache.
    pub cache_dir: PathBuf,
    /// Compute device.
    pub device: Device,
    /// Bearer token every request must carry, when set.
    pub token: Option<String>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Load only these model ids (`None` = all of the registry).
    pub models: Option<Vec<String>>,
    /// Jobs that may wait in the queue before new ones get `503 Busy`.
    pub queue_capacity: usize,
    /// Threads running queued jobs.
    pub job_workers: usize,
    /// Online engine calls (attack, details, contribution) that may run at once.
    pub compute_threads: usize,
    /// actix-web worker threads.
    pub http_workers: usize,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 7341,
            data_dir: default_data_dir(),
            registry: None,
            cache_dir: PathBuf::from("aevis-cache"),
            device: Device::Auto,
            token: None,
            max_body_bytes: 32 << 20,
            models: None,
            queue_capacity: 64,
            job_workers: 1,
            compute_threads: 2,
            http_workers: 2,
        }
    }
}

/// Command line of `aevis-daemon`; every flag overrides the file.
#[derive(Debug, Clone, Default, clap::Parser)]
#[command(name = "aevis-daemon", version, about = "The aevis daemon: HTTP API over the gated-network engine")]
pub struct Cli {
    /// TOML file with any of the fields below (snake_case names).
    #[arg(long, env = "AEVIS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to bind (non-loopback needs --token).
    #[arg(long)]
    pub address: Option<IpAddr>,
    /// Port (0 = any free port; the bound address is printed).
    #[arg(long)]
    pub port: Option<u16>,
    /// Folder of data sets and weights.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Model registry (TOML).
    #[arg(long)]
    pub registry: Option<PathBuf>,
    /// Folder of the sled cache.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Compute device.
    #[arg(long, value_enum)]
    pub device: Option<Device>,
    /// Bearer token required on every request.
    #[arg(long, env = "AEVIS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Largest request body, in bytes.
    #[arg(long)]
    pub max_body_bytes: Option<usize>,
    /// Load only these model ids (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub models: Option<Vec<String>>,
    /// Queue capacity.
    #[arg(long)]
    pub queue_capacity: Option<usize>,
    /// Threads running queued jobs.
    #[arg(long)]
    pub job_workers: Option<usize>,
    /// Online engine calls at once.
    #[arg(long)]
    pub compute_threads: Option<usize>,
    /// actix-web worker threads.
    #[arg(long)]
    pub http_workers: Option<usize>,
}

impl DaemonConfig {
    /// Parses a TOML file's text.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("invalid config {}", path.display()))
    }

    /// Defaults, then the file named by `--config`, then the flags.
    pub fn from_cli(cli: Cli) -> anyhow::Result<Self> {
        let mut c = match &cli.config {
            Some(p) => Self::from_file(p)?,
            None => Self::default(),
        };
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = cli.$f { c.$f = v; } )* };
        }
        set!(address, port, data_dir, cache_dir, device, max_body_bytes, queue_capacity, job_workers, compute_threads, http_workers);
        if cli.registry.is_some() {
            c.registry = cli.registry;
        }
        if cli.token.is_some() {
            c.token = cli.token;
        }
        if cli.models.is_some() {
            c.models = cli.models;
        }
        c.validate()?;
        Ok(c)
    }

    /// Refuses settings the daemon cannot run safely with.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(t) = &self.token
            && t.trim().is_empty()
        {
            anyhow::bail!("the token is empty; give a non-empty --token or none");
        }
        if !self.address.is_loopback() && self.token.is_none() {
            anyhow::bail!(
                "refusing to bind the non-loopback address {} without a token: set --token (or AEVIS_TOKEN), or bind 127.0.0.1",
                self.address
            );
        }
        if self.queue_capacity == 0 || self.job_workers == 0 || self.compute_threads == 0 || self.http_workers == 0 {
            anyhow::bail!("queue_capacity, job_workers, compute_threads and http_workers must be at least 1");
        }
        if self.max_body_bytes < 1024 {
            anyhow::bail!("max_body_bytes is {}; it must be at least 1024", self.max_body_bytes);
        }
        Ok(())
    }
}

/// `--data`, else `AEVIS_DATA`, else `../shared/data` beside the checkout.
fn default_data_dir() -> PathBuf {
    #[cfg(feature = "engine")]
    {
        aevis_models::data::default_data_dir()
    }
    #[cfg(not(feature = "engine"))]
    {
        std::env::var_os("AEVIS_DATA").map_or_else(|| PathBuf::from("../shared/data"), PathBuf::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("d.toml");
        std::fs::write(&file, "port = 9000\ndevice = \"cpu\"\nmodels = [\"a\", \"b\"]\nmax_body_bytes = 4096\n").unwrap();
        let cli = Cli::parse_from(["aevis-daemon", "--config", file.to_str().unwrap(), "--port", "9001"]);
        let c = DaemonConfig::from_cli(cli).unwrap();
        assert_eq!(c.port, 9001);
        assert_eq!(c.device, Device::Cpu);
        assert_eq!(c.models, Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(c.max_body_bytes, 4096);
        assert_eq!(c.address, IpAddr::V4(Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn unknown_field_is_an_error() {
        assert!(DaemonConfig::from_toml("prot = 1").is_err());
    }

    #[test]
    fn non_loopback_needs_a_token() {
        let cli = Cli::parse_from(["aevis-daemon", "--address", "0.0.0.0"]);
        let e = DaemonConfig::from_cli(cli).unwrap_err().to_string();
        assert!(e.contains("without a token"), "{e}");
        let cli = Cli::parse_from(["aevis-daemon", "--address", "0.0.0.0", "--token", "s3cret"]);
        assert_eq!(DaemonConfig::from_cli(cli).unwrap().token.as_deref(), Some("s3cret"));
    }
}
