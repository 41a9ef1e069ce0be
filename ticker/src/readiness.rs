//! `/readyz`: 200 once NATS is connected and the current leases have been read;
//! the body lists the shards owned (`shards: 3@1042 17@1043`, shard@epoch) and
//! counts those still registered but no longer proven (`shards_fenced`).

use crate::Ctx;
use crate::owned::Registry;
use axum::extract::State;
use axum::http::StatusCode;
use bandsync_nats::Shard;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What the handler needs: the bus and ticker id, the shards owned, and the
/// token cancelled once the current leases are known.
pub type ReadyState = (Arc<Ctx>, Registry, CancellationToken);

pub async fn readyz(
    State((ctx, registry, leases_known)): State<ReadyState>,
) -> (StatusCode, String) {
    let nats = ctx.bus.client.connection_state();
    let connected = nats == async_nats::connection::State::Connected;
    let shards: Vec<(Shard, u64, bool)> = registry
        .snapshot()
        .iter()
        .map(|o| (o.shard, o.epoch, o.is_valid()))
        .collect();
    let report = Report {
        nats: format!("{nats:?}"),
        connected,
        leases_known: leases_known.is_cancelled(),
        ticker: &ctx.ticker_id,
        shards,
    };
    (report.status(), report.body())
}

/// One answer of `/readyz`, apart from where its facts come from.
struct Report<'a> {
    nats: String,
    connected: bool,
    leases_known: bool,
    ticker: &'a str,
    /// Each registered shard: number, epoch, whether its lease is proven now.
    shards: Vec<(Shard, u64, bool)>,
}

impl Report<'_> {
    fn status(&self) -> StatusCode {
        if self.connected && self.leases_known {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }

    /// Only shards whose lease is proven are listed: a ticker resuming from a
    /// freeze lists none of its old terms, even before its failed renewals have
    /// removed them.
    fn body(&self) -> String {
        let mut owned: Vec<(Shard, u64)> = self
            .shards
            .iter()
            .filter(|(_, _, valid)| *valid)
            .map(|&(shard, epoch, _)| (shard, epoch))
            .collect();
        let fenced = self.shards.len() - owned.len();
        owned.sort_unstable();
        let list: Vec<String> = owned.iter().map(|(s, e)| format!("{s}@{e}")).collect();
        format!(
            "nats: {}\nleases_known: {}\nticker: {}\nshards_owned: {}\nshards_fenced: {fenced}\nshards: {}\n",
            self.nats,
            self.leases_known,
            self.ticker,
            owned.len(),
            list.join(" ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(
        connected: bool,
        leases_known: bool,
        shards: Vec<(Shard, u64, bool)>,
    ) -> Report<'static> {
        Report {
            nats: "Connected".into(),
            connected,
            leases_known,
            ticker: "t-1",
            shards,
        }
    }

    #[test]
    fn ready_only_when_connected_and_the_leases_are_known() {
        assert_eq!(report(true, true, vec![]).status(), StatusCode::OK);
        assert_eq!(
            report(false, true, vec![]).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            report(true, false, vec![]).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn lists_proven_shards_in_order_and_counts_the_fenced_ones() {
        let body = report(
            true,
            true,
            vec![(17, 1043, true), (9, 5, false), (3, 1042, true)],
        )
        .body();
        assert_eq!(
            body,
            "nats: Connected\nleases_known: true\nticker: t-1\nshards_owned: 2\nshards_fenced: 1\nshards: 3@1042 17@1043\n"
        );
    }
}
