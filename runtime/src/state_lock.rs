//! One process per state directory: a node holds an exclusive OS file lock on
//! `<state_dir>/node.lock` for as long as it runs.
//!
//! The node id is derived from the key in the state directory, so two processes sharing one
//! folder (several nodes started from the same working directory, a cloned SD card mounted
//! twice) would silently become one member. The lock makes the second process fail at once
//! with [`StateLockError::Busy`], naming the folder and the process holding it (its pid is
//! written into the lock file). The lock is advisory (`flock` on Unix, `LockFileEx` on
//! Windows) and released by the OS when the holder exits, however it exits: a stale lock
//! file left behind by a crash never blocks a restart.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Name of the lock file inside the state directory.
pub const LOCK_FILE: &str = "node.lock";

/// Why the state directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum StateLockError {
    /// Another process (or another node in this process) uses the folder.
    #[error(
        "state directory {dir} is already in use by {holder}: each node needs its own state \
         directory (set `state_dir` in cluster.toml or pass --state-dir)"
    )]
    Busy {
        /// The state directory.
        dir: PathBuf,
        /// Who holds it, e.g. `another edgeray process (pid 1234)`.
        holder: String,
    },
    /// The folder or the lock file could not be created or locked.
    #[error("cannot lock state directory {dir}: {source}")]
    Io {
        /// The state directory.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// An exclusive lock on a state directory, released when dropped (or when the process exits).
#[derive(Debug)]
pub struct StateLock {
    dir: PathBuf,
    // Held open: closing the file releases the lock.
    _file: File,
}

impl StateLock {
    /// Creates `state_dir` if needed and locks it, writing this process's pid into the lock
    /// file. Fails at once (never waits) when another holder has it.
    pub fn acquire(state_dir: &Path) -> Result<StateLock, StateLockError> {
        let io = |source| StateLockError::Io {
            dir: state_dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(io)?;
        let path = state_dir.join(LOCK_FILE);
        // Not truncated on open: the holder's pid must stay readable for the error message.
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(StateLockError::Busy {
                    dir: state_dir.to_path_buf(),
                    holder: describe_holder(&text),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let record = format!("{}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(record.as_bytes()))
            .and_then(|()| file.flush())
            .map_err(io)?;
        Ok(StateLock {
            dir: state_dir.to_path_buf(),
            _file: file,
        })
    }

    /// The locked folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// `another edgeray process (pid 1234)` from the lock file's text (the holder's pid), or a
/// plain description when the pid is not readable (yet).
fn describe_holder(text: &str) -> String {
    match text.trim().parse::<u32>() {
        Ok(pid) if pid == std::process::id() => {
            format!("another node in this process (pid {pid})")
        }
        Ok(pid) => format!("another edgeray process (pid {pid})"),
        Err(_) => "another edgeray process (pid unknown)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_fails_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let a = StateLock::acquire(&state).unwrap();
        assert_eq!(a.dir(), state);
        let text = std::fs::read_to_string(state.join(LOCK_FILE)).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        let e = StateLock::acquire(&state).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, StateLockError::Busy { .. }), "{msg}");
        assert!(msg.contains(&state.display().to_string()), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(a);
        let b = StateLock::acquire(&state).unwrap();
        drop(b);
    }

    #[test]
    fn holder_descriptions() {
        assert_eq!(
            describe_holder("1234\n"),
            "another edgeray process (pid 1234)"
        );
        assert_eq!(describe_holder(""), "another edgeray process (pid unknown)");
        assert!(describe_holder(&std::process::id().to_string()).contains("this process"));
    }
}
