// Makes a Janus call through Turnpike with headless Chromium (Debian's) and fake camera
// and microphone, on examples/janus/app's page. Prints one JSON line; exits non-zero when
// the call failed.
//
//   node tests/browser/janus-call.mjs APP_URL echotest|videoroom SCREENSHOT [SECONDS] [CALLS]
//
// echotest:  one browser sends to Janus' EchoTest and gets its media back; with CALLS,
//            that many calls one after another (a new page, connection and allocation
//            each), printed as {"calls": [...]}.
// videoroom: one browser publishes into the VideoRoom, a second subscribes; the
//            subscriber's stats and screenshot are reported.
// $CLIENT_NS runs Chromium inside that network namespace (`ip netns exec`);
// $CHROMIUM_FLAGS adds flags (space-separated), e.g. the certificate's SPKI or a proxy.
import { chromium } from "playwright-core";
import { mkdtempSync, writeFileSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [url, kind, screenshot, secondsArg] = process.argv.slice(2);
const seconds = Number(secondsArg || 10);
const calls = Number(process.argv[6] || 0);
const extra = (process.env.CHROMIUM_FLAGS || "").split(" ").filter(Boolean);
let executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
if (process.env.CLIENT_NS) {
  const dir = mkdtempSync(join(tmpdir(), "chromium-netns-"));
  const wrapper = join(dir, "chromium");
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${process.env.CLIENT_NS} ${executablePath} "$@"\n`);
  chmodSync(wrapper, 0o755);
  executablePath = wrapper;
}

async function launch() {
  return chromium.launch({
    executablePath,
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync",
           "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", ...extra],
  });
}

// Opens the page and waits until ICE connected, failed, or the deadline.
async function open(browser, mode) {
  const page = await browser.newPage({ viewport: { width: 720, height: 560 } });
  const started = Date.now();
  await page.goto(`${url}?mode=${mode}`);
  // The page gives up 10 s after its offer; this deadline only guards the page itself.
  await page.waitForFunction(
    () => window.demo && ["connected", "failed", "hangup"].includes(window.demo.state),
    null, { timeout: 30000, polling: 100 },
  ).catch(() => {});
  const demo = await page.evaluate(() => ({
    state: window.demo?.state, error: window.demo?.error, iceConnectedMs: window.demo?.iceConnectedMs,
    candidateErrors: window.demo?.candidateErrors, iceServers: window.demo?.iceServers,
    marks: window.demo?.marks,
  }));
  return { page, demo, loadMs: Date.now() - started };
}

const stats = (page) => page.evaluate(() => window.demo.stats());

const browsers = [];
let result;
try {
  if (kind === "echotest" && calls > 0) {
    const b = await launch();
    browsers.push(b);
    const out = [];
    for (let i = 0; i < calls; i++) {
      const { page, demo } = await open(b, "echotest");
      if (demo.state === "connected") await page.waitForTimeout(seconds * 1000);
      out.push({ ...demo, stats: await stats(page) });
      if (i === calls - 1) await page.screenshot({ path: screenshot });
      await page.close();
    }
    result = { kind, calls: out, state: out.every((c) => c.state === "connected") ? "connected" : "failed" };
  } else if (kind === "echotest") {
    const b = await launch();
    browsers.push(b);
    const { page, demo } = await open(b, "echotest");
    if (demo.state === "connected") await page.waitForTimeout(seconds * 1000);
    result = { kind, ...demo, stats: await stats(page) };
    await page.screenshot({ path: screenshot });
  } else if (kind === "videoroom") {
    const pub = await launch();
    const sub = await launch();
    browsers.push(pub, sub);
    const p = await open(pub, "publish");
    const s = p.demo.state === "connected" ? await open(sub, "subscribe") : { demo: { state: "not started" } };
    if (s.demo.state === "connected") await s.page.waitForTimeout(seconds * 1000);
    result = {
      kind,
      publisher: { ...p.demo, stats: await stats(p.page) },
      ...s.demo,
      stats: s.page ? await stats(s.page) : {},
    };
    if (s.page) await s.page.screenshot({ path: screenshot });
  } else {
    throw new Error(`unknown kind ${kind}`);
  }
} finally {
  for (const b of browsers) await b.close().catch(() => {});
}
console.log(JSON.stringify(result));
process.exit(result.state === "connected" ? 0 : 1);
