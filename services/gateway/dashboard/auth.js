// The dashboard's credentials: a token kept for this tab only (sessionStorage), never in a
// URL the server sees. `make run` prints the dashboard's address with `#token=…`: the
// fragment never leaves the browser, and it is taken out of the address bar at once.

const KEY = "discovery.token";
const listeners = new Set();

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
