//! `edgeray model info`: architecture, hyper-parameters, tensor table and per-layer memory.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use edgeray_model::arch::ModelConfig;
use edgeray_model::gguf::GgufFile;

/// Arguments of `edgeray model info`.
#[derive(Debug, clap::Args)]
pub struct ModelInfoArgs {
    /// GGUF model file.
    pub path: PathBuf,
    /// Context length for the KV-cache estimate (default: min(model context, 4096)).
    #[arg(long)]
    pub ctx: Option<usize>,
    /// Do not print the tensor table.
    #[arg(long)]
    pub no_tensors: bool,
}

fn mib(b: u64) -> String {
    format!("{:.2} MiB", b as f64 / (1024.0 * 1024.0))
}

/// Layer index of a `blk.N.` tensor.
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// Run the subcommand.
pub fn run(args: ModelInfoArgs) -> anyhow::Result<()> {
    let file = GgufFile::open(&args.path)
        .with_context(|| format!("cannot open {}", args.path.display()))?;
    let cfg = ModelConfig::from_gguf(&file)?;
    let ctx = args.ctx.unwrap_or(cfg.context_length.min(4096));
    let md = file.metadata();
    let name = md.get_str_opt("general.name")?.unwrap_or("?");
    let size = std::fs::metadata(&args.path)?.len();
    println!("file:            {} ({})", args.path.display(), mib(size));
    println!("name:            {name}");
    println!("architecture:    {:?}", cfg.arch);
    println!("layers:          {}", cfg.n_layers);
    println!("d_model:         {}", cfg.d_model);
    println!("ffn:             {}", cfg.n_ff);
    println!("heads (q / kv):  {} / {}", cfg.n_head, cfg.n_kv_head);
    println!("head dim:        {}", cfg.head_dim);
    println!("vocab:           {}", cfg.vocab_size);
    println!("context (train): {}", cfg.context_length);
    println!(
        "rope:            {:?}, base {} (local {})",
        cfg.rope_style, cfg.rope_base, cfg.rope_base_local
    );
    println!(
        "sliding window:  {}",
        cfg.sliding_window
            .map_or("none".into(), |w| format!("{w} (5 local : 1 global)"))
    );
    println!("rms eps:         {:e}", cfg.rms_eps);
    println!(
        "attn scale:      q x {:?}, kq x {}",
        cfg.q_scale, cfg.kq_scale
    );
    println!(
        "output head:     {}",
        if cfg.tied_output {
            "tied to token_embd"
        } else {
            "output.weight"
        }
    );
    println!("activation:      {:?}", cfg.activation);

    if !args.no_tensors {
        println!();
        println!(
            "{:<36} {:>7} {:>22} {:>14}",
            "tensor", "type", "dims", "bytes"
        );
        for t in file.tensors() {
            println!(
                "{:<36} {:>7} {:>22} {:>14}",
                t.name,
                t.ggml_type.to_string(),
                format!("{:?}", t.dims),
                t.size
            );
        }
    }

    let mut per_layer: BTreeMap<usize, u64> = BTreeMap::new();
    let mut other = 0u64;
    for t in file.tensors() {
        match layer_of(&t.name) {
            Some(l) => *per_layer.entry(l).or_default() += t.size,
            None => other += t.size,
        }
    }
    let kv_tok = cfg.kv_bytes_per_token_per_layer() as u64;
    println!();
    println!(
        "memory per layer at ctx {ctx} (KV cache: f32 K+V, {kv_tok} bytes per token per layer):"
    );
    println!(
        "{:>5} {:>14} {:>14} {:>14}",
        "layer", "weights", "kv cache", "total"
    );
    for (l, w) in &per_layer {
        let kv = kv_tok * ctx as u64;
        println!("{l:>5} {:>14} {:>14} {:>14}", mib(*w), mib(kv), mib(w + kv));
    }
    let embd = file.tensor("token_embd.weight").map_or(0, |t| t.size);
    let out = file.tensor("output.weight").map_or(0, |t| t.size);
    let norm = file.tensor("output_norm.weight").map_or(0, |t| t.size);
    println!("first stage extra (token_embd): {}", mib(embd));
    println!(
        "last stage extra (output_norm + {}): {}",
        if cfg.tied_output {
            "tied token_embd"
        } else {
            "output"
        },
        mib(norm + if cfg.tied_output { embd } else { out })
    );
    println!("non-layer tensors total: {}", mib(other));
    Ok(())
}
