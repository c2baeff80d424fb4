/**
 * Cursors as the server writes them: `"<epoch>:<id>"`. Clients treat them as opaque strings
 * except for the one comparison that drops duplicates, which is why parsing lives here and
 * nowhere else.
 */

/** A parsed cursor: the journal's epoch (changes when the server's database is replaced) and id. */
export interface ParsedCursor {
  epoch: string;
  id: number;
}

/**
 * Parses `"<epoch>:<id>"`; `null` for anything else (a value this client never got from the
 * server, or a future format), which the helper then treats as "no position" rather than failing.
 */
export function parseCursor(value: unknown): ParsedCursor | null {
  if (typeof value !== 'string') return null;
  const colon = value.lastIndexOf(':');
  if (colon <= 0 || colon === value.length - 1) return null;
  const epoch = value.slice(0, colon);
  const digits = value.slice(colon + 1);
  if (!/^[0-9]+$/.test(digits)) return null;
  const id = Number(digits);
  if (!Number.isSafeInteger(id)) return null;
  return { epoch, id };
}
