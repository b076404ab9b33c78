// The admin page while one session's browser leg is slow (tests/session_quality.rs makes it):
// logs in, waits until the page shows one session judged "browser's network slow" and one
// "fine", each with its RTT history drawn, and takes the screenshot for docs/.
// usage: node quality.mjs ADMIN_URL TOKEN OUT_PNG TIMEOUT_MS
// Prints one JSON line with what it saw.
import { launch } from "./chromium.mjs";

const [adminUrl, token, outPng, timeoutMs] = process.argv.slice(2);
const browser = await launch({ viewport: { width: 1500, height: 560 } });
const result = { slowShown: false, fineShown: false, slowText: "", detail: [] };
try {
  const page = browser.context.pages()[0] ?? (await browser.context.newPage());
  await page.goto(adminUrl, { timeout: Number(timeoutMs) });
  await page.fill("#token", token);
  await page.click("#login-form button");
  await page.waitForSelector("td.verdict.browser_slow", { timeout: Number(timeoutMs) });
  result.slowShown = true;
  result.fineShown = (await page.$("td.verdict.fine")) !== null;
  result.slowText = await page.evaluate(() => document.querySelector("td.verdict.browser_slow").firstChild.textContent);
  result.why = await page.textContent("td.verdict.browser_slow .why");
  // Two polls give the current rate; wait for the slow session's to show.
  await page.waitForFunction(() => [...document.querySelectorAll("#sessions tbody tr")]
    .some((tr) => tr.querySelector(".verdict.browser_slow") && !tr.querySelector("td.rate").textContent.startsWith("0 B")),
    null, { timeout: Number(timeoutMs), polling: 200 });
  await page.screenshot({ path: outPng, fullPage: true });
} catch (e) {
  result.detail.push(`error: ${e.message.split("\n")[0]}`);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
