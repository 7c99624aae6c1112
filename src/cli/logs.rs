//! `dagstart logs`: the nodes' log files merged by time (each line's stamp), the last lines
//! of each, optionally followed.

use std::io::{BufRead as _, Seek as _};
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
    let mut files: Vec<(String, PathBuf, u64)> = Vec::new();
    let mut lines = Vec::new();
    let elsewhere = other_hosts_lines(&config, &names, args.tail)?;
    for (name, fetched) in &elsewhere {
        match fetched {
            Ok(fetched) => lines.extend(fetched.iter().map(|l| (name.clone(), l.clone()))),
            Err(why) => eprintln!("dagstart: {name}: {why}"),
        }
    }
    for name in names
        .iter()
        .filter(|name| !elsewhere.iter().any(|(n, _)| n == *name))
    {
        let file = config.settings.log_dir.join(format!("{name}.log"));
        let (last, end) = crate::views::logfiles::last_lines(&file, args.tail);
        lines.extend(last.into_iter().map(|line| ((*name).to_owned(), line)));
        files.push(((*name).to_owned(), file, end));
    }
    print_merged(lines, width, args.timestamps)?;
    if args.follow && !elsewhere.is_empty() {
        eprintln!("dagstart: only this host's nodes are followed");
    }
    if args.follow && running {
        follow(&mut files, width, args.timestamps, &config.base_dir)?;
    }
    Ok(exit_code::OK)
}

/// Prints `(node, line)` pairs in the order of their stamps (a stable sort: lines of one node
/// keep their order, lines without a stamp come first), each prefixed with its node, the
/// stamp shown only when asked for.
fn print_merged(
    mut lines: Vec<(String, String)>,
    width: usize,
    timestamps: bool,
) -> Result<(), Error> {
    use crate::views::logfiles::split_stamp;
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

/// In a cluster: the last lines of the named nodes that other hosts run, fetched from them.
fn other_hosts_lines(
    config: &crate::engine::config::Config,
    names: &[&str],
    tail: usize,
) -> Result<Vec<crate::engine::cluster::remote_logs::Fetched>, Error> {
    if config.cluster.is_none() {
        return Ok(Vec::new());
    }
    let local = crate::engine::control::host()
        .map_or_else(crate::engine::cluster::machine_name, str::to_owned);
    let fetched = crate::engine::cluster::remote_logs::fetch(config, &local, names, tail);
    Ok(crate::cli::commands::block_on(fetched)??)
}

/// Prints whole new lines of every file as they appear (merged by time within each look),
/// until the run ends or Ctrl-C.
fn follow(
    files: &mut [(String, PathBuf, u64)],
    width: usize,
    timestamps: bool,
    project: &Path,
) -> Result<(), Error> {
    while crate::engine::control::is_running(project) {
        let mut new_lines = Vec::new();
        for (name, path, offset) in files.iter_mut() {
            let Ok(mut file) = std::fs::File::open(&*path) else {
                continue;
            };
            let len = file.metadata().map_or(0, |m| m.len());
            if len < *offset {
                *offset = 0; // truncated by a new run
            }
            if file.seek(std::io::SeekFrom::Start(*offset)).is_err() {
                continue;
            }
            let mut reader = std::io::BufReader::new(file);
            let mut buf = Vec::new();
            while let Ok(read) = reader.read_until(b'\n', &mut buf) {
                if read == 0 || !buf.ends_with(b"\n") {
                    break; // a partial line waits for its end
                }
                *offset += read as u64;
                let line = String::from_utf8_lossy(&buf);
                new_lines.push((name.clone(), line.trim_end_matches(['\n', '\r']).to_owned()));
                buf.clear();
            }
        }
        print_merged(new_lines, width, timestamps)?;
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}
