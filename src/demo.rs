//! demo-svc: the service used by the shipped demo stack and by dagstart's own tests.
//!
//! It lives in the library so that the `dagstart` binary can play it too
//! (`dagstart __demo-svc ...`): `cargo run --release -- run` builds only that binary, and the
//! shipped services.toml must work right after it. `src/bin/demo-svc.rs` is the same program
//! under its own name, for the tests.
//!
//! It pretends to be a real service: it initialises for `--delay`, then listens on `--port`
//! and answers HTTP (200 on every path), printing a ready line. Flags make it misbehave the
//! ways real services do: crash on start, hang, ignore SIGTERM, spawn grandchildren.
//!
//! ```text
//! demo-svc --name backend --delay 1s --port 8010      a service ready after 1 s
//! demo-svc --name migrate --delay 300ms --oneshot     a component: works 300 ms, exits 0
//! ```

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "demo-svc",
    about = "A configurable fake service for demos and tests"
)]
struct Args {
    /// Name used in output and records.
    #[arg(long, default_value = "demo")]
    name: String,
    /// Initialisation time before the service is ready.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    delay: Duration,
    /// Serve HTTP on 127.0.0.1:PORT once ready (0 picks a free port).
    #[arg(long)]
    port: Option<u16>,
    /// Exit with --exit-code after the delay instead of serving (a one-shot component).
    #[arg(long)]
    oneshot: bool,
    /// Exit code for --oneshot, or after --exit-after.
    #[arg(long, default_value_t = 0)]
    exit_code: i32,
    /// Run for this long after becoming ready, then exit with --exit-code.
    #[arg(long, value_parser = humantime::parse_duration)]
    exit_after: Option<Duration>,
    /// Never become ready.
    #[arg(long)]
    hang: bool,
    /// Crash (exit 1) on start this many times, counting in --state-file.
    #[arg(long, default_value_t = 0)]
    crash_times: u32,
    /// Where --crash-times keeps its count.
    #[arg(long)]
    state_file: Option<PathBuf>,
    /// Ignore SIGTERM (dagstart must escalate to SIGKILL).
    #[arg(long)]
    ignore_sigterm: bool,
    /// Spawn a grandchild that hangs, and write its pid to this file.
    #[arg(long)]
    grandchild_pid_file: Option<PathBuf>,
    /// Spawn a grandchild that leaves the process group with setsid(), pid to this file.
    #[arg(long)]
    setsid_grandchild_pid_file: Option<PathBuf>,
    /// Append "NAME EVENT UNIX_NANOS PID" lines (start, ready) to this file.
    #[arg(long)]
    record: Option<PathBuf>,
    /// Line printed on stdout when ready.
    #[arg(long, default_value = "ready")]
    ready_line: String,
    /// Lines printed (alternating stdout/stderr) before the ready line.
    #[arg(long, default_value_t = 0)]
    chatter: u32,
    /// Tell readiness with READY=1 on NOTIFY_SOCKET (and answer WATCHDOG_USEC with pings).
    #[arg(long)]
    notify: bool,
    /// With --notify: send STATUS=TEXT while initialising.
    #[arg(long)]
    status: Option<String>,
    /// With --notify: ask for this much more startup time (EXTEND_TIMEOUT_USEC) first.
    #[arg(long, value_parser = humantime::parse_duration)]
    extend_timeout: Option<Duration>,
    /// With --notify and a watchdog: stop pinging after this long.
    #[arg(long, value_parser = humantime::parse_duration)]
    watchdog_stop_after: Option<Duration>,
    /// Write a line to this file descriptor when ready (s6/dinit readiness).
    #[arg(long)]
    ready_fd: Option<i32>,
    /// Close --ready-fd without writing, then go on (a failed readiness handshake).
    #[arg(long)]
    close_ready_fd: bool,
    /// Serve on the first socket passed by socket activation (LISTEN_FDS) instead of --port.
    #[arg(long)]
    socket_activated: bool,
    /// Initialise by burning this much CPU time (not wall time) after --delay: a CPU-heavy
    /// start-up that slows down when the CPUs are shared.
    #[arg(long, value_parser = humantime::parse_duration)]
    burn: Option<Duration>,
    /// Answer HTTP 500 from this long after becoming ready (a service that goes bad).
    #[arg(long, value_parser = humantime::parse_duration)]
    unhealthy_after: Option<Duration>,
    /// Print the value of this environment variable at start.
    #[arg(long)]
    print_env: Vec<String>,
    /// Answer every request with what `sh -c CMD` prints: 200 when it exits 0, 503 with its
    /// errors otherwise. With `psql` and `redis-cli` in CMD this is a small web app that
    /// reads a database and a cache on every request (the real-stack tests use it).
    #[arg(long)]
    answer_with: Option<String>,
}

/// The hidden first argument that makes `dagstart` run as demo-svc.
pub const DEMO_STEP: &str = "__demo-svc";

/// Runs demo-svc with `args` (the first is the program name). Never returns.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> ! {
    let args = Args::parse_from(args);
    record(&args, "start");
    for var in &args.print_env {
        println!(
            "{}: {var}={}",
            args.name,
            std::env::var(var).unwrap_or_default()
        );
    }
    if args.close_ready_fd {
        close_fd(args.ready_fd.unwrap_or(3));
    }
    if args.notify {
        if let Some(more) = args.extend_timeout {
            let usec = u32::try_from(more.as_micros()).unwrap_or(u32::MAX);
            notify(&[sd_notify::NotifyState::ExtendTimeoutUsec(usec)]);
        }
        if let Some(status) = &args.status {
            notify(&[sd_notify::NotifyState::Status(status)]);
        }
    }
    if args.ignore_sigterm {
        ignore_sigterm();
    }
    if let Some(pid_file) = &args.grandchild_pid_file {
        spawn_grandchild(pid_file, false);
    }
    if let Some(pid_file) = &args.setsid_grandchild_pid_file {
        spawn_grandchild(pid_file, true);
    }
    for i in 0..args.chatter {
        if i % 2 == 0 {
            println!("{}: chatter line {i}", args.name);
        } else {
            eprintln!("{}: chatter line {i}", args.name);
        }
    }
    if crash_now(&args) {
        eprintln!("{}: crashing on start as asked", args.name);
        std::process::exit(1);
    }
    println!(
        "{}: initialising for {}",
        args.name,
        humantime::format_duration(args.delay)
    );
    std::thread::sleep(args.delay);
    if let Some(cpu) = args.burn {
        burn(cpu);
    }
    if args.hang {
        println!("{}: hanging forever", args.name);
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    if args.oneshot {
        record(&args, "ready");
        println!(
            "{}: {} (exit {})",
            args.name, args.ready_line, args.exit_code
        );
        std::process::exit(args.exit_code);
    }
    let listener = if args.socket_activated {
        Some(activated_listener(&args.name))
    } else {
        args.port.map(|port| {
            TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| {
                eprintln!("{}: cannot listen on 127.0.0.1:{port}: {e}", args.name);
                std::process::exit(1);
            })
        })
    };
    record(&args, "ready");
    if let Some(fd) = args.ready_fd.filter(|_| !args.close_ready_fd) {
        write_ready_fd(fd);
    }
    if args.notify {
        notify(&[sd_notify::NotifyState::Ready]);
        if let Some(interval) = sd_notify::watchdog_enabled() {
            spawn_watchdog(interval, args.watchdog_stop_after);
        }
    }
    match &listener {
        Some(l) => println!(
            "{}: {} on {}",
            args.name,
            args.ready_line,
            l.local_addr().expect("addr")
        ),
        None => println!("{}: {}", args.name, args.ready_line),
    }
    let _ = std::io::stdout().flush();
    if let Some(after) = args.exit_after {
        let code = args.exit_code;
        std::thread::spawn(move || {
            std::thread::sleep(after);
            std::process::exit(code);
        });
    }
    let sick_from = args.unhealthy_after.map(|d| std::time::Instant::now() + d);
    if let Some(l) = listener {
        serve(&l, sick_from, args.answer_with.clone());
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Answers every connection with `200 ok` (`500` once `sick_from` has passed, or what
/// `answer_with` prints), one thread per connection.
fn serve(
    listener: &TcpListener,
    sick_from: Option<std::time::Instant>,
    answer_with: Option<String>,
) {
    for stream in listener.incoming().flatten() {
        let answer_with = answer_with.clone();
        std::thread::spawn(move || {
            let mut stream = stream;
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let sick = sick_from.is_some_and(|t| std::time::Instant::now() >= t);
            let (status, body) = match answer_with {
                Some(command) => run_for_answer(&command),
                None if sick => ("500 Internal Server Error", b"bad\n".to_vec()),
                None => ("200 OK", b"ok\n".to_vec()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        });
    }
}

/// `sh -c command`: its output and 200, or its errors and 503.
fn run_for_answer(command: &str) -> (&'static str, Vec<u8>) {
    match std::process::Command::new("sh")
        .args(["-c", command])
        .output()
    {
        Ok(out) if out.status.success() => ("200 OK", out.stdout),
        Ok(out) => ("503 Service Unavailable", out.stderr),
        Err(e) => ("503 Service Unavailable", e.to_string().into_bytes()),
    }
}

/// Spins until this process has used `cpu` of CPU time.
fn burn(cpu: Duration) {
    use nix::time::{ClockId, clock_gettime};
    let used = || {
        clock_gettime(ClockId::CLOCK_PROCESS_CPUTIME_ID).map_or(Duration::ZERO, |t| {
            Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
        })
    };
    let until = used() + cpu;
    let mut x = 0u64;
    while used() < until {
        for i in 0..10_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
    }
}

/// sd_notify(3): one datagram to NOTIFY_SOCKET, a path or (`@name`) an abstract address.
fn notify(states: &[sd_notify::NotifyState]) {
    use std::os::linux::net::SocketAddrExt as _;
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let message: String = states.iter().map(|s| format!("{s}\n")).collect();
    let sent = std::os::unix::net::UnixDatagram::unbound().and_then(|socket| {
        let target = target.to_string_lossy();
        match target.strip_prefix('@') {
            Some(name) => {
                socket.connect_addr(&std::os::unix::net::SocketAddr::from_abstract_name(name)?)?
            }
            None => socket.connect(&*target)?,
        }
        socket.send(message.as_bytes())
    });
    if let Err(e) = sent {
        eprintln!("cannot notify: {e}");
    }
}

/// Pings WATCHDOG=1 at half the interval, optionally falling silent after `stop_after`.
fn spawn_watchdog(interval: Duration, stop_after: Option<Duration>) {
    let started = std::time::Instant::now();
    std::thread::spawn(move || {
        while stop_after.is_none_or(|limit| started.elapsed() < limit) {
            notify(&[sd_notify::NotifyState::Watchdog]);
            std::thread::sleep(interval / 2);
        }
    });
}

/// Takes the first socket-activation fd, checking LISTEN_PID is this very process.
fn activated_listener(name: &str) -> TcpListener {
    let listen_pid = std::env::var("LISTEN_PID").unwrap_or_default();
    if listen_pid != std::process::id().to_string() {
        eprintln!(
            "{name}: LISTEN_PID={listen_pid:?} is not my pid {}",
            std::process::id()
        );
        std::process::exit(3);
    }
    let mut fds = listenfd::ListenFd::from_env();
    match fds.take_tcp_listener(0) {
        Ok(Some(listener)) => {
            println!("{name}: serving on activated fd 3 (LISTEN_PID ok)");
            listener
        }
        other => {
            eprintln!("{name}: no activated tcp socket on fd 3: {other:?}");
            std::process::exit(3);
        }
    }
}

#[allow(unsafe_code)]
fn write_ready_fd(fd: i32) {
    use std::os::fd::FromRawFd as _;
    // SAFETY: the supervisor placed the write end of the readiness pipe at this fd for us, and
    // nothing else in this process uses it; the File takes ownership and closes it.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    let _ = file.write_all(b"ready\n");
}

#[allow(unsafe_code)]
fn close_fd(fd: i32) {
    use std::os::fd::FromRawFd as _;
    // SAFETY: as in write_ready_fd; dropping the File closes the descriptor.
    drop(unsafe { std::fs::File::from_raw_fd(fd) });
}

fn record(args: &Args, event: &str) {
    let Some(path) = &args.record else { return };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let line = format!("{} {event} {nanos} {}\n", args.name, std::process::id());
    // One write of a short line to an O_APPEND file is atomic, so parallel services can share it.
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path);
    if let Ok(mut f) = file {
        let _ = f.write_all(line.as_bytes());
    }
}

/// True while fewer than --crash-times starts have crashed.
fn crash_now(args: &Args) -> bool {
    if args.crash_times == 0 {
        return false;
    }
    let path = args
        .state_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!(".{}.crashes", args.name)));
    let crashed: u32 = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if crashed >= args.crash_times {
        return false;
    }
    let _ = std::fs::write(&path, (crashed + 1).to_string());
    true
}

fn spawn_grandchild(pid_file: &PathBuf, escape: bool) {
    let exe = std::env::current_exe().expect("own path");
    let mut command = std::process::Command::new(exe);
    command
        .args(["--name", "grandchild", "--hang"])
        .stdout(std::process::Stdio::null());
    if escape {
        new_session(&mut command);
    }
    let child = command.spawn().expect("spawn grandchild");
    let _ = std::fs::write(pid_file, child.id().to_string());
    // Deliberately not waited for: it must outlive us unless the supervisor kills it.
    std::mem::forget(child);
}

/// Makes the child leave our session and process group, as daemons do.
#[allow(unsafe_code)]
fn new_session(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: setsid() is async-signal-safe and the closure touches nothing else.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
}

#[allow(unsafe_code)]
fn ignore_sigterm() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: SIG_IGN installs no handler code, so nothing can run in signal context.
    unsafe { signal(Signal::SIGTERM, SigHandler::SigIgn) }.expect("ignore SIGTERM");
}
