//! The `weir` command with one more sink: `redis_events`.

fn main() -> std::process::ExitCode {
    let mut registry = weir_runtime::registry::Registry::with_builtins();
    weir_example_redis_sink::register(&mut registry);
    weir_runtime::cli::main_with(registry)
}
