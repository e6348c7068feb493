//! The load generator's figures: latency percentiles, the summary (text or
//! JSON) and the server's CPU time read from /proc.

use std::time::Duration;

/// Nearest-rank percentile `p` (0..=100) of `sorted` (ascending); 0 when empty.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    sorted.get(index).copied().unwrap_or(0)
}

/// Latency figures in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl Latency {
    /// Sorts `samples` (nanoseconds) in place.
    pub fn of(samples: &mut [u64]) -> Latency {
        samples.sort_unstable();
        Latency {
            p50: percentile(samples, 50.0),
            p90: percentile(samples, 90.0),
            p99: percentile(samples, 99.0),
            max: samples.last().copied().unwrap_or(0),
        }
    }
}

/// `850 µs` below a millisecond, `1.25 ms` above.
pub fn human(nanos: u64) -> String {
    if nanos < 1_000_000 { format!("{} µs", nanos / 1_000) } else { format!("{:.2} ms", nanos as f64 / 1e6) }
}

/// What the counters read at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub sent: u64,
    pub accept: u64,
    pub reject: u64,
    pub challenge: u64,
    pub timeout: u64,
    pub bad: u64,
    /// Answers to requests that had already timed out (not counted otherwise).
    pub late: u64,
}

impl Counts {
    /// Responses that verified and carry a known code.
    pub fn answered(&self) -> u64 {
        self.accept + self.reject + self.challenge
    }
}

/// The end-of-run report.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub elapsed: Duration,
    pub counts: Counts,
    pub latency: Latency,
    /// Server CPU seconds used during the run, when a pid was given.
    pub server_cpu: Option<f64>,
}

impl Summary {
    /// Answered requests per second of the run.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { self.counts.answered() as f64 / secs } else { 0.0 }
    }

    /// Server CPU microseconds per answered request.
    pub fn cpu_per_request_us(&self) -> Option<f64> {
        let answered = self.counts.answered();
        self.server_cpu.map(|cpu| if answered > 0 { cpu * 1e6 / answered as f64 } else { 0.0 })
    }

    pub fn text(&self) -> String {
        let c = &self.counts;
        let l = &self.latency;
        let mut out = format!(
            "{:.2} s, {} sent, {:.1} requests/s\naccept {}  reject {}  challenge {}  timeout {}  bad {}  late {}\n\
             latency p50 {}  p90 {}  p99 {}  max {}\n",
            self.elapsed.as_secs_f64(),
            c.sent,
            self.rate(),
            c.accept,
            c.reject,
            c.challenge,
            c.timeout,
            c.bad,
            c.late,
            human(l.p50),
            human(l.p90),
            human(l.p99),
            human(l.max),
        );
        if let Some(us) = self.cpu_per_request_us() {
            out.push_str(&format!("server CPU {us:.1} µs per request\n"));
        }
        out
    }

    pub fn json(&self) -> serde_json::Value {
        let c = &self.counts;
        let us = |nanos: u64| nanos as f64 / 1e3;
        serde_json::json!({
            "elapsed_s": self.elapsed.as_secs_f64(),
            "requests_per_s": self.rate(),
            "sent": c.sent,
            "accept": c.accept,
            "reject": c.reject,
            "challenge": c.challenge,
            "timeout": c.timeout,
            "bad": c.bad,
            "late": c.late,
            "latency_us": {
                "p50": us(self.latency.p50),
                "p90": us(self.latency.p90),
                "p99": us(self.latency.p99),
                "max": us(self.latency.max),
            },
            "server_cpu_us_per_request": self.cpu_per_request_us(),
        })
    }
}

/// utime + stime (clock ticks) from the text of /proc/PID/stat. The command
/// name in parentheses may hold spaces, so fields are counted after the last `)`.
pub fn parse_stat(text: &str) -> Option<u64> {
    let (_, rest) = text.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    // After `)`: field 3 (state) is index 0, so utime (14) and stime (15) are 11 and 12.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU seconds used so far by process `pid`.
pub fn process_cpu(pid: u32, ticks_per_second: u64) -> Result<f64, String> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let ticks = parse_stat(&text).ok_or_else(|| format!("cannot parse {path}"))?;
    Ok(ticks as f64 / ticks_per_second.max(1) as f64)
}

/// Clock ticks per second: `getconf CLK_TCK` (libc is not a dependency), 100 if that fails.
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|&ticks| ticks > 0)
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(percentile(&[], 50.0), 0);
        assert_eq!(percentile(&[7], 0.0), 7);
        assert_eq!(percentile(&[7], 99.0), 7);
        let hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&hundred, 50.0), 50);
        assert_eq!(percentile(&hundred, 90.0), 90);
        assert_eq!(percentile(&hundred, 99.0), 99);
        assert_eq!(percentile(&hundred, 100.0), 100);
        let ten: Vec<u64> = (1..=10).collect();
        // 99 % of 10 samples is rank 10 (ceil 9.9): the largest.
        assert_eq!(percentile(&ten, 99.0), 10);
        assert_eq!(percentile(&ten, 50.0), 5);
    }

    #[test]
    fn latency_sorts_its_samples() {
        let mut samples = vec![5_000, 1_000, 3_000, 2_000, 4_000];
        let l = Latency::of(&mut samples);
        assert_eq!(l, Latency { p50: 3_000, p90: 5_000, p99: 5_000, max: 5_000 });
        assert_eq!(Latency::of(&mut []), Latency::default());
    }

    #[test]
    fn human_units() {
        assert_eq!(human(85_400), "85 µs");
        assert_eq!(human(999_999), "999 µs");
        assert_eq!(human(1_250_000), "1.25 ms");
    }

    #[test]
    fn proc_stat_fields() {
        let line = "1234 (otpd serve) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 31 0 0 20 0 5 0 100 0 0";
        assert_eq!(parse_stat(line), Some(281));
        assert_eq!(parse_stat("1234 (x) S 1"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
        // Our own process has a readable stat.
        assert!(process_cpu(std::process::id(), clock_ticks()).is_ok());
    }

    #[test]
    fn summary_figures() {
        let summary = Summary {
            elapsed: Duration::from_secs(2),
            counts: Counts { sent: 100, accept: 90, reject: 8, challenge: 2, ..Counts::default() },
            latency: Latency { p50: 100_000, p90: 200_000, p99: 2_000_000, max: 3_000_000 },
            server_cpu: Some(0.01),
        };
        assert_eq!(summary.rate(), 50.0);
        assert_eq!(summary.cpu_per_request_us(), Some(100.0));
        let json = summary.json();
        assert_eq!(json["accept"], 90);
        assert_eq!(json["latency_us"]["p99"], 2000.0);
        assert!(summary.text().contains("p99 2.00 ms"));
    }
}
