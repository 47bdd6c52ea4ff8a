//! keeperctl as a process against the client's in-process mock server:
//! outputs, `--json`, data sources, exit statuses, sessions.

#[path = "../../client/tests/common/mod.rs"]
mod common;

use std::process::Output;
use std::time::Duration;

use common::{dead_endpoint, start_member, Cluster, Member};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

/// Bound on one keeperctl run.
const RUN_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs keeperctl with `args` against `endpoints`, feeding `stdin`.
async fn ctl_at(endpoints: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_keeperctl"));
    cmd.args(args)
        .env("KEEPER_ENDPOINTS", endpoints)
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn keeperctl");
    let mut pipe = child.stdin.take().expect("stdin");
    if let Some(bytes) = stdin {
        pipe.write_all(bytes).await.expect("write stdin");
    }
    drop(pipe);
    tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
        .await
        .expect("keeperctl exceeded its time bound")
        .expect("keeperctl output")
}

async fn ctl(m: &Member, args: &[&str]) -> Output {
    ctl_at(&m.url, args, None).await
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn json_out(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_commands_print_human_output() {
    let cluster = Cluster::new();
    let m = start_member(&cluster).await;

    let o = ctl(&m, &["create", "/app", "hello"]).await;
    assert_eq!(
        (code(&o), stdout(&o)),
        (0, "/app\n".to_string()),
        "{}",
        stderr(&o)
    );
    let o = ctl(&m, &["get", "/app"]).await;
    assert_eq!((code(&o), stdout(&o)), (0, "hello".to_string()));
    let o = ctl(&m, &["set", "/app", "world", "--version", "0"]).await;
    assert_eq!((code(&o), stdout(&o)), (0, String::new()), "{}", stderr(&o));
    let o = ctl(&m, &["stat", "/app"]).await;
    let text = stdout(&o);
    assert_eq!(text.lines().count(), 11, "{text}");
    assert!(
        text.contains("\nversion: 1\n") && text.contains("data_length: 5\n"),
        "{text}"
    );

    for child in ["b", "a", "c"] {
        let o = ctl(&m, &["create", &format!("/app/{child}")]).await;
        assert_eq!(code(&o), 0, "{}", stderr(&o));
    }
    let o = ctl(&m, &["create", "/app/s-", "-s"]).await;
    assert_eq!(stdout(&o), "/app/s-0000000003\n");
    let o = ctl(&m, &["ls", "/app"]).await;
    assert_eq!(stdout(&o), "a\nb\nc\ns-0000000003\n");
    let o = ctl(&m, &["ls", "/app", "--limit", "2", "--after", "a"]).await;
    assert_eq!(stdout(&o), "b\nc\n");
    let o = ctl(&m, &["ls"]).await;
    assert_eq!(stdout(&o), "app\n");

    let o = ctl(&m, &["rm", "/app/a"]).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(cluster.node_data("/app/a"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeper_errors_exit_1_with_code_message_and_path() {
    let cluster = Cluster::new();
    let m = start_member(&cluster).await;
    let o = ctl(&m, &["get", "/missing"]).await;
    assert_eq!(code(&o), 1);
    assert_eq!(stderr(&o), "error: NoNode: no node (/missing)\n");
    assert!(o.stdout.is_empty());

    let o = ctl(&m, &["--json", "get", "/missing"]).await;
    assert_eq!(code(&o), 1);
    assert_eq!(json_out(&o)["error"]["code"], "NoNode");
    assert_eq!(json_out(&o)["error"]["path"], "/missing");

    ctl(&m, &["create", "/v", "x"]).await;
    let o = ctl(&m, &["set", "/v", "y", "-v", "5"]).await;
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).starts_with("error: BadVersion: "),
        "{}",
        stderr(&o)
    );
    let o = ctl(&m, &["rm", "/", "-v", "-1"]).await;
    assert_eq!(code(&o), 1, "{}", stderr(&o));

    let o = ctl_at(
        &dead_endpoint(),
        &["--timeout-ms", "500", "get", "/v"],
        None,
    )
    .await;
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).starts_with("error: Transport: "),
        "{}",
        stderr(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2() {
    let cluster = Cluster::new();
    let m = start_member(&cluster).await;
    for args in [
        &["frobnicate"][..],
        &["create"],
        &["create", "/a", "-e"],
        &["create", "/a", "--mode", "forever"],
        &["set", "/a", "x", "--stdin"],
        &["session", "close", "not-a-number"],
        &["--endpoints", "https://h:1", "get", "/a"],
    ] {
        let o = ctl(&m, args).await;
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).is_empty());
    }
    assert_eq!(m.knobs.count(), 0, "usage errors send nothing");
    let o = ctl(&m, &["--help"]).await;
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("txn"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_is_the_server_shape() {
    let cluster = Cluster::new();
    let m = start_member(&cluster).await;
    let o = ctl(&m, &["--json", "create", "/j", "v"]).await;
    let v = json_out(&o);
    assert_eq!(v["path"], "/j");
    assert_eq!(v["stat"]["data_length"], 1);
    let v = json_out(&ctl(&m, &["get", "/j", "--json"]).await);
    assert_eq!(
        (v["path"].clone(), v["data"].clone()),
        ("/j".into(), "v".into())
    );
    let v = json_out(&ctl(&m, &["stat", "/j", "--json"]).await);
    assert_eq!(v.as_object().map(|o| o.len()), Some(11));
    let v = json_out(&ctl(&m, &["ls", "/", "--json"]).await);
    assert_eq!(v["children"], serde_json::json!(["j"]));
    let v = json_out(&ctl(&m, &["ls", "/", "--json", "--limit", "10"]).await);
    assert_eq!(v["more"], false);
    let v = json_out(&ctl(&m, &["set", "/j", "w", "--json"]).await);
    assert_eq!(v["stat"]["version"], 1);
    let v = json_out(&ctl(&m, &["cluster", "--json"]).await);
    assert_eq!(v["role"], "leader");
    let v = json_out(&ctl(&m, &["sync", "--json"]).await);
    assert_eq!(v["zxid"], cluster.zxid());
    let v = json_out(&ctl(&m, &["health", "--json"]).await);
    assert_eq!(v["readyz"], "ready");
    let v = json_out(&ctl(&m, &["rm", "/j", "--json"]).await);
    assert_eq!(v["path"], "/j");

    let o = ctl(&m, &["cluster"]).await;
    assert!(
        stdout(&o).starts_with("id: 1\nrole: leader\n"),
        "{}",
        stdout(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_from_file_and_stdin_is_binary_safe() {
    let cluster = Cluster::new();
    let m = start_member(&cluster).await;
    let bin: Vec<u8> = (0..=255u8).collect();
    let dir = std::env::temp_dir().join(format!("keeperctl-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let file = dir.join("bin");
    std::fs::write(&file, &bin).expect("write");

    let o = ctl(
        &m,
        &["create", "/bin", "--file", file.to_str().expect("utf8")],
    )
    .await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = ctl(&m, &["get", "/bin"]).await;
    assert_eq!(o.stdout, bin, "raw bytes out");
    let v = json_out(&ctl(&m, &["get", "/bin", "--json"]).await);
    assert!(v["data_b64"].is_string());

    let o = ctl_at(&m.url, &["set", "/bin", "--stdin"], Some(b"from stdin")).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        cluster.node_data("/bin").as_deref(),
        Some(&b"from stdin"[..])
    );
    let o = ctl_at(&m.url, &["set", "/bin", "-f", "-"], Some(b"dash")).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(cluster.node_data("/bin").as_deref(), Some(&b"dash"[..]));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_reads_the_http_body_shape_from_file_or_stdin() {
    let cluster = Cluster::new();
    let m = start_member(&cluster).await;
    let body = br#"{"ops":[
        {"op":"create","path":"/t","data":"1"},
        {"op":"create","path":"/t/q-","mode":"persistent_sequential"},
        {"op":"set","path":"/t","data_b64":"Mg==","version":0},
        {"op":"check","path":"/t"}]}"#;
    let o = ctl_at(&m.url, &["txn"], Some(body)).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "create /t\ncreate /t/q-0000000000\nset /t version=1\ncheck /t\n"
    );
    assert_eq!(cluster.node_data("/t").as_deref(), Some(&b"2"[..]));

    let dir = std::env::temp_dir().join(format!("keeperctl-txn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let file = dir.join("ops.json");
    std::fs::write(
        &file,
        br#"{"ops":[{"op":"delete","path":"/t/q-0000000000"},{"op":"delete","path":"/t","version":9}]}"#,
    )
    .expect("write");
    let o = ctl(&m, &["txn", file.to_str().expect("utf8"), "--json"]).await;
    assert_eq!(code(&o), 1);
    assert_eq!(json_out(&o)["error"]["index"], 1);
    assert!(
        stderr(&o).starts_with("error: BadVersion: "),
        "{}",
        stderr(&o)
    );
    assert!(
        cluster.node_data("/t/q-0000000000").is_some(),
        "nothing applied"
    );

    let o = ctl_at(
        &m.url,
        &["txn", "-"],
        Some(br#"{"ops":[{"op":"nope","path":"/x"}]}"#),
    )
    .await;
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_commands_and_ephemeral_create() {
    let cluster = Cluster::new();
    let m = start_member(&cluster).await;
    let o = ctl(&m, &["session", "create", "--timeout-ms", "5000"]).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let id = stdout(&o).trim().to_string();
    assert!(id.parse::<u64>().is_ok(), "{id}");
    let o = ctl(&m, &["create", "/e", "-e", "--session", &id]).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = ctl(&m, &["session", "keepalive", &id]).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(cluster.keepalives(id.parse().unwrap_or(0)), 1);
    let o = ctl(&m, &["session", "close", &id]).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        cluster.node_data("/e"),
        None,
        "ephemeral went with the session"
    );
    let o = ctl(&m, &["session", "close", &id]).await;
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).starts_with("error: SessionExpired"),
        "{}",
        stderr(&o)
    );

    // hold: prints the id, keeps it alive, closes it at the end.
    let o = ctl(
        &m,
        &[
            "session",
            "hold",
            "--timeout-ms",
            "300",
            "--hold-ms",
            "800",
            "--json",
        ],
    )
    .await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let held = json_out(&o)["id"].as_u64().expect("id");
    assert!(
        cluster.keepalives(held) >= 3,
        "{}",
        cluster.keepalives(held)
    );
    assert!(cluster.closed_sessions().contains(&held));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_fail_over_and_come_from_env_or_flag() {
    let cluster = Cluster::new();
    let m = start_member(&cluster).await;
    let list = format!("{},{}", dead_endpoint(), m.url);
    let o = ctl_at(&list, &["create", "/f", "x"], None).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = ctl_at(
        "http://127.0.0.1:1",
        &["--endpoints", &m.url, "get", "/f"],
        None,
    )
    .await;
    assert_eq!(
        (code(&o), stdout(&o)),
        (0, "x".to_string()),
        "{}",
        stderr(&o)
    );
}
