// Drives Keel's dashboard in Debian's headless chromium (playwright-core, no bundled browser).
//
//   node tests/browser/dashboard.mjs URL DOMAIN [SCREENSHOT]
//
// Environment: KEEL_TOKEN (the admin API token the page asks for).
// Checks: the page loads and asks for the token; after sign-in it shows the scheduled queue
// DOMAIN with one message and the suspension of DOMAIN; clicking Resume lifts the suspension
// (the row disappears). The caller (crates/keel/tests/dashboard.rs) then checks that the
// message reached the sink. Exits non-zero with a message on any failure; every wait is bounded.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [url, domain, screenshot] = process.argv.slice(2);
if (!url || !domain) {
  console.error("usage: dashboard.mjs URL DOMAIN [SCREENSHOT]");
  process.exit(2);
}
const token = process.env.KEEL_TOKEN || "";
const STEP_MS = 15000;

const profile = mkdtempSync(join(tmpdir(), "keel-chromium-"));
// A fresh profile per run (playwright takes it as the persistent context's user data dir).
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  timeout: 60000,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
  viewport: { width: 1280, height: 1000 },
});

let failed = false;
try {
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  // The first API calls answer 401 until the token is given; chromium logs those loads.
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().includes("401")) errors.push(m.text());
  });
  page.setDefaultTimeout(STEP_MS);

  await page.goto(url, { waitUntil: "load" });
  if (token) {
    // Without a token the API answers 401 and the page asks for one.
    await page.waitForSelector("#login-form", { state: "visible" });
    await page.fill("#token", token);
    await page.click("#login-form button[type=submit]");
  }
  await page.waitForSelector("body[data-loaded='1']");

  const row = page.locator(`#queues tbody tr[data-domain="${domain}"]`);
  await row.waitFor();
  const cells = await row.locator("td").allTextContents();
  if (cells[2].trim() !== "1") throw new Error(`queue ${domain}: expected 1 message, row ${cells}`);

  const suspension = page.locator(`#suspensions tbody tr[data-selector="domain ${domain}"]`);
  await suspension.waitFor();
  // The chart is drawn: four series over the last hour.
  const lines = await page.locator("#chart polyline").count();
  if (lines !== 4) throw new Error(`chart: expected 4 series, got ${lines}`);
  const status = (await page.locator("#status").textContent()).trim();
  if (status !== "ready") throw new Error(`status: ${status}`);

  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });

  await suspension.locator("button", { hasText: "Resume" }).click();
  await suspension.waitFor({ state: "detached" });
  // Resumed: the message goes out and the queue row leaves at a later poll.
  await row.waitFor({ state: "detached" });

  // The session token was kept for this tab only.
  const kept = await page.evaluate(() => sessionStorage.getItem("keel-token"));
  if (token && kept !== token) throw new Error("token not kept in sessionStorage");
  if (errors.length) throw new Error(`page errors: ${errors.join("; ")}`);
  console.log("dashboard: ok");
} catch (e) {
  failed = true;
  console.error(`dashboard: FAILED: ${e.stack || e}`);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
