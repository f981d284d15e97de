//! The one page: the guestbook and the counter demo, rendered on the server (maud escapes every
//! interpolated value, so a posted `<script>` is shown as text). It works without JavaScript:
//! plain forms and POST-redirect-GET; `app.js` only saves reloads.

use maud::{html, Markup, DOCTYPE};

use crate::guestbook::wire::MessageJson as Message;

/// Everything the page shows. `Err` parts render as notices instead of content.
pub struct Page {
    pub messages: Result<Vec<Message>, String>,
    pub counter_id: String,
    pub count: Option<Result<i64, String>>,
    /// A message the user tried to post and why it was refused, to show it back to them.
    pub draft: Option<(String, String)>,
    /// Why the last counter click did not count.
    pub counter_problem: Option<String>,
    /// The API could not be reached for some part of the page.
    pub api_unavailable: bool,
    /// The Fibonacci calculator: submitted indexes (newest first) and computed values; `Err`
    /// when the job system cannot be reached or is not configured.
    pub fib: Result<Calculator, String>,
    /// Why the last calculator submission was refused.
    pub fib_problem: Option<String>,
}

pub struct Calculator {
    /// (index, value when computed), most recently submitted first.
    pub seen: Vec<(u32, Option<String>)>,
}

pub fn render(page: &Page) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "tally — guestbook, counter, calculator" }
                link rel="stylesheet" href="/static/style.css";
                link rel="icon" href="/static/icon.svg" type="image/svg+xml";
                script src="/static/app.js" defer {}
            }
            body {
                header {
                    h1 { "tally" }
                    p.tagline { "A guestbook, a counter and a calculator, on Redis." }
                }
                @if page.api_unavailable {
                    p.notice role="alert" id="api-notice" { "The API is unavailable right now. What you see may be incomplete; try again shortly." }
                }
                main {
                    (guestbook(page))
                    div.side {
                        (counter(page))
                        (calculator(page))
                    }
                }
                footer { "Served by tally web. " a href="/api/v1/messages" { "JSON API" } }
            }
        }
    }
}

fn guestbook(page: &Page) -> Markup {
    let (draft, problem) = match &page.draft {
        Some((text, why)) => (text.as_str(), Some(why.as_str())),
        None => ("", None),
    };
    html! {
        section.card id="guestbook" aria-labelledby="guestbook-title" {
            h2 id="guestbook-title" { "Guestbook" }
            form id="message-form" method="post" action="/web/messages" {
                label for="message-text" { "Your message" }
                textarea id="message-text" name="text" rows="3" maxlength="500" required placeholder="Say hello…" { (draft) }
                input type="hidden" name="idempotency_key" value=(uuid::Uuid::new_v4().to_string());
                @if let Some(why) = problem {
                    p.error id="message-error" role="alert" { (why) }
                } @else {
                    p.error id="message-error" role="alert" hidden {}
                }
                button type="submit" { "Post" }
            }
            h3 { "Latest messages" }
            @match &page.messages {
                Ok(messages) if messages.is_empty() => {
                    ul id="messages" { li.empty { "No messages yet. Be the first." } }
                }
                Ok(messages) => {
                    ul id="messages" {
                        @for m in messages {
                            li data-id=(m.id) {
                                p.text { (m.text) }
                                time datetime=(m.created_at) { (m.created_at) }
                            }
                        }
                    }
                }
                Err(why) => {
                    ul id="messages" { li.empty { "Messages cannot be shown: " (why) } }
                }
            }
        }
    }
}

fn counter(page: &Page) -> Markup {
    html! {
        section.card id="counter" aria-labelledby="counter-title" {
            h2 id="counter-title" { "Counter" }
            form id="counter-form" method="post" action="/web/counter" {
                label for="counter-id" { "Counter id" }
                input id="counter-id" name="id" value=(page.counter_id) maxlength="256" required;
                button type="submit" { "Count +1" }
            }
            @if let Some(why) = &page.counter_problem {
                p.error role="alert" { (why) }
            }
            p.count {
                "Count: "
                output id="count" for="counter-id" {
                    @match &page.count {
                        Some(Ok(n)) => (n),
                        Some(Err(_)) => "unavailable",
                        None => "–",
                    }
                }
            }
        }
    }
}

/// Long values are shortened on the page; the API has them whole.
fn shorten(value: &str) -> String {
    if value.len() <= 24 {
        value.to_owned()
    } else {
        format!(
            "{}…{} ({} digits)",
            &value[..10],
            &value[value.len() - 6..],
            value.len()
        )
    }
}

fn calculator(page: &Page) -> Markup {
    html! {
        section.card id="fib" aria-labelledby="fib-title" {
            h2 id="fib-title" { "Fibonacci" }
            form id="fib-form" method="post" action="/web/fib" {
                label for="fib-index" { "Index" }
                input id="fib-index" name="index" type="number" min="0" required;
                button type="submit" { "Calculate" }
            }
            @if let Some(why) = &page.fib_problem {
                p.error role="alert" { (why) }
            }
            @match &page.fib {
                Ok(calc) => {
                    h3 { "Indexes I have seen" }
                    p id="fib-seen" { @if calc.seen.is_empty() { "none yet" } @else {
                        @for (i, (index, _)) in calc.seen.iter().enumerate() {
                            @if i > 0 { ", " } (index)
                        }
                    } }
                    h3 { "Calculated values" }
                    ul id="fib-values" {
                        @for (index, value) in &calc.seen {
                            li data-index=(index) {
                                "F(" (index) ") = "
                                @match value {
                                    Some(v) => span.value title=(v) { (shorten(v)) },
                                    None => span.pending { "pending…" },
                                }
                            }
                        }
                    }
                }
                Err(why) => { p.empty { "The calculator is unavailable: " (why) } }
            }
        }
    }
}
