//! [`LocalGroup`]: every member of a group in one process, run one after another, with the
//! all-gathers done in memory. The reference a networked driver must reproduce, and what the
//! exactness tests run.

use std::sync::Arc;

use burn::tensor::Device;

use super::error::TpError;
use super::member::MemberStage;
use super::run::{MemberRun, Partial, Step, SyncPoint, gather};
use super::shapes::plan_stage;
use super::slicing::{GroupPlan, SliceOptions};
use crate::arch::{KvCache, LogitsFor, StageInput, StageOutput, StageSpec};
use crate::gguf::GgufFile;
use crate::quant::KernelPool;

/// What one pass exchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Synchronisation points (all-gathers) of the pass, in order.
    pub points: Vec<SyncPoint>,
    /// Per member: f32 bytes it sent (its piece to each of the other members).
    pub bytes_sent: Vec<usize>,
}

/// A tensor-parallel group whose members all live in this process.
#[derive(Debug)]
pub struct LocalGroup {
    /// The slicing plan.
    pub plan: GroupPlan,
    /// The members, in order.
    pub members: Vec<MemberStage>,
}

impl LocalGroup {
    /// Plans stage `spec` of `file` for members of relative `speeds` and loads every member's
    /// slice (all on `device`, sharing `pool`).
    pub fn load(
        file: &GgufFile,
        spec: &StageSpec,
        speeds: &[f64],
        options: SliceOptions,
        device: &Device,
        pool: &Arc<KernelPool>,
    ) -> Result<Self, TpError> {
        let plan = plan_stage(file, spec, speeds, options)?;
        let members = (0..plan.members())
            .map(|m| MemberStage::load(file, spec, &plan, m, device, pool))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { plan, members })
    }

    /// One fresh KV cache per member (each holding only that member's KV heads).
    pub fn new_caches(&self, max_ctx: usize) -> Vec<KvCache> {
        self.members.iter().map(|m| m.new_cache(max_ctx)).collect()
    }

    /// [`LocalGroup::forward_with_stats`] without the statistics.
    pub fn forward(
        &self,
        input: StageInput,
        caches: &mut [KvCache],
        logits: LogitsFor,
    ) -> Result<StageOutput, TpError> {
        Ok(self.forward_with_stats(input, caches, logits)?.0)
    }

    /// Runs the group on a batch of positions like [`crate::arch::Stage::forward`]: each
    /// member computes up to a synchronisation point, the pieces are gathered, every member
    /// resumes with the gathered vector. Returns member 0's output (every member ends with
    /// the same one) and what was exchanged.
    pub fn forward_with_stats(
        &self,
        input: StageInput,
        caches: &mut [KvCache],
        logits: LogitsFor,
    ) -> Result<(StageOutput, SyncStats), TpError> {
        if caches.len() != self.members.len() {
            return Err(TpError::Protocol(format!(
                "{} caches for {} members",
                caches.len(),
                self.members.len()
            )));
        }
        let n = self.members.len();
        let mut stats = SyncStats {
            points: Vec::new(),
            bytes_sent: vec![0; n],
        };
        let mut runs = Vec::with_capacity(n);
        let mut steps = Vec::with_capacity(n);
        for (m, cache) in self.members.iter().zip(caches.iter_mut()) {
            let (run, step) = MemberRun::start(m, input.clone(), cache, logits)?;
            runs.push(run);
            steps.push(step);
        }
        loop {
            let mut parts: Vec<Partial> = Vec::with_capacity(n);
            let mut outputs = Vec::new();
            for s in steps.drain(..) {
                match s {
                    Step::Send(p) => parts.push(p),
                    Step::Done(o) => outputs.push(o),
                }
            }
            if !outputs.is_empty() {
                if outputs.len() != n {
                    return Err(TpError::Protocol(
                        "members finished at different points".into(),
                    ));
                }
                return Ok((outputs.swap_remove(0), stats));
            }
            for p in &parts {
                stats.bytes_sent[p.member] += p.f32_bytes() * (n - 1);
            }
            let g = gather(parts)?;
            stats.points.push(g.point);
            for run in runs.iter_mut() {
                steps.push(run.resume(g.clone())?);
            }
        }
    }

    /// Bytes of quantized weights each member holds.
    pub fn weight_bytes(&self) -> Vec<usize> {
        self.members.iter().map(MemberStage::weight_bytes).collect()
    }
}
