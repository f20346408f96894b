//! The `comfyc` command: parses arguments, runs the library, maps the result to an exit code
//! (0 clean, 1 diagnostics with errors, 2 usage or I/O error).

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
