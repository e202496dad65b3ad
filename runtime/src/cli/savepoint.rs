use std::time::{Duration, Instant};

use clap::Args;

#[derive(Args)]
pub struct SavepointArgs {
    /// Admin API of the running job, e.g. http://127.0.0.1:9249.
    #[arg(long, env = "WEIR_ADMIN_URL")]
    admin: String,
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
    let resp = client
        .post(format!("{base}/v1/savepoints"))
        .json(&serde_json::json!({ "stop": args.stop }))
        .send()
        .await
        .map_err(|e| format!("cannot reach the admin API at {base}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!(
            "savepoint refused: {} {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        ));
    }
    let body: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
    let id = body["id"]
        .as_str()
        .ok_or("the admin API returned no savepoint id")?
        .to_string();
    let deadline = Instant::now() + *args.timeout;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = client
            .get(format!("{base}/v1/savepoints/{id}"))
            .send()
            .await;
        let status: serde_json::Value = match r {
            Ok(r) => r.json().await.map_err(|e| e.to_string())?,
            // A stop-with-savepoint ends the process; its last answer may be lost.
            Err(e) => {
                return Err(format!(
                    "lost the admin API while waiting for savepoint {id}: {e}"
                ))
            }
        };
        match status["state"].as_str() {
            Some("completed") => {
                return Ok(status["path"].as_str().unwrap_or_default().to_string())
            }
            Some("failed") => return Err(format!("savepoint {id} failed: {}", status["error"])),
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
