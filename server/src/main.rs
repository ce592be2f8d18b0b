//! `tandem`: one binary for every role of the engine.

fn main() -> anyhow::Result<()> {
    tandem_server::cli::main()
}
