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
        let opts = DeployOptions {
            stages: Some(stages),
            ctx: 64,
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
