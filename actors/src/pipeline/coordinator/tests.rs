//! The coordinator's stateful heart — deploy, the `Pipeline`'s one validation and one admission
//! point, the driver and the stage actors — on a small random-weight model in an in-process
//! cluster: fast, deterministic, and without real weights.

use std::path::PathBuf;

use edgeray_model::arch::{GenerateOptions, Generator};
use edgeray_model::sampling::SamplingParams;
use edgeray_model::test_models::RandomModel;
use edgeray_runtime::cluster::Cluster;
use tokio::sync::mpsc;

use super::{DeployOptions, GenOptions, Pipeline, PipelineBackend, PipelineError, Service, deploy};
use crate::gateway::{CompletionBackend, GenerationRequest, PromptInput, SubmitError};
use crate::pipeline::embedded_cluster;

const TOKENS: usize = 12;

struct Setup {
    model: PathBuf,
    nodes: Vec<Cluster>,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn new(arch: &'static str, nodes: usize) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join(format!("{arch}.gguf"));
        std::fs::write(&model, RandomModel::small(arch, 11).to_bytes()).unwrap();
        let nodes = embedded_cluster(nodes, &dir.path().join("nodes"), 1)
            .await
            .expect("an embedded cluster");
        Setup {
            model,
            nodes,
            _dir: dir,
        }
    }

    async fn deploy(&self, stages: usize, max_sequences: usize, max_queued: usize) -> Pipeline {
        self.deploy_ctx(stages, max_sequences, max_queued, 64).await
    }

    async fn deploy_ctx(
        &self,
        stages: usize,
        max_sequences: usize,
        max_queued: usize,
        ctx: usize,
    ) -> Pipeline {
        let opts = DeployOptions {
            stages: Some(stages),
            ctx,
            threads: 1,
            max_sequences,
            max_queued,
            progress: false,
            ..DeployOptions::default()
        };
        deploy(&self.nodes[0], &self.model, &opts)
            .await
            .unwrap_or_else(|e| panic!("deploy {stages} stages: {e}"))
    }

    async fn shutdown(self) {
        for n in self.nodes.into_iter().rev() {
            n.shutdown().await;
        }
    }
}

fn greedy(max_tokens: usize) -> GenOptions {
    GenOptions {
        max_tokens,
        sampling: SamplingParams::greedy(),
        ..GenOptions::default()
    }
}

async fn answer(p: &Pipeline, prompt: Vec<u32>) -> Result<Vec<u32>, PipelineError> {
    let (tx, mut rx) = mpsc::channel(64);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let r = p.generate(prompt, &greedy(TOKENS), &tx).await;
    drop(tx);
    drain.await.unwrap();
    r.map(|s| s.tokens)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_answers_as_one_node_does_over_one_and_two_stages() {
    for arch in ["qwen2", "gemma3"] {
        let s = Setup::new(arch, 2).await;
        let g = Generator::load(&s.model, 1, Some(64), |_, _| {}).unwrap();
        let prompts = ["abc abc", "hello world, once more"];
        let want: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| {
                let ids = g.encode(p).unwrap();
                let opts = GenerateOptions {
                    max_tokens: TOKENS,
                    ..Default::default()
                };
                g.generate_tokens(&ids, &opts, |_| true).unwrap().tokens
            })
            .collect();
        assert!(want.iter().all(|w| !w.is_empty()), "{arch}: {want:?}");
        for stages in [1, 2] {
            let p = s.deploy(stages, 2, 2).await;
            assert_eq!(p.placement().stages.len(), stages);
            for (prompt, want) in prompts.iter().zip(&want) {
                let got = answer(&p, p.encode(prompt).unwrap()).await.unwrap();
                assert_eq!(&got, want, "{arch}, {stages} stage(s): {prompt:?}");
            }
            p.shutdown().await;
        }
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_checked_once_and_admitted_at_one_point() {
    let s = Setup::new("qwen2", 1).await;
    let p = s.deploy(1, 1, 1).await;
    let opts = greedy(4);
    // The one validation.
    assert!(matches!(
        p.check(0, 0, &opts),
        Err(PipelineError::EmptyPrompt)
    ));
    assert!(matches!(
        p.check(64, 0, &opts),
        Err(PipelineError::PromptTooLong {
            prompt: 64,
            reserved: 0,
            ctx: 64
        })
    ));
    let e = p.check(60, 5, &opts).unwrap_err();
    assert!(
        matches!(e, PipelineError::PromptTooLong { reserved: 5, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("5 more were asked for"), "{e}");
    assert!(p.check(63, 0, &opts).is_ok() && p.check(60, 4, &opts).is_ok());
    assert!(matches!(
        p.generate(Vec::new(), &opts, &mpsc::channel(1).0).await,
        Err(PipelineError::EmptyPrompt)
    ));
    // The one admission point: one slot, one queued, then refused.
    assert_eq!(p.capacity(), 2);
    let running = p.try_admit().expect("a free slot").await;
    let queued = p.try_admit().expect("a place in the queue");
    assert_eq!(p.admitted(), 2);
    assert!(matches!(
        p.try_admit().map(|_| ()),
        Err(PipelineError::Overloaded { .. })
    ));
    // The gateway's backend reports the same refusals as OpenAI errors.
    let backend = PipelineBackend::new(p.clone(), 8);
    assert_eq!(backend.capacity(), Some(2));
    let request = |max_tokens| GenerationRequest {
        max_tokens: Some(max_tokens),
        ..GenerationRequest::new("t", PromptInput::Text("abc".into()))
    };
    assert!(matches!(
        backend.submit(request(4)),
        Err(SubmitError::Overloaded { .. })
    ));
    drop(running);
    let slot = queued.await;
    drop(slot);
    assert_eq!(p.admitted(), 0);
    assert!(matches!(
        backend.submit(request(100)),
        Err(SubmitError::PromptTooLong {
            requested_tokens: 100,
            max_context: 64,
            ..
        })
    ));
    // Nothing was lost: the pipeline still answers.
    let prompt = p.encode("abc").unwrap();
    assert!(answer(&p, prompt).await.is_ok());
    p.shutdown().await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_stage_node_is_replaced_and_the_answer_is_the_same() {
    let mut s = Setup::new("gemma3", 3).await;
    let opts = DeployOptions {
        stages: Some(3),
        ctx: 64,
        threads: 1,
        progress: false,
        ..DeployOptions::default()
    };
    let svc = Service::start(s.nodes[0].clone(), s.model.clone(), opts)
        .await
        .expect("first deploy");
    let first = svc.current().expect("serving");
    let prompt = first.encode("abc abc").unwrap();
    let want = answer(&first, prompt.clone()).await.unwrap();
    let dead = s.nodes.pop().expect("a third node");
    let dead_id = crate::pipeline::head::place_id(&dead.node_id());
    dead.shutdown().await;
    assert!(
        svc.wait_generation(2, std::time::Duration::from_secs(60))
            .await,
        "redeployed on the survivors"
    );
    let second = svc.current().expect("serving again");
    assert!(
        second
            .placement()
            .stages
            .iter()
            .all(|st| st.node != dead_id)
    );
    let (tx, mut rx) = mpsc::channel(64);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let got = svc
        .generate(None, prompt, &greedy(TOKENS), &tx)
        .await
        .unwrap();
    drop(tx);
    drain.await.unwrap();
    assert_eq!(
        got.tokens, want,
        "the same greedy answer after the failover"
    );
    svc.shutdown().await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_claiming_more_than_its_board_offers_is_refused() {
    use crate::pipeline::protocol::StageArgs;
    use crate::pipeline::stage::{StageActor, content_hash};
    use edgeray_model::arch::StageSpec;
    use edgeray_model::gguf::GgufFile;
    use edgeray_model::shard::build_stage_shard;
    use edgeray_runtime::actor::{ActorId, SpawnOptions};

    let s = Setup::new("qwen2", 1).await;
    // A one-stage deployment leaves the whole model's shard in the node's cache.
    let p = s.deploy(1, 1, 1).await;
    let file = GgufFile::open(&s.model).unwrap();
    let hash = content_hash(&build_stage_shard(&file, &StageSpec::full(4)).unwrap());
    let node = s.nodes[0].node_id();
    let args = |ctx: usize, max_sequences: usize| StageArgs {
        shard: hash.clone(),
        layers: 0..4,
        n_layers: 4,
        index: 0,
        ctx,
        threads: 1,
        max_sequences,
        next: None,
        sink: ActorId { node, local: 1 },
        upstream: None,
        dtype: Default::default(),
        label: "a claim".into(),
        tp: None,
    };
    let spawn = |a: StageArgs| {
        let c = s.nodes[0].clone();
        async move {
            c.spawn::<StageActor>(a, SpawnOptions::new().on(node))
                .await
                .map(|r| r.id())
                .map_err(|e| e.to_string())
        }
    };
    // The model holds 256 positions.
    let e = spawn(args(1 << 20, 1)).await.unwrap_err();
    assert!(e.contains("stage context of 1048576 positions"), "{e}");
    // Full-context KV caches for a million sequences: far beyond any board's budget.
    let e = spawn(args(256, 1 << 30)).await.unwrap_err();
    assert!(e.contains("this board offers"), "{e}");
    // A claim the board can give is taken.
    let ok = spawn(args(64, 2)).await.expect("a fitting claim");
    assert_eq!(ok.node, node);
    p.shutdown().await;
    s.shutdown().await;
}

/// Continuous batching is exact: random mixes of sequences — prompts long enough to be prefilled
/// in chunks next to the others' decode steps, different answer lengths (so sequences leave
/// while others run), joining at random moments — give each sequence exactly the tokens it
/// gets alone on one node, over one stage and over two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_mix_of_joining_and_leaving_sequences_gets_each_its_solo_tokens() {
    use rand::{Rng, SeedableRng, rngs::StdRng};
    const CTX: usize = 256;
    let s = Setup::new("qwen2", 2).await;
    let g = Generator::load(&s.model, 1, Some(CTX), |_, _| {}).unwrap();
    let words = [
        "abc", "hello", "world", "edge", "ray", "once", "more", "x", "42",
    ];
    for stages in [1, 2] {
        let p = s.deploy_ctx(stages, 4, 16, CTX).await;
        for round in 0..3u64 {
            let mut rng = StdRng::seed_from_u64(1000 * stages as u64 + round);
            // (prompt, answer length, join delay in ms)
            let mix: Vec<(Vec<u32>, usize, u64)> = (0..5)
                .map(|_| {
                    let n_words = if rng.random_bool(0.4) {
                        rng.random_range(12..30)
                    } else {
                        rng.random_range(1..4)
                    };
                    let text: Vec<&str> = (0..n_words)
                        .map(|_| words[rng.random_range(0..words.len())])
                        .collect();
                    let ids = g.encode(&text.join(" ")).unwrap();
                    (ids, rng.random_range(1..16), rng.random_range(0..40))
                })
                .collect();
            let want: Vec<Vec<u32>> = mix
                .iter()
                .map(|(ids, n, _)| {
                    let opts = GenerateOptions {
                        max_tokens: *n,
                        ..Default::default()
                    };
                    g.generate_tokens(ids, &opts, |_| true).unwrap().tokens
                })
                .collect();
            let tasks: Vec<_> = mix
                .iter()
                .cloned()
                .map(|(ids, n, delay)| {
                    let p = p.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                        let (tx, mut rx) = mpsc::channel(64);
                        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
                        let r = p.generate(ids, &greedy(n), &tx).await;
                        drop(tx);
                        drain.await.unwrap();
                        r.map(|s| s.tokens)
                    })
                })
                .collect();
            for (i, (t, want)) in tasks.into_iter().zip(&want).enumerate() {
                let got = t.await.unwrap().unwrap();
                assert_eq!(
                    &got,
                    want,
                    "{stages} stage(s), round {round}, sequence {i} (prompt of {} tokens)",
                    mix[i].0.len()
                );
            }
        }
        // The mixes really shared stage runs.
        for st in p.stage_stats().await {
            let st = st.unwrap();
            assert!(
                st.max_batch >= 2,
                "stage {}: runs of one sequence only",
                st.index
            );
        }
        p.shutdown().await;
    }
    s.shutdown().await;
}

/// A member of the cluster that is neither a pipeline's coordinator nor one of its stage
/// nodes tries to stop its stages, feed them work, read their counters, plant a stage of its
/// own on the pipeline's sink and write tokens into the sink: every attempt is refused (and
/// counted), and the pipeline answers as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_member_cannot_drive_or_stop_another_pipeline() {
    use crate::pipeline::protocol::{Forward, SinkMsg, StageArgs, StageMsg, StageReply};
    use crate::pipeline::stage::StageActor;
    use edgeray_runtime::actor::AskError;
    use edgeray_runtime::cluster::SpawnOptions;
    use std::time::Duration;
    const T: Duration = Duration::from_secs(10);

    let s = Setup::new("qwen2", 4).await;
    let p = s.deploy(2, 1, 1).await;
    let prompt = p.encode("hello world").unwrap();
    let before = answer(&p, prompt.clone()).await.unwrap();
    let stages = p.stage_ids();
    let used: Vec<_> = stages.iter().map(|id| id.node).collect();
    let attacker = s.nodes[1..]
        .iter()
        .find(|n| !used.contains(&n.node_id()))
        .expect("4 nodes, 2 stages: one node is left")
        .clone();

    for (k, &id) in stages.iter().enumerate() {
        let stage = attacker.actor_ref::<StageActor>(id);
        let forged = Forward {
            seq: 1,
            pos: 0,
            n: 1,
            tokens: vec![1],
            dtype: p.wire_dtype(),
            start: None,
            sample: true,
            sent_at_us: 0,
            hops: Vec::new(),
        };
        for msg in [
            StageMsg::Forward(forged),
            StageMsg::Release { seq: 1 },
            StageMsg::Stats,
        ] {
            match stage.ask(msg, T).await {
                Err(AskError::Remote(e)) => assert!(e.contains("refused"), "stage {k}: {e}"),
                other => panic!("stage {k} took a foreign message: {other:?}"),
            }
        }
        // The runtime refuses a stop from a node that did not spawn the stage.
        stage.stop().await;
        let host = s.nodes.iter().find(|n| n.node_id() == id.node).unwrap();
        assert!(host.refused_stops() >= 1, "stage {k}");
        // Its coordinator still reads its counters, and sees the refusals.
        let own = p.cluster().actor_ref::<StageActor>(id);
        match own.ask(StageMsg::Stats, T).await.unwrap().msg {
            StageReply::Stats(st) => assert_eq!(st.refused, 3, "stage {k}"),
            other => panic!("{other:?}"),
        }
    }
    // A stage planted by the attacker on the pipeline's sink is refused at creation.
    let planted = attacker
        .spawn::<StageActor>(
            StageArgs {
                shard: "0".repeat(64),
                layers: 0..1,
                n_layers: 4,
                index: 1,
                ctx: 16,
                threads: 1,
                max_sequences: 1,
                next: None,
                sink: p.sink_id(),
                upstream: Some(attacker.node_id()),
                dtype: p.wire_dtype(),
                label: "planted".into(),
                tp: None,
            },
            SpawnOptions::new().on(used[0]),
        )
        .await;
    match planted {
        Err(e) => assert!(e.to_string().contains("deployed by its coordinator"), "{e}"),
        Ok(r) => panic!("a foreign node planted stage {r:?}"),
    }
    // Tokens written straight into the sink are refused and counted.
    let sink = attacker.actor_ref::<crate::pipeline::SinkActor>(p.sink_id());
    for seq in [0, 1, u64::MAX] {
        let token = SinkMsg::Token {
            seq,
            pos: 2,
            token: 7,
            top2_gap: 1.0,
            logprobs: None,
            hops: Vec::new(),
        };
        assert!(matches!(sink.ask(token, T).await, Err(AskError::Remote(_))));
    }
    let failed = SinkMsg::Failed {
        seq: 1,
        stage: 0,
        error: "forged".into(),
    };
    assert!(matches!(
        sink.ask(failed, T).await,
        Err(AskError::Remote(_))
    ));
    assert_eq!(p.sink_refusals(), 4);

    // Squatting the scheduler's name: another kind under it on the head, or the attacker's own
    // scheduler registered cluster-wide, is refused.
    use crate::pipeline::head::{SCHEDULER_NAME, SchedulerActor};
    use crate::pipeline::stage::{WeightsActor, WeightsMsg, WeightsReply};
    use edgeray_runtime::actor::{NameError, SpawnError};
    let head = attacker.name_head();
    match attacker
        .spawn::<WeightsActor>((), SpawnOptions::new().on(head).name(SCHEDULER_NAME))
        .await
    {
        Err(SpawnError::NameReserved { .. }) => {}
        other => panic!("squatted the scheduler's name on the head: {other:?}"),
    }
    let own = attacker
        .spawn::<SchedulerActor>((), SpawnOptions::new().on(attacker.node_id()))
        .await
        .unwrap();
    assert!(matches!(
        attacker.register_global(SCHEDULER_NAME, &own).await,
        Err(NameError::Reserved(_))
    ));
    // An offer far beyond a stage node's cache budget is refused before a byte is written.
    let receiver = attacker
        .spawn::<WeightsActor>((), SpawnOptions::new().on(used[0]))
        .await
        .unwrap();
    let offer = WeightsMsg::Offer {
        hash: "ab".repeat(32),
        len: 1 << 50,
        chunk: 1 << 20,
    };
    match receiver.ask(offer, T).await.unwrap().msg {
        WeightsReply::NoRoom(why) => assert!(!why.is_empty()),
        other => panic!("a 1 PiB offer was taken: {other:?}"),
    }
    receiver.stop().await;

    // The pipeline answers exactly as before, and a new deployment (placed by the head's
    // scheduler, found by its name) too.
    assert_eq!(answer(&p, prompt.clone()).await.unwrap(), before);
    p.shutdown().await;
    let p = s.deploy(2, 1, 1).await;
    assert_eq!(answer(&p, prompt).await.unwrap(), before);
    p.shutdown().await;
    s.shutdown().await;
}

/// A custom policy for the registry test: the throughput policy on every node but `avoid`.
struct Avoid {
    name: String,
    avoid: crate::placement::MemberId,
}

impl Avoid {
    fn view(&self, cluster: &crate::placement::ClusterView) -> crate::placement::ClusterView {
        let mut c = cluster.clone();
        c.nodes.retain(|n| n.id != self.avoid);
        c
    }
}

impl crate::placement::PlacementPolicy for Avoid {
    fn name(&self) -> &str {
        &self.name
    }

    fn place(
        &self,
        model: &crate::placement::ModelProfile,
        cluster: &crate::placement::ClusterView,
    ) -> Result<crate::placement::Placement, crate::placement::Unplaceable> {
        let mut p = crate::placement::ThroughputPolicy.place(model, &self.view(cluster))?;
        p.policy = self.name.clone();
        Ok(p)
    }

    fn candidates(
        &self,
        model: &crate::placement::ModelProfile,
        cluster: &crate::placement::ClusterView,
    ) -> Vec<crate::placement::Candidate> {
        let mut all = crate::placement::ThroughputPolicy.candidates(model, &self.view(cluster));
        for c in &mut all {
            if let crate::placement::CandidateOutcome::Placed(p) = &mut c.outcome {
                p.policy = self.name.clone();
            }
        }
        all
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_custom_policy_places_a_live_deployment() {
    use crate::pipeline::head::place_id;
    use crate::placement::{register_policy, unregister_policy};
    let s = Setup::new("qwen2", 2).await;
    let g = Generator::load(&s.model, 1, Some(64), |_, _| {}).unwrap();
    let prompt = "abc abc";
    let opts = GenerateOptions {
        max_tokens: TOKENS,
        ..Default::default()
    };
    let want = g
        .generate_tokens(&g.encode(prompt).unwrap(), &opts, |_| true)
        .unwrap()
        .tokens;
    let ids: Vec<_> = s.nodes.iter().map(|n| place_id(&n.node_id())).collect();
    let name = "test-avoid-one-node";
    // Whichever node the built-in policy would pick, one of the two runs goes against it.
    for (avoid, want_node) in [(0, 1), (1, 0)] {
        register_policy(std::sync::Arc::new(Avoid {
            name: name.into(),
            avoid: ids[avoid].clone(),
        }))
        .unwrap();
        let deploy_opts = DeployOptions {
            policy: name.into(),
            stages: Some(1),
            ctx: 64,
            threads: 1,
            max_sequences: 1,
            max_queued: 1,
            progress: false,
            ..DeployOptions::default()
        };
        let p = deploy(&s.nodes[0], &s.model, &deploy_opts)
            .await
            .unwrap_or_else(|e| panic!("deploy with the custom policy: {e}"));
        assert_eq!(p.placement().policy, name);
        assert_eq!(p.placement().stages[0].node, ids[want_node]);
        let got = answer(&p, p.encode(prompt).unwrap()).await.unwrap();
        assert_eq!(got, want);
        p.shutdown().await;
    }
    assert!(unregister_policy(name));
    let opts = DeployOptions {
        policy: name.into(),
        ctx: 64,
        threads: 1,
        progress: false,
        ..DeployOptions::default()
    };
    let err = deploy(&s.nodes[0], &s.model, &opts).await.err().unwrap();
    assert!(err.to_string().contains(name), "{err}");
    s.shutdown().await;
}
