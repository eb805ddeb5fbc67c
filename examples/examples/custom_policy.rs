//! A custom placement policy: implement [`PlacementPolicy`] (pure — a model profile and a
//! cluster view in, a placement or a reason out) and compare it with the built-ins on a
//! synthetic cluster, without a model file or a board.
//!
//! ```text
//! cargo run -p edgeray-examples --example custom_policy
//! ```
//!
//! `QuietBoards` keeps every stage off boards that draw more than a power limit (a fanless
//! shelf of Pis next to a loud Jetson) and lets the `throughput` policy split the model over
//! the rest. The same trait object goes to `PlacementBench`, which runs every policy on the
//! same inputs and prints their predictions side by side. Registered
//! ([`edgeray::placement::register_policy`]), it is found by name like a built-in: by a live
//! deployment's scheduler, and by the CLI of a binary that registers it before
//! `edgeray::cli::main()`.

use edgeray::placement::{
    Candidate, ClusterView, ModelProfile, Placement, PlacementBench, PlacementPolicy,
    ThroughputPolicy, Unplaceable, builtin_policies, parse_nodes_toml, policy_by_name,
    register_policy,
};

/// Stages only on boards drawing at most `max_watts`; the split is the throughput policy's.
pub struct QuietBoards {
    /// The power limit of a board that may host a stage.
    pub max_watts: f64,
}

impl QuietBoards {
    /// The cluster without the boards above the limit.
    fn quiet(&self, cluster: &ClusterView) -> ClusterView {
        let mut c = cluster.clone();
        c.nodes.retain(|n| n.power_watts <= self.max_watts);
        c
    }
}

impl PlacementPolicy for QuietBoards {
    fn name(&self) -> &str {
        "quiet-boards"
    }

    fn place(&self, model: &ModelProfile, cluster: &ClusterView) -> Result<Placement, Unplaceable> {
        let mut p = ThroughputPolicy.place(model, &self.quiet(cluster))?;
        p.policy = self.name().to_string();
        Ok(p)
    }

    fn candidates(&self, model: &ModelProfile, cluster: &ClusterView) -> Vec<Candidate> {
        ThroughputPolicy.candidates(model, &self.quiet(cluster))
    }
}

/// Three Pis and a Jetson on Gigabit (the format of `edgeray placement preview --nodes`).
const NODES: &str = r#"
[default_link]
rtt_ms = 0.5
bandwidth_mbit = 940

[[node]]
name = "pi-01"
memory_mib = 700
power_w = 6
compute_mib_s = 900

[[node]]
name = "pi-02"
memory_mib = 700
power_w = 7
compute_mib_s = 1200

[[node]]
name = "pi-03"
memory_mib = 700
power_w = 6
compute_mib_s = 1000

[[node]]
name = "jetson"
memory_mib = 4000
power_w = 15
compute_mib_s = 4000
"#;

/// A 24-layer model of about 1 GiB (a Qwen2.5-1.5B-sized Q4 profile), without its file.
fn model() -> ModelProfile {
    const MIB: u64 = 1 << 20;
    ModelProfile {
        name: "synthetic-1.5b-q4".into(),
        layer_bytes: vec![36 * MIB; 24],
        embedding_bytes: 120 * MIB,
        head_bytes: 120 * MIB,
        tied_embeddings: true,
        kv_bytes_per_token_per_layer: 2 * 2 * 128 * 4,
        context_length: 4096,
        hidden_size: 1536,
        activation_bytes_per_token: 1536 * 4,
        stage_overhead_bytes: 16 * MIB,
    }
}

/// Places the model with the custom policy and the built-ins; returns the custom placement.
pub fn run() -> anyhow::Result<Placement> {
    let cluster = parse_nodes_toml(NODES)?;
    let model = model();
    let policy = QuietBoards { max_watts: 10.0 };
    let placement = policy.place(&model, &cluster)?;
    println!(
        "{}: {} stage(s), {:.1} tokens/s predicted",
        placement.policy,
        placement.stages.len(),
        placement.predicted_tokens_per_s()
    );
    for s in &placement.stages {
        println!(
            "  layers {:>2}..{:<2} on {}",
            s.layers.start, s.layers.end, s.node_name
        );
    }
    anyhow::ensure!(
        placement.stages.iter().all(|s| s.node_name != "jetson"),
        "the loud board hosts nothing"
    );
    // The custom policy next to the built-ins, on the same inputs.
    let mut policies = builtin_policies();
    policies.push(Box::new(QuietBoards { max_watts: 10.0 }));
    print!(
        "{}",
        PlacementBench::run(&policies, &model, &cluster).table()
    );
    // Registered, it is a policy like the built-ins wherever edgeray resolves one by name: a
    // deployment (`DeployOptions { policy: "quiet-boards".into(), .. }`), the failover planner,
    // and the CLI of a binary that registers it before calling `edgeray::cli::main()`
    // (`placement preview --policy quiet-boards`, `--compare`, `edgeray sim --policy ...`).
    register_policy(std::sync::Arc::new(policy))?;
    let by_name = policy_by_name("quiet-boards")?.place(&model, &cluster)?;
    anyhow::ensure!(
        by_name == placement,
        "the registered policy places as the value does"
    );
    anyhow::ensure!(
        PlacementBench::registered(&model, &cluster)
            .rows
            .iter()
            .any(|r| r.policy == "quiet-boards"),
        "the comparison of every registered policy includes it"
    );
    Ok(placement)
}

#[allow(dead_code)] // also compiled into the examples test, which calls `run` directly
fn main() -> anyhow::Result<()> {
    run().map(|_| ())
}
