import "./styles.css";
import { formatBytes } from "@emprops/contracts";
import { createLoraClient } from "./api.js";
import { loadConfig, type PageConfig } from "./config.js";
import { el, mount } from "./dom.js";
import { type ShownError, showError } from "./errors.js";
import { clearSession, restoreSession, type Session, saveSession, sessionOf } from "./session.js";
import { confirmDialog } from "./views/confirm-dialog.js";
import { openDetails } from "./views/details-dialog.js";
import { library } from "./views/library.js";
import { renderQuota } from "./views/quota-bar.js";
import { errorBox, toast } from "./views/toasts.js";
import { uploadPanel } from "./views/upload-panel.js";

/** Cards per page: 12, or ?pageSize=N (1–200). */
function pageSize(): number {
  const n = Number(new URLSearchParams(location.search).get("pageSize"));
  return Number.isInteger(n) && n >= 1 && n <= 200 ? n : 12;
}
const root = document.getElementById("app")!;

function signIn(config: PageConfig, problem?: ShownError): void {
  const input = el("textarea", { rows: 4, placeholder: "eyJhbGciOi…", "aria-label": "Token" });
  const message = el("p", { class: "form-error", role: "alert" });
  mount(
    root,
    el(
      "main",
      { class: "sign-in" },
      el("h1", {}, "LoRA Library"),
      problem ? errorBox(problem) : null,
      el(
        "p",
        {},
        "Sign in with a token. In development, ",
        el("code", {}, "npm start"),
        " prints a sign-in link for this page with a user token in it, and ",
        el("code", {}, "npm run -s mint-token -- --sub <user uuid>"),
        " mints more.",
      ),
      el(
        "form",
        {
          onsubmit: (e: Event) => {
            e.preventDefault();
            const session = sessionOf(input.value);
            if (!session) {
              message.textContent = "That is not a token: paste the whole JWT (three parts separated by dots).";
              return;
            }
            saveSession(session);
            start(config, session);
          },
        },
        input,
        message,
        el("button", { class: "primary", type: "submit" }, "Sign in"),
      ),
    ),
  );
}

function start(config: PageConfig, session: Session): void {
  let current: Session | undefined = session;
  const client = createLoraClient(config.registryUrl, () => current?.token);
  const signOut = (problem?: ShownError) => {
    current = undefined;
    clearSession();
    signIn(config, problem);
  };
  const onError = (e: ShownError) => {
    if (e.signInAgain) signOut(e);
  };
  const quota = el("section", { class: "quota", "aria-label": "Quota", "data-testid": "quota" });
  const refreshQuota = async () => {
    try {
      const res = await client.getQuota({});
      renderQuota(quota, res, {
        remove: async (lora) => {
          const ok = await confirmDialog({
            title: `Delete ${lora.name}?`,
            text: `This frees ${formatBytes(lora.sizeBytes)} of your quota. Machines drop their cached copy, and workflows that use it will no longer find it.`,
            confirm: "Delete",
          });
          if (!ok) return;
          try {
            await client.deleteLora({ loraId: lora.id });
            toast(`Deleted ${lora.name}`);
          } catch (err) {
            toast(showError(err).message, "error");
          }
          void lib.refresh();
          void refreshQuota();
        },
      });
    } catch (err) {
      const shown = showError(err);
      mount(quota, errorBox(shown));
      onError(shown);
    }
  };
  const lib = library({
    client,
    pageSize: pageSize(),
    onError,
    onOpen: (lora) =>
      void openDetails(client, lora.id, {
        onDeleted: () => {
          void lib.refresh();
          void refreshQuota();
        },
        onChanged: (changed) => lib.show(changed),
      }),
  });
  const uploads = uploadPanel({
    client,
    userId: session.userId,
    onUploaded: () => {
      void lib.refresh();
      void refreshQuota();
    },
  });
  mount(
    root,
    el(
      "header",
      { class: "top" },
      el("h1", {}, "LoRA Library"),
      el(
        "div",
        { class: "who" },
        el("span", { title: session.userId }, `Signed in as ${session.userId.slice(0, 8)}…`),
        el("button", { class: "secondary", onclick: () => signOut() }, "Sign out"),
      ),
    ),
    el("main", {}, quota, uploads, lib.element),
  );
  void refreshQuota();
  void lib.refresh();
}

async function boot(): Promise<void> {
  let config: PageConfig;
  try {
    config = await loadConfig();
  } catch (err) {
    mount(root, errorBox(showError(err)));
    return;
  }
  const session = restoreSession();
  if (session && (!session.expiresAt || session.expiresAt > new Date())) start(config, session);
  else signIn(config);
  // A sign-in link opened in a tab already showing the page changes only the fragment: no reload, so listen.
  window.addEventListener("hashchange", () => {
    if (!new URLSearchParams(location.hash.slice(1)).has("token")) return;
    const next = restoreSession();
    if (next) start(config, next);
  });
}

void boot();
