use std::time::Duration;

use clap::Args;
use weir_crds::pipeline::Role;
use weir_crds::PipelineSpec;

use crate::api::NodeConfig;
use crate::error::{Error, Result};
use crate::registry::{dead_letter_config, node_config, Registry};

#[derive(Args)]
pub struct ValidateArgs {
    /// Pipeline files.
    #[arg(required = true)]
    files: Vec<String>,
    /// Also ask the live systems what only they can answer (topics and the broker's transaction
    /// maximum, tables and columns, buckets, indexes, streams, subscriptions), without reading
    /// records, writing or opening transactions. Exit 2 when a setting does not fit what the
    /// system reports, 1 when a system cannot be reached.
    #[arg(long)]
    connect: bool,
    /// How long each node's live check may take.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,
}

pub fn run(registry: &Registry, args: ValidateArgs) -> u8 {
    let mut code = 0;
    for file in &args.files {
        let spec = match super::load_spec(file) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                code = 2;
                continue;
            }
        };
        match registry.validate(&spec) {
            Ok(_) => println!(
                "{file}: ok ({} sources, {} transforms, {} sinks, parallelism {})",
                spec.sources.len(),
                spec.transforms.len(),
                spec.sinks.len(),
                spec.parallelism
            ),
            Err(errors) => {
                for e in errors {
                    eprintln!("error: {file}: {e}");
                }
                code = 2;
                continue;
            }
        }
        if args.connect {
            let checks = super::runtime().block_on(connect(registry, &spec, args.connect_timeout));
            for check in checks {
                match check.outcome {
                    Ok(lines) if lines.is_empty() => {
                        println!("{file}: {}: no live check for this type", check.what)
                    }
                    Ok(lines) => {
                        for line in lines {
                            println!("{file}: {}: {line}", check.what);
                        }
                    }
                    Err(e) => {
                        eprintln!("error: {file}: {}: {e}", check.what);
                        code = code.max(exit_code(&e));
                    }
                }
            }
        }
    }
    code
}

/// A setting that does not fit the live system (a missing topic or table, a refused login) is
/// bad input, like any other spec error; a system that does not answer is not.
fn exit_code(e: &Error) -> u8 {
    match e {
        Error::Spec(_) | Error::Fatal { .. } => 2,
        _ => 1,
    }
}

struct Check {
    /// `checkpoint.storage`, `sinks[0] (out)`.
    what: String,
    outcome: Result<Vec<String>>,
}

/// Every node's live check (and the checkpoint storage's), concurrently, in the spec's order.
async fn connect(registry: &Registry, spec: &PipelineSpec, limit: Duration) -> Vec<Check> {
    let mut configs: Vec<(Role, NodeConfig)> = spec
        .nodes()
        .map(|(role, i, _)| (role, node_config(spec, role, i)))
        .collect();
    for i in 0..spec.sinks.len() {
        if let Some(dl) = dead_letter_config(spec, i) {
            configs.push((Role::Sink, dl));
        }
    }
    let storage = async {
        let cp = &spec.checkpoint;
        Check {
            what: "checkpoint.storage".into(),
            outcome: timed(
                limit,
                crate::storage::check_reachable(&cp.storage, &cp.storage_options),
            )
            .await
            .map(|line| vec![line]),
        }
    };
    let nodes = configs.iter().map(|(role, cfg)| async move {
        let outcome = match role {
            Role::Source => match registry.build_source(cfg) {
                Ok(mut n) => timed(limit, n.preflight(cfg)).await,
                Err(e) => Err(e),
            },
            Role::Transform => match registry.build_transform(cfg) {
                Ok(mut n) => timed(limit, n.preflight(cfg)).await,
                Err(e) => Err(e),
            },
            Role::Sink => match registry.build_sink(cfg) {
                Ok(mut n) => timed(limit, n.preflight(cfg)).await,
                Err(e) => Err(e),
            },
        };
        Check {
            what: format!("{} ({})", cfg.path, cfg.name()),
            outcome,
        }
    });
    let (storage, mut nodes) = futures::join!(storage, futures::future::join_all(nodes));
    nodes.insert(0, storage);
    nodes
}

async fn timed<T>(limit: Duration, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(limit, f).await.unwrap_or_else(|_| {
        Err(Error::Other(format!(
            "no answer within {} (--connect-timeout)",
            humantime::format_duration(limit)
        )))
    })
}
