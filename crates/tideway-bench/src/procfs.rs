//! Readers of `/proc/PID/stat`, `/proc/PID/status` and `/proc/PID/task/*/schedstat`: CPU time,
//! resident memory, and time spent waiting for a CPU.

use std::io;
use std::process::Command;

/// User plus system CPU time of process `pid`, in clock ticks (fields 14 and 15 of
/// `/proc/PID/stat`). Divide by [`clock_ticks_per_sec`] for seconds.
pub fn cpu_ticks(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed /proc/PID/stat"))
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may contain spaces; fields after the last
    // ')' start at field 3 (state), so utime (14) and stime (15) are at offsets 11 and 12.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size of process `pid` in bytes (`VmRSS` of `/proc/PID/status`).
pub fn rss_bytes(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vm_rss(&status)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS in /proc/PID/status"))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let kib: u64 = parts.next()?.parse().ok()?;
    (parts.next()? == "kB").then_some(kib * 1024)
}

/// Time the threads of process `pid` have spent runnable but waiting for a CPU, in nanoseconds:
/// the sum over `/proc/PID/task/*/schedstat` of the second field (`run_delay`). It shows how
/// much a process pinned to a core shared with other work was held back by that work; threads
/// that have exited are not counted.
pub fn run_delay_ns(pid: u32) -> io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = entry?.path().join("schedstat");
        // A thread may exit between the listing and the read.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        total += parse_run_delay(&text)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed schedstat"))?;
    }
    Ok(total)
}

fn parse_run_delay(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().nth(1)?.parse().ok()
}

/// Clock ticks per second (`getconf CLK_TCK`), the unit of [`cpu_ticks`].
pub fn clock_ticks_per_sec() -> io::Result<u64> {
    let out = Command::new("getconf").arg("CLK_TCK").output()?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "getconf CLK_TCK: not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_survive_spaces_and_parens_in_the_command_name() {
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 3 1000 50";
        assert_eq!(parse_cpu_ticks(stat), Some(12));
    }

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tx\nVmPeak:\t  10 kB\nVmRSS:\t    2048 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss(status), Some(2048 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn run_delay_is_the_second_schedstat_field() {
        assert_eq!(
            parse_run_delay("257130634 309069884 700\n"),
            Some(309_069_884)
        );
        assert_eq!(parse_run_delay("1\n"), None);
    }

    #[test]
    fn this_process_is_readable() {
        let pid = std::process::id();
        assert!(rss_bytes(pid).unwrap() > 0);
        cpu_ticks(pid).unwrap();
        assert!(clock_ticks_per_sec().unwrap() > 0);
        run_delay_ns(pid).unwrap();
    }
}
