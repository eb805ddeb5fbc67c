//! Placement policies on synthetic models and clusters.

use edgeray::placement::{
    CandidateOutcome, ClusterView, ExclusionReason, LinkView, MemberId, MemoryPolicy, ModelProfile,
    NodeView, Placement, PlacementPolicy, PowerPolicy, ThroughputPolicy, Unplaceable,
    builtin_policies, policy_by_name,
};
use proptest::prelude::*;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn model(layers: Vec<u64>, embed: u64, head: u64) -> ModelProfile {
    ModelProfile {
        name: "synthetic".into(),
        layer_bytes: layers,
        embedding_bytes: embed,
        head_bytes: head,
        tied_embeddings: false,
        kv_bytes_per_token_per_layer: 1024,
        context_length: 1024,
        hidden_size: 1024,
        activation_bytes_per_token: 2048,
        stage_overhead_bytes: 16 * MIB,
    }
}

fn node(name: &str, mem: u64, power: f64, speed: f64) -> NodeView {
    NodeView {
        id: MemberId::new(name),
        name: name.into(),
        memory_budget_bytes: mem,
        memory_free_bytes: mem,
        power_watts: power,
        compute_bytes_per_s: speed,
        backend: "flex".into(),
        up: true,
    }
}

/// Independent re-computation of a stage's memory.
fn stage_mem(m: &ModelProfile, start: usize, end: usize) -> u64 {
    let mut w: u64 = m.layer_bytes[start..end].iter().sum();
    let embed = start == 0;
    let head = end == m.layer_bytes.len();
    if embed {
        w += m.embedding_bytes;
    }
    if head {
        w += if embed && m.tied_embeddings {
            m.head_bytes - m.embedding_bytes
        } else {
            m.head_bytes
        };
    }
    w + m.kv_bytes_per_token_per_layer * m.context_length as u64 * (end - start) as u64
        + m.stage_overhead_bytes
}

fn check_valid(m: &ModelProfile, c: &ClusterView, p: &Placement) {
    assert!(!p.stages.is_empty());
    let mut next = 0;
    let mut used = std::collections::BTreeSet::new();
    for (i, s) in p.stages.iter().enumerate() {
        assert_eq!(s.layers.start, next, "layers contiguous");
        assert!(s.layers.end > s.layers.start, "non-empty stage");
        next = s.layers.end;
        assert_eq!(s.embed, i == 0);
        assert_eq!(s.head, i == p.stages.len() - 1);
        let n = c
            .nodes
            .iter()
            .find(|n| n.id == s.node)
            .expect("stage on a known node");
        assert!(n.up, "no stage on a down node");
        assert!(used.insert(&s.node), "each node at most once");
        let mem = stage_mem(m, s.layers.start, s.layers.end);
        assert_eq!(mem, s.memory_bytes, "reported memory matches");
        assert!(
            mem <= n.memory_budget_bytes.min(n.memory_free_bytes),
            "stage fits its node"
        );
    }
    assert_eq!(next, m.layer_bytes.len(), "layers cover 0..n");
}

fn arb_cluster() -> impl Strategy<Value = ClusterView> {
    prop::collection::vec(
        (
            1u64..3000,
            0u64..100,
            1u32..20,
            1u32..40,
            prop::bool::weighted(0.85),
        ),
        1..6,
    )
    .prop_map(|specs| {
        let nodes = specs
            .into_iter()
            .enumerate()
            .map(|(i, (mem, free_pct, power, speed, up))| {
                let mut n = node(
                    &format!("n{i}"),
                    mem * MIB,
                    power as f64,
                    speed as f64 * 50.0 * MIB as f64,
                );
                n.memory_free_bytes = if free_pct < 20 {
                    n.memory_budget_bytes * free_pct / 20
                } else {
                    n.memory_budget_bytes
                };
                n.up = up;
                n
            })
            .collect();
        ClusterView::new(nodes)
    })
}

fn arb_model() -> impl Strategy<Value = ModelProfile> {
    (
        prop::collection::vec(1u64..300, 1..24),
        0u64..400,
        1u64..400,
        any::<bool>(),
    )
        .prop_map(|(layers, e, h, tied)| {
            let mut m = model(
                layers.into_iter().map(|l| l * MIB).collect(),
                e * MIB,
                h * MIB,
            );
            if tied {
                m.tied_embeddings = true;
                m.head_bytes = m.embedding_bytes + MIB;
            }
            m
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    #[test]
    fn placements_respect_memory_and_cover_layers(m in arb_model(), c in arb_cluster()) {
        let usable: u64 = c.nodes.iter().filter(|n| n.up).map(|n| n.memory_budget_bytes.min(n.memory_free_bytes)).sum();
        let mut any_placed = false;
        for policy in builtin_policies() {
            match policy.place(&m, &c) {
                Ok(p) => {
                    check_valid(&m, &c, &p);
                    any_placed = true;
                }
                Err(Unplaceable::InsufficientMemory { shortfall_bytes, total_budget_bytes, required_bytes, .. }) => {
                    prop_assert!(total_budget_bytes < required_bytes);
                    prop_assert_eq!(shortfall_bytes, required_bytes - total_budget_bytes);
                    prop_assert!(total_budget_bytes <= usable);
                }
                Err(Unplaceable::NoFeasibleSplit { .. }) | Err(Unplaceable::NoUsableNodes { .. }) => {}
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
            for cand in policy.candidates(&m, &c) {
                if let CandidateOutcome::Placed(p) = &cand.outcome {
                    check_valid(&m, &c, p);
                }
            }
        }
        // the exhaustive throughput search finds a placement whenever any policy does
        if any_placed {
            prop_assert!(ThroughputPolicy.place(&m, &c).is_ok());
        }
    }
}

/// Brute force over every ordered node subset and every composition of the layers.
fn brute_force(m: &ModelProfile, c: &ClusterView) -> Vec<Vec<(usize, std::ops::Range<usize>)>> {
    fn rec(
        m: &ModelProfile,
        c: &ClusterView,
        start: usize,
        used: &mut Vec<usize>,
        acc: &mut Vec<(usize, std::ops::Range<usize>)>,
        out: &mut Vec<Vec<(usize, std::ops::Range<usize>)>>,
    ) {
        let l = m.layer_bytes.len();
        if start == l {
            out.push(acc.clone());
            return;
        }
        for u in 0..c.nodes.len() {
            if used.contains(&u) {
                continue;
            }
            for end in start + 1..=l {
                let n = &c.nodes[u];
                if stage_mem(m, start, end) > n.memory_budget_bytes.min(n.memory_free_bytes) {
                    break;
                }
                used.push(u);
                acc.push((u, start..end));
                rec(m, c, end, used, acc, out);
                acc.pop();
                used.pop();
            }
        }
    }
    let mut out = Vec::new();
    rec(m, c, 0, &mut Vec::new(), &mut Vec::new(), &mut out);
    out
}

/// (bottleneck, latency, energy) of a brute-force layout, by the documented cost model.
fn costs(
    m: &ModelProfile,
    c: &ClusterView,
    layout: &[(usize, std::ops::Range<usize>)],
) -> (f64, f64, f64) {
    let l = m.layer_bytes.len();
    let (mut bott, mut lat, mut joules) = (0f64, 0f64, 0f64);
    for (u, r) in layout {
        let bytes: u64 = m.layer_bytes[r.clone()].iter().sum::<u64>()
            + if r.end == l { m.head_bytes } else { 0 };
        let t = bytes as f64 / c.nodes[*u].compute_bytes_per_s;
        bott = bott.max(t);
        lat += t;
        joules += c.nodes[*u].power_watts * t;
    }
    for w in layout.windows(2) {
        let link = c.link(&c.nodes[w[0].0].id, &c.nodes[w[1].0].id);
        let h = link.rtt_s / 2.0 + m.activation_bytes_per_token as f64 / link.bandwidth_bytes_per_s;
        bott = bott.max(h);
        lat += h;
    }
    if layout.len() > 1 {
        lat += c
            .link(
                &c.nodes[layout[layout.len() - 1].0].id,
                &c.nodes[layout[0].0].id,
            )
            .rtt_s
            / 2.0;
    }
    (bott, lat, joules)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 120, .. ProptestConfig::default() })]

    #[test]
    fn throughput_and_power_are_optimal_on_small_cases(
        layers in prop::collection::vec(1u64..200, 1..7),
        specs in prop::collection::vec((50u64..900, 1u32..20, 1u32..40, 0u32..50), 1..4),
    ) {
        let m = model(layers.into_iter().map(|l| l * MIB).collect(), 30 * MIB, 40 * MIB);
        let nodes: Vec<NodeView> = specs
            .iter()
            .enumerate()
            .map(|(i, (mem, p, s, _))| node(&format!("n{i}"), mem * MIB, *p as f64, *s as f64 * 40.0 * MIB as f64))
            .collect();
        let mut c = ClusterView::new(nodes);
        for (i, (_, _, _, rtt)) in specs.iter().enumerate() {
            if i > 0 {
                let (a, b) = (c.nodes[i - 1].id.clone(), c.nodes[i].id.clone());
                c.set_link(&a, &b, LinkView { rtt_s: *rtt as f64 * 1e-4, bandwidth_bytes_per_s: 10e6 });
            }
        }
        let all = brute_force(&m, &c);
        let t = ThroughputPolicy.place(&m, &c);
        let p = PowerPolicy::default().place(&m, &c);
        if all.is_empty() {
            prop_assert!(t.is_err());
            prop_assert!(p.is_err());
        } else {
            let scored: Vec<(f64, f64, f64)> = all.iter().map(|l| costs(&m, &c, l)).collect();
            let best_bott = scored.iter().map(|s| s.0).fold(f64::INFINITY, f64::min);
            let t = t.unwrap();
            check_valid(&m, &c, &t);
            prop_assert!(close(t.prediction.bottleneck_s, best_bott), "throughput {} vs brute {}", t.prediction.bottleneck_s, best_bott);
            let best_lat = scored.iter().map(|s| s.1).fold(f64::INFINITY, f64::min);
            let target = best_lat * 1.5 * (1.0 + 1e-9);
            let best_energy = scored.iter().filter(|s| s.1 <= target).map(|s| s.2).fold(f64::INFINITY, f64::min);
            let p = p.unwrap();
            check_valid(&m, &c, &p);
            prop_assert!(p.prediction.latency_s <= target);
            prop_assert!(close(p.prediction.joules_per_token, best_energy), "power {} vs brute {}", p.prediction.joules_per_token, best_energy);
        }
    }
}

#[test]
fn unplaceable_names_the_shortfall() {
    // 24 layers × 50 MiB = 1200 MiB weights + 100 + 100; KV 1024 B × 4096 × 24 = 96 MiB
    let mut m = model(vec![50 * MIB; 24], 100 * MIB, 100 * MIB);
    m.context_length = 4096;
    let c = ClusterView::new(vec![
        node("a", 700 * MIB, 5.0, 1e9),
        node("b", 600 * MIB, 5.0, 1e9),
    ]);
    for policy in builtin_policies() {
        let err = policy.place(&m, &c).unwrap_err();
        let required = 1400 * MIB + 96 * MIB + 16 * MIB;
        match &err {
            Unplaceable::InsufficientMemory {
                shortfall_bytes,
                total_budget_bytes,
                required_bytes,
                kv_bytes,
                ..
            } => {
                assert_eq!(*total_budget_bytes, 1300 * MIB);
                assert_eq!(*required_bytes, required);
                assert_eq!(*shortfall_bytes, required - 1300 * MIB);
                assert_eq!(*kv_bytes, 96 * MIB);
            }
            other => panic!("expected InsufficientMemory, got {other}"),
        }
        let msg = err.to_string();
        assert!(
            msg.starts_with("needs 212 MiB more: total budget 1.3 GiB < 1.5 GiB required"),
            "{msg}"
        );
        assert!(msg.contains("KV cache 96 MiB at ctx 4096"), "{msg}");
    }
}

#[test]
fn whole_layers_that_do_not_pack_are_reported() {
    // enough memory in total, but one 600 MiB layer fits no 400 MiB node
    let m = model(vec![10 * MIB, 600 * MIB, 10 * MIB], MIB, MIB);
    let c = ClusterView::new(vec![
        node("a", 400 * MIB, 5.0, 1e9),
        node("b", 400 * MIB, 5.0, 1e9),
    ]);
    let err = MemoryPolicy.place(&m, &c).unwrap_err();
    assert!(matches!(err, Unplaceable::NoFeasibleSplit { .. }), "{err}");
    assert!(err.to_string().contains("largest 600 MiB"), "{err}");
}

#[test]
fn down_and_empty_nodes_are_excluded_with_reasons() {
    let m = model(vec![20 * MIB; 8], 10 * MIB, 10 * MIB);
    let mut down = node("down", GIB, 5.0, 1e9);
    down.up = false;
    let empty = node("empty", 0, 5.0, 1e9);
    let tiny = node("tiny", 20 * MIB, 5.0, 1e9);
    let c = ClusterView::new(vec![down, empty, tiny, node("ok", GIB, 5.0, 1e9)]);
    for policy in builtin_policies() {
        let p = policy.place(&m, &c).unwrap();
        assert_eq!(p.stages.len(), 1);
        assert_eq!(p.stages[0].node, MemberId::new("ok"));
        let cands = policy.candidates(&m, &c);
        assert_eq!(cands.len(), 1, "one usable node: one candidate");
        let reasons: Vec<(&str, &ExclusionReason)> = cands[0]
            .excluded
            .iter()
            .map(|e| (e.name.as_str(), &e.reason))
            .collect();
        assert!(reasons.contains(&("down", &ExclusionReason::Down)));
        assert!(reasons.contains(&("empty", &ExclusionReason::ZeroBudget)));
        assert!(
            reasons
                .iter()
                .any(|(n, r)| *n == "tiny" && matches!(r, ExclusionReason::TooSmall { .. }))
        );
    }
    let all_down = ClusterView::new(vec![node("empty", 0, 1.0, 1.0)]);
    assert!(matches!(
        MemoryPolicy.place(&m, &all_down),
        Err(Unplaceable::NoUsableNodes { known: 1 })
    ));
}

#[test]
fn memory_policy_splits_in_proportion_to_memory() {
    let m = model(vec![40 * MIB; 32], 0, 0);
    let c = ClusterView::new(vec![
        node("small", 600 * MIB, 5.0, 1e9),
        node("big", 1800 * MIB, 5.0, 1e9),
    ]);
    let p = MemoryPolicy.place(&m, &c).unwrap();
    check_valid(&m, &c, &p);
    assert_eq!(p.stages.len(), 2);
    assert_eq!(
        p.stages[0].node,
        MemberId::new("big"),
        "largest memory first"
    );
    let big = p.stages[0].layers.len();
    let small = p.stages[1].layers.len();
    assert_eq!(big + small, 32);
    assert!((23..=25).contains(&big), "about 3:1, got {big}:{small}");
    assert!(
        (p.stages[0].memory_bytes as f64 / (1800 * MIB) as f64
            - p.stages[1].memory_bytes as f64 / (600 * MIB) as f64)
            .abs()
            < 0.1
    );
}

#[test]
fn throughput_policy_gives_the_fast_node_more_layers() {
    let m = model(vec![30 * MIB; 24], 20 * MIB, 20 * MIB);
    let fast = node("fast", 4 * GIB, 15.0, 3e9);
    let slow = node("slow", 4 * GIB, 5.0, 1e9);
    let c = ClusterView::new(vec![slow, fast]).with_link(
        &MemberId::new("fast"),
        &MemberId::new("slow"),
        LinkView {
            rtt_s: 0.0002,
            bandwidth_bytes_per_s: 100e6,
        },
    );
    let p = ThroughputPolicy.place(&m, &c).unwrap();
    check_valid(&m, &c, &p);
    assert_eq!(p.stages.len(), 2, "{p}");
    let fast_layers = p
        .stages
        .iter()
        .find(|s| s.node == MemberId::new("fast"))
        .unwrap()
        .layers
        .len();
    let slow_layers = p
        .stages
        .iter()
        .find(|s| s.node == MemberId::new("slow"))
        .unwrap()
        .layers
        .len();
    assert!(
        fast_layers >= 2 * slow_layers,
        "fast {fast_layers} vs slow {slow_layers}"
    );
    // better pipelined throughput than the best single node
    let single = 1.0 / ((24 * 30 + 20) as f64 * MIB as f64 / 3e9);
    assert!(p.prediction.pipelined_tokens_per_s > single * 1.1);
}

#[test]
fn power_policy_prefers_efficient_nodes_within_the_latency_target() {
    let m = model(vec![30 * MIB; 16], 20 * MIB, 20 * MIB);
    // same speed, very different power: the efficient node alone is best
    let c = ClusterView::new(vec![
        node("hungry", 4 * GIB, 20.0, 1e9),
        node("frugal", 4 * GIB, 4.0, 1e9),
    ]);
    let p = PowerPolicy::default().place(&m, &c).unwrap();
    assert_eq!(p.stages.len(), 1);
    assert_eq!(p.stages[0].node, MemberId::new("frugal"));
    let t = ThroughputPolicy.place(&m, &c).unwrap();
    assert!(p.prediction.joules_per_token < t.prediction.joules_per_token);

    // a fast hungry node and a slow frugal one: a loose target allows the frugal one,
    // a tight target forces the fast one
    let c = ClusterView::new(vec![
        node("fast", 4 * GIB, 20.0, 4e9),
        node("eco", 4 * GIB, 2.0, 1e9),
    ]);
    let loose = PowerPolicy::with_factor(5.0).place(&m, &c).unwrap();
    assert!(
        loose.stages.iter().all(|s| s.node == MemberId::new("eco")),
        "{loose}"
    );
    let tight = PowerPolicy::with_factor(1.0).place(&m, &c).unwrap();
    assert!(
        tight.stages.iter().any(|s| s.node == MemberId::new("fast")),
        "{tight}"
    );
    assert!(tight.prediction.latency_s < loose.prediction.latency_s);
    let err = PowerPolicy::with_target_s(1e-6).place(&m, &c).unwrap_err();
    assert!(matches!(err, Unplaceable::LatencyTarget { .. }), "{err}");

    // nodes without a power figure are left out by the power policy only
    let c = ClusterView::new(vec![
        node("unknown", 4 * GIB, 0.0, 1e9),
        node("known", 4 * GIB, 3.0, 1e9),
    ]);
    let cands = PowerPolicy::default().candidates(&m, &c);
    assert!(
        cands[0]
            .excluded
            .iter()
            .any(|e| e.name == "unknown" && e.reason == ExclusionReason::NoPowerBudget)
    );
}

#[test]
fn placements_are_deterministic_and_independent_of_node_order() {
    let m = model(
        (0..20).map(|i| (20 + i % 5) * MIB).collect(),
        30 * MIB,
        40 * MIB,
    );
    let nodes = vec![
        node("a", 300 * MIB, 5.0, 1.2e9),
        node("b", 500 * MIB, 7.0, 2.0e9),
        node("c", 250 * MIB, 3.0, 0.8e9),
        node("d", 400 * MIB, 6.0, 1.5e9),
    ];
    let mut reversed = nodes.clone();
    reversed.reverse();
    for policy in builtin_policies() {
        let p1 = policy.place(&m, &ClusterView::new(nodes.clone())).unwrap();
        let p2 = policy.place(&m, &ClusterView::new(nodes.clone())).unwrap();
        let p3 = policy
            .place(&m, &ClusterView::new(reversed.clone()))
            .unwrap();
        assert_eq!(p1, p2, "{}", policy.name());
        assert_eq!(p1, p3, "{}", policy.name());
        let c1 = policy.candidates(&m, &ClusterView::new(nodes.clone()));
        let c2 = policy.candidates(&m, &ClusterView::new(reversed.clone()));
        assert_eq!(c1, c2);
    }
}

#[test]
fn candidates_cover_every_stage_count_and_mark_the_choice() {
    let m = model(vec![25 * MIB; 12], 10 * MIB, 10 * MIB);
    let c = ClusterView::new(vec![
        node("a", 200 * MIB, 5.0, 1e9),
        node("b", 300 * MIB, 5.0, 2e9),
        node("c", 250 * MIB, 5.0, 1.5e9),
    ]);
    for policy in builtin_policies() {
        let cands = policy.candidates(&m, &c);
        assert_eq!(cands.len(), 3);
        assert_eq!(
            cands.iter().filter(|c| c.chosen).count(),
            1,
            "{}",
            policy.name()
        );
        let chosen = cands.iter().find(|c| c.chosen).unwrap();
        assert_eq!(
            chosen.outcome.placement(),
            Some(&policy.place(&m, &c).unwrap())
        );
        // one node cannot hold 300 MiB of layers + head/embed + overhead
        assert!(matches!(cands[0].outcome, CandidateOutcome::Unplaceable(_)));
        for (k, cand) in cands.iter().enumerate() {
            if let Some(p) = cand.outcome.placement() {
                assert_eq!(p.stages.len(), k + 1);
                assert_eq!(cand.excluded.len(), 3 - (k + 1), "unused nodes listed");
            }
        }
    }
}

#[test]
fn registry_finds_policies_and_lists_valid_names() {
    for name in ["memory", "power", "throughput"] {
        assert_eq!(policy_by_name(name).unwrap().name(), name);
    }
    let err = policy_by_name("fastest").err().unwrap().to_string();
    assert_eq!(
        err,
        "unknown placement policy `fastest`; valid policies: memory, power, throughput"
    );
}
