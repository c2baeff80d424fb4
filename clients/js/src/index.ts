/**
 * `@switchboard/client`: an optional helper for Switchboard's Socket.IO API that resumes every
 * journaled event after a disconnect, exactly once and in order. Plain socket.io-client users
 * can follow the same procedure by hand (see the README); this package saves them the work.
 */
import { io, type ManagerOptions, type SocketOptions } from 'socket.io-client';
import { ResumableSocket, type ResumeOptions } from './resumable.js';

export { parseCursor, type ParsedCursor } from './cursor.js';
export { memoryStorage, type CursorStorage } from './storage.js';
export {
  ResumableSocket,
  type FeedMode,
  type Listener,
  type ResetKind,
  type ResumeOptions,
  type SessionInfo,
} from './resumable.js';

/** The namespace of Switchboard's realtime API. */
export const NAMESPACE = '/realtime';

/** `connect()` options: the helper's own plus any socket.io-client option. */
export type ConnectOptions = ResumeOptions &
  Partial<ManagerOptions & SocketOptions> & {
    /** Namespace appended to `url` unless it already ends with it (default `/realtime`). */
    namespace?: string;
  };

/**
 * Opens a socket to `url` (the server's base URL) on `/realtime` with resume built in. The
 * socket reconnects with socket.io-client's default backoff and resumes from the last cursor
 * every time.
 */
export function connect(url: string, options: ConnectOptions = {}): ResumableSocket {
  const { token, getToken, storage, feed, auth, onReset, onStorageError, namespace = NAMESPACE, ...socketOptions } =
    options;
  const socket = io(withNamespace(url, namespace), { ...socketOptions, autoConnect: false });
  const client = new ResumableSocket(socket, { token, getToken, storage, feed, auth, onReset, onStorageError });
  if (socketOptions.autoConnect !== false) socket.connect();
  return client;
}

/**
 * Adds resume to a socket the app created itself (`io(url + '/realtime', { autoConnect: false })`).
 * Wrap it before it connects: its existing `auth` object is kept and extended.
 */
export function wrap(socket: ResumableSocket['socket'], options: ResumeOptions = {}): ResumableSocket {
  return new ResumableSocket(socket, options);
}

function withNamespace(url: string, namespace: string): string {
  const base = url.replace(/\/+$/, '');
  return base.endsWith(namespace) ? base : base + namespace;
}
