//! Test support: run part of a test in a child process that dies like
//! `kill -9` (no destructor runs, so RocksDB's memtables are never flushed
//! and whatever skipped its WAL is lost; what reached a file stays in the
//! page cache), then check from the parent what a restart finds.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_DIR_VAR: &str = "KEEPER_STORE_CRASH_CHILD_DIR";
/// Longest a crashing child may run.
const CHILD_LIMIT: Duration = Duration::from_secs(60);

/// In a child started by [`crash_in_child`]: runs `scenario` on the
/// directory the parent named, then aborts with what the scenario returned
/// still alive (so a store it returns is never closed or flushed). In any
/// other process: does nothing. Call it first in the test.
pub(crate) fn as_crashing_child<T>(scenario: impl FnOnce(&Path) -> T) {
    if let Some(dir) = std::env::var_os(CHILD_DIR_VAR) {
        let _alive = scenario(Path::new(&dir));
        std::process::abort();
    }
}

/// Runs the test `test` (its full name, e.g. `replication::tests::x`) in a
/// child process whose [`as_crashing_child`] works on `dir`, and returns
/// once the child has crashed. Panics if the scenario failed instead.
pub(crate) fn crash_in_child(test: &str, dir: &Path) {
    let exe = std::env::current_exe().expect("test binary path");
    let log_path = dir.with_extension("child-output");
    let log = std::fs::File::create(&log_path).expect("child output file");
    let mut child = Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_VAR, dir)
        .stdout(Stdio::from(log.try_clone().expect("clone output file")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn the crashing child");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if started.elapsed() > CHILD_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the crashing child of {test} ran longer than {CHILD_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if status.signal() != Some(libc::SIGABRT) {
        panic!(
            "the scenario of {test} did not run to its crash ({status}):\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }
}
