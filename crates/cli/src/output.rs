//! How keeperctl prints results: human text by default, stable JSON with
//! `--json`. Pure functions from typed results to bytes, so tests can check
//! the exact output.
//!
//! JSON shapes follow the server's (`docs/http-api.md`): a node is
//! `{"path","data"|"data_b64","stat"}`, a create `{"path","stat"}`, a txn
//! `{"results":[...]}`, and so on.

use base64::Engine as _;
use keeper_client::{
    ChildrenPage, ClusterInfo, Created, Error, Node, OpResult, SessionInfo, Stat, WatchEvent,
};
use serde_json::{json, Value};

/// One JSON value per line.
pub fn json_line(value: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec(value).unwrap_or_default();
    out.push(b'\n');
    out
}

/// `value` as JSON (falls back to `null` if it cannot be encoded).
pub fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// `get`: the raw data, plus a newline on a terminal when it lacks one.
pub fn node_data(node: &Node, terminal: bool) -> Vec<u8> {
    let mut out = node.data.to_vec();
    if terminal && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out
}

/// `watch`: `ZXID TYPE PATH`, and ` DATA` when the event carries UTF-8 data.
pub fn watch_event_text(event: &WatchEvent) -> Vec<u8> {
    let mut line = format!("{} {} {}", event.zxid, event.kind.as_str(), event.path);
    if let Some(data) = &event.data {
        match std::str::from_utf8(data) {
            Ok(text) => {
                line.push(' ');
                line.push_str(text);
            }
            Err(_) => line.push_str(&format!(" <{} bytes>", data.len())),
        }
    }
    line.push('\n');
    line.into_bytes()
}

/// `watch --json`: the server's event shape, `{"type","zxid","path",...}`.
pub fn watch_event_json(event: &WatchEvent) -> Value {
    let mut v = json!({
        "type": event.kind.as_str(),
        "zxid": event.zxid,
        "path": event.path,
    });
    if let Some(stat) = &event.stat {
        v["stat"] = to_json(stat);
    }
    if let Some(data) = &event.data {
        match std::str::from_utf8(data) {
            Ok(text) => v["data"] = json!(text),
            Err(_) => v["data_b64"] = json!(base64::engine::general_purpose::STANDARD.encode(data)),
        }
    }
    v
}

/// `stat`: one `name: value` line per field, in wire order.
pub fn stat_text(stat: &Stat) -> Vec<u8> {
    let mut out = String::new();
    for (name, value) in stat.fields() {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(&value);
        out.push('\n');
    }
    out.into_bytes()
}

/// `create`: the created path.
pub fn created_text(created: &Created) -> Vec<u8> {
    format!("{}\n", created.path).into_bytes()
}

/// `ls`: one child per line.
pub fn children_text(children: &[String]) -> Vec<u8> {
    let mut out = String::new();
    for c in children {
        out.push_str(c);
        out.push('\n');
    }
    out.into_bytes()
}

/// `ls --json` without `--limit`: `{"children":[...]}`.
pub fn children_json(children: &[String]) -> Value {
    json!({ "children": children })
}

/// `ls --json --limit`: the page as the server sends it.
pub fn page_json(page: &ChildrenPage) -> Value {
    to_json(page)
}

/// `txn`: one line per result: `create /a0000000001`, `set /b version=3`, ...
pub fn txn_text(results: &[OpResult]) -> Vec<u8> {
    let mut out = String::new();
    for r in results {
        let line = match r {
            OpResult::Create { path, .. } => format!("create {path}"),
            OpResult::Set { path, stat } => format!("set {path} version={}", stat.version),
            OpResult::Delete { path } => format!("delete {path}"),
            OpResult::Check { path } => format!("check {path}"),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out.into_bytes()
}

/// `session create`: the id.
pub fn session_text(info: &SessionInfo) -> Vec<u8> {
    format!("{}\n", info.id).into_bytes()
}

/// `cluster`: a few `name: value` lines, then one line per member.
pub fn cluster_text(c: &ClusterInfo) -> Vec<u8> {
    let leader = c
        .leader
        .map(|l| l.to_string())
        .unwrap_or_else(|| "none".to_string());
    let mut out = format!(
        "id: {}\nrole: {}\nleader: {}\nepoch: {}\nlast_logged_zxid: {}\ncommitted_zxid: {}\napplied_zxid: {}\nmembers:\n",
        c.id, c.role, leader, c.epoch, c.last_logged_zxid, c.committed_zxid, c.applied_zxid
    );
    for m in &c.members {
        let role = m
            .role
            .map(|r| r.to_string())
            .unwrap_or_else(|| "-".to_string());
        out.push_str(&format!(
            "  {} client={} peer={} role={}\n",
            m.id, m.client_addr, m.peer_addr, role
        ));
    }
    out.into_bytes()
}

/// The stderr line for an error: `error: NoNode: message (/path)`.
pub fn error_line(err: &Error) -> String {
    format!("error: {err}\n")
}

/// `--json` form of an error, mirroring the server's error body.
pub fn error_json(err: &Error) -> Value {
    let mut detail = json!({ "code": err.kind() });
    match err.api() {
        Some(api) => {
            detail["message"] = json!(api.message);
            if let Some(path) = &api.path {
                detail["path"] = json!(path);
            }
            if let Some(index) = api.index {
                detail["index"] = json!(index);
            }
        }
        None => {
            let text = err.to_string();
            let message = text
                .split_once(": ")
                .map(|(_, m)| m.to_string())
                .unwrap_or(text);
            detail["message"] = json!(message);
        }
    }
    json!({ "error": detail })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use keeper_client::{ApiError, Member, Role};

    fn stat() -> Stat {
        Stat {
            czxid: 1,
            mzxid: 2,
            pzxid: 3,
            ctime: 4,
            mtime: 5,
            version: 6,
            cversion: 7,
            aversion: 8,
            ephemeral_owner: 9,
            data_length: 10,
            num_children: 11,
        }
    }

    #[test]
    fn stat_prints_one_field_per_line() {
        let text = String::from_utf8(stat_text(&stat())).unwrap();
        assert_eq!(
            text,
            "czxid: 1\nmzxid: 2\npzxid: 3\nctime: 4\nmtime: 5\nversion: 6\ncversion: 7\n\
             aversion: 8\nephemeral_owner: 9\ndata_length: 10\nnum_children: 11\n"
        );
    }

    #[test]
    fn get_prints_raw_bytes_and_a_newline_only_on_terminals() {
        let node = Node {
            path: "/a".into(),
            data: Bytes::from_static(&[0, 255, b'x']),
            stat: stat(),
        };
        assert_eq!(node_data(&node, false), vec![0, 255, b'x']);
        assert_eq!(node_data(&node, true), vec![0, 255, b'x', b'\n']);
        let json = to_json(&node);
        assert_eq!(json["data_b64"], "AP94");
        assert_eq!(json["stat"]["num_children"], 11);
    }

    #[test]
    fn ls_and_txn_lines() {
        assert_eq!(
            children_text(&["a".into(), "b c".into()]),
            b"a\nb c\n".to_vec()
        );
        assert!(children_text(&[]).is_empty());
        let results = vec![
            OpResult::Create {
                path: "/q0000000001".into(),
                stat: stat(),
            },
            OpResult::Set {
                path: "/b".into(),
                stat: stat(),
            },
            OpResult::Delete { path: "/c".into() },
            OpResult::Check { path: "/d".into() },
        ];
        assert_eq!(
            String::from_utf8(txn_text(&results)).unwrap(),
            "create /q0000000001\nset /b version=6\ndelete /c\ncheck /d\n"
        );
    }

    #[test]
    fn cluster_text_lists_members() {
        let c = ClusterInfo {
            id: 2,
            role: Role::Follower,
            leader: None,
            epoch: 3,
            last_logged_zxid: 10,
            committed_zxid: 9,
            applied_zxid: 8,
            members: vec![Member {
                id: 1,
                client_addr: "h:1".into(),
                peer_addr: "h:2".into(),
                role: Some(Role::Leader),
            }],
        };
        let text = String::from_utf8(cluster_text(&c)).unwrap();
        assert!(
            text.starts_with("id: 2\nrole: follower\nleader: none\nepoch: 3\n"),
            "{text}"
        );
        assert!(
            text.ends_with("members:\n  1 client=h:1 peer=h:2 role=leader\n"),
            "{text}"
        );
    }

    #[test]
    fn errors_print_code_message_and_path() {
        let err = Error::NoNode(ApiError {
            message: "node does not exist".into(),
            path: Some("/a".into()),
            index: None,
            oldest_zxid: None,
        });
        assert_eq!(
            error_line(&err),
            "error: NoNode: node does not exist (/a)\n"
        );
        assert_eq!(
            error_json(&err),
            json!({"error":{"code":"NoNode","message":"node does not exist","path":"/a"}})
        );
        let err = Error::Transport {
            message: "connection refused".into(),
        };
        assert_eq!(
            error_json(&err),
            json!({"error":{"code":"Transport","message":"connection refused"}})
        );
    }
}
