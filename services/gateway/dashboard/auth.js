// The dashboard's credentials: a token kept for this tab only (sessionStorage), never in a
// URL the server sees. `make run` prints the dashboard's address with `#token=…`: the
// fragment never leaves the browser, and it is taken out of the address bar at once.
//
// The token's claims are read here (its payload, not its signature) for what the page shows
// only: which buttons, whose name in the corner. The gateway checks every call; a button the
// page shows wrongly is refused there, and the refusal is shown.

const KEY = "discovery.token";
const listeners = new Set();

// The roles that may cancel, advance and retry their tenant's executions (services/auth.py).
const DRIVERS = new Set(["client", "admin"]);

/** Moves a `#token=…` fragment into this tab's storage. */
export function adoptTokenFromHash() {
  const match = /^#token=([^&]+)$/.exec(location.hash);
  if (match === null) return;
  let token;
  try {
    token = decodeURIComponent(match[1]);
  } catch {
    return;
  }
  sessionStorage.setItem(KEY, token);
  history.replaceState(null, "", `${location.pathname}${location.search}#/`);
}

export function token() {
  return sessionStorage.getItem(KEY);
}

export function signIn(value) {
  sessionStorage.setItem(KEY, value.trim());
}

/** The gateway refused the token (expired, revoked): forget it and ask for another. */
export function signOut(reason) {
  sessionStorage.removeItem(KEY);
  for (const listener of listeners) listener(reason);
}

export function onSignOut(listener) {
  listeners.add(listener);
}

/**
 * The token's payload ({role, tenant, sub, exp, execution_id…}), or null when it is not a
 * JWT this page can read (the gateway will say what is wrong with it).
 */
export function claims() {
  const value = token();
  const payload = value?.split(".")[1];
  if (!payload) return null;
  try {
    const base64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, "=")), (c) => c.charCodeAt(0));
    const decoded = JSON.parse(new TextDecoder().decode(bytes));
    return decoded !== null && typeof decoded === "object" ? decoded : null;
  } catch {
    return null;
  }
}

/** The one execution a watch token may follow, or null for any other token. */
export function watchedExecution() {
  const payload = claims();
  return payload?.role === "watcher" && typeof payload.execution_id === "string" ? payload.execution_id : null;
}

/**
 * Whether the token's role may cancel, advance and retry executions. A token whose role cannot be
 * read is given the buttons: the gateway decides, and the page shows its answer.
 */
export function mayDrive() {
  const role = claims()?.role;
  return role === undefined || DRIVERS.has(role);
}
