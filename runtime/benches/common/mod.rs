//! What every benchmark needs: numeric settings from the environment and the real services,
//! taken from the environment or started by e2e/services.

/// `name` as a number (`1_000_000` allowed), else `default`.
pub fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) of this process (`libc::RUSAGE_SELF`) or of its waited-for
/// children (`libc::RUSAGE_CHILDREN`).
#[allow(dead_code)] // not every bench counts CPU
pub fn cpu_seconds(who: i32) -> f64 {
    // SAFETY: getrusage only writes the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// CPU seconds process `pid` has used so far (utime + stime from /proc).
#[allow(dead_code)] // not every bench counts a server's CPU
pub fn process_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / hz
}

/// The process listening on TCP `port` of this machine (a server the bench measures), found
/// through the socket's inode in /proc/net/tcp{,6} and the processes' open descriptors.
#[allow(dead_code)] // not every bench counts a server's CPU
pub fn listener_pid(port: u16) -> Option<u32> {
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| t.lines().skip(1).map(str::to_string).collect::<Vec<_>>())
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = f.get(1)?.rsplit_once(':')?.1;
            // State 0A is LISTEN.
            (u16::from_str_radix(local_port, 16).ok()? == port && f.get(3)? == &"0A")
                .then(|| f.get(9).map(|i| format!("socket:[{i}]")))?
        })
        .collect();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|p| {
        let pid: u32 = p.file_name().to_str()?.parse().ok()?;
        std::fs::read_dir(p.path().join("fd"))
            .ok()?
            .flatten()
            .any(|fd| {
                std::fs::read_link(fd.path())
                    .is_ok_and(|l| inodes.iter().any(|i| l.as_os_str() == i.as_str()))
            })
            .then_some(pid)
    })
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
