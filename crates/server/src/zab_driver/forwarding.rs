//! A follower's writes on their way to the leader: plain state (no tokio,
//! no I/O), shared by the tokio driver (`mod.rs`) and the whole-member
//! simulator (`crate::sim`).
//!
//! ```text
//! write ─▶ push (bounded: count of waiting writes, bytes of one batch)
//!       ─▶ take_batch ─▶ the driver sends Forward{reqs} to the leader
//! leader ─▶ Forwarded{results} ─▶ answered: each write either waits for
//!           its zxid (Wait) or fails (Fail); a zxid this member already
//!           handed to its applier came too late to wait for
//! ```
//!
//! Every write pushed is answered exactly once: by `answered`, or by
//! `fail_unsent`/`fail_all`/`send_failed` (a broken link, a leadership
//! change, no leader), which hand back the replies for the driver to fail.

use super::batching::{txn_wire_bytes, BatchQueue};
use super::wire::RequestId;
use keeper_store::Txn;
use keeper_zab::Zxid;
use std::collections::HashMap;

/// Why a write was not taken for forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_pending_forwards` writes already wait for the leader.
    TooMany,
    /// The write alone is larger than a whole batch (`bytes` counted).
    TooLarge { bytes: usize },
}

/// What became of a forwarded write when the leader answered.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome<R> {
    /// Proposed at `zxid`: answer once it is applied here.
    Wait { zxid: Zxid, reply: R },
    /// Not proposed, or its fate is unknown here.
    Fail { reply: R, why: String },
}

/// The follower's forwarded writes. `R` is how a write is answered.
#[derive(Debug)]
pub struct Forwards<R> {
    waiting: HashMap<RequestId, R>,
    out: BatchQueue<(RequestId, Txn)>,
    next: RequestId,
    max_pending: usize,
}

impl<R> Forwards<R> {
    /// Batches of at most `max_entries` writes and `max_bytes` bytes; at
    /// most `max_pending` writes waiting at once.
    pub fn new(max_entries: usize, max_bytes: usize, max_pending: usize) -> Forwards<R> {
        Forwards {
            waiting: HashMap::new(),
            out: BatchQueue::new(max_entries, max_bytes),
            next: 1,
            max_pending,
        }
    }

    /// Takes a write to forward; hands it back if it cannot be taken.
    pub fn push(&mut self, txn: Txn, reply: R) -> Result<(), (R, Refusal)> {
        if self.waiting.len() >= self.max_pending {
            return Err((reply, Refusal::TooMany));
        }
        let bytes = txn_wire_bytes(&txn);
        let req = self.next;
        if self.out.push((req, txn), bytes).is_err() {
            return Err((reply, Refusal::TooLarge { bytes }));
        }
        self.next += 1;
        self.waiting.insert(req, reply);
        Ok(())
    }

    /// True when nothing waits to be sent.
    pub fn nothing_to_send(&self) -> bool {
        self.out.is_empty()
    }

    /// The next batch to send to the leader (bounded like a proposal
    /// batch, so it fits a peer frame); empty when nothing waits.
    pub fn take_batch(&mut self) -> Vec<(RequestId, Txn)> {
        self.out.take_batch()
    }

    /// Sending these requests failed: their replies, to fail.
    pub fn send_failed(&mut self, ids: &[RequestId]) -> Vec<R> {
        ids.iter()
            .filter_map(|id| self.waiting.remove(id))
            .collect()
    }

    /// No leader to send to: the replies of every write not yet sent.
    pub fn fail_unsent(&mut self) -> Vec<R> {
        let unsent = self.out.take_all();
        unsent
            .into_iter()
            .filter_map(|(id, _)| self.waiting.remove(&id))
            .collect()
    }

    /// The link to the leader broke or the leadership changed: the replies
    /// of every write waiting, sent or not (in the order they came).
    pub fn fail_all(&mut self) -> Vec<R> {
        self.out.take_all();
        let mut all: Vec<(RequestId, R)> = self.waiting.drain().collect();
        all.sort_unstable_by_key(|(id, _)| *id);
        all.into_iter().map(|(_, r)| r).collect()
    }

    /// The leader answered: a zxid per proposed write, or why not.
    /// `submitted` is the highest zxid this member handed to its applier;
    /// a write proposed at or below it was applied before its answer came,
    /// so its waiter would never be found: its fate is unknown here.
    pub fn answered(
        &mut self,
        results: Vec<(RequestId, Result<Zxid, String>)>,
        submitted: Zxid,
    ) -> Vec<Outcome<R>> {
        let mut out = Vec::with_capacity(results.len());
        for (req, result) in results {
            let Some(reply) = self.waiting.remove(&req) else {
                continue;
            };
            out.push(match result {
                Ok(zxid) if zxid > submitted => Outcome::Wait { zxid, reply },
                Ok(zxid) => Outcome::Fail {
                    reply,
                    why: format!(
                        "write got zxid {zxid} but its answer arrived late; outcome unknown"
                    ),
                },
                Err(why) => Outcome::Fail { reply, why },
            });
        }
        out
    }

    /// True when no write waits.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use keeper_store::Op;

    fn set(n: usize) -> Txn {
        Txn::Op(Op::Set {
            path: "/a".into(),
            data: Bytes::from(vec![0u8; n]),
            version: -1,
        })
    }

    #[test]
    fn every_write_is_answered_once_whatever_the_leader_says() {
        let mut f = Forwards::new(2, 1 << 20, 10);
        for r in 0..3 {
            f.push(set(1), r).unwrap();
        }
        let b1 = f.take_batch();
        assert_eq!(b1.len(), 2, "batches hold at most max_entries");
        let b2 = f.take_batch();
        assert_eq!(b2.len(), 1);
        assert!(f.nothing_to_send());
        let out = f.answered(
            vec![
                (b1[0].0, Ok(Zxid(5))),
                (b1[1].0, Err("not the leader".into())),
                (b2[0].0, Ok(Zxid(3))),
                (b2[0].0, Ok(Zxid(9))),
                (99, Ok(Zxid(9))),
            ],
            Zxid(3),
        );
        assert_eq!(
            out.len(),
            3,
            "unknown and repeated answers are ignored: {out:?}"
        );
        assert_eq!(
            out[0],
            Outcome::Wait {
                zxid: Zxid(5),
                reply: 0
            }
        );
        assert!(matches!(out[1], Outcome::Fail { reply: 1, .. }));
        assert!(
            matches!(out[2], Outcome::Fail { reply: 2, .. }),
            "a zxid already handed to the applier came too late"
        );
        assert!(f.is_empty());
    }

    #[test]
    fn bounds_refuse_at_push_and_failures_hand_back_replies() {
        let mut f = Forwards::new(10, 64, 2);
        assert_eq!(
            f.push(set(200), 7).unwrap_err(),
            (
                7,
                Refusal::TooLarge {
                    bytes: txn_wire_bytes(&set(200))
                }
            )
        );
        f.push(set(1), 1).unwrap();
        f.push(set(1), 2).unwrap();
        assert_eq!(f.push(set(1), 3).unwrap_err(), (3, Refusal::TooMany));
        let sent = f.take_batch();
        assert_eq!(sent.len(), 1, "bytes bound the batch");
        assert_eq!(f.fail_unsent(), vec![2]);
        assert_eq!(f.send_failed(&[sent[0].0]), vec![1]);
        assert!(f.is_empty());
        f.push(set(1), 4).unwrap();
        f.push(set(1), 5).unwrap();
        let _ = f.take_batch();
        assert_eq!(f.fail_all(), vec![4, 5]);
        assert!(f.is_empty() && f.nothing_to_send());
    }
}
