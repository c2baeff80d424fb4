// Small numeric helpers for the report.

/** Sorted copy (ascending) of a Float64Array or array of numbers. */
export function sorted(values) {
  const a = Float64Array.from(values);
  a.sort();
  return a;
}

/** Nearest-rank percentile of an ascending array (`p` in 0..100); NaN when empty. */
export function pct(asc, p) {
  if (asc.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * asc.length);
  return asc[Math.min(asc.length - 1, Math.max(0, rank - 1))];
}

/** `{ n, p50, p90, p99, max, mean }` of a list of values. */
export function summary(values) {
  const asc = sorted(values);
  let sum = 0;
  for (const v of asc) sum += v;
  return {
    n: asc.length,
    p50: pct(asc, 50),
    p90: pct(asc, 90),
    p99: pct(asc, 99),
    max: asc.length ? asc[asc.length - 1] : NaN,
    mean: asc.length ? sum / asc.length : NaN,
  };
}

export const fmtMs = (v) => (Number.isFinite(v) ? `${v.toFixed(v < 10 ? 2 : 1)} ms` : 'n/a');
export const fmtInt = (v) => (Number.isFinite(v) ? Math.round(v).toLocaleString('en-US') : 'n/a');
export const fmtMb = (kb) => (Number.isFinite(kb) ? `${(kb / 1024).toFixed(1)} MB` : 'n/a');
export const fmtPct = (v) => (Number.isFinite(v) ? `${v.toFixed(0)}%` : 'n/a');
