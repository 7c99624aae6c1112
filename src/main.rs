//! The `dagstart` binary: parse the command line, run it, map the result to an exit code.

// The system allocator: mimalloc loaded a 100,000-node services.toml in half the time, but a
// supervisor lives for days, and with mimalloc it held 38 MB resident with 200 services
// against 16 MB (and used more CPU to start them).
fn main() {
    run_hidden_step();
    init_tracing();
    let cli = dagstart::cli::args::Cli::parse_args();
    if cli.command.is_one_shot_over_the_config() {
        keep_freed_memory();
    }
    let code = match dagstart::cli::commands::execute(cli) {
        Ok(code) => code,
        Err(error) => {
            let handler = dagstart::cli::error::terminal_handler();
            // A reader that went away (`check 2>&1 | head`) must not turn into a panic.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                dagstart::cli::error::render(&error, &handler).as_bytes(),
            );
            error.exit_code()
        }
    };
    std::process::exit(code);
}

/// For a command that reads services.toml, answers and exits: glibc's malloc would otherwise
/// give memory back to the kernel and take it again many times over while a large file is
/// parsed (a 100,000-node file: a quarter of the time in page faults). Nothing is mapped on
/// its own either, not even the parser's token vector (tens of MB): freed, its pages are
/// reused by the loader and the graph instead of new ones being faulted in (`check` of
/// 100,000 nodes 9 % faster, `graph --format json` 14 %; the peak grows from 268 to 305 MB).
/// The long-lived `run` keeps the default, which holds less memory over days.
#[allow(unsafe_code)]
fn keep_freed_memory() {
    use nix::libc::{M_MMAP_MAX, M_TOP_PAD, M_TRIM_THRESHOLD, mallopt};
    // SAFETY: mallopt only changes malloc's tuning; it is called before any other thread
    // exists, and a refused setting (return 0) leaves the default in place.
    unsafe {
        mallopt(M_MMAP_MAX, 0);
        mallopt(M_TRIM_THRESHOLD, i32::MAX);
        mallopt(M_TOP_PAD, 64 << 20);
    }
}

/// dagstart re-executes itself for two internal steps, and plays the demo service; these run
/// before anything else can open a descriptor, and never return.
fn run_hidden_step() {
    let mut args = std::env::args_os();
    match args.nth(1) {
        Some(step) if step == dagstart::engine::process::LISTEN_EXEC => {
            let argv: Vec<_> = args.collect();
            std::process::exit(dagstart::engine::process::exec_with_listen_pid(&argv));
        }
        Some(step) if step == dagstart::demo::DEMO_STEP => {
            dagstart::demo::main(std::iter::once("demo-svc".into()).chain(args));
        }
        Some(step) if step == dagstart::engine::guardian::GUARDIAN => {
            let run_id = args.next().unwrap_or_default();
            let runtime_dir = args.next().map(std::path::PathBuf::from);
            let cgroup = args.next().map(std::path::PathBuf::from);
            std::process::exit(dagstart::engine::guardian::run_guardian(
                &run_id.to_string_lossy(),
                runtime_dir.as_deref(),
                cgroup.as_deref(),
            ));
        }
        _ => {}
    }
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
