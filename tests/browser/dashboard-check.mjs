// Opens the Aspire dashboard's trace list in headless chromium (Debian's, driven by
// playwright-core), waits for the page to draw, checks that a trace of service "actortrain" is
// listed, opens it, and keeps a screenshot of each page.
//   node dashboard-check.mjs <dashboard-url> <screenshot-folder>
import { chromium } from "playwright-core";

const [url = "http://127.0.0.1:18888", out = "."] = process.argv.slice(2);
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: ["--no-sandbox"] });
try {
  const page = await browser.newPage({ viewport: { width: 1600, height: 900 } });
  await page.goto(`${url}/traces`, { waitUntil: "networkidle" });
  // The dashboard draws after load (Blazor): wait for the run span's row, not for the HTML.
  const row = page.getByText(/actortrain: run/).first();
  await row.waitFor({ timeout: 60000 });
  await page.screenshot({ path: `${out}/dashboard-traces.png` });
  await row.click();
  await page.getByText("worker.step").first().waitFor({ timeout: 60000 });
  await page.screenshot({ path: `${out}/dashboard-trace-detail.png` });
  console.log("dashboard lists the actortrain trace; screenshots in", out);
} catch (error) {
  console.error("dashboard check failed:", error.message);
  const page = browser.contexts()[0]?.pages()[0];
  if (page) {
    await page.screenshot({ path: `${out}/dashboard-failure.png` });
    console.error((await page.innerText("body")).slice(0, 2000));
  }
  process.exitCode = 1;
} finally {
  await browser.close();
}
