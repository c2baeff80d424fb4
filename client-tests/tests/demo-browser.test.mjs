// The demo page (README "Demo page") in a real browser: two headless Chromium pages, alice and
// bob, each signed in with a demo token. Alice creates a group with bob (bob's page shows the
// group_invite notification and badge), sends a message (it appears on bob's page), and bob types
// (alice's page shows "bob is typing…"). Also the page's assets and the token endpoint over plain
// HTTP. Chromium comes from CHROMIUM_PATH or /usr/bin/chromium (Debian's `chromium`, installed by
// .ci/run); without one the browser test is skipped with a message. Screenshots go to a temp dir,
// never the repository.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { uid } from '../lib/client.mjs';
import { REST, nodesOf, useServer } from '../lib/harness.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const HAVE_CHROMIUM = existsSync(CHROMIUM);
const WAIT_MS = 15_000;

describe('demo page assets and token endpoint', () => {
  const ctx = useServer();

  it('serves the page, its script and the socket.io bundle with types and cache headers', async () => {
    const { url } = ctx.server;
    const page = await fetch(`${url}/demo`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type'), /^text\/html/);
    assert.equal(page.headers.get('cache-control'), 'no-cache');
    assert.match(page.headers.get('content-security-policy'), /script-src 'self'/);
    const html = await page.text();
    assert.match(html, /<script src="\/demo\/socket\.io\.min\.js"><\/script>/);

    const script = await fetch(`${url}/demo/demo.js`);
    assert.equal(script.status, 200);
    assert.match(script.headers.get('content-type'), /^text\/javascript/);
    await script.arrayBuffer();

    const bundle = await fetch(`${url}/demo/socket.io.min.js`);
    assert.equal(bundle.status, 200);
    assert.match(bundle.headers.get('content-type'), /^text\/javascript/);
    assert.match(bundle.headers.get('cache-control'), /max-age=\d+/);
    const text = await bundle.text();
    assert.match(text, /Socket\.IO v4\.8\.\d+/, 'the license header is kept');
    assert.match(text, /MIT License/);
  });

  it('POST /demo/token signs a token the REST API and the socket accept', async () => {
    const { server } = ctx;
    const userId = uid('demo');
    const res = await server.api('POST', '/demo/token', { body: { userId, name: 'Demo User' } });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(typeof res.body.token, 'string');
    assert.equal(res.headers.get('cache-control'), 'no-store');
    const me = await server.api('GET', `${REST}/presence/me`, { token: res.body.token });
    assert.equal(me.status, 200, JSON.stringify(me.body));

    const bad = await server.api('POST', '/demo/token', { body: { userId: '' } });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error.code, 'INVALID_PAYLOAD');
  });
});

describe('demo page in two browser pages', { skip: HAVE_CHROMIUM ? false : `no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)` }, () => {
  const ctx = useServer();
  let browser;
  let shots;

  before(async () => {
    const { default: puppeteer } = await import('puppeteer-core');
    browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
    });
    shots = await mkdtemp(path.join(os.tmpdir(), 'switchboard-demo-'));
  });
  after(async () => {
    await browser?.close();
  });

  /** A page in its own browser context (own storage), signed in on `url` as `userId`. */
  async function signedIn(url, userId, name) {
    const context = await browser.createBrowserContext();
    const page = await context.newPage();
    await page.setViewport({ width: 1200, height: 720 });
    const errors = [];
    page.on('pageerror', (err) => errors.push(err.message));
    await page.goto(`${url}/demo`, { waitUntil: 'load' });
    await page.type('#user-id', userId);
    await page.type('#user-name', name);
    await page.click('#signin-btn');
    await page.waitForSelector('#status[data-state="connected"]', { timeout: WAIT_MS });
    // session:ready has been handled once the room list is drawn.
    await page.waitForSelector('#rooms li', { timeout: WAIT_MS });
    page.errors = errors;
    return page;
  }

  it('carries a group invite, a message and typing between alice and bob', async () => {
    const nodes = nodesOf(ctx.server);
    const aliceId = uid('alice');
    const bobId = uid('bob');
    // On a cluster, the two pages talk to different nodes.
    const bob = await signedIn(nodes.at(-1).url, bobId, 'bob');
    const alice = await signedIn(nodes[0].url, aliceId, 'alice');

    // Alice creates a group with bob: bob gets a group_invite, live, with the badge.
    await alice.select('#room-type', 'group');
    await alice.type('#room-name', 'Demo group');
    await alice.type('#room-participants', bobId);
    await alice.click('#create-room-btn');
    await alice.waitForFunction(
      () => document.querySelector('#room-title')?.textContent === 'Demo group' && !document.querySelector('#message-input').disabled,
      { timeout: WAIT_MS },
    );
    await bob.waitForSelector('#notifications li.notification[data-type="group_invite"]', { timeout: WAIT_MS });
    await bob.waitForFunction(() => {
      const badge = document.querySelector('#notif-badge');
      return !badge.hidden && badge.textContent === '1';
    }, { timeout: WAIT_MS });

    // The room appears in bob's list (chat:room_updated) and he opens it.
    const roomItem = await bob.waitForSelector('#rooms li[data-type="group"]', { timeout: WAIT_MS });
    await roomItem.click();
    await bob.waitForFunction(() => document.querySelector('#room-title')?.textContent === 'Demo group', { timeout: WAIT_MS });

    // Alice sends; the message appears on bob's page.
    const text = `hello bob ${Date.now()}`;
    await alice.type('#message-input', text);
    await alice.keyboard.press('Enter');
    await alice.waitForFunction((t) => [...document.querySelectorAll('#messages .message.mine .content')].some((n) => n.textContent === t), { timeout: WAIT_MS }, text);
    await bob.waitForFunction((t) => [...document.querySelectorAll('#messages .message .content')].some((n) => n.textContent === t), { timeout: WAIT_MS }, text);

    // Bob types; alice sees it.
    await bob.type('#message-input', 'hi ali');
    await alice.waitForFunction(() => document.querySelector('#typing')?.textContent === 'bob is typing…', { timeout: WAIT_MS });

    const aliceShot = path.join(shots, 'demo-alice.png');
    const bobShot = path.join(shots, 'demo-bob.png');
    await alice.screenshot({ path: aliceShot });
    await bob.screenshot({ path: bobShot });
    console.log(`demo screenshots: ${aliceShot} ${bobShot}`);

    assert.deepEqual(alice.errors, [], 'no script errors on alice\'s page');
    assert.deepEqual(bob.errors, [], 'no script errors on bob\'s page');
  });
});
