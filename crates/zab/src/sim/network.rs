//! The simulated network: one FIFO link per ordered pair of members, with
//! per-message delay and loss, link breaks (which drop what is in flight, as
//! a broken TCP connection does) and partitions that heal.

use std::collections::VecDeque;

use crate::{Message, NodeId, Zxid};

/// What travels on a link.
#[derive(Debug, Clone)]
pub enum Packet {
    /// A core message.
    Msg(Message),
    /// A snapshot stream: the sender's applied state, i.e. the first `len`
    /// globally delivered transactions, ending at `zxid`.
    Snapshot {
        /// The snapshot's last zxid.
        zxid: Zxid,
        /// How many transactions it holds.
        len: usize,
    },
}

/// All links of an `n`-member cluster (ids 1..=n), carrying packets of type
/// `P` (the core simulator's [`Packet`]; the whole-member simulator of
/// `keeper-server` carries its members' peer messages).
#[derive(Debug)]
pub struct Network<P = Packet> {
    n: usize,
    links: Vec<VecDeque<(u64, P)>>,
    last_due: Vec<u64>,
    /// Partition group per member (index id-1) while a partition is active.
    groups: Option<Vec<u8>>,
}

impl<P: Clone> Network<P> {
    /// Empty links for `n` members.
    pub fn new(n: usize) -> Network<P> {
        Network {
            n,
            links: vec![VecDeque::new(); n * n],
            last_due: vec![0; n * n],
            groups: None,
        }
    }

    fn idx(&self, from: NodeId, to: NodeId) -> usize {
        (from as usize - 1) * self.n + (to as usize - 1)
    }

    /// Are `a` and `b` on the same side of the current partition?
    pub fn connected(&self, a: NodeId, b: NodeId) -> bool {
        match &self.groups {
            None => true,
            Some(g) => g[a as usize - 1] == g[b as usize - 1],
        }
    }

    /// Queues `p` on link from->to, delivered at `due` or later (FIFO).
    pub fn push(&mut self, from: NodeId, to: NodeId, due: u64, p: P) {
        let i = self.idx(from, to);
        let due = due.max(self.last_due[i]);
        self.last_due[i] = due;
        self.links[i].push_back((due, p));
    }

    /// Drops everything in flight between `a` and `b` (both directions).
    pub fn break_link(&mut self, a: NodeId, b: NodeId) -> u64 {
        let (i, j) = (self.idx(a, b), self.idx(b, a));
        let n = (self.links[i].len() + self.links[j].len()) as u64;
        self.links[i].clear();
        self.links[j].clear();
        n
    }

    /// Drops everything in flight to and from `node`.
    pub fn isolate(&mut self, node: NodeId) -> u64 {
        let mut n = 0;
        for other in 1..=self.n as NodeId {
            if other != node {
                n += self.break_link(node, other);
            }
        }
        n
    }

    /// Starts a partition; in-flight messages across it are dropped.
    pub fn partition(&mut self, groups: Vec<u8>) -> u64 {
        self.groups = Some(groups);
        let mut n = 0;
        for a in 1..=self.n as NodeId {
            for b in a + 1..=self.n as NodeId {
                if !self.connected(a, b) {
                    n += self.break_link(a, b);
                }
            }
        }
        n
    }

    /// Heals the partition.
    pub fn heal(&mut self) {
        self.groups = None;
    }

    /// Is a partition active?
    pub fn partitioned(&self) -> bool {
        self.groups.is_some()
    }

    /// One token (link index) per packet due at `now`.
    pub fn due_tokens(&self, now: u64, out: &mut Vec<usize>) {
        for (i, l) in self.links.iter().enumerate() {
            for (due, _) in l.iter() {
                if *due > now {
                    break;
                }
                out.push(i);
            }
        }
    }

    /// Pops the head of link `i` if it is due: (from, to, packet).
    pub fn pop(&mut self, i: usize, now: u64) -> Option<(NodeId, NodeId, P)> {
        match self.links[i].front() {
            Some((due, _)) if *due <= now => {}
            _ => return None,
        }
        let (_, p) = self.links[i].pop_front()?;
        Some(((i / self.n) as NodeId + 1, (i % self.n) as NodeId + 1, p))
    }

    /// Packets in flight.
    pub fn in_flight(&self) -> usize {
        self.links.iter().map(|l| l.len()).sum()
    }
}
