//! Runs the examples that need no model to completion (each example's `run` is what its `main`
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
