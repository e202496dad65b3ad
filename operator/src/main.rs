use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use weir_operator::controller::run::{self, Settings};

#[derive(Parser)]
#[command(name = "weir-operator", about = "weir Kubernetes operator")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers (the default).
    Run(Box<RunArgs>),
    /// Print the CRDs as YAML, or write them to crds/generated/ and the Helm chart.
    Crds {
        /// Write the files under this workspace root instead of printing.
        #[arg(long)]
        write: bool,
        #[arg(long, default_value = ".")]
        root: PathBuf,
    },
}

#[derive(Parser)]
struct RunArgs {
    /// Namespaces to watch, comma-separated; empty: all.
    #[arg(
        long,
        env = "WATCH_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    watch_namespaces: Vec<String>,
    /// A label selector (`team=a,tier in (gold)`): only StreamJobs and Connectors it matches are
    /// managed, so several operators can share a namespace or a cluster. Empty: all.
    #[arg(long, env = "JOB_SELECTOR", default_value = "")]
    job_selector: String,
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: String,
    #[arg(long, env = "LEADER_ELECTION", default_value_t = false)]
    leader_election: bool,
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    #[arg(long, env = "LEASE_NAME", default_value = "weir-operator")]
    lease_name: String,
    /// Leader-election identity; default: the pod name in a cluster, else hostname + random.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// `text` or `json`.
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    log_format: String,
    /// Render a NetworkPolicy per StreamJob that lets only this operator (and Prometheus, with
    /// the metrics selectors) reach the workers' admin port.
    #[arg(long, env = "NETWORK_POLICIES", default_value_t = true, action = clap::ArgAction::Set)]
    network_policies: bool,
    /// This operator's pod labels (`k=v,k=v`; the chart's selector labels), for the policies.
    #[arg(
        long,
        env = "OPERATOR_POD_LABELS",
        default_value = "app.kubernetes.io/name=weir-operator"
    )]
    operator_pod_labels: String,
    /// Namespace labels (`k=v,…`) of Prometheus, let in to scrape `/metrics`. Empty with
    /// `--metrics-pod-labels` set: any namespace. Both empty: no scraper is let in.
    #[arg(long, env = "METRICS_NAMESPACE_LABELS", default_value = "")]
    metrics_namespace_labels: String,
    /// Pod labels (`k=v,…`) of Prometheus, let in to scrape `/metrics`.
    #[arg(long, env = "METRICS_POD_LABELS", default_value = "")]
    metrics_pod_labels: String,
}

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LOG_LEVEL")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: in a pod, escape codes would garble `kubectl logs` and break
    // log search on `name=<job>`.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    weir_runtime::tls::install_crypto_provider();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crds { write, root }) => crds(write, &root),
        Some(Command::Run(args)) => serve(*args).await,
        None => serve(RunArgs::parse_from(["weir-operator"])).await,
    }
}

fn crds(write: bool, root: &std::path::Path) -> ExitCode {
    let files = match weir_crds::generated::crd_files() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    for (name, yaml) in files {
        if !write {
            println!("---\n{yaml}");
            continue;
        }
        for dir in weir_crds::generated::OUTPUT_DIRS {
            let path = root.join(dir).join(name);
            let result =
                std::fs::create_dir_all(root.join(dir)).and_then(|_| std::fs::write(&path, &yaml));
            if let Err(e) = result {
                eprintln!("error: writing {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            eprintln!("wrote {}", path.display());
        }
    }
    ExitCode::SUCCESS
}

async fn serve(args: RunArgs) -> ExitCode {
    init_logs(&args.log_format);
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no Kubernetes configuration");
            return ExitCode::FAILURE;
        }
    };
    let network_policies = match network_policy_settings(&args) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "bad setting");
            return ExitCode::FAILURE;
        }
    };
    let settings = Settings {
        network_policies,
        watch_namespaces: args
            .watch_namespaces
            .into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        job_selector: Some(args.job_selector.trim().to_string()).filter(|s| !s.is_empty()),
        metrics_addr: args.metrics_addr,
        leader_election: args.leader_election,
        lease_namespace: args.lease_namespace,
        lease_name: args.lease_name,
        identity: args
            .identity
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(weir_operator::leader::default_identity),
    };
    match run::run(client, settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "operator stopped");
            ExitCode::FAILURE
        }
    }
}

fn network_policy_settings(
    args: &RunArgs,
) -> weir_operator::Result<weir_operator::resources::NetworkPolicySettings> {
    use weir_operator::resources::parse_labels;
    let namespaces = parse_labels("--metrics-namespace-labels", &args.metrics_namespace_labels)?;
    let pods = parse_labels("--metrics-pod-labels", &args.metrics_pod_labels)?;
    Ok(weir_operator::resources::NetworkPolicySettings {
        enabled: args.network_policies,
        operator_namespace: args.lease_namespace.clone(),
        operator_pod_labels: parse_labels("--operator-pod-labels", &args.operator_pod_labels)?,
        metrics_from: (!namespaces.is_empty() || !pods.is_empty()).then_some((namespaces, pods)),
    })
}
