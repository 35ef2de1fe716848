//! Peak resident memory, for the benchmarks of every crate (they include this file by path).

/// The peak resident memory (`VmHWM`) of process `pid`, in MiB; 0 where /proc has none.
pub fn peak_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// This process's own peak resident memory, in MiB.
#[allow(dead_code)] // the node-level benchmarks read their node's, by pid
pub fn own_peak_mib() -> f64 {
    peak_mib(std::process::id())
}

/// The CPU time process `pid` has used (user and system, its threads included), in seconds;
/// 0 where /proc has none. Clock ticks are taken as 100 a second (Linux's `USER_HZ`).
#[allow(dead_code)] // the front-end database benchmark's
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// The CPU time every process named `name` has used, in seconds (PostgreSQL's backends).
#[allow(dead_code)]
pub fn cpu_seconds_of(name: &str) -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0.0 };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name))
        .map(cpu_seconds)
        .sum()
}
