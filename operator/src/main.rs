use clap::{Parser, Subcommand};

/// Tailor's operator.
#[derive(Parser)]
#[command(name = "tailor-operator", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print every CRD as YAML.
    Crds,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crds => print!("{}", tailor_crds::generate::crds_yaml()),
    }
    Ok(())
}
