//! edgeray's cluster runtime: node identity and mutual-TLS QUIC between nodes ([`security`],
//! [`transport`]), discovery and membership ([`discovery`], [`membership`], [`node`]), and an
//! actor system on top ([`actor`], entry point [`cluster::Cluster`]). It knows nothing of ML.
//!
//! Actors are addressed through [`actor::ActorRef`]s that work the same for local and remote
//! actors; mailboxes are bounded and push back across the network; every `ask` has a timeout;
//! actors can be watched, supervised ([`cluster::Cluster::supervise`]) and placed by resource
//! needs. [`actor::TestCluster`] starts several connected nodes in one process. What is and is
//! not guaranteed is in `docs/runtime-semantics.md`.
//!
//! A typed actor on another node, in one process:
//!
//! ```
//! use std::time::Duration;
//! use edgeray_runtime::actor::{
//!     ActorCtx, ActorError, Envelope, Handler, Message, Messages, TestCluster, TypedActor,
//! };
//! use edgeray_runtime::cluster::SpawnOptions;
//! use serde::{Deserialize, Serialize};
//!
//! struct Greeter;
//!
//! #[derive(Serialize, Deserialize)]
//! struct Greet(String);
//! impl Message for Greet {
//!     type Reply = String;
//!     const NAME: &'static str = "doc.greeter.greet";
//! }
//!
//! impl TypedActor for Greeter {
//!     type Args = ();
//!     fn kind() -> &'static str { "doc.greeter" }
//!     fn create(_: (), _: ActorCtx) -> Result<Self, ActorError> { Ok(Greeter) }
//!     fn messages(m: &mut Messages<'_, Self>) { m.on::<Greet>(); }
//! }
//!
//! impl Handler<Greet> for Greeter {
//!     async fn handle(&mut self, m: Envelope<Greet>) -> Result<Envelope<String>, ActorError> {
//!         Ok(format!("hello, {}", m.msg.0).into())
//!     }
//! }
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let nodes = TestCluster::start(2).register::<Greeter>().await?;
//! let greeter = nodes.node(0).spawn::<Greeter>((), SpawnOptions::new().on(nodes.node_id(1))).await?;
//! let hello = greeter.call(Greet("edge".into()), Duration::from_secs(5)).await?;
//! assert_eq!(hello, "hello, edge");
//! nodes.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]
pub mod actor;
/// The actor system's entry point ([`actor::cluster`]), at the crate root for short paths.
pub use actor::cluster;
pub mod codec;
pub mod config;
pub mod discovery;
pub mod identity;
pub mod membership;
pub mod node;
pub mod protocol;
pub mod resources;
pub mod security;
pub mod state_lock;
pub mod transport;
pub mod wire;
