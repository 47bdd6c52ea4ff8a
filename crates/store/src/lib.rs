//! `keeper-store`: the znode tree, the transaction log and sessions on RocksDB.
