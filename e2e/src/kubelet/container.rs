//! One container of a Pod: start (env, argv, mounts), probes, exit, restart with back-off, stop.

use super::backoff::{should_restart, CrashBackoff};
use super::env::{container_argv, container_env};
use super::pod::{fetch_objects, PodCtx};
use super::probe::{ProbeTiming, ProbeTracker, Verdict};
use super::process::{self, Bind, ShimSpec};
use super::status::{State, Terminated};
use chrono::Utc;
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use nix::sys::signal::Signal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// How the Pod asks its containers to end.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stop {
    No,
    /// SIGTERM to the process group, SIGKILL after the grace period.
    Graceful(Duration),
    /// SIGKILL (the Pod is already gone from the API).
    Now,
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything a start needs, resolved.
struct Launch {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    binds: Vec<Bind>,
    cwd: PathBuf,
}

/// The service variables every container gets: the API server's loopback address.
fn service_env(ctx: &PodCtx) -> Vec<(String, String)> {
    let (h, p) = (&ctx.kubelet.api_host, ctx.kubelet.api_port);
    vec![
        ("KUBERNETES_SERVICE_HOST".into(), h.clone()),
        ("KUBERNETES_SERVICE_PORT".into(), p.to_string()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), p.to_string()),
        ("KUBERNETES_PORT".into(), format!("tcp://{h}:{p}")),
        (format!("KUBERNETES_PORT_{p}_TCP"), format!("tcp://{h}:{p}")),
        (format!("KUBERNETES_PORT_{p}_TCP_PROTO"), "tcp".into()),
        (format!("KUBERNETES_PORT_{p}_TCP_PORT"), p.to_string()),
        (format!("KUBERNETES_PORT_{p}_TCP_ADDR"), h.clone()),
    ]
}

/// Resolves the environment, argv, mounts and working directory of a start; an error is the
/// container's CreateContainerConfigError / CreateContainerError message.
async fn prepare(ctx: &PodCtx, c: &Container) -> Result<Launch, (&'static str, String)> {
    let k = &ctx.kubelet;
    let config_err = |m: String| ("CreateContainerConfigError", m);
    let objects = fetch_objects(k, &ctx.pod)
        .await
        .map_err(|e| config_err(format!("reading configmaps/secrets: {e}")))?;
    let env =
        container_env(&ctx.pod, c, &ctx.facts, &objects, &service_env(ctx)).map_err(config_err)?;
    let image_ref = c.image.clone().unwrap_or_default();
    let image = match k.dockerfile.image(&image_ref) {
        Ok(img) => Some(img.clone()),
        Err(_) if c.command.as_ref().is_some_and(|cmd| !cmd.is_empty()) => None,
        Err(e) => return Err(("CreateContainerError", format!("no command given and {e}"))),
    };
    let image = image.unwrap_or_default();
    let argv = container_argv(c, &image.entrypoint, &image.cmd, &env);
    if argv.is_empty() {
        return Err((
            "CreateContainerError",
            format!("image {image_ref:?} has no ENTRYPOINT or CMD and the container no command"),
        ));
    }
    // The process environment: the image's ENV under the container's, PATH with --bin-dir first.
    // HOME is the Pod's scratch directory unless the image or container sets one, so tools that
    // keep caches there (kubectl) do not write into the host's /root.
    let home = ctx.scratch.display().to_string();
    let mut full: Vec<(String, String)> =
        vec![("HOSTNAME".into(), ctx.name.clone()), ("HOME".into(), home)];
    for (key, value) in image.env.iter().chain(env.iter()) {
        full.retain(|(n, _)| n != key);
        full.push((key.clone(), value.clone()));
    }
    let path = full
        .iter()
        .find(|(n, _)| n == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| DEFAULT_PATH.into());
    let path = match &k.cfg.bin_dir {
        Some(bin) => format!("{}:{path}", bin.display()),
        None => path,
    };
    full.retain(|(n, _)| n != "PATH");
    full.push(("PATH".into(), path));
    let mut binds = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let dir = ctx.volume_dirs.get(&m.name).ok_or_else(|| {
            (
                "CreateContainerConfigError",
                format!("volumeMount {:?}: no such volume", m.name),
            )
        })?;
        let host_dir = match ctx
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .and_then(|vs| vs.iter().find(|v| v.name == m.name))
        {
            Some(v) if v.host_path.is_some() => {
                PathBuf::from(&v.host_path.as_ref().expect("checked").path)
            }
            Some(v) if v.persistent_volume_claim.is_some() => {
                let claim = &v
                    .persistent_volume_claim
                    .as_ref()
                    .expect("checked")
                    .claim_name;
                k.cfg.state_dir.join("claims").join(&ctx.ns).join(claim)
            }
            _ => dir.clone(),
        };
        let src = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            // As in a kubelet, a subPath is resolved once (through ..data) and not refreshed.
            Some(sub) => host_dir.join(sub).canonicalize().map_err(|e| {
                (
                    "CreateContainerConfigError",
                    format!("volumeMount {:?} subPath {sub:?}: {e}", m.name),
                )
            })?,
            None => host_dir,
        };
        binds.push(Bind {
            src,
            dst: PathBuf::from(&m.mount_path),
            read_only: m.read_only == Some(true),
        });
    }
    let cwd = [c.working_dir.clone(), image.workdir.clone()]
        .into_iter()
        .flatten()
        .map(PathBuf::from)
        .find(|p| p.is_dir())
        .unwrap_or_else(|| ctx.scratch.clone());
    Ok(Launch {
        argv,
        env: full,
        binds,
        cwd,
    })
}

/// Runs one container until the Pod stops it or its restart policy says it is done.
pub(crate) async fn run_container(ctx: Arc<PodCtx>, index: usize, mut stop: watch::Receiver<Stop>) {
    let c = ctx.pod.spec.as_ref().expect("pod spec").containers[index].clone();
    let k = ctx.kubelet.clone();
    let restart_policy = ctx.pod.spec.as_ref().and_then(|s| s.restart_policy.clone());
    let mut backoff = CrashBackoff::new(k.cfg.backoff_base, k.cfg.backoff_max);
    let log = k.log_path(&ctx.ns, &ctx.name, &c.name);
    if let Some(dir) = log.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let set_state = |state: State| ctx.update(|r| r.containers[index].state = state);
    let mut starts: u32 = 0;
    loop {
        if *stop.borrow() != Stop::No {
            return;
        }
        let launch = match prepare(&ctx, &c).await {
            Ok(l) => l,
            Err((reason, message)) => {
                tracing::warn!(pod = %ctx.name, container = %c.name, %message, "cannot start");
                set_state(State::Waiting {
                    reason: reason.into(),
                    message: Some(message),
                });
                if wait_or_stop(&mut stop, Duration::from_secs(2)).await {
                    return;
                }
                continue;
            }
        };
        starts += 1;
        let header = format!(
            "--- test-kubelet: start #{starts} of container {} in pod {}/{} at {}: {:?}\n",
            c.name,
            ctx.ns,
            ctx.name,
            Utc::now().to_rfc3339(),
            launch.argv
        );
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| std::io::Write::write_all(&mut f, header.as_bytes()));
        let spec = ShimSpec {
            parent: std::process::id(),
            binds: launch.binds.clone(),
            cwd: launch.cwd.clone(),
            argv: launch.argv.clone(),
        };
        let mut child = match process::spawn(&k.cfg.shim_exe, &spec, &launch.env, Some(&log)) {
            Ok(child) => child,
            Err(e) => {
                set_state(State::Waiting {
                    reason: "CreateContainerError".into(),
                    message: Some(e.to_string()),
                });
                if wait_or_stop(&mut stop, Duration::from_secs(2)).await {
                    return;
                }
                continue;
            }
        };
        let pgid = child.id().expect("a running child has a pid");
        let started_at = Utc::now();
        let started = Instant::now();
        ctx.update(|r| {
            let rec = &mut r.containers[index];
            // As in a kubelet, the count goes up when the new container starts.
            if starts > 1 {
                rec.restart_count += 1;
            }
            rec.state = State::Running { started_at };
            rec.ready = c.readiness_probe.is_none() && c.startup_probe.is_none();
            rec.started = c.startup_probe.is_none();
        });
        let (kill_tx, mut kill_rx) = mpsc::channel::<String>(1);
        let probes = tokio::spawn(run_probes(ctx.clone(), index, c.clone(), launch, kill_tx));
        // Wait for the exit, a failed liveness/startup probe, or the Pod's stop.
        let mut message = None;
        let mut stopping = false;
        let status = tokio::select! {
            status = child.wait() => status,
            Some(why) = kill_rx.recv() => {
                tracing::info!(pod = %ctx.name, container = %c.name, %why, "killing container");
                message = Some(why);
                terminate(&mut child, pgid, grace_of_pod(&ctx)).await
            }
            _ = stop.changed() => {
                stopping = true;
                let how = *stop.borrow();
                let grace = match how {
                    Stop::Graceful(grace) => grace,
                    _ => Duration::ZERO,
                };
                terminate(&mut child, pgid, grace).await
            }
        };
        probes.abort();
        let exit_code = status.map(process::exit_code).unwrap_or(128);
        // Stragglers that left the shim's wait (daemonized children) go with the group.
        process::signal_group(pgid, Signal::SIGKILL);
        let terminated = Terminated {
            exit_code,
            reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
            message,
            started_at: Some(started_at),
            finished_at: Utc::now(),
        };
        tracing::info!(pod = %ctx.name, container = %c.name, exit_code, "container exited");
        if stopping
            || *stop.borrow() != Stop::No
            || !should_restart(restart_policy.as_deref(), exit_code)
        {
            ctx.update(|r| {
                let rec = &mut r.containers[index];
                rec.state = State::Terminated(terminated);
                rec.ready = false;
            });
            // A finished container stays finished; the Pod worker ends it on deletion.
            return;
        }
        let delay = backoff.delay_after(started.elapsed());
        ctx.update(|r| {
            let rec = &mut r.containers[index];
            rec.last_terminated = Some(terminated);
            rec.ready = false;
            rec.started = false;
            rec.state = State::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: Some(format!(
                    "back-off {}s restarting failed container={} pod={}",
                    delay.as_secs(),
                    c.name,
                    ctx.name
                )),
            };
        });
        if wait_or_stop(&mut stop, delay).await {
            ctx.update(|r| {
                let rec = &mut r.containers[index];
                if let Some(t) = rec.last_terminated.clone() {
                    rec.state = State::Terminated(t);
                }
            });
            return;
        }
    }
}

fn grace_of_pod(ctx: &PodCtx) -> Duration {
    let secs = ctx
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30);
    Duration::from_secs(secs.max(0) as u64)
}

/// Waits `delay`; true when the Pod asked to stop meanwhile.
async fn wait_or_stop(stop: &mut watch::Receiver<Stop>, delay: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + delay;
    loop {
        if *stop.borrow() != Stop::No {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return *stop.borrow() != Stop::No,
            changed = stop.changed() => if changed.is_err() { return true; },
        }
    }
}

/// SIGTERM to the process group, SIGKILL after `grace`; returns the exit status.
async fn terminate(
    child: &mut tokio::process::Child,
    pgid: u32,
    grace: Duration,
) -> std::io::Result<std::process::ExitStatus> {
    if !grace.is_zero() {
        process::signal_group(pgid, Signal::SIGTERM);
        if let Ok(status) = tokio::time::timeout(grace, child.wait()).await {
            return status;
        }
    }
    process::signal_group(pgid, Signal::SIGKILL);
    child.wait().await
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Startup,
    Liveness,
    Readiness,
}

/// Runs the startup probe, then liveness and readiness; readiness goes to the record, a failed
/// startup or liveness probe asks (through `kill`) for the container to be restarted.
async fn run_probes(
    ctx: Arc<PodCtx>,
    index: usize,
    c: Container,
    launch: Launch,
    kill: mpsc::Sender<String>,
) {
    let launch = Arc::new(launch);
    if let Some(p) = c.startup_probe.clone() {
        let (tx, mut rx) = mpsc::channel(4);
        let task = tokio::spawn(probe_loop(
            ctx.clone(),
            c.clone(),
            launch.clone(),
            p,
            Kind::Startup,
            tx,
        ));
        while let Some(v) = rx.recv().await {
            match v {
                Verdict::Success => break,
                Verdict::Failure => {
                    let _ = kill
                        .send(format!(
                            "Container {} failed startup probe, will be restarted",
                            c.name
                        ))
                        .await;
                    return;
                }
                Verdict::Unknown => {}
            }
        }
        task.abort();
        ctx.update(|r| {
            r.containers[index].started = true;
            r.containers[index].ready = c.readiness_probe.is_none();
        });
    }
    let (tx, mut rx) = mpsc::channel(4);
    let mut tasks = Vec::new();
    if let Some(p) = c.liveness_probe.clone() {
        tasks.push(tokio::spawn(probe_loop(
            ctx.clone(),
            c.clone(),
            launch.clone(),
            p,
            Kind::Liveness,
            tx.clone(),
        )));
    }
    if let Some(p) = c.readiness_probe.clone() {
        let (rtx, mut rrx) = mpsc::channel(4);
        tasks.push(tokio::spawn(probe_loop(
            ctx.clone(),
            c.clone(),
            launch.clone(),
            p,
            Kind::Readiness,
            rtx,
        )));
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(v) = rrx.recv().await {
                ctx.update(|r| r.containers[index].ready = v == Verdict::Success);
            }
        }));
    }
    drop(tx);
    while let Some(verdict) = rx.recv().await {
        if verdict == Verdict::Failure {
            let why = format!(
                "Container {} failed liveness probe, will be restarted",
                c.name
            );
            let _ = kill.send(why).await;
            break;
        }
    }
    // Keep readiness running until the container task aborts this one.
    for t in tasks {
        let _ = t.await;
    }
}

/// Probes on the probe's schedule and sends each verdict change.
async fn probe_loop(
    ctx: Arc<PodCtx>,
    c: Container,
    launch: Arc<Launch>,
    probe: Probe,
    kind: Kind,
    verdicts: mpsc::Sender<Verdict>,
) {
    let timing = ProbeTiming::from(&probe);
    let mut tracker = ProbeTracker::new(timing);
    tokio::time::sleep(timing.initial_delay).await;
    loop {
        // The probe bounds itself by `timeout` (and kills an exec probe's processes); this outer
        // bound only guards against a hang.
        let ok = match tokio::time::timeout(
            timing.timeout + Duration::from_secs(1),
            probe_once(&ctx, &c, &launch, &probe, timing.timeout),
        )
        .await
        {
            Ok(Ok(())) => true,
            Ok(Err(why)) => {
                tracing::debug!(pod = %ctx.name, container = %c.name, ?kind, %why, "probe failed");
                false
            }
            Err(_) => false,
        };
        if let Some(v) = tracker.observe(ok) {
            if verdicts.send(v).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(timing.period).await;
    }
}

fn resolve_port(c: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).map_err(|_| format!("port {p} out of range")),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port as u16)
            .ok_or_else(|| format!("no container port named {name:?}")),
    }
}

/// One probe: httpGet (200–399 on the pod IP), tcpSocket (connects), exec (exit 0 in the
/// container's mounts and environment).
async fn probe_once(
    ctx: &PodCtx,
    c: &Container,
    launch: &Launch,
    probe: &Probe,
    timeout: Duration,
) -> Result<(), String> {
    let pod_ip = ctx.facts.pod_ip.clone();
    if let Some(h) = &probe.http_get {
        let port = resolve_port(c, &h.port)?;
        let host = h.host.clone().filter(|h| !h.is_empty()).unwrap_or(pod_ip);
        let scheme = h.scheme.as_deref().unwrap_or("HTTP").to_ascii_lowercase();
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        let url = format!("{scheme}://{host}:{port}{path}");
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .build()
            .map_err(|e| e.to_string())?;
        let mut req = client.get(&url).header("User-Agent", "kube-probe/1.34");
        for hdr in h.http_headers.iter().flatten() {
            req = req.header(&hdr.name, &hdr.value);
        }
        let resp = req.send().await.map_err(|e| format!("GET {url}: {e}"))?;
        let code = resp.status().as_u16();
        return if (200..400).contains(&code) {
            Ok(())
        } else {
            Err(format!("GET {url}: {code}"))
        };
    }
    if let Some(t) = &probe.tcp_socket {
        let port = resolve_port(c, &t.port)?;
        let host = t.host.clone().filter(|h| !h.is_empty()).unwrap_or(pod_ip);
        tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("connect {host}:{port}: {e}"))?;
        return Ok(());
    }
    if let Some(e) = &probe.exec {
        let argv = e.command.clone().unwrap_or_default();
        if argv.is_empty() {
            return Err("exec probe without command".into());
        }
        let spec = ShimSpec {
            parent: std::process::id(),
            binds: launch.binds.clone(),
            cwd: launch.cwd.clone(),
            argv,
        };
        let mut child = process::spawn(&ctx.kubelet.cfg.shim_exe, &spec, &launch.env, None)
            .map_err(|e| e.to_string())?;
        let pgid = child.id().unwrap_or(0);
        return match tokio::time::timeout(timeout, child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(format!(
                "exec probe exited with {}",
                process::exit_code(status)
            )),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => {
                process::signal_group(pgid, Signal::SIGKILL);
                let _ = child.wait().await;
                Err("exec probe timed out".into())
            }
        };
    }
    Err("unsupported probe (supported: httpGet, tcpSocket, exec)".into())
}
