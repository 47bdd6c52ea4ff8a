//! Backup and restore end to end: `keeperctl snapshot save` takes a backup from a
//! live member of a 3-member cluster under write load; `keeper restore` prepares the
//! data directories of a fresh 3-member cluster from it; the restored cluster serves
//! exactly the backup's tree (its digest is the one stamped in the backup, every
//! write at or below the backup's zxid is there and none after it) and takes new
//! writes. A corrupt or truncated backup is refused and nothing is restored.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keeper_tests::{converged_digest, create, http_client, keeper_bin, read, Cluster};
use serde_json::Value;

/// `keeperctl`, next to `keeper` (built if missing).
fn keeperctl_bin() -> PathBuf {
    let keeper = keeper_bin();
    let bin = keeper.with_file_name("keeperctl");
    if !bin.exists() {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-p", "keeper-cli", "--bin", "keeperctl"]);
        if keeper
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|n| n == "release")
        {
            cmd.arg("--release");
        }
        assert!(
            cmd.status().expect("cargo build").success(),
            "building keeperctl failed"
        );
    }
    bin
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run command")
}

fn restore(file: &Path, data_dir: &Path) -> Output {
    run(Command::new(keeper_bin())
        .arg("restore")
        .arg("--from")
        .arg(file)
        .arg("--data-dir")
        .arg(data_dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_write_load_restores_into_a_fresh_cluster_with_the_same_tree() {
    let source = Cluster::start(3);
    source.expect_leader(Duration::from_secs(30)).await;
    let http = http_client();
    let urls = source.urls();

    // Write load: two writers, each recording the czxid of every acknowledged create.
    let stop = Arc::new(AtomicBool::new(false));
    let written: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..2 {
        let (stop, written, http, urls) =
            (stop.clone(), written.clone(), http.clone(), urls.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let path = format!("/load-{w}-{i}");
                let url = &urls[(i as usize + w) % urls.len()];
                if let Ok(r) = create(&http, url, &path, "v").await {
                    if r.status == 201 {
                        let czxid = r.body["stat"]["czxid"].as_u64().expect("czxid");
                        written.lock().unwrap().push((path, czxid));
                    }
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;

    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("keeper.ksnap");
    let saved = run(Command::new(keeperctl_bin())
        .arg("--endpoints")
        .arg(source.member(2).url())
        .arg("--json")
        .arg("--timeout-ms")
        .arg("30000")
        .arg("snapshot")
        .arg("save")
        .arg(&backup));
    assert!(
        saved.status.success(),
        "keeperctl snapshot save failed: {}",
        String::from_utf8_lossy(&saved.stderr)
    );
    let saved: Value = serde_json::from_slice(&saved.stdout).expect("JSON summary");
    let backup_zxid = saved["zxid"].as_u64().expect("zxid");
    let backup_digest = saved["digest"].as_u64().expect("digest");

    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let written = written.lock().unwrap().clone();
    let before: Vec<_> = written.iter().filter(|(_, z)| *z <= backup_zxid).collect();
    let after: Vec<_> = written.iter().filter(|(_, z)| *z > backup_zxid).collect();
    assert!(
        !before.is_empty() && !after.is_empty(),
        "the backup was not taken under load: {} writes before, {} after",
        before.len(),
        after.len()
    );
    drop(source);

    // A fresh cluster whose members' data directories come from the backup.
    let mut restored = Cluster::start(3);
    for id in 1..=3 {
        restored.wipe(id);
        let out = restore(&backup, &restored.member(id).data_dir);
        assert!(
            out.status.success(),
            "keeper restore failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for id in 1..=3 {
        restored.spawn(id);
    }
    restored.expect_leader(Duration::from_secs(30)).await;
    let digest = converged_digest(&restored, Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        digest, backup_digest,
        "the restored tree differs from the backup's"
    );
    let url = restored.member(1).url();
    for (path, _) in before.iter().step_by(7) {
        let r = read(&http, &url, path, false).await.unwrap();
        assert_eq!(r.status, 200, "{path} (in the backup) is missing");
    }
    for (path, _) in &after {
        let r = read(&http, &url, path, false).await.unwrap();
        assert_eq!(
            r.status, 404,
            "{path} was written after the backup but is restored"
        );
    }
    // The restored cluster takes writes, with zxids above the backup's.
    let r = create(&http, &url, "/after-restore", "x").await.unwrap();
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert!(r.body["stat"]["czxid"].as_u64().unwrap() > backup_zxid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_or_truncated_backups_are_refused_and_nothing_is_restored() {
    let source = Cluster::start(1);
    source.expect_leader(Duration::from_secs(30)).await;
    let http = http_client();
    for i in 0..20 {
        create(&http, &source.member(1).url(), &format!("/n{i}"), "data")
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("good.ksnap");
    let saved = run(Command::new(keeperctl_bin())
        .arg("--endpoints")
        .arg(source.member(1).url())
        .arg("snapshot")
        .arg("save")
        .arg(&backup));
    assert!(
        saved.status.success(),
        "{}",
        String::from_utf8_lossy(&saved.stderr)
    );
    let good = std::fs::read(&backup).unwrap();

    let mut corrupt = good.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0x01;
    let cases = [
        ("corrupt", corrupt, "checksum"),
        (
            "truncated",
            good[..good.len() * 2 / 3].to_vec(),
            "truncated",
        ),
    ];
    for (what, bytes, expected) in cases {
        let file = dir.path().join(format!("{what}.ksnap"));
        std::fs::write(&file, bytes).unwrap();
        let target = dir.path().join(format!("member-{what}"));
        let out = restore(&file, &target);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{what} backup was accepted: {stderr}"
        );
        assert!(
            stderr.contains("refused") && stderr.contains(expected),
            "{what}: unclear error: {stderr}"
        );
        assert!(
            !target.exists(),
            "{what}: a half-restored {target:?} was left"
        );
        let leftovers: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.contains("restore"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "{what}: staging left behind: {leftovers:?}"
        );
    }
    // The good file restores.
    let out = restore(&backup, &dir.path().join("member-good"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
