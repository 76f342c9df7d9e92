//! Readings from /proc: server RSS and CPU time, machine steal time, open-file limits.

use std::fs;

/// Clock ticks per second of /proc/*/stat and /proc/stat (USER_HZ, 100 on Linux).
pub(crate) const CLK_TCK: f64 = 100.0;

/// Resident set size of `pid` in bytes (VmRSS).
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// utime + stime of `pid` (all threads, exited ones included) in ticks.
pub(crate) fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_cpu_ticks(&stat)
}

/// utime + stime of this process in ticks.
pub(crate) fn self_cpu_ticks() -> Option<u64> {
    stat_cpu_ticks(&fs::read_to_string("/proc/self/stat").ok()?)
}

fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name is in parentheses and may hold spaces: fields count from after ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // after ')' : state(3) ppid(4) ... utime is field 14, stime 15 → indexes 11, 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The servers whose resources are measured (nginx: its worker processes).
#[derive(Debug, Clone, Default)]
pub(crate) struct Server {
    pub(crate) pids: Vec<u32>,
}

impl Server {
    /// Parses `--server-pid 12,13`.
    pub(crate) fn parse(list: Option<&str>) -> Result<Server, String> {
        let mut pids = Vec::new();
        if let Some(list) = list {
            for part in list.split(',').filter(|p| !p.trim().is_empty()) {
                let pid: u32 = part.trim().parse().map_err(|_| format!("bad --server-pid {part:?}"))?;
                if rss_bytes(pid).is_none() {
                    return Err(format!("--server-pid {pid}: no such process (or no /proc)"));
                }
                pids.push(pid);
            }
        }
        Ok(Server { pids })
    }

    /// Whether any pid was given.
    pub(crate) fn known(&self) -> bool {
        !self.pids.is_empty()
    }

    /// Summed RSS in bytes.
    pub(crate) fn rss(&self) -> Option<u64> {
        if self.pids.is_empty() {
            return None;
        }
        self.pids.iter().map(|&p| rss_bytes(p)).sum()
    }

    /// Summed CPU ticks.
    pub(crate) fn cpu(&self) -> Option<u64> {
        if self.pids.is_empty() {
            return None;
        }
        self.pids.iter().map(|&p| cpu_ticks(p)).sum()
    }
}

/// Aggregate CPU counters of the machine, from the first line of /proc/stat.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MachineCpu {
    pub(crate) total: u64,
    pub(crate) steal: u64,
    /// user + nice + system + irq + softirq.
    pub(crate) busy: u64,
}

impl MachineCpu {
    /// Reads /proc/stat (zeros when unreadable).
    pub(crate) fn now() -> MachineCpu {
        let Ok(stat) = fs::read_to_string("/proc/stat") else {
            return MachineCpu::default();
        };
        let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
            return MachineCpu::default();
        };
        // user nice system idle iowait irq softirq steal guest guest_nice
        let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
        let total = v.iter().take(8).sum();
        let at = |i: usize| v.get(i).copied().unwrap_or(0);
        MachineCpu {
            total,
            steal: at(7),
            busy: at(0) + at(1) + at(2) + at(5) + at(6),
        }
    }

    /// Steal time between `self` and `later`: (seconds, percent of all CPU time).
    pub(crate) fn steal_since(&self, later: &MachineCpu) -> (f64, f64) {
        let steal = later.steal.saturating_sub(self.steal);
        let total = later.total.saturating_sub(self.total);
        let pct = if total == 0 {
            0.0
        } else {
            100.0 * steal as f64 / total as f64
        };
        (steal as f64 / CLK_TCK, pct)
    }
}

impl MachineCpu {
    /// CPU seconds used by the whole machine since `self`.
    pub(crate) fn busy_since(&self, later: &MachineCpu) -> f64 {
        later.busy.saturating_sub(self.busy) as f64 / CLK_TCK
    }
}

/// (soft, hard) limit on open files of this process.
pub(crate) fn nofile_limits() -> (u64, u64) {
    let parse = |s: &str| -> u64 {
        if s == "unlimited" {
            u64::MAX
        } else {
            s.parse().unwrap_or(1024)
        }
    };
    let Ok(limits) = fs::read_to_string("/proc/self/limits") else {
        return (1024, 1024);
    };
    for line in limits.lines() {
        if let Some(rest) = line.strip_prefix("Max open files") {
            let mut it = rest.split_whitespace();
            let soft = it.next().map(parse).unwrap_or(1024);
            let hard = it.next().map(parse).unwrap_or(soft);
            return (soft, hard);
        }
    }
    (1024, 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_self() {
        let me = std::process::id();
        assert!(rss_bytes(me).unwrap() > 0);
        assert!(cpu_ticks(me).is_some());
        assert!(stat_cpu_ticks("1 (a b) S 0 0 0 0 0 0 0 0 0 0 7 5 0 0 0 0 0 0 0 0 0 0 0 0 0 0") == Some(12));
        let (soft, hard) = nofile_limits();
        assert!(soft <= hard);
        assert!(MachineCpu::now().total > 0);
    }
}
