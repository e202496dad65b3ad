//! What the sink writes and the SQL it writes with, built once at open from the settings and
//! the table's columns. Pure: every statement is a function of the plan.

use serde_json::Value;

use super::config::{Mode, SinkSettings, TableName};
use super::dialect::Dialect;
use super::types::{copy_escape, encode, ColumnKind};
use crate::record::Fields;

/// A column as read from `information_schema.columns` (Postgres, MySQL) or
/// `pragma_table_xinfo` (SQLite).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableColumn {
    pub name: String,
    /// `"schema"."udt_name"`, usable in casts and in the staging table (Postgres); the
    /// declared type (SQLite).
    pub sql_type: String,
    /// What [`Dialect::column_kind`] reads: `udt_name`, SQLite's declared type, or MySQL's
    /// `COLUMN_TYPE`.
    pub udt: String,
    /// Generated or identity columns are never written by default.
    pub generated: bool,
}

/// A record field: a top-level name, or a dotted path into nested objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath(pub String);

impl FieldPath {
    pub fn get<'a>(&self, fields: &'a Fields) -> Option<&'a Value> {
        if let Some(v) = fields.get(&self.0) {
            return Some(v);
        }
        let mut parts = self.0.split('.');
        let mut v = fields.get(parts.next()?)?;
        for p in parts {
            v = v.as_object()?.get(p)?;
        }
        Some(v)
    }
}

/// One written value: the column (or `:param`) and the field it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub field: FieldPath,
    pub kind: ColumnKind,
    pub sql_type: String,
}

/// One record, encoded: a text value (or NULL) per column, in the database's text input format.
pub type Row = Box<[Option<String>]>;

#[derive(Debug, Clone)]
pub enum Statement {
    /// A table written by upsert or append.
    Table {
        table: String,
        mode: Mode,
        /// Positions of the conflict columns in `columns` (upsert).
        key: Vec<usize>,
    },
    /// The user's statement, `:name` rewritten to `$n::type`.
    Sql { sql: String },
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub dialect: Dialect,
    pub columns: Vec<Column>,
    pub statement: Statement,
    /// Positions of the values that pick a writer (same key → same connection, in order).
    pub route: Vec<usize>,
}

/// Name of the per-connection staging table (temporary, emptied at every commit).
pub const STAGE: &str = "weir_stage";
const SEQ: &str = "weir_seq";

impl Plan {
    /// The plan for upsert or append into `table`, whose columns are `table_columns`.
    pub fn for_table(
        dialect: Dialect,
        s: &SinkSettings,
        table: &TableName,
        table_columns: &[TableColumn],
        primary_key: &[String],
    ) -> Result<Plan, String> {
        let quoted = table.quoted(dialect);
        if table_columns.is_empty() {
            return Err(format!(
                "table {quoted} does not exist or has no columns you can see"
            ));
        }
        let find = |name: &str| table_columns.iter().find(|c| c.name == name);
        let pairs: Vec<(String, String)> = match &s.columns {
            Some(p) => p.clone(),
            None => table_columns
                .iter()
                .filter(|c| !c.generated)
                .map(|c| (c.name.clone(), c.name.clone()))
                .collect(),
        };
        let mut columns = Vec::with_capacity(pairs.len());
        for (col, field) in &pairs {
            let tc = find(col).ok_or_else(|| {
                let names: Vec<&str> = table_columns.iter().map(|c| c.name.as_str()).collect();
                format!(
                    "column {col:?} is not in {quoted} (it has {})",
                    names.join(", ")
                )
            })?;
            columns.push(Column {
                name: col.clone(),
                field: FieldPath(field.clone()),
                kind: dialect.column_kind(&tc.udt),
                sql_type: tc.sql_type.clone(),
            });
        }
        let key_names: Vec<String> = match (s.mode, &s.key) {
            (Mode::Upsert, Some(k)) => k.clone(),
            (Mode::Upsert, None) if primary_key.is_empty() => {
                return Err(format!(
                    "{quoted} has no primary key: set `key` to the columns of a unique index"
                ))
            }
            (Mode::Upsert, None) => primary_key.to_vec(),
            _ => Vec::new(),
        };
        let mut key = Vec::with_capacity(key_names.len());
        for k in &key_names {
            let i = columns
                .iter()
                .position(|c| c.name == *k)
                .ok_or_else(|| format!("key column {k:?} is not written (add it to `columns`)"))?;
            key.push(i);
        }
        // Append has no key: any writer will do, so spread by every value.
        let route = if key.is_empty() {
            (0..columns.len()).collect()
        } else {
            key.clone()
        };
        Ok(Plan {
            dialect,
            columns,
            statement: Statement::Table {
                table: quoted,
                mode: s.mode,
                key,
            },
            route,
        })
    }

    /// The plan for an explicit statement; `param_types` are the types the database inferred
    /// for `$1…$n` (Postgres: `"schema"."udt"` and udt name; SQLite: empty, untyped),
    /// `route_fields` the `key` setting.
    pub fn for_sql(
        dialect: Dialect,
        sql: &str,
        param_types: &[(String, String)],
        route_fields: &[String],
    ) -> Result<Plan, String> {
        let (rewritten, mut names) = super::sql::rewrite(sql, |i| {
            let t = param_types.get(i - 1).map_or("", |(t, _)| t.as_str());
            dialect.placeholder(i, t)
        });
        if !dialect.numbered_params() {
            // One `?` per occurrence: a field used twice is bound twice.
            names = super::sql::occurrences(sql);
        }
        if names.len() != param_types.len() {
            return Err(format!(
                "the statement has {} parameters but the database reported {}",
                names.len(),
                param_types.len()
            ));
        }
        let columns: Vec<Column> = names
            .iter()
            .zip(param_types)
            .map(|(n, (t, udt))| Column {
                name: format!(":{n}"),
                field: FieldPath(n.clone()),
                kind: dialect.column_kind(udt),
                sql_type: t.clone(),
            })
            .collect();
        let mut route = Vec::new();
        for f in route_fields {
            let i = names
                .iter()
                .position(|n| n == f)
                .ok_or_else(|| format!("key field {f:?} is not a parameter of the statement"))?;
            route.push(i);
        }
        Ok(Plan {
            dialect,
            columns,
            statement: Statement::Sql { sql: rewritten },
            route,
        })
    }

    /// MySQL upserts have no conflict target: `ON DUPLICATE KEY UPDATE` fires on whichever
    /// unique index a row collides with. So the `key` must be one of the table's unique indexes
    /// (`unique`: each index's columns), or the upsert would silently append.
    pub fn check_unique_key(&self, unique: &[Vec<String>]) -> Result<(), String> {
        if !self.is_upsert() {
            return Ok(());
        }
        let sorted = |cols: &mut dyn Iterator<Item = &str>| {
            // MySQL column names are case-insensitive.
            let mut v: Vec<String> = cols.map(str::to_lowercase).collect();
            v.sort_unstable();
            v
        };
        let key = sorted(&mut self.key().iter().map(|i| self.columns[*i].name.as_str()));
        let matches = unique
            .iter()
            .any(|index| sorted(&mut index.iter().map(String::as_str)) == key);
        if matches {
            return Ok(());
        }
        Err(format!(
            "key ({}) is not the primary key or a unique index of {}: an upsert needs one",
            key.join(", "),
            self.table()
        ))
    }

    pub fn is_upsert(&self) -> bool {
        matches!(
            self.statement,
            Statement::Table {
                mode: Mode::Upsert,
                ..
            }
        )
    }

    /// Positions of the conflict columns (upsert only; empty otherwise).
    pub fn key(&self) -> &[usize] {
        match &self.statement {
            Statement::Table { key, .. } => key,
            Statement::Sql { .. } => &[],
        }
    }

    /// Positions of the values a batch's rows are sorted by before they are written
    /// (`sink::pending::key_order`), so that every writer takes its row locks in one order: the
    /// conflict columns of an upsert, the `key` fields of a statement (the rows it says the
    /// statement touches per key), none for append (it only inserts rows nobody else can hold).
    pub fn lock_order(&self) -> &[usize] {
        match &self.statement {
            Statement::Table { key, .. } => key,
            Statement::Sql { .. } => &self.route,
        }
    }

    /// Encodes a record, or says which column (and field) does not fit.
    pub fn encode(&self, fields: &Fields) -> Result<Row, String> {
        let mut row = Vec::with_capacity(self.columns.len());
        for c in &self.columns {
            let v = c.field.get(fields).ok_or_else(|| {
                format!(
                    "column {:?} ← field {:?}: the field is missing",
                    c.name, c.field.0
                )
            })?;
            let cell = encode(c.kind, v)
                .map_err(|e| format!("column {:?} ← field {:?}: {e}", c.name, c.field.0))?;
            row.push(cell);
        }
        Ok(row.into_boxed_slice())
    }

    /// A row as JSON (column → value) for error messages.
    pub fn describe(&self, row: &[Option<String>]) -> String {
        let mut m = serde_json::Map::new();
        for (c, v) in self.columns.iter().zip(row) {
            m.insert(
                c.name.clone(),
                v.as_ref().map_or(Value::Null, |s| Value::String(s.clone())),
            );
        }
        let r = crate::record::Record::new(m);
        r.describe()
    }

    fn quote(&self, column: usize) -> String {
        self.dialect.quote_ident(&self.columns[column].name)
    }

    fn column_list(&self) -> String {
        let names: Vec<String> = (0..self.columns.len()).map(|i| self.quote(i)).collect();
        names.join(", ")
    }

    /// `ON CONFLICT …` (MySQL: `ON DUPLICATE KEY UPDATE …`) for an upsert; empty for append.
    fn conflict_clause(&self) -> String {
        let Statement::Table {
            mode: Mode::Upsert,
            key,
            ..
        } = &self.statement
        else {
            return String::new();
        };
        let keys: Vec<String> = key.iter().map(|i| self.quote(*i)).collect();
        let non_key = (0..self.columns.len()).filter(|i| !key.contains(i));
        if self.dialect == Dialect::Mysql {
            // MySQL has no conflict target: any unique index fires it (the plan checks that
            // `key` is one). `VALUES(c)` is the row's new value (MariaDB 10.11 and MySQL 8 both
            // take it); with nothing else to set, `k = k` keeps the row, as DO NOTHING does,
            // where INSERT IGNORE would also hide data errors.
            let sets: Vec<String> = non_key
                .map(|i| format!("{c} = VALUES({c})", c = self.quote(i)))
                .collect();
            return match sets.is_empty() {
                true => format!(" ON DUPLICATE KEY UPDATE {k} = {k}", k = keys[0]),
                false => format!(" ON DUPLICATE KEY UPDATE {}", sets.join(", ")),
            };
        }
        let sets: Vec<String> = non_key
            .map(|i| format!("{c} = EXCLUDED.{c}", c = self.quote(i)))
            .collect();
        if sets.is_empty() {
            format!(" ON CONFLICT ({}) DO NOTHING", keys.join(", "))
        } else {
            format!(
                " ON CONFLICT ({}) DO UPDATE SET {}",
                keys.join(", "),
                sets.join(", ")
            )
        }
    }

    fn table(&self) -> &str {
        match &self.statement {
            Statement::Table { table, .. } => table,
            Statement::Sql { .. } => "",
        }
    }

    /// Creates this connection's staging table once; rows vanish at every commit.
    pub fn create_stage(&self) -> String {
        let cols: Vec<String> = self
            .columns
            .iter()
            .map(|c| format!("{} {}", self.dialect.quote_ident(&c.name), c.sql_type))
            .collect();
        format!(
            "CREATE TEMP TABLE IF NOT EXISTS {STAGE} ({}, {SEQ} bigint) ON COMMIT DELETE ROWS",
            cols.join(", ")
        )
    }

    pub fn copy_into_stage(&self) -> String {
        format!("COPY {STAGE} ({}, {SEQ}) FROM STDIN", self.column_list())
    }

    /// Append: straight into the table.
    pub fn copy_into_table(&self) -> String {
        format!("COPY {} ({}) FROM STDIN", self.table(), self.column_list())
    }

    /// One set-based upsert from the staging table; `DISTINCT ON` keeps the last row per key
    /// even for keys equal only after the column type's own comparison (e.g. citext).
    pub fn merge_from_stage(&self) -> String {
        let cols = self.column_list();
        let keys: Vec<String> = self.key().iter().map(|i| self.quote(*i)).collect();
        format!(
            "INSERT INTO {} ({cols}) SELECT DISTINCT ON ({k}) {cols} FROM {STAGE} ORDER BY {k}, {SEQ} DESC{}",
            self.table(),
            self.conflict_clause(),
            k = keys.join(", ")
        )
    }

    /// Rows per multi-row `VALUES` statement.
    pub fn rows_per_statement(&self, batch: usize) -> usize {
        (self.dialect.max_params() / self.columns.len().max(1)).clamp(1, batch.max(1))
    }

    /// `INSERT … VALUES ($1::t, …), (…) [ON CONFLICT …]` (SQLite: `?`, …) for `rows` rows
    /// (table plans), or the
    /// user's statement (one row).
    pub fn values_statement(&self, rows: usize) -> String {
        if let Statement::Sql { sql } = &self.statement {
            return sql.clone();
        }
        let n = self.columns.len();
        let mut tuples = Vec::with_capacity(rows);
        for r in 0..rows {
            let cells: Vec<String> = self
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| self.dialect.values_placeholder(r * n + i + 1, &c.sql_type))
                .collect();
            tuples.push(format!("({})", cells.join(", ")));
        }
        format!(
            "INSERT INTO {} ({}) VALUES {}{}",
            self.table(),
            self.column_list(),
            tuples.join(", "),
            self.conflict_clause()
        )
    }

    /// COPY text data for `rows`; with `seq`, each row's position is appended.
    pub fn copy_data(&self, rows: &[Row], seq: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(rows.len() * 16 * self.columns.len());
        for (i, row) in rows.iter().enumerate() {
            for (j, cell) in row.iter().enumerate() {
                if j > 0 {
                    out.push(b'\t');
                }
                copy_escape(&mut out, cell.as_deref());
            }
            if seq {
                out.push(b'\t');
                out.extend_from_slice(i.to_string().as_bytes());
            }
            out.push(b'\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ConnectorConfig, NodeConfig};
    use crate::connectors::jdbc::config::JdbcSinkConfig;
    use serde_json::json;

    pub(crate) fn settings(config: Value) -> SinkSettings {
        let cfg = NodeConfig::for_test("sinks[0]", "jdbc", config);
        let c: JdbcSinkConfig = cfg.parse().unwrap();
        c.resolve(&cfg).unwrap()
    }

    #[test]
    fn the_largest_batch_defaults_to_ten_batches_and_is_never_below_one() {
        let s = settings(json!({"url": "postgres://h/db", "table": "t", "batch_size": 500}));
        assert_eq!((s.batch_size, s.max_batch_size), (500, 5000));
        let cfg = NodeConfig::for_test(
            "sinks[0]",
            "jdbc",
            json!({"url": "postgres://h/db", "table": "t", "batch_size": 500, "max_batch_size": 10}),
        );
        let c: JdbcSinkConfig = cfg.parse().unwrap();
        let e = c.resolve(&cfg).unwrap_err().to_string();
        assert!(
            e.contains("max_batch_size") && e.contains("at least batch_size (500)"),
            "{e}"
        );
    }

    /// A column as the database describes it.
    fn column(name: &str, sql_type: &str, udt: &str) -> TableColumn {
        TableColumn {
            name: name.into(),
            sql_type: sql_type.into(),
            udt: udt.into(),
            generated: false,
        }
    }

    /// The plan for `s`'s table with these columns and primary key.
    fn table_plan(
        dialect: Dialect,
        s: &SinkSettings,
        columns: &[TableColumn],
        key: &[&str],
    ) -> std::result::Result<Plan, String> {
        let key: Vec<String> = key.iter().map(|k| k.to_string()).collect();
        Plan::for_table(dialect, s, s.table.as_ref().unwrap(), columns, &key)
    }

    fn user_stats() -> Vec<TableColumn> {
        let col = |n: &str, udt: &str| column(n, &format!("\"pg_catalog\".\"{udt}\""), udt);
        vec![
            col("user_id", "text"),
            col("event_count", "int8"),
            col("last_seen", "timestamptz"),
        ]
    }

    fn plan(config: Value) -> Plan {
        let s = settings(config);
        table_plan(Dialect::Postgres, &s, &user_stats(), &["user_id"]).unwrap()
    }

    #[test]
    fn upsert_statements_update_every_non_key_column() {
        let p = plan(json!({"url": "postgres://h/db", "table": "user_stats",
            "columns": {"user_id": "uid", "event_count": "n", "last_seen": "ts"}}));
        assert_eq!(
            p.merge_from_stage(),
            "INSERT INTO \"user_stats\" (\"user_id\", \"event_count\", \"last_seen\") \
             SELECT DISTINCT ON (\"user_id\") \"user_id\", \"event_count\", \"last_seen\" FROM weir_stage \
             ORDER BY \"user_id\", weir_seq DESC ON CONFLICT (\"user_id\") DO UPDATE SET \
             \"event_count\" = EXCLUDED.\"event_count\", \"last_seen\" = EXCLUDED.\"last_seen\""
        );
        let v = p.values_statement(2);
        assert!(v.contains("VALUES ($1::\"pg_catalog\".\"text\", $2::\"pg_catalog\".\"int8\", $3::\"pg_catalog\".\"timestamptz\"), ($4::"), "{v}");
        assert!(v.ends_with("\"last_seen\" = EXCLUDED.\"last_seen\""), "{v}");
        assert_eq!(p.rows_per_statement(100_000), 21_845);
        // Rows are written in the order of the conflict key.
        assert_eq!(p.lock_order(), [0]);
        assert!(p
            .create_stage()
            .contains("\"last_seen\" \"pg_catalog\".\"timestamptz\", weir_seq bigint"));
    }

    #[test]
    fn sqlite_statements_use_numbered_parameters_and_the_same_conflict_clause() {
        let s = settings(json!({"url": "sqlite:///tmp/x.db", "table": "user_stats"}));
        let col = |n: &str, declared: &str| column(n, declared, declared);
        let columns = [
            col("user_id", "TEXT"),
            col("event_count", "INTEGER"),
            col("active", "BOOLEAN"),
        ];
        let p = table_plan(Dialect::Sqlite, &s, &columns, &["user_id"]).unwrap();
        assert_eq!(
            p.values_statement(2),
            "INSERT INTO \"user_stats\" (\"user_id\", \"event_count\", \"active\") \
             VALUES (?, ?, ?), (?, ?, ?) ON CONFLICT (\"user_id\") DO UPDATE SET \
             \"event_count\" = EXCLUDED.\"event_count\", \"active\" = EXCLUDED.\"active\""
        );
        assert_eq!(p.rows_per_statement(100_000), 10_922);
        let row = p
            .encode(
                json!({"user_id": "u", "event_count": "7", "active": true})
                    .as_object()
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(
            &*row,
            [Some("u".into()), Some("7".into()), Some("1".into())]
        );
        let q = Plan::for_sql(
            Dialect::Sqlite,
            "INSERT INTO t (k, n) VALUES (:k, :n) ON CONFLICT (k) DO UPDATE SET n = n + :n",
            &[
                (String::new(), String::new()),
                (String::new(), String::new()),
            ],
            &["k".into()],
        )
        .unwrap();
        assert_eq!(
            q.values_statement(1),
            "INSERT INTO t (k, n) VALUES (?1, ?2) ON CONFLICT (k) DO UPDATE SET n = n + ?2"
        );
    }

    #[test]
    fn mysql_statements_use_question_marks_backquotes_and_on_duplicate_key() {
        let s = settings(json!({"url": "mysql://h/db", "table": "weir.user_stats"}));
        let col = |n: &str, t: &str| column(n, t, t);
        let columns = [
            col("user_id", "varchar(64)"),
            col("event_count", "bigint(20)"),
            col("last_seen", "datetime(3)"),
        ];
        let p = table_plan(Dialect::Mysql, &s, &columns, &["user_id"]).unwrap();
        assert_eq!(
            p.values_statement(2),
            "INSERT INTO `weir`.`user_stats` (`user_id`, `event_count`, `last_seen`) \
             VALUES (?, ?, ?), (?, ?, ?) ON DUPLICATE KEY UPDATE \
             `event_count` = VALUES(`event_count`), `last_seen` = VALUES(`last_seen`)"
        );
        assert_eq!(p.rows_per_statement(100_000), 21_845);
        assert_eq!(p.check_unique_key(&[vec!["USER_ID".into()]]), Ok(()));
        let e = p
            .check_unique_key(&[vec!["user_id".into(), "event_count".into()]])
            .unwrap_err();
        assert!(
            e.contains("key (user_id) is not the primary key or a unique index"),
            "{e}"
        );
        let row = p
            .encode(
                json!({"user_id": "u", "event_count": 7, "last_seen": "2024-01-01T00:00:00Z"})
                    .as_object()
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(row[2].as_deref(), Some("2024-01-01 00:00:00"));

        let keys_only =
            settings(json!({"url": "mysql://h/db", "table": "seen", "columns": ["user_id"]}));
        let p = table_plan(Dialect::Mysql, &keys_only, &columns, &["user_id"]).unwrap();
        assert!(p
            .values_statement(1)
            .ends_with("ON DUPLICATE KEY UPDATE `user_id` = `user_id`"));

        // `?` is positional: a field used twice is bound twice.
        let q = Plan::for_sql(
            Dialect::Mysql,
            "INSERT INTO t (k, n) VALUES (:k, :n) ON DUPLICATE KEY UPDATE n = n + :n",
            &vec![(String::new(), String::new()); 3],
            &["k".into()],
        )
        .unwrap();
        assert_eq!(
            q.values_statement(1),
            "INSERT INTO t (k, n) VALUES (?, ?) ON DUPLICATE KEY UPDATE n = n + ?"
        );
        let names: Vec<&str> = q.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, [":k", ":n", ":n"]);
        assert_eq!(q.route, vec![0]);
    }

    #[test]
    fn append_has_no_conflict_clause_and_defaults_to_every_column() {
        let p = plan(json!({"url": "postgres://h/db", "table": "user_stats", "mode": "append"}));
        assert_eq!(p.columns.len(), 3);
        assert_eq!(p.values_statement(1).find("ON CONFLICT"), None);
        assert_eq!(
            p.copy_into_table(),
            "COPY \"user_stats\" (\"user_id\", \"event_count\", \"last_seen\") FROM STDIN"
        );
        assert_eq!(p.route, vec![0, 1, 2]);
        // Append only inserts: its rows keep their arrival order.
        assert!(p.lock_order().is_empty());
    }

    #[test]
    fn a_plan_names_what_is_wrong_with_the_table() {
        let s = settings(
            json!({"url": "postgres://h/db", "table": "user_stats", "columns": ["user_id", "nope"]}),
        );
        let e = table_plan(Dialect::Postgres, &s, &user_stats(), &[]).unwrap_err();
        assert!(e.contains("\"nope\" is not in \"user_stats\""), "{e}");
        let s = settings(json!({"url": "postgres://h/db", "table": "user_stats"}));
        let e = table_plan(Dialect::Postgres, &s, &user_stats(), &[]).unwrap_err();
        assert!(e.contains("no primary key"), "{e}");
    }

    #[test]
    fn records_encode_by_column_or_name_the_problem() {
        let p = plan(json!({"url": "postgres://h/db", "table": "user_stats",
            "columns": {"user_id": "user.id", "event_count": "n", "last_seen": "ts"}}));
        let rec = |v: Value| v.as_object().cloned().unwrap();
        let row = p
            .encode(&rec(json!({"user": {"id": "u1"}, "n": 3, "ts": 0})))
            .unwrap();
        assert_eq!(row[0].as_deref(), Some("u1"));
        assert_eq!(row[2].as_deref(), Some("1970-01-01T00:00:00Z"));
        let e = p
            .encode(&rec(json!({"user": {"id": "u1"}, "ts": 0})))
            .unwrap_err();
        assert_eq!(
            e,
            "column \"event_count\" ← field \"n\": the field is missing"
        );
        let e = p
            .encode(&rec(json!({"user": {"id": "u1"}, "n": "many", "ts": 0})))
            .unwrap_err();
        assert!(
            e.starts_with("column \"event_count\" ← field \"n\": expected an integer"),
            "{e}"
        );
        let data = p.copy_data(&[row], true);
        assert_eq!(data, b"u1\t3\t1970-01-01T00:00:00Z\t0\n");
    }

    #[test]
    fn explicit_sql_gets_typed_parameters() {
        let types = vec![
            ("\"pg_catalog\".\"text\"".to_string(), "text".to_string()),
            ("\"pg_catalog\".\"int8\"".to_string(), "int8".to_string()),
        ];
        let p = Plan::for_sql(
            Dialect::Postgres,
            "INSERT INTO t (a, b) VALUES (:id, :n) ON CONFLICT (a) DO UPDATE SET b = t.b + :n",
            &types,
            &["id".into()],
        )
        .unwrap();
        assert_eq!(
            p.values_statement(1),
            "INSERT INTO t (a, b) VALUES ($1::\"pg_catalog\".\"text\", $2::\"pg_catalog\".\"int8\") \
             ON CONFLICT (a) DO UPDATE SET b = t.b + $2::\"pg_catalog\".\"int8\""
        );
        assert_eq!(p.route, vec![0]);
        // A statement's rows are written in the order of its `key` fields.
        assert_eq!(p.lock_order(), [0]);
        assert_eq!(p.columns[1].name, ":n");
        assert!(Plan::for_sql(Dialect::Postgres, "select :a", &[], &[]).is_err());
    }
}
