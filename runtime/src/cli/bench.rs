use clap::Args;

#[derive(Args)]
pub struct BenchArgs {}

pub fn run(_: BenchArgs) -> u8 {
    eprintln!("error: weir bench is not built yet");
    2
}
