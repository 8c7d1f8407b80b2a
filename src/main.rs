// Every request allocates a few small objects on one worker thread and
// frees them on another; mimalloc's per-thread heaps handle that better
// than glibc's arenas (see benches/http_objects.sh).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    macronode::cli::main(macronode::config::Profile::Macronode)
}
