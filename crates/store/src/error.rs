//! The store's one error type at its crate boundary: fatal storage errors
//! (disk, corruption). Deterministic transaction errors are `TxnError`, part
//! of an entry's outcome, never a `StoreError`.

/// Fatal storage errors (disk, corruption). Never part of a txn's result.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(String),
    #[error("corrupt record in {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl From<rocksdb::Error> for StoreError {
    fn from(e: rocksdb::Error) -> StoreError {
        StoreError::Rocks(e.into_string())
    }
}
