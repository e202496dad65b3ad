//! A kubelet for tests: registers a Node with a real API server, binds the pending Pods of the
//! namespaces it serves to it (it is the scheduler too), and runs their containers as local
//! processes, each Pod on its own loopback address, with volumes bind-mounted at their
//! mountPaths in a private mount namespace (needs root). See e2e/README.md.

use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;
use weir_e2e::kubelet::{self, Config};

#[derive(Parser, Debug)]
#[command(
    name = "test-kubelet",
    about = "Runs the Pods of a Kubernetes API server as local processes (tests only)"
)]
struct Args {
    /// Admin kubeconfig (default: $KUBECONFIG, as kubectl).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Name of the Node this kubelet registers.
    #[arg(long, default_value = "test-kubelet")]
    node_name: String,
    /// Namespaces whose pending Pods are bound to this Node (comma-separated); empty: all.
    #[arg(long, value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Directory standing in for the image's /usr/local/bin (weir, weir-operator): first on
    /// every container's PATH.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Dockerfile whose stages give images (by their last path segment) ENTRYPOINT, CMD and ENV.
    #[arg(long)]
    dockerfile: Option<PathBuf>,
    /// Logs go to <state-dir>/logs/<namespace>/<pod>/<container>.log; volumes and scratch
    /// directories live here too.
    #[arg(long)]
    state_dir: PathBuf,
    /// Loopback range the Pod IPs come from (one address per Pod).
    #[arg(long, default_value = "127.0.0.0/16")]
    pod_cidr: String,
    /// First CrashLoopBackOff delay (doubles per restart): the kubelet's 10s; tests shorten it.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    backoff_base: Duration,
    /// Longest CrashLoopBackOff delay.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    backoff_max: Duration,
    /// How often ConfigMap/Secret/projected/downwardAPI volumes are refreshed.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    volume_sync: Duration,
}

fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("shim") {
        let spec = argv.get(2).map(String::as_str).unwrap_or("");
        kubelet::process::shim_main(spec);
    }
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let config = match &args.kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path)?;
                kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
            }
            None => kube::Config::infer().await?,
        };
        let cluster_url = config.cluster_url.clone();
        let client = kube::Client::try_from(config)?;
        let cfg = Config {
            node_name: args.node_name,
            namespaces: args.namespaces.into_iter().filter(|n| !n.is_empty()).collect(),
            bin_dir: args.bin_dir.map(std::path::absolute).transpose()?,
            dockerfile: args.dockerfile,
            state_dir: std::path::absolute(&args.state_dir)?,
            pod_cidr: args.pod_cidr,
            backoff_base: args.backoff_base,
            backoff_max: args.backoff_max,
            volume_sync: args.volume_sync,
            shim_exe: std::env::current_exe()?,
        };
        let node = cfg.node_name.clone();
        let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = kubelet::run(client, &cluster_url, cfg) => r,
            _ = term.recv() => {
                // Leave no Node behind: the pod garbage collector then removes its Pods. The
                // container processes end with this process (their shims' parent-death signal).
                let _ = tokio::time::timeout(Duration::from_secs(3), nodes.delete(&node, &Default::default())).await;
                Ok(())
            }
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}
