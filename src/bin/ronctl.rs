//! `ronctl`: the runbooks' name for `macronode ctl` (the same program; a
//! symlink or hard link named `ronctl` to `macronode` does the same).
fn main() -> std::process::ExitCode {
    macronode::cli::main(macronode::config::Profile::Macronode)
}
