// Progressive enhancement for the tally page: post and count without reloading. Without this
// script the forms work as plain HTML forms. Text is always set with textContent, never HTML.
"use strict";

(function () {
  const messageForm = document.getElementById("message-form");
  const messageText = document.getElementById("message-text");
  const messageError = document.getElementById("message-error");
  const list = document.getElementById("messages");
  const counterForm = document.getElementById("counter-form");
  const counterId = document.getElementById("counter-id");
  const count = document.getElementById("count");

  function showError(text) {
    messageError.textContent = text;
    messageError.hidden = !text;
  }

  function renderMessages(messages) {
    list.replaceChildren();
    if (messages.length === 0) {
      const li = document.createElement("li");
      li.className = "empty";
      li.textContent = "No messages yet. Be the first.";
      list.append(li);
      return;
    }
    for (const m of messages) {
      const li = document.createElement("li");
      li.dataset.id = m.id;
      const p = document.createElement("p");
      p.className = "text";
      p.textContent = m.text;
      const time = document.createElement("time");
      time.dateTime = m.created_at;
      time.textContent = m.created_at;
      li.append(p, time);
      list.append(li);
    }
  }

  async function refreshMessages() {
    const response = await fetch("/api/v1/messages?limit=10", { headers: { Accept: "application/json" } });
    if (response.ok) {
      renderMessages((await response.json()).messages);
    }
  }

  async function errorText(response) {
    try {
      return (await response.json()).error;
    } catch (_) {
      return "The API is unavailable right now; try again shortly.";
    }
  }

  messageForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = messageForm.elements.idempotency_key;
    try {
      const response = await fetch("/api/v1/messages", {
        method: "POST",
        headers: { "Content-Type": "application/json", "Idempotency-Key": key.value },
        body: JSON.stringify({ text: messageText.value }),
      });
      if (!response.ok) {
        showError(await errorText(response));
        return;
      }
      showError("");
      messageText.value = "";
      key.value = crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random();
      await refreshMessages();
    } catch (_) {
      showError("The API is unavailable right now; try again shortly.");
    }
  });

  counterForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const response = await fetch("/" + encodeURIComponent(counterId.value), { headers: { Accept: "application/json" } });
      count.textContent = response.ok ? String((await response.json()).count) : "unavailable";
    } catch (_) {
      count.textContent = "unavailable";
    }
  });

  const fibForm = document.getElementById("fib-form");
  const fibValues = document.getElementById("fib-values");

  // Fills in pending values as the workers finish them, without a reload.
  async function refreshPending() {
    if (!fibValues) return;
    for (const li of fibValues.querySelectorAll("li")) {
      const pending = li.querySelector(".pending");
      if (!pending) continue;
      const response = await fetch("/api/v1/fib/" + li.dataset.index, { headers: { Accept: "application/json" } });
      if (response.status === 200) {
        const value = (await response.json()).value;
        const span = document.createElement("span");
        span.className = "value";
        span.title = value;
        span.textContent = value.length <= 24 ? value : value.slice(0, 10) + "…" + value.slice(-6) + " (" + value.length + " digits)";
        pending.replaceWith(span);
      }
    }
  }

  if (fibForm) {
    fibForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const index = Number(document.getElementById("fib-index").value);
      const response = await fetch("/api/v1/fib", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ index: index }),
      }).catch(() => null);
      if (response && response.ok) {
        // The server renders the lists; a reload is the simplest way to show the new index.
        window.location.reload();
      } else {
        fibForm.submit();
      }
    });
  }

  setInterval(() => refreshMessages().catch(() => {}), 10000);
  setInterval(() => refreshPending().catch(() => {}), 1000);
})();
