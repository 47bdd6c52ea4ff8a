//! Typed values of Keeper's HTTP API and their JSON wire forms
//! (`docs/http-api.md`). The client's own definitions: it shares no code with
//! the server, only the wire format.
//!
//! Data flow: `client` builds request bodies from these types and decodes
//! response bodies into them; `keeperctl` prints them and reads txn files with
//! [`Op`]'s wire form.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The version argument meaning "any version" for set, delete and check.
pub const ANY_VERSION: i32 = -1;

/// ZooKeeper's Stat: all 11 fields. Times are milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Stat {
    /// Zxid of the create.
    pub czxid: u64,
    /// Zxid of the last data change.
    pub mzxid: u64,
    /// Zxid of the last change to the children list.
    pub pzxid: u64,
    /// Creation time (ms since epoch).
    pub ctime: u64,
    /// Last modification time (ms since epoch).
    pub mtime: u64,
    /// Number of data changes.
    pub version: i32,
    /// Number of children changes.
    pub cversion: i32,
    /// Number of ACL changes.
    pub aversion: i32,
    /// Owning session for an ephemeral node, else 0.
    pub ephemeral_owner: u64,
    /// Length of the data in bytes.
    pub data_length: u32,
    /// Number of children.
    pub num_children: u32,
}

impl Stat {
    /// The fields as `(name, value)` pairs in wire order (for printing).
    pub fn fields(&self) -> [(&'static str, String); 11] {
        [
            ("czxid", self.czxid.to_string()),
            ("mzxid", self.mzxid.to_string()),
            ("pzxid", self.pzxid.to_string()),
            ("ctime", self.ctime.to_string()),
            ("mtime", self.mtime.to_string()),
            ("version", self.version.to_string()),
            ("cversion", self.cversion.to_string()),
            ("aversion", self.aversion.to_string()),
            ("ephemeral_owner", self.ephemeral_owner.to_string()),
            ("data_length", self.data_length.to_string()),
            ("num_children", self.num_children.to_string()),
        ]
    }
}

/// How a znode lives and dies (ZooKeeper's `CreateMode`). Wire names are snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreateMode {
    /// Lives until deleted.
    #[default]
    Persistent,
    /// Deleted when its session ends; needs a session; cannot have children.
    Ephemeral,
    /// Persistent, with a 10-digit sequence suffix appended by the server.
    PersistentSequential,
    /// Ephemeral, with a 10-digit sequence suffix appended by the server.
    EphemeralSequential,
    /// Deleted by the server once it has had a child and has none left.
    Container,
    /// Deleted when it has had no children and no change for `ttl_ms`.
    Ttl,
    /// Ttl, with a sequence suffix.
    TtlSequential,
}

impl CreateMode {
    /// Every mode.
    pub const ALL: [CreateMode; 7] = [
        CreateMode::Persistent,
        CreateMode::Ephemeral,
        CreateMode::PersistentSequential,
        CreateMode::EphemeralSequential,
        CreateMode::Container,
        CreateMode::Ttl,
        CreateMode::TtlSequential,
    ];

    /// The wire name, e.g. `"ephemeral_sequential"`.
    pub fn as_str(self) -> &'static str {
        match self {
            CreateMode::Persistent => "persistent",
            CreateMode::Ephemeral => "ephemeral",
            CreateMode::PersistentSequential => "persistent_sequential",
            CreateMode::EphemeralSequential => "ephemeral_sequential",
            CreateMode::Container => "container",
            CreateMode::Ttl => "ttl",
            CreateMode::TtlSequential => "ttl_sequential",
        }
    }

    /// Whether the node is owned by a session.
    pub fn is_ephemeral(self) -> bool {
        matches!(
            self,
            CreateMode::Ephemeral | CreateMode::EphemeralSequential
        )
    }

    /// Whether the server appends a sequence suffix.
    pub fn is_sequential(self) -> bool {
        matches!(
            self,
            CreateMode::PersistentSequential
                | CreateMode::EphemeralSequential
                | CreateMode::TtlSequential
        )
    }

    /// Whether the mode needs `ttl_ms`.
    pub fn is_ttl(self) -> bool {
        matches!(self, CreateMode::Ttl | CreateMode::TtlSequential)
    }

    /// The mode with the given traits, if one exists (`ephemeral` and `ttl`
    /// together do not).
    pub fn from_flags(
        ephemeral: bool,
        sequential: bool,
        ttl: bool,
        container: bool,
    ) -> Option<CreateMode> {
        Some(match (ephemeral, sequential, ttl, container) {
            (false, false, false, false) => CreateMode::Persistent,
            (true, false, false, false) => CreateMode::Ephemeral,
            (false, true, false, false) => CreateMode::PersistentSequential,
            (true, true, false, false) => CreateMode::EphemeralSequential,
            (false, false, false, true) => CreateMode::Container,
            (false, false, true, false) => CreateMode::Ttl,
            (false, true, true, false) => CreateMode::TtlSequential,
            _ => return None,
        })
    }
}

impl fmt::Display for CreateMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CreateMode {
    type Err = String;

    /// Accepts wire names, with `-` for `_` (`ephemeral-sequential`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        CreateMode::ALL
            .into_iter()
            .find(|m| m.as_str() == norm)
            .ok_or_else(|| {
                let names: Vec<&str> = CreateMode::ALL.iter().map(|m| m.as_str()).collect();
                format!("unknown mode {s:?} (expected one of {})", names.join(", "))
            })
    }
}

/// Options of a create: mode, owning session (ephemeral modes), ttl (ttl modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CreateOptions {
    /// The node's mode (default persistent).
    pub mode: CreateMode,
    /// The owning session; required for ephemeral modes.
    pub session: Option<u64>,
    /// The ttl in ms; required for ttl modes.
    pub ttl_ms: Option<u64>,
}

impl CreateOptions {
    /// A plain persistent node.
    pub fn persistent() -> CreateOptions {
        CreateOptions::default()
    }

    /// A node of `mode` with no session or ttl.
    pub fn mode(mode: CreateMode) -> CreateOptions {
        CreateOptions {
            mode,
            ..CreateOptions::default()
        }
    }

    /// An ephemeral node owned by `session`.
    pub fn ephemeral(session: u64) -> CreateOptions {
        CreateOptions {
            mode: CreateMode::Ephemeral,
            session: Some(session),
            ttl_ms: None,
        }
    }

    /// An ephemeral sequential node owned by `session`.
    pub fn ephemeral_sequential(session: u64) -> CreateOptions {
        CreateOptions {
            mode: CreateMode::EphemeralSequential,
            session: Some(session),
            ttl_ms: None,
        }
    }

    /// A ttl node.
    pub fn ttl(ttl_ms: u64) -> CreateOptions {
        CreateOptions {
            mode: CreateMode::Ttl,
            session: None,
            ttl_ms: Some(ttl_ms),
        }
    }

    /// Sets the owning session.
    pub fn with_session(mut self, session: u64) -> CreateOptions {
        self.session = Some(session);
        self
    }

    /// Sets the ttl.
    pub fn with_ttl_ms(mut self, ttl_ms: u64) -> CreateOptions {
        self.ttl_ms = Some(ttl_ms);
        self
    }
}

/// A znode read: its path, data and stat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The node's path.
    pub path: String,
    /// The node's data (binary-safe).
    pub data: Bytes,
    /// The node's stat.
    pub stat: Stat,
}

/// The answer to a create (also one op result of a multi): the actual path
/// (with the sequence suffix for sequential modes) and the new node's stat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Created {
    /// The path created.
    pub path: String,
    /// The new node's stat.
    pub stat: Stat,
}

/// One page of a node's children, sorted bytewise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildrenPage {
    /// Child names (not full paths).
    pub children: Vec<String>,
    /// The parent's stat.
    pub stat: Stat,
    /// Whether more children follow; page on with `after = last child`.
    #[serde(default)]
    pub more: bool,
}

/// A session as the server reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The session id.
    pub id: u64,
    /// The negotiated timeout (the server clamps the requested one).
    pub timeout_ms: u64,
}

/// A member's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Single-member deployment.
    Standalone,
    /// The ensemble's leader.
    Leader,
    /// Follows the leader.
    Follower,
    /// Electing a leader.
    Looking,
    /// A role this client does not know.
    #[serde(other)]
    Unknown,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Standalone => "standalone",
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Looking => "looking",
            Role::Unknown => "unknown",
        })
    }
}

/// One configured member of the ensemble.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Server id.
    pub id: u64,
    /// Client (HTTP) address.
    pub client_addr: String,
    /// Peer (replication) address.
    pub peer_addr: String,
    /// The member's role, when the answering member knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

/// `GET /v1/cluster`: the answering member's view of the ensemble.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// The answering member's id.
    pub id: u64,
    /// The answering member's role.
    pub role: Role,
    /// The current leader's id, if known.
    pub leader: Option<u64>,
    /// The current epoch.
    pub epoch: u64,
    /// Last zxid in the member's log.
    pub last_logged_zxid: u64,
    /// Last zxid known committed.
    pub committed_zxid: u64,
    /// Last zxid applied to the member's tree.
    pub applied_zxid: u64,
    /// All configured members.
    #[serde(default)]
    pub members: Vec<Member>,
}

/// `/healthz` and `/readyz` bodies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `"ok"` or `"ready"`.
    pub status: String,
}

/// One operation of a multi (`POST /v1/txn`). All ops apply or none do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create a node.
    Create {
        /// Requested path (a suffix is appended for sequential modes).
        path: String,
        /// Initial data.
        data: Bytes,
        /// Mode, session and ttl.
        options: CreateOptions,
    },
    /// Set a node's data if its version matches (`-1`: any).
    Set {
        /// Node path.
        path: String,
        /// New data.
        data: Bytes,
        /// Expected version, or [`ANY_VERSION`].
        version: i32,
    },
    /// Delete a node if its version matches (`-1`: any).
    Delete {
        /// Node path.
        path: String,
        /// Expected version, or [`ANY_VERSION`].
        version: i32,
    },
    /// Fail the multi unless the node exists with this version (`-1`: any).
    Check {
        /// Node path.
        path: String,
        /// Expected version, or [`ANY_VERSION`].
        version: i32,
    },
}

impl Op {
    /// A create op.
    pub fn create(path: impl Into<String>, data: impl Into<Bytes>, options: CreateOptions) -> Op {
        Op::Create {
            path: path.into(),
            data: data.into(),
            options,
        }
    }

    /// A set op.
    pub fn set(path: impl Into<String>, data: impl Into<Bytes>, version: i32) -> Op {
        Op::Set {
            path: path.into(),
            data: data.into(),
            version,
        }
    }

    /// A delete op.
    pub fn delete(path: impl Into<String>, version: i32) -> Op {
        Op::Delete {
            path: path.into(),
            version,
        }
    }

    /// A check op.
    pub fn check(path: impl Into<String>, version: i32) -> Op {
        Op::Check {
            path: path.into(),
            version,
        }
    }

    /// The op's path.
    pub fn path(&self) -> &str {
        match self {
            Op::Create { path, .. }
            | Op::Set { path, .. }
            | Op::Delete { path, .. }
            | Op::Check { path, .. } => path,
        }
    }
}

/// The result of one op of a successful multi, in op order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum OpResult {
    /// A node was created at `path`.
    Create {
        /// The actual path.
        path: String,
        /// The new node's stat.
        stat: Stat,
    },
    /// A node's data was set.
    Set {
        /// Node path.
        path: String,
        /// The node's new stat.
        stat: Stat,
    },
    /// A node was deleted.
    Delete {
        /// Node path.
        path: String,
    },
    /// A check passed.
    Check {
        /// Node path.
        path: String,
    },
}

// ---- wire forms -------------------------------------------------------------

/// The `data` / `data_b64` pair used by request and response bodies.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct DataWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_b64: Option<String>,
}

impl DataWire {
    /// Sends `data` when the bytes are UTF-8, else `data_b64` (as the server answers).
    pub fn encode(bytes: &[u8]) -> DataWire {
        match std::str::from_utf8(bytes) {
            Ok(text) => DataWire {
                data: Some(text.to_string()),
                data_b64: None,
            },
            Err(_) => DataWire {
                data: None,
                data_b64: Some(BASE64.encode(bytes)),
            },
        }
    }

    /// Accepts either field; both is an error, neither is empty data.
    pub fn decode(data: Option<String>, data_b64: Option<String>) -> Result<Bytes, String> {
        match (data, data_b64) {
            (Some(_), Some(_)) => Err("both \"data\" and \"data_b64\" given".to_string()),
            (Some(text), None) => Ok(Bytes::from(text)),
            (None, Some(b64)) => BASE64
                .decode(b64.as_bytes())
                .map(Bytes::from)
                .map_err(|e| format!("bad base64 in \"data_b64\": {e}")),
            (None, None) => Ok(Bytes::new()),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct NodeWire {
    path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data_b64: Option<String>,
    stat: Stat,
}

impl Serialize for Node {
    /// The server's shape: `{"path", "data"|"data_b64", "stat"}`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let DataWire { data, data_b64 } = DataWire::encode(&self.data);
        NodeWire {
            path: self.path.clone(),
            data,
            data_b64,
            stat: self.stat,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = NodeWire::deserialize(deserializer)?;
        let data = DataWire::decode(wire.data, wire.data_b64).map_err(serde::de::Error::custom)?;
        Ok(Node {
            path: wire.path,
            data,
            stat: wire.stat,
        })
    }
}

/// One op on the wire, exactly the `/v1/txn` element shape. Unknown fields are
/// refused, as the server does.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpWire {
    op: String,
    path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data_b64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mode: Option<CreateMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ttl_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<i32>,
}

impl Serialize for Op {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let none = |op: &str, path: &str| OpWire {
            op: op.to_string(),
            path: path.to_string(),
            data: None,
            data_b64: None,
            mode: None,
            session: None,
            ttl_ms: None,
            version: None,
        };
        let wire = match self {
            Op::Create {
                path,
                data,
                options,
            } => {
                let d = DataWire::encode(data);
                OpWire {
                    data: d.data,
                    data_b64: d.data_b64,
                    mode: Some(options.mode),
                    session: options.session,
                    ttl_ms: options.ttl_ms,
                    ..none("create", path)
                }
            }
            Op::Set {
                path,
                data,
                version,
            } => {
                let d = DataWire::encode(data);
                OpWire {
                    data: d.data,
                    data_b64: d.data_b64,
                    version: Some(*version),
                    ..none("set", path)
                }
            }
            Op::Delete { path, version } => OpWire {
                version: Some(*version),
                ..none("delete", path)
            },
            Op::Check { path, version } => OpWire {
                version: Some(*version),
                ..none("check", path)
            },
        };
        wire.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Op {
    /// Reads the `/v1/txn` op shape; fields that do not belong to the op are refused.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let w = OpWire::deserialize(deserializer)?;
        let has_data = w.data.is_some() || w.data_b64.is_some();
        let create_only = w.mode.is_some() || w.session.is_some() || w.ttl_ms.is_some();
        let refuse = |field: &str| D::Error::custom(format!("op {:?} takes no {field:?}", w.op));
        match w.op.as_str() {
            "create" => {
                if w.version.is_some() {
                    return Err(refuse("version"));
                }
                let data = DataWire::decode(w.data, w.data_b64).map_err(D::Error::custom)?;
                Ok(Op::Create {
                    path: w.path,
                    data,
                    options: CreateOptions {
                        mode: w.mode.unwrap_or_default(),
                        session: w.session,
                        ttl_ms: w.ttl_ms,
                    },
                })
            }
            "set" => {
                if create_only {
                    return Err(refuse("mode/session/ttl_ms"));
                }
                let data = DataWire::decode(w.data, w.data_b64).map_err(D::Error::custom)?;
                Ok(Op::Set {
                    path: w.path,
                    data,
                    version: w.version.unwrap_or(ANY_VERSION),
                })
            }
            "delete" | "check" => {
                if create_only || has_data {
                    return Err(refuse("data/mode/session/ttl_ms"));
                }
                let version = w.version.unwrap_or(ANY_VERSION);
                Ok(if w.op == "delete" {
                    Op::Delete {
                        path: w.path,
                        version,
                    }
                } else {
                    Op::Check {
                        path: w.path,
                        version,
                    }
                })
            }
            other => Err(D::Error::custom(format!(
                "unknown op {other:?} (expected create, set, delete or check)"
            ))),
        }
    }
}

/// `POST /v1/txn` body; also the format `keeperctl txn` reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxnRequest {
    /// The ops, applied atomically in order.
    pub ops: Vec<Op>,
}

/// `POST /v1/txn` success body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResponse {
    /// One result per op, in op order.
    pub results: Vec<OpResult>,
}

/// `POST /v1/nodes/{path}` body.
#[derive(Serialize)]
pub(crate) struct CreateBody {
    #[serde(flatten)]
    pub data: DataWire,
    pub mode: CreateMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fence: Option<FenceWire>,
}

/// `PUT /v1/nodes/{path}` body.
#[derive(Serialize)]
pub(crate) struct SetBody {
    #[serde(flatten)]
    pub data: DataWire,
    pub version: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fence: Option<FenceWire>,
}

/// `POST /v1/txn` body with a fence.
#[derive(Serialize)]
pub(crate) struct FencedTxnRequest {
    pub ops: Vec<Op>,
    pub fence: FenceWire,
}

/// What a fenced write names: it applies only while `token` is the fencing
/// token of lock `name`'s holder ([`Fence::Lock`]) or the term of election
/// `name`'s leader ([`Fence::Election`]). Get one from a lock guard
/// (`LockGuard::fence`) or a won campaign (`Leadership::fence`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Fence {
    Lock { name: String, token: u64 },
    Election { name: String, token: u64 },
}

impl Fence {
    /// A fence by lock `name`'s token.
    pub fn lock(name: impl Into<String>, token: u64) -> Fence {
        Fence::Lock {
            name: name.into(),
            token,
        }
    }

    /// A fence by election `name`'s term.
    pub fn election(name: impl Into<String>, term: u64) -> Fence {
        Fence::Election {
            name: name.into(),
            token: term,
        }
    }

    /// The token (or term).
    pub fn token(&self) -> u64 {
        match self {
            Fence::Lock { token, .. } | Fence::Election { token, .. } => *token,
        }
    }

    pub(crate) fn wire(&self) -> FenceWire {
        match self {
            Fence::Lock { name, token } => FenceWire {
                lock: Some(name.clone()),
                election: None,
                token: *token,
            },
            Fence::Election { name, token } => FenceWire {
                lock: None,
                election: Some(name.clone()),
                token: *token,
            },
        }
    }

    /// The query parameters of a fenced delete.
    pub(crate) fn query(&self) -> String {
        use crate::client::encode_query_value as q;
        match self {
            Fence::Lock { name, token } => format!("fence_lock={}&fence_token={token}", q(name)),
            Fence::Election { name, token } => {
                format!("fence_election={}&fence_token={token}", q(name))
            }
        }
    }
}

/// The JSON form of a [`Fence`].
#[derive(Debug, Serialize)]
pub(crate) struct FenceWire {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub election: Option<String>,
    pub token: u64,
}

/// `PUT /v1/nodes/{path}` answer.
#[derive(Deserialize)]
pub(crate) struct SetAnswer {
    #[allow(dead_code)]
    pub path: String,
    pub stat: Stat,
}

/// `POST /v1/sessions` body.
#[derive(Serialize)]
pub(crate) struct SessionBody {
    pub timeout_ms: u64,
}

/// `POST /v1/sync` answer.
#[derive(Deserialize)]
pub(crate) struct SyncAnswer {
    pub zxid: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

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

    fn stat_json() -> Value {
        json!({"czxid":1,"mzxid":2,"pzxid":3,"ctime":4,"mtime":5,"version":6,"cversion":7,
               "aversion":8,"ephemeral_owner":9,"data_length":10,"num_children":11})
    }

    #[test]
    fn stat_has_the_eleven_wire_fields() {
        assert_eq!(serde_json::to_value(stat()).ok(), Some(stat_json()));
        let back: Stat = serde_json::from_value(stat_json()).unwrap_or_default();
        assert_eq!(back, stat());
        let names: Vec<&str> = stat().fields().iter().map(|(n, _)| *n).collect();
        let obj = stat_json();
        for name in &names {
            assert!(obj.get(name).is_some(), "{name}");
        }
        assert_eq!(names.len(), 11);
    }

    #[test]
    fn node_accepts_data_and_data_b64() {
        let n: Node =
            serde_json::from_value(json!({"path":"/a","data":"héllo","stat":stat_json()})).unwrap();
        assert_eq!(n.data, Bytes::from("héllo"));
        assert_eq!(n.path, "/a");
        assert_eq!(n.stat, stat());
        let n: Node =
            serde_json::from_value(json!({"path":"/b","data_b64":"AP8=","stat":stat_json()}))
                .unwrap();
        assert_eq!(&n.data[..], &[0u8, 255][..]);
        let n: Node = serde_json::from_value(json!({"path":"/c","stat":stat_json()})).unwrap();
        assert!(n.data.is_empty());
        assert!(serde_json::from_value::<Node>(
            json!({"path":"/d","data":"x","data_b64":"eA==","stat":stat_json()})
        )
        .is_err());
        assert!(serde_json::from_value::<Node>(
            json!({"path":"/d","data_b64":"not base64!","stat":stat_json()})
        )
        .is_err());
    }

    #[test]
    fn node_serializes_like_the_server() {
        let text = Node {
            path: "/a".into(),
            data: Bytes::from("hi"),
            stat: stat(),
        };
        assert_eq!(
            serde_json::to_value(&text).ok(),
            Some(json!({"path":"/a","data":"hi","stat":stat_json()}))
        );
        let binary = Node {
            path: "/b".into(),
            data: Bytes::from_static(&[0xff, 0x00]),
            stat: stat(),
        };
        assert_eq!(
            serde_json::to_value(&binary).ok(),
            Some(json!({"path":"/b","data_b64":"/wA=","stat":stat_json()}))
        );
    }

    #[test]
    fn create_modes_use_snake_case_names() {
        for mode in CreateMode::ALL {
            let v = serde_json::to_value(mode).ok();
            assert_eq!(v, Some(Value::String(mode.as_str().to_string())));
            assert_eq!(mode.as_str().parse::<CreateMode>(), Ok(mode));
            assert_eq!(
                mode.as_str()
                    .replace('_', "-")
                    .to_uppercase()
                    .parse::<CreateMode>(),
                Ok(mode)
            );
        }
        assert!("ephemeral_ttl".parse::<CreateMode>().is_err());
        assert_eq!(
            CreateMode::from_flags(true, true, false, false),
            Some(CreateMode::EphemeralSequential)
        );
        assert_eq!(
            CreateMode::from_flags(false, true, true, false),
            Some(CreateMode::TtlSequential)
        );
        assert_eq!(CreateMode::from_flags(true, false, true, false), None);
        assert_eq!(CreateMode::from_flags(false, true, false, true), None);
    }

    #[test]
    fn create_body_sends_data_or_data_b64_and_only_given_options() {
        let body = CreateBody {
            data: DataWire::encode(b"v"),
            mode: CreateMode::Ephemeral,
            session: Some(7),
            ttl_ms: None,
            fence: None,
        };
        assert_eq!(
            serde_json::to_value(&body).ok(),
            Some(json!({"data":"v","mode":"ephemeral","session":7}))
        );
        let body = CreateBody {
            data: DataWire::encode(&[0xc3, 0x28]),
            mode: CreateMode::Ttl,
            session: None,
            ttl_ms: Some(500),
            fence: Some(Fence::lock("l", 9).wire()),
        };
        assert_eq!(
            serde_json::to_value(&body).ok(),
            Some(
                json!({"data_b64":"wyg=","mode":"ttl","ttl_ms":500,"fence":{"lock":"l","token":9}})
            )
        );
        let set = SetBody {
            data: DataWire::encode(b""),
            version: -1,
            fence: None,
        };
        assert_eq!(
            serde_json::to_value(&set).ok(),
            Some(json!({"data":"","version":-1}))
        );
        let set = SetBody {
            data: DataWire::encode(b""),
            version: -1,
            fence: Some(Fence::election("e", 4).wire()),
        };
        assert_eq!(
            serde_json::to_value(&set).ok(),
            Some(json!({"data":"","version":-1,"fence":{"election":"e","token":4}}))
        );
        assert_eq!(
            Fence::election("a b", 4).query(),
            "fence_election=a%20b&fence_token=4"
        );
    }

    #[test]
    fn ops_round_trip_through_the_txn_shape() {
        let req = TxnRequest {
            ops: vec![
                Op::create("/a", "x", CreateOptions::ephemeral(5)),
                Op::create(
                    "/t",
                    Bytes::from_static(&[1, 2, 255]),
                    CreateOptions::ttl(100),
                ),
                Op::set("/a", "y", 3),
                Op::delete("/b", ANY_VERSION),
                Op::check("/c", 0),
            ],
        };
        let v = serde_json::to_value(&req).unwrap_or_default();
        assert_eq!(
            v,
            json!({"ops":[
                {"op":"create","path":"/a","data":"x","mode":"ephemeral","session":5},
                {"op":"create","path":"/t","data_b64":"AQL/","mode":"ttl","ttl_ms":100},
                {"op":"set","path":"/a","data":"y","version":3},
                {"op":"delete","path":"/b","version":-1},
                {"op":"check","path":"/c","version":0}
            ]})
        );
        let back: TxnRequest = serde_json::from_value(v).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn ops_default_like_the_server_and_refuse_stray_fields() {
        let req: TxnRequest = serde_json::from_value(json!({"ops":[
            {"op":"create","path":"/a"},
            {"op":"set","path":"/a","data":"v"},
            {"op":"delete","path":"/a"},
            {"op":"check","path":"/a"}]}))
        .unwrap();
        assert_eq!(
            req.ops,
            vec![
                Op::create("/a", "", CreateOptions::persistent()),
                Op::set("/a", "v", -1),
                Op::delete("/a", -1),
                Op::check("/a", -1)
            ]
        );
        for bad in [
            json!({"ops":[{"op":"create","path":"/a","bogus":1}]}),
            json!({"ops":[{"op":"delete","path":"/a","data":"x"}]}),
            json!({"ops":[{"op":"set","path":"/a","mode":"ephemeral"}]}),
            json!({"ops":[{"op":"create","path":"/a","version":1}]}),
            json!({"ops":[{"op":"rename","path":"/a"}]}),
            json!({"ops":[{"op":"create","path":"/a","mode":"eternal"}]}),
            json!({"ops":[], "extra": true}),
        ] {
            assert!(
                serde_json::from_value::<TxnRequest>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn op_results_decode_by_tag() {
        let resp: TxnResponse = serde_json::from_value(json!({"results":[
            {"op":"create","path":"/a0000000001","stat":stat_json()},
            {"op":"set","path":"/b","stat":stat_json()},
            {"op":"delete","path":"/c"},
            {"op":"check","path":"/d"}]}))
        .unwrap();
        assert_eq!(
            resp.results,
            vec![
                OpResult::Create {
                    path: "/a0000000001".into(),
                    stat: stat()
                },
                OpResult::Set {
                    path: "/b".into(),
                    stat: stat()
                },
                OpResult::Delete { path: "/c".into() },
                OpResult::Check { path: "/d".into() },
            ]
        );
        let again = serde_json::to_value(&resp).unwrap_or_default();
        assert_eq!(again["results"][2], json!({"op":"delete","path":"/c"}));
    }

    #[test]
    fn cluster_children_session_and_health_decode() {
        let c: ClusterInfo = serde_json::from_value(json!({
            "id":1,"role":"leader","leader":1,"epoch":3,"last_logged_zxid":10,
            "committed_zxid":9,"applied_zxid":8,"members":[
                {"id":1,"client_addr":"127.0.0.1:7181","peer_addr":"127.0.0.1:7888","role":"leader"},
                {"id":2,"client_addr":"127.0.0.1:7182","peer_addr":"127.0.0.1:7889"}]})).unwrap();
        assert_eq!(c.role, Role::Leader);
        assert_eq!(c.leader, Some(1));
        assert_eq!(c.members.len(), 2);
        assert_eq!(c.members[1].role, None);
        let c: ClusterInfo = serde_json::from_value(json!({
            "id":2,"role":"observer","leader":null,"epoch":0,"last_logged_zxid":0,
            "committed_zxid":0,"applied_zxid":0,"members":[]}))
        .unwrap();
        assert_eq!((c.role, c.leader), (Role::Unknown, None));

        let p: ChildrenPage =
            serde_json::from_value(json!({"children":["a","b"],"stat":stat_json(),"more":true}))
                .unwrap();
        assert_eq!((p.children.len(), p.more), (2, true));
        let s: SessionInfo = serde_json::from_value(json!({"id":42,"timeout_ms":3000})).unwrap();
        assert_eq!(
            s,
            SessionInfo {
                id: 42,
                timeout_ms: 3000
            }
        );
        let h: Health = serde_json::from_value(json!({"status":"ready"})).unwrap();
        assert_eq!(h.status, "ready");
        let z: SyncAnswer = serde_json::from_value(json!({"zxid":77})).unwrap();
        assert_eq!(z.zxid, 77);
    }
}
