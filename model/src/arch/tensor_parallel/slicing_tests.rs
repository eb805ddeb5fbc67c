//! Unit and property tests of the slicing plan.

use proptest::prelude::*;

use super::slicing::*;

fn qwen_shape() -> LayerShape {
    LayerShape {
        d_model: 896,
        n_head: 14,
        n_kv_head: 2,
        head_dim: 64,
        n_ff: 4864,
        attn_out_block: 32,
        ffn_block: 256,
    }
}

fn gemma_shape() -> LayerShape {
    LayerShape {
        d_model: 640,
        n_head: 4,
        n_kv_head: 1,
        head_dim: 256,
        n_ff: 2048,
        attn_out_block: 32,
        ffn_block: 32,
    }
}

/// Ranges are contiguous, in order, non-empty and cover `0..total`.
fn assert_cover(r: &[std::ops::Range<usize>], total: usize) {
    assert_eq!(r.first().unwrap().start, 0);
    assert_eq!(r.last().unwrap().end, total);
    for w in r.windows(2) {
        assert_eq!(w[0].end, w[1].start, "{r:?}");
    }
    assert!(r.iter().all(|x| !x.is_empty()), "{r:?}");
}

#[test]
fn even_split_of_qwen_ffn() {
    let r = split_rows(4864, 256, &[1.0, 1.0], "ffn rows").unwrap();
    // 19 units: 10 + 9 (tie broken towards the first member).
    assert_eq!(r, vec![0..2560, 2560..4864]);
    let r = split_rows(4864, 256, &[1.0; 3], "ffn rows").unwrap();
    assert_eq!(r, vec![0..1792, 1792..3328, 3328..4864]);
}

#[test]
fn remainder_rows_go_to_the_last_member() {
    // 100 rows in units of 32: 3 units + 4 rows.
    let r = split_rows(100, 32, &[1.0, 1.0, 1.0], "x").unwrap();
    assert_eq!(r, vec![0..32, 32..64, 64..100]);
    let r = split_rows(100, 32, &[1.0, 2.0], "x").unwrap();
    assert_eq!(r, vec![0..32, 32..100]);
}

#[test]
fn uneven_speeds_split_proportionally() {
    // A Pi 4 next to a Pi 5 (~1 : 2.2).
    let r = split_rows(896, 32, &[1.0, 2.2], "x").unwrap();
    // 28 units: ideal 8.75 / 19.25 -> 9 / 19.
    assert_eq!(r, vec![0..288, 288..896]);
    // A very slow member still gets one unit.
    let r = split_rows(256, 32, &[1000.0, 1.0], "x").unwrap();
    assert_eq!(r, vec![0..224, 224..256]);
}

#[test]
fn impossible_groups_are_errors() {
    assert_eq!(split_rows(64, 32, &[], "x"), Err(SliceError::NoMembers));
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            split_rows(64, 32, &[1.0, bad], "x"),
            Err(SliceError::BadSpeed { member: 1, .. })
        ));
    }
    assert_eq!(
        split_rows(64, 32, &[1.0; 3], "ffn rows"),
        Err(SliceError::TooManyMembers {
            what: "ffn rows",
            members: 3,
            units: 2,
            align: 32
        })
    );
    // gemma3-270m has 4 query heads: a group of 5 is refused with a clear message.
    let e = GroupPlan::new(&[gemma_shape()], None, &[1.0; 5], SliceOptions::default()).unwrap_err();
    assert!(matches!(
        e,
        SliceError::TooManyMembers {
            what: "query heads",
            members: 5,
            units: 4,
            ..
        }
    ));
    assert!(e.to_string().contains("query heads"), "{e}");
    let mut bad = qwen_shape();
    bad.n_kv_head = 3;
    assert!(matches!(
        GroupPlan::new(&[bad], None, &[1.0], SliceOptions::default()),
        Err(SliceError::BadShape(_))
    ));
    let opts = SliceOptions {
        row_align: 0,
        ..SliceOptions::default()
    };
    assert!(GroupPlan::new(&[qwen_shape()], None, &[1.0], opts).is_err());
}

#[test]
fn gemma_replicates_its_single_kv_head() {
    for n in 1..=4 {
        let p = GroupPlan::new(
            &[gemma_shape()],
            Some(262_144),
            &vec![1.0; n],
            SliceOptions::default(),
        )
        .unwrap();
        let l = &p.layers[0];
        assert_eq!(l.kv_holders, vec![n]);
        assert_eq!(l.kv_replicas(), n - 1);
        assert!(l.members.iter().all(|m| m.kv_heads == (0..1)));
        assert!(l.attn_out_quantizable());
        assert_cover(p.head_rows.as_ref().unwrap(), 262_144);
    }
}

#[test]
fn qwen_kv_heads_follow_query_heads() {
    let p = GroupPlan::new(&[qwen_shape()], None, &[1.0, 1.0], SliceOptions::default()).unwrap();
    let l = &p.layers[0];
    assert_eq!(l.members[0].q_heads, 0..7);
    assert_eq!(l.members[0].kv_heads, 0..1);
    assert_eq!(l.members[1].kv_heads, 1..2);
    assert_eq!(l.kv_holders, vec![1, 1]);
    let p = GroupPlan::new(&[qwen_shape()], None, &[1.0; 3], SliceOptions::default()).unwrap();
    let l = &p.layers[0];
    let q: Vec<_> = l.members.iter().map(|m| m.q_heads.clone()).collect();
    assert_eq!(q, vec![0..5, 5..10, 10..14]);
    let kv: Vec<_> = l.members.iter().map(|m| m.kv_heads.clone()).collect();
    assert_eq!(kv, vec![0..1, 0..2, 1..2]);
    assert_eq!(l.kv_holders, vec![2, 2]);
    assert_eq!(l.kv_replicas(), 2);
}

#[test]
fn wo_placement_replicates_or_splits() {
    let rep = GroupPlan::new(&[qwen_shape()], None, &[1.0, 3.0], SliceOptions::default()).unwrap();
    assert!(rep.layers[0].members.iter().all(|m| m.wo_rows == (0..896)));
    let split = SliceOptions {
        wo: WoPlacement::Split,
        ..SliceOptions::default()
    };
    let p = GroupPlan::new(&[qwen_shape()], None, &[1.0, 3.0], split).unwrap();
    let wo: Vec<_> = p.layers[0]
        .members
        .iter()
        .map(|m| m.wo_rows.clone())
        .collect();
    assert_eq!(wo, vec![0..224, 224..896]);
}

#[test]
fn attn_output_quantizability_depends_on_head_boundaries() {
    let mut s = qwen_shape();
    s.attn_out_block = 256; // 4 heads of 64 per block
    let p = GroupPlan::new(&[s], None, &[1.0, 1.0], SliceOptions::default()).unwrap();
    // 7 + 7 heads: the boundary at 448 is not a multiple of 256.
    assert!(!p.layers[0].attn_out_quantizable());
    s.attn_out_block = 32;
    let p = GroupPlan::new(&[s], None, &[1.0, 1.0], SliceOptions::default()).unwrap();
    assert!(p.layers[0].attn_out_quantizable());
}

fn speeds_strategy() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(0.05f64..20.0, 1..9)
}

proptest! {
    #[test]
    fn splits_cover_align_and_are_proportional(
        speeds in speeds_strategy(),
        align in prop::sample::select(vec![1usize, 32, 256]),
        units in 1usize..200,
        extra in 0usize..256,
    ) {
        let extra = extra % align;
        let total = units * align + extra;
        match split_rows(total, align, &speeds, "x") {
            Err(SliceError::TooManyMembers { members, units: u, .. }) => {
                prop_assert!(members > u);
                prop_assert_eq!(u, units);
            }
            Err(e) => prop_assert!(false, "unexpected {e}"),
            Ok(r) => {
                prop_assert_eq!(r.len(), speeds.len());
                assert_cover(&r, total);
                // Every boundary is aligned; only the last range holds the remainder.
                for x in &r[..r.len() - 1] {
                    prop_assert_eq!(x.end % align, 0);
                }
                let ideal = ideal_shares(units, &speeds);
                let counts: Vec<usize> = r.iter().map(|x| x.len() / align).collect();
                prop_assert_eq!(counts.iter().sum::<usize>(), units);
                prop_assert!(counts.iter().all(|&c| c >= 1));
                if ideal.iter().all(|&x| x >= 1.0) {
                    // Proportional within one block.
                    for (c, x) in counts.iter().zip(&ideal) {
                        prop_assert!((*c as f64 - x).abs() < 1.0 + 1e-9, "{counts:?} vs {ideal:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn plans_cover_heads_rows_and_kv_needs(
        speeds in speeds_strategy(),
        kv in 1usize..5,
        group in 1usize..8,
        wo_split in any::<bool>(),
    ) {
        let n_head = kv * group;
        let shape = LayerShape {
            d_model: 1024,
            n_head,
            n_kv_head: kv,
            head_dim: 64,
            n_ff: 2048,
            attn_out_block: 32,
            ffn_block: 256,
        };
        let opts = SliceOptions {
            wo: if wo_split { WoPlacement::Split } else { WoPlacement::Replicated },
            ffn_on_blocks: true,
            ..SliceOptions::default()
        };
        let plan = GroupPlan::new(&[shape, shape], Some(1000), &speeds, opts);
        if speeds.len() > n_head {
            let is_head_error = matches!(
                plan,
                Err(SliceError::TooManyMembers { what: "query heads", .. })
            );
            prop_assert!(is_head_error);
            return Ok(());
        }
        if speeds.len() > 8 {
            return Ok(());
        }
        let plan = plan.unwrap();
        for l in &plan.layers {
            let q: Vec<_> = l.members.iter().map(|m| m.q_heads.clone()).collect();
            assert_cover(&q, n_head);
            let f: Vec<_> = l.members.iter().map(|m| m.ffn_rows.clone()).collect();
            assert_cover(&f, 2048);
            prop_assert!(f.iter().all(|r| r.start % 256 == 0));
            let d: Vec<_> = l.members.iter().map(|m| m.down_rows.clone()).collect();
            assert_cover(&d, 1024);
            if wo_split {
                let w: Vec<_> = l.members.iter().map(|m| m.wo_rows.clone()).collect();
                assert_cover(&w, 1024);
            }
            // Each member holds exactly the KV heads its query heads read.
            let mut holders = vec![0usize; kv];
            for m in &l.members {
                let need: std::collections::BTreeSet<usize> =
                    m.q_heads.clone().map(|h| h / group).collect();
                let held: std::collections::BTreeSet<usize> = m.kv_heads.clone().collect();
                prop_assert_eq!(need, held);
                for h in m.kv_heads.clone() {
                    holders[h] += 1;
                }
            }
            prop_assert_eq!(&holders, &l.kv_holders);
            prop_assert!(holders.iter().all(|&h| h >= 1));
            // With no more members than KV heads and whole groups per member, nothing is
            // replicated; replication never exceeds one extra head per member boundary.
            prop_assert!(l.kv_replicas() < speeds.len());
        }
        assert_cover(plan.head_rows.as_ref().unwrap(), 1000);
    }
}
