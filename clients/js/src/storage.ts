/**
 * Where the last cursor survives an app restart. The helper keeps the cursor in memory anyway;
 * a storage (AsyncStorage in React Native, a file, IndexedDB behind a wrapper) only makes it
 * outlive the process. Async so every platform's storage fits.
 */

/** A pluggable home for the last cursor. `get` is read once, before the first connect. */
export interface CursorStorage {
  get(): Promise<string | null>;
  set(cursor: string): Promise<void>;
}

/** A storage in memory: what the helper does without one, useful in tests and to share one. */
export function memoryStorage(initial: string | null = null): CursorStorage {
  let value = initial;
  return {
    get: async () => value,
    set: async (cursor: string) => {
      value = cursor;
    },
  };
}
