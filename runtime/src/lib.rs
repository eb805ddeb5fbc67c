//! edgeray cluster runtime.
pub mod config;
pub mod codec;
pub mod identity;
pub mod protocol;
pub mod security;
pub mod wire;
pub mod membership;
pub mod resources;
pub mod transport;
pub mod discovery;
pub mod node;
pub mod actor;
pub mod cluster;
