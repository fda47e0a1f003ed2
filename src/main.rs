fn main() -> std::process::ExitCode {
    updspace_events::cli::main()
}
