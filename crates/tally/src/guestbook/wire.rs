//! The guestbook's JSON, as the API sends it and the web tier reads it: one definition, so the
//! two tiers cannot drift apart, and the stored record (`Message`) can change without either.

use serde::{Deserialize, Serialize};

use super::Message;

/// A message as `GET /api/v1/messages/{id}` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageJson {
    pub id: String,
    pub text: String,
    pub created_at: String,
}

/// A page of messages as `GET /api/v1/messages` answers it, newest first; `next` is the
/// `before` of the following page, null on the last.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessagePage {
    pub messages: Vec<MessageJson>,
    pub next: Option<String>,
}

impl From<&Message> for MessageJson {
    fn from(message: &Message) -> Self {
        Self {
            id: message.id.clone(),
            text: message.text.clone(),
            created_at: message.created_at.clone(),
        }
    }
}
