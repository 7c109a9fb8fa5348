// End-to-end check of the dashboard in Debian's headless Chromium, against a
// running pipeline: sign in with a token, watch live events arrive, post an
// anomalous reading and see it flagged in the anomalies feed, open the
// device's history, and take a screenshot.
//
// Settings (environment): DASHBOARD_URL, TOKEN, INGEST_URL, TENANT,
// SCREENSHOT (PNG path), CHROMIUM (default /usr/bin/chromium).
// Started by query-api/tests/dashboard.rs, which starts the pipeline.
import { check, env } from './browser.mjs';
import { randomUUID } from 'node:crypto';

const url = env('DASHBOARD_URL');
const token = env('TOKEN');
const ingest = env('INGEST_URL');
const tenant = env('TENANT');
const screenshot = env('SCREENSHOT');
const DEVICES = ['boiler-1', 'boiler-2', 'boiler-3', 'chiller-1'];
const WAIT_MS = 60000;

// Deterministic readings around each device's own normal, as the fleet sends.
function reading(device, i, anomalous) {
  const d = DEVICES.indexOf(device);
  const wobble = Math.sin(i * 0.7 + d) * 0.3;
  return anomalous
    ? { temperature_c: 96.5, humidity_pct: 4.0, vibration_g: 4.2, battery_v: 2.1 }
    : {
        temperature_c: 20 + d + wobble,
        humidity_pct: 52 + d + wobble * 2,
        vibration_g: 0.2 + wobble * 0.02,
        battery_v: 3.8 - d * 0.02,
      };
}

async function post(events) {
  const r = await fetch(`${ingest}/v1/events`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(events),
  });
  if (r.status !== 202) throw new Error(`ingest answered ${r.status}: ${await r.text()}`);
}

function batch(round, anomalousDevice) {
  return DEVICES.map((device) => ({
    kind: 'telemetry',
    event_id: randomUUID(),
    tenant_id: tenant,
    source_id: device,
    event_time: Date.now(),
    readings: reading(device, round, device === anomalousDevice),
  }));
}

await check({ width: 1280, height: 900 }, async (page) => {
  await page.goto(url);

  // Sign in: a wrong token is refused with a message, the right one opens the page.
  await page.fill('#token', 'not-a-token');
  await page.click('#signin button');
  await page.waitForFunction(() => document.querySelector('#signin-error').textContent.includes('Not signed in'), null, { timeout: WAIT_MS });
  await page.fill('#token', token);
  await page.click('#signin button');
  await page.waitForSelector('#app:not([hidden])', { timeout: WAIT_MS });
  await page.waitForFunction(() => document.querySelector('#link').textContent === 'live', null, { timeout: WAIT_MS });
  console.log('signed in; live stream open');

  // Live events arrive: 15 rounds across the fleet (the devices warm up
  // their rolling statistics), one round every 200 ms.
  const normalRounds = 15;
  for (let round = 0; round < normalRounds; round++) {
    await post(batch(round, null));
    await new Promise((r) => setTimeout(r, 200));
  }
  const expected = normalRounds * DEVICES.length;
  await page.waitForFunction((n) => Number(document.querySelector('#events-seen').textContent) >= n, expected, { timeout: WAIT_MS });
  const cards = await page.locator('.device-card').count();
  if (cards !== DEVICES.length) throw new Error(`${cards} device cards, expected ${DEVICES.length}`);
  const anomaliesBefore = await page.locator('#anomaly-feed li').count();
  if (anomaliesBefore !== 0) throw new Error(`${anomaliesBefore} anomalies flagged in normal readings`);
  console.log(`${expected} live events shown on ${cards} device cards`);

  // An injected anomaly appears in the feed and marks its device.
  await post(batch(normalRounds, 'boiler-2'));
  await page.waitForSelector('#anomaly-feed li[data-device="boiler-2"]', { timeout: WAIT_MS });
  await page.waitForSelector('.device-card.anomalous[data-source="boiler-2"]', { timeout: WAIT_MS });
  const flagged = await page.locator('#anomaly-feed li').count();
  if (flagged !== 1) throw new Error(`${flagged} anomalies in the feed, expected 1`);
  console.log('injected anomaly flagged for boiler-2');

  // A few more normal rounds so the charts move, then the drill-down.
  for (let round = normalRounds + 1; round < normalRounds + 6; round++) {
    await post(batch(round, null));
    await new Promise((r) => setTimeout(r, 200));
  }
  await page.click('.device-card[data-source="boiler-2"]');
  await page.waitForFunction(() => document.querySelectorAll('#dd-events-table tr').length > 0, null, { timeout: WAIT_MS });
  const rows = await page.locator('#dd-events-table tr').count();
  console.log(`drill-down shows ${rows} recent events of boiler-2`);
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(`screenshot: ${screenshot}`);
});
