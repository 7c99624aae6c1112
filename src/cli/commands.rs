//! The commands: each loads what it needs through the library and prints its result.
//! Errors are returned typed; `main.rs` renders them once.

use std::io::Write as _;

use crate::cli::args::{
    CheckFormat, Cli, Command, ConfigArgs, ConfigFormat, GraphArgs, GraphFormat, ReportArgs,
};
use crate::cli::error::{Error, exit_code};
use crate::engine::cluster::Role;
use crate::engine::config::{self, Config, Environment, NodeKind};
use crate::engine::control::{self, Request};
use crate::engine::graph::Graph;

/// Runs one command line; the `Ok` value is the process exit code.
pub fn execute(cli: Cli) -> Result<i32, Error> {
    let env = Environment::from_process();
    if let Some(host) = &cli.host {
        control::set_host(host);
    }
    match cli.command {
        Command::Check(args) => check(&cli.file, &env, args.format, args.config_only),
        Command::Graph(args) => graph_command(&cli.file, &env, &args),
        Command::Config(args) => config_command(&cli.file, &env, &args),
        Command::Run(args) => {
            let config = load_config(&cli.file, &env)?;
            let cluster = cluster_request(&config, cli.host.as_deref(), Role::Coordinator)?;
            let request = crate::cli::run::RunRequest {
                cluster,
                nodes: args.nodes,
                profiles: active_profiles(&args.profile, &env),
                sequential: args.sequential,
                watch: args.watch,
                dashboard: match args.dashboard {
                    Some(address) => Some((address, args.dashboard_access.access(address)?)),
                    None => None,
                },
                json: args.output == crate::cli::args::OutputFormat::Json,
                ui: args.ui,
                command: args.command,
            };
            crate::cli::run::run(config, &env, request)
        }
        Command::Agent(args) => {
            let config = load_config(&cli.file, &env)?;
            let cluster = cluster_request(&config, cli.host.as_deref(), Role::Agent)?;
            let request = crate::cli::run::RunRequest {
                cluster,
                profiles: active_profiles(&[], &env),
                json: args.output == crate::cli::args::OutputFormat::Json,
                ..Default::default()
            };
            crate::cli::run::run(config, &env, request)
        }
        Command::Status(args) => status(&cli.file, args.format),
        Command::Start(args) => act(&cli.file, Request::Start { nodes: args.nodes }),
        Command::Stop(args) => act(&cli.file, Request::Stop { nodes: args.nodes }),
        Command::Restart(args) => act(&cli.file, Request::Restart { nodes: args.nodes }),
        Command::Down => act(&cli.file, Request::Down),
        Command::Reload => act(&cli.file, Request::Reload),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut command, "dagstart", &mut out);
            print_out(&String::from_utf8_lossy(&out))?;
            Ok(exit_code::OK)
        }
        Command::Schema => {
            print_out(&serde_json::to_string_pretty(&crate::cli::schema::schema()).expect("json"))?;
            Ok(exit_code::OK)
        }
        Command::Man { dir: None } => {
            let mut out = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
                .render(&mut out)
                .map_err(|e| Error::io("rendering the man page", e))?;
            print_out(&String::from_utf8_lossy(&out))?;
            Ok(exit_code::OK)
        }
        Command::Man { dir: Some(dir) } => {
            write_man_pages(&dir)?;
            Ok(exit_code::OK)
        }
        Command::Logs(args) => crate::cli::logs::show(&cli.file, &env, &args),
        Command::Import(args) => import(&env, &args),
        Command::Export(args) => export(&cli.file, &env, &args),
        Command::Probe(args) => crate::cli::probe::probe(&cli.file, &env, &args),
        Command::Ui => ui(&cli.file, &env),
        Command::Report(ReportArgs {
            compare: Some(runs),
            ..
        }) => {
            let dir = project_dir(&cli.file)?;
            let (a, record_a) =
                crate::views::history::load(&dir, Some(&runs[0])).map_err(Error::History)?;
            let (b, record_b) =
                crate::views::history::load(&dir, Some(&runs[1])).map_err(Error::History)?;
            print_out(&crate::views::report::render_comparison(
                (&a, &record_a),
                (&b, &record_b),
            ))?;
            Ok(exit_code::OK)
        }
        Command::Report(args) => {
            let (id, record) =
                crate::views::history::load(&project_dir(&cli.file)?, args.run.as_deref())
                    .map_err(Error::History)?;
            print_out(&crate::views::report::render_recorded(&id, &record))?;
            if let Some(path) = &args.svg {
                std::fs::write(path, crate::views::gantt::svg(&record))
                    .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
            }
            if let Some(path) = &args.html {
                std::fs::write(path, crate::views::gantt::html(&id, &record))
                    .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
            }
            if let Some(address) = args.dashboard {
                let access = args.dashboard_access.access(address)?;
                serve_recorded(address, access, &record)?;
            }
            Ok(exit_code::OK)
        }
    }
}

/// `run` and `agent` in a `[cluster]`: which host this process is. Without one, `--host` is a
/// mistake worth saying.
fn cluster_request(
    config: &crate::engine::config::Config,
    host: Option<&str>,
    role: Role,
) -> Result<Option<crate::cli::run::ClusterRequest>, Error> {
    if config.cluster.is_none() {
        return match (host, role) {
            (None, Role::Coordinator) => Ok(None),
            _ => Err(Error::Refused(format!(
                "{} needs a [cluster] section in {} (etcd endpoints and [hosts.NAME])",
                if role == Role::Agent {
                    "`dagstart agent`"
                } else {
                    "--host"
                },
                config.path.display()
            ))),
        };
    }
    let host = match (host, role) {
        (Some(host), _) => host.to_owned(),
        (None, Role::Coordinator) => crate::engine::cluster::machine_name(),
        (None, Role::Agent) => {
            return Err(Error::Refused(
                "`dagstart agent` needs --host NAME: the [hosts.NAME] whose nodes it runs".into(),
            ));
        }
    };
    Ok(Some(crate::cli::run::ClusterRequest { host, role }))
}

/// The directory of the project whose dagstart we talk to: where services.toml is. Found from
/// the path alone, so that `down` and `status` work even while the file is broken.
fn project_dir(path: &std::path::Path) -> Result<std::path::PathBuf, Error> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => std::path::PathBuf::from("."),
    };
    let absolute =
        std::path::absolute(&dir).map_err(|e| Error::io("finding the project directory", e))?;
    Ok(absolute.components().collect())
}

fn status(path: &std::path::Path, format: CheckFormat) -> Result<i32, Error> {
    let response = control::request(&project_dir(path)?, &Request::Status)?;
    if !response.ok {
        return Err(Error::Refused(response.message));
    }
    let text = match format {
        CheckFormat::Json => serde_json::to_string_pretty(&response.nodes).expect("json"),
        CheckFormat::Text => status_table(&response.nodes),
    };
    print_out(&text)?;
    Ok(exit_code::OK)
}

/// dagstart.1 and dagstart-<command>.1 for every command, so the main page's references
/// resolve.
fn write_man_pages(dir: &std::path::Path) -> Result<(), Error> {
    let writing = |e| Error::io(format!("writing man pages to {}", dir.display()), e);
    std::fs::create_dir_all(dir).map_err(writing)?;
    let mut command = <Cli as clap::CommandFactory>::command();
    command.build();
    let mut pages = vec![("dagstart".to_owned(), command.clone())];
    for sub in command.get_subcommands() {
        pages.push((format!("dagstart-{}", sub.get_name()), sub.clone()));
    }
    for (name, page) in pages {
        let mut out = Vec::new();
        clap_mangen::Man::new(page)
            .title(name.clone())
            .render(&mut out)
            .map_err(writing)?;
        std::fs::write(dir.join(format!("{name}.1")), out).map_err(writing)?;
    }
    Ok(())
}

fn status_table(nodes: &[crate::engine::lifecycle::NodeStatus]) -> String {
    let width = nodes.iter().map(|n| n.name.len()).max().unwrap_or(4).max(4);
    // In a cluster run, a host column (pids are those of each node's own host).
    let hosts = nodes.iter().any(|n| n.host.is_some());
    let host_width = nodes
        .iter()
        .filter_map(|n| n.host.as_ref().map(String::len))
        .max()
        .unwrap_or(4)
        .max(4);
    let host_cell = |host: &str| {
        if hosts {
            format!("{host:host_width$}  ")
        } else {
            String::new()
        }
    };
    let mut out = format!(
        "{:width$}  {}{:9}  {:11}  {:>7}  {:>9}  {:>8}  last\n",
        "node",
        host_cell("host"),
        "kind",
        "state",
        "pid",
        "uptime",
        "restarts"
    );
    for n in nodes {
        let pid = n.pid.map_or_else(|| "-".to_owned(), |p| p.to_string());
        let uptime = n.uptime_ms.map_or_else(
            || "-".to_owned(),
            |ms| humantime::format_duration(std::time::Duration::from_secs(ms / 1000)).to_string(),
        );
        let last = [
            n.degraded.as_ref().map(|why| format!("degraded: {why}")),
            n.output_lost
                .as_ref()
                .map(|lost| format!("output lost: {lost}")),
            n.last.clone(),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("; ");
        out.push_str(&format!(
            "{:width$}  {}{:9}  {:11}  {pid:>7}  {uptime:>9}  {:>8}  {last}\n",
            n.name,
            host_cell(n.host.as_deref().unwrap_or("-")),
            n.kind,
            n.state,
            n.restarts
        ));
    }
    out
}

/// How long `down` waits for the stack to have stopped.
const DOWN_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

fn act(path: &std::path::Path, request: Request) -> Result<i32, Error> {
    let dir = project_dir(path)?;
    let down = matches!(request, Request::Down);
    let response = control::request(&dir, &request)?;
    if response.invalid_config {
        // Already rendered diagnostics, located in the file, as `check` shows them.
        let _ = std::io::Write::write_all(&mut std::io::stderr(), response.message.as_bytes());
        eprintln!();
        return Ok(exit_code::CONFIG);
    }
    if !response.ok {
        return Err(Error::Refused(response.message));
    }
    print_out(&response.message)?;
    // `down` returns once everything has stopped, so that `dagstart down && dagstart run` works.
    if down {
        if !control::wait_until_ended(&dir, DOWN_LIMIT) {
            return Err(Error::Refused(format!(
                "the run is still stopping after {}s (waited for its lock, .dagstart/run.lock, to be released)",
                DOWN_LIMIT.as_secs()
            )));
        }
        print_out("stopped")?;
    }
    Ok(exit_code::OK)
}

/// Runs `future` to its end on a runtime of its own (one thread, shut down right after, so
/// that no thread of it outlives the call), for a command that is not async otherwise.
pub(crate) fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the async runtime", e))?;
    let output = runtime.block_on(future);
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    Ok(output)
}

/// Loads and validates the configuration, printing its warnings on stderr.
pub fn load_config(path: &std::path::Path, env: &Environment) -> Result<Config, Error> {
    let mut config = config::load(path, env)?;
    print_warnings(&config);
    logs_of_this_host(&mut config);
    Ok(config)
}

/// A host named with `--host` in a `[cluster]` keeps its logs in `<log_dir>/<host>`, so that
/// hosts sharing a project directory do not write the same files.
pub(crate) fn logs_of_this_host(config: &mut Config) {
    if let (Some(_), Some(host)) = (&config.cluster, control::host()) {
        config.settings.log_dir = config.settings.log_dir.join(host);
    }
}

fn print_warnings(config: &Config) {
    print_problems(config, &config.warnings);
}

/// Located problems of `config`, rendered on stderr.
pub(crate) fn print_problems(config: &Config, problems: &[config::Problem]) {
    let handler = crate::cli::error::terminal_handler();
    let lines = config::LineIndex::new(&config.source);
    for problem in problems {
        let report = config::diagnostic_report(problem, &lines);
        let mut out = String::new();
        let _ = handler.render_report(&mut out, report.as_ref());
        let _ = std::io::Write::write_all(&mut std::io::stderr(), out.as_bytes());
    }
}

/// Commands and working directories that `run` would not find, as located problems: a
/// missing working directory is an error (`run` would refuse it, exit 3), a missing command a
/// warning (an earlier component may build it).
pub(crate) fn missing_files(config: &Config, selected: &[bool]) -> Vec<config::Problem> {
    located_missing(config, &crate::engine::preflight::files(config, selected))
}

/// What [`crate::engine::preflight::files`] found, as located problems (see above).
pub(crate) fn located_missing(
    config: &Config,
    missing: &[(usize, crate::engine::preflight::Missing)],
) -> Vec<config::Problem> {
    use crate::engine::preflight::Missing;
    missing
        .iter()
        .map(|&(n, ref missing)| {
            let node = &config.nodes[n];
            let message = format!("`{}`: {}", node.name, missing.text());
            let span = node.name_span.clone();
            match missing {
                Missing::Directory(_) => config::Problem::located_error(
                    "dagstart::preflight::directory",
                    message,
                    span,
                    "`run` would refuse to start this node",
                ),
                Missing::Command(_) => config::Problem::located_warning(
                    "dagstart::preflight::command",
                    message,
                    span,
                    "unless an earlier component builds it, this node will fail to start",
                ),
            }
        })
        .collect()
}

fn check(
    path: &std::path::Path,
    env: &Environment,
    format: CheckFormat,
    config_only: bool,
) -> Result<i32, Error> {
    let missing_files = |config: &Config| {
        if config_only {
            Vec::new()
        } else {
            missing_files(config, &vec![true; config.nodes.len()])
        }
    };
    // Of the graph, check needs only its depth, counted beside the file-system checks
    // (100,000 nodes: 40 ms of these).
    let missing_and_depth = |config: &Config| {
        crate::engine::parallel::join(
            || missing_files(config),
            || crate::engine::graph::depth(&config.nodes),
        )
    };
    if format == CheckFormat::Text {
        let config = load_config(path, env)?;
        let (missing, depth) = missing_and_depth(&config);
        if !missing.is_empty() {
            let refused = missing.iter().any(config::Problem::is_error);
            print_problems(&config, &missing);
            if refused {
                return Ok(exit_code::PREFLIGHT);
            }
        }
        let (services, components) = (
            config.count(NodeKind::Service),
            config.count(NodeKind::Component),
        );
        let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        println!(
            "ok: {}, {}, depth {}",
            plural(services, "service"),
            plural(components, "component"),
            depth
        );
        leave_to_exit(config);
        return Ok(exit_code::OK);
    }
    let (ok, problems, summary) = match config::load(path, env) {
        Ok(config) => {
            let (missing, depth) = missing_and_depth(&config);
            let mut found = config.warnings.clone();
            found.extend(missing);
            let problems = config::ConfigError {
                file: config.source.clone(),
                problems: found,
            }
            .to_json();
            let summary = serde_json::json!({
                "services": config.count(NodeKind::Service),
                "components": config.count(NodeKind::Component),
                "depth": depth,
            });
            (true, problems, summary)
        }
        Err(config::LoadError::Invalid(e)) => (false, e.to_json(), serde_json::Value::Null),
        Err(e) => return Err(e.into()),
    };
    let refused = ok && problems.iter().any(|p| p.severity == "error");
    let ok = ok && !refused;
    let doc = serde_json::json!({ "ok": ok, "summary": summary, "diagnostics": problems });
    print_out(&serde_json::to_string_pretty(&doc).expect("json"))?;
    Ok(match (ok, refused) {
        (true, _) => exit_code::OK,
        (false, true) => exit_code::PREFLIGHT,
        (false, false) => exit_code::CONFIG,
    })
}

/// `--profile` where given, else `DAGSTART_PROFILES`.
fn active_profiles(flags: &[String], env: &Environment) -> Vec<String> {
    if flags.is_empty() {
        crate::engine::selection::profiles_from_env(env.get("DAGSTART_PROFILES"))
    } else {
        flags.to_vec()
    }
}

fn graph_command(
    path: &std::path::Path,
    env: &Environment,
    args: &GraphArgs,
) -> Result<i32, Error> {
    let config = load_config(path, env)?;
    let graph = Graph::build(&config);
    let profiles = active_profiles(&args.profile, env);
    let selected = crate::engine::selection::select(&config, &graph, &args.nodes, &profiles)?;
    let timings = if args.timings {
        let (_, record) =
            crate::views::history::load(&config.base_dir, None).map_err(Error::History)?;
        Some(crate::views::report::RecordedRun::from_record(&record))
    } else {
        None
    };
    let text = match args.format {
        GraphFormat::Text => {
            crate::views::graph_render::render_text(&config, &graph, &selected, timings.as_ref())
        }
        GraphFormat::Dot => {
            crate::views::graph_render::render_dot(&config, &graph, &selected, timings.as_ref())
        }
        GraphFormat::Mermaid => {
            crate::views::graph_render::render_mermaid(&config, &graph, &selected)
        }
        GraphFormat::Json => {
            write_out(|out| {
                crate::views::graph_render::write_json(&config, &graph, &selected, &mut *out)?;
                out.write_all(b"\n")
            })?;
            leave_to_exit((config, graph));
            return Ok(exit_code::OK);
        }
    };
    print_out(&text)?;
    leave_to_exit((config, graph, text));
    Ok(exit_code::OK)
}

/// Leaves `value` to the process's exit: `check` and `graph` print and exit, and freeing a
/// 100,000-node configuration piece by piece took 50 ms for nothing.
fn leave_to_exit<T>(value: T) {
    std::mem::forget(value);
}

/// What `import` or `export` could not carry over, on stderr (the file's header says it too).
fn say_lost(lost: &[crate::convert::Lost]) {
    for lost in lost {
        eprintln!("not carried over: {}: {}", lost.what, lost.why);
    }
}

/// `dagstart import`: convert, list what was not carried over, write (or print).
fn import(env: &Environment, args: &crate::cli::args::ImportArgs) -> Result<i32, Error> {
    let lookup = |name: &str| env.get(name).map(str::to_owned);
    let mut draft = crate::convert::import(&args.file, args.from.map(Into::into), &lookup)?;
    draft.source = args.file.display().to_string();
    // Relative paths of the imported file are relative to its directory; services.toml's to
    // its own.
    let dir_of = |path: &std::path::Path| {
        std::path::absolute(path.parent().unwrap_or(std::path::Path::new(""))).unwrap_or_default()
    };
    let stdout = args.output.as_os_str() == "-";
    let written_to = if stdout {
        std::env::current_dir().unwrap_or_default()
    } else {
        dir_of(&args.output)
    };
    if dir_of(&args.file) != written_to {
        draft.anchor_paths(&dir_of(&args.file));
    }
    let text = draft.to_toml();
    say_lost(&draft.lost);
    if stdout {
        print_out(&text)?;
        return Ok(exit_code::OK);
    }
    if args.output.exists() && !args.force {
        return Err(Error::Refused(format!(
            "{} exists; pass --force to overwrite it, or -o another path",
            args.output.display()
        )));
    }
    std::fs::write(&args.output, &text)
        .map_err(|e| Error::io(format!("writing {}", args.output.display()), e))?;
    eprintln!(
        "wrote {} ({} nodes); `dagstart check` checks it",
        args.output.display(),
        draft.nodes.len()
    );
    Ok(exit_code::OK)
}

/// `dagstart ui`: the terminal UI attached to the running dagstart of this project.
fn ui(path: &std::path::Path, env: &Environment) -> Result<i32, Error> {
    let config = load_config(path, env)?;
    let project = config.base_dir.clone();
    if !crate::engine::control::is_running(&project) {
        return Err(crate::engine::control::ControlError::NotRunning { project }.into());
    }
    let options = crate::views::tui::UiOptions {
        project_dir: project,
        stop_on_quit: false,
        ended: None,
    };
    crate::views::tui::run(config, &options).map_err(|e| Error::io("the terminal UI", e))?;
    Ok(exit_code::OK)
}

/// `dagstart export`: the loaded configuration in another format, what it cannot say listed.
fn export(
    path: &std::path::Path,
    env: &Environment,
    args: &crate::cli::args::ExportArgs,
) -> Result<i32, Error> {
    let config = load_config(path, env)?;
    let (files, lost) = match args.format {
        crate::cli::args::ExportFormat::ProcessCompose => {
            let (text, lost) = crate::convert::to_process_compose(&config);
            let file = crate::convert::UnitFile {
                name: "process-compose.yaml".to_owned(),
                text,
            };
            (vec![file], lost)
        }
        crate::cli::args::ExportFormat::Systemd => systemd_units(&config)?,
    };
    say_lost(&lost);
    match &args.output {
        None if files.len() == 1 => print_out(&files[0].text)?,
        None => {
            let all: Vec<String> = files
                .iter()
                .map(|f| format!("### {}\n{}", f.name, f.text))
                .collect();
            print_out(&all.join("\n"))?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
            for file in &files {
                let path = dir.join(&file.name);
                std::fs::write(&path, &file.text)
                    .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(exit_code::OK)
}

/// The systemd units of `config`, named after its directory, probing through this binary.
fn systemd_units(
    config: &Config,
) -> Result<(Vec<crate::convert::UnitFile>, Vec<crate::convert::Lost>), Error> {
    let dagstart = std::env::current_exe()
        .map_err(|e| Error::io("finding the dagstart binary for ExecStartPost=", e))?;
    let services_toml = std::path::absolute(&config.path)
        .map_err(|e| Error::io("making the path of services.toml absolute", e))?;
    let project = crate::convert::project_name(&config.base_dir);
    let export = crate::convert::SystemdExport {
        project: &project,
        dagstart: &dagstart,
        services_toml: &services_toml,
    };
    Ok(crate::convert::to_systemd(config, &export))
}

fn config_command(
    path: &std::path::Path,
    env: &Environment,
    args: &ConfigArgs,
) -> Result<i32, Error> {
    let config = load_config(path, env)?;
    let text = match args.format {
        ConfigFormat::Toml => config::render_toml(&config),
        ConfigFormat::Json => config::render_json(&config),
    };
    print_out(&text)?;
    Ok(exit_code::OK)
}

/// Writes to stdout; a closed pipe (`dagstart graph | head`) is not an error.
pub(crate) fn print_out(text: &str) -> Result<(), Error> {
    write_out(|out| {
        out.write_all(text.as_bytes())?;
        if text.ends_with('\n') {
            Ok(())
        } else {
            out.write_all(b"\n")
        }
    })
}

/// Writes to stdout through a buffer; a reader that went away (`| head`) is not an error.
fn write_out(
    write: impl FnOnce(&mut std::io::BufWriter<std::io::StdoutLock<'static>>) -> std::io::Result<()>,
) -> Result<(), Error> {
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let result = write(&mut out).and_then(|()| out.flush());
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(|e| Error::io("writing to stdout", e)),
    }
}

/// `report --dashboard`: the recorded run on the dashboard page, until Ctrl-C.
fn serve_recorded(
    address: std::net::SocketAddr,
    access: crate::views::dashboard_access::Access,
    record: &crate::views::history::RunRecord,
) -> Result<(), Error> {
    let runtime =
        tokio::runtime::Runtime::new().map_err(|e| Error::io("starting the async runtime", e))?;
    runtime.block_on(async {
        let listener = crate::views::dashboard::bind(address, "Ctrl-C to stop").await?;
        let dashboard = crate::views::dashboard::Dashboard::from_record(record);
        tokio::select! {
            () = dashboard.serve(listener, access, None) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok(())
    })
}
