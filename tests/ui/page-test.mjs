// Drives the router's web page in headless Chromium (called by
// tests/ui_page.rs): the page loads, the graph shows the routes, the
// follow-one-event view finds the event the test posted, and a screenshot
// is written. Prints one JSON line with what it saw; exits non-zero on any
// failed check.
//
// Env: BASE (router URL), ROUTES (comma-separated route names), EVENT_ID,
// OUTPUT_TOPIC (a topic the event's trace must show), SCREENSHOT (path).
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const { BASE, ROUTES, EVENT_ID, OUTPUT_TOPIC, SCREENSHOT } = process.env;
const TIMEOUT = 60_000;
const profile = mkdtempSync(join(tmpdir(), "switchyard-chromium-"));
// This machine's network is closed: without these flags Chromium waits on
// connections to Google services. A fresh profile (--user-data-dir) per run.
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
  viewport: { width: 1400, height: 1000 },
  timeout: TIMEOUT,
});
const seen = {};
let failed = null;
try {
  const page = await browser.newPage();
  const offsite = [];
  page.on("request", (r) => { if (!r.url().startsWith(BASE)) offsite.push(r.url()); });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(`${BASE}/ui`, { timeout: TIMEOUT });
  await page.waitForSelector("body[data-loaded=true]", { timeout: TIMEOUT });
  seen.title = await page.title();
  for (const r of ROUTES.split(",")) {
    await page.waitForSelector(`#graph g.node[data-route="${r}"]`, { timeout: TIMEOUT });
  }
  seen.routes = await page.$$eval("#graph g.node[data-route]", (ns) => ns.map((n) => n.dataset.route));
  seen.rates = await page.$$eval("#graph text.rate", (ns) => ns.length);
  seen.plugins = await page.$$eval("#plugin-table tr[data-plugin]", (ns) => ns.map((n) => n.dataset.plugin));
  await page.fill("#follow-id", EVENT_ID);
  await page.click("#follow-form button");
  await page.waitForSelector(`#trace [data-trace="${EVENT_ID}"]`, { timeout: TIMEOUT });
  await page.waitForSelector(`#trace [data-output-topic="${OUTPUT_TOPIC}"]`, { timeout: TIMEOUT });
  seen.trace = await page.$eval("#trace", (n) => n.innerText);
  // A second poll draws rates from two readings.
  await page.waitForFunction(() => [...document.querySelectorAll("#graph text.rate")].some((t) => /\/s/.test(t.textContent) && !t.textContent.startsWith("–")), null, { timeout: TIMEOUT });
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  seen.offsite = offsite;
  seen.errors = errors;
  if (offsite.length) failed = `the page requested other hosts: ${offsite.join(", ")}`;
  if (errors.length) failed = `script errors: ${errors.join("; ")}`;
} catch (e) {
  failed = String(e);
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify({ ok: !failed, failed, seen }));
process.exit(failed ? 1 : 0);
