//! Runs one parsed keeperctl command against the ensemble and writes its
//! output. The only place that talks to `keeper_client`.
//!
//! Data flow: `main` -> [`run`] -> `keeper_client::Client` -> `output`.

use std::io::{IsTerminal, Read, Write};
use std::time::Duration;

use futures::StreamExt;
use keeper_client::{
    ApiError, Client, ClientConfig, Consistency, Error, SessionState, TxnRequest, WatchOptions,
};
use serde_json::json;

use crate::args::{Cli, Command, SessionAction, SnapshotAction};
use crate::output;

/// Why a command failed; decides the exit status.
#[derive(Debug)]
pub enum Failure {
    /// Bad input from the user (exit 2).
    Usage(String),
    /// The client or the server said no (exit 1).
    Keeper(Error),
    /// Writing the output failed (exit 1).
    Io(std::io::Error),
    /// Anything else that failed, with the reason (exit 1).
    Other(String),
    /// Exit with this status (`keeperctl lock` passes on its command's),
    /// after printing the message, if any.
    Exit(u8, Option<String>),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Keeper(e)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Io(e)
    }
}

/// The client the global options describe.
pub fn client_for(cli: &Cli) -> Result<Client, Failure> {
    let timeout = Duration::from_millis(cli.timeout_ms);
    let mut config = ClientConfig::from_endpoint_list(&cli.endpoints).request_timeout(timeout);
    config.connect_timeout = config.connect_timeout.min(timeout);
    Client::new(config).map_err(|e| Failure::Usage(e.to_string()))
}

/// Runs `cli.command`, writing results to `out`.
pub async fn run(cli: &Cli, out: &mut dyn Write) -> Result<(), Failure> {
    let client = client_for(cli)?;
    let json = cli.json;
    match &cli.command {
        Command::Create {
            path,
            data,
            mode,
            fence,
        } => {
            let options = mode.options().map_err(Failure::Usage)?;
            let data = data.read().map_err(Failure::Usage)?;
            let created = match fence.fence().map_err(Failure::Usage)? {
                Some(fence) => client.create_fenced(path, data, options, &fence).await?,
                None => client.create(path, data, options).await?,
            };
            if json {
                out.write_all(&output::json_line(&output::to_json(&created)))?;
            } else {
                out.write_all(&output::created_text(&created))?;
            }
        }
        Command::Get { path, linearizable } => {
            let consistency = if *linearizable {
                Consistency::Linearizable
            } else {
                Consistency::Sequential
            };
            let node = client.get_with(path, consistency).await?;
            if json {
                out.write_all(&output::json_line(&output::to_json(&node)))?;
            } else {
                out.write_all(&output::node_data(&node, std::io::stdout().is_terminal()))?;
            }
        }
        Command::Set {
            path,
            data,
            version,
            fence,
        } => {
            let data = data.read().map_err(Failure::Usage)?;
            let stat = match fence.fence().map_err(Failure::Usage)? {
                Some(fence) => client.set_fenced(path, data, *version, &fence).await?,
                None => client.set(path, data, *version).await?,
            };
            if json {
                let v = json!({"path": path, "stat": output::to_json(&stat)});
                out.write_all(&output::json_line(&v))?;
            }
        }
        Command::Rm {
            path,
            version,
            fence,
        } => {
            match fence.fence().map_err(Failure::Usage)? {
                Some(fence) => client.delete_fenced(path, *version, &fence).await?,
                None => client.delete(path, *version).await?,
            }
            if json {
                out.write_all(&output::json_line(&json!({ "path": path })))?;
            }
        }
        Command::Ls { path, limit, after } => match limit {
            Some(limit) => {
                let page = client
                    .children(path, Some(*limit), after.as_deref())
                    .await?;
                if json {
                    out.write_all(&output::json_line(&output::page_json(&page)))?;
                } else {
                    out.write_all(&output::children_text(&page.children))?;
                }
            }
            None => {
                let children = client.all_children(path).await?;
                if json {
                    out.write_all(&output::json_line(&output::children_json(&children)))?;
                } else {
                    out.write_all(&output::children_text(&children))?;
                }
            }
        },
        Command::Stat { path } => {
            let stat = client.stat(path).await?;
            if json {
                out.write_all(&output::json_line(&output::to_json(&stat)))?;
            } else {
                out.write_all(&output::stat_text(&stat))?;
            }
        }
        Command::Txn { file } => {
            let text = match file.as_deref() {
                Some(p) if p.as_os_str() != "-" => std::fs::read(p)
                    .map_err(|e| Failure::Usage(format!("reading {}: {e}", p.display())))?,
                _ => {
                    let mut buf = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut buf)
                        .map_err(|e| Failure::Usage(format!("reading stdin: {e}")))?;
                    buf
                }
            };
            let request: TxnRequest = serde_json::from_slice(&text)
                .map_err(|e| Failure::Usage(format!("bad txn JSON: {e}")))?;
            let results = client.multi(request.ops).await?;
            if json {
                out.write_all(&output::json_line(&json!({
                    "results": output::to_json(&results)
                })))?;
            } else {
                out.write_all(&output::txn_text(&results))?;
            }
        }
        Command::Session { action } => session(&client, action, json, out).await?,
        Command::Cluster => {
            let info = client.cluster().await?;
            if json {
                out.write_all(&output::json_line(&output::to_json(&info)))?;
            } else {
                out.write_all(&output::cluster_text(&info))?;
            }
        }
        Command::Sync => {
            let zxid = client.sync().await?;
            if json {
                out.write_all(&output::json_line(&json!({ "zxid": zxid })))?;
            } else {
                writeln!(out, "{zxid}")?;
            }
        }
        Command::Health => {
            let health = client.healthz().await?;
            let ready = client.readyz().await?;
            if json {
                out.write_all(&output::json_line(
                    &json!({"healthz": health.status, "readyz": ready.status}),
                ))?;
            } else {
                writeln!(out, "healthz: {}\nreadyz: {}", health.status, ready.status)?;
            }
        }
        Command::Snapshot {
            action: SnapshotAction::Save { file },
        } => {
            let saved = crate::snapshot::save(client.endpoints(), cli.timeout_ms, file)
                .await
                .map_err(Failure::Other)?;
            if json {
                out.write_all(&output::json_line(&json!({
                    "file": file.display().to_string(),
                    "endpoint": saved.endpoint,
                    "zxid": saved.zxid,
                    "digest": saved.digest,
                    "bytes": saved.bytes,
                })))?;
            } else {
                writeln!(
                    out,
                    "saved {} from {}: zxid {:#x}, digest {}, {} bytes",
                    file.display(),
                    saved.endpoint,
                    saved.zxid,
                    saved.digest,
                    saved.bytes
                )?;
            }
        }
        Command::Lock {
            name,
            session_timeout_ms,
            wait_ms,
            kill_after_ms,
            cmd,
        } => {
            crate::recipes::lock(
                &client,
                name,
                Duration::from_millis(*session_timeout_ms),
                wait_ms.map(Duration::from_millis),
                Duration::from_millis(*kill_after_ms),
                cmd,
            )
            .await?;
        }
        Command::Elect {
            name,
            value,
            session_timeout_ms,
            lead_ms,
        } => {
            crate::recipes::elect(
                &client,
                name,
                value,
                Duration::from_millis(*session_timeout_ms),
                lead_ms.map(Duration::from_millis),
                json,
                out,
            )
            .await?;
        }
        Command::Watch {
            path,
            recursive,
            from_zxid,
            with_data,
            count,
            for_ms,
        } => {
            let options = WatchOptions {
                recursive: *recursive,
                from_zxid: *from_zxid,
                with_data: *with_data,
                ..WatchOptions::default()
            };
            watch(&client, path, options, *count, *for_ms, json, out).await?;
        }
    }
    out.flush()?;
    Ok(())
}

/// `keeperctl watch`: prints events until `count`, `for_ms` or a signal.
async fn watch(
    client: &Client,
    path: &str,
    options: WatchOptions,
    count: Option<u64>,
    for_ms: Option<u64>,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let stream = client.watch(path, options);
    futures::pin_mut!(stream);
    let mut printed = 0u64;
    let deadline = sleep_opt(for_ms);
    tokio::pin!(deadline);
    let stop = stop_signal();
    tokio::pin!(stop);
    while count.is_none_or(|c| printed < c) {
        let event = tokio::select! {
            event = stream.next() => event,
            _ = &mut deadline => break,
            _ = &mut stop => break,
        };
        let Some(event) = event else { break };
        let event = event?;
        if json {
            out.write_all(&output::json_line(&output::watch_event_json(&event)))?;
        } else {
            out.write_all(&output::watch_event_text(&event))?;
        }
        out.flush()?;
        printed += 1;
    }
    Ok(())
}

async fn session(
    client: &Client,
    action: &SessionAction,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let print_info = |out: &mut dyn Write, info: &keeper_client::SessionInfo| {
        if json {
            out.write_all(&output::json_line(&output::to_json(info)))
        } else {
            out.write_all(&output::session_text(info))
        }
    };
    match action {
        SessionAction::Create { timeout_ms } => {
            let info = client
                .create_session(Duration::from_millis(*timeout_ms))
                .await?;
            print_info(out, &info)?;
        }
        SessionAction::Keepalive { id } => {
            let info = client.keepalive(*id).await?;
            if json {
                print_info(out, &info)?;
            }
        }
        SessionAction::Close { id } => {
            client.close_session(*id).await?;
            if json {
                out.write_all(&output::json_line(&json!({ "id": id })))?;
            }
        }
        SessionAction::Hold {
            timeout_ms,
            hold_ms,
            until_eof,
        } => {
            let session = client.session(Duration::from_millis(*timeout_ms)).await?;
            print_info(out, &session.info())?;
            out.flush()?;
            let state = tokio::select! {
                s = session.expired() => s,
                _ = stop_signal() => SessionState::Alive,
                _ = sleep_opt(*hold_ms) => SessionState::Alive,
                _ = stdin_eof(*until_eof) => SessionState::Alive,
            };
            if state == SessionState::Expired {
                return Err(Failure::Keeper(Error::SessionExpired(ApiError {
                    message: format!("session {} expired while held", session.id()),
                    path: None,
                    index: None,
                    oldest_zxid: None,
                })));
            }
            session.close().await?;
        }
    }
    Ok(())
}

async fn sleep_opt(ms: Option<u64>) {
    match ms {
        Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
        None => std::future::pending().await,
    }
}

/// Resolves when stdin is closed (only if asked to watch it).
async fn stdin_eof(watch: bool) {
    if !watch {
        return std::future::pending().await;
    }
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = [0u8; 4096];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
    })
    .await;
}

/// Resolves on SIGINT or (on Unix) SIGTERM.
pub(crate) async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
