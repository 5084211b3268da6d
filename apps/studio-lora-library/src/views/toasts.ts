import { el } from "../dom.js";
import type { ShownError } from "../errors.js";

const region = () => {
  let r = document.getElementById("toasts");
  if (!r) {
    r = el("div", { id: "toasts", class: "toasts", role: "status", "aria-live": "polite" });
    document.body.append(r);
  }
  return r;
};

/** A short notice that goes away by itself. */
export function toast(text: string, kind: "ok" | "error" = "ok"): void {
  const t = el("div", { class: `toast toast-${kind}` }, text);
  region().append(t);
  setTimeout(() => t.remove(), kind === "error" ? 8000 : 4000);
}

/** An error block: headline, the server's message, its reason code and numbers. */
export function errorBox(e: ShownError): HTMLElement {
  return el(
    "div",
    { class: "error-box", role: "alert", "data-reason": e.reason || undefined },
    el("strong", {}, e.title),
    el("p", { class: "error-message" }, e.message),
    e.details.map((d) => el("p", { class: "error-detail" }, d)),
    e.reason ? el("code", { class: "reason" }, e.reason) : null,
  );
}
