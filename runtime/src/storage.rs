//! Opening object stores from a location string: a local directory or a URL (`s3://bucket/prefix`,
//! `hdfs://namenode:port/path` with the `hdfs` feature).

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::ObjectStore;
use url::Url;

use crate::error::{Error, Result};

/// A location: either a local directory or an object store URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Local(std::path::PathBuf),
    Url(Url),
}

impl Location {
    pub fn parse(text: &str) -> Result<Location> {
        let text = text.trim();
        if let Some(rest) = text.strip_prefix("file://") {
            return Ok(Location::Local(rest.into()));
        }
        if text.contains("://") {
            let url =
                Url::parse(text).map_err(|e| Error::Other(format!("invalid URL {text:?}: {e}")))?;
            return Ok(Location::Url(url));
        }
        Ok(Location::Local(text.into()))
    }
}

/// Builds an S3 client for `url` from the environment (`AWS_*`) and explicit options
/// (`aws_endpoint`, `aws_allow_http`, `aws_region`, …). The path part is the key prefix.
pub fn s3(url: &Url, options: &BTreeMap<String, String>) -> Result<(Arc<AmazonS3>, Path)> {
    let mut builder = AmazonS3Builder::from_env().with_url(url.as_str());
    let mut has_endpoint = false;
    for (k, v) in options {
        let key = k
            .parse()
            .map_err(|e| Error::Other(format!("unknown S3 option {k:?}: {e}")))?;
        has_endpoint |= k.contains("endpoint");
        builder = builder.with_config(key, v);
    }
    // A plain-http endpoint (moto, MinIO) must be allowed explicitly; do it when the URL says http.
    if let Ok(ep) = std::env::var("AWS_ENDPOINT_URL").or_else(|_| std::env::var("AWS_ENDPOINT")) {
        if !has_endpoint {
            builder = builder.with_endpoint(&ep);
        }
        if ep.starts_with("http://") {
            builder = builder.with_allow_http(true);
        }
    }
    if options
        .get("aws_endpoint")
        .or(options.get("endpoint"))
        .is_some_and(|e| e.starts_with("http://"))
    {
        builder = builder.with_allow_http(true);
    }
    let store = builder
        .build()
        .map_err(|e| Error::store(format!("opening {url}"), e))?;
    let prefix = Path::from(url.path().trim_start_matches('/'));
    Ok((Arc::new(store), prefix))
}

/// Whether `url` names HDFS.
pub fn is_hdfs(url: &Url) -> bool {
    url.scheme() == "hdfs"
}

/// An HDFS client for `hdfs://namenode:port/path` (or `hdfs://nameservice/path` with the HA
/// settings in `options` or in `HADOOP_CONF_DIR`'s `core-site.xml`/`hdfs-site.xml`); `options`
/// are Hadoop configuration keys (`dfs.ha.namenodes.ns`, `dfs.client.use.datanode.hostname`, …).
/// Returns the client and the URL's absolute path.
#[cfg(feature = "hdfs")]
pub fn hdfs(
    url: &Url,
    options: &BTreeMap<String, String>,
) -> Result<(hdfs_native::Client, String)> {
    let authority = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) if !h.is_empty() => format!("hdfs://{h}:{p}"),
        (Some(h), None) if !h.is_empty() => format!("hdfs://{h}"),
        _ => {
            return Err(Error::Other(format!(
                "{url}: an HDFS URL needs a namenode (hdfs://host:port/path) or a nameservice"
            )))
        }
    };
    let client = hdfs_native::ClientBuilder::new()
        .with_url(&authority)
        .with_config(options.clone())
        .build()
        .map_err(|e| Error::Other(format!("opening {authority}: {e}")))?;
    let path = match url.path().trim_end_matches('/') {
        "" => "/".to_string(),
        p => p.to_string(),
    };
    Ok((client, path))
}

#[cfg(not(feature = "hdfs"))]
fn hdfs_unavailable(url: &Url) -> Error {
    Error::Other(format!(
        "{url}: this weir was built without the `hdfs` feature"
    ))
}

/// Opens any store; local directories are created (and must be writable).
pub fn open(
    location: &Location,
    options: &BTreeMap<String, String>,
) -> Result<(Arc<dyn ObjectStore>, Path)> {
    match location {
        Location::Local(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating directory {}", dir.display()), e))?;
            // A checkpoint is the only copy of what was acknowledged upstream: it must outlive
            // a power loss, not only a killed process (the file sink syncs its parts likewise).
            // Deleting an old checkpoint's files would otherwise leave its directory behind,
            // one per checkpoint, and every restart lists them all.
            let fs = LocalFileSystem::new_with_prefix(dir)
                .map_err(|e| Error::store(format!("opening directory {}", dir.display()), e))?
                .with_fsync(true)
                .with_automatic_cleanup(true);
            Ok((Arc::new(fs), Path::default()))
        }
        Location::Url(url) if url.scheme() == "s3" || url.scheme() == "s3a" => {
            let (s3, prefix) = s3(url, options)?;
            Ok((s3 as Arc<dyn ObjectStore>, prefix))
        }
        #[cfg(feature = "hdfs")]
        Location::Url(url) if is_hdfs(url) => {
            let (client, path) = hdfs(url, options)?;
            let store = hdfs_native_object_store::HdfsObjectStore::new(client);
            Ok((Arc::new(store), Path::from(path.trim_start_matches('/'))))
        }
        #[cfg(not(feature = "hdfs"))]
        Location::Url(url) if is_hdfs(url) => Err(hdfs_unavailable(url)),
        Location::Url(url) => {
            let (store, prefix) = object_store::parse_url_opts(url, options.iter())
                .map_err(|e| Error::store(format!("opening {url}"), e))?;
            Ok((Arc::from(store), prefix))
        }
    }
}

/// `weir validate --connect`: the location answers, without writing anything. A URL's store
/// must list under its prefix (a missing bucket, refused credentials or an unreachable
/// endpoint fail here); a local directory, or the nearest existing directory above it, must
/// be writable (the job creates the rest).
pub async fn check_reachable(text: &str, options: &BTreeMap<String, String>) -> Result<String> {
    match Location::parse(text)? {
        Location::Local(dir) => {
            let existing = dir
                .ancestors()
                .find(|a| a.as_os_str().is_empty() || a.exists())
                .map(|a| {
                    if a.as_os_str().is_empty() {
                        std::path::Path::new(".")
                    } else {
                        a
                    }
                })
                .unwrap_or(&dir);
            let meta = std::fs::metadata(existing)
                .map_err(|e| Error::io(format!("reading {}", existing.display()), e))?;
            if !meta.is_dir() {
                return Err(Error::Other(format!(
                    "{text}: {} is not a directory",
                    existing.display()
                )));
            }
            if meta.permissions().readonly() {
                return Err(Error::Other(format!(
                    "{text}: {} is read-only",
                    existing.display()
                )));
            }
            Ok(format!("{text}: local directory, writable"))
        }
        #[cfg(feature = "hdfs")]
        Location::Url(url) if is_hdfs(&url) => {
            // The client retries a namenode that refuses 15 times, sleeping up to 15 s between
            // tries (Hadoop's defaults, right for a running job); a check says "no" in seconds.
            let mut options = options.clone();
            options
                .entry("dfs.client.failover.max.attempts".into())
                .or_insert_with(|| "2".into());
            let (client, path) = hdfs(&url, &options)?;
            check_hdfs(&client, text, &path).await
        }
        location => {
            let (store, prefix) = open(&location, options)?;
            let listing = store
                .list_with_delimiter(Some(&prefix))
                .await
                .map_err(|e| Error::store(format!("listing {text}"), e))?;
            Ok(format!(
                "{text}: answers ({} objects, {} prefixes at the top)",
                listing.objects.len(),
                listing.common_prefixes.len()
            ))
        }
    }
}

/// HDFS answers when the path, or the nearest directory above it that exists, is a directory
/// (the job creates the rest); nothing is written.
#[cfg(feature = "hdfs")]
async fn check_hdfs(client: &hdfs_native::Client, text: &str, path: &str) -> Result<String> {
    let mut at = std::path::Path::new(path);
    loop {
        let shown = at.display().to_string();
        match client.get_file_info(&shown).await {
            Ok(status) if status.isdir => {
                return Ok(match shown == path {
                    true => format!("{text}: HDFS answers, directory exists"),
                    false => {
                        format!("{text}: HDFS answers, {shown} exists (the job creates the rest)")
                    }
                })
            }
            Ok(_) => {
                return Err(Error::Other(format!(
                    "{text}: {shown} is a file, not a directory"
                )))
            }
            Err(hdfs_native::HdfsError::FileNotFound(_)) => match at.parent() {
                Some(parent) => at = parent,
                None => return Err(Error::Other(format!("{text}: HDFS has no root directory"))),
            },
            Err(e) => return Err(Error::Other(format!("{text}: HDFS does not answer: {e}"))),
        }
    }
}

/// Joins `rel` ("a/b/c") under `prefix`.
pub fn join(prefix: &Path, rel: &str) -> Path {
    let mut p = prefix.clone();
    for part in rel.split('/').filter(|s| !s.is_empty()) {
        p = p.clone().join(part);
    }
    p
}
