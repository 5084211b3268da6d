const KEY = "emprops.lora-library.token";

export interface Session {
  token: string;
  /** JWT sub: the user's UUID. */
  userId: string;
  /** Expiry, when the token has one. */
  expiresAt?: Date;
}

/** The JWT's claims, read without verifying (the registry verifies). */
function claimsOf(token: string): { sub?: unknown; exp?: unknown } | undefined {
  const part = token.split(".")[1];
  if (!part) return undefined;
  try {
    const json = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
    return JSON.parse(json) as { sub?: unknown; exp?: unknown };
  } catch {
    return undefined;
  }
}

/** A session from a token, or undefined when it is not a JWT with a subject. */
export function sessionOf(token: string): Session | undefined {
  const claims = claimsOf(token.trim());
  if (!claims || typeof claims.sub !== "string") return undefined;
  return {
    token: token.trim(),
    userId: claims.sub,
    expiresAt: typeof claims.exp === "number" ? new Date(claims.exp * 1000) : undefined,
  };
}

/**
 * Development sign-in: a token in the URL fragment (#token=…, printed by
 * `npm start`) is taken once, kept for this tab and removed from the
 * address bar. A fragment never reaches a server.
 */
export function restoreSession(): Session | undefined {
  const params = new URLSearchParams(location.hash.slice(1));
  const fromFragment = params.get("token");
  if (fromFragment) {
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", `${location.pathname}${location.search}${rest ? `#${rest}` : ""}`);
    const session = sessionOf(fromFragment);
    if (session) {
      sessionStorage.setItem(KEY, session.token);
      return session;
    }
  }
  const stored = sessionStorage.getItem(KEY);
  return stored ? sessionOf(stored) : undefined;
}

export function saveSession(session: Session): void {
  sessionStorage.setItem(KEY, session.token);
}

export function clearSession(): void {
  sessionStorage.removeItem(KEY);
}
