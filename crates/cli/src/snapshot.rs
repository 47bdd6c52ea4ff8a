//! `keeperctl snapshot save FILE`: streams `GET /v1/admin/snapshot` from the first
//! member that answers into `FILE.partial`, checks the trailer (length and CRC-32 of
//! everything before it, see the server's `backup` module), and only then renames it
//! to `FILE`. A failed or damaged download leaves no `FILE`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;

/// Bytes of the trailer: magic, CRC-32, total length.
const TRAILER_BYTES: usize = 8 + 4 + 8;
const TRAILER_MAGIC: &[u8; 8] = b"KEEPEND!";

/// A saved backup.
pub struct Saved {
    pub endpoint: String,
    pub zxid: u64,
    pub digest: u64,
    pub bytes: u64,
}

/// Saves a backup from the first of `endpoints` that serves one.
pub async fn save(endpoints: &[String], timeout_ms: u64, file: &Path) -> Result<Saved, String> {
    if file.exists() {
        return Err(format!("{} exists; not overwriting it", file.display()));
    }
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(timeout_ms))
        .build()
        .map_err(|e| e.to_string())?;
    let mut errors = Vec::new();
    for endpoint in endpoints {
        match save_from(&http, endpoint, timeout_ms, file).await {
            Ok(saved) => return Ok(saved),
            Err(e) => errors.push(format!("{endpoint}: {e}")),
        }
    }
    Err(format!("no backup saved: {}", errors.join("; ")))
}

fn header_u64(response: &reqwest::Response, name: &str) -> Result<u64, String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("the answer lacks {name}"))
}

async fn save_from(
    http: &reqwest::Client,
    endpoint: &str,
    timeout_ms: u64,
    file: &Path,
) -> Result<Saved, String> {
    let url = format!("{}/v1/admin/snapshot", endpoint.trim_end_matches('/'));
    let response = tokio::time::timeout(Duration::from_millis(timeout_ms), http.get(&url).send())
        .await
        .map_err(|_| "timed out waiting for the backup to start".to_string())?
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        return Err(format!("{status}: {body}"));
    }
    let zxid = header_u64(&response, "x-keeper-backup-zxid")?;
    let digest = header_u64(&response, "x-keeper-backup-digest")?;
    let partial = PathBuf::from(format!("{}.partial", file.display()));
    let result = async {
        let mut out =
            std::fs::File::create(&partial).map_err(|e| format!("{}: {e}", partial.display()))?;
        let mut crc = crc32fast::Hasher::new();
        // The last TRAILER_BYTES seen so far are held back from the checksum.
        let mut tail: Vec<u8> = Vec::with_capacity(2 * TRAILER_BYTES);
        let mut total = 0u64;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| format!("download broke off: {e}"))?;
            out.write_all(&chunk).map_err(|e| e.to_string())?;
            total += chunk.len() as u64;
            tail.extend_from_slice(&chunk);
            if tail.len() > TRAILER_BYTES {
                let cut = tail.len() - TRAILER_BYTES;
                crc.update(&tail[..cut]);
                tail.drain(..cut);
            }
        }
        out.sync_all().map_err(|e| e.to_string())?;
        if tail.len() < TRAILER_BYTES || &tail[..8] != TRAILER_MAGIC {
            return Err("the download is truncated (no trailer)".to_string());
        }
        let want_crc = u32::from_be_bytes([tail[8], tail[9], tail[10], tail[11]]);
        let mut len = [0u8; 8];
        len.copy_from_slice(&tail[12..20]);
        if u64::from_be_bytes(len) != total {
            return Err(format!(
                "the download is truncated: {total} bytes, the trailer says {}",
                u64::from_be_bytes(len)
            ));
        }
        if crc.finalize() != want_crc {
            return Err("the download is damaged (CRC-32 mismatch)".to_string());
        }
        std::fs::rename(&partial, file).map_err(|e| format!("{}: {e}", file.display()))?;
        Ok(total)
    }
    .await;
    match result {
        Ok(bytes) => Ok(Saved {
            endpoint: endpoint.to_string(),
            zxid,
            digest,
            bytes,
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}
