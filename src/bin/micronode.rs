//! `micronode`: the same node with edge defaults (amnesia, small limits).
fn main() -> std::process::ExitCode {
    macronode::cli::main(macronode::config::Profile::Micronode)
}
