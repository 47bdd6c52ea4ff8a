//! Smoke test of `keeper-bench` against a real standalone `keeper` process.
//!
//! Starts `keeper` on a free port with a temp data dir, runs `keeper-bench --json` for about
//! a second per op (set, get, lget, create, and the lock ops lock and handoff) and checks
//! that requests went through without errors. Both processes are killed by PID on drop (also when an assertion fails), and
//! every wait is bounded. `keeper` belongs to another package: it is found next to this
//! test's target directory (or `KEEPER_BIN`), and built first if it is missing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long `keeper` gets to answer `/healthz` after it was started.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Hard bound on one `keeper-bench` run (it should take about 1.5 s).
const BENCH_RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Kills the child by PID when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `keeper` binary of this build profile (`target/<profile>/keeper`), built if missing.
fn keeper_bin() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("KEEPER_BIN") {
        return p.into();
    }
    let bench = std::path::PathBuf::from(env!("CARGO_BIN_EXE_keeper-bench"));
    let profile_dir = bench
        .parent()
        .expect("keeper-bench lives in target/<profile>");
    let bin = profile_dir.join("keeper");
    if !bin.exists() {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-p", "keeper-server", "--bin", "keeper"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "building keeper failed");
    }
    bin
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// A minimal `GET /healthz` over a raw socket; true on a 200 answer.
fn healthy(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer.starts_with(b"HTTP/1.1 200")
}

fn start_keeper(data_dir: &std::path::Path) -> (KillOnDrop, SocketAddr) {
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let child = Command::new(keeper_bin())
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--client-addr")
        .arg(addr.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn keeper");
    let mut server = KillOnDrop(child);
    let deadline = Instant::now() + SERVER_START_TIMEOUT;
    while !healthy(addr) {
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!("keeper exited before it was healthy: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "keeper not healthy on {addr} within {SERVER_START_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, addr)
}

/// Runs keeper-bench with `args`, killing it after [`BENCH_RUN_TIMEOUT`].
fn run_bench(args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_keeper-bench"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keeper-bench");
    let mut bench = KillOnDrop(child);
    let deadline = Instant::now() + BENCH_RUN_TIMEOUT;
    loop {
        match bench.0.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => panic!("keeper-bench {args:?} still running after {BENCH_RUN_TIMEOUT:?}"),
            Err(e) => panic!("waiting for keeper-bench: {e}"),
        }
    }
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    if let Some(mut out) = bench.0.stdout.take() {
        let _ = out.read_to_end(&mut stdout);
    }
    if let Some(mut err) = bench.0.stderr.take() {
        let _ = err.read_to_end(&mut stderr);
    }
    let status = bench.0.wait().expect("exit status");
    Output {
        status,
        stdout,
        stderr,
    }
}

#[test]
fn keeper_bench_drives_a_standalone_keeper_without_errors() {
    let data = tempfile::tempdir().expect("temp dir");
    let (_server, addr) = start_keeper(data.path());
    let endpoint = addr.to_string();
    for op in ["set", "get", "lget", "create", "lock", "handoff"] {
        let output = run_bench(&[
            "--endpoints",
            &endpoint,
            "--op",
            op,
            "--clients",
            "4",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
            "--keys",
            "50",
            "--value-size",
            "64",
            "--prefix",
            "/smoke",
            "--json",
        ]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{op}: exit {}\n{stderr}",
            output.status
        );
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 1, "{op}: --json prints one line: {stdout}");
        let report: serde_json::Value = serde_json::from_str(lines[0]).expect("JSON report");
        assert_eq!(report["op"], op);
        assert_eq!(report["clients"], 4);
        let ops = report["ops"].as_u64().expect("ops");
        assert!(ops > 0, "{op}: no successful requests: {stdout}\n{stderr}");
        assert_eq!(
            report["errors"]["total"], 0,
            "{op}: errors: {stdout}\n{stderr}"
        );
        let p50 = report["latency_ms"]["p50"].as_f64().expect("p50");
        let max = report["latency_ms"]["max"].as_f64().expect("max");
        assert!(p50 > 0.0 && p50 <= max, "{op}: latency {stdout}");
        let rate = report["ops_per_sec"].as_f64().expect("ops_per_sec");
        assert!(
            (rate - ops as f64).abs() < 1e-6 * rate.max(1.0),
            "{op}: 1 s window: {stdout}"
        );
    }
}
