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
