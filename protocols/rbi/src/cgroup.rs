//! A control group per browser, capping its memory and its number of processes, where the
//! platform lets ztproxy make one.
//!
//! V8's heap limit bounds JavaScript objects only: array buffers, images, canvases and the
//! browser's own processes are outside it. A group bounds all of them: past its memory limit
//! the kernel's OOM killer ends a process of the browser (the session then ends with "The
//! remote browser crashed"), and past its process limit `fork` fails.
//!
//! The group is made under ztproxy's own control group:
//! * cgroup v2 (one unified hierarchy): `memory.max` and `pids.max`. The parent must have
//!   the `memory` and `pids` controllers enabled for its children (`cgroup.subtree_control`)
//!   and be writable by ztproxy: under systemd, `Delegate=yes`;
//! * cgroup v1: a group in each of the `memory` (`memory.limit_in_bytes`, and
//!   `memory.memsw.limit_in_bytes` where swap is accounted) and `pids` (`pids.max`)
//!   hierarchies.
//!
//! Where neither works (no permission, no controller), [`Group::create`] says why, and the
//! caller runs the browser with its other bounds only. The browser is put in the group
//! before it runs ([`Group::procs`]: the launcher writes its own pid there and then executes
//! Chromium), so no process of it starts outside. [`Group::remove`] removes the group once
//! its processes are gone.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What one browser may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Bytes of memory, page cache included.
    pub memory: u64,
    /// Processes and threads.
    pub processes: u32,
}

/// Why no group could be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// No cgroup file system with the memory and pids controllers was found for ztproxy.
    #[error("no cgroup with the memory and pids controllers is available to ztproxy")]
    Unavailable,
    /// The group or one of its limits could not be written.
    #[error("cannot make a cgroup under {parent}: {error}")]
    Write {
        /// Where.
        parent: String,
        /// Why.
        error: std::io::ErrorKind,
    },
}

/// A browser's control group (one directory per hierarchy).
#[derive(Debug)]
pub struct Group {
    dirs: Vec<PathBuf>,
}

static NEXT: AtomicU64 = AtomicU64::new(0);
/// How often removal is tried while the group's processes exit.
const RETRY: Duration = Duration::from_millis(20);

impl Group {
    /// Makes a group with `caps` under ztproxy's own, in `root` (`/sys/fs/cgroup`).
    pub fn create(root: &Path, caps: Caps) -> Result<Self, GroupError> {
        let own =
            std::fs::read_to_string("/proc/self/cgroup").map_err(|_| GroupError::Unavailable)?;
        Self::create_for(root, &own, caps)
    }

    /// [`Self::create`] for a process whose `/proc/<pid>/cgroup` reads `own`.
    fn create_for(root: &Path, own: &str, caps: Caps) -> Result<Self, GroupError> {
        let name = format!(
            "zt-rbi-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let unified = root.join("cgroup.controllers");
        if unified.exists() {
            let path = own
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .ok_or(GroupError::Unavailable)?;
            let parent = root.join(path.trim_start_matches('/'));
            let enabled = std::fs::read_to_string(parent.join("cgroup.subtree_control"))
                .map_err(|_| GroupError::Unavailable)?;
            let has = |c: &str| enabled.split_whitespace().any(|e| e == c);
            if !has("memory") || !has("pids") {
                return Err(GroupError::Unavailable);
            }
            let group = Self {
                dirs: vec![parent.join(&name)],
            };
            group.make(&[
                (0, "memory.max", caps.memory.to_string()),
                (0, "memory.swap.max", "0".into()),
                (0, "pids.max", caps.processes.to_string()),
            ])?;
            return Ok(group);
        }
        // v1: "N:memory:/path" and "N:pids:/path".
        let path_of = |controller: &str| {
            own.lines().find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                controllers
                    .split(',')
                    .any(|c| c == controller)
                    .then(|| path.trim_start_matches('/').to_owned())
            })
        };
        let (Some(memory), Some(pids)) = (path_of("memory"), path_of("pids")) else {
            return Err(GroupError::Unavailable);
        };
        let memory = root.join("memory").join(memory);
        let pids = root.join("pids").join(pids);
        // Each must be a cgroup directory (a hierarchy's root has no limit files of its own).
        if !memory.join("cgroup.procs").exists() || !pids.join("cgroup.procs").exists() {
            return Err(GroupError::Unavailable);
        }
        let group = Self {
            dirs: vec![memory.join(&name), pids.join(name)],
        };
        group.make(&[
            (0, "memory.limit_in_bytes", caps.memory.to_string()),
            (1, "pids.max", caps.processes.to_string()),
        ])?;
        // Swap counted with memory, where the kernel accounts it.
        let memsw = group.dirs[0].join("memory.memsw.limit_in_bytes");
        if memsw.exists() {
            let _ = std::fs::write(memsw, caps.memory.to_string());
        }
        Ok(group)
    }

    /// Makes the directories and writes `limits` (directory index, file, value); on failure
    /// nothing is left behind.
    fn make(&self, limits: &[(usize, &str, String)]) -> Result<(), GroupError> {
        let result = (|| {
            for dir in &self.dirs {
                std::fs::create_dir(dir)?;
            }
            for (index, file, value) in limits {
                let path = self.dirs[*index].join(file);
                // memory.swap.max is absent without swap accounting.
                if *file == "memory.swap.max" && !path.exists() {
                    continue;
                }
                std::fs::write(path, value)?;
            }
            Ok::<(), std::io::Error>(())
        })();
        result.map_err(|error| {
            for dir in &self.dirs {
                let _ = std::fs::remove_dir(dir);
            }
            GroupError::Write {
                parent: self.dirs[0]
                    .parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                error: error.kind(),
            }
        })
    }

    /// The files a process writes its pid into to join the group (one per hierarchy).
    pub fn procs(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Removes the group once its processes have gone (within a second).
    pub async fn remove(self) {
        for _ in 0..50 {
            if self.try_remove() {
                return;
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// [`Self::remove`], for a thread of its own.
    pub fn remove_blocking(self) {
        for _ in 0..50 {
            if self.try_remove() {
                return;
            }
            std::thread::sleep(RETRY);
        }
    }

    /// Whether every directory is gone.
    fn try_remove(&self) -> bool {
        self.dirs.iter().all(|dir| match std::fs::remove_dir(dir) {
            Ok(()) => true,
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        })
    }
}

/// The shell script that joins the group and executes the browser: `$1…` are the
/// `cgroup.procs` files, up to `--`, then the program and its arguments.
pub const LAUNCHER: &str =
    r#"while [ "$1" != "--" ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@""#;

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: Caps = Caps {
        memory: 768 << 20,
        processes: 400,
    };

    fn read(path: PathBuf) -> String {
        std::fs::read_to_string(path).unwrap().trim().to_owned()
    }

    #[test]
    fn v2_needs_both_controllers_delegated_and_writes_both_limits() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpu memory pids").unwrap();
        let own = root.path().join("system.slice/ztproxy.service");
        std::fs::create_dir_all(&own).unwrap();
        let cgroup = "0::/system.slice/ztproxy.service\n";
        std::fs::write(own.join("cgroup.subtree_control"), "memory").unwrap();
        assert!(matches!(
            Group::create_for(root.path(), cgroup, CAPS),
            Err(GroupError::Unavailable)
        ));
        std::fs::write(own.join("cgroup.subtree_control"), "cpu memory pids").unwrap();
        let group = Group::create_for(root.path(), cgroup, CAPS).unwrap();
        assert_eq!(group.dirs.len(), 1);
        assert!(group.dirs[0].starts_with(&own));
        assert_eq!(read(group.dirs[0].join("memory.max")), "805306368");
        assert_eq!(read(group.dirs[0].join("pids.max")), "400");
        assert_eq!(group.procs(), vec![group.dirs[0].join("cgroup.procs")]);
    }

    #[test]
    fn v1_uses_the_memory_and_pids_hierarchies_and_leaves_nothing_when_it_fails() {
        let root = tempfile::tempdir().unwrap();
        let memory = root.path().join("memory/process_api/abc");
        let pids = root.path().join("pids");
        for dir in [&memory, &pids] {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("cgroup.procs"), "").unwrap();
        }
        let cgroup = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/abc\n0::/\n";
        let group = Group::create_for(root.path(), cgroup, CAPS).unwrap();
        assert_eq!(
            read(group.dirs[0].join("memory.limit_in_bytes")),
            "805306368"
        );
        assert_eq!(read(group.dirs[1].join("pids.max")), "400");
        assert!(group.dirs[0].starts_with(&memory) && group.dirs[1].starts_with(&pids));
        // Without a pids hierarchy for the process, there is no group.
        let no_pids = "4:memory:/process_api/abc\n";
        assert!(matches!(
            Group::create_for(root.path(), no_pids, CAPS),
            Err(GroupError::Unavailable)
        ));
        // A pids cgroup that is not there: no group, and nothing left in the memory one.
        let missing = "8:pids:/gone\n4:memory:/process_api/abc\n";
        let before = std::fs::read_dir(&memory).unwrap().count();
        assert!(Group::create_for(root.path(), missing, CAPS).is_err());
        assert_eq!(std::fs::read_dir(&memory).unwrap().count(), before);
    }
}
