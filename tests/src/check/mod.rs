//! Checkers: each reads a finished [`History`] and returns a [`Verdict`].
//!
//! One file per property (as openraft keeps its invariant checkers):
//! - [`linearizable`]: writes, CAS, create-if-absent, deletes, multis and
//!   `?consistency=linearizable` reads against a register model, per key group
//!   (WGL search with memoization, as Porcupine does);
//! - [`reads`]: default reads of a client carrying its zxid never go back in time
//!   and show the state of the zxid they claim;
//! - [`durability`]: every acknowledged write (or what replaced it) is there after
//!   the run healed;
//! - [`sequential`]: sequential names are unique and increase;
//! - [`sessions`]: an ephemeral disappears only after its session ended, no member
//!   acknowledges a keepalive for an expired session, abandoned sessions expire;
//! - [`watches`]: every watcher's resumed streams deliver every change of their
//!   prefix once, in zxid order, with no gap (against a reference replay and the
//!   acknowledged writes); `410 Compacted` restarts are counted;
//! - [`locks`]: fenced writes never interleave, tokens rise in grant order, and
//!   no two clients believe they hold a lock while one's session is lost.
//!
//! Every checker is tested on hand-made histories that it must reject.

pub mod durability;
pub mod linearizable;
pub mod locks;
pub mod reads;
pub mod sequential;
pub mod sessions;
pub mod watches;

use crate::history::History;
use serde::Serialize;

/// A checker's judgement of one history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The checker's name.
    pub checker: String,
    /// `valid`, `invalid` or `unknown` (the search ran out of budget).
    pub result: VerdictKind,
    /// What was checked (counts).
    pub checked: String,
    /// Every violation found (capped), each self-explanatory.
    pub violations: Vec<String>,
}

/// Outcome of a checker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    Valid,
    Invalid,
    Unknown,
}

/// Most violations kept per checker (the first ones tell the story).
pub const MAX_VIOLATIONS: usize = 20;

impl Verdict {
    /// A verdict from a list of violations.
    pub fn from_violations(checker: &str, checked: String, mut violations: Vec<String>) -> Verdict {
        let result = if violations.is_empty() {
            VerdictKind::Valid
        } else {
            VerdictKind::Invalid
        };
        violations.truncate(MAX_VIOLATIONS);
        Verdict {
            checker: checker.to_string(),
            result,
            checked,
            violations,
        }
    }

    /// True for `invalid`.
    pub fn is_violation(&self) -> bool {
        self.result == VerdictKind::Invalid
    }
}

/// Runs every checker on `history`.
pub fn check_all(history: &History, options: &CheckOptions) -> Vec<Verdict> {
    vec![
        linearizable::check(history, options.search_budget),
        reads::check(history),
        durability::check(history),
        sequential::check(history),
        sessions::check(history),
        watches::check(history),
        locks::check(history),
    ]
}

/// Knobs of the checkers.
#[derive(Debug, Clone, Copy)]
pub struct CheckOptions {
    /// Most search steps per key group of the linearizability check before it
    /// answers `unknown`.
    pub search_budget: u64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            search_budget: 200_000_000,
        }
    }
}

/// Hand-made histories for the checkers' self-tests.
#[cfg(test)]
pub(crate) mod build {
    use crate::history::{Call, Op, Outcome, Seen, TxnOp};

    /// A history under construction: ops with explicit times.
    #[derive(Default)]
    pub struct Builder {
        pub ops: Vec<Op>,
    }

    pub fn seen(value: &str, version: i64, mzxid: u64) -> Seen {
        Seen {
            value: value.into(),
            version,
            czxid: mzxid,
            mzxid,
            ephemeral_owner: 0,
        }
    }

    pub fn ok(node: Option<Seen>) -> Outcome {
        Outcome::Ok {
            node,
            results: vec![],
            created: None,
            session: None,
            grant: None,
        }
    }

    pub fn fail(status: u16, code: &str) -> Outcome {
        Outcome::Fail {
            status,
            code: code.into(),
            index: None,
        }
    }

    pub fn info() -> Outcome {
        Outcome::Info {
            reason: "timeout".into(),
        }
    }

    impl Builder {
        /// Adds an op; returns its id.
        #[allow(clippy::too_many_arguments)]
        pub fn op(
            &mut self,
            client: u64,
            call: Call,
            invoke_us: u64,
            complete_us: u64,
            outcome: Outcome,
            zxid: Option<u64>,
        ) -> u64 {
            let id = self.ops.len() as u64;
            self.ops.push(Op {
                id,
                client,
                member: 1,
                call,
                min_zxid: None,
                invoke_us,
                complete_us,
                outcome,
                zxid,
                final_read: false,
            });
            id
        }

        pub fn set(&mut self, c: u64, key: &str, v: &str, t: (u64, u64), out: Outcome) -> u64 {
            self.op(
                c,
                Call::Set {
                    key: key.into(),
                    value: v.into(),
                    version: -1,
                    fence: None,
                },
                t.0,
                t.1,
                out,
                None,
            )
        }

        pub fn cas(
            &mut self,
            c: u64,
            key: &str,
            v: &str,
            version: i64,
            t: (u64, u64),
            out: Outcome,
        ) -> u64 {
            self.op(
                c,
                Call::Set {
                    key: key.into(),
                    value: v.into(),
                    version,
                    fence: None,
                },
                t.0,
                t.1,
                out,
                None,
            )
        }

        pub fn create(&mut self, c: u64, key: &str, v: &str, t: (u64, u64), out: Outcome) -> u64 {
            self.op(
                c,
                Call::Create {
                    key: key.into(),
                    value: v.into(),
                },
                t.0,
                t.1,
                out,
                None,
            )
        }

        pub fn delete(&mut self, c: u64, key: &str, t: (u64, u64), out: Outcome) -> u64 {
            self.op(
                c,
                Call::Delete {
                    key: key.into(),
                    version: -1,
                },
                t.0,
                t.1,
                out,
                None,
            )
        }

        pub fn lget(&mut self, c: u64, key: &str, t: (u64, u64), out: Outcome) -> u64 {
            self.op(
                c,
                Call::Get {
                    key: key.into(),
                    linearizable: true,
                },
                t.0,
                t.1,
                out,
                None,
            )
        }

        pub fn txn(&mut self, c: u64, ops: Vec<TxnOp>, t: (u64, u64), out: Outcome) -> u64 {
            self.op(c, Call::Txn { ops }, t.0, t.1, out, None)
        }

        pub fn history(self) -> crate::history::History {
            crate::history::History {
                ops: self.ops,
                faults: vec![],
                watches: vec![],
            }
        }
    }
}
