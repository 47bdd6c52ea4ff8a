//! `GET /v1/admin/snapshot`: a consistent backup of this member, streamed.
//!
//! The store cuts a checkpoint at an exact applied zxid and stamps it with the
//! tree digest of that state; [`crate::backup::write_backup`] packs it into one
//! file under `<data_dir>/backups`, which is unlinked as soon as it is open for
//! streaming (nothing stays on disk, also when the client goes away). At most
//! `max_concurrent_backups` run at once; more are answered `503 Unavailable`.

use super::AppState;
use crate::backup::{self, BackupError};
use crate::error::{ApiError, ErrorCode};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use std::sync::atomic::{AtomicU64, Ordering};

/// Response header: the zxid the backup was cut at.
pub const BACKUP_ZXID_HEADER: &str = "x-keeper-backup-zxid";
/// Response header: the tree digest of the backup (as `/v1/cluster/digest` reports it).
pub const BACKUP_DIGEST_HEADER: &str = "x-keeper-backup-digest";

/// Cuts the checkpoint and packs it into the file at `path`; returns it open for reading.
fn cut_backup(
    store: &keeper_store::Store,
    checkpoint: &std::path::Path,
    path: &std::path::Path,
) -> Result<(std::fs::File, backup::BackupInfo), BackupError> {
    let (zxid, digest) = store.checkpoint_with_digest(checkpoint)?;
    let info = backup::write_backup(checkpoint, zxid.0, digest, std::fs::File::create(path)?)?;
    Ok((std::fs::File::open(path)?, info))
}

/// `GET /v1/admin/snapshot` -> `200 application/octet-stream` (the backup file).
pub async fn snapshot(State(state): State<AppState>) -> Result<Response, ApiError> {
    let Ok(permit) = state.backup_slots.clone().try_acquire_owned() else {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "a backup is already running on this member; try again later",
        ));
    };
    let store = state.store.clone();
    let dir = state.config.data_dir.join("backups");
    let (file, info) = tokio::task::spawn_blocking(move || {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        std::fs::create_dir_all(&dir).map_err(BackupError::Io)?;
        let n = format!(
            "{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let checkpoint = dir.join(format!("checkpoint-{n}"));
        let path = dir.join(format!("backup-{n}.ksnap"));
        let written = cut_backup(&store, &checkpoint, &path);
        let _ = std::fs::remove_dir_all(&checkpoint);
        let _ = std::fs::remove_file(&path);
        written
    })
    .await
    .map_err(|e| ApiError::new(ErrorCode::Internal, format!("backup task failed: {e}")))??;
    tracing::info!(
        zxid = info.zxid,
        digest = info.digest,
        bytes = info.bytes,
        "streaming a backup"
    );
    let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
    let stream = futures::StreamExt::map(stream, move |chunk| {
        let _held = &permit;
        chunk
    });
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(info.bytes));
    headers.insert(BACKUP_ZXID_HEADER, HeaderValue::from(info.zxid));
    headers.insert(BACKUP_DIGEST_HEADER, HeaderValue::from(info.digest));
    Ok(response)
}
