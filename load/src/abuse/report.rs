//! What the abusive-client measurement reports, computed from the members'
//! records of each window (pure: no I/O, so the pooling is tested on its own).
//!
//! Windows run in ABBA order: quiet 1, abused 1, abused 2, quiet 2, quiet 3, …
//! A slow drift of the machine (other work, the page cache, the allocator's
//! state, what an abused window leaves behind) then reaches both phases alike
//! instead of landing on whichever window came second: with plain alternation
//! every abused window ran later than its quiet one, and the p99 measured here
//! drifted up over a run by as much as the effect looked for. Each phase's
//! samples are pooled over its windows.

use crate::procstat::Usage;
use crate::stats::{Samples, Summary};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// One band's members over one window.
#[derive(Debug, Clone, Default)]
pub struct WindowRecord {
    /// Each tick's delay (µs): receive time minus the tick's server time.
    pub delays_us: Vec<i64>,
    /// Connections the members lost (errors or closes) in the window.
    pub dropped: u64,
}

/// One band's members over one phase (all its quiet or all its abused windows).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PhaseSeen {
    /// Over the phase's windows' samples pooled.
    pub tick_delay: Option<Summary>,
    /// Each window's own p99 (ms), in order; `None` for a window without ticks.
    pub window_p99_ms: Vec<Option<f64>>,
    pub dropped: u64,
}

/// How far the quiet windows disagree among themselves in the same run: the
/// floor under which an abused/quiet ratio says nothing.
///
/// `quiet_p99_aa` is an A/A comparison made the way the measurement itself is
/// made: the quiet windows split alternately (1st, 3rd, … against 2nd, 4th, …),
/// each half's samples pooled, the larger pooled p99 over the smaller (so ≥ 1).
/// Alternating keeps the split exposed to the run's drift as the quiet/abused
/// comparison is; each half holds about half the quiet samples, so its p99 is
/// noisier than a whole phase's: the floor is meant to err high (a ratio
/// above the A/A, or below its inverse, is more than the quiet windows
/// differed by; one between cannot be told from noise). It is one draw of
/// that noise, not a bound: with two quiet windows each half is a single
/// window, and more rounds make it steadier. It needs two quiet windows
/// (`--rounds 2` or more); with an odd count the halves differ in size. `quiet_p99_max_over_min` is the plainer spread of the single windows'
/// p99s, each from a fraction of the samples: a reader's view of the drift.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Noise {
    pub quiet_p99_aa: Option<f64>,
    pub quiet_p99_max_over_min: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct BandReport {
    pub quiet: PhaseSeen,
    pub abused: PhaseSeen,
    /// Pooled abused p99 over pooled quiet p99.
    pub p99_ratio: Option<f64>,
    pub noise: Noise,
}

/// Whether window `w` (from 0) is an abused one. The phases run quiet, abused,
/// abused, quiet, quiet, abused, … (ABBA): each pair of rounds has both phases
/// in both orders, so a drift of the machine (or of the stack) over the run
/// weighs on both alike instead of always on the phase that runs second.
pub fn abused_window(w: usize) -> bool {
    (w % 2 == 1) != ((w / 2) % 2 == 1)
}

/// One band's report from its windows in the order they ran (`abused_window`
/// says which were abused).
pub fn band_report(windows: &[WindowRecord]) -> BandReport {
    let phase = |abused: bool| -> Vec<&WindowRecord> {
        windows
            .iter()
            .enumerate()
            .filter(|(i, _)| abused_window(*i) == abused)
            .map(|(_, w)| w)
            .collect()
    };
    let (quiet, abused) = (phase(false), phase(true));
    let seen = |ws: &[&WindowRecord]| PhaseSeen {
        tick_delay: pooled(ws),
        window_p99_ms: ws.iter().map(|w| pooled(&[w]).map(|s| s.p99_ms)).collect(),
        dropped: ws.iter().map(|w| w.dropped).sum(),
    };
    let (quiet_seen, abused_seen) = (seen(&quiet), seen(&abused));
    let p99 = |s: &PhaseSeen| s.tick_delay.map(|s| s.p99_ms);
    let p99_ratio = match (p99(&quiet_seen), p99(&abused_seen)) {
        (Some(q), Some(a)) if q > 0.0 => Some(a / q),
        _ => None,
    };
    let halves = |odd: bool| -> Vec<&WindowRecord> {
        quiet
            .iter()
            .enumerate()
            .filter(|(i, _)| (i % 2 == 0) == odd)
            .map(|(_, w)| *w)
            .collect()
    };
    let quiet_p99_aa = if quiet.len() < 2 {
        None
    } else {
        larger_over_smaller(&[
            pooled(&halves(true)).map(|s| s.p99_ms),
            pooled(&halves(false)).map(|s| s.p99_ms),
        ])
    };
    let quiet_p99_max_over_min = if quiet.len() < 2 {
        None
    } else {
        larger_over_smaller(&quiet_seen.window_p99_ms)
    };
    BandReport {
        quiet: quiet_seen,
        abused: abused_seen,
        p99_ratio,
        noise: Noise {
            quiet_p99_aa,
            quiet_p99_max_over_min,
        },
    }
}

/// p50, p99 and max of the windows' samples together.
fn pooled(windows: &[&WindowRecord]) -> Option<Summary> {
    let mut samples = Samples::default();
    for w in windows {
        w.delays_us.iter().for_each(|&v| samples.push(v));
    }
    samples.summary()
}

/// The largest over the smallest; `None` if any is missing or not above 0.
fn larger_over_smaller(values: &[Option<f64>]) -> Option<f64> {
    let values: Option<Vec<f64>> = values.iter().copied().collect();
    let values = values?;
    let min = values.iter().copied().reduce(f64::min)?;
    let max = values.iter().copied().reduce(f64::max)?;
    (min > 0.0).then(|| max / min)
}

/// One process's CPU over one phase: its windows' CPU time summed, and that
/// as a share of one core over the phase's windows' time summed.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseCpu {
    pub name: String,
    pub cpu_secs: f64,
    pub cpu_percent: f64,
    pub peak_rss_mib: f64,
}

/// A process's usage over one window (`None`: unreadable), and the window's
/// measured length.
pub type WindowUsage = (Option<Usage>, Duration);

/// A process's usage per window summed over the phase; `None` if the process
/// was unreadable in any of them.
pub fn phase_cpu(windows: &[WindowUsage]) -> Option<PhaseCpu> {
    let (mut cpu_secs, mut secs, mut peak_rss_mib) = (0.0, 0.0, 0.0f64);
    let mut name = None;
    for (usage, length) in windows {
        let usage = usage.as_ref()?;
        cpu_secs += usage.cpu_percent / 100.0 * length.as_secs_f64();
        secs += length.as_secs_f64();
        peak_rss_mib = peak_rss_mib.max(usage.peak_rss_mib);
        name.get_or_insert_with(|| usage.name.clone());
    }
    Some(PhaseCpu {
        name: name?,
        cpu_secs,
        cpu_percent: cpu_secs / secs.max(1e-3) * 100.0,
        peak_rss_mib,
    })
}

/// What the abusers did and were answered.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Abusers {
    pub sockets_opened: u64,
    pub sockets_refused: BTreeMap<String, u64>,
    pub flood_sent: u64,
    pub flood_answers: BTreeMap<String, u64>,
    /// How each of the flooder's sockets ended (it connects again each time).
    pub flood_sockets: BTreeMap<String, u64>,
    pub guesses: u64,
    pub guess_answers: BTreeMap<String, u64>,
}

impl Abusers {
    /// Adds another window's tallies to these.
    pub fn add(&mut self, other: &Abusers) {
        let merge = |into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>| {
            for (k, v) in from {
                *into.entry(k.clone()).or_default() += v;
            }
        };
        self.sockets_opened += other.sockets_opened;
        merge(&mut self.sockets_refused, &other.sockets_refused);
        self.flood_sent += other.flood_sent;
        merge(&mut self.flood_answers, &other.flood_answers);
        merge(&mut self.flood_sockets, &other.flood_sockets);
        self.guesses += other.guesses;
        merge(&mut self.guess_answers, &other.guess_answers);
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AbuseReport {
    pub rounds: usize,
    pub window_secs: u64,
    /// The abused band's other members, then another band's.
    pub bands: [BandReport; 2],
    /// Where in each tick period each band's ticks go out (its shard's slot,
    /// ms): two bands in one slot are ticked and fanned out back to back.
    pub tick_slot_ms: [f64; 2],
    /// Summed over the abused windows.
    pub abusers: Abusers,
    /// Each stack process's CPU over the quiet and over the abused windows:
    /// where what the abusers cost lands.
    pub cpu: Vec<(Option<PhaseCpu>, Option<PhaseCpu>)>,
}

const BAND_NAMES: [&str; 2] = [
    "the abused band's other 4 members",
    "another band's 4 members",
];

impl AbuseReport {
    pub fn table(&self) -> String {
        let summary = |s: &Option<Summary>| {
            s.as_ref().map_or("–".to_owned(), |s| {
                format!("{:.2} / {:.2} / {:.2} ms", s.p50_ms, s.p99_ms, s.max_ms)
            })
        };
        let num = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.2}"));
        let mut rows = vec![
            format!(
                "{} rounds of a {} s quiet and a {} s abused window; each phase's samples pooled",
                self.rounds, self.window_secs, self.window_secs
            ),
            "| members | quiet: tick delay p50 / p99 / max | abused: p50 / p99 / max | p99 abused/quiet | quiet's own: p99 A/A, window p99 max/min | dropped (quiet, abused) |".into(),
            "|---|---|---|---|---|---|".into(),
        ];
        for (name, b) in BAND_NAMES.iter().zip(&self.bands) {
            rows.push(format!(
                "| {name} | {} | {} | {} | {}, {} | {}, {} |",
                summary(&b.quiet.tick_delay),
                summary(&b.abused.tick_delay),
                num(b.p99_ratio),
                num(b.noise.quiet_p99_aa),
                num(b.noise.quiet_p99_max_over_min),
                b.quiet.dropped,
                b.abused.dropped
            ));
        }
        // Each window's p99 in the order they ran, so the drift shows: each
        // window as (abused?, its index within its phase).
        let order: Vec<(bool, usize)> = (0..2 * self.rounds)
            .map(|w| {
                let abused = abused_window(w);
                (
                    abused,
                    (0..w).filter(|&v| abused_window(v) == abused).count(),
                )
            })
            .collect();
        let mut head = "\n| tick delay p99 per window (ms) |".to_owned();
        for &(abused, i) in &order {
            let phase = if abused { "abused" } else { "quiet" };
            head.push_str(&format!(" {phase} {} |", i + 1));
        }
        rows.push(head);
        rows.push(format!("|---|{}", "---|".repeat(2 * self.rounds)));
        for (name, b) in BAND_NAMES.iter().zip(&self.bands) {
            let mut row = format!("| {name} |");
            for &(abused, i) in &order {
                let phase = if abused { &b.abused } else { &b.quiet };
                row.push_str(&format!(
                    " {} |",
                    num(phase.window_p99_ms.get(i).copied().flatten())
                ));
            }
            rows.push(row);
        }
        rows.push(String::new());
        for (name, b) in BAND_NAMES.iter().zip(&self.bands) {
            rows.push(format!("{name}: {}", reading(b)));
        }
        rows.push(format!(
            "\ntick slots (ms into each period): the abused band {:.0}, another band {:.0}",
            self.tick_slot_ms[0], self.tick_slot_ms[1]
        ));
        let a = &self.abusers;
        rows.push(format!(
            "\nabusers, over {} abused windows: sockets opened {} refused {:?}; flood sent {} answered {:?}, its sockets {:?}; \
             code guesses {} answered {:?}",
            self.rounds,
            a.sockets_opened,
            a.sockets_refused,
            a.flood_sent,
            a.flood_answers,
            a.flood_sockets,
            a.guesses,
            a.guess_answers
        ));
        let cpu = |u: &Option<PhaseCpu>| {
            u.as_ref().map_or("–".into(), |u| {
                format!("{:.2} s ({:.1}%)", u.cpu_secs, u.cpu_percent)
            })
        };
        for (quiet, abused) in &self.cpu {
            let Some(name) = quiet.as_ref().or(abused.as_ref()).map(|u| &u.name) else {
                continue;
            };
            rows.push(format!(
                "cpu {name}: quiet {}, abused {}",
                cpu(quiet),
                cpu(abused)
            ));
        }
        rows.join("\n")
    }
}

/// What one band's ratio can say against the run's own noise floor: quiet
/// against quiet differed by a factor of up to the A/A either way, so a
/// ratio between its inverse and it cannot be told from noise.
fn reading(b: &BandReport) -> String {
    let (Some(ratio), Some(aa)) = (b.p99_ratio, b.noise.quiet_p99_aa) else {
        return "no noise floor (it needs two quiet windows: --rounds 2 or more)".into();
    };
    let against = if ratio > aa {
        format!("above the quiet halves' own A/A ({aa:.2})")
    } else if ratio < 1.0 / aa {
        format!(
            "below the quiet halves' own A/A range ({:.2}–{aa:.2}): the abused windows were the faster",
            1.0 / aa
        )
    } else {
        format!(
            "within the quiet halves' own A/A range ({:.2}–{aa:.2})",
            1.0 / aa
        )
    };
    let resolves = if aa <= 1.10 {
        "the quiet halves agree within 10%"
    } else {
        "the quiet halves differ by more than 10%, so this run cannot resolve the 10% bound"
    };
    format!("p99 abused/quiet {ratio:.2}, {against}; {resolves}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 100 ticks of `ms` each.
    fn window(ms: i64, dropped: u64) -> WindowRecord {
        WindowRecord {
            delays_us: vec![ms * 1000; 100],
            dropped,
        }
    }

    #[test]
    fn pools_each_phase_and_measures_the_quiet_windows_against_each_other() {
        // quiet 1, abused 1, abused 2, quiet 2, quiet 3, abused 3.
        let windows = [
            window(1, 0),
            window(3, 0),
            window(3, 1),
            window(2, 0),
            window(4, 0),
            WindowRecord {
                delays_us: vec![],
                dropped: 2,
            },
        ];
        let b = band_report(&windows);
        // 300 quiet ticks: 100 each of 1, 2 and 4 ms.
        let q = b.quiet.tick_delay.expect("quiet ticks");
        assert_eq!(
            (q.count, q.p50_ms, q.p99_ms, q.max_ms),
            (300, 2.0, 4.0, 4.0)
        );
        let a = b.abused.tick_delay.expect("abused ticks");
        assert_eq!((a.count, a.p99_ms), (200, 3.0));
        assert_eq!(b.quiet.window_p99_ms, [Some(1.0), Some(2.0), Some(4.0)]);
        assert_eq!(b.abused.window_p99_ms, [Some(3.0), Some(3.0), None]);
        assert_eq!((b.quiet.dropped, b.abused.dropped), (0, 3));
        assert_eq!(b.p99_ratio, Some(0.75));
        // Quiet 1 and 3 pooled (p99 4 ms) against quiet 2 (2 ms).
        assert_eq!(b.noise.quiet_p99_aa, Some(2.0));
        assert_eq!(b.noise.quiet_p99_max_over_min, Some(4.0));
    }

    #[test]
    fn phases_run_abba_so_a_drift_weighs_on_both() {
        let order: String = (0..8)
            .map(|w| if abused_window(w) { 'A' } else { 'Q' })
            .collect();
        assert_eq!(order, "QAAQQAAQ");
    }

    #[test]
    fn one_round_has_no_noise_floor() {
        let b = band_report(&[window(1, 0), window(2, 0)]);
        assert_eq!(b.p99_ratio, Some(2.0));
        assert_eq!(b.noise.quiet_p99_aa, None);
        assert_eq!(b.noise.quiet_p99_max_over_min, None);
        assert!(reading(&b).starts_with("no noise floor"));
    }

    #[test]
    fn a_quiet_window_without_ticks_leaves_the_floor_unknown() {
        let empty = WindowRecord::default();
        // quiet 1, abused 1, abused 2, quiet 2 (empty).
        let b = band_report(&[window(1, 0), window(2, 0), window(2, 0), empty]);
        assert_eq!(b.quiet.window_p99_ms, [Some(1.0), None]);
        assert_eq!(b.noise.quiet_p99_aa, None);
        assert_eq!(b.noise.quiet_p99_max_over_min, None);
    }

    #[test]
    fn a_ratio_reads_against_the_floor_either_way() {
        let with = |ratio: f64, aa: f64| {
            reading(&BandReport {
                p99_ratio: Some(ratio),
                noise: Noise {
                    quiet_p99_aa: Some(aa),
                    quiet_p99_max_over_min: Some(aa),
                },
                ..BandReport::default()
            })
        };
        assert!(with(1.3, 1.25).contains("above"), "{}", with(1.3, 1.25));
        assert!(with(1.22, 1.25).contains("within"), "{}", with(1.22, 1.25));
        assert!(with(0.85, 1.25).contains("within"), "{}", with(0.85, 1.25));
        // A smoke run's second band: 13.15 ms quiet, 4.89 ms abused.
        assert!(with(0.37, 1.09).contains("below"), "{}", with(0.37, 1.09));
        assert!(with(1.05, 1.09).contains("agree within 10%"));
        assert!(with(1.05, 1.25).contains("cannot resolve"));
    }

    #[test]
    fn cpu_is_summed_over_a_phase() {
        let usage = |pct: f64, peak: f64| Usage {
            name: "gateway".into(),
            pid: 1,
            cpu_percent: pct,
            rss_mib: 10.0,
            peak_rss_mib: peak,
        };
        let secs = Duration::from_secs;
        let cpu = phase_cpu(&[
            (Some(usage(10.0, 20.0)), secs(10)),
            (Some(usage(30.0, 25.0)), secs(10)),
        ])
        .expect("both windows read");
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(cpu.cpu_secs, 4.0), "{}", cpu.cpu_secs);
        assert!(close(cpu.cpu_percent, 20.0), "{}", cpu.cpu_percent);
        assert_eq!(cpu.peak_rss_mib, 25.0);
        assert!(phase_cpu(&[(Some(usage(10.0, 20.0)), secs(10)), (None, secs(10))]).is_none());
    }

    #[test]
    fn abusers_tallies_add_up() {
        let mut sum = Abusers::default();
        let one = Abusers {
            sockets_opened: 10,
            sockets_refused: BTreeMap::from([("http 429".into(), 5)]),
            guesses: 7,
            ..Abusers::default()
        };
        sum.add(&one);
        sum.add(&one);
        assert_eq!(sum.sockets_opened, 20);
        assert_eq!(sum.sockets_refused["http 429"], 10);
        assert_eq!(sum.guesses, 14);
    }
}
