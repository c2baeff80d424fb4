// A real browser's EventSource from another origin: a page served by a throw-away HTTP server on
// its own port opens `GET /api/v1/realtime/stream?token=…` on Switchboard and receives a message
// sent over REST — so CORS lets a cross-origin EventSource through, and the frames are what a
// browser parses (event names, JSON data, ids as lastEventId). Chromium comes from CHROMIUM_PATH
// or /usr/bin/chromium (Debian's `chromium`); without one, or without puppeteer-core, the test is
// skipped with a message.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import { createGroup, sendRest } from '../lib/chat.mjs';
import { makeUser, nodesOf, useServer } from '../lib/harness.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const HAVE_CHROMIUM = existsSync(CHROMIUM);
let puppeteer = null;
try {
  ({ default: puppeteer } = await import('puppeteer-core'));
} catch {
  puppeteer = null;
}
const SKIP = !HAVE_CHROMIUM
  ? `no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`
  : !puppeteer
    ? 'puppeteer-core is not installed (npm install)'
    : false;

const PAGE = `<!doctype html><meta charset="utf-8"><title>sse</title><script>
window.received = [];
window.errors = 0;
window.openStream = (url) => {
  const source = new EventSource(url);
  source.addEventListener('session:ready', (e) => window.received.push({ event: 'session:ready', data: JSON.parse(e.data), id: e.lastEventId }));
  source.addEventListener('chat:new_message', (e) => window.received.push({ event: 'chat:new_message', data: JSON.parse(e.data), id: e.lastEventId }));
  source.onerror = () => { window.errors += 1; };
  window.source = source;
};
</script><p>another origin</p>`;

describe('EventSource in a browser, from another origin', { skip: SKIP }, () => {
  const ctx = useServer();
  let browser;
  let site;
  let siteUrl;

  before(async () => {
    site = http.createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(PAGE);
    });
    await new Promise((resolve) => site.listen(0, '127.0.0.1', resolve));
    // `localhost` vs `127.0.0.1` and another port: a different origin from the server's.
    siteUrl = `http://localhost:${site.address().port}/`;
    browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
    });
  });
  after(async () => {
    await browser?.close();
    await new Promise((resolve) => (site ? site.close(resolve) : resolve()));
  });

  it('receives session:ready and a message sent over REST', async () => {
    const [a, b] = [await makeUser(ctx.server, 'a'), await makeUser(ctx.server, 'b')];
    const room = await createGroup(a, [b]);
    const server = nodesOf(ctx.server)[0];
    const page = await browser.newPage();
    await page.goto(siteUrl);
    const streamUrl = `${server.url}/api/v1/realtime/stream?token=${encodeURIComponent(b.token)}`;
    await page.evaluate((url) => window.openStream(url), streamUrl);
    await page.waitForFunction(() => window.received.some((r) => r.event === 'session:ready'), { timeout: 15000 });
    const sent = await sendRest(a, room.id, 'hello, browser');
    await page.waitForFunction(() => window.received.some((r) => r.event === 'chat:new_message'), { timeout: 15000 });
    const received = await page.evaluate(() => window.received);
    const ready = received.find((r) => r.event === 'session:ready');
    assert.equal(ready.data.userId, b.id);
    const message = received.find((r) => r.event === 'chat:new_message');
    assert.equal(message.data.message.id, sent.id);
    assert.equal(message.data.message.content, 'hello, browser');
    assert.ok(message.id, 'the browser keeps the cursor as lastEventId');
    assert.equal(await page.evaluate(() => window.origin), siteUrl.replace(/\/$/, ''));
    await page.evaluate(() => window.source.close());
    await page.close();
  });
});
