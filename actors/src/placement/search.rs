//! Exact search over contiguous layer splits and node orders (dynamic programming).
//!
//! A state is (layers placed so far, nodes used, first node, last node). From a state, the next
//! stage takes layers `i..j` on an unused node that has room for them. Every state keeps the
//! Pareto frontier of two policy-chosen criteria (e.g. slowest stage and latency), so the search
//! is exact for objectives that are monotone in both (max and sums of stage/hop times).
//!
//! With at most [`MAX_ANY_ORDER_NODES`] usable nodes every node order is searched; with more,
//! nodes keep the order given (the caller sorts them) and any subset of them may be skipped.

use super::cost::CostModel;
use super::types::{ClusterView, NodeView};
use std::collections::BTreeMap;
use std::ops::Range;

/// Above this many usable nodes the search keeps the caller's node order.
pub const MAX_ANY_ORDER_NODES: usize = 6;

/// Frontier size kept per state; beyond it the labels worst in the first criterion are dropped.
const FRONTIER_CAP: usize = 64;

/// Which node orders the search considers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderMode {
    /// Every order (falls back to `Fixed` above [`MAX_ANY_ORDER_NODES`] nodes).
    Any,
    /// The order of the node slice given; nodes may be skipped.
    Fixed,
}

/// Accumulated cost of a (partial) pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Acc {
    /// Σ stage compute + Σ hops (+ the return hop once complete), seconds.
    pub latency_s: f64,
    /// Slowest stage or hop, seconds.
    pub bottleneck_s: f64,
    /// Σ power × stage time, joules.
    pub joules: f64,
    /// Highest memory utilization of a used node.
    pub max_util: f64,
}

/// The two criteria a policy optimises, lower is better in both.
pub type Keys = fn(&Acc) -> (f64, f64);

#[derive(Debug, Clone)]
struct Label {
    acc: Acc,
    node: usize,
    layers: Range<usize>,
    parent: Option<usize>,
}

/// A complete pipeline found by the search.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Its accumulated cost.
    pub acc: Acc,
    /// Stages as (index into the node slice, layers), in pipeline order.
    pub stages: Vec<(usize, Range<usize>)>,
}

/// Run the search. `nodes` are the usable nodes (already screened); returns every Pareto-optimal
/// complete pipeline, in a deterministic order.
pub fn search(
    cost: &CostModel<'_>,
    cluster: &ClusterView,
    nodes: &[&NodeView],
    mode: OrderMode,
    keys: Keys,
) -> Vec<Finished> {
    let n = nodes.len();
    let n_layers = cost.model().n_layers();
    if n == 0 || n_layers == 0 {
        return Vec::new();
    }
    let any_order = mode == OrderMode::Any && n <= MAX_ANY_ORDER_NODES;
    let hop: Vec<Vec<f64>> = (0..n)
        .map(|a| {
            (0..n)
                .map(|b| cost.hop_time_s(&cluster.link(&nodes[a].id, &nodes[b].id)))
                .collect()
        })
        .collect();
    let ret: Vec<Vec<f64>> = (0..n)
        .map(|a| {
            (0..n)
                .map(|b| cost.return_time_s(&cluster.link(&nodes[a].id, &nodes[b].id)))
                .collect()
        })
        .collect();

    let mut arena: Vec<Label> = Vec::new();
    // key: (layers placed, set id, first, last); set id = node bitmask (any order) or the
    // index of the last node (fixed order, then `last` alone defines the allowed successors).
    let mut states: BTreeMap<(usize, u64, usize, usize), Vec<usize>> = BTreeMap::new();
    let mut finals: BTreeMap<(u64, usize, usize), Vec<usize>> = BTreeMap::new();

    let extend = |arena: &mut Vec<Label>,
                  states: &mut BTreeMap<(usize, u64, usize, usize), Vec<usize>>,
                  finals: &mut BTreeMap<(u64, usize, usize), Vec<usize>>,
                  prev: Option<(usize, Acc, usize)>, // (label, acc, last node)
                  set: u64,
                  first: usize,
                  u: usize,
                  start: usize| {
        let node = nodes[u];
        let limit = node.usable_bytes();
        for end in start + 1..=n_layers {
            let layers = start..end;
            let embed = start == 0;
            let head = end == n_layers;
            let mem = cost.stage_memory(&layers, embed, head);
            if mem.total_bytes > limit {
                break; // memory only grows with more layers
            }
            let t = cost.stage_time_s(node, &layers, head);
            let mut acc = prev.map(|p| p.1).unwrap_or_default();
            let mut h = 0.0;
            if let Some((_, _, last)) = prev {
                h = hop[last][u];
            }
            acc.latency_s += t + h;
            acc.bottleneck_s = acc.bottleneck_s.max(t).max(h);
            acc.joules += node.power_watts * t;
            acc.max_util = acc
                .max_util
                .max(mem.total_bytes as f64 / limit.max(1) as f64);
            let new_set = if any_order {
                set | (1u64 << u)
            } else {
                set + 1
            };
            if head && first != u {
                acc.latency_s += ret[u][first];
            }
            let label = Label {
                acc,
                node: u,
                layers,
                parent: prev.map(|p| p.0),
            };
            let frontier = if head {
                finals.entry((new_set, first, u)).or_default()
            } else {
                states.entry((end, new_set, first, u)).or_default()
            };
            insert(arena, frontier, label, keys);
        }
    };

    for u in 0..n {
        let set = 0u64;
        extend(&mut arena, &mut states, &mut finals, None, set, u, u, 0);
    }
    while let Some(((start, set, first, last), frontier)) = states.pop_first() {
        for li in frontier {
            let acc = arena[li].acc;
            for u in 0..n {
                let allowed = if any_order {
                    set & (1u64 << u) == 0
                } else {
                    u > last
                };
                if allowed {
                    extend(
                        &mut arena,
                        &mut states,
                        &mut finals,
                        Some((li, acc, last)),
                        set,
                        first,
                        u,
                        start,
                    );
                }
            }
        }
    }

    let mut out = Vec::new();
    for (_, frontier) in finals {
        for li in frontier {
            let mut stages = Vec::new();
            let mut cur = Some(li);
            while let Some(c) = cur {
                stages.push((arena[c].node, arena[c].layers.clone()));
                cur = arena[c].parent;
            }
            stages.reverse();
            out.push(Finished {
                acc: arena[li].acc,
                stages,
            });
        }
    }
    out
}

fn insert(arena: &mut Vec<Label>, frontier: &mut Vec<usize>, label: Label, keys: Keys) {
    let (a, b) = keys(&label.acc);
    if frontier.iter().any(|&i| {
        let (x, y) = keys(&arena[i].acc);
        x <= a && y <= b
    }) {
        return;
    }
    frontier.retain(|&i| {
        let (x, y) = keys(&arena[i].acc);
        !(a <= x && b <= y)
    });
    arena.push(label);
    frontier.push(arena.len() - 1);
    if frontier.len() > FRONTIER_CAP {
        let worst = frontier
            .iter()
            .enumerate()
            .max_by(|p, q| {
                keys(&arena[*p.1].acc)
                    .0
                    .total_cmp(&keys(&arena[*q.1].acc).0)
            })
            .map(|(pos, _)| pos);
        if let Some(pos) = worst {
            frontier.remove(pos);
        }
    }
}
