//! `keeper-tests`: the multi-process cluster harness and the end-to-end suites.
//!
//! A [`Cluster`] runs real `keeper` processes on 127.0.0.1 with ports chosen at
//! run time, each with its own data directory under one temp dir. Tests kill
//! (`SIGKILL`), stop (`SIGTERM`), restart and wipe members by PID, and every
//! process the harness started is killed when the `Cluster` is dropped, also
//! when a test panics. A cluster started with [`ClusterOptions::proxied`] routes
//! every peer link through the fault-injecting proxy of [`proxy`], and members can
//! also be paused (`SIGSTOP`) and resumed (`SIGCONT`).
//!
//! The chaos suite sits on top: [`workload`] drives clients and records a
//! [`history`], [`nemesis`] injects faults, [`check`] judges the history, and
//! [`chaos`] runs the whole thing (the `keeper-chaos` binary and
//! `tests/tests/chaos.rs` call it).

pub mod chaos;
pub mod check;
pub mod history;
pub mod iptables;
pub mod nemesis;
pub mod proxy;
pub mod workload;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Finds the `keeper` binary next to the running test executable
/// (`target/<profile>/keeper`), building it if it is missing.
pub fn keeper_bin() -> PathBuf {
    if let Ok(p) = std::env::var("KEEPER_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-binary>, or target/<profile>/<binary>
    let dir = exe.parent().expect("executable has a directory");
    let profile_dir = if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("target/<profile>/deps").to_path_buf()
    } else {
        dir.to_path_buf()
    };
    let bin = profile_dir.join("keeper");
    if !bin.exists() {
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-p", "keeper-server", "--bin", "keeper"]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "building keeper failed");
    }
    bin
}

/// Test ports come from below the kernel's ephemeral range (32768 and up by
/// default), so an outgoing connection (a member dialing its peers) can never
/// take a port that a member is about to listen on.
const TEST_PORT_RANGE: std::ops::Range<u16> = 20_000..32_000;

/// A free TCP port on 127.0.0.1 from [`TEST_PORT_RANGE`], never handed out
/// twice by this process (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let span = u64::from(TEST_PORT_RANGE.end - TEST_PORT_RANGE.start);
    let mut x = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    for _ in 0..10_000 {
        // xorshift: spread the picks of concurrent test processes.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = TEST_PORT_RANGE.start + (x % span) as u16;
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free port in {TEST_PORT_RANGE:?}");
}

/// One member of a test cluster.
pub struct Member {
    pub id: u64,
    pub client_addr: String,
    pub peer_addr: String,
    pub data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    /// This member's `--peers` (it differs per member when proxied).
    peers_flag: String,
    paused: bool,
}

impl Member {
    /// `http://host:port` of the member's client API.
    pub fn url(&self) -> String {
        format!("http://{}", self.client_addr)
    }
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
    /// True while the member is stopped with `SIGSTOP`.
    pub fn is_paused(&self) -> bool {
        self.paused
    }
    /// True when the harness started the member and has not killed it.
    pub fn is_started(&self) -> bool {
        self.child.is_some()
    }
}

/// How to start a [`Cluster`].
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Number of members (1 runs standalone).
    pub members: usize,
    /// Extra command-line flags for every member.
    pub extra_args: Vec<String>,
    /// Route every peer link through a fault-injecting [`proxy::Network`]
    /// (needs a tokio runtime).
    pub proxied: bool,
}

/// A set of real `keeper` processes. Size 1 runs standalone (no `--peers`).
pub struct Cluster {
    pub members: Vec<Member>,
    extra_args: Vec<String>,
    net: Option<proxy::Network>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` members and returns without waiting for a leader.
    pub fn start(n: usize) -> Cluster {
        Self::start_with(n, &[])
    }

    /// Starts `n` members with extra command-line flags for every member.
    pub fn start_with(n: usize, extra_args: &[&str]) -> Cluster {
        Self::start_opts(ClusterOptions {
            members: n,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            proxied: false,
        })
    }

    /// Starts a cluster as `opts` says and returns without waiting for a leader.
    pub fn start_opts(opts: ClusterOptions) -> Cluster {
        let n = opts.members;
        let dir = tempfile::Builder::new()
            .prefix("keeper-cluster-")
            .tempdir()
            .expect("tempdir");
        let mut members = Vec::new();
        for i in 0..n {
            let id = i as u64 + 1;
            let data_dir = dir.path().join(format!("m{id}"));
            std::fs::create_dir_all(&data_dir).expect("mkdir");
            members.push(Member {
                id,
                client_addr: format!("127.0.0.1:{}", free_port()),
                peer_addr: format!("127.0.0.1:{}", free_port()),
                log_path: dir.path().join(format!("m{id}.log")),
                data_dir,
                child: None,
                peers_flag: String::new(),
                paused: false,
            });
        }
        let net = opts.proxied.then(|| {
            let addrs: Vec<(u64, String)> = members
                .iter()
                .map(|m| (m.id, m.peer_addr.clone()))
                .collect();
            proxy::Network::start(&addrs)
        });
        // Member i dials every larger member j (the peer transport's rule), through
        // proxy(i→j) when proxied; its own and smaller members' entries are never dialed.
        let flags: Vec<String> = members
            .iter()
            .map(|me| {
                members
                    .iter()
                    .map(|m| {
                        let addr = match &net {
                            Some(net) if me.id < m.id => net
                                .dial_addr(me.id, m.id)
                                .expect("a proxy per pair")
                                .to_string(),
                            _ => m.peer_addr.clone(),
                        };
                        format!("{}={addr}", m.id)
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        for (m, flag) in members.iter_mut().zip(flags) {
            m.peers_flag = flag;
        }
        let mut cluster = Cluster {
            members,
            extra_args: opts.extra_args,
            net,
            _dir: dir,
        };
        for id in 1..=n as u64 {
            cluster.spawn(id);
        }
        cluster
    }

    fn member_mut(&mut self, id: u64) -> &mut Member {
        self.members
            .iter_mut()
            .find(|m| m.id == id)
            .unwrap_or_else(|| panic!("no member {id}"))
    }

    pub fn member(&self, id: u64) -> &Member {
        self.members
            .iter()
            .find(|m| m.id == id)
            .unwrap_or_else(|| panic!("no member {id}"))
    }

    /// The fault-injecting proxies of a proxied cluster.
    pub fn net(&self) -> Option<&proxy::Network> {
        self.net.as_ref()
    }

    /// Ids of every member.
    pub fn ids(&self) -> Vec<u64> {
        self.members.iter().map(|m| m.id).collect()
    }

    /// Starts member `id` (which must not be running).
    pub fn spawn(&mut self, id: u64) {
        let standalone = self.members.len() == 1;
        let extra = self.extra_args.clone();
        let bin = keeper_bin();
        let m = self.member_mut(id);
        let peers = m.peers_flag.clone();
        assert!(m.child.is_none(), "member {id} already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log_path)
            .expect("open member log");
        let mut cmd = Command::new(bin);
        cmd.arg("--data-dir")
            .arg(&m.data_dir)
            .arg("--client-addr")
            .arg(&m.client_addr);
        if !standalone {
            cmd.arg("--id")
                .arg(id.to_string())
                .arg("--peer-addr")
                .arg(&m.peer_addr)
                .arg("--peers")
                .arg(&peers);
        }
        cmd.args(&extra)
            .env(
                "RUST_LOG",
                std::env::var("KEEPER_TEST_LOG").unwrap_or("info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        m.child = Some(cmd.spawn().expect("spawn keeper"));
        m.paused = false;
    }

    /// `kill -9` member `id` and reap it.
    pub fn kill(&mut self, id: u64) {
        let m = self.member_mut(id);
        m.paused = false;
        if let Some(mut c) = m.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops member `id` with `SIGSTOP` (no-op if it is not running).
    pub fn pause(&mut self, id: u64) {
        let m = self.member_mut(id);
        if let Some(pid) = m.pid() {
            send_signal(pid, libc::SIGSTOP);
            m.paused = true;
        }
    }

    /// Resumes a paused member with `SIGCONT`.
    pub fn resume(&mut self, id: u64) {
        let m = self.member_mut(id);
        if let Some(pid) = m.pid() {
            send_signal(pid, libc::SIGCONT);
        }
        m.paused = false;
    }

    /// SIGTERM member `id` and wait (bounded) for it to exit; returns its exit code.
    pub fn stop(&mut self, id: u64, timeout: Duration) -> Option<i32> {
        let m = self.member_mut(id);
        let mut c = m.child.take()?;
        if std::mem::take(&mut m.paused) {
            send_signal(c.id(), libc::SIGCONT);
        }
        send_signal(c.id(), libc::SIGTERM);
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) for member `id` to exit on its own and reaps it;
    /// returns its exit code (`None`: still running at the deadline, or
    /// killed by a signal).
    pub fn wait_exit(&mut self, id: u64, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let m = self.member_mut(id);
        loop {
            let c = m.child.as_mut()?;
            if let Ok(Some(status)) = c.try_wait() {
                m.child = None;
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills member `id` and deletes its data directory.
    pub fn wipe(&mut self, id: u64) {
        self.kill(id);
        let m = self.member_mut(id);
        let _ = std::fs::remove_dir_all(&m.data_dir);
        std::fs::create_dir_all(&m.data_dir).expect("mkdir");
    }

    /// Client URLs of every member.
    pub fn urls(&self) -> Vec<String> {
        self.members.iter().map(Member::url).collect()
    }

    /// Every running member's `/v1/cluster` answer and last log lines, for
    /// failure messages.
    pub async fn describe(&self) -> String {
        let http = http_client();
        let mut out = String::new();
        for m in &self.members {
            if m.child.is_none() {
                out.push_str(&format!("member {}: not started\n", m.id));
                continue;
            }
            let view = get_json(&http, &format!("{}/v1/cluster", m.url()))
                .await
                .map(|v| v.to_string())
                .unwrap_or_else(|e| e);
            out.push_str(&format!(
                "member {} (pid {:?}): {view}\n{}\n",
                m.id,
                m.pid(),
                self.log_tail(m.id, 15)
            ));
        }
        out
    }

    /// Like [`Cluster::wait_for_leader`], but panics with every member's view
    /// and log tail when no leader is agreed in time.
    pub async fn expect_leader(&self, timeout: Duration) -> u64 {
        match self.wait_for_leader(timeout).await {
            Some(l) => l,
            None => panic!(
                "no leader agreed within {timeout:?}:\n{}",
                self.describe().await
            ),
        }
    }

    /// Where member `id` writes its stdout and stderr.
    pub fn log_path(&self, id: u64) -> PathBuf {
        self.member(id).log_path.clone()
    }

    /// The last lines of a member's log (for failure messages).
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.member(id).log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Waits until every running member answers `/v1/cluster` and they agree
    /// on one leader (or, standalone, until the member is ready). Returns the leader id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<u64> {
        let http = http_client();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let mut leaders = Vec::new();
            let mut answered = 0;
            for m in &self.members {
                if m.child.is_none() {
                    continue;
                }
                if let Ok(v) = get_json(&http, &format!("{}/v1/cluster", m.url())).await {
                    answered += 1;
                    if v["role"] == "standalone" {
                        return Some(m.id);
                    }
                    if let Some(l) = v["leader"].as_u64() {
                        leaders.push(l);
                    }
                }
            }
            let running = self.members.iter().filter(|m| m.child.is_some()).count();
            if answered == running
                && !leaders.is_empty()
                && leaders.len() == running
                && leaders.iter().all(|l| *l == leaders[0])
            {
                // The agreed leader must also say it is the leader.
                let l = leaders[0];
                if let Ok(v) =
                    get_json(&http, &format!("{}/v1/cluster", self.member(l).url())).await
                {
                    if v["role"] == "leader" {
                        return Some(l);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn send_signal(pid: u32, sig: libc::c_int) {
    // SAFETY-free: `kill(2)` through libc on a PID we spawned.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// An HTTP client with short timeouts for tests.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(1))
        .pool_max_idle_per_host(16)
        .build()
        .expect("reqwest client")
}

/// The `/metrics` text of the member at `url` (a test fails if it cannot be read).
pub async fn metrics_text(http: &reqwest::Client, url: &str) -> String {
    http.get(format!("{url}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body")
}

/// The value of the unlabelled sample `name` in `/metrics` text, if present.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
    })
}

/// GETs a URL and parses its JSON body (any status).
pub async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    let resp = http.get(url).send().await.map_err(|e| e.to_string())?;
    resp.json::<Value>().await.map_err(|e| e.to_string())
}

/// The outcome of one HTTP call in a test: status and JSON body (or Null).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
    /// The error code of an error body, if any.
    pub fn code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }
}

/// Sends a request with an optional JSON body; `Err` only for transport failures.
pub async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Result<Reply, String> {
    let mut req = http.request(method, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok(Reply { status, body })
}

/// `POST /v1/nodes{path}` with UTF-8 data.
pub async fn create(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    data: &str,
) -> Result<Reply, String> {
    call(
        http,
        reqwest::Method::POST,
        &format!("{base}/v1/nodes{path}"),
        Some(serde_json::json!({ "data": data })),
    )
    .await
}

/// `GET /v1/nodes{path}`; linearizable when asked.
pub async fn read(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    linearizable: bool,
) -> Result<Reply, String> {
    let q = if linearizable {
        "?consistency=linearizable"
    } else {
        ""
    };
    call(
        http,
        reqwest::Method::GET,
        &format!("{base}/v1/nodes{path}{q}"),
        None,
    )
    .await
}

/// Waits until every running member reports the same applied zxid and the
/// same tree digest; returns the digest, or `Err` with what differed.
pub async fn converged_digest(cluster: &Cluster, timeout: Duration) -> Result<u64, String> {
    let http = http_client();
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        let mut seen = Vec::new();
        for m in &cluster.members {
            if m.child.is_none() {
                continue;
            }
            match get_json(&http, &format!("{}/v1/cluster/digest", m.url())).await {
                Ok(v) => seen.push((m.id, v["applied_zxid"].as_u64(), v["digest"].as_u64())),
                Err(_) => seen.push((m.id, None, None)),
            }
        }
        let first = seen.first().map(|s| (s.1, s.2));
        if first.is_some_and(|(z, d)| z.is_some() && d.is_some())
            && seen.iter().all(|s| Some((s.1, s.2)) == first)
        {
            if let Some((_, Some(d))) = first {
                return Ok(d);
            }
        }
        last = format!("{seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("members did not converge: {last}"))
}
