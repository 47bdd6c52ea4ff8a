//! What the clients send: operation kinds, the mix, the key space and pre-built requests.
//!
//! Data flow: `BenchConfig` → [`Workload`] (built once, shared by all clients) → each client
//! asks it for the next request. Everything that can be built before the run is: request
//! bodies, the key URIs and headers; a request then costs a few reference-count bumps
//! (and, for `create`, one small string for the fresh path).

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode, Uri};

/// One kind of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpKind {
    /// `POST /v1/nodes{prefix}/c-{run}-{client}-{seq}` with the value; expects 201.
    Create,
    /// `PUT /v1/nodes{prefix}/k{index}` with the value; expects 200.
    Set,
    /// `GET /v1/nodes{prefix}/k{index}`; expects 200.
    Get,
    /// `GET /v1/nodes{prefix}/k{index}?consistency=linearizable`; expects 200.
    Lget,
    /// An uncontended lock: `POST /v1/locks/{name}/acquire` then `DELETE` of the
    /// grant, each client on a lock of its own; one sample per acquire+release.
    Lock,
    /// One lock shared by every client: one sample per grant, from the previous
    /// holder's release (sent) to this grant (answered).
    Handoff,
}

impl OpKind {
    /// Every kind, in report order.
    pub const ALL: [OpKind; 6] = [
        OpKind::Create,
        OpKind::Set,
        OpKind::Get,
        OpKind::Lget,
        OpKind::Lock,
        OpKind::Handoff,
    ];

    /// The name used by `--op`, `--mix` and the report.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Create => "create",
            OpKind::Set => "set",
            OpKind::Get => "get",
            OpKind::Lget => "lget",
            OpKind::Lock => "lock",
            OpKind::Handoff => "handoff",
        }
    }

    /// A lock recipe op: run by [`crate::recipes`], not a single request.
    pub fn is_recipe(self) -> bool {
        matches!(self, OpKind::Lock | OpKind::Handoff)
    }

    /// The kind named `name` (as in [`OpKind::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.name() == name)
    }

    /// The status a successful request of this kind answers with.
    pub fn expected_status(self) -> StatusCode {
        match self {
            OpKind::Create => StatusCode::CREATED,
            OpKind::Set | OpKind::Get | OpKind::Lget | OpKind::Lock | OpKind::Handoff => {
                StatusCode::OK
            }
        }
    }

    /// Position in [`OpKind::ALL`] (for per-kind arrays).
    pub fn index(self) -> usize {
        match self {
            OpKind::Create => 0,
            OpKind::Set => 1,
            OpKind::Get => 2,
            OpKind::Lget => 3,
            OpKind::Lock => 4,
            OpKind::Handoff => 5,
        }
    }

    fn uses_keys(self) -> bool {
        !matches!(self, OpKind::Create | OpKind::Lock | OpKind::Handoff)
    }
}

/// Relative weights of op kinds; the next op is drawn with probability weight / total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    /// (kind, cumulative weight), strictly increasing; zero-weight kinds are dropped.
    cumulative: Vec<(OpKind, u64)>,
}

impl Mix {
    /// Builds a mix; fails when no kind has a positive weight.
    pub fn new(weights: Vec<(OpKind, u32)>) -> Result<Self, String> {
        let mut total = 0u64;
        let mut cumulative = Vec::with_capacity(weights.len());
        for (op, weight) in weights {
            if weight > 0 {
                total += u64::from(weight);
                cumulative.push((op, total));
            }
        }
        if cumulative.is_empty() {
            return Err("at least one op needs a positive weight".into());
        }
        Ok(Self { cumulative })
    }

    /// The kinds with a positive weight.
    pub fn kinds(&self) -> impl Iterator<Item = OpKind> + '_ {
        self.cumulative.iter().map(|(op, _)| *op)
    }

    fn total(&self) -> u64 {
        self.cumulative.last().map_or(0, |(_, total)| *total)
    }

    /// The kind for a uniformly random `draw`.
    fn pick(&self, draw: u64) -> OpKind {
        let point = draw % self.total().max(1);
        for (op, upto) in &self.cumulative {
            if point < *upto {
                return *op;
            }
        }
        // Unreachable: point < total, the last cumulative weight.
        self.cumulative.last().map_or(OpKind::Get, |(op, _)| *op)
    }

    /// `set=20,get=80`, in the order given (weights recovered from the cumulative ones).
    pub fn describe(&self) -> String {
        let mut previous = 0;
        let mut parts = Vec::with_capacity(self.cumulative.len());
        for (op, upto) in &self.cumulative {
            parts.push(format!("{}={}", op.name(), upto - previous));
            previous = *upto;
        }
        parts.join(",")
    }
}

/// The operation(s) of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkloadPlan {
    /// Every request is of this kind.
    Single(OpKind),
    /// Each request's kind is drawn from the mix.
    Mix(Mix),
}

impl WorkloadPlan {
    /// Whether the run reads or writes the key space (so setup must create it).
    pub fn uses_keys(&self) -> bool {
        match self {
            WorkloadPlan::Single(op) => op.uses_keys(),
            WorkloadPlan::Mix(mix) => mix.kinds().any(OpKind::uses_keys),
        }
    }

    /// `set`, or `mix(set=20,get=80)`.
    pub fn describe(&self) -> String {
        match self {
            WorkloadPlan::Single(op) => op.name().to_string(),
            WorkloadPlan::Mix(mix) => format!("mix({})", mix.describe()),
        }
    }

    /// The next op kind, given a random draw.
    pub fn pick(&self, draw: u64) -> OpKind {
        match self {
            WorkloadPlan::Single(op) => *op,
            WorkloadPlan::Mix(mix) => mix.pick(draw),
        }
    }
}

/// SplitMix64: a tiny, fast, seedable generator for key and op choice (not cryptographic).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator whose sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Everything the clients need to build requests, built once before the run.
#[derive(Debug)]
pub struct Workload {
    plan: WorkloadPlan,
    /// `/v1/nodes{prefix}/k{index}` per key.
    key_uris: Vec<Uri>,
    /// Same with `?consistency=linearizable`.
    key_uris_linearizable: Vec<Uri>,
    /// `{"data":"<value>"}`.
    value_body: Bytes,
    /// `/v1/nodes{prefix}/c-{run_id}-` (create appends `{client}-{seq}`).
    create_base: String,
    /// `{prefix}/k{index}` per key, for setup and error messages.
    key_paths: Vec<String>,
}

/// The znode path of key `index` under `prefix`.
pub fn key_path(prefix: &str, index: usize) -> String {
    format!("{prefix}/k{index:08}")
}

/// The request URI (origin form) of znode `path`.
pub fn node_uri(path: &str) -> String {
    format!("/v1/nodes{path}")
}

/// `{"data":"..."}` with `value_size` ASCII letters and digits (JSON-safe, deterministic).
pub fn value_body(value_size: usize) -> Bytes {
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = SplitMix64::new(value_size as u64);
    let mut body = Vec::with_capacity(value_size + 12);
    body.extend_from_slice(br#"{"data":""#);
    for _ in 0..value_size {
        let pick = (rng.next_u64() % ALPHABET.len() as u64) as usize;
        body.push(ALPHABET.get(pick).copied().unwrap_or(b'x'));
    }
    body.extend_from_slice(br#""}"#);
    Bytes::from(body)
}

impl Workload {
    /// Pre-builds the key space URIs and the body. `run_id` makes create paths unique
    /// across runs against the same cluster.
    pub fn new(
        plan: WorkloadPlan,
        prefix: &str,
        keys: usize,
        value_size: usize,
        run_id: u64,
    ) -> Result<Self, String> {
        let key_count = if plan.uses_keys() { keys } else { 0 };
        let mut key_uris = Vec::with_capacity(key_count);
        let mut key_uris_linearizable = Vec::with_capacity(key_count);
        let mut key_paths = Vec::with_capacity(key_count);
        for index in 0..key_count {
            let path = key_path(prefix, index);
            let uri = node_uri(&path);
            key_uris_linearizable.push(parse_uri(format!("{uri}?consistency=linearizable"))?);
            key_uris.push(parse_uri(uri)?);
            key_paths.push(path);
        }
        Ok(Self {
            plan,
            key_uris,
            key_uris_linearizable,
            value_body: value_body(value_size),
            create_base: format!("/v1/nodes{prefix}/c-{run_id:x}-"),
            key_paths,
        })
    }

    /// The znode paths of the key space (empty when the plan does not use keys).
    pub fn key_paths(&self) -> &[String] {
        &self.key_paths
    }

    /// The pre-built `{"data":...}` body.
    pub fn value(&self) -> &Bytes {
        &self.value_body
    }

    /// The next request of client `client`: its kind and the request itself.
    /// `seq` numbers the client's requests (it makes create paths unique).
    pub fn next_request(
        &self,
        rng: &mut SplitMix64,
        host: &HeaderValue,
        client: usize,
        seq: u64,
    ) -> Result<(OpKind, Request<Full<Bytes>>), String> {
        let draw = rng.next_u64();
        let op = self.plan.pick(draw);
        let key = if self.key_uris.is_empty() {
            0
        } else {
            // The high bits choose the key; the low ones chose the op.
            ((draw >> 16) % self.key_uris.len() as u64) as usize
        };
        let (method, uri, body) = match op {
            OpKind::Create => (
                Method::POST,
                parse_uri(format!("{}{client}-{seq}", self.create_base))?,
                self.value_body.clone(),
            ),
            OpKind::Set => (
                Method::PUT,
                self.key_uri(&self.key_uris, key)?,
                self.value_body.clone(),
            ),
            OpKind::Get => (
                Method::GET,
                self.key_uri(&self.key_uris, key)?,
                Bytes::new(),
            ),
            OpKind::Lget => (
                Method::GET,
                self.key_uri(&self.key_uris_linearizable, key)?,
                Bytes::new(),
            ),
            OpKind::Lock | OpKind::Handoff => {
                return Err(format!("{} is run by the lock clients", op.name()))
            }
        };
        Ok((op, build_request(method, uri, body, host)))
    }

    fn key_uri(&self, uris: &[Uri], key: usize) -> Result<Uri, String> {
        uris.get(key)
            .cloned()
            .ok_or_else(|| format!("key {key} outside the key space of {}", uris.len()))
    }
}

/// A request with the Host and (for bodies) `Content-Type: application/json` headers set.
pub fn build_request(
    method: Method,
    uri: Uri,
    body: Bytes,
    host: &HeaderValue,
) -> Request<Full<Bytes>> {
    let has_body = !body.is_empty();
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    headers.insert(HOST, host.clone());
    if has_body {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    request
}

/// Parses an origin-form URI built by this module.
pub fn parse_uri(text: String) -> Result<Uri, String> {
    Uri::try_from(text).map_err(|e| format!("bad request URI: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HeaderValue {
        HeaderValue::from_static("127.0.0.1:1")
    }

    #[test]
    fn value_body_is_json_with_exactly_value_size_bytes_of_data() {
        for size in [0, 1, 256, 4096] {
            let body = value_body(size);
            let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(parsed["data"].as_str().map(str::len), Some(size));
            assert_eq!(parsed.as_object().map(|o| o.len()), Some(1));
        }
    }

    #[test]
    fn single_op_requests_have_method_uri_and_headers() {
        let workload = Workload::new(WorkloadPlan::Single(OpKind::Set), "/b", 3, 8, 0xab).unwrap();
        assert_eq!(
            workload.key_paths(),
            ["/b/k00000000", "/b/k00000001", "/b/k00000002"]
        );
        let mut rng = SplitMix64::new(1);
        let mut seen = std::collections::BTreeSet::new();
        for seq in 0..100 {
            let (op, request) = workload.next_request(&mut rng, &host(), 0, seq).unwrap();
            assert_eq!(op, OpKind::Set);
            assert_eq!(request.method(), Method::PUT);
            assert_eq!(request.headers()[HOST], "127.0.0.1:1");
            assert_eq!(request.headers()[CONTENT_TYPE], "application/json");
            seen.insert(request.uri().to_string());
        }
        // Uniform key choice over 3 keys: all of them show up in 100 draws.
        let expected: std::collections::BTreeSet<String> =
            (0..3).map(|i| format!("/v1/nodes/b/k0000000{i}")).collect();
        assert_eq!(seen, expected);

        let lget = Workload::new(WorkloadPlan::Single(OpKind::Lget), "/b", 1, 8, 0).unwrap();
        let (_, request) = lget.next_request(&mut rng, &host(), 0, 0).unwrap();
        assert_eq!(request.method(), Method::GET);
        assert_eq!(
            request.uri(),
            "/v1/nodes/b/k00000000?consistency=linearizable"
        );
        assert!(request.headers().get(CONTENT_TYPE).is_none());
    }

    #[test]
    fn create_paths_are_unique_per_run_client_and_seq() {
        let workload =
            Workload::new(WorkloadPlan::Single(OpKind::Create), "/b", 0, 8, 0xab).unwrap();
        assert!(workload.key_paths().is_empty());
        let mut rng = SplitMix64::new(1);
        let (op, request) = workload.next_request(&mut rng, &host(), 7, 42).unwrap();
        assert_eq!(op, OpKind::Create);
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.uri(), "/v1/nodes/b/c-ab-7-42");
    }

    #[test]
    fn mix_draws_follow_the_weights() {
        let mix = Mix::new(vec![
            (OpKind::Set, 20),
            (OpKind::Get, 80),
            (OpKind::Lget, 0),
        ])
        .unwrap();
        assert_eq!(mix.describe(), "set=20,get=80");
        let plan = WorkloadPlan::Mix(mix);
        assert_eq!(plan.describe(), "mix(set=20,get=80)");
        let mut rng = SplitMix64::new(7);
        let mut counts = [0u32; 4];
        for _ in 0..10_000 {
            counts[plan.pick(rng.next_u64()).index()] += 1;
        }
        assert_eq!(counts[OpKind::Create.index()], 0);
        assert_eq!(counts[OpKind::Lget.index()], 0);
        let sets = counts[OpKind::Set.index()];
        assert!(
            (1700..2300).contains(&sets),
            "sets {sets} should be near 2000 of 10000"
        );
        assert_eq!(sets + counts[OpKind::Get.index()], 10_000);
    }

    #[test]
    fn op_names_round_trip() {
        for op in OpKind::ALL {
            assert_eq!(OpKind::from_name(op.name()), Some(op));
            assert_eq!(OpKind::ALL[op.index()], op);
        }
        assert_eq!(OpKind::from_name("delete"), None);
    }
}
