//! `/readyz` end to end, as the StatefulSet's readiness probe sees it: 503 while a
//! member has not joined a quorum, 200 once it has and is caught up, 503 again when
//! it loses its quorum, 200 when the quorum is back. `keeper_ready` in /metrics says
//! the same.

use std::time::{Duration, Instant};

use keeper_tests::{call, http_client, Cluster};

async fn readyz(url: &str) -> Option<u16> {
    call(
        &http_client(),
        reqwest::Method::GET,
        &format!("{url}/readyz"),
        None,
    )
    .await
    .ok()
    .map(|r| r.status)
}

async fn wait_readyz(cluster: &Cluster, id: u64, want: u16, timeout: Duration) {
    let url = cluster.member(id).url();
    let deadline = Instant::now() + timeout;
    loop {
        if readyz(&url).await == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "member {id}: /readyz not {want} within {timeout:?}:\n{}",
            cluster.describe().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ready_gauge(url: &str) -> Option<String> {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("keeper_ready "))
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_quorum_membership() {
    let mut cluster = Cluster::start(3);
    // Only member 1 runs: it is up (healthz) but has no quorum to join.
    cluster.kill(1);
    cluster.kill(2);
    cluster.kill(3);
    cluster.spawn(1);
    let url = cluster.member(1).url();
    let deadline = Instant::now() + Duration::from_secs(20);
    while call(
        &http_client(),
        reqwest::Method::GET,
        &format!("{url}/healthz"),
        None,
    )
    .await
    .map_or(true, |r| r.status != 200)
    {
        assert!(Instant::now() < deadline, "member 1 never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..20 {
        assert_eq!(readyz(&url).await, Some(503), "ready without a quorum");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready_gauge(&url).await.as_deref(), Some("0"));

    // A second member makes a quorum: both become ready.
    cluster.spawn(2);
    wait_readyz(&cluster, 1, 200, Duration::from_secs(20)).await;
    wait_readyz(&cluster, 2, 200, Duration::from_secs(20)).await;
    assert_eq!(ready_gauge(&url).await.as_deref(), Some("1"));

    // The quorum is lost: member 1 stops being ready (leader steps down or
    // follower times out), without restarting.
    cluster.kill(2);
    wait_readyz(&cluster, 1, 503, Duration::from_secs(10)).await;

    // Back: ready again.
    cluster.spawn(3);
    wait_readyz(&cluster, 1, 200, Duration::from_secs(20)).await;
    wait_readyz(&cluster, 3, 200, Duration::from_secs(20)).await;
}
