// End-to-end check of the dashboard's Jobs and Audit views in Debian's
// headless Chromium: an admin requests a report, watches it go from queued
// to succeeded on screen, downloads it, and finds the download in the audit
// view filtered by route and status.
//
// Settings (environment): DASHBOARD_URL, TOKEN (an admin's), SCREENSHOT
// (PNG path), CHROMIUM (default /usr/bin/chromium). Started by
// worker/tests/dashboard.rs, which starts the query API and a worker.
import { check, env } from './browser.mjs';

const url = env('DASHBOARD_URL');
const token = env('TOKEN');
const screenshot = env('SCREENSHOT');
const WAIT_MS = 60000;

await check({ width: 1280, height: 1100 }, async (page) => {
  await page.goto(`${url}#token=${token}`);
  await page.waitForSelector('#app:not([hidden])', { timeout: WAIT_MS });
  await page.waitForFunction(() => document.querySelector('#link').textContent === 'live', null, { timeout: WAIT_MS });
  await page.waitForSelector('#audit-panel:not([hidden])', { timeout: WAIT_MS });
  console.log('signed in as an admin; live stream open, audit view shown');

  // A report, from the button to succeeded, every state shown on screen.
  await page.click('#report-request');
  const row = page.locator('#jobs-table tr').first();
  await row.waitFor({ timeout: WAIT_MS });
  await page.waitForSelector('#jobs-table tr[data-state="succeeded"]', { timeout: WAIT_MS });
  const states = (await row.getAttribute('data-states')).split(',');
  if (states[0] !== 'queued' || states[states.length - 1] !== 'succeeded') {
    throw new Error(`the job showed ${states.join(' -> ')}, not queued ... succeeded`);
  }
  console.log(`report shown as ${states.join(' -> ')}`);

  // Its download, a CSV with the export's header.
  const [download] = await Promise.all([
    page.waitForEvent('download', { timeout: WAIT_MS }),
    row.locator('a[data-testid="download"]').click(),
  ]);
  const path = await download.path();
  const { readFile } = await import('node:fs/promises');
  const text = await readFile(path, 'utf8');
  if (!text.startsWith('"tenant_id","source_id","event_id"')) throw new Error(`not the report: ${text.slice(0, 80)}`);
  const lines = text.trimEnd().split('\n').length - 1;
  console.log(`downloaded ${download.suggestedFilename()}: ${lines} events`);

  // The audit view finds the download by route and status.
  await page.fill('#audit-route', '/v1/files/{file_id}');
  await page.fill('#audit-status', '200');
  // The API writes its audit trail within about a second: search again
  // until the download is there.
  const audited = '#audit-table tr[data-route="/v1/files/{file_id}"][data-status="200"]';
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    await page.click('#audit-form button');
    try {
      await page.waitForSelector(audited, { timeout: 1000 });
      break;
    } catch (e) {
      if (Date.now() > deadline) throw new Error('the download never appeared in the audit view');
    }
  }
  const others = await page.locator('#audit-table tr:not([data-route="/v1/files/{file_id}"])').count();
  if (others !== 0) throw new Error(`${others} audit rows of other routes under a route filter`);
  console.log('the download is in the audit view');
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(`screenshot: ${screenshot}`);
});
