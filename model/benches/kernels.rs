//! Throughput of the quantized matvec/matmul kernels, in GB/s of weights streamed.
//! Shapes follow Qwen2.5-0.5B's FFN (d = 896, ffn = 4864): 4864×896 for Q8_0/Q5_0/Q4_0
//! (gate/up-like) and 896×4864 for the k-quants (down-like, rows of 19 super-blocks).
//!
//! The machine's memory bandwidth is measured in the same run (`membw/*`: a STREAM-style triad
//! and a read-only sweep over arrays much larger than the caches), so kernel GB/s can be read as
//! a fraction of what the memory delivers (the matvec kernels only read their weights: compare
//! them with `membw/read`).
//!
//! `cargo bench -p edgeray-model --bench kernels` (only the bandwidth: `... -- membw`)

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use edgeray_model::quant::{
    Activations, GgmlType, KernelPool, QuantMatrix, available_backends, matmul_with_backend,
};
use half::f16;

/// Deterministic pseudo-random row data with sane f16 scales.
fn matrix(ty: GgmlType, rows: usize, cols: usize) -> QuantMatrix {
    let n = ty.row_bytes(cols).unwrap() * rows;
    let mut s = 0x9E3779B97F4A7C15u64;
    let mut data: Vec<u8> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect();
    let scale = f16::from_f32(0.01).to_bits().to_le_bytes();
    for b in data.chunks_exact_mut(ty.type_size()) {
        match ty {
            GgmlType::Q6_K => b[208..210].copy_from_slice(&scale),
            GgmlType::Q4_K => {
                b[0..2].copy_from_slice(&scale);
                b[2..4].copy_from_slice(&scale);
            }
            _ => b[0..2].copy_from_slice(&scale),
        }
    }
    QuantMatrix::new(ty, rows, cols, data).unwrap()
}

fn bench(c: &mut Criterion) {
    let shapes = [
        (GgmlType::Q8_0, 4864, 896),
        (GgmlType::Q5_0, 4864, 896),
        (GgmlType::Q4_0, 4864, 896),
        (GgmlType::Q4_K, 896, 4864),
        (GgmlType::Q6_K, 896, 4864),
    ];
    let pools = [KernelPool::new(1).unwrap(), KernelPool::new(2).unwrap()];
    for (ty, rows, cols) in shapes {
        let w = matrix(ty, rows, cols);
        for n in [1usize, 16] {
            let mut g = c.benchmark_group(format!("{ty}_{rows}x{cols}_n{n}"));
            g.throughput(Throughput::Bytes((w.row_bytes() * rows) as u64));
            g.sample_size(20);
            let x: Vec<f32> = (0..n * cols)
                .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
                .collect();
            let acts = Activations::for_matrix(&w, &x, n).unwrap();
            let mut y = vec![0f32; n * rows];
            for backend in available_backends() {
                for pool in &pools {
                    let id = BenchmarkId::new(backend.name(), format!("{}t", pool.threads()));
                    g.bench_function(id, |b| {
                        b.iter(|| matmul_with_backend(&w, &acts, &mut y, pool, backend).unwrap())
                    });
                }
            }
            g.finish();
        }
    }
}

/// Gemma's tied output head (262144×640 Q8_0, 171 MiB): one matvec per generated token.
fn bench_real_head(c: &mut Criterion) {
    for (model, tensor, group) in [
        (
            "gemma-3-270m-q4_k_m.gguf",
            "token_embd.weight",
            "gemma_head_q8_0_262144x640_n1",
        ),
        (
            "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            "token_embd.weight",
            "qwen_embd_q5_0_151936x896_n1",
        ),
    ] {
        bench_real_matrix(c, model, tensor, group);
    }
    bench_real_layers(c);
}

/// qwen2.5's 48 FFN gate and up matrices (Q5_0, 4864×896, 144 MB in all), one one-token
/// matvec each per iteration: the kernel as a generated token meets it, a run of L3-sized
/// matrices none of which is still cached when its turn comes again.
fn bench_real_layers(c: &mut Criterion) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf");
    let Ok(file) = edgeray_model::gguf::GgufFile::open(&path) else {
        eprintln!("SKIP real-model bench: {} not found", path.display());
        return;
    };
    let ws: Vec<_> = (0..24)
        .flat_map(|l| ["ffn_gate", "ffn_up"].map(|m| format!("blk.{l}.{m}.weight")))
        .map(|name| file.matrix(&name).unwrap())
        .collect();
    let cols = ws[0].cols();
    let x: Vec<f32> = (0..cols)
        .map(|i| ((i * 31) % 200) as f32 / 100.0 - 1.0)
        .collect();
    let acts = Activations::for_matrix(&ws[0], &x, 1).unwrap();
    let mut y = vec![0f32; ws[0].rows()];
    let mut g = c.benchmark_group("qwen_ffn_gate_up_q5_0_48x4864x896_n1");
    g.throughput(Throughput::Bytes(
        ws.iter().map(|w| w.data().len() as u64).sum(),
    ));
    g.sample_size(10);
    let pools = [KernelPool::new(1).unwrap(), KernelPool::new(2).unwrap()];
    for backend in available_backends() {
        for pool in &pools {
            let id = BenchmarkId::new(backend.name(), format!("{}t", pool.threads()));
            g.bench_function(id, |b| {
                b.iter(|| {
                    for w in &ws {
                        matmul_with_backend(w, &acts, &mut y, pool, backend).unwrap();
                    }
                })
            });
        }
    }
    g.finish();
}

/// One real tensor far larger than the L3 cache, as a one-token matvec: the kernel as
/// generation meets it, bound by memory bandwidth.
fn bench_real_matrix(c: &mut Criterion, model: &str, tensor: &str, group: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models")
        .join(model);
    let Ok(file) = edgeray_model::gguf::GgufFile::open(&path) else {
        eprintln!("SKIP real-model bench: {} not found", path.display());
        return;
    };
    let w = file.matrix(tensor).unwrap();
    let x: Vec<f32> = (0..w.cols())
        .map(|i| ((i * 31) % 200) as f32 / 100.0 - 1.0)
        .collect();
    let acts = Activations::for_matrix(&w, &x, 1).unwrap();
    let mut y = vec![0f32; w.rows()];
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Bytes(w.data().len() as u64));
    g.sample_size(10);
    let pools = [KernelPool::new(1).unwrap(), KernelPool::new(2).unwrap()];
    for backend in available_backends() {
        for pool in &pools {
            let id = BenchmarkId::new(backend.name(), format!("{}t", pool.threads()));
            g.bench_function(id, |b| {
                b.iter(|| matmul_with_backend(&w, &acts, &mut y, pool, backend).unwrap())
            });
        }
    }
    g.finish();
}

/// Elements per array of the bandwidth sweeps: 3 × 64 MiB of f32, far beyond any L3 here.
const BW_LEN: usize = 16 << 20;

/// Memory bandwidth with 1 and 2 threads (threads split the arrays into contiguous halves):
/// `triad` is STREAM's `a[i] = b[i] + s * c[i]`, counted as STREAM counts it (3 × 4 bytes per
/// element: two reads and one write, write-allocate traffic not counted); `read` sums one array
/// (4 bytes per element), the access pattern of a matvec over its weights.
fn bench_membw(c: &mut Criterion) {
    let b: Vec<f32> = (0..BW_LEN).map(|i| (i % 1000) as f32).collect();
    let cc: Vec<f32> = (0..BW_LEN).map(|i| (i % 7) as f32).collect();
    let mut a = vec![0f32; BW_LEN];
    let words: Vec<u32> = (0..BW_LEN as u32).collect();
    let mut g = c.benchmark_group("membw");
    g.sample_size(10);
    for threads in [1usize, 2] {
        let per = BW_LEN.div_ceil(threads);
        g.throughput(Throughput::Bytes((3 * 4 * BW_LEN) as u64));
        g.bench_function(BenchmarkId::new("triad", format!("{threads}t")), |bch| {
            bch.iter(|| {
                std::thread::scope(|s| {
                    for ((ac, bc), ccc) in a.chunks_mut(per).zip(b.chunks(per)).zip(cc.chunks(per))
                    {
                        s.spawn(move || triad(ac, bc, ccc, 3.0));
                    }
                });
                std::hint::black_box(&mut a);
            })
        });
        g.throughput(Throughput::Bytes((4 * BW_LEN) as u64));
        g.bench_function(BenchmarkId::new("read", format!("{threads}t")), |bch| {
            bch.iter(|| {
                let total = std::thread::scope(|s| {
                    let hs: Vec<_> = words
                        .chunks(per)
                        .map(|w| s.spawn(move || read_sum(w)))
                        .collect();
                    hs.into_iter()
                        .fold(0u32, |acc, h| acc.wrapping_add(h.join().unwrap()))
                });
                std::hint::black_box(total)
            })
        });
    }
    g.finish();
}

/// `a[i] = b[i] + s * c[i]` (vectorised by the compiler; multiply and add stay separate).
fn triad(a: &mut [f32], b: &[f32], c: &[f32], s: f32) {
    for ((x, y), z) in a.iter_mut().zip(b).zip(c) {
        *x = y + s * z;
    }
}

/// Wrapping sum of all words (integer, so the compiler vectorises it freely).
fn read_sum(w: &[u32]) -> u32 {
    w.iter().fold(0u32, |acc, &v| acc.wrapping_add(v))
}

criterion_group!(benches, bench_membw, bench, bench_real_head);
criterion_main!(benches);
