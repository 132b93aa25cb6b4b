// Access windows: when a service may be reached at all. The customer (who runs the tunnel)
// decides: outside every window of a service its allocations are released, so the relayed
// address stops existing, whatever the platform holds in the way of credentials.
//
//   --window "Mon-Fri 08:00-18:00 Europe/Berlin"
//   --window "Sat,Sun 10:00-12:00"            (UTC when no zone is given)
//   --window "daily 22:00-06:00 America/New_York"   (crosses midnight: opens on the listed day)
//
// Times are wall-clock times in the window's IANA zone, evaluated with Intl.DateTimeFormat, so
// "08:00 Europe/Berlin" is 06:00 UTC in summer and 07:00 UTC in winter without any DST table of
// our own. Parsing never throws: a bad window is an error result.

export interface AccessWindow {
  readonly text: string;
  /** Bit d set = open on weekday d (0 = Monday ... 6 = Sunday), for the window's start. */
  readonly days: number;
  /** Minutes after local midnight, 0..1439. */
  readonly start: number;
  /** Minutes after local midnight, 1..1440; <= start means the window crosses midnight. */
  readonly end: number;
  readonly timeZone: string;
}

const DAY_NAMES = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"] as const;
const ALL_DAYS = 0x7f;

export function parseWindow(text: string): AccessWindow | { error: string } {
  const parts = text.trim().split(/\s+/);
  if (parts.length < 2 || parts.length > 3) {
    return { error: 'DAYS HH:MM-HH:MM [TIME/ZONE], e.g. "Mon-Fri 08:00-18:00 Europe/Berlin"' };
  }
  const days = parseDays(parts[0]!);
  if (days === undefined) {
    return { error: 'days like "Mon-Fri", "Sat,Sun", "Mon" or "daily"' };
  }
  const times = /^(\d{2}):(\d{2})-(\d{2}):(\d{2})$/.exec(parts[1]!);
  if (!times) return { error: 'a time range like "08:00-18:00"' };
  const start = minutes(times[1]!, times[2]!, false);
  const end = minutes(times[3]!, times[4]!, true);
  if (start === undefined || end === undefined)
    return { error: "times 00:00..23:59 (end may be 24:00)" };
  if (start === end)
    return { error: "a time range that is not empty (use 00:00-24:00 for all day)" };
  const timeZone = parts[2] ?? "UTC";
  if (formatterFor(timeZone) === undefined)
    return { error: `a known IANA time zone, not "${timeZone}"` };
  return { text: text.trim(), days, start, end, timeZone };
}

function parseDays(text: string): number | undefined {
  const t = text.toLowerCase();
  if (t === "daily" || t === "*") return ALL_DAYS;
  let mask = 0;
  for (const item of t.split(",")) {
    const range = item.split("-");
    if (range.length > 2) return undefined;
    const from = DAY_NAMES.indexOf(range[0] as (typeof DAY_NAMES)[number]);
    const to = DAY_NAMES.indexOf((range[1] ?? range[0]) as (typeof DAY_NAMES)[number]);
    if (from < 0 || to < 0) return undefined;
    // "Fri-Mon" wraps over the weekend.
    for (let d = from; ; d = (d + 1) % 7) {
      mask |= 1 << d;
      if (d === to) break;
    }
  }
  return mask;
}

function minutes(h: string, m: string, isEnd: boolean): number | undefined {
  const hh = Number(h);
  const mm = Number(m);
  if (isEnd && hh === 24 && mm === 0) return 1440;
  if (hh > 23 || mm > 59) return undefined;
  return hh * 60 + mm;
}

const formatters = new Map<string, Intl.DateTimeFormat | undefined>();

function formatterFor(timeZone: string): Intl.DateTimeFormat | undefined {
  if (formatters.has(timeZone)) return formatters.get(timeZone);
  let f: Intl.DateTimeFormat | undefined;
  try {
    f = new Intl.DateTimeFormat("en-US", {
      timeZone,
      weekday: "short",
      hour: "2-digit",
      minute: "2-digit",
      hourCycle: "h23",
    });
  } catch {
    f = undefined; // RangeError: unknown time zone
  }
  formatters.set(timeZone, f);
  return f;
}

/** Weekday (0 = Monday) and minutes after midnight of `date` on the wall clock of `timeZone`. */
export function localTime(date: Date, timeZone: string): { day: number; minute: number } {
  const f = formatterFor(timeZone);
  if (f === undefined) return { day: -1, minute: -1 };
  let day = -1;
  let hour = 0;
  let minute = 0;
  for (const p of f.formatToParts(date)) {
    if (p.type === "weekday")
      day = DAY_NAMES.indexOf(p.value.toLowerCase() as (typeof DAY_NAMES)[number]);
    else if (p.type === "hour") hour = Number(p.value) % 24;
    else if (p.type === "minute") minute = Number(p.value);
  }
  return { day, minute: hour * 60 + minute };
}

/** True when `date` lies inside the window. */
export function windowContains(w: AccessWindow, date: Date): boolean {
  const { day, minute } = localTime(date, w.timeZone);
  if (day < 0) return false;
  const on = (d: number) => (w.days & (1 << ((d + 7) % 7))) !== 0;
  if (w.start < w.end) return on(day) && minute >= w.start && minute < w.end;
  // Crossing midnight: the evening part belongs to today, the morning part to yesterday's window.
  return (on(day) && minute >= w.start) || (on(day - 1) && minute < w.end);
}

/** No windows = always open; otherwise open when any window contains `date`. */
export function isOpen(windows: readonly AccessWindow[], date: Date): boolean {
  return windows.length === 0 || windows.some((w) => windowContains(w, date));
}

/**
 * Whether a service may be reached, as the clock moves: `update` says when that changed since
 * the last look. Pure: the caller brings the date (the supervisor's timer, or a test's clock).
 */
export class WindowWatch {
  #open: boolean;

  constructor(
    private readonly windows: readonly AccessWindow[],
    date: Date,
  ) {
    this.#open = isOpen(windows, date);
  }

  get open(): boolean {
    return this.#open;
  }

  /** "opened" or "closed" when `date` is on the other side of a window edge than the last look. */
  update(date: Date): "opened" | "closed" | undefined {
    const open = isOpen(this.windows, date);
    if (open === this.#open) return undefined;
    this.#open = open;
    return open ? "opened" : "closed";
  }
}
