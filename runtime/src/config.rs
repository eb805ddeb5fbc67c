//! Cluster configuration: the `cluster.toml` file shared by every board of one cluster.
//!
//! Every key is optional except `secret`. A commented sample of every key lives in the
//! top-level `cluster.toml` of the repository and is what `edgeray init` writes
//! ([`ClusterConfig::sample_toml`]).
//!
//! ```toml
//! secret = "<64 hex characters: 32 random bytes>"   # the only required key; never leaves this file
//! cluster_name = "edgeray"
//! name = "pi-01"                     # this node's display name (default: the host name)
//! listen = "0.0.0.0:7070"            # UDP address of the QUIC endpoint
//! seeds = ["10.0.0.2:7070"]          # peers to dial when multicast does not work
//! mdns = true                        # announce and browse `_edgeray._udp.local.`
//! interfaces = ["eth0"]              # mDNS interfaces (default: every non-loopback one)
//! memory_budget = "3GiB"             # memory this node may use for model weights + KV cache
//! power_budget = "6W"
//! state_dir = "edgeray-state"        # holds the node identity key
//! backend = "cpu"                    # cpu | wgpu
//! revoked = ["<64 hex node id>"]     # nodes every member refuses (`edgeray revoke`)
//! trusted_secrets = ["<64 hex>"]     # other secrets whose nodes are accepted (secret rotation)
//!
//! [resources]                        # overrides of what /proc reports (tests, containers)
//! memory_total = "8GiB"
//! memory_free = "6GiB"
//! compute_score = 1000.0
//!
//! [timing]
//! keep_alive = "1s"
//! idle_timeout = "6s"
//! heartbeat = "1s"
//! suspect_after = "3s"
//! down_after = "8s"
//! gossip = "2s"
//! seed_retry_min = "250ms"
//! seed_retry_max = "5s"
//! forget_after = "5m"
//!
//! [limits]
//! max_members = 64
//! max_message = "16MiB"
//! shard_cache = "8GiB"               # disk the stage-shard cache may use (LRU eviction)
//! ```
//!
//! Sizes accept `B`, `KB`/`MB`/`GB`/`TB` (powers of 1000) and `KiB`/`MiB`/`GiB`/`TiB` (powers of
//! 1024), fractional values allowed (`1.5GiB`), or a plain integer number of bytes. Power accepts
//! `W`, `mW` and `kW` (`6W`, `6.5W`, `500mW`). Durations accept `ms`, `s`, `m`, `h` (`250ms`,
//! `1.5s`, `5m`).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// Errors reading or validating a cluster configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key or a value of the wrong type.
    #[error("invalid cluster config{}: {message}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Parse {
        /// The file, when read from one.
        path: Option<PathBuf>,
        /// The parser's message (with line and column).
        message: String,
    },
    /// `secret` is missing, not hex, or not 32 bytes.
    #[error(
        "invalid `secret`: {0} (expected 64 hex characters = 32 bytes; `edgeray init` writes one)"
    )]
    Secret(String),
    /// A key has a value out of its allowed range.
    #[error("invalid `{key}`: {message}")]
    Invalid {
        /// The key (dotted path).
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A size, power or duration string could not be parsed.
    #[error("{0}")]
    Unit(#[from] UnitError),
}

/// Errors parsing a size (`3GiB`), power (`6W`) or duration (`1s`) string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// Not a number followed by a known unit.
    #[error("invalid {kind} `{input}`: expected {expected}")]
    Malformed {
        /// "size", "power" or "duration".
        kind: &'static str,
        /// The offending text.
        input: String,
        /// Example of valid text.
        expected: &'static str,
    },
    /// The number is negative, not finite or too large.
    #[error("{kind} `{input}` is out of range")]
    OutOfRange {
        /// "size", "power" or "duration".
        kind: &'static str,
        /// The offending text.
        input: String,
    },
}

/// Split `"3.5GiB"` into `(3.5, "GiB")`.
fn split_number(
    kind: &'static str,
    input: &str,
    expected: &'static str,
) -> Result<(f64, String), UnitError> {
    let s = input.trim();
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(end);
    let num = num.replace('_', "");
    let malformed = || UnitError::Malformed {
        kind,
        input: input.to_string(),
        expected,
    };
    if num.is_empty() {
        return Err(malformed());
    }
    let value: f64 = num.parse().map_err(|_| malformed())?;
    if !value.is_finite() || value < 0.0 {
        return Err(UnitError::OutOfRange {
            kind,
            input: input.to_string(),
        });
    }
    Ok((value, unit.trim().to_string()))
}

/// A number of bytes, written as `3GiB`, `512MiB`, `2GB` or a plain integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The number of bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        const EXPECTED: &str = "a number with a unit such as `3GiB`, `512MiB`, `2GB` or `1024B`";
        let (value, unit) = split_number("size", s, EXPECTED)?;
        let mult: f64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "k" | "kb" => 1e3,
            "m" | "mb" => 1e6,
            "g" | "gb" => 1e9,
            "t" | "tb" => 1e12,
            "kib" => 1024.0,
            "mib" => 1024.0 * 1024.0,
            "gib" => 1024.0 * 1024.0 * 1024.0,
            "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
            _ => {
                return Err(UnitError::Malformed {
                    kind: "size",
                    input: s.to_string(),
                    expected: EXPECTED,
                });
            }
        };
        let bytes = (value * mult).round();
        if bytes > u64::MAX as f64 {
            return Err(UnitError::OutOfRange {
                kind: "size",
                input: s.to_string(),
            });
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    /// Human form with binary units, e.g. `3.0GiB`, `512.0MiB`, `17B`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
        let mut v = self.0 as f64;
        if self.0 < 1024 {
            return write!(f, "{}B", self.0);
        }
        let mut unit = "B";
        for u in UNITS {
            if v < 1024.0 {
                break;
            }
            v /= 1024.0;
            unit = u;
        }
        write!(f, "{v:.1}{unit}")
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Electrical power in milliwatts, written as `6W`, `6.5W`, `500mW` or `1kW`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Power(pub u64);

impl Power {
    /// The power in milliwatts.
    pub fn milliwatts(self) -> u64 {
        self.0
    }
    /// The power in watts.
    pub fn watts(self) -> f64 {
        self.0 as f64 / 1000.0
    }
}

impl FromStr for Power {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        const EXPECTED: &str = "a number with a unit such as `6W`, `6.5W` or `500mW`";
        let (value, unit) = split_number("power", s, EXPECTED)?;
        let mult = match unit.as_str() {
            "W" | "w" => 1000.0,
            "mW" | "mw" => 1.0,
            "kW" | "kw" => 1_000_000.0,
            _ => {
                return Err(UnitError::Malformed {
                    kind: "power",
                    input: s.to_string(),
                    expected: EXPECTED,
                });
            }
        };
        let mw = (value * mult).round();
        if mw > u64::MAX as f64 {
            return Err(UnitError::OutOfRange {
                kind: "power",
                input: s.to_string(),
            });
        }
        Ok(Power(mw as u64))
    }
}

impl fmt::Display for Power {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) {
            write!(f, "{}W", self.0 / 1000)
        } else {
            write!(f, "{}W", self.watts())
        }
    }
}

impl Serialize for Power {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Power {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Parse a duration such as `250ms`, `1s`, `1.5s`, `5m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    const EXPECTED: &str = "a number with a unit such as `250ms`, `1s`, `1.5s`, `5m` or `1h`";
    let (value, unit) = split_number("duration", s, EXPECTED)?;
    let secs = match unit.as_str() {
        "ms" => value / 1000.0,
        "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(UnitError::Malformed {
                kind: "duration",
                input: s.to_string(),
                expected: EXPECTED,
            });
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|_| UnitError::OutOfRange {
        kind: "duration",
        input: s.to_string(),
    })
}

/// Format a duration the way [`parse_duration`] reads it (`1s`, `250ms`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

mod duration_serde {
    use super::*;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        parse_duration(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// The compute backend a node offers to the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComputeBackend {
    /// burn's `flex` CPU backend.
    #[default]
    Cpu,
    /// burn's wgpu backend (GPU): reported to the scheduler only; GPU stages are not implemented yet.
    Wgpu,
}

impl fmt::Display for ComputeBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ComputeBackend::Cpu => "cpu",
            ComputeBackend::Wgpu => "wgpu",
        })
    }
}

impl FromStr for ComputeBackend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(ComputeBackend::Cpu),
            "wgpu" => Ok(ComputeBackend::Wgpu),
            other => Err(format!(
                "unknown backend `{other}` (expected `cpu` or `wgpu`)"
            )),
        }
    }
}

/// Overrides of what the node measures about itself (`/proc/meminfo` is not per container or
/// network namespace; tests inject values here).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceOverrides {
    /// Total memory reported instead of `MemTotal`.
    pub memory_total: Option<ByteSize>,
    /// Free memory reported instead of `MemAvailable`.
    pub memory_free: Option<ByteSize>,
    /// Compute score reported instead of the one the hosting application measures (weight MB/s
    /// of quantized matrix-vector products, see [`crate::resources`]).
    pub compute_score: Option<f64>,
}

/// Failure-detection and retry timings (`[timing]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timing {
    /// QUIC keep-alive interval: an otherwise idle connection sends a packet this often.
    #[serde(with = "duration_serde")]
    pub keep_alive: Duration,
    /// QUIC idle timeout: a connection that hears nothing for this long is closed and the peer
    /// marked Down. The lower value of both sides wins.
    #[serde(with = "duration_serde")]
    pub idle_timeout: Duration,
    /// Interval between heartbeats (each carries this node's resource report).
    #[serde(with = "duration_serde")]
    pub heartbeat: Duration,
    /// A member not heard from for this long becomes Suspect.
    #[serde(with = "duration_serde")]
    pub suspect_after: Duration,
    /// A member not heard from for this long becomes Down (also on transport disconnect).
    #[serde(with = "duration_serde")]
    pub down_after: Duration,
    /// Interval between member-list gossip rounds (lets nodes learn members mDNS did not show).
    #[serde(with = "duration_serde")]
    pub gossip: Duration,
    /// First delay before re-dialing an unreachable seed or candidate.
    #[serde(with = "duration_serde")]
    pub seed_retry_min: Duration,
    /// Largest delay between re-dials (exponential backoff is capped here).
    #[serde(with = "duration_serde")]
    pub seed_retry_max: Duration,
    /// Down members disappear from the member table after this long.
    #[serde(with = "duration_serde")]
    pub forget_after: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            keep_alive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(6),
            heartbeat: Duration::from_secs(1),
            suspect_after: Duration::from_secs(3),
            down_after: Duration::from_secs(8),
            gossip: Duration::from_secs(2),
            seed_retry_min: Duration::from_millis(250),
            seed_retry_max: Duration::from_secs(5),
            forget_after: Duration::from_secs(300),
        }
    }
}

/// Resource limits (`[limits]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most members (Down ones included) a node keeps in its table; further joiners are refused.
    pub max_members: usize,
    /// Largest raw payload (a tensor, a weight chunk) of one message on an application
    /// stream. Message bodies are bounded by the codec (1 MiB) and control messages by the
    /// transport (256 KiB, no payload), independently of this value.
    pub max_message: ByteSize,
    /// Disk the node's stage-shard cache may use. Receiving a shard evicts the least recently
    /// used cached shards that no running stage uses until it fits; a shard that cannot fit
    /// (larger than this budget, or than the free disk space) is refused.
    pub shard_cache: ByteSize,
    /// Keep cached shards encrypted on disk (ChaCha20-Poly1305, key derived from the cluster
    /// secret): a stolen SD card leaks no weights. A stage then decrypts its shard into memory
    /// when it starts instead of mapping the file.
    pub encrypt_shards: bool,
}

/// Default of `limits.shard_cache`.
pub const DEFAULT_SHARD_CACHE: ByteSize = ByteSize(8 << 30);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_members: 64,
            max_message: ByteSize(16 * 1024 * 1024),
            shard_cache: DEFAULT_SHARD_CACHE,
            encrypt_shards: false,
        }
    }
}

/// Default UDP port of a node.
pub const DEFAULT_PORT: u16 = 7070;

fn default_cluster_name() -> String {
    "edgeray".to_string()
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT))
}
fn default_true() -> bool {
    true
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("edgeray-state")
}

/// The parsed `cluster.toml`. See the module documentation for every key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// 32-byte cluster secret, hex. Everything else (CA, cluster id) derives from it.
    pub secret: String,
    /// Human name of the cluster (shown by `status`; does not affect authentication).
    #[serde(default = "default_cluster_name")]
    pub cluster_name: String,
    /// This node's display name; `None` = the host name.
    #[serde(default)]
    pub name: Option<String>,
    /// UDP socket address of the QUIC endpoint.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `host:port` of nodes to dial at start (and whenever they are not connected).
    #[serde(default)]
    pub seeds: Vec<String>,
    /// Announce and browse the cluster with mDNS.
    #[serde(default = "default_true")]
    pub mdns: bool,
    /// Interfaces mDNS uses; empty = every non-loopback interface.
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// Memory this node offers to the cluster; `None` = the measured free memory.
    #[serde(default)]
    pub memory_budget: Option<ByteSize>,
    /// Power budget of this board (reported to the scheduler); `None` = unknown.
    #[serde(default)]
    pub power_budget: Option<Power>,
    /// Folder for the node identity key (relative paths are relative to the working directory).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Compute backend offered by this node.
    #[serde(default)]
    pub backend: ComputeBackend,
    /// Overrides of measured resources.
    #[serde(default)]
    pub resources: ResourceOverrides,
    /// Failure detection and retry timings.
    #[serde(default)]
    pub timing: Timing,
    /// Limits.
    #[serde(default)]
    pub limits: Limits,
    /// Node ids (64 hex) every member refuses: their connections are closed and never admitted
    /// again. Edited by `edgeray revoke`; a running node re-reads it (see
    /// `NodeHandle::watch_config_file`).
    #[serde(default)]
    pub revoked: Vec<String>,
    /// Other cluster secrets (64 hex each) whose nodes this node also accepts, during a secret
    /// rotation (README, "Rotating the cluster secret"). This node's own certificate always
    /// comes from `secret`. A running node re-reads `secret` and this list like `revoked` and
    /// switches without dropping its connections.
    #[serde(default)]
    pub trusted_secrets: Vec<String>,
}

impl ClusterConfig {
    /// A configuration with the given secret and every other key at its default.
    pub fn with_secret(secret: [u8; 32]) -> Self {
        ClusterConfig {
            secret: hex::encode(secret),
            cluster_name: default_cluster_name(),
            name: None,
            listen: default_listen(),
            seeds: Vec::new(),
            mdns: true,
            interfaces: Vec::new(),
            memory_budget: None,
            power_budget: None,
            state_dir: default_state_dir(),
            backend: ComputeBackend::Cpu,
            resources: ResourceOverrides::default(),
            timing: Timing::default(),
            limits: Limits::default(),
            revoked: Vec::new(),
            trusted_secrets: Vec::new(),
        }
    }

    /// Parse and validate TOML text.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        Self::parse(text, None)
    }

    /// Read, parse and validate a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, Some(path))
    }

    fn parse(text: &str, path: Option<&Path>) -> Result<Self, ConfigError> {
        let cfg: ClusterConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.map(Path::to_path_buf),
            message: e.to_string().trim_end().to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check every cross-key rule (secret form, timing order, limits).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.secret_bytes()?;
        if self.cluster_name.trim().is_empty() {
            return Err(ConfigError::Invalid {
                key: "cluster_name",
                message: "must not be empty".into(),
            });
        }
        if let Some(name) = &self.name {
            validate_node_name(name)?;
        }
        for seed in &self.seeds {
            validate_seed(seed)?;
        }
        for i in &self.interfaces {
            if i.is_empty() || i.len() > 15 || i.contains(char::is_whitespace) {
                return Err(ConfigError::Invalid {
                    key: "interfaces",
                    message: format!("`{i}` is not an interface name (1-15 characters, no spaces)"),
                });
            }
        }
        let t = &self.timing;
        let positive = [
            ("timing.keep_alive", t.keep_alive),
            ("timing.idle_timeout", t.idle_timeout),
            ("timing.heartbeat", t.heartbeat),
            ("timing.suspect_after", t.suspect_after),
            ("timing.down_after", t.down_after),
            ("timing.gossip", t.gossip),
            ("timing.seed_retry_min", t.seed_retry_min),
            ("timing.seed_retry_max", t.seed_retry_max),
        ];
        for (key, d) in positive {
            if d.is_zero() {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be greater than zero".into(),
                });
            }
        }
        if t.keep_alive >= t.idle_timeout {
            return Err(ConfigError::Invalid {
                key: "timing.keep_alive",
                message: format!(
                    "{} must be shorter than timing.idle_timeout ({})",
                    format_duration(t.keep_alive),
                    format_duration(t.idle_timeout)
                ),
            });
        }
        if t.heartbeat >= t.suspect_after {
            return Err(ConfigError::Invalid {
                key: "timing.heartbeat",
                message: format!(
                    "{} must be shorter than timing.suspect_after ({})",
                    format_duration(t.heartbeat),
                    format_duration(t.suspect_after)
                ),
            });
        }
        if t.suspect_after >= t.down_after {
            return Err(ConfigError::Invalid {
                key: "timing.suspect_after",
                message: format!(
                    "{} must be shorter than timing.down_after ({})",
                    format_duration(t.suspect_after),
                    format_duration(t.down_after)
                ),
            });
        }
        if t.seed_retry_min > t.seed_retry_max {
            return Err(ConfigError::Invalid {
                key: "timing.seed_retry_min",
                message: "must not exceed timing.seed_retry_max".into(),
            });
        }
        if self.limits.max_members < 1 {
            return Err(ConfigError::Invalid {
                key: "limits.max_members",
                message: "must be at least 1".into(),
            });
        }
        self.revoked_ids()?;
        self.trusted_secret_bytes()?;
        if self.limits.max_message.0 < 64 * 1024 {
            return Err(ConfigError::Invalid {
                key: "limits.max_message",
                message: "must be at least 64KiB".into(),
            });
        }
        if self.limits.shard_cache.0 < 1 << 20 {
            return Err(ConfigError::Invalid {
                key: "limits.shard_cache",
                message: "must be at least 1MiB".into(),
            });
        }
        Ok(())
    }

    /// The revoked node ids (`revoked`), parsed.
    pub fn revoked_ids(&self) -> Result<Vec<crate::identity::NodeId>, ConfigError> {
        self.revoked
            .iter()
            .map(|r| {
                r.trim()
                    .parse::<crate::identity::NodeId>()
                    .map_err(|_| ConfigError::Invalid {
                        key: "revoked",
                        message: format!(
                            "`{r}` is not a node id (64 hex characters, as `edgeray status --json` shows)"
                        ),
                    })
            })
            .collect()
    }

    /// The `trusted_secrets`, parsed (each 32 bytes, not all zeros).
    pub fn trusted_secret_bytes(&self) -> Result<Vec<[u8; 32]>, ConfigError> {
        self.trusted_secrets
            .iter()
            .map(|t| {
                parse_secret(t).map_err(|e| ConfigError::Invalid {
                    key: "trusted_secrets",
                    message: format!("an entry is not a secret: {e}"),
                })
            })
            .collect()
    }

    /// The 32 secret bytes.
    pub fn secret_bytes(&self) -> Result<[u8; 32], ConfigError> {
        parse_secret(&self.secret).map_err(ConfigError::Secret)
    }
}

/// A secret's 32 bytes from its 64 hex characters (all zeros refused: the sample's placeholder).
fn parse_secret(text: &str) -> Result<[u8; 32], String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty".into());
    }
    let bytes = hex::decode(s).map_err(|e| format!("not hex: {e}"))?;
    let secret =
        <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| format!("{} bytes", bytes.len()))?;
    if secret == [0; 32] {
        return Err("all zeros: this is the placeholder of the sample file, not a secret".into());
    }
    Ok(secret)
}

impl ClusterConfig {
    /// This node's display name: `name`, else the host name, else `node`.
    pub fn node_name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        hostname().unwrap_or_else(|| "node".to_string())
    }

    /// The TOML text `edgeray init` writes: every key with a comment and its default.
    pub fn sample_toml(secret: [u8; 32]) -> String {
        SAMPLE_TOML.replace("@SECRET@", &hex::encode(secret))
    }
}

/// Template of the documented sample; `@SECRET@` is replaced by a fresh secret.
const SAMPLE_TOML: &str = include_str!("cluster.sample.toml");

/// The host name from `/proc/sys/kernel/hostname` (Linux) or `$HOSTNAME`.
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
}

/// A node name: 1-63 characters of letters, digits, `-`, `_`, `.`.
pub fn validate_node_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            key: "name",
            message: format!("`{name}`: use 1-63 characters of letters, digits, `-`, `_`, `.`"),
        })
    }
}

/// A seed is `host:port` (host = IP address or DNS name).
pub fn validate_seed(seed: &str) -> Result<(), ConfigError> {
    let bad = |m: &str| ConfigError::Invalid {
        key: "seeds",
        message: format!("`{seed}`: {m}"),
    };
    if seed.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let (host, port) = seed
        .rsplit_once(':')
        .ok_or_else(|| bad("expected host:port"))?;
    if host.is_empty() {
        return Err(bad("empty host"));
    }
    port.parse::<u16>()
        .map_err(|_| bad("port must be a number 0-65535"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn minimal_config_gets_defaults() {
        let cfg = ClusterConfig::from_toml_str(&format!("secret = \"{SECRET}\"")).unwrap();
        assert_eq!(cfg.listen, "0.0.0.0:7070".parse().unwrap());
        assert!(cfg.mdns);
        assert!(cfg.seeds.is_empty());
        assert_eq!(cfg.timing, Timing::default());
        assert_eq!(cfg.secret_bytes().unwrap()[1], 0x11);
    }

    #[test]
    fn full_config_parses_units() {
        let text = format!(
            r#"
secret = "{SECRET}"
cluster_name = "lab"
name = "pi-01"
listen = "127.0.0.1:7100"
seeds = ["127.0.0.1:7101", "pi-02.local:7070"]
mdns = false
interfaces = ["eth0"]
memory_budget = "3GiB"
power_budget = "6.5W"
backend = "wgpu"
[resources]
memory_total = "8GB"
memory_free = 1024
compute_score = 12.5
[timing]
heartbeat = "500ms"
suspect_after = "2s"
down_after = "1m"
[limits]
max_members = 8
max_message = "1MiB"
shard_cache = "2.5GiB"
"#
        );
        let cfg = ClusterConfig::from_toml_str(&text).unwrap();
        assert_eq!(cfg.memory_budget, Some(ByteSize(3 << 30)));
        assert_eq!(cfg.power_budget, Some(Power(6500)));
        assert_eq!(cfg.backend, ComputeBackend::Wgpu);
        assert_eq!(cfg.resources.memory_total, Some(ByteSize(8_000_000_000)));
        assert_eq!(cfg.resources.memory_free, Some(ByteSize(1024)));
        assert_eq!(cfg.timing.heartbeat, Duration::from_millis(500));
        assert_eq!(cfg.timing.down_after, Duration::from_secs(60));
        assert_eq!(cfg.timing.keep_alive, Duration::from_secs(1));
        assert_eq!(cfg.limits.max_message, ByteSize(1 << 20));
        assert_eq!(cfg.limits.shard_cache, ByteSize(5 << 29));
        assert_eq!(cfg.node_name(), "pi-01");
    }

    #[test]
    fn trusted_secrets_are_checked() {
        let other = "22".repeat(32);
        let cfg = ClusterConfig::from_toml_str(&format!(
            "secret = \"{SECRET}\"\ntrusted_secrets = [\"{other}\"]"
        ))
        .unwrap();
        assert_eq!(cfg.trusted_secret_bytes().unwrap(), vec![[0x22; 32]]);
        for bad in ["abc", &"00".repeat(32)] {
            let e = ClusterConfig::from_toml_str(&format!(
                "secret = \"{SECRET}\"\ntrusted_secrets = [\"{bad}\"]"
            ))
            .unwrap_err();
            assert!(e.to_string().contains("trusted_secrets"), "{e}");
        }
    }

    #[test]
    fn revoked_ids_are_checked() {
        let id = "ab".repeat(32);
        let cfg =
            ClusterConfig::from_toml_str(&format!("secret = \"{SECRET}\"\nrevoked = [\"{id}\"]"))
                .unwrap();
        assert_eq!(cfg.revoked_ids().unwrap()[0].to_hex(), id);
        let e =
            ClusterConfig::from_toml_str(&format!("secret = \"{SECRET}\"\nrevoked = [\"abc\"]"))
                .unwrap_err();
        assert!(e.to_string().contains("revoked"), "{e}");
    }

    #[test]
    fn sample_toml_is_valid_and_has_secret() {
        let text = ClusterConfig::sample_toml([7; 32]);
        let cfg = ClusterConfig::from_toml_str(&text).unwrap();
        assert_eq!(cfg.secret_bytes().unwrap(), [7; 32]);
        assert_eq!(cfg.timing, Timing::default());
        assert_eq!(cfg.limits, Limits::default());
        assert_eq!(cfg.listen, default_listen());
    }

    #[test]
    fn repository_sample_is_the_init_template() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../cluster.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let expected = ClusterConfig::sample_toml([0; 32]).replacen(
            "# Written by `edgeray init`;",
            "# This repository copy is a SAMPLE: its all-zero secret is refused. Run `edgeray init` to write\n# a real one. Written by `edgeray init`;",
            1,
        );
        assert_eq!(
            text, expected,
            "cluster.toml drifted from runtime/src/cluster.sample.toml"
        );
        let err = ClusterConfig::from_toml_str(&text).unwrap_err().to_string();
        assert!(err.contains("placeholder"), "{err}");
    }

    #[test]
    fn sizes() {
        assert_eq!(
            "3GiB".parse::<ByteSize>().unwrap(),
            ByteSize(3 * 1024 * 1024 * 1024)
        );
        assert_eq!("1.5 KiB".parse::<ByteSize>().unwrap(), ByteSize(1536));
        assert_eq!("2gb".parse::<ByteSize>().unwrap(), ByteSize(2_000_000_000));
        assert_eq!("17".parse::<ByteSize>().unwrap(), ByteSize(17));
        assert_eq!("1_000B".parse::<ByteSize>().unwrap(), ByteSize(1000));
        for bad in ["", "GiB", "3 parsecs", "-1GiB", "1..2MiB", "3XiB"] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad} should fail");
        }
        assert_eq!(ByteSize(3 << 30).to_string(), "3.0GiB");
        assert_eq!(ByteSize(17).to_string(), "17B");
    }

    #[test]
    fn powers_and_durations() {
        assert_eq!("6W".parse::<Power>().unwrap(), Power(6000));
        assert_eq!("500mW".parse::<Power>().unwrap(), Power(500));
        assert_eq!("1kW".parse::<Power>().unwrap(), Power(1_000_000));
        assert_eq!(Power(6500).to_string(), "6.5W");
        for bad in ["6", "6V", "W", "-2W"] {
            assert!(bad.parse::<Power>().is_err(), "{bad} should fail");
        }
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5 fortnights").is_err());
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn bad_configs_have_clear_errors() {
        let err = |t: &str| ClusterConfig::from_toml_str(t).unwrap_err().to_string();
        assert!(err("").contains("secret"), "{}", err(""));
        assert!(err("secret = \"zz\"").contains("not hex"));
        assert!(err("secret = \"0011\"").contains("2 bytes"));
        assert!(err(&format!("secret = \"{}\"", "0".repeat(64))).contains("placeholder"));
        let s = format!("secret = \"{SECRET}\"\n");
        let e = err(&format!("{s}memory_budget = \"3 parsecs\""));
        assert!(e.contains("invalid size `3 parsecs`"), "{e}");
        let e = err(&format!("{s}power_budget = \"6V\""));
        assert!(e.contains("invalid power `6V`"), "{e}");
        let e = err(&format!("{s}colour = \"blue\""));
        assert!(e.contains("unknown field `colour`"), "{e}");
        let e = err(&format!(
            "{s}[timing]\nsuspect_after = \"10s\"\ndown_after = \"5s\""
        ));
        assert!(e.contains("timing.suspect_after"), "{e}");
        let e = err(&format!("{s}[timing]\nkeep_alive = \"10s\""));
        assert!(e.contains("timing.keep_alive"), "{e}");
        let e = err(&format!("{s}seeds = [\"nohostport\"]"));
        assert!(e.contains("expected host:port"), "{e}");
        let e = err(&format!("{s}seeds = [\"h:99999\"]"));
        assert!(e.contains("port"), "{e}");
        let e = err(&format!("{s}name = \"bad name\""));
        assert!(e.contains("`name`"), "{e}");
        let e = err(&format!("{s}listen = \"nowhere\""));
        assert!(e.contains("listen"), "{e}");
        let e = err(&format!("{s}backend = \"tpu\""));
        assert!(e.contains("backend") || e.contains("tpu"), "{e}");
    }
}
