//! PostgreSQL: the pool, creating the database, migrations, the batch writer and
//! the analysts' queries. Nothing outside this module writes SQL.

pub mod migrate;
pub mod query;
pub mod write;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::time::Duration;
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

/// How long to wait for a connection (new or from the pool) before the caller
/// treats PostgreSQL as unavailable and backs off.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("no PostgreSQL connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("PostgreSQL: {0}")]
    Pg(#[from] tokio_postgres::Error),
    #[error("invalid database URL: {0}")]
    Url(String),
    #[error(
        "the database is at schema version {found}, newer than this store knows ({known}); upgrade the store"
    )]
    SchemaTooNew { found: i32, known: i32 },
}

impl DbError {
    /// The SQLSTATE reported by the server, if the server answered at all.
    pub fn code(&self) -> Option<&SqlState> {
        match self {
            DbError::Pg(e) => e.code(),
            _ => None,
        }
    }

    /// The server refused the data itself (bad value, too large, constraint):
    /// retrying the same rows cannot succeed, so the writer isolates the culprit.
    pub fn is_data_error(&self) -> bool {
        let Some(code) = self.code() else {
            return false;
        };
        let class = &code.code()[..2];
        matches!(class, "22" | "23" | "54") && *code != SqlState::UNIQUE_VIOLATION
    }
}

/// Parses the URL and bounds connect and socket waits, so a dead server is
/// noticed in seconds rather than after TCP's minutes.
pub fn pg_config(url: &str) -> Result<tokio_postgres::Config, DbError> {
    let mut cfg: tokio_postgres::Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| DbError::Url(e.to_string()))?;
    cfg.connect_timeout(CONNECT_TIMEOUT);
    cfg.keepalives_idle(Duration::from_secs(10));
    cfg.tcp_user_timeout(Duration::from_secs(15));
    if cfg.get_application_name().is_none() {
        cfg.application_name("bandsync-store");
    }
    Ok(cfg)
}

pub fn pool(url: &str, size: usize) -> Result<Pool, DbError> {
    let cfg = pg_config(url)?;
    let manager = Manager::from_config(
        cfg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(CONNECT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|e| DbError::Url(e.to_string()))
}

/// Creates the URL's database when it does not exist yet (connecting to `postgres`).
pub async fn ensure_database(url: &str) -> Result<bool, DbError> {
    let cfg = pg_config(url)?;
    let name = cfg
        .get_dbname()
        .ok_or_else(|| DbError::Url("the URL names no database".into()))?
        .to_owned();
    let mut admin = cfg.clone();
    admin.dbname("postgres");
    let (client, connection) = admin.connect(NoTls).await?;
    let conn = tokio::spawn(connection);
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await?
        .is_some();
    let mut created = false;
    if !exists {
        match client
            .batch_execute(&format!("CREATE DATABASE {}", quote_ident(&name)))
            .await
        {
            Ok(()) => created = true,
            // Another worker created it first.
            Err(e) if e.code() == Some(&SqlState::DUPLICATE_DATABASE) => {}
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {}
            Err(e) => return Err(e.into()),
        }
    }
    drop(client);
    conn.abort();
    Ok(created)
}

/// Quotes an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("bandsync"), "\"bandsync\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
