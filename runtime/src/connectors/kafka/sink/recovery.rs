//! Finishing what a crashed worker left: re-commit the transactions of the restored checkpoint
//! from their stored producer id and epoch, then fence the transactional ids it may have used
//! afterwards so their open transactions are aborted.
//!
//! Re-commit sends EndTxn(commit). When the coordinator refuses it (fenced epoch, invalid
//! state), DescribeTransactions tells why: committed already (a commit that returned before the
//! crash, or an earlier recovery), the id re-initialized since (only ever after the commit, see
//! `pool.rs` and the order of `recover`), or aborted by the broker because the job stayed down
//! longer than the transaction timeout, which is reported loudly: those records are gone.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::protocol::{codes, Described, ProtocolError, TxnClient};
use crate::error::{Error, Result};

/// A pre-committed transaction, stored in the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaCommittable {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub checkpoint: u64,
    pub records: u64,
}

/// The sink's state: the transactional ids the worker may use, so that whoever restores it
/// (itself, or another worker after a rescale) can fence them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaSinkState {
    pub transactional_ids: Vec<String>,
}

/// How a refused re-commit is to be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    AlreadyCommitted,
    /// The id got a new epoch or producer id after this transaction ended.
    Reinitialized,
    /// The broker aborted it: its records are lost.
    Aborted,
    /// The coordinator is busy with it; ask again.
    Retry,
    Failed(String),
}

fn is_commit(state: &str) -> bool {
    matches!(state, "PrepareCommit" | "CompleteCommit")
}

fn is_abort(state: &str) -> bool {
    matches!(
        state,
        "PrepareAbort" | "CompleteAbort" | "PrepareEpochFence"
    )
}

/// Reads the coordinator's view of a transactional id whose stored transaction could not be
/// committed with EndTxn.
pub fn judge(c: &KafkaCommittable, d: &Described) -> Verdict {
    match d.error_code {
        codes::NONE => {}
        codes::TRANSACTIONAL_ID_NOT_FOUND => return Verdict::Reinitialized,
        code if codes::retriable(code) => return Verdict::Retry,
        code => return Verdict::Failed(format!("DescribeTransactions: {}", codes::name(code))),
    }
    if d.producer_id != c.producer_id {
        return Verdict::Reinitialized;
    }
    let ahead = d.producer_epoch as i32 - c.producer_epoch as i32;
    match ahead {
        0 if is_commit(&d.state) => Verdict::AlreadyCommitted,
        0 if d.state == "Ongoing" => Verdict::Retry,
        0 => Verdict::Aborted,
        // The broker bumps the epoch when it aborts a transaction on timeout.
        1 if is_abort(&d.state) => Verdict::Aborted,
        1.. => Verdict::Reinitialized,
        _ => Verdict::Failed(format!(
            "the coordinator reports epoch {} of producer {}, older than the stored {}",
            d.producer_epoch, d.producer_id, c.producer_epoch
        )),
    }
}

/// Retries for a bounded time: the broker may be restarting or loading its transaction log.
struct Backoff {
    deadline: Instant,
    delay: Duration,
}

impl Backoff {
    fn new(total: Duration) -> Backoff {
        Backoff {
            deadline: Instant::now() + total,
            delay: Duration::from_millis(50),
        }
    }

    async fn wait(&mut self, node: &str, what: &str, why: &str) -> Result<()> {
        if Instant::now() >= self.deadline {
            return Err(Error::node(node, format!("{what}: gave up: {why}")));
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Duration::from_secs(2));
        Ok(())
    }
}

fn protocol_error(node: &str, what: &str, e: ProtocolError) -> Result<String> {
    match e {
        ProtocolError::Unsupported(m) | ProtocolError::Auth(m) => {
            Err(Error::node(node, format!("{what}: {m}")))
        }
        ProtocolError::Io(m) => Ok(m),
    }
}

/// What happened to one stored transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recommitted {
    Committed,
    AlreadyDone(Verdict),
    Lost,
}

/// Commits a stored transaction again; idempotent.
pub async fn recommit(
    client: &mut TxnClient,
    node: &str,
    c: &KafkaCommittable,
    patience: Duration,
) -> Result<Recommitted> {
    let what = format!(
        "re-committing the transaction of checkpoint {} ({} producer {} epoch {})",
        c.checkpoint, c.transactional_id, c.producer_id, c.producer_epoch
    );
    let mut backoff = Backoff::new(patience);
    loop {
        let code = match client
            .end_txn(&c.transactional_id, c.producer_id, c.producer_epoch, true)
            .await
        {
            Ok(code) => code,
            Err(e) => {
                let why = protocol_error(node, &what, e)?;
                backoff.wait(node, &what, &why).await?;
                continue;
            }
        };
        if code == codes::NONE {
            return Ok(Recommitted::Committed);
        }
        if codes::retriable(code) {
            backoff.wait(node, &what, &codes::name(code)).await?;
            continue;
        }
        let described = match client.describe(&c.transactional_id).await {
            Ok(d) => d,
            Err(e) => {
                let why = protocol_error(node, &what, e)?;
                backoff.wait(node, &what, &why).await?;
                continue;
            }
        };
        match judge(c, &described) {
            Verdict::Retry => backoff.wait(node, &what, &codes::name(code)).await?,
            Verdict::Failed(m) => {
                return Err(Error::node(
                    node,
                    format!("{what}: EndTxn answered {}; {m}", codes::name(code)),
                ))
            }
            Verdict::Aborted => {
                tracing::error!(
                    node,
                    checkpoint = c.checkpoint,
                    transactional_id = %c.transactional_id,
                    records = c.records,
                    state = %described.state,
                    "the broker aborted a pre-committed transaction before it could be re-committed \
                     (the job was down longer than the transaction timeout?): its records are lost"
                );
                return Ok(Recommitted::Lost);
            }
            v => return Ok(Recommitted::AlreadyDone(v)),
        }
    }
}

/// Fences `transactional_id` (InitProducerId), which aborts its open transaction.
pub async fn fence(
    client: &mut TxnClient,
    node: &str,
    transactional_id: &str,
    transaction_timeout: Duration,
    patience: Duration,
) -> Result<()> {
    let what = format!("aborting what {transactional_id} left open");
    let mut backoff = Backoff::new(patience);
    loop {
        match client
            .init_producer_id(transactional_id, transaction_timeout)
            .await
        {
            Ok(codes::NONE) => return Ok(()),
            Ok(code) if codes::retriable(code) => {
                backoff.wait(node, &what, &codes::name(code)).await?
            }
            Ok(code) => {
                return Err(Error::node(
                    node,
                    format!("{what}: InitProducerId answered {}", codes::name(code)),
                ))
            }
            Err(e) => {
                let why = protocol_error(node, &what, e)?;
                backoff.wait(node, &what, &why).await?;
            }
        }
    }
}

/// What a transactional id of a worker beyond the current parallelism holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Never used (or expired): no worker had it, so none above it either.
    Unused,
    /// Used, nothing open.
    Idle,
    /// An open transaction, which read_committed consumers wait behind: abort it.
    Open,
    /// The coordinator is busy; ask again.
    Retry,
}

pub fn probe_verdict(d: &Described) -> std::result::Result<Probe, String> {
    match d.error_code {
        codes::NONE if d.state == "Ongoing" => Ok(Probe::Open),
        codes::NONE => Ok(Probe::Idle),
        codes::TRANSACTIONAL_ID_NOT_FOUND => Ok(Probe::Unused),
        c if codes::retriable(c) => Ok(Probe::Retry),
        c => Err(codes::name(c)),
    }
}

/// Asks the coordinator what `transactional_id` holds (DescribeTransactions never creates it).
pub async fn probe(
    client: &mut TxnClient,
    node: &str,
    transactional_id: &str,
    patience: Duration,
) -> Result<Probe> {
    let what = format!("probing {transactional_id}");
    let mut backoff = Backoff::new(patience);
    loop {
        let why = match client.describe(transactional_id).await {
            Ok(d) => match probe_verdict(&d) {
                Ok(Probe::Retry) => codes::name(d.error_code),
                Ok(p) => return Ok(p),
                Err(code) => {
                    return Err(Error::node(
                        node,
                        format!("{what}: DescribeTransactions answered {code}"),
                    ))
                }
            },
            Err(e) => protocol_error(node, &what, e)?,
        };
        backoff.wait(node, &what, &why).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_stop_at_an_unused_id_and_abort_only_open_transactions() {
        let d = |code: i16, state: &str| Described {
            error_code: code,
            state: state.into(),
            producer_id: 1,
            producer_epoch: 0,
        };
        assert_eq!(probe_verdict(&d(0, "Ongoing")), Ok(Probe::Open));
        assert_eq!(probe_verdict(&d(0, "CompleteCommit")), Ok(Probe::Idle));
        assert_eq!(probe_verdict(&d(0, "Empty")), Ok(Probe::Idle));
        assert_eq!(
            probe_verdict(&d(codes::TRANSACTIONAL_ID_NOT_FOUND, "")),
            Ok(Probe::Unused)
        );
        assert_eq!(
            probe_verdict(&d(codes::COORDINATOR_LOAD_IN_PROGRESS, "")),
            Ok(Probe::Retry)
        );
        assert!(probe_verdict(&d(53, "")).is_err());
    }

    fn stored() -> KafkaCommittable {
        KafkaCommittable {
            transactional_id: "t".into(),
            producer_id: 7,
            producer_epoch: 3,
            checkpoint: 4,
            records: 10,
        }
    }

    fn seen(pid: i64, epoch: i16, state: &str) -> Described {
        Described {
            error_code: 0,
            state: state.into(),
            producer_id: pid,
            producer_epoch: epoch,
        }
    }

    #[test]
    fn committed_at_the_same_epoch() {
        assert_eq!(
            judge(&stored(), &seen(7, 3, "CompleteCommit")),
            Verdict::AlreadyCommitted
        );
        assert_eq!(
            judge(&stored(), &seen(7, 3, "PrepareCommit")),
            Verdict::AlreadyCommitted
        );
    }

    #[test]
    fn aborted_by_the_broker_is_loss() {
        assert_eq!(
            judge(&stored(), &seen(7, 3, "CompleteAbort")),
            Verdict::Aborted
        );
        // a timeout abort bumps the epoch once
        assert_eq!(
            judge(&stored(), &seen(7, 4, "CompleteAbort")),
            Verdict::Aborted
        );
        assert_eq!(
            judge(&stored(), &seen(7, 4, "PrepareAbort")),
            Verdict::Aborted
        );
    }

    #[test]
    fn reinitialized_after_the_commit() {
        assert_eq!(
            judge(&stored(), &seen(7, 4, "Empty")),
            Verdict::Reinitialized
        );
        assert_eq!(
            judge(&stored(), &seen(7, 4, "Ongoing")),
            Verdict::Reinitialized
        );
        assert_eq!(
            judge(&stored(), &seen(7, 6, "CompleteAbort")),
            Verdict::Reinitialized
        );
        assert_eq!(
            judge(&stored(), &seen(8, 0, "Empty")),
            Verdict::Reinitialized
        );
        let mut gone = seen(-1, -1, "");
        gone.error_code = codes::TRANSACTIONAL_ID_NOT_FOUND;
        assert_eq!(judge(&stored(), &gone), Verdict::Reinitialized);
    }

    #[test]
    fn busy_or_odd_answers() {
        assert_eq!(judge(&stored(), &seen(7, 3, "Ongoing")), Verdict::Retry);
        let mut busy = seen(7, 3, "");
        busy.error_code = codes::COORDINATOR_LOAD_IN_PROGRESS;
        assert_eq!(judge(&stored(), &busy), Verdict::Retry);
        assert!(matches!(
            judge(&stored(), &seen(7, 2, "Empty")),
            Verdict::Failed(_)
        ));
    }

    #[test]
    fn committable_round_trips_through_json() {
        let c = stored();
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["transactional_id"], "t");
        assert_eq!(serde_json::from_value::<KafkaCommittable>(v).unwrap(), c);
    }
}
