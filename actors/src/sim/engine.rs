//! The discrete-event engine: streams flow through the stages' mailboxes, each idle stage runs
//! one forward over everything waiting (up to [`SimParams::max_batch`] sequences), activations
//! cross the links (serialised per link: bandwidth, then RTT/2), the last stage emits a token
//! whose id travels back to the first stage for the next step. A failure kills a node's stages;
//! once detected every in-flight forward and message is abandoned, and after the redeploy each
//! unfinished stream replays its prompt and the tokens it has so far in one prefill.

use super::cost::{Positions, forward_s};
use super::queue::EventQueue;
use super::report::{FailureReport, SimReport, StageReport, build_report};
use super::rng::SplitMix64;
use super::setup::{SimFailure, SimModel, SimParams, SimPipeline, Workload};
use std::collections::{BTreeMap, VecDeque};

/// One sequence's work item travelling down the pipeline.
#[derive(Debug, Clone, Copy)]
struct Item {
    seq: usize,
    pos: Positions,
}

#[derive(Debug)]
enum Event {
    Arrive {
        stage: usize,
        item: Item,
    },
    /// An idle stage takes its mailbox (after every arrival of the same instant).
    Start {
        stage: usize,
    },
    ForwardDone {
        stage: usize,
    },
    TokenBack {
        seq: usize,
    },
    Fail {
        index: usize,
    },
    Detected {
        index: usize,
    },
    Redeployed {
        index: usize,
    },
}

#[derive(Default)]
struct StageState {
    mailbox: VecDeque<Item>,
    running: Vec<Item>,
    started: f64,
    start_pending: bool,
    dead: bool,
    busy_s: f64,
    forwards: u64,
    batched: u64,
}

struct Deployment {
    pipeline: SimPipeline,
    stages: Vec<StageState>,
    hop_free: Vec<f64>,
}

impl Deployment {
    fn new(pipeline: SimPipeline) -> Self {
        let n = pipeline.stages.len();
        Deployment {
            stages: (0..n).map(|_| StageState::default()).collect(),
            hop_free: vec![0.0; n.saturating_sub(1)],
            pipeline,
        }
    }
}

struct Engine<'a> {
    model: &'a SimModel,
    params: &'a SimParams,
    work: Workload,
    failures: &'a [SimFailure],
    rng: SplitMix64,
    queue: EventQueue<(u32, Event)>,
    epoch: u32,
    deployments: Vec<Deployment>,
    /// Emission times of each stream's tokens.
    tokens: Vec<Vec<f64>>,
    node_busy: BTreeMap<String, (f64, f64)>,
    failure_reports: Vec<FailureReport>,
    stalled: bool,
    now: f64,
}

/// Simulate `work` on `pipeline` with the failures given (sorted or not); pure and
/// deterministic for `params.seed`.
pub fn simulate(
    model: &SimModel,
    pipeline: &SimPipeline,
    work: Workload,
    params: &SimParams,
    failures: &[SimFailure],
) -> SimReport {
    let mut e = Engine {
        model,
        params,
        work,
        failures,
        rng: SplitMix64::new(params.seed),
        queue: EventQueue::default(),
        epoch: 0,
        deployments: vec![Deployment::new(pipeline.clone())],
        tokens: vec![Vec::new(); work.streams],
        node_busy: BTreeMap::new(),
        failure_reports: failures
            .iter()
            .map(|f| FailureReport {
                node: f.node.clone(),
                at_s: f.at_s,
                in_pipeline: false,
                detected_at_s: None,
                redeployed_at_s: None,
                replayed_tokens: 0,
            })
            .collect(),
        stalled: false,
        now: 0.0,
    };
    e.register_nodes(pipeline);
    if work.gen_tokens > 0 {
        for seq in 0..work.streams {
            let pos = Positions {
                n: work.prompt_tokens.max(1),
                ctx: 0,
            };
            e.push(
                0.0,
                Event::Arrive {
                    stage: 0,
                    item: Item { seq, pos },
                },
            );
        }
    }
    for (index, f) in failures.iter().enumerate() {
        e.queue.push(f.at_s, (u32::MAX, Event::Fail { index }));
    }
    let mut events = 0u64;
    while let Some((at, (epoch, ev))) = e.queue.pop() {
        events += 1;
        if events > params.max_events {
            e.stalled = true;
            break;
        }
        // failures happen whatever the epoch; other events of an abandoned deployment vanish
        if epoch != u32::MAX && epoch != e.epoch {
            continue;
        }
        if e.all_done() {
            // nothing left to do (a failure after the last token changes nothing)
            continue;
        }
        e.now = at;
        e.handle(ev);
    }
    let busy: Vec<Vec<StageReport>> = e
        .deployments
        .iter()
        .enumerate()
        .map(|(d, dep)| {
            dep.stages
                .iter()
                .enumerate()
                .map(|(i, s)| StageReport {
                    deployment: d,
                    stage: i,
                    nodes: dep.pipeline.stages[i]
                        .nodes
                        .iter()
                        .map(|n| n.name.clone())
                        .collect(),
                    layers: dep.pipeline.stages[i].n_layers,
                    busy_s: s.busy_s,
                    utilisation: 0.0,
                    forwards: s.forwards,
                    mean_batch: if s.forwards > 0 {
                        s.batched as f64 / s.forwards as f64
                    } else {
                        0.0
                    },
                })
                .collect()
        })
        .collect();
    let stalled = e.stalled || !e.all_done();
    build_report(
        work,
        &e.tokens,
        busy.into_iter().flatten().collect(),
        &e.node_busy,
        params.idle_power_fraction,
        e.failure_reports,
        stalled,
        events,
    )
}

impl Engine<'_> {
    fn push(&mut self, at: f64, ev: Event) {
        self.queue.push(at, (self.epoch, ev));
    }

    fn dep(&mut self) -> &mut Deployment {
        self.deployments
            .last_mut()
            .expect("one deployment at least")
    }

    fn register_nodes(&mut self, p: &SimPipeline) {
        for s in &p.stages {
            for n in &s.nodes {
                self.node_busy
                    .entry(n.name.clone())
                    .or_insert((0.0, n.power_watts));
            }
        }
    }

    fn all_done(&self) -> bool {
        self.tokens.iter().all(|t| t.len() >= self.work.gen_tokens)
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Arrive { stage, item } => {
                let st = &mut self.dep().stages[stage];
                if st.dead {
                    return; // lost with the node
                }
                st.mailbox.push_back(item);
                if st.running.is_empty() && !st.start_pending {
                    st.start_pending = true;
                    let now = self.now;
                    self.push(now, Event::Start { stage });
                }
            }
            Event::Start { stage } => {
                self.dep().stages[stage].start_pending = false;
                self.try_start(stage);
            }
            Event::ForwardDone { stage } => self.forward_done(stage),
            Event::TokenBack { seq } => {
                let ctx = self.work.prompt_tokens.max(1) + self.tokens[seq].len() - 1;
                let item = Item {
                    seq,
                    pos: Positions { n: 1, ctx },
                };
                self.handle(Event::Arrive { stage: 0, item });
            }
            Event::Fail { index } => self.fail(index),
            Event::Detected { index } => {
                // abandon the deployment: nothing in flight survives
                self.epoch += 1;
                self.failure_reports[index].detected_at_s = Some(self.now);
                let at = self.now + self.params.redeploy_s;
                self.push(at, Event::Redeployed { index });
            }
            Event::Redeployed { index } => self.redeploy(index),
        }
    }

    fn try_start(&mut self, stage: usize) {
        let max_batch = self.params.max_batch.max(1);
        let now = self.now;
        let st = &mut self.dep().stages[stage];
        if !st.running.is_empty() || st.mailbox.is_empty() {
            return;
        }
        let take = st.mailbox.len().min(max_batch);
        st.running = st.mailbox.drain(..take).collect();
        st.started = now;
        let batch: Vec<Positions> = st.running.iter().map(|i| i.pos).collect();
        let dep = self.deployments.last().expect("one deployment");
        let base = forward_s(&dep.pipeline.stages[stage], &batch, self.model, self.params);
        let noise = if self.params.jitter > 0.0 {
            1.0 + self.params.jitter * self.rng.symmetric()
        } else {
            1.0
        };
        self.push(now + base * noise.max(0.0), Event::ForwardDone { stage });
    }

    fn forward_done(&mut self, stage: usize) {
        let now = self.now;
        let act = self.model.profile.activation_bytes_per_token as f64;
        let dep = self.deployments.last_mut().expect("one deployment");
        let st = &mut dep.stages[stage];
        if st.dead {
            return;
        }
        let items = std::mem::take(&mut st.running);
        let took = now - st.started;
        st.busy_s += took;
        st.forwards += 1;
        st.batched += items.len() as u64;
        for n in &dep.pipeline.stages[stage].nodes {
            if let Some(b) = self.node_busy.get_mut(&n.name) {
                b.0 += took;
            }
        }
        let last = stage + 1 == dep.pipeline.stages.len();
        let mut sends = Vec::new();
        for item in items {
            if last {
                self.tokens[item.seq].push(now);
                if self.tokens[item.seq].len() < self.work.gen_tokens {
                    // a token id is a few bytes: only the latency counts
                    let at = now + dep.pipeline.back.map_or(0.0, |l| l.rtt_s / 2.0);
                    sends.push((at, Event::TokenBack { seq: item.seq }));
                }
            } else {
                let at = match dep.pipeline.hops[stage] {
                    None => now,
                    Some(l) => {
                        let start = now.max(dep.hop_free[stage]);
                        let done = start + item.pos.n as f64 * act / l.bandwidth_bytes_per_s;
                        dep.hop_free[stage] = done;
                        done + l.rtt_s / 2.0
                    }
                };
                sends.push((
                    at,
                    Event::Arrive {
                        stage: stage + 1,
                        item,
                    },
                ));
            }
        }
        for (at, ev) in sends {
            self.push(at, ev);
        }
        self.try_start(stage);
    }

    fn fail(&mut self, index: usize) {
        let f = &self.failures[index];
        let mut hit = false;
        let dep = self.deployments.last_mut().expect("one deployment");
        for (i, s) in dep.pipeline.stages.iter().enumerate() {
            if s.nodes.iter().any(|n| n.name == f.node) {
                dep.stages[i].dead = true;
                hit = true;
            }
        }
        self.failure_reports[index].in_pipeline = hit;
        if hit {
            let at = self.now + self.params.detect_s;
            self.push(at, Event::Detected { index });
        }
    }

    fn redeploy(&mut self, index: usize) {
        let f = &self.failures[index];
        let Some(next) = f.replacement.clone() else {
            self.stalled = true;
            return;
        };
        self.register_nodes(&next);
        self.deployments.push(Deployment::new(next));
        self.failure_reports[index].redeployed_at_s = Some(self.now);
        let prompt = self.work.prompt_tokens.max(1);
        let mut replayed = 0;
        for seq in 0..self.work.streams {
            let have = self.tokens[seq].len();
            if have >= self.work.gen_tokens {
                continue;
            }
            let pos = Positions {
                n: prompt + have,
                ctx: 0,
            };
            replayed += pos.n;
            self.push(
                self.now,
                Event::Arrive {
                    stage: 0,
                    item: Item { seq, pos },
                },
            );
        }
        self.failure_reports[index].replayed_tokens = replayed;
    }
}
