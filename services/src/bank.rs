//! bank: accounts and transactions over REST, stored in SQLite, with
//! prometheus-fastapi-instrumentator metrics at `/metrics`.
//!
//! Amounts are whole cents. Validation errors answer 422 with a body in
//! FastAPI's shape (`{"detail": [{"loc": …, "msg": …, "type": …}]}`);
//! unknown accounts answer 404.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::exporter::Exporter;
use crate::faults::Faults;
use crate::web::{self, FastApi, Views, WebMetrics};

/// Settings of the bank service.
#[derive(Debug, Clone, Default)]
pub struct BankOptions {
    /// SQLite file; in memory when absent.
    pub database: Option<PathBuf>,
    pub faults: Faults,
}

type Db = Arc<Mutex<Connection>>;

fn open(path: Option<&PathBuf>) -> rusqlite::Result<Connection> {
    let conn = match path {
        Some(p) => Connection::open(p)?,
        None => Connection::open_in_memory()?,
    };
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         CREATE TABLE IF NOT EXISTS accounts (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             owner TEXT NOT NULL,
             created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
         );
         CREATE TABLE IF NOT EXISTS transactions (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             account_id INTEGER NOT NULL REFERENCES accounts(id),
             kind TEXT NOT NULL CHECK (kind IN ('credit', 'debit')),
             amount INTEGER NOT NULL CHECK (amount > 0),
             created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
         );
         CREATE INDEX IF NOT EXISTS transactions_by_account ON transactions(account_id);",
    )?;
    Ok(conn)
}

/// An error answer.
enum ApiError {
    NotFound(i64),
    Invalid(Vec<(Vec<Value>, String, &'static str)>),
    Db(rusqlite::Error),
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        ApiError::Db(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::NotFound(id) => (
                StatusCode::NOT_FOUND,
                axum::Json(json!({ "detail": format!("account {id} not found") })),
            )
                .into_response(),
            ApiError::Invalid(problems) => {
                let detail: Vec<Value> = problems
                    .into_iter()
                    .map(|(loc, msg, kind)| json!({ "loc": loc, "msg": msg, "type": kind }))
                    .collect();
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    axum::Json(json!({ "detail": detail })),
                )
                    .into_response()
            }
            ApiError::Db(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({ "detail": format!("database error: {e}") })),
            )
                .into_response(),
        }
    }
}

fn lock(db: &Db) -> std::sync::MutexGuard<'_, Connection> {
    db.lock().unwrap_or_else(|p| p.into_inner())
}

fn account_json(conn: &Connection, id: i64) -> Result<Value, ApiError> {
    conn.query_row("SELECT id, owner, created_at FROM accounts WHERE id = ?1", params![id], |r| {
        Ok(json!({ "id": r.get::<_, i64>(0)?, "owner": r.get::<_, String>(1)?, "created_at": r.get::<_, String>(2)? }))
    })
    .optional()?
    .ok_or(ApiError::NotFound(id))
}

fn balance(conn: &Connection, id: i64) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT COALESCE(SUM(CASE kind WHEN 'credit' THEN amount ELSE -amount END), 0) FROM transactions WHERE account_id = ?1",
        params![id],
        |r| r.get(0),
    )
}

/// Parses the `{account_id}` path segment, answering 422 like FastAPI.
fn account_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::Invalid(vec![(
            vec![json!("path"), json!("account_id")],
            "Input should be a valid integer, unable to parse string as an integer".into(),
            "int_parsing",
        )])
    })
}

fn body_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::Invalid(vec![(
            vec![json!("body")],
            "Input should be a valid dictionary".into(),
            "dict_type",
        )])),
        Err(e) => Err(ApiError::Invalid(vec![(
            vec![json!("body")],
            format!("JSON decode error: {e}"),
            "json_invalid",
        )])),
    }
}

async fn create_account(
    State(db): State<Db>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let m = body_object(&body)?;
    let owner = match m.get("owner") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) => {
            return Err(ApiError::Invalid(vec![(
                vec![json!("body"), json!("owner")],
                "String should have at least 1 character".into(),
                "string_too_short",
            )]));
        }
        Some(_) => {
            return Err(ApiError::Invalid(vec![(
                vec![json!("body"), json!("owner")],
                "Input should be a valid string".into(),
                "string_type",
            )]));
        }
        None => {
            return Err(ApiError::Invalid(vec![(
                vec![json!("body"), json!("owner")],
                "Field required".into(),
                "missing",
            )]));
        }
    };
    let conn = lock(&db);
    conn.execute("INSERT INTO accounts (owner) VALUES (?1)", params![owner])?;
    let id = conn.last_insert_rowid();
    Ok((StatusCode::CREATED, axum::Json(account_json(&conn, id)?)).into_response())
}

async fn list_accounts(State(db): State<Db>) -> Result<Response, ApiError> {
    let conn = lock(&db);
    let mut stmt = conn.prepare("SELECT id, owner, created_at FROM accounts ORDER BY id")?;
    let rows = stmt
        .query_map([], |r| Ok(json!({ "id": r.get::<_, i64>(0)?, "owner": r.get::<_, String>(1)?, "created_at": r.get::<_, String>(2)? })))?
        .collect::<rusqlite::Result<Vec<Value>>>()?;
    Ok(axum::Json(Value::Array(rows)).into_response())
}

async fn get_account(State(db): State<Db>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = account_id(&id)?;
    let conn = lock(&db);
    let mut a = account_json(&conn, id)?;
    a["balance"] = json!(balance(&conn, id)?);
    Ok(axum::Json(a).into_response())
}

async fn get_balance(State(db): State<Db>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = account_id(&id)?;
    let conn = lock(&db);
    account_json(&conn, id)?;
    Ok(axum::Json(json!({ "account_id": id, "balance": balance(&conn, id)? })).into_response())
}

async fn post_transaction(
    State(db): State<Db>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let id = account_id(&id)?;
    let m = body_object(&body)?;
    let mut problems = Vec::new();
    let kind = match m.get("kind").and_then(Value::as_str) {
        Some(k @ ("credit" | "debit")) => Some(k.to_owned()),
        Some(_) | None => {
            problems.push((
                vec![json!("body"), json!("kind")],
                "Input should be 'credit' or 'debit'".to_owned(),
                "enum",
            ));
            None
        }
    };
    let amount = match m.get("amount").and_then(Value::as_i64) {
        Some(a) if a > 0 => Some(a),
        Some(_) => {
            problems.push((
                vec![json!("body"), json!("amount")],
                "Input should be greater than 0".to_owned(),
                "greater_than",
            ));
            None
        }
        None => {
            problems.push((
                vec![json!("body"), json!("amount")],
                "Input should be a valid integer (cents)".to_owned(),
                "int_type",
            ));
            None
        }
    };
    if !problems.is_empty() {
        return Err(ApiError::Invalid(problems));
    }
    let (kind, amount) = (kind.expect("checked"), amount.expect("checked"));
    let mut conn = lock(&db);
    let tx = conn.transaction()?;
    account_json(&tx, id)?;
    let before = balance(&tx, id)?;
    if kind == "debit" && amount > before {
        return Err(ApiError::Invalid(vec![(
            vec![json!("body"), json!("amount")],
            format!("insufficient funds: balance is {before}, debit is {amount}"),
            "insufficient_funds",
        )]));
    }
    tx.execute(
        "INSERT INTO transactions (account_id, kind, amount) VALUES (?1, ?2, ?3)",
        params![id, kind, amount],
    )?;
    let tid = tx.last_insert_rowid();
    let after = balance(&tx, id)?;
    tx.commit()?;
    Ok((StatusCode::CREATED, axum::Json(json!({ "id": tid, "account_id": id, "kind": kind, "amount": amount, "balance": after }))).into_response())
}

async fn list_transactions(
    State(db): State<Db>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = account_id(&id)?;
    let conn = lock(&db);
    account_json(&conn, id)?;
    let mut stmt = conn.prepare(
        "SELECT id, kind, amount, created_at FROM transactions WHERE account_id = ?1 ORDER BY id",
    )?;
    let rows = stmt
        .query_map(params![id], |r| {
            Ok(json!({ "id": r.get::<_, i64>(0)?, "kind": r.get::<_, String>(1)?, "amount": r.get::<_, i64>(2)?, "created_at": r.get::<_, String>(3)? }))
        })?
        .collect::<rusqlite::Result<Vec<Value>>>()?;
    Ok(axum::Json(Value::Array(rows)).into_response())
}

/// Serves bank on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    opts: BankOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let conn = open(opts.database.as_ref()).map_err(std::io::Error::other)?;
    let db: Db = Arc::new(Mutex::new(conn));
    let exporter = Exporter::<FastApi>::new(&opts.faults);
    exporter.spawn_fault_timers(shutdown.clone());
    let metrics = Arc::new(WebMetrics {
        exporter: exporter.clone(),
        views: Views::default(),
    });
    let app = Router::new()
        .route("/accounts", get(list_accounts).post(create_account))
        .route("/accounts/{account_id}", get(get_account))
        .route("/accounts/{account_id}/balance", get(get_balance))
        .route(
            "/accounts/{account_id}/transactions",
            get(list_transactions).post(post_transaction),
        )
        .with_state(db)
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            web::instrument::<FastApi>,
        ))
        .merge(crate::metrics_router("/metrics", exporter));
    crate::serve_http(listener, app, shutdown).await
}
