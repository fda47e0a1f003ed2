// The service allocates many small, short-lived values per request (views,
// rows, messages); mimalloc serves them much faster than glibc's malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    updspace_events::cli::main()
}
