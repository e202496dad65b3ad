//! What the sink keeps in a checkpoint: committables (parts to publish once the checkpoint is
//! durable) and its state (the part counter and the parts still open across the checkpoint).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::config::Format;
use super::names::PartName;
use super::object::StagedUpload;

/// A closed part waiting for its checkpoint to complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FileCommittable {
    /// Rename `pending` to `visible`.
    Local { pending: PathBuf, visible: PathBuf },
    /// Complete the multipart upload.
    S3(StagedUpload),
    /// Rename `pending` to `visible` on the sink's HDFS (absolute paths on its namenode).
    Hdfs { pending: String, visible: String },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSinkState {
    /// The worker that wrote this state; its hidden files are cleaned by whoever restores it.
    pub worker: u32,
    /// The next part number of that worker.
    pub next_part: u64,
    /// Row-format parts left open across the checkpoint (`roll_on_checkpoint: false`).
    #[serde(default)]
    pub in_progress: Vec<InProgressPart>,
}

/// A local part that stays open across a checkpoint: on restore it is cut back to
/// `valid_length` and written on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InProgressPart {
    /// Directory relative to the sink's path (`""` for the root).
    pub bucket: String,
    pub name: PartName,
    pub format: Format,
    pub suffix: String,
    pub valid_length: u64,
    pub opened_at_ms: i64,
    /// CSV: the columns of its header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn committables_serialize_readably() {
        let c = FileCommittable::Local {
            pending: "/d/.part-0-1.pending".into(),
            visible: "/d/part-0-1.json".into(),
        };
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!({"kind": "local", "pending": "/d/.part-0-1.pending", "visible": "/d/part-0-1.json"})
        );
        let s3 = FileCommittable::S3(StagedUpload {
            path: "p/part-0-1.json".into(),
            upload_id: "u".into(),
            parts: vec![super::super::object::UploadedPart {
                idx: 0,
                etag: "\"e\"".into(),
            }],
        });
        let v = serde_json::to_value(&s3).unwrap();
        assert_eq!(
            v,
            json!({"kind": "s3", "path": "p/part-0-1.json", "upload_id": "u", "parts": [{"idx": 0, "etag": "\"e\""}]})
        );
        assert_eq!(serde_json::from_value::<FileCommittable>(v).unwrap(), s3);
    }
}
