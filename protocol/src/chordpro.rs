//! The few ChordPro directives the session owner reads from a chart: the
//! song's tempo (`{tempo: 96}`) and meter (`{time: 6/8}`), which loading a song
//! applies when its setlist entry does not say. Only these long names: the
//! rest of ChordPro (sections, chords, grids) is the clients' to render.
//!
//! A chart is free text a leader typed or imported, so a directive the timeline
//! cannot use (`{tempo: fast}`, `{time: 5/3}`) is passed over, never an error:
//! the song still loads, with the value it would have had without it. The first
//! usable directive of each name counts (ChordPro lets a later one change the
//! tempo mid-song; the owner only sets where the song starts).

use crate::timeline::{BEAT_UNITS, MAX_BEATS_PER_BAR, MAX_BPM, MIN_BPM};

/// What a chart's directives say about the song's start.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Directives {
    pub tempo_bpm: Option<f64>,
    /// Beats per bar and beat unit, e.g. (6, 8).
    pub time: Option<(u8, u8)>,
}

/// Reads the `{tempo}` and `{time}` directives of a chart.
pub fn directives(chart: &str) -> Directives {
    let mut found = Directives::default();
    for (name, value) in chart.lines().filter_map(directive) {
        match name.to_ascii_lowercase().as_str() {
            "tempo" if found.tempo_bpm.is_none() => found.tempo_bpm = tempo(value),
            "time" if found.time.is_none() => found.time = time(value),
            _ => {}
        }
        if found.tempo_bpm.is_some() && found.time.is_some() {
            break;
        }
    }
    found
}

/// A line that is one directive, `{name: value}` (or `{name value}`), as
/// name and trimmed value.
fn directive(line: &str) -> Option<(&str, &str)> {
    let inner = line.trim().strip_prefix('{')?.strip_suffix('}')?.trim();
    let split = inner.find(|c: char| c == ':' || c.is_whitespace())?;
    let (name, rest) = inner.split_at(split);
    let rest = rest.trim_start();
    let value = rest.strip_prefix(':').unwrap_or(rest);
    Some((name, value.trim()))
}

fn tempo(value: &str) -> Option<f64> {
    let bpm: f64 = value.parse().ok()?;
    (bpm.is_finite() && (MIN_BPM..=MAX_BPM).contains(&bpm)).then_some(bpm)
}

fn time(value: &str) -> Option<(u8, u8)> {
    let (beats, unit) = value.split_once('/')?;
    let beats: u8 = beats.trim().parse().ok()?;
    let unit: u8 = unit.trim().parse().ok()?;
    ((1..=MAX_BEATS_PER_BAR).contains(&beats) && BEAT_UNITS.contains(&unit))
        .then_some((beats, unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tempo_and_time_from_a_chart() {
        let chart =
            "{title: Blackbird}\n{key: G}\n{tempo: 96}\n{time: 6/8}\n\n[G]Blackbird singing";
        assert_eq!(
            directives(chart),
            Directives {
                tempo_bpm: Some(96.0),
                time: Some((6, 8)),
            }
        );
        // Spacing, case and the colon-less form ChordPro also allows.
        assert_eq!(
            directives("  { Tempo :  82.5 }\r\n{TIME 3/4}"),
            Directives {
                tempo_bpm: Some(82.5),
                time: Some((3, 4)),
            }
        );
    }

    #[test]
    fn a_chart_without_them_says_nothing() {
        assert_eq!(directives(""), Directives::default());
        assert_eq!(
            directives("| G | C |\n| D | G |"),
            Directives::default(),
            "today's one-line-per-bar charts"
        );
        // Only whole-line directives with the long names.
        assert_eq!(
            directives("{t: Title}\n{title: Tempo 96}\nplay {tempo: 90} here\n{tempo: 100"),
            Directives::default()
        );
    }

    #[test]
    fn unusable_values_are_passed_over_and_the_first_usable_one_counts() {
        for bad in [
            "{tempo: fast}",
            "{tempo: 19.9}",
            "{tempo: 400.5}",
            "{tempo: NaN}",
            "{tempo: inf}",
            "{tempo:}",
            "{time: 5/3}",
            "{time: 0/4}",
            "{time: 33/4}",
            "{time: 6}",
            "{time: 6/8/8}",
            "{time: -6/8}",
        ] {
            assert_eq!(directives(bad), Directives::default(), "{bad}");
        }
        assert_eq!(
            directives("{tempo: fast}\n{tempo: 90}\n{tempo: 120}\n{time: 7/8}\n{time: 4/4}"),
            Directives {
                tempo_bpm: Some(90.0),
                time: Some((7, 8)),
            }
        );
    }
}
