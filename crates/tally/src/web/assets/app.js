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

  setInterval(() => refreshMessages().catch(() => {}), 10000);
})();
