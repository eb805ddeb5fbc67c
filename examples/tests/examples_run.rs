//! Runs the examples to completion (each example's `run` is what its `main`
//! calls), so `cargo test` fails when one of them breaks.

#[path = "../examples/typed_ping_pong.rs"]
mod typed_ping_pong;

#[path = "../examples/supervision.rs"]
mod supervision;

#[path = "../examples/group_broadcast.rs"]
mod group_broadcast;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_ping_pong_runs_to_completion() {
    typed_ping_pong::run().await.expect("typed_ping_pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervision_runs_to_completion() {
    supervision::run().await.expect("supervision");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_broadcast_runs_to_completion() {
    group_broadcast::run().await.expect("group_broadcast");
}

#[path = "../examples/custom_policy.rs"]
mod custom_policy;

#[path = "../examples/pipeline_from_code.rs"]
mod pipeline_from_code;

#[test]
fn custom_policy_runs_to_completion() {
    let p = custom_policy::run().expect("custom_policy");
    assert_eq!(p.policy, "quiet-boards");
}

/// On a random-weight model (the example's own default is a real one): the deployment, the
/// two stages and the streamed answer, without a model file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_from_code_runs_to_completion() {
    let path =
        std::env::temp_dir().join(format!("edgeray-example-model-{}.gguf", std::process::id()));
    std::fs::write(
        &path,
        edgeray_model::test_models::RandomModel::small("qwen2", 5).to_bytes(),
    )
    .unwrap();
    let r = pipeline_from_code::run(&path, "abc abc", 8).await;
    let _ = std::fs::remove_file(&path);
    r.expect("pipeline_from_code");
}

#[path = "../examples/ping_pong.rs"]
mod ping_pong;

#[path = "../examples/resource_actor.rs"]
mod resource_actor;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_pong_runs_to_completion() {
    ping_pong::run_in_process(
        "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e",
        50,
    )
    .await
    .expect("ping_pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_actor_runs_to_completion() {
    resource_actor::run().await.expect("resource_actor");
}
