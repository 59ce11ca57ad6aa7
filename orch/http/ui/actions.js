// Operator actions: each asks for confirmation in a dialog, then shows the server's
// answer, or its problem+json error, in the notice box.

import { api, describeError } from "./api.js";

const $ = (id) => document.getElementById(id);

export function notify(title, body, kind = "ok") {
  const box = $("notice");
  box.className = `notice-${kind}`;
  $("notice-title").textContent = title;
  $("notice-body").textContent = typeof body === "string" ? body : JSON.stringify(body, null, 2);
  box.hidden = false;
}

export function initActions() {
  $("notice-close").addEventListener("click", () => {
    $("notice").hidden = true;
  });
}

// Resolves true when the operator confirms, false when they cancel.
export function confirmDialog(title, message, confirmLabel = "Confirm") {
  const dialog = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-message").textContent = message;
  $("confirm-ok").textContent = confirmLabel;
  return new Promise((resolve) => {
    const finish = (answer) => {
      $("confirm-ok").removeEventListener("click", ok);
      $("confirm-cancel").removeEventListener("click", cancel);
      dialog.removeEventListener("cancel", cancel);
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    const ok = () => finish(true);
    const cancel = (event) => {
      if (event) event.preventDefault();
      finish(false);
    };
    $("confirm-ok").addEventListener("click", ok);
    $("confirm-cancel").addEventListener("click", cancel);
    dialog.addEventListener("cancel", cancel);
    dialog.showModal();
  });
}

// Confirm, call, and report: the answer's JSON on success, the problem on failure.
export async function act({ title, message, confirmLabel, method = "POST", path, body, done }) {
  if (!(await confirmDialog(title, message, confirmLabel))) return null;
  try {
    const answer = await api(path, { method, body });
    notify(`${title}: done`, answer, "ok");
    if (done) done(answer);
    return answer;
  } catch (error) {
    notify(`${title}: refused`, describeError(error), "error");
    return null;
  }
}
