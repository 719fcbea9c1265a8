// Drives the auth service's /test page in headless Chromium (Debian's, no download):
// fills in the token, gathers relay candidates for every URI, runs the two-peer call,
// takes a screenshot. Prints one JSON line; exits non-zero when something failed.
//
//   node tests/browser/test-page.mjs BASE_URL TOKEN SCREENSHOT_PATH [CALL_LISTENER]
//
// CALL_LISTENER limits the call to one listener's URI (e.g. the TURN-TLS one). Extra
// Chromium flags come from $CHROMIUM_FLAGS (space-separated), e.g. a test CA's SPKI.
import { chromium } from "playwright-core";

const [base, token, screenshot, callListener] = process.argv.slice(2);
const extra = (process.env.CHROMIUM_FLAGS || "").split(" ").filter(Boolean);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         ...extra],
});
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1000, height: 760 } });
  await page.goto(`${base}/test`);
  await page.fill("#token", token);
  await page.click("#run");
  await page.waitForSelector("#summary[data-done]", { timeout: 30000 });
  const rows = await page.$$eval("#results tr", (trs) => trs.map((tr) => ({
    uri: tr.children[0].textContent,
    result: tr.dataset.result || "pending",
    detail: tr.children[1].textContent,
    time: tr.children[2].textContent,
  })));
  const summary = await page.textContent("#summary");
  await page.screenshot({ path: screenshot, fullPage: true });
  if (callListener) await page.fill("#listener", callListener);
  await page.click("#call");
  await page.waitForSelector("#summary[data-call]", { timeout: 30000 });
  const call = await page.getAttribute("#summary", "data-call");
  const callSummary = await page.textContent("#summary");
  const error = await page.textContent("#error");
  failed = rows.length === 0 || rows.some((r) => r.result !== "ok") || call !== "relay";
  console.log(JSON.stringify({ rows, summary, call, callSummary, error }));
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
