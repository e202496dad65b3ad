// glibc's allocator spent a quarter of the Kafka → Kafka CPU time in malloc/free (records are
// allocated on one thread and freed on another) and held 500 MiB at peak; mimalloc does not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    weir_runtime::cli::main()
}
