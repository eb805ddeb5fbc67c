//! `edgeray serve`: deploy the model on the cluster and expose an OpenAI-compatible HTTP API
//! (`/v1/models`, `/v1/completions`, `/v1/chat/completions`, `/metrics`, `/health`).
//! `/` is a dashboard and `/api/cluster` its JSON ([`super::dashboard`]).
//! `--alias NAME` serves the model under NAME; `/health` answers 503 while a failed node's
//! stages are being redeployed (or when they cannot be).
//!
//! Access: with an API key (`--api-key-file FILE` or the `EDGERAY_API_KEY` environment
//! variable) every endpoint but `/health` needs `Authorization: Bearer <key>`. A non-loopback
//! `--http` address without a key is refused unless `--no-auth` is given. On a loopback address
//! only requests for `localhost`/`127.0.0.1`/`[::1]` are answered (DNS-rebinding defense).
//! CORS is off unless `--cors-origin` names origins. Request headers must arrive within 10 s;
//! each request has a deadline (`--request-timeout`, default 600 s, streamed answers included).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::deploy_args::{DeployArgs, ServiceDeployment};
use crate::gateway::{
    AccessConfig, ApiKey, CompletionBackend, ExtraRoutes, Gateway, GatewayConfig, MetricsRegistry,
};
use crate::pipeline::PipelineBackend;
use edgeray_runtime::config::parse_duration;

/// Arguments of `edgeray serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Cluster and deployment.
    #[command(flatten)]
    pub deploy: DeployArgs,
    /// HTTP address of the API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,
    /// Tokens generated when a request gives no `max_tokens`.
    #[arg(long, default_value_t = 256)]
    pub default_max_tokens: usize,
    /// Requests running or queued at most (the pipeline's sequence slots plus its queue, which
    /// is at most four requests per slot); more get 429.
    #[arg(long, default_value_t = 64)]
    pub max_requests: usize,
    /// File holding the API key clients must send as `Authorization: Bearer <key>` (at least
    /// 16 printable characters, e.g. from `openssl rand -hex 32`). The environment variable
    /// `EDGERAY_API_KEY` gives the key too; the file wins when both are set.
    #[arg(long)]
    pub api_key_file: Option<PathBuf>,
    /// Serve a non-loopback `--http` address without an API key (anyone who reaches the port
    /// can use the API).
    #[arg(long)]
    pub no_auth: bool,
    /// Origin allowed to call the API from a browser (CORS), e.g. `https://app.example.com`;
    /// repeatable; `*` for any. Default: none (no CORS headers).
    #[arg(long = "cors-origin")]
    pub cors_origins: Vec<String>,
    /// Longest one request may take, streamed answers included, e.g. `600s`, `10m`; `0s` for
    /// no deadline. Past it the generation is cancelled and the client gets a timeout error.
    #[arg(long, default_value = "600s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Model id to serve under instead of the GGUF's name, e.g. `qwen`: `/v1/models` lists it
    /// and requests must name it (another name gets 404 `model_not_found`).
    #[arg(long, value_parser = super::alias::parse_alias)]
    pub alias: Option<String>,
}

/// Name of the environment variable holding the API key.
pub const API_KEY_ENV: &str = "EDGERAY_API_KEY";

impl ServeArgs {
    /// The access settings of the flags and the environment, checked against `--http`
    /// (a non-loopback address needs a key or `--no-auth`).
    pub fn access(&self) -> anyhow::Result<AccessConfig> {
        let key = match &self.api_key_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the API key file {}", path.display()))?;
                Some(
                    ApiKey::new(&text)
                        .with_context(|| format!("API key file {}", path.display()))?,
                )
            }
            None => match std::env::var(API_KEY_ENV) {
                Ok(text) => Some(ApiKey::new(&text).with_context(|| API_KEY_ENV.to_string())?),
                Err(std::env::VarError::NotPresent) => None,
                Err(e) => anyhow::bail!("{API_KEY_ENV}: {e}"),
            },
        };
        let access = AccessConfig {
            api_key: key,
            allow_no_auth: self.no_auth,
            cors_origins: self.cors_origins.clone(),
        };
        access.validate()?;
        access.check_bind(self.http)?;
        Ok(access)
    }
}

/// Run the subcommand.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    // Checked before anything is deployed: a refused bind costs nothing.
    let access = args.access()?;
    args.deploy.warn_if_lossy();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // Failover plans only where nodes can be lost (not in the embedded cluster).
        let spares = args.deploy.config.is_some();
        let max_requests = args.max_requests.max(1);
        let ServiceDeployment { service, nodes, .. } = args
            .deploy
            .start_service(spares, |opts| {
                // The pipeline is the one admission point: its slots plus its queue.
                opts.max_sequences = opts.max_sequences.min(max_requests);
                opts.max_queued = opts.max_queued.min(max_requests - opts.max_sequences);
            })
            .await?;
        let registry = MetricsRegistry::new();
        service.export_metrics(&registry);
        let mut backend = PipelineBackend::supervised(service.clone(), args.default_max_tokens);
        if let Some(alias) = &args.alias {
            backend = backend.with_model_id(alias.clone());
        }
        let backend = Arc::new(backend);
        let served_id = backend.model_id();
        let dashboard =
            super::dashboard::routes(nodes[0].clone(), service.clone(), backend.clone());
        let gateway = Gateway::with_metrics(
            backend,
            GatewayConfig {
                access,
                request_timeout: (!args.request_timeout.is_zero()).then_some(args.request_timeout),
                extra_routes: ExtraRoutes(Some(dashboard)),
                ..GatewayConfig::default()
            },
            registry,
        )?;
        let running = gateway
            .spawn(args.http)
            .await
            .with_context(|| format!("cannot listen on {}", args.http))?;
        // The line scripts and tests wait for.
        eprintln!(
            "serving {} at {} (OpenAI API); Ctrl-C to stop",
            served_id,
            running.base_url()
        );
        if spares {
            let svc = service.clone();
            tokio::spawn(async move {
                let t = std::time::Instant::now();
                if let Some(n) = svc.wait_failover_plans(Duration::from_secs(3600)).await {
                    eprintln!(
                        "failover: {n} plan(s) ready, spare shards in place after {:.1} s",
                        t.elapsed().as_secs_f64()
                    );
                }
            });
        }
        super::node::wait_for_signal().await?;
        eprintln!("stopping");
        let _ = running.shutdown().await;
        service.shutdown().await;
        for n in nodes.into_iter().rev() {
            n.shutdown().await;
        }
        anyhow::Ok(())
    })
}
