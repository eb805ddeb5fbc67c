//! Deploying a model pipeline from code: an embedded cluster of two nodes in this process
//! (real mutual-TLS QUIC on 127.0.0.1), the model split into two stages, a greedy answer
//! streamed token by token — what `edgeray run --local 2` does, in a page of library calls.
//!
//! ```text
//! cargo run --release -p edgeray-examples --example pipeline_from_code -- \
//!     models/gemma-3-270m-q4_k_m.gguf "The capital of France is"
//! ```
//!
//! For a cluster of boards, join it with `edgeray::pipeline::start_hosting_node` (what
//! `edgeray run --config cluster.toml` does) instead of `embedded_cluster`; `deploy` is the
//! same call.

use std::io::Write;
use std::path::{Path, PathBuf};

use edgeray::pipeline::{DeployOptions, GenOptions, GenToken, deploy, embedded_cluster};
use edgeray_model::sampling::SamplingParams;
use tokio::sync::mpsc;

/// Deploys `model` over two stages on two in-process nodes and answers `prompt` greedily
/// with at most `max_tokens` tokens; returns the answer's text.
pub async fn run(model: &Path, prompt: &str, max_tokens: usize) -> anyhow::Result<String> {
    let dir = std::env::temp_dir().join(format!("edgeray-example-{}", std::process::id()));
    let nodes = embedded_cluster(2, &dir, 1).await?;
    let opts = DeployOptions {
        stages: Some(2),
        ctx: 512,
        progress: false,
        ..DeployOptions::default()
    };
    let pipeline = deploy(&nodes[0], model, &opts).await?;
    for (k, s) in pipeline.placement().stages.iter().enumerate() {
        println!(
            "stage {k}: layers {}..{} on {}",
            s.layers.start, s.layers.end, s.node_name
        );
    }
    let ids = pipeline.encode(prompt)?;
    let (tx, mut rx) = mpsc::channel::<GenToken>(16);
    let printer = tokio::spawn(async move {
        let mut text = String::new();
        while let Some(t) = rx.recv().await {
            print!("{}", t.text);
            let _ = std::io::stdout().flush();
            text.push_str(&t.text);
        }
        println!();
        text
    });
    let gen_opts = GenOptions {
        max_tokens,
        sampling: SamplingParams::greedy(),
        ..GenOptions::default()
    };
    let summary = pipeline.generate(ids, &gen_opts, &tx).await?;
    drop(tx);
    let text = printer.await?;
    println!("{} tokens, {:?}", summary.tokens.len(), summary.finish);
    pipeline.shutdown().await;
    for n in nodes.into_iter().rev() {
        n.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(text)
}

#[allow(dead_code)] // also compiled into the examples test, which calls `run` directly
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let model = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "models/gemma-3-270m-q4_k_m.gguf".to_string()),
    );
    let prompt = args
        .next()
        .unwrap_or_else(|| "The capital of France is".to_string());
    run(&model, &prompt, 32).await.map(|_| ())
}
