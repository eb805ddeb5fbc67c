//! Runnable examples of edgeray's library API live in `examples/examples/`; run one with
//! `cargo run -p edgeray-examples --example NAME`.
