use clap::Args;

use crate::registry::Registry;

#[derive(Args)]
pub struct ValidateArgs {
    /// Pipeline files.
    #[arg(required = true)]
    files: Vec<String>,
}

pub fn run(registry: &Registry, args: ValidateArgs) -> u8 {
    let mut code = 0;
    for file in &args.files {
        let spec = match super::load_spec(file) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                code = 2;
                continue;
            }
        };
        match registry.validate(&spec) {
            Ok(_) => println!(
                "{file}: ok ({} sources, {} transforms, {} sinks, parallelism {})",
                spec.sources.len(),
                spec.transforms.len(),
                spec.sinks.len(),
                spec.parallelism
            ),
            Err(errors) => {
                for e in errors {
                    eprintln!("error: {file}: {e}");
                }
                code = 2;
            }
        }
    }
    code
}
