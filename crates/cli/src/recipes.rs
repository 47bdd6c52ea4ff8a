//! `keeperctl lock NAME -- CMD...` and `keeperctl elect NAME VALUE`.
//!
//! `lock`: takes the lock (a [`keeper_client::LockGuard`], whose session is
//! kept alive in the background), runs CMD in a process group of its own
//! with the fencing token in its environment, and waits for whichever comes
//! first: CMD exits (release, exit with CMD's status), the session is lost
//! (SIGTERM to CMD's group, SIGKILL after the grace period, exit 3), or
//! keeperctl is told to stop (SIGINT/SIGTERM are passed on to CMD, which
//! then exits as above).
//!
//! `elect`: campaigns while printing every change of leader it observes,
//! then keeps printing until stopped (resign, exit 0) or until its session
//! is lost (exit 3).

use std::io::Write;
use std::time::Duration;

use futures::StreamExt;
use keeper_client::{Client, LeaderInfo, RecipeOptions};
use serde_json::json;

use crate::commands::Failure;
use crate::output;

/// Exit status when the lock (or leadership) was lost.
pub const EXIT_LOST: u8 = 3;

/// Sends `signal` to process group `pgid` (CMD and whatever it started).
fn signal_group(pgid: u32, signal: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    // SAFETY: kill(2) with a negative pid signals a process group; it has no
    // memory-safety preconditions (std has no process-group signal).
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// The status to exit with for CMD's exit status.
fn exit_status(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(1),
        (None, None) => 1,
    }
}

/// `keeperctl lock`.
pub async fn lock(
    client: &Client,
    name: &str,
    session_timeout: Duration,
    wait: Option<Duration>,
    kill_after: Duration,
    cmd: &[String],
) -> Result<(), Failure> {
    let Some((program, args)) = cmd.split_first() else {
        return Err(Failure::Usage("a command to run is required".into()));
    };
    let mut options = RecipeOptions::default().session_timeout(session_timeout);
    if let Some(wait) = wait {
        options = options.wait(wait);
    }
    let guard = tokio::select! {
        guard = client.lock_with(name, options) => guard?,
        _ = crate::commands::stop_signal() => {
            return Err(Failure::Other(format!("interrupted while waiting for lock {name:?}")));
        }
    };
    eprintln!(
        "keeperctl: holding lock {name:?} (key {}, fencing token {})",
        guard.key(),
        guard.fencing_token()
    );
    let mut child = {
        use std::os::unix::process::CommandExt;
        let mut command = std::process::Command::new(program);
        command
            .args(args)
            .env("KEEPER_FENCING_TOKEN", guard.fencing_token().to_string())
            .env("KEEPER_LOCK_NAME", name)
            .env("KEEPER_LOCK_KEY", guard.key())
            .process_group(0);
        match tokio::process::Command::from(command).spawn() {
            Ok(child) => child,
            Err(e) => {
                let _ = guard.release().await;
                return Err(Failure::Other(format!("running {program:?}: {e}")));
            }
        }
    };
    let pgid = child.id().unwrap_or(0);
    let mut stop_signals = 0u32;
    let status = loop {
        tokio::select! {
            biased;
            loss = guard.lost() => {
                eprintln!(
                    "keeperctl: lost lock {name:?} (session {}: {:?}); stopping the command",
                    guard.session_id(),
                    loss.reason
                );
                signal_group(pgid, libc::SIGTERM);
                let status = match tokio::time::timeout(kill_after, child.wait()).await {
                    Ok(status) => status,
                    Err(_) => {
                        signal_group(pgid, libc::SIGKILL);
                        child.wait().await
                    }
                };
                if let Ok(status) = status {
                    eprintln!("keeperctl: the command ended: {status}");
                }
                return Err(Failure::Exit(
                    EXIT_LOST,
                    Some(format!("lock {name:?} was lost while the command ran")),
                ));
            }
            status = child.wait() => break status,
            _ = crate::commands::stop_signal(), if stop_signals < 2 => {
                // Pass the stop on; a second one is a SIGKILL.
                stop_signals += 1;
                let signal = if stop_signals == 1 { libc::SIGTERM } else { libc::SIGKILL };
                signal_group(pgid, signal);
            }
        }
    };
    // CMD ended, but not necessarily while the lock was held (keeperctl may
    // have been paused past its session timeout): let a keepalive task that
    // is due run first (a timer turn), then say so.
    tokio::time::sleep(Duration::from_millis(10)).await;
    if guard.is_lost() {
        if let Ok(status) = status {
            eprintln!("keeperctl: the command ended: {status}");
        }
        return Err(Failure::Exit(
            EXIT_LOST,
            Some(format!("lock {name:?} was lost while the command ran")),
        ));
    }
    let released = guard.release().await;
    let status = status.map_err(|e| Failure::Other(format!("waiting for {program:?}: {e}")))?;
    if let Err(e) = released {
        eprintln!("keeperctl: releasing lock {name:?}: {e} (the session expires)");
    }
    match exit_status(status) {
        0 => Ok(()),
        code => Err(Failure::Exit(code, None)),
    }
}

fn leader_line(json: bool, leader: &Option<LeaderInfo>) -> Vec<u8> {
    if json {
        let leader = leader
            .as_ref()
            .map(|l| json!({"key": l.key, "value": l.value, "term": l.term, "session": l.session}));
        return output::json_line(&json!({"event": "leader", "leader": leader}));
    }
    match leader {
        Some(l) => format!("leader {} term={} value={}\n", l.key, l.term, l.value).into_bytes(),
        None => b"leader none\n".to_vec(),
    }
}

/// `keeperctl elect`.
pub async fn elect(
    client: &Client,
    name: &str,
    value: &str,
    session_timeout: Duration,
    lead_for: Option<Duration>,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let election = client
        .election(name)
        .with_options(RecipeOptions::default().session_timeout(session_timeout));
    let mut changes = election.observe();
    let campaign = election.campaign(value);
    tokio::pin!(campaign);
    // Print leadership changes while campaigning.
    let leadership = loop {
        tokio::select! {
            won = &mut campaign => break won?,
            change = changes.next() => match change {
                Some(Ok(leader)) => {
                    out.write_all(&leader_line(json, &leader))?;
                    out.flush()?;
                }
                Some(Err(e)) => return Err(e.into()),
                None => return Err(Failure::Other("the leader stream ended".into())),
            },
            _ = crate::commands::stop_signal() => return Ok(()),
        }
    };
    let elected = if json {
        output::json_line(&json!({
            "event": "elected",
            "key": leadership.key(),
            "term": leadership.term(),
        }))
    } else {
        format!("elected {} term={}\n", leadership.key(), leadership.term()).into_bytes()
    };
    out.write_all(&elected)?;
    out.flush()?;
    let lead_until = async {
        match lead_for {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(lead_until);
    loop {
        tokio::select! {
            loss = leadership.lost() => {
                return Err(Failure::Exit(
                    EXIT_LOST,
                    Some(format!("leadership of {name:?} was lost ({:?})", loss.reason)),
                ));
            }
            change = changes.next() => match change {
                Some(Ok(leader)) => {
                    out.write_all(&leader_line(json, &leader))?;
                    out.flush()?;
                }
                Some(Err(e)) => return Err(e.into()),
                None => return Err(Failure::Other("the leader stream ended".into())),
            },
            _ = crate::commands::stop_signal() => break,
            _ = &mut lead_until => break,
        }
    }
    leadership.resign().await?;
    Ok(())
}
