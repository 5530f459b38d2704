fn main() -> std::process::ExitCode {
    easel::cli::main()
}
