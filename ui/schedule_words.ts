/**
 * A cron schedule in words, for people: `0 2 * * *` is "every day at 02:00".
 *
 * @module
 */

const DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const MONTHS = [
  "January",
  "February",
  "March",
  "April",
  "May",
  "June",
  "July",
  "August",
  "September",
  "October",
  "November",
  "December",
];

const pad = (n: string) => n.padStart(2, "0");
const isNum = (s: string) => /^\d+$/.test(s);

function list(field: string, names?: string[], offset = 0): string | undefined {
  if (!/^[\d,-]+$/.test(field)) return undefined;
  const parts = field.split(",").map((p) => {
    const [a, b] = p.split("-");
    const name = (x: string) => (names ? names[(Number(x) - offset) % names.length] : x);
    return b === undefined ? name(a!) : `${name(a!)} to ${name(b)}`;
  });
  return parts.join(", ");
}

/**
 * Describes a 5-field cron expression; falls back to the expression itself when it is unusual.
 *
 * @example
 * ```ts
 * import { scheduleInWords } from "./schedule_words.ts";
 * scheduleInWords("0 2 * * *"); // "every day at 02:00"
 * scheduleInWords("*\/15 * * * *"); // "every 15 minutes"
 * ```
 */
export function scheduleInWords(cron: string | null): string {
  if (!cron) return "manual runs only";
  const f = cron.trim().split(/\s+/);
  if (f.length !== 5) return cron;
  const [min, hour, dom, mon, dow] = f as [string, string, string, string, string];
  let when: string | undefined;
  const everyN = /^\*\/(\d+)$/;
  if (min === "*" && hour === "*") when = "every minute";
  else if (everyN.test(min) && hour === "*") when = `every ${everyN.exec(min)![1]} minutes`;
  else if (isNum(min) && hour === "*") when = `every hour at :${pad(min)}`;
  else if (isNum(min) && everyN.test(hour)) {
    when = `every ${everyN.exec(hour)![1]} hours at :${pad(min)}`;
  } else if (isNum(min) && /^[\d,]+$/.test(hour)) {
    when = `at ${hour.split(",").map((h) => `${pad(h)}:${pad(min)}`).join(", ")}`;
  }
  if (!when) return cron;
  const days: string[] = [];
  if (dom !== "*") {
    const d = list(dom);
    if (!d) return cron;
    days.push(`on day ${d} of the month`);
  }
  if (mon !== "*") {
    const m = list(mon, MONTHS, 1);
    if (!m) return cron;
    days.push(`in ${m}`);
  }
  if (dow !== "*") {
    const d = list(dow, DAYS);
    if (!d) return cron;
    days.push(`on ${d}`);
  }
  if (days.length === 0) return when.startsWith("at ") ? `every day ${when}` : when;
  return `${when} ${days.join(" ")}`;
}
