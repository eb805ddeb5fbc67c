//! The actor-kind registry: kind name → constructor from encoded arguments, so any node can
//! spawn a kind another node asks for. Filled before the node starts.

use std::collections::BTreeMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use super::error::SpawnError;
use super::kind::RemoteActor;
use super::local::{LocalActors, LocalSpawn, OnStop};

/// Future returned by an erased spawn.
pub(crate) type SpawnFuture<'a> =
    Pin<Box<dyn Future<Output = Result<u64, SpawnError>> + Send + 'a>>;

/// A registered kind with its type erased.
pub(crate) trait KindEntry: Send + Sync + 'static {
    /// Decodes the arguments and starts a local actor; returns its local id.
    fn spawn_encoded<'a>(
        &'a self,
        locals: &'a LocalActors,
        args: &'a [u8],
        opts: LocalSpawn,
        on_stop: Option<OnStop>,
    ) -> SpawnFuture<'a>;
}

struct Entry<A>(PhantomData<fn() -> A>);

impl<A: RemoteActor> KindEntry for Entry<A> {
    fn spawn_encoded<'a>(
        &'a self,
        locals: &'a LocalActors,
        args: &'a [u8],
        opts: LocalSpawn,
        on_stop: Option<OnStop>,
    ) -> SpawnFuture<'a> {
        Box::pin(async move {
            let args: A::Args = match crate::codec::decode(args) {
                Ok(a) => a,
                Err(e) => {
                    if let Some(f) = on_stop {
                        f(&super::StopReason::NotFound);
                    }
                    return Err(SpawnError::Codec(e.to_string()));
                }
            };
            locals
                .spawn::<A>(args, opts, on_stop)
                .await
                .map(|a| a.local_id())
        })
    }
}

/// Actor kinds this node can create, by name.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn KindEntry>>,
    /// Names only one kind may hold (see [`Registry::reserve_name`]).
    reserved: BTreeMap<String, &'static str>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.kinds.keys()).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Registers kind `A` (replacing an earlier registration of the same name).
    pub fn register<A: RemoteActor>(&mut self) -> &mut Self {
        self.kinds
            .insert(A::kind(), Arc::new(Entry::<A>(PhantomData)));
        self
    }

    /// Builder form of [`Registry::register`].
    pub fn with<A: RemoteActor>(mut self) -> Self {
        self.register::<A>();
        self
    }

    /// Whether a kind is registered.
    pub fn contains(&self, kind: &str) -> bool {
        self.kinds.contains_key(kind)
    }

    /// The registered kind names.
    pub fn kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds.keys().copied()
    }

    /// Reserves `name` for kind `A`: on a node with this registry, only an actor of kind `A`
    /// may be spawned under that node-local name, and the cluster-wide name (see
    /// [`crate::actor::Cluster::register_global`]) is only given to an actor of kind `A` on
    /// the name head itself, and only looked up there. For a role that belongs to the head
    /// (such as a scheduler), so that no other member can squat its name. Every node should
    /// use the same reservations (the checks run on the node that spawns, and on the head).
    pub fn reserve_name<A: RemoteActor>(&mut self, name: impl Into<String>) -> &mut Self {
        self.reserved.insert(name.into(), A::kind());
        self
    }

    /// Builder form of [`Registry::reserve_name`].
    pub fn with_reserved_name<A: RemoteActor>(mut self, name: impl Into<String>) -> Self {
        self.reserve_name::<A>(name);
        self
    }

    /// The kind `name` is reserved for, if it is reserved.
    pub fn reserved_for(&self, name: &str) -> Option<&'static str> {
        self.reserved.get(name).copied()
    }

    /// Whether an actor of `kind` may hold the name `name` (`Err` names the reserving kind).
    pub(crate) fn check_name(&self, name: &str, kind: &str) -> Result<(), SpawnError> {
        match self.reserved_for(name) {
            Some(k) if k != kind => Err(SpawnError::NameReserved {
                name: name.to_string(),
                kind: k.to_string(),
            }),
            _ => Ok(()),
        }
    }

    pub(crate) fn get(&self, kind: &str) -> Option<Arc<dyn KindEntry>> {
        self.kinds.get(kind).cloned()
    }
}
