//! Settings of the `jdbc` sink and source as written in the spec, and the pure rules that check
//! them (the factories also run for `weir validate`, so nothing here connects).

use serde::Deserialize;
use weir_crds::Duration;

use super::dialect::Dialect;
use crate::api::{ConnectorConfig, NodeConfig};
use crate::error::Result;
use crate::on_error::OnError;
use crate::ordered::OrderedMap;
use crate::retry::RetryPolicy;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `INSERT … ON CONFLICT (key) DO UPDATE SET …`: idempotent, last write per key wins.
    #[default]
    Upsert,
    /// Plain inserts (at-least-once: a replay after a crash inserts again).
    Append,
    /// The statement in `sql`, run once per record with `:field` parameters.
    Sql,
}

/// `columns: [a, b]` (each from the field of the same name) or `columns: {column: field}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Columns {
    Names(Vec<String>),
    Map(OrderedMap<String>),
}

impl Columns {
    /// (column, field) pairs in order.
    pub fn pairs(&self) -> Vec<(String, String)> {
        match self {
            Columns::Names(n) => n.iter().map(|c| (c.clone(), c.clone())).collect(),
            Columns::Map(m) => m.0.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JdbcSinkConfig {
    /// `postgres://user:pass@host:port/db`, `mysql://user:pass@host:port/db` or
    /// `sqlite://path/to/file.db` (the sink only);
    /// `${VAR}` is replaced from the environment at open.
    pub url: Option<String>,
    /// The name of an environment variable holding the whole URL.
    pub url_env: Option<String>,
    /// User name, replacing the URL's.
    pub username: Option<String>,
    /// Password, replacing the URL's (a Connector's Secret fills it as `${env:…}`).
    pub password: Option<String>,
    /// `table` or `schema.table`.
    pub table: Option<String>,
    #[serde(default)]
    pub mode: Mode,
    /// Conflict columns (upsert; default: the table's primary key). In `sql` mode, the fields
    /// whose values spread records over the `pool_size` connections (default: one connection).
    /// Each batch's rows are written in the order of these values (a key's own rows in arrival
    /// order), so writers of shared keys lock rows in one order and never deadlock.
    pub key: Option<Vec<String>>,
    /// Default: every table column that is not generated, each from the field of its name.
    pub columns: Option<Columns>,
    pub sql: Option<String>,
    /// Waiting rows (after dedup by key in upsert mode) that start a write.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Most rows per write transaction. Rows that arrive while the writer is busy join the next
    /// batch up to this size instead of queueing behind it (default 10 × `batch_size`).
    pub max_batch_size: Option<usize>,
    /// Longest time a row waits in memory before it is written.
    #[serde(default = "default_flush_interval")]
    pub flush_interval: Duration,
    /// How a batch is retried after a connection or transient error (classified in
    /// `retry.rs`) before the job fails: weir's one retry policy (`backoff`, `max_backoff`,
    /// `multiplier`, `jitter`, `max_attempts`, `max_elapsed`). Default: 100ms doubling up to
    /// 10s, jitter 0.5, 11 attempts.
    #[serde(default = "default_retry")]
    pub retry: RetryPolicy,
    /// Connections, and so writers running side by side (each owns a hash range of keys, so
    /// per-key order is kept).
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    /// Postgres fast path: `COPY` into a staging table + one set-based statement per batch
    /// (default on). SQLite always writes multi-row `INSERT` statements.
    pub copy: Option<bool>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// A record that cannot be written (missing field, wrong type, rejected by the database).
    #[serde(default)]
    pub on_error: OnError,
}

fn default_batch_size() -> usize {
    1000
}
fn default_flush_interval() -> Duration {
    Duration::from_millis(200)
}
fn default_retry() -> RetryPolicy {
    RetryPolicy {
        backoff: std::time::Duration::from_millis(100),
        max_backoff: std::time::Duration::from_secs(10),
        multiplier: 2.0,
        jitter: 0.5,
        max_attempts: Some(11),
        max_elapsed: None,
    }
}
fn default_pool_size() -> u32 {
    2
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_fetch_size() -> usize {
    1000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JdbcSourceConfig {
    pub url: Option<String>,
    pub url_env: Option<String>,
    /// User name, replacing the URL's.
    pub username: Option<String>,
    /// Password, replacing the URL's (a Connector's Secret fills it as `${env:…}`).
    pub password: Option<String>,
    /// The rows to read. Give it an `ORDER BY`: a restart re-runs it and skips the rows already
    /// emitted, which is exact only when the order is stable.
    pub query: String,
    /// Rows per fetch (and per batch).
    #[serde(default = "default_fetch_size")]
    pub fetch_size: usize,
    /// How a failed read is retried (reconnecting and skipping the rows already emitted); the
    /// sink's settings and defaults.
    #[serde(default = "default_retry")]
    pub retry: RetryPolicy,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Duration,
}

/// Where the connection URL comes from; resolved at open, when the environment is the real one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlSource {
    pub from: UrlFrom,
    /// Replace the URL's user name and password (given as their own settings).
    pub username: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlFrom {
    /// A URL, possibly with `${VAR}` references.
    Template(String),
    Env(String),
}

impl UrlSource {
    pub fn from_config(
        cfg: &NodeConfig,
        url: Option<&str>,
        url_env: Option<&str>,
        username: Option<&str>,
        password: Option<&str>,
    ) -> Result<UrlSource> {
        let from = match (url, url_env) {
            (Some(_), Some(_)) => return Err(cfg.error("url_env", "give either url or url_env")),
            (None, None) => {
                return Err(cfg.error(
                    "url",
                    "required (or url_env: the name of a variable holding it)",
                ))
            }
            (Some(u), None) => {
                // Checks the `${…}` syntax now; the values are read at open.
                substitute(u, |_| Some(String::new())).map_err(|e| cfg.error("url", e))?;
                if let Some(d) = literal_dialect(u)
                    .transpose()
                    .map_err(|e| cfg.error("url", e))?
                {
                    if d == Dialect::Sqlite && username.is_some() {
                        return Err(cfg.error("username", SQLITE_HAS_NO_USERS));
                    }
                    if d == Dialect::Sqlite && password.is_some() {
                        return Err(cfg.error("password", SQLITE_HAS_NO_USERS));
                    }
                }
                UrlFrom::Template(u.to_string())
            }
            (None, Some(v)) if v.trim().is_empty() => {
                return Err(cfg.error("url_env", "must name an environment variable"))
            }
            (None, Some(v)) => UrlFrom::Env(v.to_string()),
        };
        if username.is_some_and(|u| u.trim().is_empty()) {
            return Err(cfg.error("username", "must not be empty"));
        }
        Ok(UrlSource {
            from,
            username: username.map(str::to_string),
            password: password.map(str::to_string),
        })
    }

    /// The URL, with variables read from `env` and the credentials set.
    pub fn resolve(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> std::result::Result<String, String> {
        let url = match &self.from {
            UrlFrom::Template(t) => substitute(t, env)?,
            UrlFrom::Env(v) => {
                env(v).ok_or_else(|| format!("environment variable {v} (url_env) is not set"))?
            }
        };
        let dialect = Dialect::from_url(&url)?;
        if self.username.is_none() && self.password.is_none() {
            return Ok(url);
        }
        if dialect == Dialect::Sqlite {
            return Err(format!("username, password: {SQLITE_HAS_NO_USERS}"));
        }
        let mut parsed = url::Url::parse(&url).map_err(|e| format!("not a URL ({e})"))?;
        if let Some(u) = &self.username {
            parsed
                .set_username(u)
                .map_err(|_| "the URL cannot carry a user name".to_string())?;
        }
        if let Some(p) = &self.password {
            parsed
                .set_password(Some(p))
                .map_err(|_| "the URL cannot carry a password".to_string())?;
        }
        Ok(parsed.to_string())
    }
}

/// Replaces every `${NAME}` with `env(NAME)`; `$$` is a literal `$`.
pub fn substitute(
    template: &str,
    env: impl Fn(&str) -> Option<String>,
) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| "unclosed ${ in the URL".to_string())?;
            let name = &body[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("${{{name}}}: not an environment variable name"));
            }
            let value =
                env(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
            out.push_str(&value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

const SQLITE_HAS_NO_USERS: &str = "not used with a sqlite:// URL (SQLite has no users)";

/// The dialect of a URL written out in the spec, checked now; `None` when the URL (or its
/// scheme) comes from the environment at open.
pub fn literal_dialect(url: &str) -> Option<std::result::Result<Dialect, String>> {
    (!url.contains("${")).then(|| Dialect::from_url(url))
}

/// The URL with its password replaced, for logs and errors.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparsable URL>".into(),
    }
}

/// Removes a URL's password (raw and percent-decoded) from any text, e.g. a driver error.
#[derive(Debug, Clone, Default)]
pub struct Scrubber {
    secrets: Vec<String>,
}

impl Scrubber {
    pub fn for_url(url: &str) -> Scrubber {
        let mut secrets = Vec::new();
        if let Ok(u) = url::Url::parse(url) {
            if let Some(p) = u.password().filter(|p| !p.is_empty()) {
                secrets.push(p.to_string());
                if let Ok(decoded) = percent_encoding::percent_decode_str(p).decode_utf8() {
                    if decoded != p {
                        secrets.push(decoded.into_owned());
                    }
                }
            }
        }
        Scrubber { secrets }
    }

    pub fn scrub(&self, text: &str) -> String {
        let mut s = text.to_string();
        for secret in &self.secrets {
            s = s.replace(secret.as_str(), "***");
        }
        s
    }
}

/// `schema.table` or `table`, as given (identifiers are quoted, so case is kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub schema: Option<String>,
    pub name: String,
}

impl TableName {
    pub fn parse(s: &str) -> std::result::Result<TableName, String> {
        let parts: Vec<&str> = s.split('.').collect();
        let bad = |p: &&str| p.trim().is_empty() || p.contains('"');
        match parts.as_slice() {
            [t] if !bad(t) => Ok(TableName {
                schema: None,
                name: t.to_string(),
            }),
            [s, t] if !bad(s) && !bad(t) => Ok(TableName {
                schema: Some(s.to_string()),
                name: t.to_string(),
            }),
            _ => Err(format!("expected `table` or `schema.table`, got {s:?}")),
        }
    }

    /// `"schema"."table"` or `"table"` (MySQL: `` `database`.`table` ``).
    pub fn quoted(&self, dialect: Dialect) -> String {
        match &self.schema {
            Some(s) => format!(
                "{}.{}",
                dialect.quote_ident(s),
                dialect.quote_ident(&self.name)
            ),
            None => dialect.quote_ident(&self.name),
        }
    }
}

/// The sink's settings, resolved and checked.
#[derive(Debug, Clone)]
pub struct SinkSettings {
    pub url: UrlSource,
    pub table: Option<TableName>,
    pub mode: Mode,
    pub key: Option<Vec<String>>,
    pub columns: Option<Vec<(String, String)>>,
    pub sql: Option<String>,
    pub batch_size: usize,
    pub max_batch_size: usize,
    pub flush_interval: std::time::Duration,
    pub retry: RetryPolicy,
    pub pool_size: u32,
    /// As given; see [`use_copy`].
    pub copy: Option<bool>,
    pub connect_timeout: std::time::Duration,
    pub on_error: OnError,
}

/// Whether batches go through COPY: Postgres by default; SQLite and MySQL have no COPY, so
/// asking for it is a mistake worth naming (the error is about the `copy` setting).
pub fn use_copy(dialect: Dialect, copy: Option<bool>) -> std::result::Result<bool, String> {
    match (dialect, copy) {
        (Dialect::Postgres, c) => Ok(c.unwrap_or(true)),
        (Dialect::Sqlite | Dialect::Mysql, Some(true)) => {
            Err("COPY is Postgres-only (SQLite and MySQL write multi-row INSERT statements)".into())
        }
        (Dialect::Sqlite | Dialect::Mysql, _) => Ok(false),
    }
}

impl ConnectorConfig for JdbcSinkConfig {
    type Settings = SinkSettings;

    fn resolve(self, cfg: &NodeConfig) -> Result<SinkSettings> {
        let url = UrlSource::from_config(
            cfg,
            self.url.as_deref(),
            self.url_env.as_deref(),
            self.username.as_deref(),
            self.password.as_deref(),
        )?;
        let table = match &self.table {
            Some(t) => Some(TableName::parse(t).map_err(|e| cfg.error("table", e))?),
            None => None,
        };
        match self.mode {
            Mode::Upsert | Mode::Append => {
                if table.is_none() {
                    return Err(cfg.error("table", "required in upsert and append mode"));
                }
                if self.sql.is_some() {
                    return Err(cfg.error("sql", "only with mode: sql"));
                }
            }
            Mode::Sql => {
                let Some(sql) = &self.sql else {
                    return Err(cfg.error("sql", "required with mode: sql"));
                };
                if super::sql::named_params(sql).is_empty() {
                    return Err(cfg.error(
                        "sql",
                        "names no :field parameter (e.g. INSERT INTO t (id) VALUES (:id))",
                    ));
                }
                if self.columns.is_some() {
                    return Err(cfg.error(
                        "columns",
                        "not used with mode: sql (the statement names its :fields)",
                    ));
                }
            }
        }
        if self.mode == Mode::Append && self.key.is_some() {
            return Err(cfg.error("key", "not used with mode: append"));
        }
        if let Some(k) = &self.key {
            if k.is_empty() {
                return Err(cfg.error("key", "must list at least one column"));
            }
        }
        let columns = self.columns.as_ref().map(Columns::pairs);
        if let Some(c) = &columns {
            if c.is_empty() {
                return Err(cfg.error("columns", "must list at least one column"));
            }
            for (i, (col, _)) in c.iter().enumerate() {
                if c[..i].iter().any(|(o, _)| o == col) {
                    return Err(cfg.error("columns", format!("column {col:?} listed twice")));
                }
            }
            if let (Mode::Upsert, Some(keys)) = (self.mode, &self.key) {
                if let Some(k) = keys.iter().find(|k| !c.iter().any(|(col, _)| col == *k)) {
                    return Err(cfg.error("key", format!("key column {k:?} is not in columns")));
                }
            }
        }
        if self.batch_size == 0 {
            return Err(cfg.error("batch_size", "must be at least 1"));
        }
        let max_batch_size = self
            .max_batch_size
            .unwrap_or(self.batch_size.saturating_mul(10));
        if max_batch_size < self.batch_size {
            return Err(cfg.error(
                "max_batch_size",
                format!("must be at least batch_size ({})", self.batch_size),
            ));
        }
        if self.pool_size == 0 {
            return Err(cfg.error("pool_size", "must be at least 1"));
        }
        if self.flush_interval.as_millis() == 0 {
            return Err(cfg.error("flush_interval", "must be positive"));
        }
        if let Some(Ok(d)) = self.url.as_deref().and_then(literal_dialect) {
            use_copy(d, self.copy).map_err(|e| cfg.error("copy", e))?;
        }
        Ok(SinkSettings {
            url,
            table,
            mode: self.mode,
            key: self.key,
            columns,
            sql: self.sql,
            batch_size: self.batch_size,
            max_batch_size,
            flush_interval: self.flush_interval.as_std(),
            retry: self.retry,
            pool_size: self.pool_size,
            copy: self.copy,
            connect_timeout: self.connect_timeout.as_std(),
            on_error: self.on_error,
        })
    }
}

#[derive(Debug, Clone)]
pub struct SourceSettings {
    pub url: UrlSource,
    pub query: String,
    pub fetch_size: usize,
    pub retry: RetryPolicy,
    pub connect_timeout: std::time::Duration,
}

impl ConnectorConfig for JdbcSourceConfig {
    type Settings = SourceSettings;

    fn resolve(self, cfg: &NodeConfig) -> Result<SourceSettings> {
        let url = UrlSource::from_config(
            cfg,
            self.url.as_deref(),
            self.url_env.as_deref(),
            self.username.as_deref(),
            self.password.as_deref(),
        )?;
        if let Some(Ok(Dialect::Sqlite | Dialect::Mysql)) =
            self.url.as_deref().and_then(literal_dialect)
        {
            return Err(cfg.error(
                "url",
                "the jdbc source reads Postgres only (sqlite:// and mysql:// are for the jdbc sink)",
            ));
        }
        let query = self.query.trim().trim_end_matches(';').trim().to_string();
        if query.is_empty() {
            return Err(cfg.error("query", "must not be empty"));
        }
        if self.fetch_size == 0 {
            return Err(cfg.error("fetch_size", "must be at least 1"));
        }
        Ok(SourceSettings {
            url,
            query,
            fetch_size: self.fetch_size,
            retry: self.retry,
            connect_timeout: self.connect_timeout.as_std(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PGPASS" => Some("s3cr%21t".into()),
            "DATABASE_URL" => Some("postgres://u:pw@h:5432/db".into()),
            _ => None,
        }
    }

    #[test]
    fn urls_take_variables_from_the_environment() {
        assert_eq!(
            substitute("postgres://u:${PGPASS}@h/db", env).unwrap(),
            "postgres://u:s3cr%21t@h/db"
        );
        assert_eq!(substitute("a$$b$c", env).unwrap(), "a$b$c");
        assert!(substitute("postgres://${NOPE}@h", env)
            .unwrap_err()
            .contains("NOPE is not set"));
        assert!(substitute("postgres://${PGPASS@h", env)
            .unwrap_err()
            .contains("unclosed"));
        let source = |from, username: Option<&str>, password: Option<&str>| UrlSource {
            from,
            username: username.map(Into::into),
            password: password.map(Into::into),
        };
        let from_env = source(UrlFrom::Env("DATABASE_URL".into()), None, None);
        assert_eq!(from_env.resolve(env).unwrap(), "postgres://u:pw@h:5432/db");
        assert!(source(UrlFrom::Env("MISSING".into()), None, None)
            .resolve(env)
            .unwrap_err()
            .contains("MISSING"));
        // `username` / `password` settings replace the URL's own (a Connector's Secret).
        let with = source(
            UrlFrom::Template("postgres://weir@db:5432/app".into()),
            None,
            Some("p@ss word"),
        );
        assert_eq!(
            with.resolve(env).unwrap(),
            "postgres://weir:p%40ss%20word@db:5432/app"
        );
        let both = source(UrlFrom::Env("DATABASE_URL".into()), Some("bob"), Some("x"));
        assert_eq!(both.resolve(env).unwrap(), "postgres://bob:x@h:5432/db");
    }

    #[test]
    fn copy_is_postgres_only() {
        assert_eq!(use_copy(Dialect::Postgres, None), Ok(true));
        assert_eq!(use_copy(Dialect::Postgres, Some(false)), Ok(false));
        assert_eq!(use_copy(Dialect::Sqlite, None), Ok(false));
        assert_eq!(use_copy(Dialect::Mysql, Some(false)), Ok(false));
        assert!(use_copy(Dialect::Mysql, Some(true)).is_err());
        assert!(use_copy(Dialect::Sqlite, Some(true))
            .unwrap_err()
            .contains("Postgres-only"));
        assert!(literal_dialect("${env:DB}").is_none());
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://bob:hunter2@db:5432/app"),
            "postgres://bob:***@db:5432/app"
        );
        assert_eq!(redact("postgres://db/app"), "postgres://db/app");
        let s = Scrubber::for_url("postgres://bob:p%40ss@db/app");
        assert_eq!(
            s.scrub("auth failed for p@ss and p%40ss"),
            "auth failed for *** and ***"
        );
        assert_eq!(Scrubber::for_url("postgres://db/app").scrub("x"), "x");
    }

    #[test]
    fn table_names_are_quoted_as_given() {
        let t = TableName::parse("analytics.User_Stats").unwrap();
        assert_eq!(t.quoted(Dialect::Postgres), "\"analytics\".\"User_Stats\"");
        assert_eq!(t.quoted(Dialect::Mysql), "`analytics`.`User_Stats`");
        assert!(TableName::parse("a.b.c").is_err());
        assert!(TableName::parse("").is_err());
    }
}
