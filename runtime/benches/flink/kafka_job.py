#!/usr/bin/env python3
"""Flink's side of `cargo bench --bench kafka` (WEIR_BENCH_FLINK=1): Kafka -> Kafka, exactly-once,
1 s checkpoints, parallelism 1, in PyFlink's local MiniCluster (one JVM, the gateway this script
starts). The source is bounded at the topic's latest offsets, like weir's `stop_at: latest`.

  --format raw   the value passes through as bytes (a BYTES column: no charset decoding either)
  --format json  every field of the bench's record is parsed into a typed column and written back

Prints one line `RESULT {json}` with the job's net runtime (job start -> finished, as Flink
reports it), the JVM's CPU seconds (utime + stime from /proc/<pid>/stat, all threads) and peak
RSS (VmHWM), and this driver's own CPU seconds; then stops and reaps the JVM.
Usage: kafka_job.py --jar J --bootstrap B --in-topic T --out-topic T2 --checkpoints DIR [--format raw|json]
"""
import argparse
import json
import os
import resource
import signal
import sys
import time

# The bench's record (runtime/benches/kafka.rs `record`): every field, typed.
JSON_COLUMNS = ("id BIGINT, ts BIGINT, `user` STRING, amount DOUBLE, country STRING, pad STRING")


def java_child_pid():
    """The gateway JVM: the java child of this process."""
    me = os.getpid()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid == me and "java" in open(f"/proc/{d}/cmdline").read():
                return int(d)
        except (OSError, ValueError, IndexError):
            pass
    return None


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        # The command name may hold spaces: fields are counted after its closing parenthesis.
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jar", required=True, help="flink-sql-connector-kafka jar")
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--in-topic", required=True)
    ap.add_argument("--out-topic", required=True)
    ap.add_argument("--checkpoints", required=True, help="checkpoint directory")
    ap.add_argument("--format", default="raw", choices=["raw", "json"])
    a = ap.parse_args()
    from pyflink.table import EnvironmentSettings, TableEnvironment

    t = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    c = t.get_config()
    c.set("parallelism.default", "1")
    c.set("execution.checkpointing.interval", "1s")
    c.set("execution.checkpointing.mode", "EXACTLY_ONCE")
    c.set("execution.checkpointing.dir", "file://" + os.path.abspath(a.checkpoints))
    c.set("pipeline.jars", "file://" + os.path.abspath(a.jar))
    cols = JSON_COLUMNS if a.format == "json" else "v BYTES"
    t.execute_sql(f"""CREATE TEMPORARY TABLE src ({cols}) WITH (
        'connector'='kafka', 'topic'='{a.in_topic}', 'properties.bootstrap.servers'='{a.bootstrap}',
        'properties.group.id'='weir-bench-flink-{a.out_topic}', 'scan.startup.mode'='earliest-offset',
        'scan.bounded.mode'='latest-offset', 'format'='{a.format}')""")
    t.execute_sql(f"""CREATE TEMPORARY TABLE snk ({cols}) WITH (
        'connector'='kafka', 'topic'='{a.out_topic}', 'properties.bootstrap.servers'='{a.bootstrap}',
        'format'='{a.format}', 'sink.delivery-guarantee'='exactly-once',
        'sink.transactional-id-prefix'='weir-bench-{a.out_topic}',
        'properties.transaction.timeout.ms'='60000')""")
    t0 = time.time()
    res = t.execute_sql("INSERT INTO snk SELECT * FROM src")
    jer = res.get_job_client().get_job_execution_result().result()
    wall = time.time() - t0
    pid = java_child_pid()
    if pid is None:
        raise RuntimeError("the gateway JVM is not a child of this process")
    me = resource.getrusage(resource.RUSAGE_SELF)
    out = {
        "net_runtime_s": jer.get_net_runtime() / 1000.0,
        "submit_to_done_s": round(wall, 3),
        "jvm_cpu_s": cpu_seconds(pid),
        "jvm_peak_rss_kib": vm_hwm_kib(pid),
        "driver_cpu_s": me.ru_utime + me.ru_stime,
    }
    print("RESULT " + json.dumps(out), flush=True)
    os.kill(pid, signal.SIGTERM)
    os.waitpid(pid, 0)
    sys.stdout.flush()
    # PyFlink's gateway shutdown hooks would wait for the killed JVM.
    os._exit(0)


if __name__ == "__main__":
    main()
