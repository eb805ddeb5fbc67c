//! `edgeray chat`: an interactive terminal chat. Against a running `edgeray serve` (or any
//! OpenAI-compatible server: `--url`) or a model deployed by this command itself on
//! `--local N` / `--config cluster.toml` (served to itself on a loopback port). The server
//! renders the conversation with the model's chat template; the history goes with every
//! question; answers stream as they are generated; Ctrl-C stops the current answer (the part
//! received stays in the history) and Ctrl-D or `/exit` quits.

pub mod client;
pub mod conversation;
pub mod sse;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde_json::json;
use tokio::io::AsyncBufReadExt;

use super::deploy_args::{DeployArgs, describe_placement};
use crate::gateway::{Gateway, GatewayConfig};
use crate::pipeline::{PipelineBackend, Service};
use client::ChatClient;
use conversation::Conversation;

/// Arguments of `edgeray chat`.
#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// Chat with the OpenAI-compatible server at this URL (e.g. `http://pi-01:8080`, with or
    /// without `/v1`) instead of deploying the model here.
    #[arg(long, conflicts_with_all = ["config", "local_nodes"])]
    pub url: Option<String>,
    /// With `--url`: file holding the API key (else `EDGERAY_API_KEY`).
    #[arg(long)]
    pub api_key_file: Option<PathBuf>,
    /// With `--url`: the model id to ask for (default: the first the server lists).
    #[arg(long)]
    pub model_id: Option<String>,
    /// System prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// Most tokens per answer.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    /// Sampling seed (the same answers for the same conversation).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Without `--url`: the cluster and the model to deploy.
    #[command(flatten)]
    pub deploy: DeployArgs,
}

const HELP: &str = "Ctrl-C stops an answer; /reset forgets the conversation; Ctrl-D or /exit quits";

/// Run the subcommand.
pub fn run(args: ChatArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (0.0..=2.0).contains(&args.temperature),
        "--temperature must be between 0 and 2"
    );
    anyhow::ensure!(args.max_tokens >= 1, "--max-tokens must be at least 1");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match &args.url {
            Some(url) => {
                let client = ChatClient::new(url, api_key(&args)?);
                chat(&args, client).await
            }
            None => chat_local(&args).await,
        }
    })
}

fn api_key(args: &ChatArgs) -> anyhow::Result<Option<String>> {
    Ok(match &args.api_key_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the API key file {}", p.display()))?
                .trim()
                .to_string(),
        ),
        None => std::env::var(super::serve::API_KEY_ENV).ok(),
    })
}

/// Deploys the model (like `serve`), serves it on a loopback port and chats with it.
async fn chat_local(args: &ChatArgs) -> anyhow::Result<()> {
    let (nodes, stages) = args.deploy.start_cluster().await?;
    let opts = args.deploy.options(stages);
    let spares = args.deploy.config.is_some();
    let service = match Service::start_with(
        nodes[0].clone(),
        args.deploy.model.clone(),
        opts,
        spares,
    )
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
    if let Some(p) = service.current() {
        eprint!("{}", describe_placement(&p));
    }
    let backend = Arc::new(PipelineBackend::supervised(
        service.clone(),
        args.max_tokens,
    ));
    let gateway = Gateway::new(backend.clone(), GatewayConfig::default())?;
    let running = gateway.spawn("127.0.0.1:0".parse()?).await?;
    let client = ChatClient::new(&running.base_url(), None);
    let result = chat(args, client).await;
    let _ = running.shutdown().await;
    service.shutdown().await;
    for n in nodes.into_iter().rev() {
        n.shutdown().await;
    }
    result
}

/// Ctrl-C while chatting: a stream of SIGINTs that never ends the process.
struct Interrupts {
    #[cfg(unix)]
    sig: tokio::signal::unix::Signal,
}

impl Interrupts {
    fn new() -> anyhow::Result<Self> {
        Ok(Interrupts {
            #[cfg(unix)]
            sig: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        self.sig.recv().await;
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn prompt() {
    print!("> ");
    let _ = std::io::stdout().flush();
}

/// The read–answer loop.
async fn chat(args: &ChatArgs, client: ChatClient) -> anyhow::Result<()> {
    let mut interrupts = Interrupts::new()?;
    let model = match &args.model_id {
        Some(m) => m.clone(),
        None => client.model_id().await?,
    };
    let mut params = json!({"max_tokens": args.max_tokens, "temperature": args.temperature});
    if let Some(s) = args.seed {
        params["seed"] = s.into();
    }
    let mut conv = Conversation::new(args.system.clone());
    eprintln!("chatting with {model} at {}; {HELP}", client.base());
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        prompt();
        let line = tokio::select! {
            l = lines.next_line() => l.context("cannot read the terminal")?,
            _ = interrupts.next() => {
                println!();
                eprintln!("({HELP})");
                continue;
            }
        };
        let Some(line) = line else {
            println!();
            break;
        };
        let question = line.trim();
        match question {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                conv.reset();
                eprintln!("(conversation forgotten)");
                continue;
            }
            "/help" => {
                eprintln!("({HELP})");
                continue;
            }
            _ => {}
        }
        let mut answer = String::new();
        let started = Instant::now();
        let outcome = {
            let stream = client.answer(&model, conv.messages_for(question), &params, |t| {
                print!("{t}");
                let _ = std::io::stdout().flush();
                answer.push_str(t);
            });
            tokio::select! {
                r = stream => Some(r),
                _ = interrupts.next() => None,
            }
        };
        println!();
        match outcome {
            None => {
                eprintln!("[stopped]");
                conv.push(question.to_string(), answer);
            }
            Some(Ok(stats)) => {
                let secs = started.elapsed().as_secs_f64().max(1e-3);
                eprintln!(
                    "[{} tokens, {:.1} tokens/s, context {} tokens, {}]",
                    stats.completion_tokens,
                    stats.completion_tokens as f64 / secs,
                    stats.prompt_tokens + stats.completion_tokens,
                    stats.finish.as_deref().unwrap_or("ended")
                );
                conv.push(question.to_string(), answer);
            }
            Some(Err(e)) => eprintln!("error: {e}"),
        }
    }
    Ok(())
}
