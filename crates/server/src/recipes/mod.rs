//! Coordination recipes built on the tree: [`lock`] (a fair mutex whose
//! grants carry fencing tokens the store enforces), [`semaphore`] (N
//! permits) and [`election`] (leader election whose terms fence writes like
//! lock tokens), all made of [`contenders`]. The recipes only propose
//! ordinary txns and read the applied tree; the fence check itself is in
//! the state machine (`keeper_store`, `Txn::Fenced` / `Txn::FencedBy`).

pub mod contenders;
pub mod election;
pub mod lock;
pub mod semaphore;
