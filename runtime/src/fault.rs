//! Crash points for exactly-once tests: `WEIR_FAULT=after_precommit:3` makes the process kill
//! itself with SIGKILL the third time it reaches `after_precommit`. Unset, a point costs one
//! relaxed atomic load. (The `fail` crate offers panics and pauses but not a self-SIGKILL, which
//! is what a crash between two 2PC steps has to look like.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The 2PC steps a test can crash at.
pub const POINTS: &[&str] = &[
    "before_precommit",
    "after_precommit",
    "before_manifest",
    "after_manifest",
    "after_commit",
    "mid_write",
    // A source acknowledged its input after a completed checkpoint (Pub/Sub): the
    // acknowledgements may not have left the process.
    "after_source_ack",
];

struct Plan {
    target: HashMap<String, u32>,
    hits: HashMap<String, AtomicU32>,
}

fn plan() -> Option<&'static Plan> {
    static PLAN: OnceLock<Option<Plan>> = OnceLock::new();
    PLAN.get_or_init(|| {
        let spec = std::env::var("WEIR_FAULT").ok()?;
        let mut target = HashMap::new();
        for item in spec.split(',').filter(|s| !s.is_empty()) {
            let (name, n) = item.split_once(':').unwrap_or((item, "1"));
            target.insert(name.trim().to_string(), n.trim().parse().unwrap_or(1));
        }
        let hits = target
            .keys()
            .map(|k| (k.clone(), AtomicU32::new(0)))
            .collect();
        Some(Plan { target, hits })
    })
    .as_ref()
}

/// Marks a crash point.
pub fn point(name: &str) {
    let Some(plan) = plan() else { return };
    let (Some(target), Some(hits)) = (plan.target.get(name), plan.hits.get(name)) else {
        return;
    };
    if hits.fetch_add(1, Ordering::SeqCst) + 1 == *target {
        eprintln!("weir: fault injection: SIGKILL at {name} (hit {target})");
        // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// Marks a stall point: with `WEIR_STALL=<name>` set, a task reaching it waits forever (a sink
/// whose pre-commit hangs, say), while the rest of the process, the admin API included, goes on.
/// Unset, it returns at once.
pub async fn stall(name: &str) {
    static STALL: OnceLock<Option<String>> = OnceLock::new();
    let target = STALL.get_or_init(|| std::env::var("WEIR_STALL").ok());
    if target.as_deref() == Some(name) {
        eprintln!("weir: fault injection: stalling at {name}");
        std::future::pending::<()>().await;
    }
}
