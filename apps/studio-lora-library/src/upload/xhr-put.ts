import { BlobRequestError, type PutTransport } from "@emprops/upload-client";

/**
 * PUT with XMLHttpRequest, the one browser API that reports upload progress
 * (fetch does not), so the bar moves within a block. Blob Storage must allow
 * this page's origin (CORS).
 */
export const xhrPut: PutTransport = ({ url, body, headers, what, signal, onProgress }) =>
  new Promise((resolve, reject) => {
    signal.throwIfAborted();
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", url);
    for (const [k, v] of Object.entries(headers)) xhr.setRequestHeader(k, v);
    if (onProgress) xhr.upload.onprogress = (e) => onProgress(e.loaded);
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve();
      else reject(new BlobRequestError(xhr.status, xhr.getResponseHeader("x-ms-error-code") ?? "", what));
    };
    xhr.onerror = () => reject(new BlobRequestError(0, "", what));
    xhr.ontimeout = () => reject(new BlobRequestError(0, "", what));
    xhr.onabort = () => reject(signal.reason ?? new DOMException(`${what} was cancelled`, "AbortError"));
    signal.addEventListener("abort", () => xhr.abort(), { once: true });
    xhr.send(body);
  });
