// Opens a noVNC page through deskgate in headless Chromium, connects with the VNC password,
// waits until noVNC reports connected (or failed), checks the canvas colour, takes a screenshot.
// usage: node novnc.mjs URL SCREENSHOT HOST_RESOLVER_RULES EXPECTED_RGB(r,g,b) TIMEOUT_MS
// Prints one JSON line: {"state": "connected"|"failed", "pixel": [r,g,b], "detail": ...}
import { launch } from "./chromium.mjs";

const [url, screenshot, resolverRules, expected, timeoutMs] = process.argv.slice(2);
const want = expected.split(",").map(Number);
const deadline = Date.now() + Number(timeoutMs);
const browser = await launch({ viewport: { width: 800, height: 600 }, args: [`--host-resolver-rules=${resolverRules}`] });
const context = browser.context;
const result = { state: "timeout", pixel: null, detail: [] };
// KasmVNC's noVNC offers the `binary` subprotocol (stock noVNC 1.3 offers none); do the same,
// so a relay that drops Sec-WebSocket-Protocol fails here as it failed in the hub.
await context.addInitScript(() => {
  const Native = window.WebSocket;
  function KasmLikeWebSocket(url, protocols) {
    const offered = protocols === undefined || (Array.isArray(protocols) && protocols.length === 0) ? ["binary"] : protocols;
    return new Native(url, offered);
  }
  KasmLikeWebSocket.prototype = Native.prototype;
  for (const k of ["CONNECTING", "OPEN", "CLOSING", "CLOSED"]) KasmLikeWebSocket[k] = Native[k];
  window.WebSocket = KasmLikeWebSocket;
});
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (m) => result.detail.push(`console: ${m.text()}`));
  page.on("websocket", (ws) => {
    result.detail.push(`websocket: ${ws.url()}`);
    ws.on("close", () => result.detail.push(`websocket closed: ${ws.url()}`));
    ws.on("socketerror", (e) => result.detail.push(`websocket error: ${e}`));
  });
  await page.goto(url, { timeout: Number(timeoutMs) });
  result.detail.push(`page: ${page.url()}`);
  // noVNC's UI marks <html> with noVNC_connected, and shows errors in #noVNC_status.
  const state = await page.waitForFunction(() => {
    if (document.documentElement.classList.contains("noVNC_connected")) return "connected";
    const status = document.getElementById("noVNC_status");
    if (status && status.classList.contains("noVNC_status_error")) return "failed:" + status.textContent;
    return false;
  }, null, { timeout: Math.max(1000, deadline - Date.now()), polling: 100 });
  const s = await state.jsonValue();
  result.state = s.startsWith("failed") ? "failed" : "connected";
  if (s.startsWith("failed")) result.detail.push(s);
  if (result.state === "connected") {
    // The framebuffer arrives after "connected": poll the canvas centre until it has the colour.
    while (Date.now() < deadline) {
      result.pixel = await page.evaluate(() => {
        const c = document.querySelector("#noVNC_container canvas") || document.querySelector("canvas");
        if (!c || !c.width) return null;
        const d = c.getContext("2d").getImageData(Math.floor(c.width / 2), Math.floor(c.height / 2), 1, 1).data;
        return [d[0], d[1], d[2]];
      });
      if (result.pixel && result.pixel.every((v, i) => Math.abs(v - want[i]) <= 8)) break;
      await page.waitForTimeout(100);
    }
  }
  await page.screenshot({ path: screenshot });
} catch (e) {
  result.detail.push(`error: ${e.message.split("\n")[0]}`);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
