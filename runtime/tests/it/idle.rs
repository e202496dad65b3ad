//! `weir run --idle-when-done`, the way a worker pod runs it: a job that ended keeps the process
//! and its admin API up (a container exiting 0 would be restarted into the old spec), and
//! SIGTERM still ends it at once.

use std::time::{Duration, Instant};

use crate::harness::{write, Running};

fn status(admin: &str) -> Option<String> {
    let addr = admin.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    use std::io::{Read, Write};
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

#[test]
fn a_finished_job_idles_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write(
        dir.path(),
        "job.yaml",
        &format!(
            "name: idle\nparallelism: 1\ncheckpoint: {{ interval: 200ms, storage: {state} }}\n\
             sources: [{{ name: gen, type: datagen, count: 100, fields: {{ id: {{ kind: sequence }} }} }}]\n\
             sinks: [{{ name: out, type: blackhole }}]\n",
            state = dir.path().join("state").display()
        ),
    );
    let mut job = Running::start(&spec, &["--idle-when-done"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            job.child.try_wait().unwrap().is_none(),
            "exited instead of idling"
        );
        if status(&job.admin).is_some_and(|b| b.contains("\"state\":\"finished\"")) {
            break;
        }
        assert!(Instant::now() < deadline, "the job never finished");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        job.child.try_wait().unwrap().is_none(),
        "must idle after finishing"
    );
    let t = Instant::now();
    unsafe { libc::kill(job.child.id() as i32, libc::SIGTERM) };
    let out = job.wait();
    assert!(out.status.success(), "{:?}", out.status);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "SIGTERM took {:?}",
        t.elapsed()
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("idle until stopped"), "{err}");
}
