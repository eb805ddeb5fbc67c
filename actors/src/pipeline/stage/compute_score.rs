//! The compute score a node reports: how fast it streams quantized weights through the kernels
//! a stage uses (a short Q4_K matrix-vector micro-benchmark on the node's kernel threads).

use edgeray_model::quant::{GgmlType, KernelPool, QuantMatrix, matvec};
use std::time::{Duration, Instant};

/// Weight megabytes per second of Q4_K matrix-vector products on `threads` kernel threads,
/// measured for about `budget`. `None` if the kernels cannot run here.
pub fn measure_compute_score(threads: usize, budget: Duration) -> Option<f64> {
    let (rows, cols) = (2048usize, 2048usize);
    let row_bytes = GgmlType::Q4_K.row_bytes(cols)?;
    let block = GgmlType::Q4_K.type_size();
    let mut data: Vec<u8> = (0..rows * row_bytes)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    // Valid, small f16 super-block scales (d, dmin) at the start of every block.
    let scale = half::f16::from_f32(0.01).to_le_bytes();
    for b in data.chunks_exact_mut(block) {
        b[0..2].copy_from_slice(&scale);
        b[2..4].copy_from_slice(&scale);
    }
    let w = QuantMatrix::new(GgmlType::Q4_K, rows, cols, data).ok()?;
    let pool = KernelPool::new(threads.max(1)).ok()?;
    let x: Vec<f32> = (0..cols).map(|i| ((i % 17) as f32 - 8.0) * 0.1).collect();
    let mut y = vec![0f32; rows];
    matvec(&w, &x, &mut y, &pool).ok()?; // warm-up
    let start = Instant::now();
    let mut runs = 0u64;
    while start.elapsed() < budget || runs < 3 {
        matvec(&w, &x, &mut y, &pool).ok()?;
        runs += 1;
    }
    let bytes = (rows * row_bytes) as f64 * runs as f64;
    Some(bytes / start.elapsed().as_secs_f64() / 1e6)
}

#[cfg(test)]
mod tests {
    #[test]
    fn score_is_positive_and_finite() {
        let s = super::measure_compute_score(1, std::time::Duration::from_millis(20)).unwrap();
        assert!(s.is_finite() && s > 1.0, "{s}");
    }
}
