// A TCP load balancer in front of a cluster for the rolling-restart scenario: each new
// connection goes to the next backend in turn, and to the other ones when that one refuses (a
// node that is restarting), so clients with one URL land on a live node, as behind a real
// load balancer. Connections already open stay on their node until it closes them.
import net from 'node:net';

/** Listens on a free 127.0.0.1 port; `{ url, stop(), connections }` over `ports`. */
export async function startProxy(ports) {
  let turn = 0;
  const open = new Set();
  const stats = { connections: 0, refused: 0 };
  const server = net.createServer((client) => {
    client.pause();
    open.add(client);
    client.on('close', () => open.delete(client));
    client.on('error', () => {});
    const first = turn++;
    const attempt = (k) => {
      if (k >= ports.length) {
        client.destroy();
        return;
      }
      const upstream = net.connect(ports[(first + k) % ports.length], '127.0.0.1');
      upstream.once('connect', () => {
        stats.connections += 1;
        upstream.setNoDelay(true);
        client.setNoDelay(true);
        client.pipe(upstream);
        upstream.pipe(client);
        client.resume();
        upstream.on('close', () => client.destroy());
        client.on('close', () => upstream.destroy());
      });
      upstream.once('error', () => {
        if (upstream.connecting || !upstream.remoteAddress) {
          stats.refused += 1;
          attempt(k + 1);
        } else client.destroy();
      });
    };
    attempt(0);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    stats,
    stop() {
      for (const c of open) c.destroy();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}
