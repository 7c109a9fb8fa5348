// What every browser check shares: its settings from the environment, and
// Debian's headless Chromium with one page, where a script error on the
// page or a thrown error fails the check (exit status 1).
import { chromium } from 'playwright-core';

export const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};

export async function check(viewport, body) {
  const browser = await chromium.launch({
    executablePath: env('CHROMIUM', '/usr/bin/chromium'),
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  let failed = false;
  try {
    const page = await browser.newPage({ viewport, acceptDownloads: true });
    page.on('pageerror', (e) => { console.error(`page error: ${e.message}`); failed = true; });
    await body(page);
  } catch (e) {
    console.error(e);
    failed = true;
  } finally {
    await browser.close();
  }
  process.exit(failed ? 1 : 0);
}
