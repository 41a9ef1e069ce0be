//! Versioned migrations, applied at start-up in one transaction under an
//! advisory lock, so several workers starting at once apply each exactly once.

use super::DbError;
use deadpool_postgres::Pool;

struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

/// Append only: an applied migration is never edited; a change is a new file.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "tables",
        sql: include_str!("../../migrations/0001_tables.sql"),
    },
    Migration {
        version: 2,
        name: "views",
        sql: include_str!("../../migrations/0002_views.sql"),
    },
    Migration {
        version: 3,
        name: "ingest_speed",
        sql: include_str!("../../migrations/0003_ingest_speed.sql"),
    },
    Migration {
        version: 4,
        name: "stops",
        sql: include_str!("../../migrations/0004_stops.sql"),
    },
    Migration {
        version: 5,
        name: "state_column",
        sql: include_str!("../../migrations/0005_state_column.sql"),
    },
    Migration {
        version: 6,
        name: "setlist_on_its_own",
        sql: include_str!("../../migrations/0006_setlist_on_its_own.sql"),
    },
    Migration {
        version: 7,
        name: "members_on_their_own",
        sql: include_str!("../../migrations/0007_members_on_their_own.sql"),
    },
    Migration {
        version: 8,
        name: "events_once",
        sql: include_str!("../../migrations/0008_events_once.sql"),
    },
];

/// Arbitrary constant naming the store's migration lock.
const LOCK_KEY: i64 = 0x0BAD_5EED_0001;

/// Applies the migrations this database lacks; returns the versions applied.
pub async fn migrate(pool: &Pool) -> Result<Vec<i32>, DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version    int PRIMARY KEY,
            name       text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM schema_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    if let Some(&found) = applied.iter().max().filter(|&&v| v > known) {
        return Err(DbError::SchemaTooNew { found, known });
    }
    let mut done = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        tx.batch_execute(m.sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await?;
        done.push(m.version);
    }
    tx.commit().await?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_by_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                m.version,
                i32::try_from(i + 1).expect("few migrations"),
                "{}",
                m.name
            );
        }
    }
}
