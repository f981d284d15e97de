//! The web tier's client of the API tier: HTTP only, pooled, every call with a timeout.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::guestbook::wire::{MessageJson as Message, MessagePage};

#[derive(Clone)]
pub struct ApiClient {
    base: String,
    /// `base` without user information, for logs and /readyz.
    display: String,
    http: reqwest::Client,
}

/// Why a call to the API tier failed (the JSON error answered to clients is `http::ApiError`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The API could not answer (down, slow, 5xx). The page says so with a 503.
    #[error("the API is unavailable: {0}")]
    Unavailable(String),
    /// The API refused the request (4xx) and said why.
    #[error("{message}")]
    Rejected { status: u16, message: String },
}

#[derive(Deserialize)]
struct Count {
    count: i64,
}

#[derive(Deserialize)]
struct Seen {
    indexes: Vec<SeenIndex>,
}

#[derive(Deserialize)]
struct SeenIndex {
    index: u32,
}

#[derive(Deserialize)]
struct FibAnswer {
    value: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

impl ApiClient {
    pub fn new(base: &str, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(1)))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        let base = base.trim_end_matches('/').to_owned();
        Ok(Self {
            display: redact(&base),
            base,
            http,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The base URL as logs and status pages may show it: no user name or password.
    pub fn display(&self) -> &str {
        &self.display
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Readiness probe: the API's service-info route answers 200.
    pub async fn ping(&self) -> Result<(), String> {
        let r = self
            .http
            .get(format!("{}/", self.base))
            .send()
            .await
            .map_err(|e| describe(&e))?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(format!("API answered {}", r.status()))
        }
    }

    pub async fn recent_messages(&self, limit: usize) -> Result<Vec<Message>, CallError> {
        let page: MessagePage = self
            .call(
                self.http
                    .get(format!("{}/api/v1/messages?limit={limit}", self.base)),
            )
            .await?;
        Ok(page.messages)
    }

    pub async fn post_message(
        &self,
        text: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Message, CallError> {
        let mut request = self
            .http
            .post(format!("{}/api/v1/messages", self.base))
            .json(&json!({ "text": text }));
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        self.call(request).await
    }

    pub async fn increment(&self, id: &str) -> Result<i64, CallError> {
        let count: Count = self
            .call(self.http.get(format!("{}/{}", self.base, encode(id))))
            .await?;
        Ok(count.count)
    }

    pub async fn read_counter(&self, id: &str) -> Result<i64, CallError> {
        let url = format!("{}/api/v1/counters/{}", self.base, encode(id));
        let count: Count = self.call(self.http.get(url)).await?;
        Ok(count.count)
    }

    /// The most recently submitted indexes with their values when computed.
    pub async fn fib_recent(&self, limit: usize) -> Result<Vec<(u32, Option<String>)>, CallError> {
        let url = format!("{}/api/v1/fib/indexes?limit={limit}", self.base);
        let seen: Seen = self.call(self.http.get(url)).await?;
        let mut lookups = tokio::task::JoinSet::new();
        // Spawned tasks do not inherit the task-local span; each lookup is given it.
        let span = crate::trace::current();
        for (position, item) in seen.indexes.into_iter().enumerate() {
            let api = self.clone();
            lookups.spawn(crate::trace::within(span.clone(), async move {
                let url = format!("{}/api/v1/fib/{}", api.base, item.index);
                let answer: Result<FibAnswer, CallError> = api.call(api.http.get(url)).await;
                (position, item.index, answer)
            }));
        }
        let mut found = Vec::new();
        while let Some(joined) = lookups.join_next().await {
            let (position, index, answer) =
                joined.map_err(|e| CallError::Unavailable(e.to_string()))?;
            found.push((position, index, answer?.value));
        }
        found.sort_by_key(|(position, _, _)| *position);
        Ok(found
            .into_iter()
            .map(|(_, index, value)| (index, value))
            .collect())
    }

    pub async fn submit_fib(&self, index: u32) -> Result<(), CallError> {
        let request = self
            .http
            .post(format!("{}/api/v1/fib", self.base))
            .json(&json!({ "index": index }));
        let _: serde_json::Value = self.call(request).await?;
        Ok(())
    }

    async fn call<T: for<'de> Deserialize<'de>>(
        &self,
        mut request: reqwest::RequestBuilder,
    ) -> Result<T, CallError> {
        request = with_trace(request);
        let response = request
            .send()
            .await
            .map_err(|e| CallError::Unavailable(describe(&e)))?;
        let status = response.status();
        if status.is_server_error() {
            return Err(CallError::Unavailable(format!("the API answered {status}")));
        }
        if !status.is_success() {
            let message = response
                .json::<ErrorBody>()
                .await
                .map(|b| b.error)
                .unwrap_or_else(|_| format!("the API answered {status}"));
            return Err(CallError::Rejected {
                status: status.as_u16(),
                message,
            });
        }
        response
            .json()
            .await
            .map_err(|e| CallError::Unavailable(format!("unreadable answer: {}", describe(&e))))
    }
}

/// Makes the API's span a child of the current web request's (W3C Trace Context): for the
/// API client's calls and for the proxy alike.
pub fn with_trace(mut request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    if let Some((traceparent, tracestate)) = crate::trace::outgoing() {
        request = request.header(crate::trace::TRACEPARENT.clone(), traceparent);
        if let Some(state) = tracestate {
            request = request.header(crate::trace::TRACESTATE.clone(), state);
        }
    }
    request
}

/// One path segment, percent-encoded.
pub fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `url` without its user information (`http://user:secret@api` → `http://api`).
pub fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.as_str().trim_end_matches('/').to_owned()
        }
        Ok(_) => url.to_owned(),
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

/// What went wrong, without the URL (which may carry credentials).
pub fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else {
        "request failed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_information_never_shows() {
        assert_eq!(redact("http://u:secret@api:8080"), "http://api:8080");
        assert_eq!(redact("https://token@api/base"), "https://api/base");
        assert_eq!(redact("http://api:8080"), "http://api:8080");
        let client = ApiClient::new("http://u:secret@api:8080/", Duration::from_secs(1)).unwrap();
        assert_eq!(client.display(), "http://api:8080");
        assert_eq!(client.base(), "http://u:secret@api:8080");
    }
}
