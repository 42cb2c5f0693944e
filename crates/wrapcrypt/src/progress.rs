//! Renders `wrapcrypt_ops::progress::Progress` updates on standard output,
//! as cryptsetup's tools do: on a terminal one line redrawn every half
//! second ("Progress: 42.0%, ETA 00m10s,  420 MiB written, speed  41.0
//! MiB/s") ending in "Finished, …"; `--progress-frequency N` prints a line
//! every N seconds and `--progress-json` JSON lines, terminal or not;
//! otherwise, and always with `--batch-mode`, nothing (docs/messages.md).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use serde_json::json;
use wrapcrypt_ops::progress::{Progress, Unit};

use crate::cli::opts::Global;

/// How updates are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Off,
    /// A terminal: one line, cleared and redrawn.
    Redraw,
    /// `--progress-frequency`: whole lines.
    Lines,
    /// `--progress-json`.
    Json,
}

/// A progress renderer for one piece of work.
pub struct Reporter {
    mode: Mode,
    unit: Unit,
    device: String,
    every: Duration,
    created: Instant,
    /// The first update seen (time, done): rates count from there, so a
    /// resumed run is not credited with work done before it.
    first: Option<(Instant, u64)>,
    last_draw: Option<Instant>,
    /// A redrawn line is on the terminal (to clear before other output).
    line_open: bool,
    finished: bool,
}

impl Reporter {
    /// The renderer `g`'s options and standard output call for.
    pub fn new(g: &Global, unit: Unit, device: &str) -> Reporter {
        let mode = if g.batch_mode {
            Mode::Off
        } else if g.progress_json {
            Mode::Json
        } else if g.progress_frequency.is_some() {
            Mode::Lines
        } else if std::io::stdout().is_terminal() {
            Mode::Redraw
        } else {
            Mode::Off
        };
        let every = match g.progress_frequency {
            Some(n) if n > 0 => Duration::from_secs(u64::from(n)),
            _ => Duration::from_millis(500),
        };
        Reporter {
            mode,
            unit,
            device: device.to_string(),
            every,
            created: Instant::now(),
            first: None,
            last_draw: None,
            line_open: false,
            finished: false,
        }
    }

    /// Clears a redrawn line, so the next output starts at column 0.
    pub fn clear(&mut self) {
        if self.line_open {
            print!("\x1b[2K\r");
            let _ = std::io::stdout().flush();
            self.line_open = false;
        }
    }

    fn draw(&mut self, done: u64, total: u64) {
        let now = Instant::now();
        let last = done >= total;
        let (t0, d0) = match self.first {
            Some(f) => f,
            None => {
                self.first = Some((now, done));
                // One update that is also the last: the whole run counts.
                if !last {
                    return;
                }
                (self.created, 0)
            }
        };
        // A line every interval (counted from the first update, which only
        // starts the clock), and always the last one.
        if !last && now - self.last_draw.unwrap_or(t0) < self.every {
            return;
        }
        self.last_draw = Some(now);
        let secs = (now - t0).as_secs_f64().max(1e-6);
        let rate = done.saturating_sub(d0) as f64 / secs;
        let eta = if rate > 0.0 {
            total.saturating_sub(done) as f64 / rate
        } else {
            0.0
        };
        let line = match self.mode {
            Mode::Off => return,
            Mode::Json => self.json(done, total, rate, eta, secs),
            _ => self.text(done, total, rate, eta, secs, last),
        };
        let mut o = std::io::stdout().lock();
        match self.mode {
            Mode::Redraw => {
                let _ = write!(o, "\x1b[2K\r");
                match line {
                    Some(l) if last => {
                        let _ = writeln!(o, "{l}");
                        self.line_open = false;
                    }
                    Some(l) => {
                        let _ = write!(o, "{l}");
                        self.line_open = true;
                    }
                    None => self.line_open = false,
                }
            }
            _ => {
                if let Some(l) = line {
                    let _ = writeln!(o, "{l}");
                }
            }
        }
        let _ = o.flush();
        if last {
            self.finished = true;
        }
    }

    /// The text line; `None` where the last redraw is only cleared (item
    /// counts such as benchmark rows: the rows themselves are the result).
    fn text(
        &self,
        done: u64,
        total: u64,
        rate: f64,
        eta: f64,
        spent: f64,
        last: bool,
    ) -> Option<String> {
        let pct = if total == 0 {
            100.0
        } else {
            done as f64 * 100.0 / total as f64
        };
        match self.unit {
            Unit::Bytes => {
                let (n, u) = bytes_in_units(done);
                let (r, ru) = rate_in_units(rate);
                Some(if last {
                    format!(
                        "Finished, time {}, {n:4} {u} written, speed {r:5.1} {ru}/s",
                        human_time(spent)
                    )
                } else {
                    format!(
                        "Progress: {pct:5.1}%, ETA {}, {n:4} {u} written, speed {r:5.1} {ru}/s",
                        human_time(eta)
                    )
                })
            }
            Unit::Items(_) if last && self.mode == Mode::Redraw => None,
            Unit::Items(what) => Some(if last {
                format!("Finished, time {}, {done} {what}", human_time(spent))
            } else {
                format!(
                    "Progress: {pct:5.1}%, ETA {}, {done} of {total} {what}",
                    human_time(eta)
                )
            }),
        }
    }

    /// cryptsetup's `--progress-json` object (numbers as strings); item
    /// counts say which unit they count.
    fn json(&self, done: u64, total: u64, rate: f64, eta: f64, spent: f64) -> Option<String> {
        let ms = |s: f64| ((s * 1000.0) as u64).to_string();
        let v = match self.unit {
            Unit::Bytes => json!({
                "device": self.device,
                "device_bytes": done.to_string(),
                "device_size": total.to_string(),
                "speed": (rate as u64).to_string(),
                "eta_ms": ms(eta),
                "time_ms": ms(spent),
            }),
            Unit::Items(what) => json!({
                "device": self.device,
                "unit": what,
                "done": done.to_string(),
                "total": total.to_string(),
                "eta_ms": ms(eta),
                "time_ms": ms(spent),
            }),
        };
        Some(v.to_string())
    }
}

impl Progress for Reporter {
    fn update(&mut self, done: u64, total: u64) {
        if self.mode != Mode::Off && !self.finished {
            self.draw(done, total);
        }
    }
}

impl Drop for Reporter {
    /// Work that ended early (an error, an interrupt) leaves no half line.
    fn drop(&mut self) {
        self.clear();
    }
}

/// Bytes as cryptsetup counts them: MiB below 4 GiB, GiB below 4 TiB, …
fn bytes_in_units(b: u64) -> (u64, &'static str) {
    match b {
        b if b < 1 << 32 => (b >> 20, "MiB"),
        b if b < 1 << 42 => (b >> 30, "GiB"),
        b if b < 1 << 52 => (b >> 40, "TiB"),
        b if b < 1 << 62 => (b >> 50, "PiB"),
        b => (b >> 60, "EiB"),
    }
}

/// A rate in B/KiB/MiB/GiB per second.
fn rate_in_units(r: f64) -> (f64, &'static str) {
    const K: f64 = 1024.0;
    if r > K * K * K {
        (r / (K * K * K), "GiB")
    } else if r > K * K {
        (r / (K * K), "MiB")
    } else if r > K {
        (r / K, "KiB")
    } else {
        (r, "B")
    }
}

/// "12m44s" below 90 minutes, "26h12m44s" below 36 hours, else "3 days".
fn human_time(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    if s < 90 * 60 {
        format!("{:02}m{:02}s", s / 60, s % 60)
    } else if s < 36 * 3600 {
        format!("{:02}h{:02}m{:02}s", s / 3600, (s / 60) % 60, s % 60)
    } else {
        format!("{:02} days", s / 86400)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_times_read_as_cryptsetup_prints_them() {
        assert_eq!(bytes_in_units(48 << 20), (48, "MiB"));
        assert_eq!(bytes_in_units(5 << 30), (5, "GiB"));
        assert_eq!(rate_in_units(41.0 * 1048576.0).1, "MiB");
        assert_eq!(rate_in_units(512.0), (512.0, "B"));
        assert_eq!(human_time(10.4), "00m10s");
        assert_eq!(human_time(3725.0), "62m05s");
        assert_eq!(human_time(2.0 * 3600.0 + 61.0), "02h01m01s");
        assert_eq!(human_time(3.0 * 86400.0), "03 days");
    }
}
