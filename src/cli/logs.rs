//! `dagstart logs`: the nodes' log files merged by time (each line's stamp), the last lines
//! of each, optionally followed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::args::LogsArgs;
use crate::cli::error::{Error, exit_code};
use crate::engine::config::Environment;

pub fn show(path: &Path, env: &Environment, args: &LogsArgs) -> Result<i32, Error> {
    let mut config = crate::engine::config::load(path, env)?;
    crate::cli::commands::logs_of_this_host(&mut config);
    let graph = crate::engine::graph::Graph::build(&config);
    let selected = graph.select(&config, &[])?;
    let names: Vec<&str> = if args.nodes.is_empty() {
        config
            .nodes
            .iter()
            .zip(&selected)
            .filter(|(_, on)| **on)
            .map(|(n, _)| n.name.as_str())
            .collect()
    } else {
        for name in &args.nodes {
            graph.select(&config, std::slice::from_ref(name))?;
        }
        args.nodes.iter().map(String::as_str).collect()
    };
    let running = crate::engine::control::is_running(&config.base_dir);
    if !running {
        eprintln!(
            "dagstart: no dagstart is running for {}; these are the last run's logs",
            config.base_dir.display()
        );
    }
    let width = names.iter().map(|n| n.len()).max().unwrap_or(0);
    let view = View {
        width,
        timestamps: args.timestamps,
    };
    crate::cli::commands::block_on(show_and_follow(&config, &names, args, running, view))?
}

/// How lines are printed: node names padded to `width`, stamps shown or not.
#[derive(Clone, Copy)]
struct View {
    width: usize,
    timestamps: bool,
}

/// One node's log file on this host, and how far it has been read.
struct LocalLog {
    node: String,
    path: PathBuf,
    end: u64,
}

async fn show_and_follow(
    config: &crate::engine::config::Config,
    names: &[&str],
    args: &LogsArgs,
    running: bool,
    view: View,
) -> Result<i32, Error> {
    let http = reqwest::Client::new();
    let mut lines = Vec::new();
    let mut remote = Vec::new();
    let elsewhere = other_hosts_logs(config, names).await?;
    let runs_elsewhere: Vec<String> = elsewhere.iter().map(|(name, _)| name.clone()).collect();
    for (name, located) in elsewhere {
        let fetched = match located {
            Ok(mut log) => log.tail(&http, args.tail).await.map(|lines| (log, lines)),
            Err(why) => Err(why),
        };
        match fetched {
            Ok((log, fetched)) => {
                lines.extend(fetched.into_iter().map(|l| (name.clone(), l)));
                remote.push(log);
            }
            Err(why) => eprintln!("dagstart: {name}: {why}"),
        }
    }
    let mut local = Vec::new();
    for name in names
        .iter()
        .filter(|name| !runs_elsewhere.iter().any(|n| n == *name))
    {
        let path = config.settings.log_dir.join(format!("{name}.log"));
        let (last, end) = crate::views::logfiles::last_lines(&path, args.tail);
        lines.extend(last.into_iter().map(|line| ((*name).to_owned(), line)));
        local.push(LocalLog {
            node: (*name).to_owned(),
            path,
            end,
        });
    }
    print_merged(lines, view)?;
    if args.follow && running {
        follow(&mut local, &mut remote, &http, view, &config.base_dir).await?;
    }
    Ok(exit_code::OK)
}

/// Prints `(node, line)` pairs in the order of their stamps (a stable sort: lines of one node
/// keep their order, lines without a stamp come first), each prefixed with its node, the
/// stamp shown only when asked for.
fn print_merged(mut lines: Vec<(String, String)>, view: View) -> Result<(), Error> {
    use crate::views::logfiles::split_stamp;
    let View { width, timestamps } = view;
    lines.sort_by(|a, b| split_stamp(&a.1).0.cmp(&split_stamp(&b.1).0));
    for (name, line) in &lines {
        let text = match split_stamp(line) {
            (Some(stamp), text) if timestamps => format!("{name:>width$} | {stamp} {text}"),
            (_, text) => format!("{name:>width$} | {text}"),
        };
        crate::cli::commands::print_out(&text)?;
    }
    Ok(())
}

/// In a cluster: the logs of the named nodes that other hosts run.
async fn other_hosts_logs(
    config: &crate::engine::config::Config,
    names: &[&str],
) -> Result<Vec<crate::engine::cluster::remote_logs::Located>, Error> {
    if config.cluster.is_none() {
        return Ok(Vec::new());
    }
    let local = crate::engine::control::host()
        .map_or_else(crate::engine::cluster::machine_name, str::to_owned);
    Ok(crate::engine::cluster::remote_logs::locate(config, &local, names).await?)
}

/// Prints whole new lines of every log, this host's and other hosts', as they appear (merged
/// by time within each look), until the run ends or Ctrl-C. A host that does not answer is
/// asked again at the next look; what went wrong is said once, until it changes.
async fn follow(
    local: &mut [LocalLog],
    remote: &mut [crate::engine::cluster::remote_logs::RemoteLog],
    http: &reqwest::Client,
    view: View,
    project: &Path,
) -> Result<(), Error> {
    let mut told: Vec<Option<String>> = vec![None; remote.len()];
    while crate::engine::control::is_running(project) {
        let mut new_lines = Vec::new();
        for log in local.iter_mut() {
            let (lines, end) = crate::views::logfiles::lines_since(&log.path, log.end);
            log.end = end;
            new_lines.extend(lines.into_iter().map(|line| (log.node.clone(), line)));
        }
        for (log, told) in remote.iter_mut().zip(&mut told) {
            match log.since(http).await {
                Ok(lines) => {
                    *told = None;
                    new_lines.extend(lines.into_iter().map(|line| (log.node.clone(), line)));
                }
                Err(why) if told.as_ref() != Some(&why) => {
                    eprintln!("dagstart: {}: {why}", log.node);
                    *told = Some(why);
                }
                Err(_) => {}
            }
        }
        print_merged(new_lines, view)?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
