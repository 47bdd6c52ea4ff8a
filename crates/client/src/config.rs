//! Client configuration: the members to talk to and every bound the client
//! applies (timeouts, attempts, backoff). A plain struct with `Default` and
//! [`ClientConfig::validate`]; only `keeperctl` knows about flags and env vars.

use std::time::Duration;

use crate::error::{Error, Result};

/// The endpoint used when none is given (Keeper's default client port).
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:7181";
/// Default bound on one HTTP attempt, connect to last body byte.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on establishing a TCP connection to one member.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default bound on attempts per call, across all endpoints.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 6;
/// Default pause after a full pass over the endpoints failed; doubles per pass.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(50);
/// Default ceiling of that pause.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How a [`crate::Client`] reaches the ensemble.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Base URLs of the members (`http://host:port`; a bare `host:port` gets
    /// `http://`). The client sticks to one and fails over in list order.
    pub endpoints: Vec<String>,
    /// Bound on one HTTP attempt. A write whose attempt times out fails with
    /// [`Error::ConnectionLoss`] (outcome unknown).
    pub request_timeout: Duration,
    /// Bound on connecting to one member. A connect failure is always safe to
    /// retry on the next member, for reads and writes alike.
    pub connect_timeout: Duration,
    /// Bound on attempts per call, across all endpoints (at least 1).
    pub max_attempts: u32,
    /// Pause after every full pass over the endpoints failed; doubles per pass.
    pub backoff_initial: Duration,
    /// Ceiling of the pause.
    pub backoff_max: Duration,
    /// Retry writes on the next member after a `503 Unavailable` answer. Off by
    /// default: only turn it on if the server promises that a 503 write was
    /// not applied. Reads are always retried on 503.
    pub retry_writes_on_unavailable: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            endpoints: vec![DEFAULT_ENDPOINT.to_string()],
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff_initial: DEFAULT_BACKOFF_INITIAL,
            backoff_max: DEFAULT_BACKOFF_MAX,
            retry_writes_on_unavailable: false,
        }
    }
}

impl ClientConfig {
    /// Defaults with these endpoints.
    pub fn new<I, S>(endpoints: I) -> ClientConfig
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..ClientConfig::default()
        }
    }

    /// Parses a comma-separated endpoint list (`"a:7181,b:7181"`).
    pub fn from_endpoint_list(list: &str) -> ClientConfig {
        ClientConfig::new(
            list.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        )
    }

    /// Sets the per-attempt timeout.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the connect timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the bound on attempts per call.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Sets the backoff between passes over the endpoints.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max;
        self
    }

    /// Checks every bound and returns the normalized endpoint URLs
    /// (scheme added, trailing `/` removed).
    pub fn validate(&self) -> Result<Vec<String>> {
        if self.endpoints.is_empty() {
            return Err(Error::config("no endpoints"));
        }
        if self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(Error::config("timeouts must be positive"));
        }
        if self.max_attempts == 0 {
            return Err(Error::config("max_attempts must be at least 1"));
        }
        if self.backoff_initial > self.backoff_max {
            return Err(Error::config("backoff_initial exceeds backoff_max"));
        }
        self.endpoints
            .iter()
            .map(|e| normalize_endpoint(e))
            .collect()
    }
}

/// `host:port` -> `http://host:port`; `http://h:p/` -> `http://h:p`.
fn normalize_endpoint(raw: &str) -> Result<String> {
    let trimmed = raw.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(Error::config("empty endpoint"));
    }
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_string()
    } else {
        format!("http://{trimmed}")
    };
    let url = reqwest::Url::parse(&with_scheme)
        .map_err(|e| Error::config(format!("bad endpoint {raw:?}: {e}")))?;
    if url.scheme() != "http" {
        return Err(Error::config(format!(
            "bad endpoint {raw:?}: only http:// is supported by this build"
        )));
    }
    if url.host_str().is_none() {
        return Err(Error::config(format!("bad endpoint {raw:?}: no host")));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Error::config(format!(
            "bad endpoint {raw:?}: query or fragment"
        )));
    }
    Ok(with_scheme)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_normalized() {
        let cfg = ClientConfig::from_endpoint_list(" 127.0.0.1:7181, http://h:1/ ,,");
        assert_eq!(
            cfg.validate().ok(),
            Some(vec![
                "http://127.0.0.1:7181".to_string(),
                "http://h:1".to_string()
            ])
        );
    }

    #[test]
    fn bad_configs_are_refused() {
        assert!(ClientConfig::new(Vec::<String>::new()).validate().is_err());
        assert!(ClientConfig::new(["https://h:1"]).validate().is_err());
        assert!(ClientConfig::new(["http://[::1"]).validate().is_err());
        assert!(ClientConfig::new(["h:1?x=1"]).validate().is_err());
        assert!(ClientConfig::default().max_attempts(0).validate().is_err());
        assert!(ClientConfig::default()
            .request_timeout(Duration::ZERO)
            .validate()
            .is_err());
        assert!(ClientConfig::default()
            .backoff(Duration::from_secs(2), Duration::from_secs(1))
            .validate()
            .is_err());
        assert!(ClientConfig::default().validate().is_ok());
    }
}
