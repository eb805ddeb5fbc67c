//! Per-sequence key/value cache of one stage (a contiguous range of layers).
//!
//! Keys and values are stored as f32 tensors `[kv_heads, capacity, head_dim]` whose values have
//! been rounded through f16, as llama.cpp's default F16 KV cache does. Capacity grows by doubling
//! up to the configured context length; appends write in place (burn's `slice_assign` on a
//! uniquely owned tensor). Sliding-window layers keep all positions; the window is applied by the
//! attention mask.

use burn::tensor::{Device, Tensor};

use super::error::ArchError;

/// Smallest capacity (positions) allocated for a layer.
const MIN_CAPACITY: usize = 64;

#[derive(Debug, Clone, Default)]
struct LayerKv {
    k: Option<Tensor<3>>,
    v: Option<Tensor<3>>,
}

/// The KV cache of one sequence for the layers of one stage.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    len: usize,
    max_ctx: usize,
}

impl KvCache {
    /// An empty cache for `n_layers` layers holding at most `max_ctx` positions.
    pub fn new(n_layers: usize, max_ctx: usize) -> Self {
        Self {
            layers: vec![LayerKv::default(); n_layers],
            len: 0,
            max_ctx,
        }
    }

    /// Number of positions already processed (the position of the next token).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position has been processed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The context length (maximum number of positions).
    pub fn max_ctx(&self) -> usize {
        self.max_ctx
    }

    /// Number of layers this cache covers.
    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    /// Forget every position (the allocation is kept).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Forget positions from `len` on (e.g. to re-run a suffix). No-op if `len >= self.len()`.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Bytes held by the cache tensors (allocated capacity, f32).
    pub fn allocated_bytes(&self) -> usize {
        self.layers
            .iter()
            .flat_map(|l| [&l.k, &l.v])
            .flatten()
            .map(|t| t.shape().num_elements() * 4)
            .sum()
    }

    /// Checks that `n` more positions fit.
    pub(crate) fn check_room(&self, n: usize) -> Result<(), ArchError> {
        if self.len + n > self.max_ctx {
            return Err(ArchError::ContextFull {
                ctx: self.max_ctx,
                len: self.len,
                adding: n,
            });
        }
        Ok(())
    }

    /// Marks `n` more positions as processed (after every layer appended them).
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Writes `k`, `v` (`[kv_heads, n, head_dim]`, already f16-rounded) for the positions
    /// `len..len+n` of layer `layer` (index within the stage) and returns the whole key and value
    /// buffers (`[kv_heads, capacity, head_dim]`, positions `0..len+n` valid).
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: Tensor<3>,
        v: Tensor<3>,
    ) -> (Tensor<3>, Tensor<3>) {
        let [kvh, n, hd] = k.dims();
        let start = self.len;
        let end = start + n;
        let max_ctx = self.max_ctx;
        let slot = &mut self.layers[layer];
        let device = k.device();
        let kk = store(slot.k.take(), k, start, end, max_ctx, [kvh, hd], &device);
        let vv = store(slot.v.take(), v, start, end, max_ctx, [kvh, hd], &device);
        slot.k = Some(kk.clone());
        slot.v = Some(vv.clone());
        (kk, vv)
    }
}

/// Grows `buf` if needed and writes `new` at positions `start..end`.
fn store(
    buf: Option<Tensor<3>>,
    new: Tensor<3>,
    start: usize,
    end: usize,
    max_ctx: usize,
    [kvh, hd]: [usize; 2],
    device: &Device,
) -> Tensor<3> {
    let cap = buf.as_ref().map(|t| t.dims()[1]).unwrap_or(0);
    let buf = if end > cap {
        let mut new_cap = cap.max(MIN_CAPACITY);
        while new_cap < end {
            new_cap *= 2;
        }
        let new_cap = new_cap.min(max_ctx.max(end));
        let fresh = Tensor::<3>::zeros([kvh, new_cap, hd], device);
        match buf {
            Some(old) if start > 0 => {
                fresh.slice_assign([0..kvh, 0..start, 0..hd], old.narrow(1, 0, start))
            }
            _ => fresh,
        }
    } else {
        buf.expect("capacity > 0 implies a buffer")
    };
    buf.slice_assign([0..kvh, start..end, 0..hd], new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn appends_grow_and_views_cover_the_prefix() {
        let device = Device::flex();
        let mut c = KvCache::new(1, 200);
        let mut all = Vec::new();
        for step in 0..3 {
            let n = if step == 0 { 70 } else { 1 };
            let vals: Vec<f32> = (0..n * 2).map(|i| (all.len() + i) as f32).collect();
            all.extend_from_slice(&vals);
            let t = Tensor::<3>::from_data(TensorData::new(vals, [1, n, 2]), &device);
            c.check_room(n).unwrap();
            let (k, v) = c.append(0, t.clone(), t);
            c.advance(n);
            let k = k.narrow(1, 0, c.len());
            let got: Vec<f32> = k.into_data().try_into_vec().unwrap();
            assert_eq!(got, all);
            drop(v);
        }
        assert_eq!(c.len(), 72);
        assert!(c.check_room(128).is_ok());
        assert!(matches!(
            c.check_room(129),
            Err(ArchError::ContextFull { .. })
        ));
    }
}
