//! Guestbook messages in a Redis Stream: `XADD` assigns the id, so concurrent posts can never
//! take the same number (the original read-then-write numbering could), and `MAXLEN ~` bounds
//! the stream.

use std::sync::LazyLock;
use std::time::Duration;

use super::{Message, MessageId, Posted};
use crate::redis::RedisClient;
use crate::store::{Idempotency, StoreError, Unavailable};

/// Post with an idempotency record, atomically. Returns {id, replayed}.
/// KEYS[1] stream, KEYS[2] record; ARGV[1] retention, ARGV[2] text, ARGV[3] window in seconds.
static POST_IDEMPOTENT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local rec = redis.call('GET', KEYS[2])
if rec then return {rec, 1} end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'text', ARGV[2])
redis.call('SET', KEYS[2], id, 'EX', ARGV[3])
return {id, 0}
",
    )
});

/// One stream entry as Redis returns it: the id and the field/value list.
type Entry = (String, Vec<String>);

impl RedisClient {
    pub async fn post_message(
        &self,
        text: &str,
        idem: Option<Idempotency<'_>>,
        deadline: Duration,
    ) -> Result<Posted, StoreError> {
        let keys = self.keys();
        let (id, replayed): (String, i64) = match idem {
            None => {
                let cmd = redis::cmd("XADD")
                    .arg(keys.messages())
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(keys.message_retention())
                    .arg("*")
                    .arg("text")
                    .arg(text)
                    .to_owned();
                (
                    self.query("xadd", keys.messages(), true, deadline, cmd)
                        .await?,
                    0,
                )
            }
            Some(idem) => {
                let (stream, record) = (keys.messages().to_owned(), keys.message_record(idem.key));
                let (retention, text, ttl) = (
                    keys.message_retention(),
                    text.to_owned(),
                    idem.ttl.as_secs().max(1),
                );
                self.run(
                    "xadd_idempotent",
                    keys.messages(),
                    true,
                    deadline,
                    move |mut c| {
                        let (stream, record, text) = (stream.clone(), record.clone(), text.clone());
                        async move {
                            let mut call = POST_IDEMPOTENT.key(stream);
                            call.key(record).arg(retention).arg(text).arg(ttl);
                            call.invoke_async(&mut c).await
                        }
                    },
                )
                .await?
            }
        };
        let id: MessageId = id
            .parse()
            .map_err(|_| bad_reply("XADD returned a malformed id"))?;
        let message = if replayed == 1 {
            // The first post's text, if the stream still has it.
            self.get_message(id, deadline)
                .await?
                .unwrap_or_else(|| Message::new(id, text))
        } else {
            Message::new(id, text)
        };
        Ok(Posted {
            message,
            replayed: replayed == 1,
        })
    }

    pub async fn list_messages(
        &self,
        limit: usize,
        before: Option<MessageId>,
        deadline: Duration,
    ) -> Result<Vec<Message>, StoreError> {
        // "(id" is an exclusive bound (Redis 6.2+).
        let end = before.map_or_else(|| "+".to_owned(), |b| format!("({b}"));
        let cmd = redis::cmd("XREVRANGE")
            .arg(self.keys().messages())
            .arg(end)
            .arg("-")
            .arg("COUNT")
            .arg(limit)
            .to_owned();
        let entries: Vec<Entry> = self
            .query("xrevrange", self.keys().messages(), false, deadline, cmd)
            .await?;
        entries.into_iter().map(to_message).collect()
    }

    pub async fn get_message(
        &self,
        id: MessageId,
        deadline: Duration,
    ) -> Result<Option<Message>, StoreError> {
        let id = id.to_string();
        let cmd = redis::cmd("XRANGE")
            .arg(self.keys().messages())
            .arg(&id)
            .arg(&id)
            .to_owned();
        let entries: Vec<Entry> = self
            .query("xrange", self.keys().messages(), false, deadline, cmd)
            .await?;
        entries.into_iter().next().map(to_message).transpose()
    }
}

fn to_message((id, fields): Entry) -> Result<Message, StoreError> {
    let id: MessageId = id
        .parse()
        .map_err(|_| bad_reply("stream entry with a malformed id"))?;
    let text = fields
        .chunks(2)
        .find(|pair| pair[0] == "text")
        .and_then(|pair| pair.get(1))
        .ok_or_else(|| bad_reply("stream entry without a text field"))?;
    Ok(Message::new(id, text.clone()))
}

fn bad_reply(what: &str) -> StoreError {
    StoreError::unavailable(Unavailable::Server, what)
}
