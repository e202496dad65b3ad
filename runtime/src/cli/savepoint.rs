use std::time::{Duration, Instant};

use clap::Args;
use weir_crds::contract::{
    SavepointAccepted, SavepointPhase, SavepointRequest, SavepointStatus, SAVEPOINTS_PATH,
};

#[derive(Args)]
pub struct SavepointArgs {
    /// Admin API of the running job, e.g. http://127.0.0.1:9249.
    #[arg(long, env = "WEIR_ADMIN_URL")]
    admin: String,
    /// The job's admin token (printed by `weir run` at start, or the WEIR_ADMIN_TOKEN it was
    /// given). Prefer the environment variable: a command line is visible to other users.
    #[arg(long, env = "WEIR_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Stop the job once the savepoint is complete.
    #[arg(long)]
    stop: bool,
    /// Give up waiting after this long.
    #[arg(long, default_value = "10m")]
    timeout: humantime::Duration,
}

pub async fn run(args: SavepointArgs) -> u8 {
    match take(&args).await {
        Ok(path) => {
            println!("{path}");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

async fn take(args: &SavepointArgs) -> Result<String, String> {
    let base = args.admin.trim_end_matches('/');
    let client = reqwest::Client::new();
    let mut req = client
        .post(format!("{base}{SAVEPOINTS_PATH}"))
        .json(&SavepointRequest {
            stop: args.stop,
            id: None,
        });
    if let Some(t) = args.token.as_deref().filter(|t| !t.is_empty()) {
        req = req.bearer_auth(t.trim());
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("cannot reach the admin API at {base}: {e}"))?;
    if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
        let given = if args.token.is_some() {
            "the token given (--token / WEIR_ADMIN_TOKEN) is not the job's"
        } else {
            "give the job's admin token with --token or WEIR_ADMIN_TOKEN"
        };
        return Err(format!("savepoint refused: 401 Unauthorized: {given}"));
    }
    if !resp.status().is_success() {
        return Err(format!(
            "savepoint refused: {} {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        ));
    }
    let SavepointAccepted { id } = resp
        .json()
        .await
        .map_err(|e| format!("the admin API returned no savepoint id: {e}"))?;
    let deadline = Instant::now() + *args.timeout;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = client
            .get(format!("{base}{SAVEPOINTS_PATH}/{id}"))
            .send()
            .await;
        let status: SavepointStatus = match r {
            Ok(r) => r.json().await.map_err(|e| e.to_string())?,
            // A stop-with-savepoint ends the process; its last answer may be lost.
            Err(e) => {
                return Err(format!(
                    "lost the admin API while waiting for savepoint {id}: {e}"
                ))
            }
        };
        match status.state {
            SavepointPhase::Completed => return Ok(status.path.unwrap_or_default()),
            SavepointPhase::Failed => {
                return Err(format!(
                    "savepoint {id} failed: {}",
                    status.error.unwrap_or_default()
                ))
            }
            _ if Instant::now() > deadline => {
                return Err(format!(
                    "savepoint {id} not complete after {}",
                    args.timeout
                ))
            }
            _ => {}
        }
    }
}
