fn main() -> std::process::ExitCode {
    macronode::cli::main(macronode::config::Profile::Macronode)
}
