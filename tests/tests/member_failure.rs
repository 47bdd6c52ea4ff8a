//! A member whose replication fails must not linger as a zombie (issue 9,
//! problem 4): it stops claiming its role, and the process exits non-zero
//! so that a supervisor restarts it; the other members keep serving.

use keeper_tests::{converged_digest, create, http_client, Cluster};
use std::time::{Duration, Instant};

const ELECTION_LIMIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_log_disk_fails_exits_nonzero_and_the_others_keep_serving() {
    tokio::time::timeout(Duration::from_secs(120), async {
        // Small segments: the log opens a new segment file every few writes.
        let mut cluster = Cluster::start_with(
            3,
            &["--log-segment-bytes", "4096", "--shutdown-grace-ms", "500"],
        );
        let leader = cluster.expect_leader(ELECTION_LIMIT).await;
        let victim = cluster
            .members
            .iter()
            .map(|m| m.id)
            .find(|id| *id != leader)
            .expect("a follower");
        // The victim's log directory becomes a plain file: its next segment
        // cannot be created, so its next log sync fails (a broken disk).
        let log_dir = cluster.member(victim).data_dir.join("log");
        std::fs::remove_dir_all(&log_dir).expect("remove the log dir");
        std::fs::write(&log_dir, b"not a directory").expect("plant a file");
        let http = http_client();
        let lurl = cluster.member(leader).url();
        let started = Instant::now();
        let mut exit = None;
        let mut i = 0;
        while started.elapsed() < Duration::from_secs(30) {
            let r = create(&http, &lurl, &format!("/k{i}"), &"x".repeat(512))
                .await
                .expect("write");
            assert_eq!(r.status, 201, "{:?}", r.body);
            i += 1;
            if !cluster
                .members
                .iter_mut()
                .any(|m| m.id == victim && m.is_running())
            {
                exit = cluster.wait_exit(victim, Duration::from_secs(5));
                break;
            }
        }
        let log = cluster.log_tail(victim, 40);
        assert!(
            log.contains("replication driver stopped on a fatal error"),
            "no fatal stop in the victim's log:\n{log}"
        );
        assert!(
            matches!(exit, Some(code) if code != 0),
            "the failed member did not exit non-zero (exit {exit:?}):\n{log}"
        );
        // The remaining pair keeps serving, with no acknowledged write lost.
        for j in 0..20 {
            let r = create(&http, &lurl, &format!("/after{j}"), "y")
                .await
                .expect("write");
            assert_eq!(r.status, 201, "{:?}", r.body);
        }
        // Restarted on a repaired disk, it rejoins and converges.
        std::fs::remove_file(&log_dir).expect("repair");
        cluster.spawn(victim);
        converged_digest(&cluster, Duration::from_secs(60))
            .await
            .expect("the restarted member converges");
    })
    .await
    .expect("the test exceeded its time limit");
}
