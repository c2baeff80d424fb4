// Assertions for the contract's reply shapes: acks `{ ok, ... }`, REST error bodies, timestamps.
import assert from 'node:assert/strict';

export const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const RFC3339_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

const show = (v) => JSON.stringify(v);

/** Asserts `{ ok: true, ... }` and returns the ack. */
export function ackOk(ack) {
  assert.equal(ack?.ok, true, `expected ok ack, got ${show(ack)}`);
  return ack;
}

function fieldMatches(entry, field) {
  const f = entry?.field;
  return typeof f === 'string' && (f === field || f.startsWith(`${field}.`) || f.startsWith(`${field}[`));
}

/**
 * Asserts `{ ok: false, error: { code, message } }`, `code` being one of `codes` (string or
 * array). With `field`, also asserts `error.details` is an array of `{ field, message }` naming it.
 */
export function ackError(ack, codes, { field } = {}) {
  const allowed = [codes].flat();
  assert.equal(ack?.ok, false, `expected error ack ${allowed.join('|')}, got ${show(ack)}`);
  assert.ok(allowed.includes(ack.error?.code), `expected error code ${allowed.join('|')}, got ${show(ack)}`);
  assert.equal(typeof ack.error.message, 'string', `error.message must be a string: ${show(ack)}`);
  if (field) assertDetails(ack.error, field);
  return ack.error;
}

export function assertDetails(error, field) {
  assert.ok(Array.isArray(error.details), `error.details must be an array: ${show(error)}`);
  assert.ok(
    error.details.some((d) => fieldMatches(d, field)),
    `error.details must name field '${field}': ${show(error.details)}`,
  );
}

/** Asserts an HTTP status (number or list) and returns the body. */
export function httpStatus(res, statuses) {
  const allowed = [statuses].flat();
  assert.ok(allowed.includes(res.status), `expected HTTP ${allowed.join('|')}, got ${res.status}: ${show(res.body)}`);
  return res.body;
}

/** Asserts an HTTP error: status, `{ error: { code, message } }`, optional field details. */
export function httpError(res, statuses, codes, { field } = {}) {
  httpStatus(res, statuses);
  const allowed = [codes].flat();
  const error = res.body?.error;
  assert.ok(error && allowed.includes(error.code), `expected error code ${allowed.join('|')}, got ${show(res.body)}`);
  assert.equal(typeof error.message, 'string', `error.message must be a string: ${show(res.body)}`);
  if (field) assertDetails(error, field);
  return error;
}

/** Asserts an RFC 3339 timestamp and returns it as epoch milliseconds. */
export function rfc3339(value, what = 'timestamp') {
  assert.equal(typeof value, 'string', `${what} must be a string, got ${show(value)}`);
  assert.match(value, RFC3339_RE, `${what} must be RFC 3339`);
  const ms = Date.parse(value);
  assert.ok(Number.isFinite(ms), `${what} must parse as a date: ${value}`);
  return ms;
}

/** Asserts `actual` has every key of `expected` with a deep-equal value (extra keys allowed). */
export function assertIncludes(actual, expected, what = 'payload') {
  assert.ok(actual && typeof actual === 'object', `${what} must be an object, got ${show(actual)}`);
  for (const [key, value] of Object.entries(expected)) {
    assert.deepEqual(actual[key], value, `${what}.${key} (in ${show(actual)})`);
  }
  return actual;
}
