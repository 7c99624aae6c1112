//! CPU and memory of each node's process group, read from /proc.
//!
//! A node's leader is the leader of its process group, so every process whose group is the
//! leader's pid belongs to the node (what it forked too, unless it left the group). CPU is the
//! share of one CPU used since the previous reading.

use std::collections::HashMap;
use std::time::Instant;

/// One reading of a group: CPU in percent of one CPU, resident memory in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub cpu: f64,
    pub rss: u64,
}

/// Keeps the previous reading, for CPU shares.
#[derive(Debug, Default)]
pub struct UsageMeter {
    /// Group -> (CPU ticks, when read).
    last: HashMap<u32, (u64, Instant)>,
}

impl UsageMeter {
    /// The usage of each of `groups` (leader pids) now.
    pub fn read(&mut self, groups: &[u32]) -> HashMap<u32, Usage> {
        let ticks_per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100) as f64;
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .unwrap_or(4096) as u64;
        let mut totals: HashMap<u32, (u64, u64)> = groups.iter().map(|&g| (g, (0, 0))).collect();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(stat) = entry
                    .file_name()
                    .to_str()
                    .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
                else {
                    continue;
                };
                if let Some((group, ticks, pages)) = parse_stat(&stat) {
                    if let Some(total) = totals.get_mut(&group) {
                        total.0 += ticks;
                        total.1 += pages * page;
                    }
                }
            }
        }
        let now = Instant::now();
        let mut usage = HashMap::new();
        for (group, (ticks, rss)) in totals {
            let cpu = match self.last.get(&group) {
                Some(&(before, at)) if ticks >= before => {
                    let seconds = now.duration_since(at).as_secs_f64().max(1e-3);
                    100.0 * (ticks - before) as f64 / ticks_per_second / seconds
                }
                _ => 0.0,
            };
            self.last.insert(group, (ticks, now));
            usage.insert(group, Usage { cpu, rss });
        }
        self.last.retain(|g, _| groups.contains(g));
        usage
    }
}

/// (process group, utime + stime, resident pages) from a /proc/PID/stat line. The command
/// name in parentheses may hold spaces and parentheses: fields count from the last `)`.
fn parse_stat(stat: &str) -> Option<(u32, u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) pgrp(2) ... utime(11) stime(12) ... rss(21).
    let group = fields.get(2)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let rss = fields.get(21)?.parse().ok()?;
    Some((group, utime + stime, rss))
}

/// "12.3M", "640K": memory in a few characters.
pub fn bytes(n: u64) -> String {
    match n {
        0 => "-".into(),
        n if n >= 1 << 30 => format!("{:.1}G", n as f64 / f64::from(1u32 << 30)),
        n if n >= 1 << 20 => format!("{:.1}M", n as f64 / f64::from(1u32 << 20)),
        n => format!("{}K", n >> 10),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let line = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 \
                    100 1000000 250 18446744073709551615";
        assert_eq!(parse_stat(line), Some((4242, 10, 250)));
    }

    #[test]
    fn our_own_group_is_measured() {
        let me = nix::unistd::getpgrp().as_raw() as u32;
        let usage = UsageMeter::default().read(&[me]);
        assert!(usage[&me].rss > 0);
        assert_eq!(bytes(3 << 20), "3.0M");
    }
}
