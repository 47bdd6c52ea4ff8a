//! A static address map consulted before DNS when a member dials a peer.
//!
//! Kubernetes gives StatefulSet pods DNS names (`keeper-1.keeper-peers.ns.svc.cluster.local`)
//! that do not resolve until the pod exists. Outside a cluster (tests, hosts without that
//! DNS), a hosts file maps those names to addresses: one `HOST:PORT ADDR:PORT` pair per
//! line, `#` starts a comment. The file is read again at every dial, so an entry added
//! later is picked up by the dialer's next attempt, just as a DNS record that appears
//! later is. A name that is neither in the file nor resolvable fails that dial, and the
//! dialer tries again after its backoff: a member never crashes because its peers do
//! not resolve yet.

use std::path::Path;

/// Largest hosts file read, in bytes (a bigger one is ignored with a warning).
pub const MAX_HOSTS_FILE_BYTES: u64 = 1 << 20;

/// Looks `addr` up in the `HOST:PORT ADDR:PORT` lines of `text`.
pub fn lookup(text: &str, addr: &str) -> Option<String> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            Some((words.next()?, words.next()?))
        })
        .find(|(name, _)| *name == addr)
        .map(|(_, target)| target.to_string())
}

/// The address to connect to for the peer address `addr`: its entry in `hosts_file`
/// when there is one, otherwise `addr` itself (resolved by DNS on connect).
pub async fn dial_target(hosts_file: Option<&Path>, addr: &str) -> String {
    let Some(path) = hosts_file else {
        return addr.to_string();
    };
    match tokio::fs::metadata(path).await {
        Ok(m) if m.len() > MAX_HOSTS_FILE_BYTES => {
            tracing::warn!(path = %path.display(), "peer hosts file too large; ignored");
            return addr.to_string();
        }
        Err(_) => return addr.to_string(),
        Ok(_) => {}
    }
    match tokio::fs::read_to_string(path).await {
        Ok(text) => lookup(&text, addr).unwrap_or_else(|| addr.to_string()),
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "peer hosts file unreadable");
            addr.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_the_name_and_skips_comments_and_garbage() {
        let text = "# test map\nkeeper-0.p.ns.svc.cluster.local:7888 127.0.0.1:20001\n\nlonely\nkeeper-1.p.ns.svc.cluster.local:7888   127.0.0.1:20002 # two\n";
        assert_eq!(
            lookup(text, "keeper-1.p.ns.svc.cluster.local:7888").as_deref(),
            Some("127.0.0.1:20002")
        );
        assert_eq!(lookup(text, "keeper-2.p.ns.svc.cluster.local:7888"), None);
        assert_eq!(lookup(text, "lonely"), None);
    }
}
