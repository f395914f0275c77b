fn main() -> std::process::ExitCode {
    turnbridge::cli::main()
}
