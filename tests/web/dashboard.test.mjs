// The dashboard (gateway/web/) in a real browser against a real stack: Debian's Chromium driven by
// puppeteer-core, the three services on a stack of their own (databases web_inventory and web_orders
// recreated, topics web.<run>.*, ports 18591-18593) over the shared Kafka and PostgreSQL of
// deploy/stack.sh up. `make web` runs it (in `make test`); screenshots go to var/web/.
// Each check names what the user would see; any failure, or any console error, fails the run.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import puppeteer from 'puppeteer-core';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const OUT = path.join(process.env.VX_DATA_DIR || path.join(REPO, 'var'), 'web');
const BROKER = '127.0.0.1:' + (process.env.VX_BROKER_PORT || '9092');
const PG = 'postgresql://valerix@127.0.0.1:' + (process.env.VX_PG_PORT || '55432');
const ADDR = { 'inventory-svc': '127.0.0.1:18591', 'order-svc': '127.0.0.1:18592', gateway: '127.0.0.1:18593' };
const BASE = 'http://' + ADDR.gateway;
const RUN = new Date().toISOString().replace(/\D/g, '').slice(0, 14);
const TOPIC = Object.fromEntries(['inventory.commands', 'inventory.events', 'inventory.dlq', 'orders.commands',
  'orders.results', 'orders.dlq'].map((t) => [t, `web.${RUN}.${t}`]));
const TOKEN = 'web-token-' + RUN + '-' + process.pid;
const EVIL = '<img src=x onerror=alert(1)>';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

const procs = {};
const failures = [];
const say = (m) => console.log('web: ' + m);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function check(ok, what) {
  if (ok) say('ok   ' + what);
  else { failures.push(what); say('FAIL ' + what); }
}

async function waitFor(what, pred, ms = 30000) {
  const end = Date.now() + ms;
  for (;;) {
    try { if (await pred()) { say('ok   ' + what); return true; } } catch (e) { /* not yet */ }
    if (Date.now() > end) { check(false, what + ' (waited ' + ms / 1000 + ' s)'); return false; }
    await sleep(200);
  }
}

function psql(db, sql) {
  const r = spawnSync('psql', ['-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', `${PG}/${db}`, '-c', sql], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error('psql: ' + r.stderr);
  return r.stdout.trim();
}

function kcat(topic, lines) {
  const r = spawnSync('kcat', ['-P', '-b', BROKER, '-t', topic, '-K', '|'], { input: lines.join('\n') + '\n', encoding: 'utf8' });
  if (r.status !== 0) throw new Error('kcat: ' + r.stderr);
}

const env = {
  ...process.env, KAFKA_BOOTSTRAP_SERVERS: BROKER, VX_LOG_LEVEL: 'info', VX_CHAOS_TOKEN: TOKEN,
  INVENTORY_DB: PG + '/web_inventory', ORDERS_DB: PG + '/web_orders',
  INVENTORY_HTTP_ADDR: ADDR['inventory-svc'], ORDERS_HTTP_ADDR: ADDR['order-svc'], GATEWAY_HTTP_ADDR: ADDR.gateway,
  ORDERS_URL: 'http://' + ADDR['order-svc'], INVENTORY_URL: 'http://' + ADDR['inventory-svc'],
  INVENTORY_GROUP_ID: `web.${RUN}.inventory-svc`, ORDERS_GROUP_ID: `web.${RUN}.order-svc`,
  KAFKA_CONSUMER_SESSION_TIMEOUT_MS: '6000',
  // a short deadline and a quick breaker, so that the outage below shows in seconds
  GATEWAY_TIMEOUT_MS: '1500', GATEWAY_ATTEMPT_TIMEOUT_MS: '1000', GATEWAY_BREAKER_MIN_CALLS: '2',
  GATEWAY_BREAKER_OPEN_MS: '3000', GATEWAY_BREAKER_PROBES: '1',
};
for (const [t, name] of Object.entries(TOPIC)) env[t.toUpperCase().replace('.', '_') + '_TOPIC'] = name;
for (const k of ['VX_CRASH_POINTS', 'VX_GREMLIN_DELAY_MS', 'VX_GREMLIN_EVERY', 'VX_GREMLIN_FRACTION']) delete env[k];

async function start(name) {
  const log = fs.openSync(path.join(OUT, name + '.log'), 'a');
  procs[name] = spawn(path.join(REPO, 'build', name), [], { env, stdio: ['ignore', log, log] });
  await waitFor(name + ' answers /ready', async () => (await fetch(`http://${ADDR[name]}/ready`)).status === 200, 60000);
}

async function stop(name) {
  const p = procs[name];
  if (!p || p.exitCode !== null) return;
  const done = new Promise((r) => p.once('exit', r));
  p.kill('SIGTERM');
  await Promise.race([done, sleep(30000)]);
  if (p.exitCode === null) p.kill('SIGKILL');
}

async function api(p) { return (await fetch(BASE + p)).json(); }

async function main() {
  fs.mkdirSync(OUT, { recursive: true });
  if (!fs.existsSync(CHROMIUM)) { check(false, CHROMIUM + ' is installed (deploy/stack.sh deps installs Debian\'s chromium)'); return; }
  for (const db of ['web_inventory', 'web_orders']) {
    psql('postgres', `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
    psql('postgres', `CREATE DATABASE ${db}`);
  }
  for (const name of ['inventory-svc', 'order-svc', 'gateway']) await start(name);
  kcat(TOPIC['inventory.commands'], [
    `W-1|{"type":"Restock","idempotency_key":"web-r1","product_id":"W-1","quantity":1000,"name":"Green tea"}`,
    `W-2|{"type":"Restock","idempotency_key":"web-r2","product_id":"W-2","quantity":5,"name":"Oolong"}`,
    `W-3|{"type":"Restock","idempotency_key":"web-r3","product_id":"W-3","quantity":3,"name":${JSON.stringify(EVIL)}}`,
  ]);
  await waitFor('the seed reaches inventory-svc', async () => (await api('/products')).products.length === 3);

  const browser = await puppeteer.launch({
    executablePath: CHROMIUM, headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--user-data-dir=' + fs.mkdtempSync(path.join(os.tmpdir(), 'vx-chromium-'))],
  });
  try {
    const page = await browser.newPage();
    const errors = [];
    let dialogs = 0;
    // The answers this run provokes on purpose (409 over stock, 503 while the breaker is open) are
    // logged by Chromium as failed loads: the page handles them; anything else is an error.
    page.on('console', (m) => {
      if (m.type() === 'error' && !/^Failed to load resource: the server responded with a status of (409|503) /.test(m.text())) errors.push(m.text());
    });
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('dialog', async (d) => { dialogs++; await d.dismiss(); });
    await page.setViewport({ width: 1280, height: 1000 });
    const resp = await page.goto(BASE + '/', { waitUntil: 'load' });
    check(resp.status() === 200 && /script-src 'self'/.test(resp.headers()['content-security-policy'] || ''),
      'GET / answers the page with a Content-Security-Policy that forbids inline script');

    const stockOf = (id) => page.$eval(`#catalog tr[data-product="${id}"] .stock`, (e) => e.textContent);
    await waitFor('the catalog lists the seeded products with their stock', async () =>
      (await stockOf('W-1')) === '1000' && (await stockOf('W-2')) === '5' && (await stockOf('W-3')) === '3');
    await waitFor('the live stream connects', async () => (await page.$eval('#live', (e) => e.textContent)) === 'live');

    // a product name made of HTML stays text
    const evil = await page.$eval('#catalog tr[data-product="W-3"] td:nth-child(2)', (e) => ({ text: e.textContent, imgs: e.querySelectorAll('img').length }));
    check(evil.text === EVIL && evil.imgs === 0 && dialogs === 0, 'a product named ' + EVIL + ' shows as those characters');

    // place an order: CONFIRMED, and the stock drops on the page without a reload
    const setLine = async (product, qty) => {
      await page.select('#lines .line select', product);
      await page.$eval('#lines .line input', (e, q) => { e.value = q; }, String(qty));
    };
    await page.$eval('#customer', (e) => { e.value = 'web-buyer'; });
    await setLine('W-1', 2);
    await page.click('#place');
    await waitFor('placing an order shows 201 CONFIRMED', async () =>
      (await page.$eval('#answer-status', (e) => e.textContent)) === '201' &&
      (await page.$eval('#answer-title', (e) => e.textContent)) === 'CONFIRMED');
    await waitFor('the stock of W-1 drops to 998 on the page without a reload', async () => (await stockOf('W-1')) === '998');

    // an order over the stock shows the 409 reason
    await setLine('W-2', 50);
    await page.click('#place');
    await waitFor('an order over the stock shows 409 with insufficient_stock and the product', async () =>
      (await page.$eval('#answer-status', (e) => e.textContent)) === '409' &&
      /insufficient_stock \(W-2\)/.test(await page.$eval('#answer-detail', (e) => e.textContent)));

    // double-clicking "place order" makes one order
    await page.$eval('#customer', (e) => { e.value = 'web-double'; });
    await setLine('W-1', 1);
    await page.click('#place', { clickCount: 2 });
    await sleep(150);
    await page.click('#place'); /* a third click, as an impatient hand makes it */
    await waitFor('the double click is answered', async () => (await page.$eval('#answer-status', (e) => e.textContent)) === '201');
    await sleep(1500);
    const doubles = (await api('/orders?limit=100')).orders.filter((o) => o.customer_id === 'web-double');
    check(doubles.length === 1, 'double-clicking "place order" makes one order (made ' + doubles.length + ')');

    // what others produce straight to Kafka shows live
    kcat(TOPIC['orders.commands'], ['web-kcat|{"type":"PlaceOrder","idempotency_key":"web-kcat","customer_id":"kcat-customer","items":[{"product_id":"W-2","quantity":1}]}']);
    await waitFor('a PlaceOrder produced with kcat appears in the orders list live', async () =>
      (await page.$$eval('#orders tbody tr td:nth-child(2)', (tds) => tds.map((t) => t.textContent))).includes('kcat-customer'));
    kcat(TOPIC['inventory.commands'], ['W-2|{"type":"Restock","idempotency_key":"web-r4","product_id":"W-2","quantity":20}']);
    await waitFor('a Restock produced with kcat changes the stock on the page live (4 + 20)', async () => (await stockOf('W-2')) === '24');

    // inventory-svc stopped: 202s, then the breaker opens and POSTs answer 503; recovery after restart
    await stop('inventory-svc');
    await page.$eval('#customer', (e) => { e.value = 'web-outage'; });
    const seen = new Set();
    let n = 0;
    const outageEnd = Date.now() + 30000;
    while (Date.now() < outageEnd && !(seen.has('503') && seen.has('open'))) {
      await setLine('W-1', 1 + (n++ % 3)); /* each one another order */
      await page.click('#place');
      await page.waitForFunction(() => !document.getElementById('place').disabled, { timeout: 10000 });
      seen.add(await page.$eval('#answer-status', (e) => e.textContent));
      seen.add(await page.$eval('#breaker', (e) => e.dataset.state || ''));
      await sleep(300);
    }
    check(seen.has('202'), 'with inventory-svc stopped, a POST answers 202 (accepted, pending)');
    check(seen.has('open'), 'with inventory-svc stopped, the page shows the breaker open');
    check(seen.has('503'), 'with the breaker open, a POST answers 503');
    await page.screenshot({ path: path.join(OUT, 'dashboard-outage.png'), fullPage: true });
    await start('inventory-svc');
    let lastSeen = '';
    await waitFor('after the restart the breaker closes again on the page', async () => {
      await setLine('W-1', 1 + (n++ % 3));
      await sleep(50);
      await page.click('#place');
      await page.waitForFunction(() => !document.getElementById('place').disabled, { timeout: 10000 });
      await sleep(500);
      lastSeen = (await page.$eval('#breaker', (e) => e.dataset.state)) + ' ' + (await page.$eval('#answer-status', (e) => e.textContent));
      return lastSeen === 'closed 201';
    }, 60000) || say('     last seen: breaker ' + lastSeen);
    await waitFor('the orders accepted during the outage reach a final state', async () =>
      (await api('/orders?limit=100')).orders.filter((o) => o.customer_id === 'web-outage' && o.status === 'PENDING').length === 0, 60000);

    // chaos: the switches reach the service through the gateway, with the token only in a header
    await waitFor('the chaos panel shows when the services take a token', async () => !(await page.$eval('#chaos-panel', (e) => e.hidden)));
    await page.type('#chaos-token', TOKEN);
    await page.select('#chaos-service', 'inventory-svc');
    await page.$eval('#chaos-delay', (e) => { e.value = '250'; });
    await page.$eval('#chaos-every', (e) => { e.value = '2'; });
    await page.click('#chaos-form button[type=submit]');
    await waitFor('arming the gremlin from the page reaches inventory-svc', async () =>
      (await (await fetch(`http://${ADDR['inventory-svc']}/health`)).json()).chaos.gremlin.delay_ms === 250);
    check(!page.url().includes(TOKEN) && (await page.$eval('#chaos-token', (e) => e.value)) === '', 'the token is in no URL and not kept in the field');
    await page.click('#chaos-off');
    await waitFor('switching chaos off from the page', async () =>
      (await (await fetch(`http://${ADDR['inventory-svc']}/health`)).json()).chaos.gremlin.delay_ms === 0);

    await page.screenshot({ path: path.join(OUT, 'dashboard.png'), fullPage: true });
    await page.setViewport({ width: 390, height: 844 });
    await sleep(300);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 1, 'at a phone width (390 px) nothing runs off the side (' + overflow + ' px)');
    await page.screenshot({ path: path.join(OUT, 'dashboard-phone.png'), fullPage: true });
    const unlabelled = await page.$$eval('input, select', (els) => els.filter((e) => !e.labels || !e.labels.length).map((e) => e.id || e.outerHTML.slice(0, 40)));
    check(unlabelled.length === 0, 'every input has a label' + (unlabelled.length ? ': ' + unlabelled.join(', ') : ''));
    check(errors.length === 0, 'no console errors' + (errors.length ? ': ' + errors.join(' | ') : ''));
    check(dialogs === 0, 'no script of the data ran (no dialog opened)');
    say('screenshots: ' + ['dashboard.png', 'dashboard-phone.png', 'dashboard-outage.png'].map((f) => path.join(OUT, f)).join(', '));
  } finally {
    await browser.close();
  }
}

let rc = 1;
try {
  await main();
  rc = failures.length ? 1 : 0;
} catch (e) {
  check(false, 'the run: ' + (e && e.stack ? e.stack : e));
} finally {
  for (const name of Object.keys(procs)) await stop(name);
}
say(rc === 0 && !failures.length ? 'PASS' : 'FAIL (' + failures.length + '): ' + failures.join('; '));
process.exit(rc === 0 && !failures.length ? 0 : 1);
