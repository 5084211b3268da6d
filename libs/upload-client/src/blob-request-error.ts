/** A failed request to Blob Storage: an HTTP status with its x-ms-error-code, or no answer at all (status 0). */
export class BlobRequestError extends Error {
  constructor(
    readonly status: number,
    readonly errorCode: string,
    what: string,
    options?: { cause?: unknown },
  ) {
    super(
      status === 0
        ? `${what}: the network connection failed`
        : `${what} failed: HTTP ${status}${errorCode ? ` ${errorCode}` : ""}`,
      options,
    );
    this.name = "BlobRequestError";
  }

  /** 403 from a signed URL: expired or otherwise refused; a fresh URL may help. */
  get urlRefused(): boolean {
    return this.status === 403;
  }

  /** Worth another try as it is: no answer, throttling, timeouts and server errors. */
  get transient(): boolean {
    return this.status === 0 || this.status === 408 || this.status === 429 || this.status >= 500;
  }
}
