//! Hand-computed cases and determinism.

use super::*;
use crate::placement::{LinkView, ModelProfile};

fn model(layers: usize, layer_bytes: u64, head_bytes: u64, kv: u64) -> SimModel {
    SimModel {
        profile: ModelProfile {
            name: "t".into(),
            layer_bytes: vec![layer_bytes; layers],
            embedding_bytes: 0,
            head_bytes,
            tied_embeddings: false,
            kv_bytes_per_token_per_layer: kv,
            context_length: 1024,
            hidden_size: 100,
            activation_bytes_per_token: 1000,
            stage_overhead_bytes: 0,
        },
        ffn_size: Some(300),
        source: None,
    }
}

fn node(name: &str, speed: f64, watts: f64) -> SimNode {
    SimNode {
        name: name.into(),
        compute_bytes_per_s: speed,
        power_watts: watts,
        batch_cost: None,
        kv_bytes_per_s: None,
    }
}

fn stage(nodes: Vec<SimNode>, layers: usize, layer_bytes: u64, head: u64) -> SimStage {
    SimStage {
        nodes,
        n_layers: layers,
        layer_bytes: layer_bytes * layers as u64,
        head_bytes: head,
        group_link: LinkView::DEFAULT,
    }
}

fn one(stream: usize, p: usize, g: usize) -> Workload {
    Workload {
        streams: stream,
        prompt_tokens: p,
        gen_tokens: g,
    }
}

fn close(a: f64, b: f64) {
    assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{a} != {b}");
}

#[test]
fn one_stage_one_stream() {
    // 4 layers × 25 bytes at 1000 B/s: 0.1 s per decode step; a 10-token prompt costs
    // 0.1 × (1 + 0.1 × 9) = 0.19 s.
    let m = model(4, 25, 0, 0);
    let p = SimPipeline {
        stages: vec![stage(vec![node("a", 1000.0, 5.0)], 4, 25, 0)],
        hops: vec![],
        back: None,
    };
    let r = simulate(&m, &p, one(1, 10, 5), &SimParams::default(), &[]);
    assert_eq!(r.tokens, 5);
    close(r.ttft_mean_s, 0.19);
    close(r.duration_s, 0.19 + 4.0 * 0.1);
    close(r.tokens_per_s, 5.0 / 0.59);
    close(r.decode_tokens_per_s, 10.0);
    close(r.tbt.p50_s, 0.1);
    close(r.tbt.p99_s, 0.1);
    // busy the whole time at 5 W: 5 × 0.59 J over 5 tokens
    close(r.joules_per_token, 5.0 * 0.59 / 5.0);
    close(r.stages[0].utilisation, 1.0);
    assert!(!r.stalled);
}

#[test]
fn two_stages_with_a_known_link() {
    // stage a: 0.1 s, stage b: 0.05 s + head 0.02 s; link 10 ms RTT, 100 kB/s: a hop of
    // 1000 B costs 5 ms + 10 ms; the token returns in 5 ms. Decode step: 0.1 + 0.015 + 0.07
    // + 0.005 = 0.19 s.
    let m = model(4, 50, 20, 0);
    let link = LinkView {
        rtt_s: 0.01,
        bandwidth_bytes_per_s: 100_000.0,
    };
    let p = SimPipeline {
        stages: vec![
            stage(vec![node("a", 1000.0, 5.0)], 2, 50, 0),
            stage(vec![node("b", 2000.0, 10.0)], 2, 50, 40),
        ],
        hops: vec![Some(link)],
        back: Some(link),
    };
    let r = simulate(&m, &p, one(1, 1, 4), &SimParams::default(), &[]);
    // first token: prompt of 1 position: 0.1 + 0.015 + 0.07
    close(r.ttft_mean_s, 0.185);
    close(r.tbt.mean_s, 0.19);
    close(r.tbt.max_s, 0.19);
    close(r.decode_tokens_per_s, 1.0 / 0.19);
    // energy: 4 forwards each: 5 W × 0.1 + 10 W × 0.07
    close(r.joules_per_token, 5.0 * 0.1 + 10.0 * 0.07);
}

#[test]
fn single_stream_matches_the_closed_form_cost_model() {
    use crate::placement::{ClusterView, MemberId, NodeView, PlacementPolicy, ThroughputPolicy};
    let m = model(8, 1 << 20, 1 << 20, 0);
    let mk = |n: &str, speed: f64| NodeView {
        id: MemberId(n.into()),
        name: n.into(),
        memory_budget_bytes: 6 << 20,
        memory_free_bytes: 6 << 20,
        power_watts: 4.0,
        compute_bytes_per_s: speed,
        backend: "flex".into(),
        up: true,
    };
    let cluster = ClusterView::new(vec![mk("a", 50e6), mk("b", 80e6)]);
    let placement = ThroughputPolicy.place(&m.profile, &cluster).unwrap();
    assert_eq!(placement.stages.len(), 2);
    let p = pipeline_from_placement(&placement, &m.profile, &cluster).unwrap();
    let r = simulate(&m, &p, one(1, 1, 6), &SimParams::default(), &[]);
    close(r.decode_tokens_per_s, placement.prediction.tokens_per_s);
    close(r.joules_per_token, placement.prediction.joules_per_token);
}

#[test]
fn a_batch_of_four() {
    // 4 streams arrive together: one prefill forward of 4 × 2 positions
    // (0.1 × (1 + 0.1 × 7) = 0.17 s), then decode forwards of 4 positions
    // (0.1 × 1.3 = 0.13 s) each giving every stream a token.
    let m = model(4, 25, 0, 0);
    let p = SimPipeline {
        stages: vec![stage(vec![node("a", 1000.0, 5.0)], 4, 25, 0)],
        hops: vec![],
        back: None,
    };
    let r = simulate(&m, &p, one(4, 2, 3), &SimParams::default(), &[]);
    assert_eq!(r.tokens, 12);
    close(r.ttft_mean_s, 0.17);
    close(r.duration_s, 0.17 + 2.0 * 0.13);
    close(r.tokens_per_s, 12.0 / 0.43);
    close(r.decode_tokens_per_s, 4.0 / 0.13);
    close(r.stages[0].mean_batch, 4.0);
    assert_eq!(r.stages[0].forwards, 3);
    // max_batch 2: two forwards per step instead
    let params = SimParams {
        max_batch: 2,
        ..SimParams::default()
    };
    let r = simulate(&m, &p, one(4, 2, 3), &params, &[]);
    close(r.stages[0].mean_batch, 2.0);
    // a calibrated batch cost of the board overrides the default: 0.1 × (1 + 0.2 × 3)
    let mut p = p;
    p.stages[0].nodes[0].batch_cost = Some(0.2);
    let r = simulate(&m, &p, one(4, 2, 3), &SimParams::default(), &[]);
    close(r.tbt.mean_s, 0.16);
}

#[test]
fn context_makes_decode_slower() {
    // KV reads: 4 layers × 10 B per cached position: at ctx c a decode step reads
    // 40 × (c + 1) bytes more.
    let m = model(4, 25, 0, 10);
    let p = SimPipeline {
        stages: vec![stage(vec![node("a", 1000.0, 5.0)], 4, 25, 0)],
        hops: vec![],
        back: None,
    };
    let r = simulate(&m, &p, one(1, 3, 2), &SimParams::default(), &[]);
    // prefill 3 positions: 0.1 × 1.2 + 40 × (1+2+3) / 1000; decode at ctx 3: 0.1 + 40 × 4 / 1000
    close(r.ttft_mean_s, 0.12 + 0.24);
    close(r.tbt.mean_s, 0.1 + 0.16);
}

#[test]
fn a_tensor_parallel_group_pays_its_syncs() {
    // two boards share 2 layers: compute halves, each layer adds 3 × RTT/2 and
    // (2 × 100 + 300) values × 4 B × 1/2 over the group link.
    let m = model(2, 50, 0, 0);
    let link = LinkView {
        rtt_s: 0.002,
        bandwidth_bytes_per_s: 100_000.0,
    };
    let mut s = stage(
        vec![node("a", 1000.0, 5.0), node("b", 1000.0, 5.0)],
        2,
        50,
        0,
    );
    s.group_link = link;
    let p = SimPipeline {
        stages: vec![s],
        hops: vec![],
        back: None,
    };
    let r = simulate(&m, &p, one(1, 1, 3), &SimParams::default(), &[]);
    let sync = 2.0 * (3.0 * 0.001 + 500.0 * 4.0 * 0.5 / 100_000.0);
    close(r.tbt.mean_s, 0.05 + sync);
    // both boards busy: twice one board's power
    close(r.joules_per_token, 10.0 * (0.05 + sync));
}

#[test]
fn a_failure_is_detected_redeployed_and_replayed() {
    // one stage on a: 0.1 s per step, prompt of 1 (0.1 s). a fails at 0.35 s (tokens at 0.1,
    // 0.2, 0.3 are out; the forward running since 0.3 is lost), detected after 1 s, redeployed
    // on b after 2 s more (at 3.35 s), where the stream replays its prompt and its 3 tokens:
    // 4 positions at 1000 B/s: 0.1 × 1.3 = 0.13 s, then 0.1 s per token.
    let m = model(4, 25, 0, 0);
    let on = |n: &str| SimPipeline {
        stages: vec![stage(vec![node(n, 1000.0, 5.0)], 4, 25, 0)],
        hops: vec![],
        back: None,
    };
    let params = SimParams {
        detect_s: 1.0,
        redeploy_s: 2.0,
        ..SimParams::default()
    };
    let fail = SimFailure {
        node: "a".into(),
        at_s: 0.35,
        replacement: Some(on("b")),
    };
    let r = simulate(
        &m,
        &on("a"),
        one(1, 1, 5),
        &params,
        std::slice::from_ref(&fail),
    );
    assert_eq!(r.tokens, 5);
    let f = &r.failures[0];
    assert!(f.in_pipeline);
    close(f.detected_at_s.unwrap(), 1.35);
    close(f.redeployed_at_s.unwrap(), 3.35);
    assert_eq!(f.replayed_tokens, 4);
    close(r.duration_s, 3.35 + 0.13 + 0.1);
    close(r.tbt.max_s, 3.35 + 0.13 - 0.3);
    assert_eq!(r.stages.len(), 2);
    assert_eq!(r.stages[1].nodes, ["b"]);
    // with nothing to redeploy on, the stream stalls at 3 tokens
    let stuck = SimFailure {
        replacement: None,
        ..fail.clone()
    };
    let r = simulate(&m, &on("a"), one(1, 1, 5), &params, &[stuck]);
    assert!(r.stalled);
    assert_eq!(r.tokens, 3);
    // a node outside the pipeline changes nothing
    let elsewhere = SimFailure {
        node: "z".into(),
        ..fail
    };
    let r = simulate(&m, &on("a"), one(1, 1, 5), &params, &[elsewhere]);
    assert!(!r.failures[0].in_pipeline);
    close(r.duration_s, 0.5);
}

#[test]
fn same_seed_same_run() {
    let m = model(8, 40, 10, 2);
    let link = LinkView::DEFAULT;
    let p = SimPipeline {
        stages: vec![
            stage(vec![node("a", 1000.0, 5.0)], 4, 40, 0),
            stage(vec![node("b", 1300.0, 7.0)], 4, 40, 10),
        ],
        hops: vec![Some(link)],
        back: Some(link),
    };
    let params = |seed| SimParams {
        jitter: 0.2,
        seed,
        ..SimParams::default()
    };
    let w = one(3, 16, 20);
    let a = simulate(&m, &p, w, &params(1), &[]);
    let b = simulate(&m, &p, w, &params(1), &[]);
    let c = simulate(&m, &p, w, &params(2), &[]);
    assert_eq!(a, b);
    assert_ne!(a.duration_s, c.duration_s);
    assert!(a.tbt.p99_s > a.tbt.p50_s);
}
