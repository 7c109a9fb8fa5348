// End-to-end check of the dashboard's Cameras view in Debian's headless
// Chromium: after a simulated camera uploaded snapshots and its OCR jobs
// ran, the camera's card shows its newest snapshot drawn with the boxes and
// text read off it, the meter value, and a chart of its values.
//
// Settings (environment): DASHBOARD_URL, TOKEN (a dashboard user's),
// CAMERA (its source id), READS (OCR jobs the camera queued), SCREENSHOT
// (PNG path), CHROMIUM (default /usr/bin/chromium). Started by
// worker/tests/dashboard.rs, which runs ingest, the query API, a worker and
// pulse-simulate's camera.
import { check, env } from './browser.mjs';

const url = env('DASHBOARD_URL');
const token = env('TOKEN');
const camera = env('CAMERA');
const reads = Number(env('READS'));
const screenshot = env('SCREENSHOT');
const WAIT_MS = 120000;

await check({ width: 1280, height: 1400 }, async (page) => {
  await page.goto(`${url}#token=${token}`);
  await page.waitForSelector('#app:not([hidden])', { timeout: WAIT_MS });
  await page.waitForFunction(() => document.querySelector('#link').textContent === 'live', null, { timeout: WAIT_MS });
  console.log('signed in; live stream open');

  // The jobs may still be running: the card appears when the last one
  // succeeds (its transition arrives on the stream), or at once if it has.
  const card = `#camera-grid .camera-card[data-source="${camera}"]`;
  await page.waitForFunction(
    ({ card, reads }) => {
      const c = document.querySelector(card);
      return c && c.dataset.value !== undefined && document.querySelectorAll('#jobs-table tr[data-state="succeeded"]').length >= reads;
    },
    { card, reads },
    { timeout: WAIT_MS },
  );
  // The stream's transition may come before the last read is queryable:
  // reload until the card shows the newest snapshot, as a user would.
  const newest = await page.evaluate(async (camera) => {
    const r = await fetch(`/v1/snapshots?source_id=${encodeURIComponent(camera)}`, {
      headers: { Authorization: `Bearer ${sessionStorage.getItem('pulse-token')}` },
    });
    return (await r.json()).snapshots[0];
  }, camera);
  await page.waitForFunction(
    ({ card, file }) => document.querySelector(card).dataset.file === file,
    { card, file: newest.file_id },
    { timeout: WAIT_MS },
  );
  const shown = await page.$eval(card, (c) => ({
    boxes: Number(c.dataset.boxes),
    texts: c.dataset.texts.split('|'),
    value: Number(c.dataset.value),
    label: c.querySelector('.value').textContent,
  }));
  if (shown.boxes !== newest.lines.length || shown.boxes < 3) {
    throw new Error(`${shown.boxes} boxes shown, ${newest.lines.length} read`);
  }
  if (JSON.stringify(shown.texts) !== JSON.stringify(newest.lines.map((l) => l.text))) {
    throw new Error(`texts shown ${shown.texts}, read ${newest.lines.map((l) => l.text)}`);
  }
  if (!shown.texts.some((t) => t.startsWith('METER '))) throw new Error(`no meter id among ${shown.texts}`);
  if (shown.value !== newest.value || shown.label !== newest.value.toFixed(2)) {
    throw new Error(`value shown ${shown.label} (${shown.value}), read ${newest.value}`);
  }
  console.log(`${camera}: ${shown.boxes} boxes (${shown.texts.join(' / ')}), value ${shown.label}`);

  // The snapshot is drawn: its pixels are not the empty canvas's, and the
  // boxes' colour is on it.
  const drawn = await page.$eval(`${card} canvas.snapshot`, (canvas) => {
    const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
    let lit = 0;
    let boxed = 0;
    for (let i = 0; i < data.length; i += 4) {
      if (data[i] + data[i + 1] + data[i + 2] > 60) lit += 1;
      if (data[i] === 0x4f && data[i + 1] === 0xb3 && data[i + 2] === 0xff) boxed += 1;
    }
    return { lit: lit / (data.length / 4), boxed };
  });
  if (drawn.lit < 0.5 || drawn.boxed < 50) throw new Error(`snapshot not drawn: ${JSON.stringify(drawn)}`);
  // The chart of the camera's values has a line on it.
  const charted = await page.$eval(`${card} canvas.values`, (canvas) => {
    const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
    let n = 0;
    for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n += 1;
    return n;
  });
  // A line needs two values: the reads this page saw succeed, and the
  // camera's telemetry where a processor stores it.
  const values = await page.$eval(card, (c) => Number(c.dataset.values || 0));
  if (values < 1) throw new Error('the read value is not on the chart');
  if (values > 1 && charted === 0) throw new Error(`${values} values but no line on the chart`);
  console.log(`snapshot drawn (${(drawn.lit * 100).toFixed(0)} % lit, ${drawn.boxed} box pixels), chart of ${values} values (${charted} pixels)`);
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(`screenshot: ${screenshot}`);
});
