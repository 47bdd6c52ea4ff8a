//! Integration tests of the peer transport over real sockets on 127.0.0.1: ordering,
//! reconnects after restarts, refusal of bad connections, queue overflow, throughput.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use keeper_server::peer::frame::{self, Handshake, FRAME_MAGIC, HEADER_LEN, PROTOCOL_VERSION};
use keeper_server::peer::{DropReason, PeerConfig, PeerError, PeerEvent, PeerHandle, PeerNetwork};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::Receiver;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Msg {
    Seq { from: u64, seq: u64 },
    Blob(Vec<u8>),
}

type Events = Receiver<PeerEvent<Msg>>;

const CLUSTER: &str = "peer-test";
const STEP: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {STEP:?} waiting for: {what}"),
    }
}

fn config(my_id: u64, addrs: &BTreeMap<u64, String>) -> PeerConfig {
    PeerConfig {
        my_id,
        cluster_name: CLUSTER.into(),
        listen_addr: addrs.get(&my_id).cloned().unwrap_or_default(),
        peers: addrs.clone(),
        reconnect_backoff_max_ms: 200,
        ..PeerConfig::default()
    }
}

async fn bind_any() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// Binds `addr` again after a member shut down (retrying while the OS releases it).
async fn rebind(addr: &str) -> TcpListener {
    within("rebinding the address", async {
        loop {
            match TcpListener::bind(addr).await {
                Ok(l) => return l,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
}

/// Binds `n` listeners (ids 1..=n) and returns them with the address map.
async fn listeners(n: u64) -> (Vec<TcpListener>, BTreeMap<u64, String>) {
    let mut ls = Vec::new();
    let mut addrs = BTreeMap::new();
    for id in 1..=n {
        let l = bind_any().await;
        addrs.insert(id, l.local_addr().unwrap().to_string());
        ls.push(l);
    }
    (ls, addrs)
}

/// Receives events until one matches `pred`; returns the events seen before it.
async fn wait_for(
    rx: &mut Events,
    what: &str,
    pred: impl Fn(&PeerEvent<Msg>) -> bool,
) -> Vec<PeerEvent<Msg>> {
    within(what, async {
        let mut seen = Vec::new();
        loop {
            match rx.recv().await {
                Some(ev) if pred(&ev) => return seen,
                Some(ev) => seen.push(ev),
                None => panic!("event channel closed while waiting for: {what}"),
            }
        }
    })
    .await
}

/// Waits until `Connected` arrived for every peer in `peers` (in any order).
async fn wait_connected(rx: &mut Events, me: u64, peers: &[u64]) {
    let mut missing: std::collections::BTreeSet<u64> = peers.iter().copied().collect();
    within(&format!("member {me}: Connected for {peers:?}"), async {
        while !missing.is_empty() {
            match rx.recv().await {
                Some(PeerEvent::Connected { peer }) => {
                    missing.remove(&peer);
                }
                Some(_) => {}
                None => panic!("member {me}: event channel closed"),
            }
        }
    })
    .await;
}

/// Waits for the `Seq` message `seq` from `from`, skipping other events.
async fn wait_message(rx: &mut Events, from: u64, seq: u64) {
    wait_for(rx, &format!("message {seq} from {from}"), |e| {
        *e == PeerEvent::Message {
            from,
            msg: Msg::Seq { from, seq },
        }
    })
    .await;
}

async fn start_all(n: u64) -> (Vec<(PeerHandle<Msg>, Events)>, BTreeMap<u64, String>) {
    let (ls, addrs) = listeners(n).await;
    let mut members = Vec::new();
    for (i, l) in ls.into_iter().enumerate() {
        let id = i as u64 + 1;
        members.push(PeerNetwork::<Msg>::start(config(id, &addrs), l).unwrap());
    }
    for (i, (_, rx)) in members.iter_mut().enumerate() {
        let me = i as u64 + 1;
        let others: Vec<u64> = (1..=n).filter(|&p| p != me).collect();
        wait_connected(rx, me, &others).await;
    }
    (members, addrs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_preserve_per_sender_order() {
    const N: u64 = 5000;
    let (members, _addrs) = start_all(3).await;
    let handles: Vec<PeerHandle<Msg>> = members.iter().map(|(h, _)| h.clone()).collect();
    let mut collectors = Vec::new();
    for (i, (_, mut rx)) in members.into_iter().enumerate() {
        let me = i as u64 + 1;
        collectors.push(tokio::spawn(async move {
            let mut got: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
            while got.values().map(Vec::len).sum::<usize>() < 2 * N as usize {
                match rx.recv().await {
                    Some(PeerEvent::Message {
                        from,
                        msg: Msg::Seq { from: f, seq },
                    }) => {
                        assert_eq!(from, f, "member {me}: sender id mismatch");
                        got.entry(from).or_default().push(seq);
                    }
                    other => panic!("member {me}: unexpected event {other:?}"),
                }
            }
            (me, got)
        }));
    }
    // Interleave sends to both peers from every member.
    for seq in 0..N {
        for h in &handles {
            let me = h.my_id();
            for to in (1..=3).filter(|&p| p != me) {
                h.send(to, Msg::Seq { from: me, seq }).unwrap();
            }
        }
        if seq % 1000 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for c in collectors {
        let (me, got) = within("all messages delivered", c).await.unwrap();
        assert_eq!(got.len(), 2, "member {me} heard from {:?}", got.keys());
        for (from, seqs) in got {
            let expected: Vec<u64> = (0..N).collect();
            assert!(
                seqs == expected,
                "member {me}: messages from {from} out of order or missing"
            );
        }
    }
    for h in &handles {
        let m = h.metrics();
        for (peer, pm) in &m.peers {
            assert_eq!(pm.frames_sent, N, "member {} -> {peer}", h.my_id());
            assert_eq!(pm.frames_received, N, "member {} <- {peer}", h.my_id());
            assert_eq!(pm.links_established, 1);
        }
    }
    for h in handles {
        within("shutdown", h.shutdown()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_member_reconnects_and_messages_flow() {
    let (mut members, addrs) = start_all(3).await;

    // Restart member 3 (it only accepts): 1 and 2 must redial it.
    let (h3, rx3) = members.pop().unwrap();
    within("shutdown of 3", h3.shutdown()).await;
    drop(rx3);
    for (h, rx) in members.iter_mut() {
        let me = h.my_id();
        wait_for(rx, &format!("member {me}: Disconnected{{3}}"), |e| {
            *e == PeerEvent::Disconnected { peer: 3 }
        })
        .await;
        assert!(matches!(
            h.send(3, Msg::Seq { from: me, seq: 0 }),
            Err(PeerError::NotConnected(3))
        ));
    }
    let l3 = rebind(&addrs[&3]).await;
    let (h3, mut rx3) = PeerNetwork::<Msg>::start(config(3, &addrs), l3).unwrap();
    wait_connected(&mut rx3, 3, &[1, 2]).await;
    for (h, rx) in members.iter_mut() {
        let me = h.my_id();
        wait_connected(rx, me, &[3]).await;
        h.send(3, Msg::Seq { from: me, seq: 1 }).unwrap();
        h3.send(me, Msg::Seq { from: 3, seq: 1 }).unwrap();
        wait_message(rx, 3, 1).await;
    }
    wait_message(&mut rx3, 1, 1).await;
    // Member 2's message may have arrived before member 1's; accept either order.
    let m = h3.metrics();
    assert_eq!(m.peers[&1].frames_received, 1);
    within("message from 2 at 3", async {
        while h3.metrics().peers[&2].frames_received < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    members.push((h3, rx3));

    // Restart member 1 (it dials both others): they must see it go and come back.
    let (h1, rx1) = members.remove(0);
    within("shutdown of 1", h1.shutdown()).await;
    drop(rx1);
    for (h, rx) in members.iter_mut() {
        let me = h.my_id();
        wait_for(rx, &format!("member {me}: Disconnected{{1}}"), |e| {
            *e == PeerEvent::Disconnected { peer: 1 }
        })
        .await;
    }
    let l1 = rebind(&addrs[&1]).await;
    let (h1, mut rx1) = PeerNetwork::<Msg>::start(config(1, &addrs), l1).unwrap();
    wait_connected(&mut rx1, 1, &[2, 3]).await;
    for (h, rx) in members.iter_mut() {
        let me = h.my_id();
        wait_connected(rx, me, &[1]).await;
        h1.send(me, Msg::Seq { from: 1, seq: 2 }).unwrap();
        wait_message(rx, 1, 2).await;
        h.send(1, Msg::Seq { from: me, seq: 2 }).unwrap();
        wait_message(&mut rx1, me, 2).await;
    }
    assert_eq!(members[0].0.metrics().peers[&1].links_established, 2);
    within("shutdown", h1.shutdown()).await;
    for (h, _) in members {
        within("shutdown", h.shutdown()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_on_purpose_reports_and_relinks() {
    let (mut members, _addrs) = start_all(2).await;
    let (b, a) = members.split_at_mut(1);
    let (h1, rx1) = &mut b[0];
    let (h2, rx2) = &mut a[0];
    for (who, by) in [(1u64, 2u64), (2, 1)] {
        // `by` drops the link; both sides see it break and come back.
        let h_by = if by == 1 { &*h1 } else { &*h2 };
        assert!(h_by.disconnect(who));
        for (me, rx, p) in [(1u64, &mut *rx1, 2u64), (2, &mut *rx2, 1)] {
            wait_for(rx, &format!("member {me}: Disconnected{{{p}}}"), |e| {
                *e == PeerEvent::Disconnected { peer: p }
            })
            .await;
            wait_connected(rx, me, &[p]).await;
        }
        h1.send(2, Msg::Seq { from: 1, seq: by }).unwrap();
        wait_message(rx2, 1, by).await;
    }
    assert_eq!(h1.metrics().peers[&2].dropped(DropReason::Requested), 1);
    assert_eq!(h2.metrics().peers[&1].dropped(DropReason::Requested), 1);
    assert!(!h1.disconnect(99));
    h1.shutdown().await;
    h2.shutdown().await;
}

/// Raw bytes of one frame with the given payload, version and announced length.
fn raw_frame(version: u16, len: u32, crc: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&FRAME_MAGIC);
    f.extend_from_slice(&version.to_be_bytes());
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(&crc.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn handshake_frame(cluster: &str, member_id: u64, protocol_version: u16) -> Vec<u8> {
    let mut out = Vec::new();
    frame::encode_frame(
        &Handshake {
            protocol_version,
            cluster: cluster.into(),
            member_id,
        },
        1024,
        &mut out,
    )
    .unwrap();
    out
}

/// Connects, writes `bytes`, and asserts the member closes the connection.
async fn expect_closed(addr: &str, bytes: &[u8], case: &str) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The member may close before reading everything: a write error is fine too.
    let _ = s.write_all(bytes).await;
    let mut sink = [0u8; 256];
    within(&format!("member closes the connection ({case})"), async {
        if let Ok(n @ 1..) = s.read(&mut sink).await {
            panic!("member answered a bad connection with {n} bytes ({case})");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inbound_connections_are_closed_and_member_keeps_serving() {
    // Member 3 exists in the config but never runs; 2 (smaller) would dial it.
    let (ls, mut addrs) = listeners(2).await;
    addrs.insert(3, "127.0.0.1:1".into());
    let mut it = ls.into_iter();
    let (h1, mut rx1) = PeerNetwork::<Msg>::start(config(1, &addrs), it.next().unwrap()).unwrap();
    let (h2, mut rx2) = PeerNetwork::<Msg>::start(config(2, &addrs), it.next().unwrap()).unwrap();
    wait_connected(&mut rx1, 1, &[2]).await;
    wait_connected(&mut rx2, 2, &[1]).await;
    let addr2 = addrs[&2].clone();

    let good = handshake_frame(CLUSTER, 1, PROTOCOL_VERSION);
    let payload = &good[HEADER_LEN..];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        (
            "bad checksum",
            raw_frame(PROTOCOL_VERSION, payload.len() as u32, 0xDEAD_BEEF, payload),
        ),
        (
            "oversized length",
            raw_frame(PROTOCOL_VERSION, 1 << 30, 0, &[]),
        ),
        (
            "bad header version",
            raw_frame(9, payload.len() as u32, crc32fast::hash(payload), payload),
        ),
        (
            "wrong cluster",
            handshake_frame("other-cluster", 1, PROTOCOL_VERSION),
        ),
        (
            "unknown member id",
            handshake_frame(CLUSTER, 99, PROTOCOL_VERSION),
        ),
        (
            "handshake version",
            handshake_frame(CLUSTER, 1, PROTOCOL_VERSION + 1),
        ),
        (
            "wrong dial direction",
            handshake_frame(CLUSTER, 3, PROTOCOL_VERSION),
        ),
        ("my own id", handshake_frame(CLUSTER, 2, PROTOCOL_VERSION)),
        ("undecodable handshake", {
            let p = [0xFFu8; 8];
            raw_frame(PROTOCOL_VERSION, p.len() as u32, crc32fast::hash(&p), &p)
        }),
    ];
    for (i, (case, bytes)) in cases.iter().enumerate() {
        expect_closed(&addr2, bytes, case).await;
        // The refusal is counted, and the real link is untouched and still works.
        within("refusal counted", async {
            while h2.metrics().handshakes_refused < i as u64 + 1 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        h1.send(
            2,
            Msg::Seq {
                from: 1,
                seq: i as u64,
            },
        )
        .unwrap();
        let skipped = wait_for(&mut rx2, "message after bad client", |e| {
            *e == PeerEvent::Message {
                from: 1,
                msg: Msg::Seq {
                    from: 1,
                    seq: i as u64,
                },
            }
        })
        .await;
        assert!(skipped.is_empty(), "{case}: unexpected events {skipped:?}");
    }
    assert_eq!(h2.metrics().handshakes_refused, cases.len() as u64);
    assert_eq!(h2.metrics().peers[&1].links_established, 1);

    // A client that passes the handshake as member 1 replaces the real link, then
    // sends a corrupt frame: that link is closed as a bad frame, and the real member 1
    // redials and serves again.
    let mut s = TcpStream::connect(&addr2).await.unwrap();
    s.write_all(&good).await.unwrap();
    let mut reply = vec![0u8; HEADER_LEN];
    within("handshake reply", s.read_exact(&mut reply))
        .await
        .unwrap();
    let mut msg = Vec::new();
    frame::encode_frame(&Msg::Seq { from: 1, seq: 500 }, 1 << 20, &mut msg).unwrap();
    let last = msg.len() - 1;
    msg[last] ^= 0xFF;
    let _ = s.write_all(&msg).await;
    within("bad frame counted", async {
        while h2.metrics().peers[&1].dropped(DropReason::BadFrame) < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(h2.metrics().peers[&1].dropped(DropReason::Replaced) >= 1);
    wait_for(&mut rx1, "member 1 sees its link replaced", |e| {
        *e == PeerEvent::Disconnected { peer: 2 }
    })
    .await;
    wait_connected(&mut rx1, 1, &[2]).await;
    h1.send(2, Msg::Seq { from: 1, seq: 1000 }).unwrap();
    wait_message(&mut rx2, 1, 1000).await;
    h1.shutdown().await;
    h2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_overflow_resets_link_instead_of_blocking() {
    const QUEUE: usize = 64;
    let (ls, addrs) = listeners(2).await;
    let mut it = ls.into_iter();
    let c1 = PeerConfig {
        peer_send_queue_frames: QUEUE,
        ..config(1, &addrs)
    };
    let c2 = PeerConfig {
        peer_event_queue: 16,
        ..config(2, &addrs)
    };
    let (h1, mut rx1) = PeerNetwork::<Msg>::start(c1, it.next().unwrap()).unwrap();
    let (h2, mut rx2) = PeerNetwork::<Msg>::start(c2, it.next().unwrap()).unwrap();
    wait_connected(&mut rx1, 1, &[2]).await;
    wait_connected(&mut rx2, 2, &[1]).await;

    // Member 2 does not read its events: the link backs up until the queue overflows.
    let blob = vec![7u8; 64 * 1024];
    let mut overflowed_at = None;
    within("queue overflow", async {
        for i in 0..20_000u64 {
            match h1.send(2, Msg::Blob(blob.clone())) {
                Ok(()) => {}
                Err(PeerError::QueueFull(2)) => {
                    overflowed_at = Some(i);
                    break;
                }
                Err(e) => panic!("unexpected send error {e}"),
            }
            assert!(h1.queue_depth(2).unwrap() <= QUEUE);
            if i % 16 == 0 {
                tokio::task::yield_now().await;
            }
        }
    })
    .await;
    let at = overflowed_at.expect("queue never overflowed");
    println!("send queue of {QUEUE} overflowed after {at} sends of 64 KiB");
    wait_for(&mut rx1, "Disconnected after overflow", |e| {
        *e == PeerEvent::Disconnected { peer: 2 }
    })
    .await;
    assert_eq!(h1.metrics().peers[&2].dropped(DropReason::QueueFull), 1);

    // Once member 2 reads again, the link comes back and messages flow.
    let drain = tokio::spawn(async move {
        wait_message(&mut rx2, 1, 77).await;
        rx2
    });
    within("reconnect after overflow", async {
        loop {
            match rx1.recv().await {
                Some(PeerEvent::Connected { peer: 2 }) => break,
                Some(_) => {}
                None => panic!("events closed"),
            }
        }
    })
    .await;
    h1.send(2, Msg::Seq { from: 1, seq: 77 }).unwrap();
    let _rx2 = within("marker after reconnect", drain).await.unwrap();
    h1.shutdown().await;
    h2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_256_byte_messages_over_one_link() {
    const N: usize = 100_000;
    const WINDOW: usize = 4096;
    let (mut members, _addrs) = start_all(2).await;
    let (h2, mut rx2) = members.pop().unwrap();
    let (h1, _rx1) = members.pop().unwrap();
    for mode in ["send (writer encodes)", "broadcast (caller encodes)"] {
        let counter = tokio::spawn(async move {
            let mut n = 0;
            while n < N {
                match rx2.recv().await {
                    Some(PeerEvent::Message {
                        msg: Msg::Blob(b), ..
                    }) => {
                        assert_eq!(b.len(), 256);
                        n += 1;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            rx2
        });
        let payload = vec![0xABu8; 256];
        let start = Instant::now();
        let mut in_calls = Duration::ZERO;
        let mut sent = 0;
        while sent < N {
            // Flow control, as the driver would do: stay under the queue bound.
            if h1.queue_depth(2).unwrap() >= WINDOW {
                tokio::task::yield_now().await;
                continue;
            }
            let t = Instant::now();
            let msg = Msg::Blob(payload.clone());
            if mode.starts_with("send") {
                h1.send(2, msg).unwrap();
            } else {
                assert_eq!(h1.broadcast(&[2], &msg).unwrap(), 1);
            }
            in_calls += t.elapsed();
            sent += 1;
        }
        rx2 = within("all throughput messages", counter).await.unwrap();
        let secs = start.elapsed().as_secs_f64();
        println!(
            "throughput [{mode}]: {N} x 256 B in {secs:.3} s = {:.0} msg/s ({:.1} MB/s); caller time in send calls {:.0} ns/msg",
            N as f64 / secs,
            (N * 256) as f64 / secs / 1e6,
            in_calls.as_nanos() as f64 / N as f64
        );
    }
    assert_eq!(h1.metrics().peers[&2].frames_sent, 2 * N as u64);
    h1.shutdown().await;
    h2.shutdown().await;
}
