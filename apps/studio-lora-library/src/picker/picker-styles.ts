/** The picker's styles, inside its shadow root: the host page's CSS neither reaches in nor is touched. */
export const PICKER_CSS = `
:host { display: block; font: 14px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2233;
  border: 1px solid #e2e5ee; border-radius: 12px; background: #fff; overflow: hidden; }
.bar { display: flex; gap: 8px; padding: 10px; border-bottom: 1px solid #e2e5ee; flex-wrap: wrap; }
.bar input, .bar select { font: inherit; padding: 6px 9px; border: 1px solid #e2e5ee; border-radius: 8px; }
.bar input[type=search] { flex: 1 1 180px; }
.body { display: grid; grid-template-columns: minmax(0, 1fr) 260px; min-height: 320px; }
.results { list-style: none; margin: 0; padding: 6px; overflow-y: auto; max-height: 420px; }
.results li { display: grid; grid-template-columns: 56px minmax(0, 1fr); gap: 10px; padding: 6px; border-radius: 8px;
  cursor: pointer; align-items: center; }
.results li:hover, .results li[aria-selected=true] { background: #ece9ff; }
.thumb { aspect-ratio: 4 / 3; border-radius: 6px; overflow: hidden; background: #eceef5; display: grid; place-items: center;
  font-size: 10px; color: #6b7285; }
.thumb img { width: 100%; height: 100%; object-fit: cover; display: block; }
.name { display: flex; min-width: 0; white-space: nowrap; font-weight: 600; }
.stem { overflow: hidden; text-overflow: ellipsis; min-width: 0; }
.ext { flex: none; }
.meta { color: #6b7285; font-size: 12px; }
.badge { background: #171a2b; color: #fff; border-radius: 6px; padding: 1px 7px; font-size: 12px; }
.detail { border-left: 1px solid #e2e5ee; padding: 12px; display: grid; gap: 10px; align-content: start; }
.detail .thumb { font-size: 13px; }
.detail-name { word-break: break-all; }
.words { display: flex; gap: 5px; flex-wrap: wrap; }
.word { background: #ece9ff; color: #3c2fc4; border-radius: 999px; padding: 2px 9px; font-size: 12px; }
.warning { background: #fff5df; color: #8a5a00; border-radius: 8px; padding: 8px 10px; font-size: 13px; }
.status { padding: 12px; color: #6b7285; }
.error { color: #d6334a; }
button.add { font: inherit; background: #5b4cf0; color: #fff; border: 0; border-radius: 8px; padding: 8px 14px; cursor: pointer; }
button.add:disabled { opacity: 0.5; cursor: default; }
`;
