//! A clinic: patients (name, date of birth and patient number — nothing
//! more), and their bills: orders of the catalog's fees (consultations,
//! tests). The audit log names a patient by number only, so personal data
//! stays in one table that can be corrected or erased.

use super::orders::{self, Kind, Order};
use super::pages::{Shared, button, csrf_field, path_id, posted, query, read, sell_on, write};
use super::{Need, SalesError, clean, date, may, need, refused};
use crate::audit::{self, Change};
use crate::web::{AppState, Authed, WebError, frame, time_text};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use ledger::Migrations;
use maud::{Markup, html};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Patients and their bills.
pub const MIGRATIONS: Migrations = Migrations {
    component: "clinic",
    steps: &[r#"
CREATE TABLE clinic_patients (
    id         INTEGER PRIMARY KEY,
    number     TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    birth_date TEXT NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE clinic_bills (
    order_id   INTEGER PRIMARY KEY REFERENCES orders (id),
    patient_id INTEGER NOT NULL REFERENCES clinic_patients (id)
) STRICT;
CREATE INDEX clinic_bills_patient ON clinic_bills (patient_id, order_id);
"#],
};

/// Longest patient number.
const MAX_NUMBER: usize = 20;
/// Patients listed at once.
const LIST: i64 = 200;

/// A patient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Patient {
    /// Row id.
    pub id: i64,
    /// The clinic's patient number.
    pub number: String,
    /// Name.
    pub name: String,
    /// Date of birth, `YYYY-MM-DD`.
    pub birth_date: String,
}

fn read_patient(r: &rusqlite::Row<'_>) -> rusqlite::Result<Patient> {
    Ok(Patient {
        id: r.get(0)?,
        number: r.get(1)?,
        name: r.get(2)?,
        birth_date: r.get(3)?,
    })
}

/// Registers a patient on `today`; `number` is the clinic's own or, when
/// empty, the next free `P000001`. Returns the patient's id.
pub fn register(
    conn: &Connection,
    name: &str,
    birth_date: &str,
    number: &str,
    actor: &str,
    now: i64,
    today: &str,
) -> Result<i64, SalesError> {
    let name = clean("name", name, false)?.unwrap_or_default();
    let birth_date = date("date of birth", birth_date)?;
    if birth_date.as_str() > today {
        return refused("date of birth: not in the future");
    }
    let number = match clean("patient number", number, true)? {
        Some(n) => {
            if n.len() > MAX_NUMBER || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return refused(format!(
                    "patient number: letters, digits and '-', {MAX_NUMBER} at most"
                ));
            }
            if by_number(conn, &n)?.is_some() {
                return refused(format!("patient number {n} is taken"));
            }
            n
        }
        None => next_number(conn)?,
    };
    conn.execute(
        "INSERT INTO clinic_patients (number, name, birth_date, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![number, name, birth_date, now],
    )?;
    let id = conn.last_insert_rowid();
    audit::append(
        conn,
        &Change {
            actor,
            action: "patient.register",
            subject: &format!("patient:{number}"),
            before: None,
            after: None,
        },
        now,
    )?;
    Ok(id)
}

/// The first free `P` number from the patient count on.
fn next_number(conn: &Connection) -> Result<String, SalesError> {
    let count: i64 = conn.query_row("SELECT count(*) FROM clinic_patients", [], |r| r.get(0))?;
    // Every taken number is a row: among count + 1 candidates one is free.
    for n in count + 1..=2 * count + 1 {
        let candidate = format!("P{n:06}");
        if by_number(conn, &candidate)?.is_none() {
            return Ok(candidate);
        }
    }
    refused("no free patient number")
}

/// The patient with `number`.
pub fn by_number(conn: &Connection, number: &str) -> Result<Option<Patient>, SalesError> {
    Ok(conn
        .query_row(
            "SELECT id, number, name, birth_date FROM clinic_patients WHERE number = ?1",
            [number],
            read_patient,
        )
        .optional()?)
}

/// Patient `id`.
pub fn patient(conn: &Connection, id: i64) -> Result<Option<Patient>, SalesError> {
    Ok(conn
        .query_row(
            "SELECT id, number, name, birth_date FROM clinic_patients WHERE id = ?1",
            [id],
            read_patient,
        )
        .optional()?)
}

/// Patients whose number or name holds `search` (all when empty), newest
/// first.
pub fn patients(conn: &Connection, search: &str) -> Result<Vec<Patient>, SalesError> {
    let pattern = format!(
        "%{}%",
        search
            .trim()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    );
    let mut stmt = conn.prepare(
        "SELECT id, number, name, birth_date FROM clinic_patients
         WHERE number LIKE ?1 ESCAPE '\\' OR name LIKE ?1 ESCAPE '\\'
         ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(params![pattern, LIST], read_patient)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// The bills of patient `id`, newest first.
pub fn bills(conn: &Connection, id: i64) -> Result<Vec<Order>, SalesError> {
    let mut stmt = conn.prepare(
        "SELECT order_id FROM clinic_bills WHERE patient_id = ?1 ORDER BY order_id DESC",
    )?;
    let ids: Vec<i64> = stmt
        .query_map([id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    ids.into_iter()
        .filter_map(|o| orders::order(conn, o).transpose())
        .collect()
}

/// The open bill of patient `id`, or a new one.
pub fn open_bill(conn: &Connection, id: i64, actor: &str, now: i64) -> Result<i64, SalesError> {
    let patient =
        patient(conn, id)?.ok_or_else(|| SalesError::NotFound(format!("patient {id}")))?;
    let open: Option<i64> = conn
        .query_row(
            "SELECT o.id FROM clinic_bills b JOIN orders o ON o.id = b.order_id
             WHERE b.patient_id = ?1 AND o.status = 'open' AND o.paid = 0
             ORDER BY o.id DESC LIMIT 1",
            [id],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(order) = open {
        return Ok(order);
    }
    let owner = orders::Owner {
        link: "INSERT INTO clinic_bills (order_id, patient_id) VALUES (?1, ?2)",
        id,
        action: "patient.bill",
        subject: &format!("patient:{}", patient.number),
    };
    orders::create_for(conn, Kind::Fee, &owner, actor, now)
}

/// The patient (id, number) of bill `order`, if it is a patient's.
pub fn patient_of(conn: &Connection, order: i64) -> Result<Option<(i64, String)>, SalesError> {
    Ok(conn
        .query_row(
            "SELECT p.id, p.number FROM clinic_bills b JOIN clinic_patients p ON p.id = b.patient_id
             WHERE b.order_id = ?1",
            [order],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// The clinic's routes.
pub fn routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/patients", get(patients_page).post(patient_add))
        .route("/patients/{id}", get(patient_page))
        .route("/patients/{id}/bill", post(bill_open))
        .layer(DefaultBodyLimit::max(super::pages::MAX_FORM))
        .with_state(state)
}

#[derive(Deserialize)]
struct Search {
    q: Option<String>,
}

async fn patients_page(
    State(state): Shared,
    authed: Authed,
    q: Result<Query<Search>, QueryRejection>,
) -> Result<Markup, WebError> {
    need(&authed, Need::View)?;
    let search: String = query(q)?
        .q
        .unwrap_or_default()
        .chars()
        .take(super::MAX_TEXT)
        .collect();
    let wanted = search.clone();
    let list = read(&state, move |c| patients(c, &wanted)).await?;
    let body = html! {
        form.filters method="get" action="/patients" {
            label { "Number or name" input name="q" value=(search); }
            button type="submit" { "Search" }
        }
        div.scroll { table {
            thead { tr { th { "Number" } th { "Name" } th { "Born" } } }
            tbody {
                @if list.is_empty() { tr { td colspan="3" { "No patients." } } }
                @for p in &list {
                    tr {
                        td { a href=(format!("/patients/{}", p.id)) { (p.number) } }
                        td { (p.name) }
                        td { (p.birth_date) }
                    }
                }
            }
        } }
        @if may(authed.session.user.role, Need::Sell) {
            h2 { "Register a patient" }
            form.filters method="post" action="/patients" {
                (csrf_field(&authed))
                label { "Name" input name="name" required maxlength=(super::MAX_TEXT) autocomplete="off"; }
                label { "Date of birth" input name="birth_date" type="date" required; }
                label { "Patient number (empty: next free)" input name="number" maxlength=(MAX_NUMBER) size="10" autocomplete="off"; }
                button type="submit" { "Register" }
            }
        }
    };
    Ok(frame(&state, &authed, "Patients", body))
}

#[derive(Deserialize)]
struct PatientForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    birth_date: String,
    #[serde(default)]
    number: String,
    #[serde(default)]
    csrf: String,
}

async fn patient_add(
    State(state): Shared,
    authed: Authed,
    Form(form): Form<PatientForm>,
) -> Result<Response, WebError> {
    posted(&authed, Need::Sell, &form.csrf)?;
    let id = write(&state, &authed, move |tx, actor, now, today| {
        register(
            tx,
            &form.name,
            &form.birth_date,
            &form.number,
            actor,
            now,
            today,
        )
    })
    .await?;
    Ok(Redirect::to(&format!("/patients/{id}")).into_response())
}

async fn patient_page(
    State(state): Shared,
    authed: Authed,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Markup, WebError> {
    need(&authed, Need::View)?;
    let id = path_id(id)?;
    let (p, bills) = read(&state, move |c| {
        let p = patient(c, id)?.ok_or_else(|| SalesError::NotFound(format!("patient {id}")))?;
        Ok((p, bills(c, id)?))
    })
    .await?;
    let body = html! {
        div.scroll { table { tbody {
            tr { th { "Number" } td { (p.number) } }
            tr { th { "Name" } td { (p.name) } }
            tr { th { "Date of birth" } td { (p.birth_date) } }
        } } }
        @if may(authed.session.user.role, Need::Sell) {
            p { (button(&authed, &format!("/patients/{id}/bill"), "Open the bill")) }
        }
        h2 { "Bills" }
        div.scroll { table {
            thead { tr { th.n { "#" } th { "Opened (UTC)" } th { "Status" } th.n { "Total" } th.n { "Paid" } } }
            tbody {
                @if bills.is_empty() { tr { td colspan="5" { "No bills." } } }
                @for o in &bills {
                    tr {
                        td.n { a href=(format!("/orders/{}", o.id)) { (o.id) } }
                        td { (time_text(o.created_at)) }
                        td { (o.status.label()) }
                        td.n { (super::pages::amount(o.total, o.currency)) }
                        td.n { (super::pages::amount(o.paid, o.currency)) }
                    }
                }
            }
        } }
    };
    Ok(frame(
        &state,
        &authed,
        &format!("Patient {}", p.number),
        body,
    ))
}

async fn bill_open(
    State(state): Shared,
    authed: Authed,
    id: Result<Path<i64>, PathRejection>,
    Form(form): Form<super::pages::CsrfForm>,
) -> Result<Response, WebError> {
    sell_on(&state, &authed, &form.csrf, id, |tx, id, actor, now, _| {
        open_bill(tx, id, actor, now)
    })
    .await
}
