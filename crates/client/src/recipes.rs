//! Locks, semaphores and leader election on top of the server's recipes
//! (`/v1/locks`, `/v1/semaphores`, `/v1/elections`; `docs/recipes.md`).
//!
//! Data flow: [`Client::lock`] (and [`Client::semaphore`],
//! [`Election::campaign`]) creates a [`Session`] of its own, asks the server
//! to acquire with that session, and hands back a guard that owns the
//! session and so keeps it alive in the background. The guard is held as
//! long as the session is: a lost session (expired, or keepalives not
//! acknowledged for a whole timeout) means the server may already have given
//! the lock to someone else, and [`LockGuard::lost`] resolves at that moment
//! (at the latest when the servers may expire the session). Releasing
//! deletes the contender and closes the session; dropping a guard does the
//! same in a spawned task (best effort; if that fails too, the session
//! expires after its timeout and takes the contender with it).
//!
//! Waiting: one acquire request waits at most
//! [`RecipeOptions::wait_per_request`] on the server; after a timeout, or
//! when the outcome of a request is unknown (a lost answer, a member that
//! went away), the attempt's session is closed (which removes whatever
//! contender it may have left) and a new attempt starts with a new session,
//! at the back of the queue. So a contender of an abandoned attempt can
//! never hold the lock for anyone but an expired session.
//!
//! Fencing: a guard's [`LockGuard::fence`] (a [`Leadership::fence`]) makes
//! writes that the servers refuse once the lock is lost
//! ([`Client::set_fenced`] and friends, [`crate::Error::Fenced`]).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::client::{encode_query_value, Client};
use crate::error::{Error, ErrorCode, Result};
use crate::session::{Session, SessionLoss};
use crate::transport::{describe, response_zxid, Safety, Transport, MIN_ZXID_HEADER};
use crate::types::Fence;
use crate::watch::SseParser;

/// Default session timeout of a guard's session.
pub const DEFAULT_RECIPE_SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// Default longest wait one acquire or campaign request asks the server for
/// (the server clamps it to its `max_lock_wait_ms`, 20 s by default).
pub const DEFAULT_WAIT_PER_REQUEST: Duration = Duration::from_secs(15);

/// How a lock, a semaphore permit or a campaign is waited for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipeOptions {
    /// Timeout of the session the guard keeps alive: how long the servers
    /// wait after the last acknowledged keepalive before they hand the lock
    /// to the next waiter.
    pub session_timeout: Duration,
    /// How long to wait in all; `None`: until granted.
    pub wait: Option<Duration>,
    /// Longest wait one request asks the server for.
    pub wait_per_request: Duration,
}

impl Default for RecipeOptions {
    fn default() -> Self {
        RecipeOptions {
            session_timeout: DEFAULT_RECIPE_SESSION_TIMEOUT,
            wait: None,
            wait_per_request: DEFAULT_WAIT_PER_REQUEST,
        }
    }
}

impl RecipeOptions {
    /// Sets the session timeout.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// Waits at most `wait` in all (`Duration::ZERO`: only if free now).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = Some(wait);
        self
    }
}

#[derive(Serialize)]
struct LockAcquire {
    session: u64,
    wait_ms: u64,
}

#[derive(Deserialize)]
struct LockGrant {
    key: String,
    fencing_token: u64,
}

#[derive(Serialize)]
struct SemaphoreAcquire {
    session: u64,
    permits_max: u64,
    wait_ms: u64,
}

#[derive(Deserialize)]
struct SemaphorePermit {
    key: String,
}

#[derive(Serialize)]
struct CampaignBody<'a> {
    session: u64,
    value: &'a str,
    wait_ms: u64,
}

#[derive(Deserialize)]
struct Elected {
    key: String,
    term: u64,
}

#[derive(Serialize)]
struct KeyBody<'a> {
    key: &'a str,
}

#[derive(Serialize)]
struct ProclaimBody<'a> {
    key: &'a str,
    value: &'a str,
}

/// The leader of an election as the servers show it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LeaderInfo {
    /// The leader's candidate key.
    pub key: String,
    /// Its value (set by its campaign, changed by proclaim).
    pub value: String,
    /// Its term: a fencing token that rises strictly from leader to leader.
    pub term: u64,
    /// The session that holds it.
    pub session: u64,
}

#[derive(Deserialize)]
struct ElectionState {
    leader: Option<LeaderInfo>,
}

#[derive(Deserialize)]
struct LeaderEvent {
    leader: Option<LeaderInfo>,
}

/// A contender name in a URL (10 digits, but escape anyway).
fn seg(name: &str) -> String {
    encode_query_value(name)
}

fn wait_ms(wait: Duration) -> u64 {
    u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)
}

/// Whether a failed attempt may be tried again with a new session.
fn retryable(e: &Error) -> bool {
    e.is_outcome_unknown()
        || matches!(
            e,
            Error::Transport { .. } | Error::Unavailable(_) | Error::SessionExpired(_)
        )
}

/// Ends a session that a failed attempt used (deleting any contender it
/// left), in the background.
fn retire(session: Session) {
    tokio::spawn(async move {
        let id = session.id();
        if let Err(e) = session.close().await {
            tracing::debug!(session = id, %e, "could not close an attempt's session; it expires");
        }
    });
}

/// Runs `attempt` with a fresh session until it succeeds, fails for good,
/// or `options.wait` runs out (see the module docs).
async fn contend<T, F, Fut>(
    client: &Client,
    options: &RecipeOptions,
    what: &str,
    mut attempt: F,
) -> Result<(T, Session)>
where
    F: FnMut(u64, Duration) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let deadline = options.wait.map(|w| Instant::now() + w);
    let mut backoff = client.config().backoff_initial;
    loop {
        let session = match client.session(options.session_timeout).await {
            Ok(session) => session,
            Err(e) if retryable(&e) && deadline.is_none_or(|d| Instant::now() < d) => {
                tracing::debug!(what, %e, "no session yet; again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(client.config().backoff_max);
                continue;
            }
            Err(e) => return Err(e),
        };
        let wait = match deadline {
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .min(options.wait_per_request),
            None => options.wait_per_request,
        };
        let outcome = tokio::select! {
            r = attempt(session.id(), wait) => r,
            // The session died while waiting: whatever it held is gone.
            loss = session.lost() => Err(Error::SessionExpired(crate::ApiError {
                message: format!("the session was lost while waiting ({:?})", loss.reason),
                ..Default::default()
            })),
        };
        match outcome {
            Ok(t) if !session.is_expired() => return Ok((t, session)),
            Ok(_) => {
                tracing::debug!(what, "granted to a session that is already lost; again");
            }
            Err(e) if retryable(&e) => {
                tracing::debug!(what, %e, "attempt failed; again with a new session");
            }
            Err(e) => {
                retire(session);
                return Err(e);
            }
        }
        retire(session);
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Error::Timeout(crate::ApiError {
                message: format!("{what} not granted within {:?}", options.wait),
                ..Default::default()
            }));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(client.config().backoff_max);
    }
}

/// What a guard holds: a contender key and the session that owns it.
#[derive(Debug)]
struct Held {
    client: Client,
    /// `/v1/locks/{name}` or `/v1/semaphores/{name}`.
    base: String,
    key: String,
    session: Option<Session>,
}

impl Held {
    fn session(&self) -> &Session {
        // Only `release` (which consumes the guard) and drop take it.
        self.session
            .as_ref()
            .unwrap_or_else(|| unreachable!("a guard's session is taken only when it goes"))
    }

    async fn release(mut self) -> Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let target = format!("{}/{}", self.base, seg(&self.key));
        let deleted = self
            .client
            .empty_call(Method::DELETE, target, None, Safety::Write)
            .await;
        // Closing the session deletes the contender too.
        let closed = session.close().await;
        match (deleted, closed) {
            (Ok(()), _) | (Err(Error::NoNode(_)), Ok(())) => Ok(()),
            (Err(e), _) => Err(e),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        // Best effort: closing the session deletes the contender. Without a
        // runtime, dropping the session stops its keepalives and it expires.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let id = session.id();
                if let Err(e) = session.close().await {
                    tracing::debug!(session = id, %e, "release on drop failed; the session expires");
                }
            });
        }
    }
}

/// A held lock. Released by [`LockGuard::release`] or on drop (best effort,
/// in a spawned task). Keeps its session alive until then.
#[derive(Debug)]
pub struct LockGuard {
    name: String,
    token: u64,
    held: Held,
}

impl LockGuard {
    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The contender key (`DELETE /v1/locks/{name}/{key}` releases it).
    pub fn key(&self) -> &str {
        &self.held.key
    }

    /// The fencing token: the grant's czxid, rising strictly from holder to
    /// holder. Hand it to every resource the lock guards.
    pub fn fencing_token(&self) -> u64 {
        self.token
    }

    /// The fence for Keeper writes made under this lock.
    pub fn fence(&self) -> Fence {
        Fence::lock(self.name.clone(), self.token)
    }

    /// The id of the session that holds the lock.
    pub fn session_id(&self) -> u64 {
        self.held.session().id()
    }

    /// Resolves when the session is lost: from then on the lock may be
    /// someone else's. Never resolves while the lock is held.
    pub async fn lost(&self) -> SessionLoss {
        self.held.session().lost().await
    }

    /// True once the session is lost.
    pub fn is_lost(&self) -> bool {
        self.held.session().is_expired()
    }

    /// Releases the lock and closes the session.
    pub async fn release(self) -> Result<()> {
        self.held.release().await
    }
}

/// A held semaphore permit; like [`LockGuard`] without a fencing token.
#[derive(Debug)]
pub struct SemaphoreGuard {
    name: String,
    permits_max: u64,
    held: Held,
}

impl SemaphoreGuard {
    /// The semaphore's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The contender key.
    pub fn key(&self) -> &str {
        &self.held.key
    }

    /// The number of permits the semaphore has.
    pub fn permits_max(&self) -> u64 {
        self.permits_max
    }

    /// The id of the session that holds the permit.
    pub fn session_id(&self) -> u64 {
        self.held.session().id()
    }

    /// Resolves when the session is lost (the permit may be someone else's).
    pub async fn lost(&self) -> SessionLoss {
        self.held.session().lost().await
    }

    /// True once the session is lost.
    pub fn is_lost(&self) -> bool {
        self.held.session().is_expired()
    }

    /// Releases the permit and closes the session.
    pub async fn release(self) -> Result<()> {
        self.held.release().await
    }
}

impl Client {
    /// Takes lock `name`, waiting until it is granted; see [`LockGuard`].
    pub async fn lock(&self, name: &str) -> Result<LockGuard> {
        self.lock_with(name, RecipeOptions::default()).await
    }

    /// Takes lock `name` with `options` ([`crate::Error::Timeout`] if
    /// `options.wait` runs out).
    pub async fn lock_with(&self, name: &str, options: RecipeOptions) -> Result<LockGuard> {
        let base = format!("/v1/locks/{}", seg(name));
        let target = format!("{base}/acquire");
        let (grant, session) = contend(self, &options, "lock", |session, wait| {
            let body = LockAcquire {
                session,
                wait_ms: wait_ms(wait),
            };
            let target = target.clone();
            async move {
                self.json_waiting::<_, LockGrant>(Method::POST, target, Some(&body), wait)
                    .await
            }
        })
        .await?;
        Ok(LockGuard {
            name: name.to_string(),
            token: grant.fencing_token,
            held: Held {
                client: self.clone(),
                base,
                key: grant.key,
                session: Some(session),
            },
        })
    }

    /// Takes a permit of semaphore `name` (of `permits_max` permits; every
    /// contender must agree, else [`crate::Error::BadArguments`]).
    pub async fn semaphore(&self, name: &str, permits_max: u64) -> Result<SemaphoreGuard> {
        self.semaphore_with(name, permits_max, RecipeOptions::default())
            .await
    }

    /// [`Client::semaphore`] with `options`.
    pub async fn semaphore_with(
        &self,
        name: &str,
        permits_max: u64,
        options: RecipeOptions,
    ) -> Result<SemaphoreGuard> {
        let base = format!("/v1/semaphores/{}", seg(name));
        let target = format!("{base}/acquire");
        let (permit, session) = contend(self, &options, "semaphore permit", |session, wait| {
            let body = SemaphoreAcquire {
                session,
                permits_max,
                wait_ms: wait_ms(wait),
            };
            let target = target.clone();
            async move {
                self.json_waiting::<_, SemaphorePermit>(Method::POST, target, Some(&body), wait)
                    .await
            }
        })
        .await?;
        Ok(SemaphoreGuard {
            name: name.to_string(),
            permits_max,
            held: Held {
                client: self.clone(),
                base,
                key: permit.key,
                session: Some(session),
            },
        })
    }

    /// Election `name`: campaign, read or follow its leader.
    pub fn election(&self, name: &str) -> Election {
        Election {
            client: self.clone(),
            name: name.to_string(),
            options: RecipeOptions::default(),
        }
    }
}

/// An election; see [`Client::election`].
#[derive(Debug, Clone)]
pub struct Election {
    client: Client,
    name: String,
    options: RecipeOptions,
}

/// Won leadership. Resigns on drop (best effort) and keeps its session alive
/// until then; [`Leadership::lost`] resolves when the session is lost (from
/// then on someone else may lead).
#[derive(Debug)]
pub struct Leadership {
    name: String,
    term: u64,
    value: String,
    held: Held,
}

impl Election {
    /// The election's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Uses `options` for campaigns.
    pub fn with_options(mut self, options: RecipeOptions) -> Election {
        self.options = options;
        self
    }

    fn base(&self) -> String {
        format!("/v1/elections/{}", seg(&self.name))
    }

    /// Campaigns with `value`; returns once elected.
    pub async fn campaign(&self, value: &str) -> Result<Leadership> {
        let target = format!("{}/campaign", self.base());
        let (elected, session) = contend(
            &self.client,
            &self.options,
            "leadership",
            |session, wait| {
                let body = CampaignBody {
                    session,
                    value,
                    wait_ms: wait_ms(wait),
                };
                let target = target.clone();
                async move {
                    self.client
                        .json_waiting::<_, Elected>(Method::POST, target, Some(&body), wait)
                        .await
                }
            },
        )
        .await?;
        Ok(Leadership {
            name: self.name.clone(),
            term: elected.term,
            value: value.to_string(),
            held: Held {
                client: self.client.clone(),
                base: self.base(),
                key: elected.key,
                session: Some(session),
            },
        })
    }

    /// Changes the leader's value (see [`Leadership::proclaim`]).
    pub async fn proclaim(&self, leadership: &mut Leadership, value: &str) -> Result<()> {
        leadership.proclaim(value).await
    }

    /// Steps down (see [`Leadership::resign`]).
    pub async fn resign(&self, leadership: Leadership) -> Result<()> {
        leadership.resign().await
    }

    /// The current leader (`None`: nobody campaigns), as the answering
    /// member shows it.
    pub async fn leader(&self) -> Result<Option<LeaderInfo>> {
        let state: ElectionState = self
            .client
            .json_call(Method::GET, self.base(), None::<&()>, Safety::Idempotent)
            .await?;
        Ok(state.leader)
    }

    /// A stream of leadership changes: the leader now first, then each
    /// change of leader or of its value. Reconnects to another member when
    /// a stream breaks (and yields the leader again only if it changed).
    /// Ends with an error only when the server refuses for good.
    pub fn observe(&self) -> Pin<Box<dyn Stream<Item = Result<Option<LeaderInfo>>> + Send>> {
        let state = Observer {
            transport: self.client.transport.clone(),
            target: format!("{}/events", self.base()),
            endpoint: self.client.transport.preferred(),
            conn: None,
            last: None,
            failures: 0,
            done: false,
        };
        Box::pin(futures::stream::unfold(state, |mut state| async move {
            let item = state.next().await?;
            Some((item, state))
        }))
    }
}

impl Leadership {
    /// The election's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The candidate key.
    pub fn key(&self) -> &str {
        &self.held.key
    }

    /// The term: a fencing token that rises strictly from leader to leader.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The value this leader proclaimed last.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The fence for Keeper writes made as this leader.
    pub fn fence(&self) -> Fence {
        Fence::election(self.name.clone(), self.term)
    }

    /// Resolves when the session is lost: someone else may lead from then on.
    pub async fn lost(&self) -> SessionLoss {
        self.held.session().lost().await
    }

    /// True once the session is lost.
    pub fn is_lost(&self) -> bool {
        self.held.session().is_expired()
    }

    /// Changes the leader's value. [`crate::Error::Fenced`] if this
    /// candidate no longer leads.
    pub async fn proclaim(&mut self, value: &str) -> Result<()> {
        let target = format!("{}/proclaim", self.held.base);
        let body = ProclaimBody {
            key: &self.held.key,
            value,
        };
        let _: LeaderInfo = self
            .held
            .client
            .json_call(Method::POST, target, Some(&body), Safety::Write)
            .await?;
        self.value = value.to_string();
        Ok(())
    }

    /// Steps down (the next candidate is elected) and closes the session.
    pub async fn resign(mut self) -> Result<()> {
        let target = format!("{}/resign", self.held.base);
        let body = serde_json::to_vec(&KeyBody {
            key: &self.held.key,
        })
        .map_err(|e| Error::decode(format!("encoding body: {e}")))?;
        let resigned = self
            .held
            .client
            .empty_call(Method::POST, target, Some(body), Safety::Write)
            .await;
        let closed = match self.held.session.take() {
            Some(session) => session.close().await,
            None => Ok(()),
        };
        match (resigned, closed) {
            (Ok(()), _) | (Err(Error::NoNode(_)), Ok(())) => Ok(()),
            (Err(e), _) => Err(e),
        }
    }
}

/// Follows `GET /v1/elections/{name}/events` across members.
struct Observer {
    transport: Arc<Transport>,
    target: String,
    endpoint: usize,
    conn: Option<(reqwest::Response, SseParser)>,
    /// The last leader yielded (`Some(None)`: "nobody" was yielded).
    last: Option<Option<LeaderInfo>>,
    failures: u32,
    done: bool,
}

/// Reconnect attempts in a row before [`Election::observe`] gives up.
const MAX_OBSERVE_RECONNECTS: u32 = 30;
/// Silence after which an observed stream counts as dead (the server sends
/// a keep-alive every 15 s).
const OBSERVE_IDLE_TIMEOUT: Duration = Duration::from_secs(45);

impl Observer {
    async fn connect(&self) -> std::result::Result<reqwest::Response, (bool, Error)> {
        let endpoints = self.transport.endpoints();
        let endpoint = &endpoints[self.endpoint % endpoints.len()];
        let response = self
            .transport
            .stream_http()
            .get(format!("{endpoint}{}", self.target))
            .header(MIN_ZXID_HEADER, self.transport.last_zxid().to_string())
            .send()
            .await
            .map_err(|e| {
                (
                    true,
                    Error::Transport {
                        message: format!("{endpoint}: {}", describe(&e)),
                    },
                )
            })?;
        if let Some(zxid) = response_zxid(&response) {
            self.transport.observe_zxid(zxid);
        }
        let status = response.status().as_u16();
        if status == 200 {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        let err = Error::from_response(status, &body);
        let again = matches!(
            err.code(),
            Some(ErrorCode::Unavailable | ErrorCode::Timeout) | None
        );
        Err((again, err))
    }

    async fn next(&mut self) -> Option<Result<Option<LeaderInfo>>> {
        loop {
            if self.done {
                return None;
            }
            if self.conn.is_none() {
                match self.connect().await {
                    Ok(response) => self.conn = Some((response, SseParser::default())),
                    Err((false, e)) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                    Err((true, e)) => {
                        self.failures += 1;
                        if self.failures > MAX_OBSERVE_RECONNECTS {
                            self.done = true;
                            return Some(Err(e));
                        }
                        self.endpoint += 1;
                        let config = self.transport.config();
                        let pause = config
                            .backoff_initial
                            .saturating_mul(1 << self.failures.min(10))
                            .min(config.backoff_max);
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                }
            }
            let Some((response, parser)) = self.conn.as_mut() else {
                continue;
            };
            if let Some(message) = parser.ready.pop_front() {
                match message.event.as_str() {
                    "leader" => {
                        self.failures = 0;
                        let event: LeaderEvent = match serde_json::from_str(&message.data) {
                            Ok(e) => e,
                            Err(e) => {
                                self.done = true;
                                return Some(Err(Error::decode(format!("leader event: {e}"))));
                            }
                        };
                        if self.last.as_ref() != Some(&event.leader) {
                            self.last = Some(event.leader.clone());
                            return Some(Ok(event.leader));
                        }
                    }
                    "cut_off" => {
                        self.conn = None;
                        self.endpoint += 1;
                    }
                    _ => {}
                }
                continue;
            }
            // The server sends a keep-alive comment every 15 s: silence for
            // longer is a dead connection.
            match tokio::time::timeout(OBSERVE_IDLE_TIMEOUT, response.chunk()).await {
                Ok(Ok(Some(chunk))) => parser.feed(&chunk),
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                    self.conn = None;
                    self.endpoint += 1;
                }
            }
        }
    }
}
