// The demo desktop in noVNC and the admin page, in headless Chromium, through a real deskgate.
// usage: node admin.mjs DESKTOP_URL ADMIN_URL TOKEN OUT_DIR TIMEOUT_MS
// 1. noVNC connects and its picture changes between two screenshots;
// 2. a wrong token gets no data; the right one shows the session, whose bytes grow;
// 3. the session's network figures show, with the note that loopback figures are small;
// 4. "disconnect" (confirmed) closes it, and noVNC reports the disconnect.
// Prints one JSON line with what it saw; screenshots go to OUT_DIR.
import { join } from "node:path";
import { launch } from "./chromium.mjs";

const [desktopUrl, adminUrl, token, outDir, timeoutMs] = process.argv.slice(2);
const deadline = Date.now() + Number(timeoutMs);
const left = () => Math.max(1000, deadline - Date.now());
const browser = await launch({ viewport: { width: 1000, height: 700 } });
const context = browser.context;
const result = { connected: false, pictureChanged: false, wrongTokenRejected: false, stateWithoutLogin: 0,
  sessionListed: false, bytesGrew: false, qualityShown: false, loopbackNoted: false, disconnected: false,
  detail: [] };

async function canvasPixels(page) {
  return page.evaluate(() => {
    const c = document.querySelector("#noVNC_container canvas") || document.querySelector("canvas");
    if (!c || !c.width) return null;
    return Array.from(c.getContext("2d").getImageData(0, 0, c.width, c.height).data.filter((_, i) => i % 97 === 0));
  });
}

try {
  const desk = context.pages()[0] ?? (await context.newPage());
  desk.on("console", (m) => result.detail.push(`novnc console: ${m.text()}`));
  await desk.goto(desktopUrl, { timeout: left() });
  await desk.waitForFunction(() => document.documentElement.classList.contains("noVNC_connected"),
    null, { timeout: left(), polling: 100 });
  result.connected = true;
  // The first frame arrives after "connected"; wait for a painted canvas, then for a change.
  let first = null;
  while (Date.now() < deadline) {
    first = await canvasPixels(desk);
    if (first && first.some((v) => v !== 0 && v !== 255)) break;
    await desk.waitForTimeout(100);
  }
  await desk.screenshot({ path: join(outDir, "novnc-demo-1.png") });
  while (Date.now() < deadline) {
    const now = await canvasPixels(desk);
    if (now && first && now.some((v, i) => v !== first[i])) { result.pictureChanged = true; break; }
    await desk.waitForTimeout(100);
  }
  await desk.screenshot({ path: join(outDir, "novnc-demo-desktop.png") });

  const admin = await context.newPage();
  await admin.setViewportSize({ width: 1500, height: 700 }); // the sessions table is wide
  admin.on("dialog", (d) => { result.detail.push(`dialog: ${d.message()}`); d.accept(); });
  await admin.goto(adminUrl, { timeout: left() });
  result.stateWithoutLogin = await admin.evaluate(async () => (await fetch("api/state")).status);
  await admin.fill("#token", "not-the-token");
  await admin.click("#login-form button");
  await admin.waitForSelector("#login-error:not([hidden])", { timeout: left() });
  result.wrongTokenRejected = (await admin.evaluate(async () => (await fetch("api/state")).status)) === 401;
  await admin.fill("#token", token);
  await admin.click("#login-form button");
  const row = "#sessions tbody tr";
  await admin.waitForSelector(row, { timeout: left() });
  const rowText = await admin.textContent(row);
  result.sessionListed = rowText.includes("/desktop/{name}/") && rowText.includes("desktop-demo");
  const bytesOf = async () => admin.evaluate(async () => {
    const s = await (await fetch("api/state")).json();
    return s.sessions.reduce((n, x) => n + x.bytes_down, 0);
  });
  const before = await bytesOf();
  while (Date.now() < deadline) {
    if ((await bytesOf()) > before) { result.bytesGrew = true; break; }
    await admin.waitForTimeout(200);
  }
  // The screenshot for the README shows a current rate: wait until the page has one.
  await admin.waitForFunction(() => [...document.querySelectorAll("#sessions tbody td.num")]
    .some((td) => td.textContent.endsWith("/s") && !td.textContent.startsWith("0 B")),
    null, { timeout: left(), polling: 200 });
  // The sampler's figures (every 2 s): a verdict, both legs' RTT, the loopback note.
  await admin.waitForSelector("#sessions tbody td.verdict.fine", { timeout: left() });
  result.qualityShown = await admin.evaluate(() => {
    const row = document.querySelector("#sessions tbody tr");
    return /ms/.test(row.querySelector("td.browser-rtt").textContent)
      && /ms/.test(row.querySelector("td.desktop-rtt").textContent);
  });
  result.loopbackNoted = await admin.isVisible("#loopback-note");
  await admin.screenshot({ path: join(outDir, "admin-page.png"), fullPage: true });
  await admin.click(`${row} button.disconnect`);
  await desk.waitForFunction(() => !document.documentElement.classList.contains("noVNC_connected"),
    null, { timeout: left(), polling: 100 });
  result.disconnected = true;
  result.detail.push("novnc status: " + (await desk.evaluate(() => document.getElementById("noVNC_status")?.textContent || "")));
  await admin.waitForSelector("#no-sessions:not([hidden])", { timeout: left() });
} catch (e) {
  result.detail.push(`error: ${e.message.split("\n")[0]}`);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
