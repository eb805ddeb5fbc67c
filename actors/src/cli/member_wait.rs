//! `run`/`serve`/`bench --config` started right after the boards: wait (bounded by
//! `--discover`) until the members the placement needs are up, saying what is awaited, instead
//! of failing with "the policy offers no N-stage candidate".

use std::time::Duration;

use edgeray_runtime::cluster::Cluster;
use edgeray_runtime::membership::MemberState;

use crate::pipeline::head::cluster_view;

/// How many members (this coordinator included, it hosts stages too) the placement needs:
/// `--min-nodes`, and `--stages` × `--tp` when a stage count is asked for.
pub fn members_needed(min_nodes: usize, stages: Option<usize>, tp: usize) -> usize {
    let placement = stages.map_or(1, |s| s.saturating_mul(tp.max(1)));
    min_nodes.max(placement).max(1)
}

/// Why the wait ended without enough members.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "only {up} of the {need} members the placement needs came up within {waited:?} (up: {names}{joining}); start `edgeray node` on more boards, lower --stages/--tp/--min-nodes, or wait longer with --discover"
)]
pub struct TooFewMembers {
    /// Members up (with a resource report).
    pub up: usize,
    /// Members needed.
    pub need: usize,
    /// The bound waited.
    pub waited: Duration,
    /// Names of the members up.
    pub names: String,
    /// `; not up yet: …` for members known but not up, or empty.
    pub joining: String,
}

/// What the cluster looks like to the placement right now: the names of the members it can
/// place on, and those known but not (yet) usable, with their state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// Up members with a resource report (placeable), sorted.
    pub up: Vec<String>,
    /// Other members that are not Down: `name (State)`, sorted.
    pub pending: Vec<String>,
}

impl Seen {
    fn of(cluster: &Cluster) -> Seen {
        let mut up: Vec<String> = cluster_view(cluster)
            .nodes
            .iter()
            .map(|n| n.name.clone())
            .collect();
        up.sort();
        let mut pending: Vec<String> = cluster
            .members()
            .iter()
            .filter(|m| m.state != MemberState::Down && !up.contains(&m.name))
            .map(|m| format!("{} ({:?})", m.name, m.state))
            .collect();
        pending.sort();
        Seen { up, pending }
    }

    /// The progress line: what is awaited and what is there.
    pub fn waiting_line(&self, need: usize, bound: Duration) -> String {
        let mut s = format!(
            "waiting up to {bound:?} for {} more member(s): the placement needs {need}, up: {} [{}]",
            need.saturating_sub(self.up.len()),
            self.up.len(),
            self.up.join(", ")
        );
        if !self.pending.is_empty() {
            s.push_str(&format!("; not up yet: {}", self.pending.join(", ")));
        }
        s
    }
}

/// Waits until `need` members are up or `bound` passed, printing one line on stderr whenever
/// what it sees changes (nothing when enough are up at once). Returns how many are up.
pub async fn wait_for_needed_members(
    cluster: &Cluster,
    need: usize,
    bound: Duration,
) -> Result<usize, TooFewMembers> {
    let deadline = tokio::time::Instant::now() + bound;
    let mut last: Option<Seen> = None;
    loop {
        let seen = Seen::of(cluster);
        if seen.up.len() >= need {
            if last.is_some() {
                eprintln!("{} member(s) up: {}", seen.up.len(), seen.up.join(", "));
            }
            return Ok(seen.up.len());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(TooFewMembers {
                up: seen.up.len(),
                need,
                waited: bound,
                names: seen.up.join(", "),
                joining: if seen.pending.is_empty() {
                    String::new()
                } else {
                    format!("; not up yet: {}", seen.pending.join(", "))
                },
            });
        }
        if last.as_ref() != Some(&seen) {
            eprintln!("{}", seen.waiting_line(need, bound));
            last = Some(seen);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needed_is_stages_times_tp_or_min_nodes() {
        assert_eq!(members_needed(1, None, 1), 1);
        assert_eq!(members_needed(0, None, 1), 1);
        assert_eq!(members_needed(1, Some(2), 1), 2);
        assert_eq!(members_needed(1, Some(2), 2), 4);
        assert_eq!(members_needed(5, Some(2), 1), 5);
        assert_eq!(members_needed(1, Some(3), 0), 3);
    }

    #[test]
    fn the_line_names_who_is_up_and_who_is_pending() {
        let seen = Seen {
            up: vec!["lab-coordinator".into()],
            pending: vec!["pi-02 (Joining)".into()],
        };
        assert_eq!(
            seen.waiting_line(3, Duration::from_secs(30)),
            "waiting up to 30s for 2 more member(s): the placement needs 3, up: 1 [lab-coordinator]; not up yet: pi-02 (Joining)"
        );
        let err = TooFewMembers {
            up: 1,
            need: 2,
            waited: Duration::from_secs(30),
            names: "c".into(),
            joining: String::new(),
        };
        assert!(err.to_string().starts_with("only 1 of the 2 members"));
    }
}
