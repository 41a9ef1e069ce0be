//! The ticker's Prometheus metrics: one recorder for the process (shared with
//! `bandsync_nats::service`), and every series this crate exports described here
//! once, with its help text. Counters and gauges are exported at 0 from the
//! start, so a dashboard (or a test) can tell "none yet" from "not exported".

use metrics_exporter_prometheus::PrometheusHandle;

/// The recorder, with the ticker's metrics described on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    let handle = bandsync_nats::service::prometheus();
    static DESCRIBED: std::sync::Once = std::sync::Once::new();
    DESCRIBED.call_once(describe);
    handle
}

/// The ticker's metrics with their help text.
fn describe() {
    let counters = [
        (
            "bandsync_ticker_lease_renewals_total",
            "Lease renewals that succeeded.",
        ),
        (
            "bandsync_ticker_lease_renewal_failures_total",
            "Lease renewals that failed (the shard rides through while the bucket elects, else it is lost).",
        ),
        (
            "bandsync_ticker_lease_rides_total",
            "Renewals that failed while the leases bucket could not be written, the shard kept (riding through an election).",
        ),
        ("bandsync_ticker_leases_acquired_total", "Shard leases won."),
        (
            "bandsync_ticker_failovers_total",
            "Shards taken over after their owner's lease expired.",
        ),
        (
            "bandsync_ticker_handovers_total",
            "Shards taken over after their owner released them.",
        ),
        (
            "bandsync_ticker_leases_released_total",
            "Shards handed over (rebalance or shutdown).",
        ),
        (
            "bandsync_ticker_leases_lost_total",
            "Shards lost: a failed renewal or a newer lease seen.",
        ),
        (
            "bandsync_ticker_campaigns_lost_total",
            "Campaigns another ticker won.",
        ),
        (
            "bandsync_ticker_ticks_total",
            "Session ticks due from the beats published (the gateways make them).",
        ),
        (
            "bandsync_ticker_tick_publish_failures_total",
            "Beats the NATS client refused.",
        ),
        (
            "bandsync_ticker_commands_applied_total",
            "Commands applied to session state.",
        ),
        (
            "bandsync_ticker_command_consumer_resets_total",
            "Command consumers replaced after they went quiet or skipped a command (the shard is kept).",
        ),
        (
            "bandsync_ticker_commands_replayed_total",
            "Replayed commands skipped as already applied.",
        ),
        (
            "bandsync_ticker_commands_rejected_total",
            "Commands rejected with an error to the member.",
        ),
        (
            "bandsync_ticker_cas_conflicts_total",
            "Session state writes that lost a compare-and-set.",
        ),
        (
            "bandsync_ticker_corrupt_cursors_total",
            "Saved command cursors that were not a number (the shard then replays after the last command its sessions record).",
        ),
        (
            "bandsync_ticker_stale_creates_total",
            "Replayed creates skipped after a corrupt cursor: their join code no longer names the session (it ended, or its creation was given up).",
        ),
        (
            "bandsync_ticker_session_deletion_failures_total",
            "Attempts to release an ended session's join code or delete its state that failed (each is retried at the next housekeeping).",
        ),
    ];
    let gauges = [
        ("bandsync_ticker_shards_owned", "Shards this ticker owns."),
        (
            "bandsync_ticker_shards_target",
            "This ticker's fair share of the shards.",
        ),
        (
            "bandsync_ticker_live_tickers",
            "Tickers this one counts as alive.",
        ),
        (
            "bandsync_ticker_playing_sessions",
            "Playing sessions on the owned shards.",
        ),
        (
            "bandsync_ticker_ticks_per_second",
            "Session ticks due from the beats of the last second.",
        ),
        (
            "bandsync_ticker_sessions_ending",
            "Ended sessions on the owned shards whose join code or state is still to delete.",
        ),
    ];
    // All in seconds.
    let histograms = [
        (
            "bandsync_ticker_lease_renew_seconds",
            "Round trip of one lease renewal.",
        ),
        (
            "bandsync_ticker_command_seconds",
            "Time to apply one command (state write and event publish).",
        ),
        (
            "bandsync_ticker_tick_round_late_seconds",
            "How late a tick round started after its slot's instant (a ticker short of CPU shows here first).",
        ),
        (
            "bandsync_ticker_command_stage_seconds",
            "Parts of a command's way: `queued` (from the gateway's send to this ticker's handling), split into `to_stream` (until the command stream stored it) and `delivered` (from there to this ticker's handling); `state_write` (the compare-and-set); `event_publish` (until the stream acked the event).",
        ),
    ];
    bandsync_nats::service::MetricDescriptions {
        counters: &counters,
        gauges: &gauges,
        histograms_seconds: &histograms,
    }
    .describe();
}
