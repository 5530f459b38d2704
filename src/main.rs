fn main() -> std::process::ExitCode {
    easel::base::allocator::configure();
    easel::cli::main()
}
