//! CSV and NDJSON export of a session's events, streamed row by row so a long
//! session never sits in memory whole.

use super::sessions::session_id;
use super::{ApiError, AppState};
use crate::db::query::{self, EXPORT_COLUMNS, ExportFormat};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio_postgres::Row;

/// `GET /sessions/{id}/export.csv`: one line per event, header first.
pub async fn csv(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    stream(app, id, ExportFormat::Csv).await
}

/// `GET /sessions/{id}/export.ndjson`: one JSON object per line.
pub async fn ndjson(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    stream(app, id, ExportFormat::Ndjson).await
}

async fn stream(app: AppState, id: String, format: ExportFormat) -> Result<Response, ApiError> {
    let id = session_id(id)?;
    let (client, rows) = query::export(&app.pool, id.as_str(), format).await?;
    let head = match format {
        ExportFormat::Csv => Some(Ok(Bytes::from(format!("{}\n", EXPORT_COLUMNS.join(","))))),
        ExportFormat::Ndjson => None,
    };
    let lines = rows.map(move |row| {
        let _checked_out = &client; // keeps the connection until the last row
        row.map(|r| match format {
            ExportFormat::Csv => Bytes::from(csv_line(&r)),
            ExportFormat::Ndjson => Bytes::from(format!("{}\n", r.get::<_, &str>(0))),
        })
    });
    let body = Body::from_stream(futures::stream::iter(head).chain(lines));
    let (content_type, ext) = match format {
        ExportFormat::Csv => ("text/csv; charset=utf-8", "csv"),
        ExportFormat::Ndjson => ("application/x-ndjson", "ndjson"),
    };
    let disposition = format!("attachment; filename=\"{id}.{ext}\"");
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

fn csv_line(row: &Row) -> String {
    let mut line = String::new();
    for i in 0..row.len() {
        if i > 0 {
            line.push(',');
        }
        line.push_str(&csv_field(row.get::<_, Option<&str>>(i).unwrap_or("")));
    }
    line.push('\n');
    line
}

/// RFC 4180: quote a field holding a comma, quote or line break; double its quotes.
pub fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("tempo"), "tempo");
        assert_eq!(
            csv_field(r#"{"a":1,"b":"x"}"#),
            r#""{""a"":1,""b"":""x""}""#
        );
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }
}
