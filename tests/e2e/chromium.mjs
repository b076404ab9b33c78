// Debian's Chromium, headless, for the end-to-end tests: a fresh profile, the flags this
// machine needs (no background networking: the network is closed), self-signed certificates
// accepted. `close()` removes the profile.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export async function launch({ viewport, args = [] }) {
  const userDataDir = mkdtempSync(join(tmpdir(), "deskgate-chromium-"));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    ignoreHTTPSErrors: true,
    viewport,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
      "--no-first-run", "--disable-quic", "--disable-sync", "--ignore-certificate-errors",
      ...args,
    ],
  });
  return {
    context,
    close: async () => {
      await context.close();
      rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}
