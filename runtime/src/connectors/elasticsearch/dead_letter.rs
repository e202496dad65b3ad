//! Dead letters: a rejected document with the reason, written to another index of the same
//! cluster or appended to a local JSON-lines file. Entries are made durable at every flush,
//! before the checkpoint the rejection belongs to can complete, so a dead letter is never lost
//! (at-least-once: a replay after a crash may add an entry again; index entries of documents
//! with an id have an id of their own and are overwritten instead).

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use super::config::{Action, DeadLetter};
use super::request_builder::{BulkBuffer, Span};
use super::service::{execute, BulkRequest, Shared};
use crate::api::NodeContext;
use crate::error::{Context, Error, Result};

/// What went wrong with one document.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub index: Option<String>,
    pub id: Option<String>,
    /// The server's status; `None` when the sink refused the record before sending it.
    pub status: Option<u16>,
    pub reason: String,
    /// The document as JSON text.
    pub document: String,
}

impl Rejection {
    /// `index "events", id "7"`.
    pub fn target(&self) -> String {
        let mut s = match &self.index {
            Some(i) => format!("index {i:?}"),
            None => "no index".into(),
        };
        if let Some(id) = &self.id {
            s.push_str(&format!(", id {id:?}"));
        }
        s
    }

    /// The entry written for it. Pure but for the time stamp passed in.
    pub fn entry(&self, ctx: &NodeContext, action: Action, now: &str) -> Value {
        json!({
            "@timestamp": now,
            "job": ctx.job,
            "node": ctx.node,
            "worker": ctx.worker,
            "index": self.index,
            "id": self.id,
            "action": action.as_str(),
            "status": self.status,
            "reason": self.reason,
            "document": self.document,
        })
    }
}

pub enum DeadLetterWriter {
    Index {
        index: String,
        pending: BulkBuffer,
    },
    File {
        path: PathBuf,
        file: tokio::fs::File,
        pending: Vec<u8>,
    },
}

impl DeadLetterWriter {
    pub async fn open(target: &DeadLetter, ctx: &NodeContext) -> Result<DeadLetterWriter> {
        Ok(match target {
            DeadLetter::Index(index) => DeadLetterWriter::Index {
                index: index.clone(),
                pending: BulkBuffer::default(),
            },
            DeadLetter::Path(dir) => {
                tokio::fs::create_dir_all(dir).await.ctx(|| {
                    format!(
                        "{}: creating dead-letter directory {}",
                        ctx.node,
                        dir.display()
                    )
                })?;
                let path = dir.join(format!("{}-{}-{}.jsonl", ctx.job, ctx.node, ctx.worker));
                let file = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .await
                    .ctx(|| format!("{}: opening dead-letter file {}", ctx.node, path.display()))?;
                DeadLetterWriter::File {
                    path,
                    file,
                    pending: Vec::new(),
                }
            }
        })
    }

    /// Entries waiting for [`DeadLetterWriter::flush`].
    pub fn pending(&self) -> usize {
        match self {
            DeadLetterWriter::Index { pending, .. } => pending.len(),
            DeadLetterWriter::File { pending, .. } => {
                pending.iter().filter(|b| **b == b'\n').count()
            }
        }
    }

    pub fn push(&mut self, r: &Rejection, entry: &Value) {
        let line = serde_json::to_vec(entry).expect("a JSON value serializes");
        match self {
            DeadLetterWriter::Index { index, pending } => {
                let start = pending.body.len();
                let mut meta = json!({"index": {"_index": index}});
                // Same document, same entry: a replay overwrites it instead of adding one.
                if let (Some(i), Some(id)) = (&r.index, &r.id) {
                    let own = format!("{i}/{id}");
                    if own.len() <= 512 {
                        meta["index"]["_id"] = Value::String(own);
                    }
                }
                serde_json::to_writer(&mut pending.body, &meta).expect("a JSON value serializes");
                pending.body.push(b'\n');
                let source = pending.body.len();
                pending.body.extend_from_slice(&line);
                pending.body.push(b'\n');
                pending.spans.push(Span {
                    start,
                    source,
                    end: pending.body.len(),
                });
            }
            DeadLetterWriter::File { pending, .. } => {
                pending.extend_from_slice(&line);
                pending.push(b'\n');
            }
        }
    }

    /// Makes every pending entry durable: indexed and acknowledged, or written and synced.
    pub async fn flush(&mut self, shared: &Arc<Shared>) -> Result<()> {
        match self {
            DeadLetterWriter::Index { index, pending } => {
                if pending.is_empty() {
                    return Ok(());
                }
                let (body, spans) = pending.take();
                let n = spans.len();
                let report = execute(
                    shared,
                    BulkRequest {
                        body,
                        spans,
                        action: Action::Index,
                        versioned: false,
                    },
                )
                .await?;
                if let Some(r) = report.rejected.first() {
                    return Err(Error::node(
                        &shared.node,
                        format!(
                            "the dead-letter index {index:?} refused {} of {n} entries: HTTP {}: {}",
                            report.rejected.len(),
                            r.status,
                            r.reason
                        ),
                    ));
                }
                Ok(())
            }
            DeadLetterWriter::File {
                path,
                file,
                pending,
            } => {
                if pending.is_empty() {
                    return Ok(());
                }
                file.write_all(pending)
                    .await
                    .ctx(|| format!("{}: writing {}", shared.node, path.display()))?;
                file.sync_data()
                    .await
                    .ctx(|| format!("{}: syncing {}", shared.node, path.display()))?;
                pending.clear();
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> NodeContext {
        NodeContext {
            worker: 1,
            parallelism: 2,
            ..NodeContext::for_test("j", "es")
        }
    }

    fn rejection() -> Rejection {
        Rejection {
            index: Some("events".into()),
            id: Some("7".into()),
            status: Some(400),
            reason: "mapper_parsing_exception: failed to parse field [n]".into(),
            document: r#"{"id":7,"n":"x"}"#.into(),
        }
    }

    #[test]
    fn an_entry_carries_the_document_and_the_reason() {
        let r = rejection();
        assert_eq!(r.target(), "index \"events\", id \"7\"");
        let e = r.entry(&ctx(), Action::Index, "2024-01-01T00:00:00Z");
        assert_eq!(e["document"], r#"{"id":7,"n":"x"}"#);
        assert_eq!(
            e["reason"],
            "mapper_parsing_exception: failed to parse field [n]"
        );
        assert_eq!(e["status"], 400);
        assert_eq!(e["worker"], 1);
    }

    #[tokio::test]
    async fn index_entries_get_an_id_of_their_own_and_files_append_lines() {
        let mut w = DeadLetterWriter::open(&DeadLetter::Index("dlq".into()), &ctx())
            .await
            .unwrap();
        let r = rejection();
        w.push(&r, &r.entry(&ctx(), Action::Index, "t"));
        let DeadLetterWriter::Index { pending, .. } = &w else {
            panic!()
        };
        let text = String::from_utf8(pending.body.clone()).unwrap();
        assert!(
            text.starts_with("{\"index\":{\"_index\":\"dlq\",\"_id\":\"events/7\"}}\n{"),
            "{text}"
        );
        assert_eq!(w.pending(), 1);

        let dir = tempfile::tempdir().unwrap();
        let mut w = DeadLetterWriter::open(&DeadLetter::Path(dir.path().join("d")), &ctx())
            .await
            .unwrap();
        w.push(&r, &r.entry(&ctx(), Action::Index, "t"));
        w.push(&r, &r.entry(&ctx(), Action::Index, "t"));
        assert_eq!(w.pending(), 2);
    }
}
