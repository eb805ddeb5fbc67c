//! What a node has to offer: memory, load, temperature, a relative compute score, backend and
//! budgets. Measured from `/proc` and `/sys` (Linux) and overridable from the configuration.
//!
//! Parsers are pure functions of the file text (tested with fixed inputs); [`measure`] does the
//! reading. `/proc/meminfo` is not per container or network namespace: labs inject memory through
//! `[resources]` in `cluster.toml` or `--memory-budget`.
//!
//! The compute score is measured by the application hosting work on the node, in one unit for
//! the whole cluster: edgeray reports the weight megabytes per second its quantized kernels
//! stream through a Q4_K matrix-vector product on the node's kernel threads. The runtime itself
//! knows nothing of kernels: a node whose application sets no score (`[resources]
//! compute_score` or the node's builder) reports 0, "not measured".

use crate::config::{ClusterConfig, ComputeBackend};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A node's resource report, sent with every heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceReport {
    /// Physical memory, bytes.
    pub memory_total: u64,
    /// Memory available for new work (`MemAvailable`), bytes.
    pub memory_free: u64,
    /// Memory this node offers to the cluster, bytes (configured, or the free memory at start).
    pub memory_budget: u64,
    /// Power budget in milliwatts, when configured.
    pub power_budget_mw: Option<u64>,
    /// 1-minute load average.
    pub load1: f32,
    /// Hottest thermal zone in °C, when `/sys/class/thermal` exposes one.
    pub temperature_c: Option<f32>,
    /// Weight megabytes per second through the hosting application's kernels; 0 when not
    /// measured (see the module documentation).
    pub compute_score: f64,
    /// Compute backend offered.
    pub backend: ComputeBackend,
    /// Number of CPUs available to this process.
    pub cpus: u32,
    /// Short free-form descriptions of what this node hosts (e.g. `stage 1/3 layers 6..12
    /// gemma-3-270m (coordinator local-0)`), at most [`MAX_ROLES`] of at most [`MAX_ROLE_CHARS`]
    /// characters each (see [`bound_roles`]). Empty when it hosts nothing.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Most roles a [`ResourceReport`] carries; extra ones are dropped.
pub const MAX_ROLES: usize = 16;

/// Most characters (Unicode scalar values) of one role; longer roles are truncated.
pub const MAX_ROLE_CHARS: usize = 200;

/// Bring a role list within bounds: keep the first [`MAX_ROLES`] roles, truncate each to
/// [`MAX_ROLE_CHARS`] characters (on a character boundary) and replace control characters
/// (newlines, tabs, escapes) by spaces so a role always prints on one line. Never fails.
pub fn bound_roles(mut roles: Vec<String>) -> Vec<String> {
    roles.truncate(MAX_ROLES);
    roles
        .into_iter()
        .map(|r| {
            r.chars()
                .take(MAX_ROLE_CHARS)
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect()
        })
        .collect()
}

impl ResourceReport {
    /// Whether the roles are within the bounds [`bound_roles`] enforces.
    pub fn roles_within_bounds(&self) -> bool {
        self.roles.len() <= MAX_ROLES
            && self
                .roles
                .iter()
                .all(|r| r.chars().count() <= MAX_ROLE_CHARS && !r.chars().any(char::is_control))
    }

    /// Enforce the role bounds on a report (e.g. one received from a peer); returns whether
    /// anything had to be changed.
    pub fn enforce_role_bounds(&mut self) -> bool {
        if self.roles_within_bounds() {
            return false;
        }
        self.roles = bound_roles(std::mem::take(&mut self.roles));
        true
    }
}

/// Errors parsing `/proc` text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    /// A required field is missing or malformed.
    #[error("cannot parse {file}: {what}")]
    Parse {
        /// The file.
        file: &'static str,
        /// What is missing.
        what: String,
    },
}

/// Memory figures from `/proc/meminfo`, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    /// `MemTotal`.
    pub total: u64,
    /// `MemAvailable` (or `MemFree` on kernels without it).
    pub available: u64,
}

/// Parse `/proc/meminfo` text.
pub fn parse_meminfo(text: &str) -> Result<MemInfo, ResourceError> {
    let field = |name: &str| -> Option<u64> {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            let mut it = rest.split_whitespace();
            let n: u64 = it.next()?.parse().ok()?;
            let mult = match it.next() {
                Some("kB") => 1024,
                None => 1,
                Some(_) => return None,
            };
            Some(n * mult)
        })
    };
    let total = field("MemTotal").ok_or_else(|| ResourceError::Parse {
        file: "/proc/meminfo",
        what: "MemTotal".into(),
    })?;
    let available = field("MemAvailable")
        .or_else(|| field("MemFree"))
        .ok_or_else(|| ResourceError::Parse {
            file: "/proc/meminfo",
            what: "MemAvailable".into(),
        })?;
    Ok(MemInfo { total, available })
}

/// Parse the 1-minute load average from `/proc/loadavg` text.
pub fn parse_loadavg(text: &str) -> Result<f32, ResourceError> {
    text.split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ResourceError::Parse {
            file: "/proc/loadavg",
            what: "first field".into(),
        })
}

/// Parse a thermal zone's `temp` file (millidegrees Celsius) into °C.
pub fn parse_thermal_millicelsius(text: &str) -> Option<f32> {
    let v: i64 = text.trim().parse().ok()?;
    let c = v as f32 / 1000.0;
    // Some drivers report nonsense (-273 or 0 for "no sensor"); keep plausible values only.
    (-40.0..=150.0)
        .contains(&c)
        .then_some(c)
        .filter(|c| *c != 0.0)
}

/// The hottest plausible reading among `<dir>/thermal_zone*/temp`.
pub fn read_max_temperature(dir: &Path) -> Option<f32> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("thermal_zone"))
        .filter_map(|e| std::fs::read_to_string(e.path().join("temp")).ok())
        .filter_map(|t| parse_thermal_millicelsius(&t))
        .fold(None, |acc: Option<f32>, c| {
            Some(acc.map_or(c, |a| a.max(c)))
        })
}

/// Measure this machine: memory, load, temperature, CPUs; `compute_score` is passed in (measured
/// by the hosting application, 0 when not measured). Configured overrides and budgets win over measurements.
pub fn measure(config: &ClusterConfig, compute_score: f64) -> ResourceReport {
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| parse_meminfo(&t).ok())
        .unwrap_or(MemInfo {
            total: 0,
            available: 0,
        });
    let load1 = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| parse_loadavg(&t).ok())
        .unwrap_or(0.0);
    let ov = &config.resources;
    let memory_total = ov.memory_total.map_or(mem.total, |b| b.0);
    let memory_free = ov
        .memory_free
        .map_or(mem.available, |b| b.0)
        .min(memory_total.max(1));
    ResourceReport {
        memory_total,
        memory_free,
        memory_budget: config.memory_budget.map_or(memory_free, |b| b.0),
        power_budget_mw: config.power_budget.map(|p| p.0),
        load1,
        temperature_c: read_max_temperature(Path::new("/sys/class/thermal")),
        compute_score: ov.compute_score.unwrap_or(compute_score),
        backend: config.backend,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        roles: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo() {
        let t =
            "MemTotal:        8000000 kB\nMemFree:          100 kB\nMemAvailable:    6000000 kB\n";
        assert_eq!(
            parse_meminfo(t).unwrap(),
            MemInfo {
                total: 8_192_000_000,
                available: 6_144_000_000
            }
        );
        let old = "MemTotal: 10 kB\nMemFree: 5 kB\n";
        assert_eq!(parse_meminfo(old).unwrap().available, 5 * 1024);
        assert!(parse_meminfo("Foo: 1 kB").is_err());
        assert!(parse_meminfo("MemTotal: x kB\nMemAvailable: 1 kB").is_err());
    }

    #[test]
    fn loadavg_and_thermal() {
        assert_eq!(parse_loadavg("0.52 0.40 0.30 1/123 4567\n").unwrap(), 0.52);
        assert!(parse_loadavg("").is_err());
        assert_eq!(parse_thermal_millicelsius("45500\n"), Some(45.5));
        assert_eq!(parse_thermal_millicelsius("-273000"), None);
        assert_eq!(parse_thermal_millicelsius("junk"), None);
    }

    #[test]
    fn thermal_dir_takes_the_hottest_zone() {
        let dir = tempfile::tempdir().unwrap();
        for (zone, t) in [
            ("thermal_zone0", "41000"),
            ("thermal_zone1", "52500"),
            ("cooling_device0", "99000"),
        ] {
            std::fs::create_dir(dir.path().join(zone)).unwrap();
            std::fs::write(dir.path().join(zone).join("temp"), t).unwrap();
        }
        assert_eq!(read_max_temperature(dir.path()), Some(52.5));
        assert_eq!(read_max_temperature(&dir.path().join("missing")), None);
    }

    #[test]
    fn roles_are_bounded() {
        // Within bounds: unchanged.
        let ok = vec!["stage 1/3 layers 6..12 gemma-3-270m (coordinator local-0)".to_string()];
        assert_eq!(bound_roles(ok.clone()), ok);
        // Too many roles: the first MAX_ROLES are kept, in order.
        let many: Vec<String> = (0..40).map(|i| format!("role {i}")).collect();
        let b = bound_roles(many);
        assert_eq!(b.len(), MAX_ROLES);
        assert_eq!(b[0], "role 0");
        assert_eq!(b[MAX_ROLES - 1], format!("role {}", MAX_ROLES - 1));
        // Too long: truncated on a character boundary (multi-byte characters included).
        let long = "é".repeat(MAX_ROLE_CHARS + 50);
        let b = bound_roles(vec![long, "x".repeat(MAX_ROLE_CHARS)]);
        assert_eq!(b[0].chars().count(), MAX_ROLE_CHARS);
        assert!(b[0].chars().all(|c| c == 'é'));
        assert_eq!(b[1].len(), MAX_ROLE_CHARS);
        // Control characters become spaces (one line per role in the table).
        assert_eq!(
            bound_roles(vec!["a\nb\tc\u{1b}".into()]),
            vec!["a b c ".to_string()]
        );
        assert!(bound_roles(Vec::new()).is_empty());
    }

    #[test]
    fn received_report_with_oversized_roles_is_truncated() {
        let mut cfg = ClusterConfig::with_secret([1; 32]);
        cfg.resources.compute_score = Some(1.0);
        let mut r = measure(&cfg, 1.0);
        assert!(r.roles.is_empty() && r.roles_within_bounds());
        r.roles = vec!["ok".into()];
        assert!(!r.enforce_role_bounds());
        assert_eq!(r.roles, vec!["ok".to_string()]);
        r.roles = (0..1000).map(|_| "y".repeat(10_000)).collect();
        assert!(!r.roles_within_bounds());
        assert!(r.enforce_role_bounds());
        assert!(r.roles_within_bounds());
        assert_eq!(r.roles.len(), MAX_ROLES);
        assert!(r.roles.iter().all(|x| x.len() == MAX_ROLE_CHARS));
    }

    #[test]
    fn overrides_win() {
        let mut cfg = ClusterConfig::with_secret([1; 32]);
        cfg.resources.memory_total = Some(crate::config::ByteSize(8 << 30));
        cfg.resources.memory_free = Some(crate::config::ByteSize(6 << 30));
        cfg.resources.compute_score = Some(42.0);
        cfg.power_budget = Some(crate::config::Power(6000));
        let r = measure(&cfg, 1.0);
        assert_eq!(r.memory_total, 8 << 30);
        assert_eq!(r.memory_free, 6 << 30);
        assert_eq!(r.memory_budget, 6 << 30);
        assert_eq!(r.compute_score, 42.0);
        assert_eq!(r.power_budget_mw, Some(6000));
        cfg.memory_budget = Some(crate::config::ByteSize(3 << 30));
        assert_eq!(measure(&cfg, 1.0).memory_budget, 3 << 30);
    }
}
