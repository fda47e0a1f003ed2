//! Progress on stderr: rows done per table, the rate and the time left.
//! On a terminal one line is redrawn; otherwise (logs, CI) a line is
//! printed at most every two seconds and when a table is done.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    enabled: bool,
    tty: bool,
    table: &'static str,
    total: i64,
    done: i64,
    started: Instant,
    printed: Instant,
}

impl Progress {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            tty: std::io::stderr().is_terminal(),
            table: "",
            total: 0,
            done: 0,
            started: Instant::now(),
            printed: Instant::now(),
        }
    }

    pub fn start(&mut self, table: &'static str, total: i64) {
        self.table = table;
        self.total = total;
        self.done = 0;
        self.started = Instant::now();
        self.printed = Instant::now();
    }

    pub fn advance(&mut self, rows: usize) {
        self.done += rows as i64;
        let every = if self.tty {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(2)
        };
        if self.printed.elapsed() >= every {
            self.print(false);
        }
    }

    pub fn finish(&mut self) {
        self.print(true);
    }

    fn print(&mut self, last: bool) {
        self.printed = Instant::now();
        if !self.enabled {
            return;
        }
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = self.done as f64 / secs;
        let left = (self.total - self.done).max(0) as f64;
        let eta = if rate > 0.0 {
            format!("{:.0} s left", left / rate)
        } else {
            "-".into()
        };
        let width = 24usize;
        let filled = if self.total > 0 {
            (self.done as usize * width) / self.total.max(1) as usize
        } else {
            width
        };
        let bar: String = "#".repeat(filled.min(width)) + &".".repeat(width - filled.min(width));
        let line = format!(
            "{:<10} [{bar}] {}/{} rows, {:.0} rows/s, {}",
            self.table,
            self.done,
            self.total,
            rate,
            if last {
                format!("done in {secs:.1} s")
            } else {
                eta
            }
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r{line}\x1b[K");
            if last {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(err, "{line}");
        }
    }
}
