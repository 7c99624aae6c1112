//! The `dagstart` binary: parse the command line, run it, map the result to an exit code.

use clap::Parser as _;

// Loading a large services.toml is allocation-bound; mimalloc halves its time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // The socket-activation step runs before anything else can open a descriptor.
    let mut args = std::env::args_os();
    if args
        .nth(1)
        .is_some_and(|a| a == dagstart::process::LISTEN_EXEC)
    {
        let argv: Vec<_> = args.collect();
        std::process::exit(dagstart::process::exec_with_listen_pid(&argv));
    }
    init_tracing();
    let cli = dagstart::cli::Cli::parse();
    let code = match dagstart::app::execute(cli) {
        Ok(code) => code,
        Err(error) => {
            eprint!(
                "{}",
                dagstart::error::render(&error, &dagstart::error::terminal_handler())
            );
            error.exit_code()
        }
    };
    std::process::exit(code);
}

/// dagstart's own diagnostics go to stderr; LOG_LEVEL (e.g. "debug") sets their verbosity.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LOG_LEVEL")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
