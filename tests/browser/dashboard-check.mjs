// Opens the Aspire dashboard's trace list in headless chromium (Debian's, driven by
// playwright-core), waits for the page to draw, checks that a trace of service "actortrain" is
// listed, opens it, then opens the actortrain.step.duration histogram's table and checks its P50
// against the run's own (a bucket bound in seconds: the SDK's default millisecond buckets showed
// 5 s for 0.1 ms steps); keeps a screenshot of each page.
//   node dashboard-check.mjs <dashboard-url> <screenshot-folder> <expected-p50-seconds>
import { chromium } from "playwright-core";

const [url = "http://127.0.0.1:18888", out = ".", expectedP50 = ""] = process.argv.slice(2);
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
  console.log("dashboard lists the actortrain trace");

  // The step-time histogram as a table: Time, P50, P90, P99 per export.
  await page.goto(`${url}/metrics/resource/actortrain?meter=ActorTrain&instrument=actortrain.step.duration&duration=5`, { waitUntil: "networkidle" });
  await page.getByText("Table", { exact: true }).click();
  const header = page.getByText("P50 Seconds", { exact: true }).first();
  await header.waitFor({ timeout: 60000 });
  await page.waitForTimeout(1000);
  await page.screenshot({ path: `${out}/dashboard-step-p50.png` });
  const text = await page.innerText("body");
  // the first row after the header: a time, then P50, P90, P99
  const rows = text.slice(text.indexOf("P99 Seconds")).split("\n").map(s => s.trim()).filter(s => s.length > 0);
  const p50 = Number(rows[2]);
  if (!(p50 > 0)) throw new Error(`no P50 value in the table: ${rows.slice(0, 6).join(" | ")}`);
  if (expectedP50 && Math.abs(p50 - Number(expectedP50)) > 1e-9 * Math.max(1, Number(expectedP50)))
    throw new Error(`the dashboard's step-time P50 is ${p50} s, the run's metrics say ${expectedP50} s`);
  if (p50 >= 1) throw new Error(`the dashboard's step-time P50 is ${p50} s for sub-millisecond steps`);
  console.log(`dashboard step-time P50 ${p50} s (the run's metrics: ${expectedP50 || "not given"}); screenshots in`, out);
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
