//! What a fault did to the bands, from the members' own records: the longest
//! silence between ticks per session, what became of every command sent around
//! the fault, leadership changes and members marked away, reconnections.

use super::band::MemberLog;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::time::Instant;

/// One fault's figures. The promise (issue "A NATS node dies…"): gap max ≤ 2 s,
/// nothing lost or doubled, no leadership change or member marked away, rows
/// neither missing nor doubled.
#[derive(Debug, Clone, Serialize)]
pub struct FaultReport {
    pub fault: String,
    pub sessions: usize,
    /// Longest silence between ticks per session, over its members: p50 and max.
    pub tick_gap_p50_ms: f64,
    pub tick_gap_max_ms: f64,
    /// Commands sent from a second before the fault to the end of the window.
    pub commands: usize,
    /// Longest wait from sending a command to its event at the leader.
    pub command_delay_max_ms: f64,
    pub commands_lost: usize,
    /// Not seen applied, but the leader missed events while reconnecting, so
    /// whether they were applied cannot be told from its record.
    pub commands_unverified: usize,
    pub commands_doubled: usize,
    pub commands_refused: usize,
    pub leadership_changes: usize,
    pub members_marked_away: usize,
    /// Members whose socket dropped, and the longest time until they were back.
    pub members_dropped: usize,
    pub reconnect_max_ms: f64,
    /// Filled in by the store check.
    pub rows_missing: Option<i64>,
    pub rows_doubled: Option<i64>,
    pub notes: Vec<String>,
}

impl FaultReport {
    pub fn table_row(&self) -> String {
        let rows = |v: Option<i64>| v.map_or("-".to_owned(), |n| n.to_string());
        format!(
            "| {} | {:.0} / {:.0} ms | {} sent, delay max {:.0} ms, lost {}, unverified {}, twice {}, refused {} | {} | {} | {} dropped, back in ≤ {:.0} ms | {} / {} |",
            self.fault,
            self.tick_gap_p50_ms,
            self.tick_gap_max_ms,
            self.commands,
            self.command_delay_max_ms,
            self.commands_lost,
            self.commands_unverified,
            self.commands_doubled,
            self.commands_refused,
            self.leadership_changes,
            self.members_marked_away,
            self.members_dropped,
            self.reconnect_max_ms,
            rows(self.rows_missing),
            rows(self.rows_doubled),
        )
    }

    pub const TABLE_HEAD: &'static str = "| fault | tick gap p50 / max | commands | leadership changes | marked away | reconnections | rows missing / doubled |\n|---|---|---|---|---|---|---|";
}

/// The figures for a fault at `fault_at`, recorded until `until`.
pub fn analyse(fault: &str, logs: &[MemberLog], fault_at: Instant, until: Instant) -> FaultReport {
    let from = fault_at - Duration::from_secs(1);
    let mut gaps: HashMap<&str, Duration> = HashMap::new();
    for log in logs {
        let mut last = from;
        let mut worst = Duration::ZERO;
        for &t in log.ticks.iter().filter(|&&t| t >= from && t <= until) {
            worst = worst.max(t - last);
            last = t;
        }
        worst = worst.max(until.saturating_duration_since(last));
        let g = gaps.entry(log.session.as_str()).or_default();
        *g = (*g).max(worst);
    }
    let mut per_session: Vec<f64> = gaps.values().map(|g| g.as_secs_f64() * 1e3).collect();
    per_session.sort_by(f64::total_cmp);

    // Every event once per session (all members see the same ones).
    let mut events: BTreeMap<(&str, u64), &super::band::EventSeen> = BTreeMap::new();
    for log in logs {
        for e in &log.events {
            events.entry((log.session.as_str(), e.seq)).or_insert(e);
        }
    }
    let after_fault = |at: Instant| at >= fault_at && at <= until;
    let count_kind = |kind: &str| {
        events
            .values()
            .filter(|e| after_fault(e.at) && e.kinds.contains(&kind))
            .count()
    };

    let (mut commands, mut lost, mut unverified, mut doubled, mut delay_max) =
        (0, 0, 0, 0, Duration::ZERO);
    let mut notes = Vec::new();
    for log in logs.iter().filter(|l| l.leader) {
        // The leader's own events: applied tempo changes, by tempo.
        let mut applied: HashMap<i64, Vec<(u64, Instant)>> = HashMap::new();
        for e in log
            .events
            .iter()
            .filter(|e| e.kinds.contains(&"tempo") && e.by.as_ref() == Some(&log.member))
        {
            let seen = applied.entry(e.tempo).or_default();
            if !seen.iter().any(|(seq, _)| *seq == e.seq) {
                seen.push((e.seq, e.at));
            }
        }
        // Seqs the leader never saw (it was reconnecting): what they applied is unknown.
        let seen: std::collections::BTreeSet<u64> = log.events.iter().map(|e| e.seq).collect();
        let missed = match (seen.first(), seen.last()) {
            (Some(&a), Some(&b)) => (b - a + 1) as usize != seen.len(),
            _ => false,
        } || !log.back.is_empty();
        let refused: std::collections::HashSet<i64> = log
            .refused
            .iter()
            .filter_map(|(_, tempo, _)| *tempo)
            .collect();
        for &(sent_at, tempo) in log
            .sent
            .iter()
            .filter(|(at, _)| *at >= from && *at <= until)
        {
            commands += 1;
            match applied.get(&tempo).map(Vec::as_slice) {
                // Refused and never applied: counted with the refusals.
                None | Some([]) if refused.contains(&tempo) => {}
                None | Some([]) if missed => unverified += 1,
                None | Some([]) => {
                    lost += 1;
                    if notes.len() < 5 {
                        notes.push(format!(
                            "{}: tempo {} sent, never applied",
                            log.session,
                            tempo as f64 / 100.0
                        ));
                    }
                }
                Some([(_, at)]) => delay_max = delay_max.max(at.saturating_duration_since(sent_at)),
                Some(more) => {
                    doubled += 1;
                    delay_max = delay_max.max(more[0].1.saturating_duration_since(sent_at));
                }
            }
        }
    }
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, _, why) in logs
        .iter()
        .flat_map(|l| &l.refused)
        .filter(|(at, _, _)| *at >= from && *at <= until)
    {
        *reasons.entry(why).or_default() += 1;
    }
    let refused = reasons.values().sum();
    notes.extend(
        reasons
            .iter()
            .map(|(why, n)| format!("refused ×{n}: {why}")),
    );
    let mut dropped = 0;
    let mut reconnect_max = Duration::ZERO;
    for log in logs {
        for (i, (at, _)) in log
            .drops
            .iter()
            .enumerate()
            .filter(|(_, (at, _))| *at >= from)
        {
            dropped += 1;
            match log.back.iter().find(|&&b| b >= *at) {
                Some(&back) => reconnect_max = reconnect_max.max(back - *at),
                None => notes.push(format!("{} never came back after drop {i}", log.member)),
            }
        }
    }
    FaultReport {
        fault: fault.to_owned(),
        sessions: gaps.len(),
        tick_gap_p50_ms: per_session
            .get(per_session.len() / 2)
            .copied()
            .unwrap_or(f64::NAN),
        tick_gap_max_ms: per_session.last().copied().unwrap_or(f64::NAN),
        commands,
        command_delay_max_ms: delay_max.as_secs_f64() * 1e3,
        commands_lost: lost,
        commands_unverified: unverified,
        commands_doubled: doubled,
        commands_refused: refused,
        leadership_changes: count_kind("leader_changed"),
        members_marked_away: count_kind("member_disconnected"),
        members_dropped: dropped,
        reconnect_max_ms: reconnect_max.as_secs_f64() * 1e3,
        rows_missing: None,
        rows_doubled: None,
        notes,
    }
}
