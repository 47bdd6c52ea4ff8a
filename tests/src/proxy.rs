//! A fault-injecting TCP proxy on every peer link of a test cluster.
//!
//! Keeper opens one TCP connection per pair of members, dialed by the smaller id
//! (`crates/server/src/peer/mod.rs`). A proxied [`crate::Cluster`] gives member `i`
//! a `--peers` list in which every larger member `j` is reached through a proxy
//! port of its own, `proxy(i→j)`, that forwards to `j`'s real peer port. So every
//! byte between two members passes through one [`Link`] of this module, and each
//! direction of it can be faulted on its own:
//!
//! - **drop** (a blackhole): the bytes are read and thrown away, as a partition
//!   that loses packets would. Nothing is refused or closed: the members notice
//!   only through their own timeouts. A connection that lost bytes has a torn
//!   stream, so healing resets it (the members redial, as after a real partition).
//! - **delay**: bytes are held for a fixed time before they are written on,
//!   in order (TCP stays FIFO).
//! - **reset**: every open connection of the link is closed at once with an RST
//!   (`SO_LINGER` 0); the dialer reconnects after its backoff.
//!
//! Client traffic (HTTP) does not pass through the proxy: a partition separates
//! members from each other, never the test's clients from a member, as in Jepsen.
//! Everything is undone by [`Network::heal`]; dropping the [`Network`] stops every
//! task and socket.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Chunks a delayed direction may hold before the reader waits (TCP pushes back).
const DELAY_QUEUE_CHUNKS: usize = 4096;
/// Size of one read from a socket.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Faults of one direction of a link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirFaults {
    /// Throw away every byte (blackhole).
    pub drop: bool,
    /// Hold every byte this long before writing it on, in ms.
    pub delay_ms: u64,
}

impl DirFaults {
    fn is_clear(&self) -> bool {
        !self.drop && self.delay_ms == 0
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One open proxied connection: its pump tasks and whether it lost bytes.
struct Conn {
    tasks: Vec<JoinHandle<()>>,
    torn: Arc<AtomicBool>,
    closed: Arc<AtomicBool>,
}

/// The proxy between `dialer` (smaller id) and `acceptor` (larger id).
pub struct Link {
    /// The member that dials (its bytes flow "forward").
    pub dialer: u64,
    /// The member that accepts.
    pub acceptor: u64,
    /// Where the dialer connects (`127.0.0.1:port`).
    pub listen_addr: String,
    /// The acceptor's real peer address.
    pub target: String,
    /// Faults of dialer→acceptor bytes.
    forward: Mutex<DirFaults>,
    /// Faults of acceptor→dialer bytes.
    backward: Mutex<DirFaults>,
    conns: Mutex<BTreeMap<u64, Conn>>,
    next_conn: AtomicU64,
    /// Connections the proxy accepted, over its lifetime.
    pub accepted: AtomicU64,
    /// Bytes thrown away by `drop`, over its lifetime.
    pub dropped_bytes: AtomicU64,
}

impl Link {
    fn faults(&self, forward: bool) -> DirFaults {
        if forward {
            *lock(&self.forward)
        } else {
            *lock(&self.backward)
        }
    }

    /// Closes every open connection with an RST; returns how many.
    pub fn reset(&self) -> usize {
        let conns: Vec<Conn> = std::mem::take(&mut *lock(&self.conns))
            .into_values()
            .collect();
        let n = conns
            .iter()
            .filter(|c| !c.closed.load(Ordering::Relaxed))
            .count();
        for c in conns {
            for t in c.tasks {
                t.abort();
            }
        }
        n
    }

    /// Closes the connections that lost bytes (their streams are torn).
    fn reset_torn(&self) {
        let mut conns = lock(&self.conns);
        let torn: Vec<u64> = conns
            .iter()
            .filter(|(_, c)| c.torn.load(Ordering::Relaxed) || c.closed.load(Ordering::Relaxed))
            .map(|(k, _)| *k)
            .collect();
        for k in torn {
            if let Some(c) = conns.remove(&k) {
                for t in c.tasks {
                    t.abort();
                }
            }
        }
    }
}

/// The proxies of one cluster, addressed by member ids.
pub struct Network {
    links: BTreeMap<(u64, u64), Arc<Link>>,
    accept_tasks: Vec<JoinHandle<()>>,
}

impl Network {
    /// Starts one proxy for every pair of `members` (`(id, real peer address)`),
    /// each on a port from [`crate::free_port`]. Must run inside a tokio runtime.
    pub fn start(members: &[(u64, String)]) -> Network {
        let mut links = BTreeMap::new();
        let mut accept_tasks = Vec::new();
        for (a, _) in members {
            for (b, target) in members {
                if a >= b {
                    continue;
                }
                let listener = loop {
                    let port = crate::free_port();
                    let std_listener = match std::net::TcpListener::bind(("127.0.0.1", port)) {
                        Ok(l) => l,
                        Err(_) => continue,
                    };
                    std_listener
                        .set_nonblocking(true)
                        .expect("nonblocking listener");
                    break TcpListener::from_std(std_listener).expect("tokio listener");
                };
                let link = Arc::new(Link {
                    dialer: *a,
                    acceptor: *b,
                    listen_addr: listener.local_addr().expect("local addr").to_string(),
                    target: target.clone(),
                    forward: Mutex::new(DirFaults::default()),
                    backward: Mutex::new(DirFaults::default()),
                    conns: Mutex::new(BTreeMap::new()),
                    next_conn: AtomicU64::new(0),
                    accepted: AtomicU64::new(0),
                    dropped_bytes: AtomicU64::new(0),
                });
                accept_tasks.push(tokio::spawn(accept_loop(link.clone(), listener)));
                links.insert((*a, *b), link);
            }
        }
        Network {
            links,
            accept_tasks,
        }
    }

    /// The address member `from` must dial to reach `to` (only for `from < to`).
    pub fn dial_addr(&self, from: u64, to: u64) -> Option<&str> {
        self.links.get(&(from, to)).map(|l| l.listen_addr.as_str())
    }

    /// Every link, by `(dialer, acceptor)`.
    pub fn links(&self) -> impl Iterator<Item = &Arc<Link>> {
        self.links.values()
    }

    fn link(&self, x: u64, y: u64) -> Option<&Arc<Link>> {
        self.links.get(&(x.min(y), x.max(y)))
    }

    /// Changes the faults of bytes flowing `from` → `to`.
    pub fn update(&self, from: u64, to: u64, f: impl FnOnce(&mut DirFaults)) {
        let Some(link) = self.link(from, to) else {
            return;
        };
        let mut faults = if from < to {
            lock(&link.forward)
        } else {
            lock(&link.backward)
        };
        f(&mut faults);
    }

    /// The faults of bytes flowing `from` → `to`.
    pub fn faults(&self, from: u64, to: u64) -> DirFaults {
        self.link(from, to)
            .map(|l| l.faults(from < to))
            .unwrap_or_default()
    }

    /// Blackholes bytes `from` → `to` only (a one-way partition).
    pub fn drop_one_way(&self, from: u64, to: u64) {
        self.update(from, to, |f| f.drop = true);
    }

    /// Blackholes both directions between every pair of members that are in
    /// different groups (a symmetric partition). Members in no group keep
    /// their links.
    pub fn partition(&self, groups: &[Vec<u64>]) {
        for (gi, g) in groups.iter().enumerate() {
            for (hi, h) in groups.iter().enumerate() {
                if gi == hi {
                    continue;
                }
                for &a in g {
                    for &b in h {
                        self.update(a, b, |f| f.drop = true);
                    }
                }
            }
        }
    }

    /// Cuts `id` off from every other member, both ways.
    pub fn isolate(&self, id: u64, all: &[u64]) {
        let rest: Vec<u64> = all.iter().copied().filter(|m| *m != id).collect();
        self.partition(&[vec![id], rest]);
    }

    /// Delays bytes `from` → `to` by `delay_ms`.
    pub fn delay(&self, from: u64, to: u64, delay_ms: u64) {
        self.update(from, to, |f| f.delay_ms = delay_ms);
    }

    /// Resets every open connection between `a` and `b`; returns how many.
    pub fn reset(&self, a: u64, b: u64) -> usize {
        self.link(a, b).map(|l| l.reset()).unwrap_or(0)
    }

    /// Clears every fault and resets the connections whose streams lost bytes.
    pub fn heal(&self) {
        for link in self.links.values() {
            *lock(&link.forward) = DirFaults::default();
            *lock(&link.backward) = DirFaults::default();
            link.reset_torn();
        }
    }

    /// True when no link has a fault.
    pub fn is_healed(&self) -> bool {
        self.links
            .values()
            .all(|l| l.faults(true).is_clear() && l.faults(false).is_clear())
    }

    /// A one-line description of the faults in force (for reports).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for l in self.links.values() {
            for (fwd, from, to) in [(true, l.dialer, l.acceptor), (false, l.acceptor, l.dialer)] {
                let f = l.faults(fwd);
                if f.drop {
                    parts.push(format!("{from}-x->{to}"));
                } else if f.delay_ms > 0 {
                    parts.push(format!("{from}-{}ms->{to}", f.delay_ms));
                }
            }
        }
        if parts.is_empty() {
            "healed".into()
        } else {
            parts.join(" ")
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for t in &self.accept_tasks {
            t.abort();
        }
        for l in self.links.values() {
            l.reset();
        }
    }
}

/// `SO_LINGER` 0, so closing sends an RST. (Deprecated in tokio because a
/// non-zero linger blocks the thread on drop; a zero linger never blocks.)
#[allow(deprecated)]
fn rst_on_close(s: &TcpStream) {
    let _ = s.set_linger(Some(Duration::ZERO));
}

async fn accept_loop(link: Arc<Link>, listener: TcpListener) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        link.accepted.fetch_add(1, Ordering::Relaxed);
        let link = link.clone();
        // Connect upstream on its own task so a slow upstream never blocks accepts.
        tokio::spawn(async move {
            let upstream = match tokio::time::timeout(
                Duration::from_secs(1),
                TcpStream::connect(&link.target),
            )
            .await
            {
                Ok(Ok(s)) => s,
                _ => {
                    rst_on_close(&inbound);
                    return;
                }
            };
            let _ = inbound.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            rst_on_close(&inbound);
            rst_on_close(&upstream);
            let (in_r, in_w) = inbound.into_split();
            let (up_r, up_w) = upstream.into_split();
            let torn = Arc::new(AtomicBool::new(false));
            let closed = Arc::new(AtomicBool::new(false));
            let id = link.next_conn.fetch_add(1, Ordering::Relaxed);
            let mut conns = lock(&link.conns);
            let tasks = vec![
                tokio::spawn(pump(
                    link.clone(),
                    true,
                    in_r,
                    up_w,
                    torn.clone(),
                    closed.clone(),
                )),
                tokio::spawn(pump(
                    link.clone(),
                    false,
                    up_r,
                    in_w,
                    torn.clone(),
                    closed.clone(),
                )),
            ];
            conns.insert(
                id,
                Conn {
                    tasks,
                    torn,
                    closed,
                },
            );
        });
    }
}

/// Copies one direction, applying its faults as they are when each chunk is read.
async fn pump(
    link: Arc<Link>,
    forward: bool,
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    torn: Arc<AtomicBool>,
    closed: Arc<AtomicBool>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(DELAY_QUEUE_CHUNKS);
    let writer = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    let reader = async move {
        let mut buf = vec![0u8; READ_CHUNK_BYTES];
        let mut last_due = Instant::now();
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let faults = link.faults(forward);
            if faults.drop {
                torn.store(true, Ordering::Relaxed);
                link.dropped_bytes.fetch_add(n as u64, Ordering::Relaxed);
                continue;
            }
            let due = (Instant::now() + Duration::from_millis(faults.delay_ms)).max(last_due);
            last_due = due;
            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                return;
            }
        }
    };
    // Either side ending ends the connection: the other pump sees it via the peer.
    tokio::join!(reader, writer);
    closed.store(true, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server standing in for member 2's peer port.
    async fn echo_server() -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn roundtrip(s: &mut TcpStream, within: Duration) -> Result<Duration, String> {
        let t = Instant::now();
        s.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        match tokio::time::timeout(within, s.read_exact(&mut buf)).await {
            Ok(Ok(_)) if &buf == b"ping" => Ok(t.elapsed()),
            Ok(Ok(_)) => Err("garbled".into()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timeout".into()),
        }
    }

    #[tokio::test]
    async fn proxy_forwards_drops_delays_resets_and_heals() {
        let target = echo_server().await;
        let net = Network::start(&[(1, "unused".into()), (2, target)]);
        let addr = net.dial_addr(1, 2).unwrap().to_string();
        assert!(net.dial_addr(2, 1).is_none(), "only the smaller id dials");
        let mut s = TcpStream::connect(&addr).await.unwrap();
        roundtrip(&mut s, Duration::from_secs(2)).await.unwrap();

        // One way: 2 -> 1 dropped: the echo never comes back.
        net.drop_one_way(2, 1);
        assert_eq!(net.describe(), "2-x->1");
        assert!(roundtrip(&mut s, Duration::from_millis(300)).await.is_err());
        // Healing resets the torn connection; a new one works.
        net.heal();
        assert!(net.is_healed());
        let mut buf = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
        assert!(
            matches!(r, Ok(Ok(0)) | Ok(Err(_))),
            "torn connection not reset: {r:?}"
        );
        let mut s = TcpStream::connect(&addr).await.unwrap();
        roundtrip(&mut s, Duration::from_secs(2)).await.unwrap();

        // Delay each way by 150 ms: a round trip takes at least 300 ms.
        net.delay(1, 2, 150);
        net.delay(2, 1, 150);
        let rtt = roundtrip(&mut s, Duration::from_secs(3)).await.unwrap();
        assert!(rtt >= Duration::from_millis(290), "rtt {rtt:?}");
        net.heal();
        let rtt = roundtrip(&mut s, Duration::from_secs(2)).await.unwrap();
        assert!(rtt < Duration::from_millis(150), "rtt after heal {rtt:?}");

        // Symmetric partition: nothing either way, also for new connections.
        net.partition(&[vec![1], vec![2]]);
        let mut s2 = TcpStream::connect(&addr).await.unwrap();
        assert!(roundtrip(&mut s2, Duration::from_millis(300))
            .await
            .is_err());
        net.heal();

        // Reset closes the open connections at once.
        let mut s3 = TcpStream::connect(&addr).await.unwrap();
        roundtrip(&mut s3, Duration::from_secs(2)).await.unwrap();
        assert!(net.reset(1, 2) >= 1);
        let r = tokio::time::timeout(Duration::from_secs(2), s3.read(&mut buf)).await;
        assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "not reset: {r:?}");
    }
}
