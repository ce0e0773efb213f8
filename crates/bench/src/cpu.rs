//! CPU time used during a measured window, by process group, read from
//! /proc: where the two cores go while each run is measured. Processes that
//! exit during the window are not counted; none of the measured ones do.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use serde::Serialize;

/// Kernel clock ticks per second in /proc (USER_HZ): 100 on every Linux
/// architecture this runs on.
const TICKS_PER_SECOND: f64 = 100.0;

/// Milliseconds of CPU per 1,000 requests.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuUse {
    pub postgres_ms: f64,
    pub rabbitmq_ms: f64,
    pub worker_ms: f64,
    /// This program: the publisher and event tap (and, in the broker
    /// baseline, the pass-through consumer).
    pub bench_ms: f64,
    /// Every process, the kernel included (busy time from /proc/stat).
    pub machine_ms: f64,
}

/// Cumulative CPU seconds, by group, at one moment.
pub struct Snapshot {
    by_group: HashMap<&'static str, f64>,
    machine: f64,
}

/// The worker's command name in /proc, from the binary the benchmark runs
/// (`--worker-binary` may name a copy called anything).
static WORKER_COMM: OnceLock<String> = OnceLock::new();

/// Count the processes of this binary as the worker. Call it once, before
/// the first snapshot; without it, `disconnect-worker` is the worker.
pub fn set_worker_binary(path: &Path) {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let _ = WORKER_COMM.set(comm_of(&name));
}

/// What the kernel keeps of an executable's name as its command name: the
/// first 15 bytes.
fn comm_of(name: &str) -> String {
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

fn group_of(pid: u32, comm: &str) -> Option<&'static str> {
    let worker = WORKER_COMM
        .get_or_init(|| comm_of("disconnect-worker"))
        .as_str();
    if pid == std::process::id() {
        Some("bench")
    } else if comm == "postgres" {
        Some("postgres")
    } else if comm.starts_with("beam") {
        Some("rabbitmq")
    } else if comm == worker {
        Some("worker")
    } else {
        None
    }
}

/// utime + stime of one process, in seconds, and its command name.
fn process_cpu(pid: u32) -> Option<(String, f64)> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The command name and utime + stime, in seconds, of a /proc/PID/stat line.
fn parse_stat(stat: &str) -> Option<(String, f64)> {
    // The command name is in parentheses and may hold spaces.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // After the name: state is field 3, utime 14 and stime 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) / TICKS_PER_SECOND))
}

/// Busy CPU seconds of the whole machine: all but idle and iowait.
fn machine_busy() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|field| field.parse().ok())
        .collect();
    let total: f64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some((total - idle) / TICKS_PER_SECOND)
}

pub fn snapshot() -> Snapshot {
    let mut by_group = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse().ok())
            else {
                continue;
            };
            if let Some((comm, seconds)) = process_cpu(pid) {
                if let Some(group) = group_of(pid, &comm) {
                    *by_group.entry(group).or_insert(0.0) += seconds;
                }
            }
        }
    }
    Snapshot {
        by_group,
        machine: machine_busy().unwrap_or_default(),
    }
}

impl Snapshot {
    /// CPU used from `self` to `later`, per 1,000 of `requests`.
    pub fn per_thousand(&self, later: &Snapshot, requests: usize) -> CpuUse {
        let scale = 1_000_000.0 / requests.max(1) as f64;
        let used = |group: &str| {
            let before = self.by_group.get(group).copied().unwrap_or_default();
            let after = later.by_group.get(group).copied().unwrap_or_default();
            (after - before).max(0.0) * scale
        };
        CpuUse {
            postgres_ms: used("postgres"),
            rabbitmq_ms: used("rabbitmq"),
            worker_ms: used("worker"),
            bench_ms: used("bench"),
            machine_ms: (later.machine - self.machine).max(0.0) * scale,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn a_worker_binary_s_command_name_is_its_file_name_cut_to_15_bytes() {
        assert_eq!(comm_of("disconnect-worker"), "disconnect-work");
        assert_eq!(comm_of("worker-5876"), "worker-5876");
        assert_eq!(comm_of("wörker-über-lång"), "wörker-über-l");
    }

    #[test]
    fn a_stat_line_gives_the_name_and_user_plus_system_time() {
        // A name with a space and a parenthesis, as a process may choose.
        let line =
            "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 1 0 0 0 250 30 0 0 20 0 3 0 1 1 1";
        let (comm, seconds) = parse_stat(line).expect("parsed");
        assert_eq!(comm, "tokio (rt) x");
        assert!((seconds - 2.8).abs() < 1e-9);
    }

    #[test]
    fn cpu_spent_by_this_process_is_counted_as_the_bench() {
        let before = snapshot();
        let started = Instant::now();
        let mut spin = 0u64;
        while started.elapsed() < Duration::from_millis(300) {
            spin = spin.wrapping_add(1);
        }
        assert!(spin > 0);
        let used = before.per_thousand(&snapshot(), 1000);
        assert!(used.bench_ms > 0.0, "{used:?}");
    }
}
