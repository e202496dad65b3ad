//! Container processes. Each container runs under a small shim (this binary, `test-kubelet
//! shim`), started in its own process group:
//! - the shim enters a private mount namespace (`unshare(CLONE_NEWNS)`, `/` made recursively
//!   private) and bind-mounts the Pod's volumes at their `mountPath`s, so the command sees the
//!   paths of a pod while the host's mounts stay untouched;
//! - it asks for SIGHUP when the kubelet dies (`PR_SET_PDEATHSIG`) and then SIGKILLs its whole
//!   process group, so a killed kubelet (even `kill -9`) leaves no container process behind;
//! - it ignores the SIGTERM that the kubelet sends to the group on deletion (a handler, not
//!   SIG_IGN, so the command does not inherit it), waits for the command and exits with its exit
//!   code, or 128 + the signal that killed it, as a container runtime reports it.
//!
//! Mount points missing on the host are created there as empty directories (or empty files for
//! a file `subPath`): a bind mount needs an existing target. Nothing is written into them on
//! the host.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Stdio;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Bind {
    pub src: PathBuf,
    pub dst: PathBuf,
    pub read_only: bool,
}

/// What the shim runs; passed as one JSON argument.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ShimSpec {
    /// The kubelet's pid: if the kubelet is already gone when the shim starts, it runs nothing.
    pub parent: u32,
    pub binds: Vec<Bind>,
    pub cwd: PathBuf,
    pub argv: Vec<String>,
}

/// Starts `spec` under the shim `shim_exe` in a new process group with exactly `env`, output
/// appended to `log` (or discarded).
pub fn spawn(
    shim_exe: &Path,
    spec: &ShimSpec,
    env: &[(String, String)],
    log: Option<&Path>,
) -> std::io::Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new(shim_exe);
    cmd.arg("shim")
        .arg(serde_json::to_string(spec).expect("ShimSpec serializes"))
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(false);
    match log {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            cmd.stdout(file.try_clone()?).stderr(file);
        }
        None => {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    cmd.spawn()
}

/// Sends `signal` to the process group `pgid` (the shim's pid); a group already gone is fine.
pub fn signal_group(pgid: u32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid as i32), signal);
}

/// Exit code as a container runtime reports it: the code, or 128 + the terminating signal.
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

extern "C" fn kill_group_on_parent_death(_: libc::c_int) {
    // async-signal-safe: one syscall.
    unsafe {
        libc::kill(0, libc::SIGKILL);
    }
}

extern "C" fn ignore(_: libc::c_int) {}

/// The shim's main: never returns.
pub fn shim_main(spec_json: &str) -> ! {
    let code = match run_shim(spec_json) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("test-kubelet shim: {e}");
            // As a runtime reports a container that could not start.
            128
        }
    };
    std::process::exit(code)
}

fn run_shim(spec_json: &str) -> Result<i32, String> {
    use nix::mount::{mount, MsFlags};
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let spec: ShimSpec = serde_json::from_str(spec_json).map_err(|e| format!("bad spec: {e}"))?;
    unsafe {
        let on_death = SigAction::new(
            SigHandler::Handler(kill_group_on_parent_death),
            SaFlags::empty(),
            SigSet::empty(),
        );
        sigaction(Signal::SIGHUP, &on_death).map_err(|e| format!("sigaction: {e}"))?;
        let noop = SigAction::new(
            SigHandler::Handler(ignore),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        sigaction(Signal::SIGTERM, &noop).map_err(|e| format!("sigaction: {e}"))?;
        sigaction(Signal::SIGINT, &noop).map_err(|e| format!("sigaction: {e}"))?;
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGHUP) != 0 {
            return Err("prctl(PR_SET_PDEATHSIG) failed".into());
        }
    }
    if std::os::unix::process::parent_id() != spec.parent {
        return Err("the kubelet is gone; not starting".into());
    }
    // Entered before the mounts, which may hide its path (see below); the child inherits it.
    std::env::set_current_dir(&spec.cwd)
        .map_err(|e| format!("working directory {}: {e}", spec.cwd.display()))?;
    if !spec.binds.is_empty() {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
            .map_err(|e| format!("unshare(CLONE_NEWNS) (needs root): {e}"))?;
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| format!("making / private: {e}"))?;
        // Every source is opened before anything is mounted: a mount at a container path
        // under which a later source lives on this host (an emptyDir at /tmp while the
        // kubelet's state is in /tmp) would hide it. A real kubelet's sources are outside the
        // container's filesystem; these fds play that part.
        let mut sources = Vec::new();
        for b in &spec.binds {
            use std::os::unix::fs::OpenOptionsExt;
            let f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH)
                .open(&b.src)
                .map_err(|e| format!("volume source {}: {e}", b.src.display()))?;
            let is_dir = f
                .metadata()
                .map_err(|e| format!("volume source {}: {e}", b.src.display()))?
                .is_dir();
            sources.push((f, is_dir));
        }
        for (b, (src, src_is_dir)) in spec.binds.iter().zip(&sources) {
            let src_is_dir = *src_is_dir;
            if std::fs::symlink_metadata(&b.dst).is_err() {
                if src_is_dir {
                    std::fs::create_dir_all(&b.dst)
                } else {
                    if let Some(parent) = b.dst.parent() {
                        std::fs::create_dir_all(parent)
                            .map_err(|e| format!("mkdir {}: {e}", parent.display()))?;
                    }
                    std::fs::write(&b.dst, b"")
                }
                .map_err(|e| format!("creating mount point {}: {e}", b.dst.display()))?;
            }
            let fd_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(src));
            mount(
                Some(fd_path.as_str()),
                &b.dst,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| format!("bind {} at {}: {e}", b.src.display(), b.dst.display()))?;
            if b.read_only {
                let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
                mount(None::<&str>, &b.dst, None::<&str>, flags, None::<&str>)
                    .map_err(|e| format!("read-only remount of {}: {e}", b.dst.display()))?;
            }
        }
    }
    let (program, args) = spec.argv.split_first().ok_or("empty command")?;
    let mut child = std::process::Command::new(program)
        .args(args)
        .spawn()
        .map_err(|e| format!("exec {program:?}: {e}"))?;
    let status = child.wait().map_err(|e| format!("wait: {e}"))?;
    Ok(exit_code(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_as_a_runtime_reports_them() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(
            exit_code(std::process::ExitStatus::from_raw(libc::SIGKILL)),
            137
        );
        assert_eq!(
            exit_code(std::process::ExitStatus::from_raw(libc::SIGTERM)),
            143
        );
    }

    #[test]
    fn the_spec_round_trips_as_json() {
        let spec = ShimSpec {
            parent: 1,
            binds: vec![Bind {
                src: "/a".into(),
                dst: "/b".into(),
                read_only: true,
            }],
            cwd: "/".into(),
            argv: vec!["sh".into(), "-c".into(), "echo \"$X\"".into()],
        };
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<ShimSpec>(&json).unwrap(), spec);
    }
}
