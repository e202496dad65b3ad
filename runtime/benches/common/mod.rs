//! What every benchmark needs: numeric settings from the environment and the real services,
//! taken from the environment or started by e2e/services.

/// `name` as a number (`1_000_000` allowed), else `default`.
pub fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// `var` from the environment, else from what `e2e/services/<service>.sh up` prints.
#[allow(dead_code)] // not every bench needs a service
pub fn service_env(service: &str, var: &str) -> String {
    if let Ok(v) = std::env::var(var) {
        return v;
    }
    let script = format!(
        "{}/../e2e/services/{service}.sh",
        env!("CARGO_MANIFEST_DIR")
    );
    let o = std::process::Command::new("bash")
        .args([&script, "up"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let prefix = format!("{var}=");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()).map(str::to_string))
        .unwrap_or_else(|| panic!("{service}.sh printed no {var}"))
}

/// Runs the first source of `spec_text` (weir's own datagen) in this process and hands every
/// record to `each`: a raw path gets the very records `weir run` will generate.
#[allow(dead_code)] // not every bench generates its input
pub async fn each_source_record(spec_text: &str, mut each: impl FnMut(weir_runtime::api::Record)) {
    use weir_runtime::api::{NodeContext, SourcePoll};
    let spec: weir_crds::PipelineSpec = serde_norway::from_str(spec_text).unwrap();
    let cfg = weir_runtime::registry::node_config(&spec, weir_crds::pipeline::Role::Source, 0);
    let mut src = weir_runtime::registry::Registry::with_builtins()
        .build_source(&cfg)
        .unwrap();
    let ctx = NodeContext {
        job: "bench".into(),
        node: cfg.name().into(),
        worker: 0,
        parallelism: 1,
        max_parallelism: 128,
        checkpoint: Default::default(),
        metrics: weir_runtime::metrics::NodeMetrics::detached(),
    };
    src.open(&ctx, Default::default()).await.unwrap();
    loop {
        match src.poll().await.unwrap() {
            SourcePoll::Batch(b) => b.records.into_iter().for_each(&mut each),
            SourcePoll::Finished => break,
            SourcePoll::Idle => {}
        }
    }
}

/// Starts `spec` in this process as the one worker of the job, its metrics in `metrics`.
#[allow(dead_code)] // not every bench runs weir in its own process
pub async fn start_in_process(
    spec: weir_crds::PipelineSpec,
    metrics: &weir_runtime::metrics::Metrics,
) -> weir_runtime::engine::RunningJob {
    weir_runtime::engine::start(
        spec,
        &weir_runtime::registry::Registry::with_builtins(),
        weir_runtime::engine::JobOptions {
            workers: vec![0],
            from_savepoint: None,
            allow_non_restored_state: false,
            start_fresh: None,
            metrics: metrics.clone(),
        },
    )
    .await
    .unwrap()
}
