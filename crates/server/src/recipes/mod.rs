//! Coordination recipes built on the tree: [`lock`] (a fair mutex whose
//! grants carry fencing tokens the store enforces). The recipes only
//! propose ordinary txns and read the applied tree; the fence check itself
//! is in the state machine (`keeper_store`, `Txn::Fenced`).

pub mod lock;
