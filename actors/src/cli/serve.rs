//! `edgeray serve`: deploy the model on the cluster and expose an OpenAI-compatible HTTP API
//! (`/v1/models`, `/v1/completions`, `/v1/chat/completions`, `/metrics`, `/health`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::deploy_args::{DeployArgs, describe_placement};
use crate::gateway::{Gateway, GatewayConfig, MetricsRegistry};
use crate::pipeline::{PipelineBackend, Service};

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
    /// HTTP requests in flight or queued at most; more get 429.
    #[arg(long, default_value_t = 64)]
    pub max_requests: usize,
}

/// Run the subcommand.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    args.deploy.warn_if_lossy();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let (nodes, stages) = args.deploy.start_cluster().await?;
        let opts = args.deploy.options(stages);
        // Failover plans only where nodes can be lost (not in the embedded cluster).
        let spares = args.deploy.config.is_some();
        let service =
            match Service::start_with(nodes[0].clone(), args.deploy.model.clone(), opts, spares)
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    for n in nodes.into_iter().rev() {
                        n.shutdown().await;
                    }
                    return Err(e).context("deployment failed");
                }
            };
        let first = service.current().context("no pipeline after deployment")?;
        eprint!("{}", describe_placement(&first));
        let registry = MetricsRegistry::new();
        service.export_metrics(&registry);
        let backend = Arc::new(PipelineBackend::supervised(
            service.clone(),
            args.default_max_tokens,
        ));
        let gateway = Gateway::with_metrics(
            backend,
            GatewayConfig {
                max_concurrent_requests: args.max_requests,
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
            first.model_id(),
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
