// How numbers and times read on the dashboard.

export function percent(value) {
  return `${Math.floor(Number(value) || 0)} %`;
}

/** 0.42 → "0.4 s", 75 → "1 min 15 s", 7300 → "2 h 1 min". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(Number(seconds))) return "—";
  const s = Math.max(0, Number(seconds));
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 60) return `${Math.round(s)} s`;
  const minutes = Math.floor(s / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(s % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

export function eta(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  return Number(seconds) <= 0 ? "done" : `≈ ${duration(seconds)}`;
}

/** Local time of an ISO timestamp: the time only when it is today, else date and time. */
export function time(iso) {
  if (!iso) return "—";
  const value = new Date(iso);
  if (Number.isNaN(value.getTime())) return "—";
  const today = new Date().toDateString() === value.toDateString();
  return today
    ? value.toLocaleTimeString()
    : `${value.toLocaleDateString()} ${value.toLocaleTimeString()}`;
}

/** "5 s ago", "3 min ago"… for the list of recent executions. */
export function ago(iso, now = Date.now()) {
  if (!iso) return "";
  const seconds = Math.max(0, (now - new Date(iso).getTime()) / 1000);
  if (seconds < 60) return `${Math.floor(seconds)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return new Date(iso).toLocaleDateString();
}

export function shortId(id) {
  return String(id).slice(0, 8);
}
