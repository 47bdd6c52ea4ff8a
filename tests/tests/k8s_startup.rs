//! Kubernetes-native startup, without Kubernetes: `keeper` processes configured
//! exactly as deploy/k8s/base configures the StatefulSet's pods (the ConfigMap's
//! `KEEPER_*` variables: id from the hostname's ordinal, peers from the pod DNS
//! pattern), with two test-only substitutions: `KEEPER_HOSTNAME` stands in for the
//! pod's hostname, and `KEEPER_PEER_HOSTS_FILE` maps the pods' DNS names to
//! 127.0.0.1 ports, as cluster DNS would once the pods exist.
//!
//! Proves: the members take ids 1..3 from `keeper-0..2`, form a cluster and serve
//! writes; a member whose peers do not resolve yet stays up, keeps redialing with
//! backoff and is not ready, and joins once the names resolve.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keeper_tests::{call, create, free_port, get_json, http_client, keeper_bin, read};
use serde_json::Value;

const NAMESPACE: &str = "keeper-test";
/// How long a cluster gets to elect a leader and serve a write.
const FORM_TIMEOUT: Duration = Duration::from_secs(30);

/// The pod DNS name of ordinal `i`, as the StatefulSet's headless Service gives it.
fn pod_peer_name(i: usize) -> String {
    format!("keeper-{i}.keeper-peers.{NAMESPACE}.svc.cluster.local:7888")
}

/// The `KEEPER_*` variables of deploy/k8s/base/keeper.env, read from the file itself
/// so the test runs what the ConfigMap ships.
fn configmap_env() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/k8s/base/keeper.env");
    let text = std::fs::read_to_string(&path).expect("read deploy/k8s/base/keeper.env");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One pod: a keeper process with the StatefulSet's environment.
struct Pod {
    ordinal: usize,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Pod {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn start(&mut self, hosts_file: &Path) {
        let log = std::fs::File::create(&self.log).expect("log file");
        let mut cmd = Command::new(keeper_bin());
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(configmap_env())
            // The downward API's metadata.namespace.
            .env("KEEPER_NAMESPACE", NAMESPACE)
            // Test-only stand-ins for the pod's hostname, its volume and its ports.
            .env("KEEPER_HOSTNAME", format!("keeper-{}", self.ordinal))
            .env("KEEPER_DATA_DIR", &self.data_dir)
            .env(
                "KEEPER_CLIENT_ADDR",
                format!("127.0.0.1:{}", self.client_port),
            )
            .env("KEEPER_PEER_ADDR", format!("127.0.0.1:{}", self.peer_port))
            .env("KEEPER_PEER_HOSTS_FILE", hosts_file)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        self.child = Some(cmd.spawn().expect("spawn keeper"));
    }

    fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn pods(dir: &Path, n: usize) -> Vec<Pod> {
    (0..n)
        .map(|ordinal| Pod {
            ordinal,
            client_port: free_port(),
            peer_port: free_port(),
            data_dir: dir.join(format!("keeper-{ordinal}")),
            log: dir.join(format!("keeper-{ordinal}.log")),
            child: None,
        })
        .collect()
}

/// Writes the name -> address map for `which` pods (what DNS resolves right now).
fn write_hosts(path: &Path, pods: &[Pod], which: &[usize]) {
    let mut text = String::from("# pod DNS name -> test address\n");
    for &i in which {
        text.push_str(&format!(
            "{} 127.0.0.1:{}\n",
            pod_peer_name(i),
            pods[i].peer_port
        ));
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write hosts");
    std::fs::rename(&tmp, path).expect("rename hosts");
}

async fn cluster_view(pod: &Pod) -> Option<Value> {
    get_json(&http_client(), &format!("{}/v1/cluster", pod.url()))
        .await
        .ok()
}

async fn ready(pod: &Pod) -> bool {
    call(
        &http_client(),
        reqwest::Method::GET,
        &format!("{}/readyz", pod.url()),
        None,
    )
    .await
    .is_ok_and(|r| r.status == 200)
}

/// Waits until every pod in `which` is ready and they agree on a leader.
async fn wait_formed(pods: &[Pod], which: &[usize], timeout: Duration) -> Result<u64, String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        let mut leaders = Vec::new();
        let mut all_ready = true;
        for &i in which {
            all_ready &= ready(&pods[i]).await;
            let view = cluster_view(&pods[i]).await;
            leaders.push(view.as_ref().and_then(|v| v["leader"].as_u64()));
            last = format!("{last}\nkeeper-{i}: {view:?}");
        }
        if all_ready && leaders[0].is_some() && leaders.iter().all(|l| *l == leaders[0]) {
            return Ok(leaders[0].unwrap_or_default());
        }
        last = last
            .lines()
            .rev()
            .take(which.len())
            .collect::<Vec<_>>()
            .join("\n");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("pods {which:?} did not form a cluster:\n{last}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_pods_take_ids_from_hostnames_form_a_cluster_and_serve_writes() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    let mut pods = pods(dir.path(), 3);
    write_hosts(&hosts, &pods, &[0, 1, 2]);
    for pod in &mut pods {
        pod.start(&hosts);
    }
    if let Err(e) = wait_formed(&pods, &[0, 1, 2], FORM_TIMEOUT).await {
        panic!(
            "{e}\n{}",
            pods.iter()
                .map(Pod::log_tail)
                .collect::<Vec<_>>()
                .join("\n---\n")
        );
    }
    for pod in &pods {
        let view = cluster_view(pod).await.expect("cluster view");
        assert_eq!(
            view["id"].as_u64(),
            Some(pod.ordinal as u64 + 1),
            "keeper-{} must be member {}",
            pod.ordinal,
            pod.ordinal + 1
        );
        let peers: Vec<String> = view["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| m["peer_addr"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(peers, (0..3).map(pod_peer_name).collect::<Vec<_>>());
    }
    let http = http_client();
    for (i, pod) in pods.iter().enumerate() {
        let r = create(&http, &pod.url(), &format!("/from-keeper-{i}"), "x")
            .await
            .unwrap();
        assert_eq!(r.status, 201, "write through keeper-{i}: {:?}", r.body);
    }
    for pod in &pods {
        let r = read(&http, &pod.url(), "/from-keeper-2", true)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_whose_peers_do_not_resolve_yet_waits_and_joins_once_they_do() {
    let dir = tempfile::tempdir().unwrap();
    let mut pods = pods(dir.path(), 3);
    // keeper-0 starts first, while no peer name resolves (its own file is empty).
    let lonely_hosts = dir.path().join("hosts-keeper-0");
    write_hosts(&lonely_hosts, &pods, &[]);
    pods[0].start(&lonely_hosts);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        pods[0].running(),
        "keeper-0 crashed:\n{}",
        pods[0].log_tail()
    );
    assert!(!ready(&pods[0]).await, "keeper-0 is ready without a quorum");
    let metrics = reqwest::get(format!("{}/metrics", pods[0].url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let failures: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("keeper_peer_dial_failures_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(failures >= 2, "keeper-0 did not keep redialing:\n{metrics}");

    // The other two come up with working names and form a quorum of their own.
    let hosts = dir.path().join("hosts");
    write_hosts(&hosts, &pods, &[0, 1, 2]);
    pods[1].start(&hosts);
    pods[2].start(&hosts);
    if let Err(e) = wait_formed(&pods, &[1, 2], FORM_TIMEOUT).await {
        panic!("{e}\n{}\n---\n{}", pods[1].log_tail(), pods[2].log_tail());
    }
    assert!(
        pods[0].running(),
        "keeper-0 crashed:\n{}",
        pods[0].log_tail()
    );
    assert!(!ready(&pods[0]).await, "keeper-0 cannot reach anyone yet");

    // Its peers' names now resolve for keeper-0 too: it joins without a restart.
    write_hosts(&lonely_hosts, &pods, &[0, 1, 2]);
    if let Err(e) = wait_formed(&pods, &[0, 1, 2], FORM_TIMEOUT).await {
        panic!("{e}\n{}", pods[0].log_tail());
    }
    let http = http_client();
    let r = create(&http, &pods[0].url(), "/joined", "late")
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{:?}", r.body);
}
