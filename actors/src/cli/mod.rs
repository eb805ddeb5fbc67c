//! The `edgeray` command line: one module per subcommand, each with its clap `Args` and `run`.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod alias;
mod bench;
mod bench_pipeline;
mod chat;
mod dashboard;
mod deploy_args;
mod generate;
mod init;
mod member_wait;
mod model_info;
mod model_profile;
mod models;
mod node;
mod node_http;
mod perplexity;
mod placement;
mod prompt_args;
mod revoke;
mod run;
mod sampling_args;
mod serve;
mod sim;
mod sim_sweep;
mod status;

/// edgeray — turn a handful of edge boards on one LAN into one machine that runs a quantized LLM.
///
/// Quick start on one machine:
///   edgeray generate --model models/gemma-3-270m-q4_k_m.gguf --prompt "The capital of France is"
///
/// A cluster of boards:
///   edgeray init                      # once: writes cluster.toml with a fresh secret; copy it to every board
///   edgeray node --config cluster.toml --name pi-01   # on every board; they find each other by mDNS
///   edgeray status --config cluster.toml              # list the members
///   edgeray revoke --config cluster.toml pi-03        # refuse a lost board from now on
///   edgeray run --config cluster.toml --prompt "..."  # generate across the boards
///   edgeray serve --config cluster.toml --http 0.0.0.0:8080   # OpenAI-compatible API
///   edgeray chat --url http://127.0.0.1:8080                   # chat in the terminal
///
/// The distributed path on one machine (an embedded 2-node cluster over loopback QUIC):
///   edgeray run --prompt "The capital of France is"
#[derive(Debug, Parser)]
#[command(name = "edgeray", version, about, long_about, verbatim_doc_comment)]
pub struct Cli {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `edgeray_runtime=debug`.
    /// Default: `info` for `edgeray node` (membership changes are its output), `warn` otherwise.
    #[arg(long, global = true, env = "EDGERAY_LOG")]
    pub log: Option<String>,

    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Every subcommand of `edgeray`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate text with a GGUF model on this machine alone.
    Generate(generate::GenerateArgs),
    /// Inspect GGUF model files.
    #[command(subcommand)]
    Model(ModelCommand),
    /// The shard cache of this board (or coordinator): list, remove a shard, evict to a budget.
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// Measure prompt-processing and generation speed and peak memory.
    Bench(bench::BenchArgs),
    /// Write a fresh cluster.toml with a new cluster secret.
    Init(init::InitArgs),
    /// Run a cluster node on this board (joins the cluster found by mDNS or seeds).
    Node(node::NodeArgs),
    /// Print every member of the cluster.
    Status(status::StatusArgs),
    /// Preview pipeline placements of a model on a (synthetic) cluster.
    Placement(placement::PlacementArgs),
    /// Generate across the cluster (or an embedded 2-node cluster) and stream the answer.
    Run(run::RunArgs),
    /// Serve the model from the cluster with an OpenAI-compatible HTTP API.
    Serve(serve::ServeArgs),
    /// Chat in the terminal with the model (deployed here, or a running serve's `--url`).
    Chat(chat::ChatArgs),
    /// Revoke a node (a lost or stolen board): add its id to `revoked` in cluster.toml.
    Revoke(revoke::RevokeArgs),
    /// Simulate a placement of a model on a (synthetic) cluster: tokens/s, time between
    /// tokens, energy per token, stage utilisation, failures.
    Sim(sim::SimArgs),
    /// Score a text like llama-perplexity: perplexity, per-token log-probabilities, and the
    /// KL divergence against a llama-perplexity --kl-divergence-base file.
    Perplexity(perplexity::PerplexityArgs),
}

/// `edgeray model ...`
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Architecture, hyper-parameters, tensor table and per-layer memory of a GGUF file.
    Info(model_info::ModelInfoArgs),
    /// The model's simulator profile as JSON (per-layer quantized bytes, KV and activation
    /// sizes, MLP width), for `edgeray sim --model-profile`.
    Profile(model_profile::ModelProfileArgs),
}

/// Parse arguments, set up logging, run the subcommand; errors print as `error: ...` with exit 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Node(_) => "info",
        Command::Run(_) | Command::Serve(_) => "warn,edgeray::pipeline=info",
        _ => "warn",
    };
    init_logging(cli.log.as_deref().unwrap_or(default_log));
    let result = match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Model(ModelCommand::Info(args)) => model_info::run(args),
        Command::Model(ModelCommand::Profile(args)) => model_profile::run(args),
        Command::Models(cmd) => models::run(cmd),
        Command::Bench(args) => bench::run(args),
        Command::Init(args) => init::run(args),
        Command::Node(args) => node::run(args),
        Command::Status(args) => status::run(args),
        Command::Placement(args) => placement::run(args),
        Command::Run(args) => run::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Chat(args) => chat::run(args),
        Command::Revoke(args) => revoke::run(args),
        Command::Perplexity(args) => perplexity::run(args),
        Command::Sim(args) => sim::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
