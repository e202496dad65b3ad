//! Injected faults for tests, from `WEIR_FAULT` (comma-separated):
//! - `after_precommit:3`: the process kills itself with SIGKILL the third time it reaches the
//!   crash point `after_precommit` (what a crash between two 2PC steps has to look like);
//! - `fail:checkpoint_write:2-3`: the 2nd and 3rd checkpoint writes fail (a storage outage);
//! - `stall:pre_commit:3:4s`: the 3rd pre-commit takes 4 s longer (a hanging sink);
//!
//! and from `WEIR_STALL=<name>`: a task reaching stall point `name` waits forever (used by the
//! operator tests, e.g. `savepoint_precommit`).
//!
//! Unset, a point costs one relaxed atomic load. (The `fail` crate offers panics and pauses but
//! not a self-SIGKILL.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

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

/// What happens at a point's hits.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Action {
    Kill { hit: u32 },
    Fail { first: u32, last: u32 },
    Stall { hit: u32, pause: Duration },
}

struct Plan {
    actions: HashMap<(String, &'static str), Action>,
    hits: HashMap<(String, &'static str), AtomicU32>,
}

/// One item of `WEIR_FAULT`.
fn parse_item(item: &str) -> Option<(String, &'static str, Action)> {
    let parts: Vec<&str> = item.split(':').map(str::trim).collect();
    let n = |s: &str| s.parse::<u32>().ok();
    match parts.as_slice() {
        ["fail", name, range] => {
            let (first, last) = match range.split_once('-') {
                Some((a, b)) => (n(a)?, n(b)?),
                None => (n(range)?, n(range)?),
            };
            Some((name.to_string(), "fail", Action::Fail { first, last }))
        }
        ["stall", name, hit, pause] => {
            let pause = humantime::parse_duration(pause).ok()?;
            Some((
                name.to_string(),
                "stall",
                Action::Stall {
                    hit: n(hit)?,
                    pause,
                },
            ))
        }
        [name] => Some((name.to_string(), "kill", Action::Kill { hit: 1 })),
        [name, hit] => Some((
            name.to_string(),
            "kill",
            Action::Kill {
                hit: n(hit).unwrap_or(1),
            },
        )),
        _ => None,
    }
}

fn plan() -> Option<&'static Plan> {
    static PLAN: OnceLock<Option<Plan>> = OnceLock::new();
    PLAN.get_or_init(|| {
        let spec = std::env::var("WEIR_FAULT").ok()?;
        let mut actions = HashMap::new();
        for item in spec.split(',').filter(|s| !s.trim().is_empty()) {
            match parse_item(item) {
                Some((name, kind, action)) => {
                    actions.insert((name, kind), action);
                }
                None => eprintln!("weir: WEIR_FAULT: cannot read {item:?}"),
            }
        }
        let hits = actions
            .keys()
            .map(|k| (k.clone(), AtomicU32::new(0)))
            .collect();
        Some(Plan { actions, hits })
    })
    .as_ref()
}

/// Counts a hit of `name` for `kind`; returns the action and this hit's number.
fn hit(name: &str, kind: &'static str) -> Option<(Action, u32)> {
    let plan = plan()?;
    let key = (name.to_string(), kind);
    let action = *plan.actions.get(&key)?;
    let n = plan.hits.get(&key)?.fetch_add(1, Ordering::SeqCst) + 1;
    Some((action, n))
}

/// Marks a crash point.
pub fn point(name: &str) {
    if let Some((Action::Kill { hit: target }, n)) = hit(name, "kill") {
        if n == target {
            eprintln!("weir: fault injection: SIGKILL at {name} (hit {target})");
            // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }
}

/// Whether this hit of `name` must fail (`fail:name:first-last`).
pub fn fails(name: &str) -> bool {
    match hit(name, "fail") {
        Some((Action::Fail { first, last }, n)) if (first..=last).contains(&n) => {
            eprintln!("weir: fault injection: {name} fails (hit {n})");
            true
        }
        _ => false,
    }
}

/// Marks a stall point. With `WEIR_STALL=<name>` set, a task reaching it waits forever (a sink
/// whose pre-commit hangs, say), while the rest of the process, the admin API included, goes on.
/// With `WEIR_FAULT=stall:<name>:<hit>:<pause>`, that hit waits `pause`. Unset, it returns at
/// once.
pub async fn stall(name: &str) {
    static STALL: OnceLock<Option<String>> = OnceLock::new();
    let target = STALL.get_or_init(|| std::env::var("WEIR_STALL").ok());
    if target.as_deref() == Some(name) {
        eprintln!("weir: fault injection: stalling at {name}");
        std::future::pending::<()>().await;
    }
    if let Some((Action::Stall { hit: target, pause }, n)) = hit(name, "stall") {
        if n == target {
            eprintln!(
                "weir: fault injection: {name} stalls for {} (hit {n})",
                humantime::format_duration(pause)
            );
            tokio::time::sleep(pause).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_read_as_kill_fail_or_stall() {
        assert_eq!(
            parse_item("after_precommit:3"),
            Some(("after_precommit".into(), "kill", Action::Kill { hit: 3 }))
        );
        assert_eq!(
            parse_item("fail:checkpoint_write:2-4"),
            Some((
                "checkpoint_write".into(),
                "fail",
                Action::Fail { first: 2, last: 4 }
            ))
        );
        assert_eq!(
            parse_item("fail:checkpoint_write:5").map(|p| p.2),
            Some(Action::Fail { first: 5, last: 5 })
        );
        assert_eq!(
            parse_item("stall:pre_commit:3:4s").map(|p| p.2),
            Some(Action::Stall {
                hit: 3,
                pause: Duration::from_secs(4)
            })
        );
        assert_eq!(parse_item("fail:x:a-b"), None);
        assert_eq!(parse_item("stall:x:1:soon"), None);
    }
}
