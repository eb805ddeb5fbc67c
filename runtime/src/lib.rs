//! edgeray cluster runtime.
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
