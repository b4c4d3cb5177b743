//! A client of the host's merchant REST API (`GET /v1/transactions`,
//! `GET /v1/settlements`), authenticated by the merchant's API key.

use host::api::{SettlementReport, TransactionPage};
use pki::Secret;
use std::time::Duration;

/// Largest page the host serves.
pub const PAGE: u32 = host::api::MAX_PAGE;
/// Whole-request deadline of each call.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Most bytes of an error body quoted in an error.
const MAX_ERROR_BODY: usize = 200;

/// A call to the host failed.
#[derive(Debug, thiserror::Error)]
pub enum HostApiError {
    /// The base URL is not an http or https URL.
    #[error("host API URL {0:?} is not an http or https URL")]
    Url(String),
    /// The HTTP client could not be built.
    #[error("host API client: {0}")]
    Client(String),
    /// The request failed (connection, timeout, TLS).
    #[error("host API {path}: {message}")]
    Request {
        /// Path asked for.
        path: String,
        /// What failed.
        message: String,
    },
    /// The host answered with an error status.
    #[error("host API {path}: HTTP {status}: {body}")]
    Status {
        /// Path asked for.
        path: String,
        /// HTTP status.
        status: u16,
        /// Start of the body (the host's error object).
        body: String,
    },
    /// The answer could not be read.
    #[error("host API {path}: unreadable answer: {message}")]
    Decode {
        /// Path asked for.
        path: String,
        /// What failed.
        message: String,
    },
}

/// The host's merchant API.
pub struct HostApi {
    client: reqwest::Client,
    base: reqwest::Url,
    key: Secret,
}

impl std::fmt::Debug for HostApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostApi")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

/// An error with its causes (no URL: the caller names the path).
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".to_string();
    }
    let mut text = "request failed".to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl HostApi {
    /// A client of the API at `base` (for example `http://127.0.0.1:5880`)
    /// with the merchant's API key.
    pub fn new(base: &str, key: Secret) -> Result<HostApi, HostApiError> {
        let base = reqwest::Url::parse(base)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| HostApiError::Url(base.to_string()))?;
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("posnet-merchant/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HostApiError::Client(e.to_string()))?;
        Ok(HostApi { client, base, key })
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, HostApiError> {
        let url = self
            .base
            .join(path)
            .map_err(|_| HostApiError::Url(path.into()))?;
        let key = std::str::from_utf8(self.key.expose()).unwrap_or_default();
        let response = self
            .client
            .get(url)
            .query(query)
            .bearer_auth(key)
            .send()
            .await
            .map_err(|e| HostApiError::Request {
                path: path.into(),
                message: describe(&e),
            })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| HostApiError::Request {
            path: path.into(),
            message: describe(&e),
        })?;
        if !status.is_success() {
            return Err(HostApiError::Status {
                path: path.into(),
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes)
                    .chars()
                    .take(MAX_ERROR_BODY)
                    .collect(),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| HostApiError::Decode {
            path: path.into(),
            message: e.to_string(),
        })
    }

    /// One page of transactions, newest first, received at or after `from`
    /// and before `to` (Unix seconds), after `cursor`.
    pub async fn transactions(
        &self,
        from: Option<i64>,
        to: Option<i64>,
        cursor: Option<&str>,
    ) -> Result<TransactionPage, HostApiError> {
        let mut query = vec![("limit", PAGE.to_string())];
        if let Some(from) = from {
            query.push(("from", from.to_string()));
        }
        if let Some(to) = to {
            query.push(("to", to.to_string()));
        }
        if let Some(cursor) = cursor {
            query.push(("cursor", cursor.to_string()));
        }
        self.get("/v1/transactions", &query).await
    }

    /// The settlement report of a day (`YYYY-MM-DD`, UTC).
    pub async fn settlements(&self, date: &str) -> Result<SettlementReport, HostApiError> {
        self.get("/v1/settlements", &[("date", date.to_string())])
            .await
    }
}
