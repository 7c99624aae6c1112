//! `dagstart probe NODE`: one node's readiness check, from outside a run, until it passes or
//! its time is up. The systemd units of `dagstart export systemd` run it as `ExecStartPost=`,
//! so that units ordered after this one wait for what `depends_on` waited for.
//!
//! It probes as `dagstart run` does (the same attempts, pacing and hedging). A `log` probe
//! reads the unit's journal: the invocation's own lines when systemd runs it (`INVOCATION_ID`),
//! else those of `--unit`.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncBufReadExt as _;

use crate::cli::args::ProbeArgs;
use crate::cli::error::{Error, exit_code};
use crate::engine::config::{Config, Environment, Node, Probe, did_you_mean};
use crate::engine::health::{ProbeContext, ProbeTally, http_client, wait_until_healthy};

/// Why `dagstart probe` did not see the node ready.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ProbeError {
    #[error("`{node}` was not ready within {budget} (waited for {waited_for}){}", last.as_ref().map(|l| format!("; last attempt: {l}")).unwrap_or_default())]
    #[diagnostic(
        code(dagstart::probe::timeout),
        help("`--timeout` gives it longer (the default is the node's startup_timeout)")
    )]
    Timeout {
        node: String,
        budget: String,
        waited_for: String,
        last: Option<String>,
    },

    #[error("`{node}` is ready by {how}: there is nothing to probe from outside")]
    #[diagnostic(
        code(dagstart::probe::nothing),
        help("probe works for http, tcp, exec and log health checks")
    )]
    Nothing { node: String, how: String },

    #[error(
        "a log probe reads the unit's journal, and neither INVOCATION_ID nor --unit says which"
    )]
    #[diagnostic(
        code(dagstart::probe::journal),
        help("run it from the unit (ExecStartPost=), or pass --unit NAME.service")
    )]
    NoJournal,

    #[error("cannot read the journal with journalctl: {0}")]
    #[diagnostic(code(dagstart::probe::journalctl))]
    Journalctl(std::io::Error),
}

pub fn probe(path: &Path, env: &Environment, args: &ProbeArgs) -> Result<i32, Error> {
    let config = crate::engine::config::load(path, env)?;
    let node = find(&config, &args.node)?;
    if matches!(
        node.health.probe,
        Probe::Spawned | Probe::Exited | Probe::Notify | Probe::ReadyFd { .. }
    ) {
        return Err(ProbeError::Nothing {
            node: node.name.clone(),
            how: node.health.probe.describe(),
        }
        .into());
    }
    let budget = args.timeout.unwrap_or(node.startup_timeout);
    crate::cli::commands::block_on(wait(&config, node, budget, args.unit.as_deref(), env))??;
    eprintln!("{}: ready ({})", node.name, node.health.probe.describe());
    Ok(exit_code::OK)
}

fn find<'c>(config: &'c Config, name: &str) -> Result<&'c Node, Error> {
    config.node(name).ok_or_else(|| {
        let suggestion = did_you_mean(name, config.nodes.iter().map(|n| n.name.as_str()));
        crate::engine::graph::UnknownNode {
            name: name.to_owned(),
            help: suggestion.map(|s| format!("did you mean `{s}`?")),
        }
        .into()
    })
}

async fn wait(
    config: &Config,
    node: &Node,
    budget: Duration,
    unit: Option<&str>,
    env: &Environment,
) -> Result<(), ProbeError> {
    let mut ctx = ProbeContext::for_node(&http_client(), config, node);
    // Held until the wait ends: dropping it stops journalctl.
    let mut _journal = None;
    if let Probe::Log { pattern } = &node.health.probe {
        let source = match (env.get("INVOCATION_ID"), unit) {
            (Some(id), _) => format!("_SYSTEMD_INVOCATION_ID={id}"),
            (None, Some(unit)) => format!("--unit={unit}"),
            (None, None) => return Err(ProbeError::NoJournal),
        };
        let (tx, rx) = tokio::sync::watch::channel(false);
        _journal = Some(follow_journal(&source, pattern.clone(), tx)?);
        ctx.log_matched = Some(rx);
    }
    let last = std::sync::Mutex::new(None::<String>);
    let seen = |error: &str| {
        *last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error.to_owned());
    };
    let tally = std::sync::Mutex::new(ProbeTally::default());
    let hedged = config.settings.parallel_health_checks;
    let waiting = wait_until_healthy(&node.health, hedged, Instant::now(), &ctx, &seen, &tally);
    match tokio::time::timeout(budget, waiting).await {
        Ok(()) => Ok(()),
        Err(_) => Err(ProbeError::Timeout {
            node: node.name.clone(),
            budget: humantime::format_duration(budget).to_string(),
            waited_for: node.health.probe.describe(),
            last: last
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        }),
    }
}

/// Runs `journalctl --follow` over `source` (a match or `--unit=`) and says through `matched`
/// when a line matches `pattern`. journalctl ends when the returned task is dropped.
fn follow_journal(
    source: &str,
    pattern: regex::Regex,
    matched: tokio::sync::watch::Sender<bool>,
) -> Result<tokio::task::JoinHandle<()>, ProbeError> {
    let mut child = tokio::process::Command::new("journalctl")
        .args([
            "--follow",
            "--lines=all",
            "--output=cat",
            "--no-pager",
            source,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(ProbeError::Journalctl)?;
    let stdout = child.stdout.take().expect("stdout is piped");
    Ok(tokio::spawn(async move {
        // Owned here, so that aborting the task (or the runtime ending) kills journalctl.
        let _child = child;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if pattern.is_match(&line) {
                let _ = matched.send(true);
                return;
            }
        }
    }))
}
