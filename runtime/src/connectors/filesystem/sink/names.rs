//! Part file names. A part is `<prefix>-<worker>-<n>`: hidden (`.part-0-7.inprogress`,
//! `.part-0-7.pending`) until committed, then visible as `part-0-7<suffix>`. Hidden as the
//! family defines it ([`HIDDEN`]), so readers skip uncommitted data.

use serde::{Deserialize, Serialize};

use crate::connectors::filesystem::HIDDEN;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PartName {
    pub prefix: String,
    pub worker: u32,
    pub n: u64,
}

/// The two hidden stages of a part on local disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    InProgress,
    Pending,
}

impl PartName {
    pub fn new(prefix: &str, worker: u32, n: u64) -> Self {
        PartName {
            prefix: prefix.to_string(),
            worker,
            n,
        }
    }

    pub fn in_progress(&self) -> String {
        format!(
            "{HIDDEN}{}-{}-{}.inprogress",
            self.prefix, self.worker, self.n
        )
    }

    pub fn pending(&self) -> String {
        format!("{HIDDEN}{}-{}-{}.pending", self.prefix, self.worker, self.n)
    }

    pub fn visible(&self, suffix: &str) -> String {
        format!("{}-{}-{}{suffix}", self.prefix, self.worker, self.n)
    }

    /// Reads a hidden part name written with `prefix`: `.part-3-12.pending` → (3, 12, Pending).
    pub fn parse_hidden(file_name: &str, prefix: &str) -> Option<(PartName, Stage)> {
        let rest = file_name
            .strip_prefix(HIDDEN)?
            .strip_prefix(prefix)?
            .strip_prefix('-')?;
        let (rest, stage) = if let Some(r) = rest.strip_suffix(".inprogress") {
            (r, Stage::InProgress)
        } else {
            (rest.strip_suffix(".pending")?, Stage::Pending)
        };
        let (worker, n) = rest.split_once('-')?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(worker) || !digits(n) {
            return None;
        }
        Some((
            PartName {
                prefix: prefix.to_string(),
                worker: worker.parse().ok()?,
                n: n.parse().ok()?,
            },
            stage,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_foreign_names_are_ignored() {
        let p = PartName::new("part", 3, 12);
        assert_eq!(p.in_progress(), ".part-3-12.inprogress");
        assert_eq!(p.pending(), ".part-3-12.pending");
        assert_eq!(p.visible(".json"), "part-3-12.json");
        assert_eq!(
            PartName::parse_hidden(&p.in_progress(), "part"),
            Some((p.clone(), Stage::InProgress))
        );
        assert_eq!(
            PartName::parse_hidden(&p.pending(), "part"),
            Some((p.clone(), Stage::Pending))
        );
        for other in [
            "part-3-12.json",
            ".part-3-12.json",
            ".part-3.pending",
            ".part-x-1.pending",
            ".parts-3-1.pending",
            ".part-3-1-2.pending",
            ".part--1.pending",
        ] {
            assert_eq!(PartName::parse_hidden(other, "part"), None, "{other}");
        }
        let dashed = PartName::new("my-part", 0, 1);
        assert_eq!(
            PartName::parse_hidden(&dashed.pending(), "my-part"),
            Some((dashed, Stage::Pending))
        );
    }
}
