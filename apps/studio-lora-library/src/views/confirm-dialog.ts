import { el } from "../dom.js";

/** A modal yes/no question; resolves true only for the confirm button. */
export function confirmDialog(opts: { title: string; text: string; confirm: string }): Promise<boolean> {
  return new Promise((resolve) => {
    const dialog = el(
      "dialog",
      { class: "confirm", "aria-label": opts.title },
      el(
        "form",
        { method: "dialog" },
        el("h3", {}, opts.title),
        el("p", {}, opts.text),
        el(
          "div",
          { class: "actions" },
          el("button", { value: "cancel", class: "secondary" }, "Cancel"),
          el("button", { value: "confirm", class: "danger" }, opts.confirm),
        ),
      ),
    );
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "confirm");
      dialog.remove();
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}
