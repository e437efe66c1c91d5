//! The server's memory, read from /proc/PID/status: resident set now (VmRSS) and its peak
//! over the process's life (VmHWM). Linux only; elsewhere the read fails with a clear error.

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
#[error("cannot read the memory of process {pid} from /proc/{pid}/status: {message}")]
pub struct MemoryError {
    pub pid: u32,
    pub message: String,
}

/// One reading, in KiB (the unit /proc reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(super) struct ProcMemory {
    pub rss_kib: u64,
    pub peak_kib: u64,
}

pub(super) fn read(pid: u32) -> Result<ProcMemory, MemoryError> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| MemoryError {
        pid,
        message: e.to_string(),
    })?;
    parse(&text).ok_or_else(|| MemoryError {
        pid,
        message: "no VmRSS/VmHWM lines (a kernel thread, or not Linux?)".into(),
    })
}

fn parse(status: &str) -> Option<ProcMemory> {
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some(ProcMemory {
        rss_kib: field("VmRSS:")?,
        peak_kib: field("VmHWM:")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_status() {
        let text = "Name:\tcapf\nVmPeak:\t  900000 kB\nVmHWM:\t   52340 kB\nVmRSS:\t   48100 kB\n";
        assert_eq!(
            parse(text),
            Some(ProcMemory {
                rss_kib: 48100,
                peak_kib: 52340
            })
        );
        assert_eq!(parse("Name:\tkthreadd\n"), None);
        assert_eq!(parse("VmRSS:\tlots kB\nVmHWM:\t1 kB\n"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = read(std::process::id()).unwrap();
        assert!(me.rss_kib > 0 && me.peak_kib >= me.rss_kib);
        assert!(read(u32::MAX).is_err());
    }
}
