//! Spawning `weir`, writing specs, and counting what the sinks made visible.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use weir_runtime::testkit::{exactly_once, Kill, Killed};

/// This build's `weir` running `spec`, in the crash-test kit that connector authors use too
/// (`weir_runtime::testkit`): weir's own crash tests and theirs share one machinery.
pub fn weir_job(spec: &Path) -> weir_runtime::testkit::Job {
    weir_runtime::testkit::Job::new(env!("CARGO_BIN_EXE_weir"), spec).time_limit(RUN_LIMIT)
}

/// The first half of a crash test: `spec`'s runs ended as `kill` says (a crash at a checkpoint
/// step, or kills at random moments).
pub fn run_until_killed(spec: &Path, kill: Kill) -> Killed {
    weir_job(spec).run_until_killed(&kill)
}

/// The second half: `spec` run once more (with `args`), resuming from its newest checkpoint; it
/// must now finish (exit 0) by itself. Returns its log.
pub fn restart_to_end(spec: &Path, args: &[&str]) -> String {
    weir_job(spec).args(args).restart_to_end()
}

/// `n` milliseconds, for kill windows (`ms(150)..ms(650)`).
pub const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn weir() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
    c.env("WEIR_LOG", "warn");
    c
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

pub fn run(spec: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = weir();
    c.arg("run").arg("--quiet").args(args).arg(spec);
    for (k, v) in env {
        c.env(k, v);
    }
    output_within(c, RUN_LIMIT, &format!("weir run {}", spec.display()))
}

/// `weir validate --connect` on `spec` (a 20 s connect timeout, a minute at most in all): its
/// exit code, stdout and stderr.
pub fn validate_connect(spec: &Path) -> (i32, String, String) {
    let mut c = weir();
    c.args(["validate", "--connect", "--connect-timeout", "20s"])
        .arg(spec);
    let o = output_within(c, Duration::from_secs(60), "weir validate --connect");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr(&o),
    )
}

/// No single `weir run` of a test takes this long: past it the job is killed and the test fails
/// with its log, instead of hanging the whole suite.
pub const RUN_LIMIT: Duration = Duration::from_secs(300);

/// Runs `c` to its end like `Command::output`, killing it (and failing) after `limit`.
pub fn output_within(mut c: Command, limit: Duration, what: &str) -> Output {
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read both pipes while waiting, so a chatty child never blocks on a full pipe.
    let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(child.stdout.take().map(|s| Box::new(s) as _));
    let err = drain(child.stderr.take().map(|s| Box::new(s) as _));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = err.join().unwrap_or_default();
            panic!(
                "{what} still running after {limit:?}: killed\n{}",
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every visible (not hidden) file under `dir`, recursively.
pub fn visible_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            out.extend(visible_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// How often each value of `field` occurs in the visible JSON-lines output; every line must parse.
pub fn count_json_field(dir: &Path, field: &str) -> BTreeMap<i64, usize> {
    let mut counts = BTreeMap::new();
    for f in visible_files(dir) {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{} ends in a partial line",
            f.display()
        );
        for (n, line) in text.lines().enumerate() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}:{}: not JSON ({e}): {line}", f.display(), n + 1));
            *counts
                .entry(v[field].as_i64().expect("integer field"))
                .or_insert(0) += 1;
        }
    }
    counts
}

/// Asserts ids 0..n each occur exactly once (no duplicate, none missing, none beyond), naming
/// the first offenders: the kit's [`exactly_once`] as an assertion.
pub fn assert_exactly_once(counts: &BTreeMap<i64, usize>, n: i64) {
    if let Err(e) = exactly_once(counts, n) {
        panic!("not exactly once: {e}");
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `weir run` in the background with its admin API on a known port and a known token.
pub struct Running {
    pub child: Child,
    pub admin: String,
    /// The admin token it was given (WEIR_ADMIN_TOKEN), for `weir savepoint`.
    pub token: String,
    /// stderr as read so far: drained by a thread of its own, since a job that logs more than
    /// a pipe holds (warnings through an outage) would otherwise block on its next log line.
    err: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    pub fn start(spec: &Path, args: &[&str]) -> Running {
        Running::start_with_env(spec, args, &[])
    }

    /// [`Running::start`] with these variables in the job's environment.
    pub fn start_with_env(spec: &Path, args: &[&str], env: &[(&str, &str)]) -> Running {
        let port = free_port();
        let admin = format!("127.0.0.1:{port}");
        let token = format!("test-token-{port}-{}", std::process::id());
        let mut child = weir()
            .envs(env.iter().copied())
            .env("WEIR_ADMIN_TOKEN", &token)
            .arg("run")
            .arg("--quiet")
            .arg("--admin-addr")
            .arg(&admin)
            .args(args)
            .arg(spec)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err: std::sync::Arc<std::sync::Mutex<Vec<u8>>> = Default::default();
        let mut pipe = child.stderr.take().unwrap();
        let sink = err.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = std::io::Read::read(&mut pipe, &mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let mut r = Running {
            child,
            admin: format!("http://{admin}"),
            token,
            err,
            reader: Some(reader),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&admin).is_err() {
            if r.child.try_wait().unwrap().is_some() {
                break; // already ended (e.g. nothing left to do); callers look at the exit
            }
            assert!(Instant::now() < deadline, "admin API never came up");
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    /// `weir savepoint [--stop]` against this job, with its token.
    pub fn savepoint(&self, stop: bool) -> Output {
        let mut c = weir();
        c.env("WEIR_ADMIN_TOKEN", &self.token)
            .args(["savepoint", "--admin", &self.admin]);
        if stop {
            c.arg("--stop");
        }
        c.output().unwrap()
    }

    /// `weir savepoint --stop`, then waits for the job to exit 0; returns the savepoint's path.
    pub fn stop_with_savepoint(self) -> String {
        let o = self.savepoint(true);
        assert!(o.status.success(), "savepoint failed: {}", stderr(&o));
        let path = String::from_utf8(o.stdout).unwrap().trim().to_string();
        let out = self.wait();
        assert!(
            out.status.success(),
            "stop-with-savepoint must exit 0: {}",
            stderr(&out)
        );
        path
    }

    /// SIGKILL; returns false when the process had already exited by itself.
    pub fn kill9(mut self) -> bool {
        let alive = self.child.try_wait().unwrap().is_none();
        if alive {
            self.child.kill().unwrap();
        }
        self.child.wait().unwrap();
        alive
    }

    /// The sum of the series of `name` on the job's `/metrics` page (0 when it has none).
    pub fn metric(&self, name: &str) -> f64 {
        self.metric_with(name, "")
    }

    /// The sum of the series of `name` whose labels contain `label` (e.g. `shard="s/x"`).
    pub fn metric_with(&self, name: &str, label: &str) -> f64 {
        let o = Command::new("curl")
            .args(["-sf", "--max-time", "5", &format!("{}/metrics", self.admin)])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(name)?;
                let labels = rest
                    .strip_prefix('{')
                    .map_or("", |r| r.split('}').next().unwrap_or(""));
                let ours = rest.starts_with(['{', ' ']) && labels.contains(label);
                ours.then(|| l.rsplit(' ').next()?.parse::<f64>().ok())?
            })
            .sum()
    }

    /// Waits until `name` (summed over the series whose labels contain `label`) reaches
    /// `at_least`: a test that acts "part way through" a run waits for progress it can see
    /// instead of sleeping a fixed time, which a loaded machine can outlast or fall short of.
    pub fn wait_for_metric(&self, name: &str, label: &str, at_least: f64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now = self.metric_with(name, label);
            if now >= at_least {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name}{{{label}}} stayed at {now} < {at_least} for 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit status, if the job has ended.
    pub fn child_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Waits for the end, at most [`RUN_LIMIT`] (then the job is killed and the test fails).
    pub fn wait(mut self) -> Output {
        let deadline = Instant::now() + RUN_LIMIT;
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let o = self.output();
                panic!(
                    "the job still ran after {RUN_LIMIT:?}: killed\n{}",
                    stderr(&o)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.output()
    }

    /// The ended process's status and everything it wrote to stderr.
    fn output(&mut self) -> Output {
        let status = self.child.wait().unwrap();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        Output {
            status,
            stdout: Vec::new(),
            stderr: std::mem::take(&mut *self.err.lock().unwrap()),
        }
    }
}

/// The value of a service's env var (`KAFKA_BOOTSTRAP`, `DATABASE_URL`, `REDIS_URL`,
/// `S3_ENDPOINT`, …): taken from the environment when set (e2e/test.sh or the user's own server),
/// otherwise from `e2e/services/<service>.sh up`, which starts a throwaway server once.
pub fn service_env(service: &str, var: &str) -> String {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static STARTED: Mutex<Option<HashMap<String, String>>> = Mutex::new(None);
    if let Ok(v) = std::env::var(var) {
        return v;
    }
    let mut started = STARTED.lock().unwrap_or_else(|e| e.into_inner());
    let env = started.get_or_insert_with(HashMap::new);
    if !env.contains_key(var) {
        let script = format!(
            "{}/../e2e/services/{service}.sh",
            env!("CARGO_MANIFEST_DIR")
        );
        let o = Command::new("bash")
            .arg(&script)
            .arg("up")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{script} up failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            if let Some((k, v)) = line.split_once('=') {
                env.insert(k.to_string(), v.to_string());
            }
        }
    }
    env.get(var)
        .unwrap_or_else(|| panic!("{service}.sh up did not print {var}"))
        .clone()
}

/// An instance of `e2e/services/<service>.sh` of one test's own, in a run directory of its own
/// (for tests that stop, restart or configure a server), removed on drop.
pub struct PrivateService {
    service: String,
    run_dir: PathBuf,
    /// Variables for the script (settings, versions); the service's main variable is removed so
    /// the script starts a server instead of naming the shared one.
    env: Vec<(String, String)>,
    main_var: String,
    /// The value of `main_var` the script printed (`OPENSEARCH_URL=…`).
    pub value: String,
}

impl PrivateService {
    pub fn up(service: &str, main_var: &str, name: &str, env: &[(&str, &str)]) -> PrivateService {
        let run_dir =
            std::env::temp_dir().join(format!("weir-{service}-{name}-{}", std::process::id()));
        let mut s = PrivateService {
            service: service.to_string(),
            run_dir,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            main_var: main_var.to_string(),
            value: String::new(),
        };
        let o = s.script("up");
        assert!(
            o.status.success(),
            "{service}.sh up: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let prefix = format!("{main_var}=");
        s.value = String::from_utf8_lossy(&o.stdout)
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("{service}.sh up did not print {main_var}"))
            .to_string();
        s
    }

    pub fn script(&self, cmd: &str) -> Output {
        let script = format!(
            "{}/../e2e/services/{}.sh",
            env!("CARGO_MANIFEST_DIR"),
            self.service
        );
        Command::new("bash")
            .arg(&script)
            .arg(cmd)
            .env("WEIR_SERVICES_RUN", &self.run_dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove(&self.main_var)
            .output()
            .unwrap()
    }

    /// `stop` or `start`, which must succeed.
    pub fn must(&self, cmd: &str) {
        let o = self.script(cmd);
        assert!(
            o.status.success(),
            "{}.sh {cmd}: {}",
            self.service,
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

impl Drop for PrivateService {
    fn drop(&mut self) {
        let _ = self.script("down");
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

/// A TCP proxy in front of a server, for outages that keep the server's data (moto and Redis
/// keep theirs only in memory, so stopping them is not an outage but a loss). While cut, new
/// connections are accepted and closed at once and open ones are shut down: every client sees
/// its server go away, as when a process dies or a network partitions, until `restore`.
pub struct Proxy {
    pub addr: std::net::SocketAddr,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    pub fn to(target: &str) -> Proxy {
        use std::net::{TcpListener, TcpStream};
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = Proxy {
            addr: listener.local_addr().unwrap(),
            down: Default::default(),
            open: Default::default(),
        };
        let (down, open, target) = (proxy.down.clone(), proxy.open.clone(), target.to_string());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if down.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let mut held = open.lock().unwrap();
                held.push(client.try_clone().unwrap());
                held.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        proxy
    }

    /// `host:port` of the proxy, for URLs.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    /// The outage starts: open connections are shut down and new ones closed at once.
    pub fn cut(&self) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.down.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// SIGTERM: the job finishes the checkpoint in flight and exits.
pub fn stop(job: Running) -> std::process::Output {
    // SAFETY: kill(2) on a child process we own.
    unsafe {
        libc::kill(job.child.id() as i32, libc::SIGTERM);
    }
    job.wait()
}

/// Runs `spec` until `n` ids are visible in `dir/out`, then stops it; fails after `secs`.
pub fn run_until_all(spec: &Path, args: &[&str], dir: &Path, n: i64, secs: u64) {
    let mut job = Running::start(spec, args);
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let seen = count_json_field(&dir.join("out"), "id").len() as i64;
        if seen >= n {
            break;
        }
        if let Some(status) = job.child.try_wait().unwrap() {
            let o = job.wait();
            panic!(
                "the job ended ({status}) with {seen} of {n} ids: {}",
                stderr(&o)
            );
        }
        if Instant::now() > deadline {
            let o = stop(job);
            panic!("only {seen} of {n} ids after {secs}s: {}", stderr(&o));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = stop(job);
    assert!(o.status.success(), "stopping the job: {}", stderr(&o));
}
